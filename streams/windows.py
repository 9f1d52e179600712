"""Event-time windows per entity: panes of statistics that a window merges when a row is emitted.

For each distinct (window, slide) of a feature view, every entity has a ring of ``window / slide``
panes, each covering ``slide`` of event time. An event updates the pane that holds its event time,
in O(1). A row for an entity is emitted as of its latest event time ``t``: each aggregation covers
the window ``[end - window, end)`` with ``end`` the first slide boundary after ``t``, so a row
only ever holds events at or before its own timestamp.

State is plain NumPy arrays, updated in Numba kernels: no Python object per event or per pane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from features.spec import FeatureViewSpec
from streams.aggregators import AGGREGATORS
from streams.moments import EMPTY_TIME, Moments, add_value, arrays, merge_into

__all__ = ["PaneLayout", "WindowState"]

MICROS = 1_000_000


@dataclass(frozen=True, kw_only=True)
class PaneLayout:
    """One distinct (window, slide) of a view, and the value columns its aggregations read."""

    window_us: int
    slide_us: int
    columns: tuple[str, ...]

    @property
    def panes(self) -> int:
        return self.window_us // self.slide_us


@dataclass
class _LayoutState:
    layout: PaneLayout
    pane_start: NDArray[np.int64]
    moments: Moments


@dataclass
class WindowState:
    """The window state of one feature view over one Kafka partition (or any set of entities)."""

    spec: FeatureViewSpec
    capacity: int = 1024
    entity_ids: dict[Any, int] = field(default_factory=dict)
    entity_keys: list[Any] = field(default_factory=list)
    max_time: NDArray[np.int64] = field(init=False)
    columns: tuple[str, ...] = field(init=False)
    layouts: list[_LayoutState] = field(init=False)

    def __post_init__(self) -> None:
        self.columns = tuple(dict.fromkeys(aggregation.column for aggregation in self.spec.aggregations))
        grouped: dict[tuple[int, int], list[str]] = {}
        for aggregation in self.spec.aggregations:
            key = (
                int(aggregation.window.total_seconds() * MICROS),
                int(aggregation.slide.total_seconds() * MICROS),
            )
            grouped.setdefault(key, [])
            if aggregation.column not in grouped[key]:
                grouped[key].append(aggregation.column)
        self.max_time = np.full(self.capacity, EMPTY_TIME, dtype=np.int64)
        self.layouts = []
        for (window_us, slide_us), columns in grouped.items():
            layout = PaneLayout(window_us=window_us, slide_us=slide_us, columns=tuple(columns))
            shape = (self.capacity, layout.panes, len(columns))
            self.layouts.append(
                _LayoutState(
                    layout=layout,
                    pane_start=np.full((self.capacity, layout.panes), EMPTY_TIME, dtype=np.int64),
                    moments=Moments.empty(shape),
                )
            )

    def ids_for(self, keys: list[Any]) -> NDArray[np.int64]:
        """Dense ids of the entities, registering new ones."""
        ids = np.empty(len(keys), dtype=np.int64)
        index = self.entity_ids
        for position, key in enumerate(keys):
            entity = index.get(key)
            if entity is None:
                entity = index[key] = len(self.entity_keys)
                self.entity_keys.append(key)
            ids[position] = entity
        if len(self.entity_keys) > self.capacity:
            self._grow(len(self.entity_keys))
        return ids

    def update(
        self,
        ids: NDArray[np.int64],
        times: NDArray[np.int64],
        offsets: NDArray[np.int64],
        values: dict[str, NDArray[np.float64]],
    ) -> None:
        """Add events (event time in µs, Kafka offset, one float64 column per input, NaN for null)."""
        np.maximum.at(self.max_time, ids, times)
        for state in self.layouts:
            matrix = np.column_stack([values[column] for column in state.layout.columns])
            _update_panes(
                ids, times, offsets, matrix, state.layout.slide_us, state.pane_start, *arrays(state.moments)
            )

    def rows(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], dict[str, NDArray[np.float64]]]:
        """For each entity id: its as-of time (µs) and every aggregation's value (NaN for null)."""
        as_of = self.max_time[ids]
        results: dict[str, NDArray[np.float64]] = {}
        for state in self.layouts:
            layout = state.layout
            window = Moments.empty((len(ids), len(layout.columns)))
            _window_moments(
                ids,
                as_of,
                layout.slide_us,
                layout.window_us,
                state.pane_start,
                *arrays(state.moments),
                *arrays(window),
            )
            for aggregation in self.spec.aggregations:
                window_us = int(aggregation.window.total_seconds() * MICROS)
                slide_us = int(aggregation.slide.total_seconds() * MICROS)
                if (window_us, slide_us) != (layout.window_us, layout.slide_us):
                    continue
                column = layout.columns.index(aggregation.column)
                column_moments = Moments(**{name: array[:, column] for name, array in vars(window).items()})
                results[aggregation.feature] = AGGREGATORS[aggregation.function].result(column_moments)
        return as_of, {feature: results[feature] for feature in self.spec.features if feature in results}

    def _grow(self, needed: int) -> None:
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        extra = capacity - self.capacity
        self.max_time = np.concatenate([self.max_time, np.full(extra, EMPTY_TIME, dtype=np.int64)])
        for state in self.layouts:
            panes, columns = state.pane_start.shape[1], state.moments.count.shape[2]
            state.pane_start = np.concatenate(
                [state.pane_start, np.full((extra, panes), EMPTY_TIME, dtype=np.int64)]
            )
            fresh = Moments.empty((extra, panes, columns))
            state.moments = Moments(
                **{
                    name: np.concatenate([array, getattr(fresh, name)])
                    for name, array in vars(state.moments).items()
                }
            )
        self.capacity = capacity


@numba.njit(cache=True)
def _update_panes(  # type: ignore[no-untyped-def]
    ids,
    times,
    offsets,
    values,
    slide,
    pane_start,
    count,
    total,
    mean,
    m2,
    low,
    high,
    last_time,
    last_offset,
    last,
):
    panes = pane_start.shape[1]
    columns = values.shape[1]
    for i in range(ids.shape[0]):
        entity = ids[i]
        start = (times[i] // slide) * slide
        slot = (times[i] // slide) % panes
        current = pane_start[entity, slot]
        if current != start:
            if current > start:
                continue  # the slot holds a newer pane: this event is older than any window still emitted
            pane_start[entity, slot] = start
            for j in range(columns):
                count[entity, slot, j] = 0.0
                total[entity, slot, j] = 0.0
                mean[entity, slot, j] = 0.0
                m2[entity, slot, j] = 0.0
                low[entity, slot, j] = np.inf
                high[entity, slot, j] = -np.inf
                last_time[entity, slot, j] = EMPTY_TIME
                last_offset[entity, slot, j] = -1
                last[entity, slot, j] = np.nan
        for j in range(columns):
            value = values[i, j]
            if not np.isnan(value):
                add_value(
                    count, total, mean, m2, low, high, last_time, last_offset, last,
                    (entity, slot, j), value, times[i], offsets[i],
                )  # fmt: skip


@numba.njit(cache=True)
def _window_moments(  # type: ignore[no-untyped-def]
    ids, as_of, slide, window, pane_start, count, total, mean, m2, low, high, last_time, last_offset, last,
    w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last,
):  # fmt: skip
    panes = pane_start.shape[1]
    columns = count.shape[2]
    for row in range(ids.shape[0]):
        entity = ids[row]
        end = (as_of[row] // slide + 1) * slide
        begin = end - window
        for slot in range(panes):
            start = pane_start[entity, slot]
            if start < begin or start >= end:
                continue
            for j in range(columns):
                merge_into(
                    w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last,
                    (row, j),
                    count[entity, slot, j], total[entity, slot, j], mean[entity, slot, j],
                    m2[entity, slot, j],
                    low[entity, slot, j], high[entity, slot, j], last_time[entity, slot, j],
                    last_offset[entity, slot, j], last[entity, slot, j],
                )  # fmt: skip
