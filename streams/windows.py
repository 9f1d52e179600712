"""Event-time windows per entity, and a row for every time a feature's value changes.

The value at T of an aggregation with window W and slide S is the aggregate of the entity's accepted
events with event time in ``[end(T) - W, T]``, where ``end(T) = (T // S + 1) * S`` is the first slide
boundary after T (µs, T included). Over T it is a step function that changes at two kinds of change
point: each event time, and each boundary ``p + W`` where a non-empty pane ``[p, p + S)`` leaves the
window (the window decays). ``WindowState.advance`` returns one row per change point that a batch
creates or changes, so an as-of join over the rows gives the value at any T, whatever the batching.

Change points are emitted up to the partition's stream time, its newest accepted event time: the
expiry rows are event-time timers that fire as the stream passes them. An event at or before the
stream time (out of order, within the watermark) changes the values at the entity's change points
from its own time on; they are emitted again, and the row emitted later wins at equal event time.

State per distinct (window, slide): a ring of panes per entity, updated in O(1) per event. The ring
holds ``(W + watermark delay) / S + 1`` panes, so an event within the watermark always finds its
pane. With a watermark delay, the raw events from the watermark's pane on are kept too: a late
event changes values at change points inside a pane that also holds later events, and those values
are computed from the raw events.

State is plain NumPy arrays, updated in Numba kernels: no Python object per event or per pane.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import numba
import numpy as np
from numpy.typing import NDArray

from features.spec import FeatureViewSpec
from streams.aggregators import AGGREGATORS
from streams.moments import (
    EMPTY_TIME,
    Moments,
    add_integer,
    add_value,
    arrays,
    merge_integers_into,
    merge_into,
    reset_integers,
    reset_slot,
)

__all__ = ["ChangeRows", "PaneLayout", "WindowState"]

MICROS = 1_000_000
FeatureValues = NDArray[np.float64] | np.ma.MaskedArray[Any, np.dtype[np.int64]]
_NO_TIME = np.iinfo(np.int64).max


@dataclass(frozen=True, kw_only=True)
class PaneLayout:
    """One distinct (window, slide) of a view, the value columns its aggregations read, and its ring."""

    window_us: int
    slide_us: int
    columns: tuple[str, ...]
    panes: int
    """Panes per entity's ring: the window's, plus those the watermark delay can reach back to."""


@dataclass(frozen=True, kw_only=True)
class ChangeRows:
    """Feature values at change points: one row per (entity, time), sorted by time, then entity."""

    entity_ids: NDArray[np.int64]
    times: NDArray[np.int64]
    features: dict[str, FeatureValues]
    """Feature name to its value at each row's time: float64 with NaN for null, or, for the exact
    integer results (sum, min, max and last of an integer column), int64 masked where null."""
    overflows: dict[str, int] = field(default_factory=dict)
    """Feature name to the number of rows whose integer sum does not fit int64 (null in ``features``)."""

    def __len__(self) -> int:
        return len(self.entity_ids)


@dataclass
class _LayoutState:
    layout: PaneLayout
    column_index: NDArray[np.int64]
    """Positions of the layout's columns among the view's value columns."""
    pane_start: NDArray[np.int64]
    moments: Moments
    exact: bool
    """Whether the layout has an integer column: else its moments keep no integer statistics."""


@dataclass(frozen=True)
class _Events:
    ids: NDArray[np.int64]
    times: NDArray[np.int64]
    offsets: NDArray[np.int64]
    values: NDArray[np.float64]
    integers: NDArray[np.int64]

    @classmethod
    def empty(cls, columns: int) -> _Events:
        none = np.empty(0, dtype=np.int64)
        return cls(
            ids=none, times=none, offsets=none, values=np.empty((0, columns)),
            integers=np.empty((0, columns), dtype=np.int64),
        )  # fmt: skip


class _EventBuffer:
    """Accepted events, kept from the watermark's pane on, for values inside a pane at a past time.

    Kept in chunks of whole batches, oldest first, so dropping costs nothing per event held. Small
    batches are merged as they come, as a binary counter merges (a chunk takes the next one while it
    holds no more events than it), up to ``chunk_rows`` events a chunk: a worker polling a quiet topic
    adds batches of a few events many times a second, and a chunk per batch would hold five arrays and
    two objects per few events (the soak's worker held 86,000 chunks, more memory than events). Each
    event is copied at most log2(``chunk_rows``) times; a chunk is dropped once all its events are
    before the floor, so at most one chunk more than needed is kept.

    >>> def at(time):  # one event of one column
    ...     one = np.array([time])
    ...     return _Events(ids=one, times=one, offsets=one, values=np.zeros((1, 1)), integers=one[:, None])
    >>> buffer = _EventBuffer(columns=1, chunk_rows=4)
    >>> for time in range(1, 10):
    ...     buffer.add(at(time))
    >>> [len(events.ids) for _, events in buffer.chunks]
    [4, 4, 1]
    >>> buffer.keep_from(5)
    >>> [(newest, events.times.tolist()) for newest, events in buffer.chunks]
    [(8, [5, 6, 7, 8]), (9, [9])]
    """

    def __init__(self, *, columns: int, chunk_rows: int = 4096) -> None:
        self.columns = columns
        self.chunk_rows = chunk_rows
        self.chunks: deque[tuple[int, _Events]] = deque()
        """(newest event time, events) per chunk, in arrival order."""

    def add(self, events: _Events) -> None:
        if not len(events.ids):
            return
        newest = int(events.times.max())
        while self.chunks:
            last_newest, last = self.chunks[-1]
            size, last_size = len(events.ids), len(last.ids)
            if last_size > size or last_size + size > self.chunk_rows:
                break
            self.chunks.pop()
            events = _Events(
                **{name: np.concatenate([getattr(last, name), value]) for name, value in vars(events).items()}
            )
            newest = max(newest, last_newest)
        self.chunks.append((newest, events))

    def keep_from(self, floor: int) -> None:
        """Drop the oldest chunks while they hold only events before ``floor``."""
        while self.chunks and self.chunks[0][0] < floor:
            self.chunks.popleft()

    def of(self, entities: NDArray[np.int64], until: int) -> _Events:
        """The events of these entities at or before ``until``, sorted by entity, then time."""
        if not len(entities) or not self.chunks:
            return _Events.empty(self.columns)
        parts = []
        for _, chunk in self.chunks:
            keep = np.isin(chunk.ids, entities) & (chunk.times <= until)
            parts.append(
                (
                    chunk.ids[keep],
                    chunk.times[keep],
                    chunk.offsets[keep],
                    chunk.values[keep],
                    chunk.integers[keep],
                )
            )
        ids, times, offsets, values, integers = (
            np.concatenate([part[i] for part in parts]) for i in range(5)
        )
        order = np.lexsort((offsets, times, ids))
        return _Events(
            ids=ids[order], times=times[order], offsets=offsets[order], values=values[order],
            integers=integers[order],
        )  # fmt: skip


class WindowState:
    """The window state of one feature view over one Kafka partition (or any set of entities)."""

    def __init__(self, *, spec: FeatureViewSpec, capacity: int = 1024) -> None:
        self.spec = spec
        self.capacity = capacity
        self.entity_ids: dict[Any, int] = {}
        self.entity_keys: list[Any] = []
        self.columns = spec.value_columns
        self.integer_columns = frozenset(
            column for column in self.columns if spec.input_types.get(column) in ("INT32", "INT64")
        )
        self.delay_us = _micros(spec.watermark_delay.total_seconds())
        self.max_time = np.full(capacity, EMPTY_TIME, dtype=np.int64)
        """Per entity, its newest accepted event time."""
        self.stream_time = EMPTY_TIME
        """The newest accepted event time of all entities: change points up to it are emitted."""
        self._buffer = _EventBuffer(columns=len(self.columns))
        grouped: dict[tuple[int, int], list[str]] = {}
        for aggregation in spec.aggregations:
            columns = grouped.setdefault(_layout_key(aggregation), [])
            if aggregation.column not in columns:
                columns.append(aggregation.column)
        self.layouts: list[_LayoutState] = []
        for (window_us, slide_us), columns in grouped.items():
            panes = window_us // slide_us + math.ceil(self.delay_us / slide_us) + 1
            layout = PaneLayout(window_us=window_us, slide_us=slide_us, columns=tuple(columns), panes=panes)
            exact = any(column in self.integer_columns for column in columns)
            self.layouts.append(
                _LayoutState(
                    layout=layout,
                    column_index=np.asarray([self.columns.index(c) for c in columns], dtype=np.int64),
                    pane_start=np.full((capacity, panes), EMPTY_TIME, dtype=np.int64),
                    moments=Moments.empty((capacity, panes, len(columns)), exact=exact),
                    exact=exact,
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

    def advance(
        self,
        ids: NDArray[np.int64],
        times: NDArray[np.int64],
        offsets: NDArray[np.int64],
        values: dict[str, NDArray[np.float64]],
        *,
        integers: dict[str, NDArray[np.int64]] | None = None,
        emit: bool = True,
    ) -> ChangeRows:
        """Add accepted events (entity id, event time in µs, Kafka offset, one float64 column per
        input with NaN for null) and return the rows of every change point they create or change,
        up to the new stream time. ``integers`` holds the exact int64 values of integer columns (a
        float64 is exact only below 2^53); a column missing there is read from its float values.
        With ``emit=False`` only the state is updated (a replay)."""
        ids = np.asarray(ids, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        matrix = np.empty((len(ids), len(self.columns)))
        exact = np.zeros((len(ids), len(self.columns)), dtype=np.int64)
        for position, column in enumerate(self.columns):
            matrix[:, position] = values[column]
            if column in self.integer_columns:
                given = None if integers is None else integers.get(column)
                exact[:, position] = (
                    np.nan_to_num(matrix[:, position]).astype(np.int64) if given is None else given
                )
        before = self.stream_time
        after = max(before, int(times.max())) if len(times) else before
        if self.delay_us:
            self._buffer.add(_Events(ids=ids, times=times, offsets=offsets, values=matrix, integers=exact))

        # Events at or before the stream time: into the rings, then the entity's later change points again.
        old = np.flatnonzero(times <= before)
        for state in self.layouts:
            _apply(
                ids[old], times[old], offsets[old], _columns(matrix, old, state), _columns(exact, old, state),
                state.layout.slide_us, state.pane_start, arrays(state.moments),
            )  # fmt: skip
        np.maximum.at(self.max_time, ids[old], times[old])
        corrected = self._corrections(ids[old], times[old], before) if emit and len(old) else None

        # Newer events, in event-time order, each change point evaluated once every event up to it is in.
        new = np.flatnonzero(times > before)
        new = new[np.lexsort((offsets[new], times[new]))]
        point_ids, point_times = (
            self._new_points(ids[new], times[new], before, after) if emit else (_NONE, _NONE)
        )
        windows = []
        for state in self.layouts:
            layout = state.layout
            window = Moments.empty((len(point_ids), len(layout.columns)), exact=state.exact)
            _walk(
                ids[new], times[new], offsets[new], _columns(matrix, new, state), _columns(exact, new, state),
                point_ids, point_times, layout.slide_us, layout.window_us, state.pane_start,
                arrays(state.moments), arrays(window),
            )  # fmt: skip
            windows.append(window)
        np.maximum.at(self.max_time, ids[new], times[new])
        self.stream_time = after
        if self.delay_us and self.layouts:
            watermark = after - self.delay_us
            self._buffer.keep_from(
                min(watermark // s.layout.slide_us * s.layout.slide_us for s in self.layouts)
            )
        rows = self._rows(point_ids, point_times, windows)
        if corrected is None:
            return rows
        return ChangeRows(
            entity_ids=np.concatenate([corrected.entity_ids, rows.entity_ids]),
            times=np.concatenate([corrected.times, rows.times]),
            features={
                name: _concatenate(corrected.features[name], rows.features[name]) for name in rows.features
            },
            overflows={
                name: corrected.overflows.get(name, 0) + rows.overflows.get(name, 0)
                for name in {**corrected.overflows, **rows.overflows}
            },
        )

    def advance_to(self, until: int) -> ChangeRows:
        """Move the stream time to ``until`` with no event (a backfill's end: its windows decay) and
        return the rows of the change points passed."""
        before = self.stream_time
        if until <= before:
            return self._rows(_NONE, _NONE, [Moments.empty((0, len(s.layout.columns))) for s in self.layouts])
        point_ids, point_times = self._new_points(_NONE, _NONE, before, until)
        windows = []
        for state in self.layouts:
            layout = state.layout
            window = Moments.empty((len(point_ids), len(layout.columns)), exact=state.exact)
            no_values = np.empty((0, len(layout.columns)))
            _walk(
                _NONE, _NONE, _NONE, no_values, no_values.astype(np.int64), point_ids, point_times,
                layout.slide_us, layout.window_us, state.pane_start, arrays(state.moments), arrays(window),
            )  # fmt: skip
            windows.append(window)
        self.stream_time = until
        return self._rows(point_ids, point_times, windows)

    def _corrections(self, ids: NDArray[np.int64], times: NDArray[np.int64], before: int) -> ChangeRows:
        """The rows, again, of every change point of these entities from their earliest event here on."""
        entities, inverse = np.unique(ids, return_inverse=True)
        earliest = np.full(len(entities), _NO_TIME, dtype=np.int64)
        np.minimum.at(earliest, inverse, times)
        # An entity with an event after its earliest one here has change points inside panes that also
        # hold later events: those come from the raw events. The others' change points in the range are
        # their events here and the panes leaving windows, and their panes alone are exact.
        behind = self.max_time[entities] > earliest
        point_ids, point_times = [ids[~behind[inverse]]], [times[~behind[inverse]]]
        # Sorted by entity; empty when no entity needs the raw events.
        buffered = self._buffer.of(entities[behind], before)
        since = earliest[np.searchsorted(entities, buffered.ids)]
        keep = buffered.times >= since
        point_ids.append(buffered.ids[keep])
        point_times.append(buffered.times[keep])
        for state in self.layouts:
            starts = state.pane_start[entities]
            ends = starts + state.layout.window_us
            hit = (starts != EMPTY_TIME) & (ends > earliest[:, None]) & (ends <= before)
            point_ids.append(np.broadcast_to(entities[:, None], starts.shape)[hit])
            point_times.append(ends[hit])
        unique_ids, unique_times = _unique_points(np.concatenate(point_ids), np.concatenate(point_times))
        windows = []
        for state in self.layouts:
            layout = state.layout
            window = Moments.empty((len(unique_ids), len(layout.columns)), exact=state.exact)
            _window_moments_with_events(
                unique_ids, unique_times, self.max_time, layout.slide_us, layout.window_us,
                state.pane_start, arrays(state.moments),
                buffered.ids, buffered.times, buffered.offsets,
                np.ascontiguousarray(buffered.values[:, state.column_index]),
                np.ascontiguousarray(buffered.integers[:, state.column_index]),
                arrays(window),
            )  # fmt: skip
            windows.append(window)
        return self._rows(unique_ids, unique_times, windows)

    def _new_points(
        self, ids: NDArray[np.int64], times: NDArray[np.int64], before: int, after: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Change points in (before, after]: the new events' times and the panes leaving windows."""
        point_ids, point_times = [ids], [times]
        known = len(self.entity_keys)
        for state in self.layouts:
            window_us, slide_us = state.layout.window_us, state.layout.slide_us
            # Panes leave windows only at multiples of the slide: most polls cross none, and skip the rings.
            if before != EMPTY_TIME and after // slide_us > before // slide_us:
                # Panes already in the rings, of entities whose newest pane can still leave a window.
                live = np.flatnonzero(self.max_time[:known] > before - window_us)
                starts = state.pane_start[live]
                ends = starts + window_us
                hit = (starts != EMPTY_TIME) & (ends > before) & (ends <= after)
                point_ids.append(np.broadcast_to(live[:, None], starts.shape)[hit])
                point_times.append(ends[hit])
            # Panes the new events open.
            ends = times // slide_us * slide_us + window_us
            hit = ends <= after
            point_ids.append(ids[hit])
            point_times.append(ends[hit])
        return _unique_points(np.concatenate(point_ids), np.concatenate(point_times))

    def _rows(
        self, point_ids: NDArray[np.int64], point_times: NDArray[np.int64], windows: list[Moments]
    ) -> ChangeRows:
        results: dict[str, FeatureValues] = {}
        overflows: dict[str, int] = {}
        for state, window in zip(self.layouts, windows, strict=True):
            layout = state.layout
            for aggregation in self.spec.aggregations:
                if _layout_key(aggregation) != (layout.window_us, layout.slide_us):
                    continue
                column = layout.columns.index(aggregation.column)
                column_moments = Moments(**{name: array[:, column] for name, array in vars(window).items()})
                aggregator = AGGREGATORS[aggregation.function]
                if aggregation.column in self.integer_columns and aggregator.exact is not None:
                    exact, fits = aggregator.exact(column_moments)
                    present = column_moments.count > 0
                    if (present & ~fits).any():
                        overflows[aggregation.feature] = int((present & ~fits).sum())
                    results[aggregation.feature] = np.ma.MaskedArray(exact, mask=~(present & fits))
                else:
                    results[aggregation.feature] = aggregator.result(column_moments)
        features = {feature: results[feature] for feature in self.spec.features if feature in results}
        return ChangeRows(entity_ids=point_ids, times=point_times, features=features, overflows=overflows)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """Every array of the state, cut to the entities seen (``from_arrays`` rebuilds it): each
        layout's rings and moments, the entities' newest event times, and the raw events kept."""
        entities = len(self.entity_keys)
        out: dict[str, NDArray[Any]] = {"max_time": self.max_time[:entities]}
        for index, state in enumerate(self.layouts):
            out[f"layout{index}.pane_start"] = state.pane_start[:entities]
            for name, values in vars(state.moments).items():
                # A float-only layout keeps its integer statistics as empty arrays, kept as they are.
                out[f"layout{index}.{name}"] = values[:entities] if len(values) else values
        chunks = list(self._buffer.chunks)
        out["buffer.newest"] = np.asarray([newest for newest, _ in chunks], dtype=np.int64)
        out["buffer.sizes"] = np.asarray([len(events.ids) for _, events in chunks], dtype=np.int64)
        for name, none in vars(_Events.empty(len(self.columns))).items():
            out[f"buffer.{name}"] = np.concatenate([none, *(getattr(events, name) for _, events in chunks)])
        return out

    @classmethod
    def from_arrays(
        cls, *, spec: FeatureViewSpec, keys: list[Any], stream_time: int, arrays: dict[str, NDArray[Any]]
    ) -> WindowState:
        """The state ``to_arrays`` gave, for these entity keys in id order. ``KeyError`` or
        ``ValueError`` when the arrays are not of this view's layout."""
        entities = len(keys)
        state = cls(spec=spec)
        state.ids_for(keys)  # registers the keys in id order, and grows the arrays to hold them
        state.stream_time = stream_time
        state.max_time[:entities] = arrays["max_time"]
        for index, layout in enumerate(state.layouts):
            layout.pane_start[:entities] = arrays[f"layout{index}.pane_start"]
            for name, values in vars(layout.moments).items():
                saved = arrays[f"layout{index}.{name}"]
                if len(values):
                    values[:entities] = saved
                elif saved.shape != values.shape:
                    raise ValueError(f"the {name} statistics are not of this view's layout")
        bounds = np.cumsum([0, *arrays["buffer.sizes"].tolist()])
        fields = vars(_Events.empty(0))
        state._buffer.chunks = deque(
            (
                int(newest),
                _Events(**{name: arrays[f"buffer.{name}"][bounds[i] : bounds[i + 1]] for name in fields}),
            )
            for i, newest in enumerate(arrays["buffer.newest"].tolist())
        )
        return state

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
            fresh = Moments.empty((extra, panes, columns), exact=state.exact)
            state.moments = Moments(
                **{
                    name: np.concatenate([array, getattr(fresh, name)])
                    for name, array in vars(state.moments).items()
                }
            )
        self.capacity = capacity


_NONE = np.empty(0, dtype=np.int64)


def _columns(matrix: NDArray[Any], rows: NDArray[np.int64], state: _LayoutState) -> NDArray[Any]:
    """The rows of the layout's columns, contiguous for the kernels."""
    return np.ascontiguousarray(matrix[rows][:, state.column_index])


def _concatenate(first: FeatureValues, second: FeatureValues) -> FeatureValues:
    if isinstance(first, np.ma.MaskedArray):
        return cast("FeatureValues", np.ma.concatenate([first, second]))  # type: ignore[no-untyped-call]
    return np.concatenate([first, second])


def _micros(seconds: float) -> int:
    return round(seconds * MICROS)


def _layout_key(aggregation: Any) -> tuple[int, int]:
    return _micros(aggregation.window.total_seconds()), _micros(aggregation.slide.total_seconds())


def _unique_points(
    ids: NDArray[np.int64], times: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Distinct (entity, time) pairs, sorted by time, then entity."""
    order = np.lexsort((ids, times))
    ids, times = ids[order], times[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = (ids[1:] != ids[:-1]) | (times[1:] != times[:-1])
    return np.ascontiguousarray(ids[first]), np.ascontiguousarray(times[first])


# The kernels take the statistics as tuples and unpack them once; the helpers they inline take
# separate arrays (see ``streams.moments``). ``exact``, whether the layout keeps integer statistics,
# is known when a kernel compiles: a layout with no integer column holds them as empty int8 arrays,
# so the kernel is compiled for that type and the integer updates drop out of it.
@numba.njit(cache=True, inline="always")
def _apply_event(  # type: ignore[no-untyped-def]
    entity, time, offset, values, integers, i, slide, pane_start, exact,
    count, total, mean, m2, low, high, last_time, last_offset, last,
    i_high, i_low, i_min, i_max, i_last,
):  # fmt: skip
    ring = pane_start.shape[1]
    start = (time // slide) * slide
    slot = (time // slide) % ring
    current = pane_start[entity, slot]
    if current > start:
        # The slot holds a newer pane. The ring is sized so that no event within the watermark gets here.
        return
    if current != start:
        pane_start[entity, slot] = start
        for j in range(values.shape[1]):
            reset_slot(count, total, mean, m2, low, high, last_time, last_offset, last, (entity, slot, j))
            if exact:
                reset_integers(i_high, i_low, i_min, i_max, i_last, (entity, slot, j))
    for j in range(values.shape[1]):
        value = values[i, j]
        if np.isnan(value):
            continue
        add_value(
            count, total, mean, m2, low, high, last_time, last_offset, last,
            (entity, slot, j), value, time, offset,
        )  # fmt: skip
        if exact:
            add_integer(
                i_high, i_low, i_min, i_max, i_last, last_time, last_offset,
                (entity, slot, j), integers[i, j], time, offset,
            )  # fmt: skip


@numba.njit(cache=True, inline="always")
def _merge_panes(  # type: ignore[no-untyped-def]
    entity, begin, end, row, pane_start,
    count, total, mean, m2, low, high, last_time, last_offset, last,
    w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last,
):  # fmt: skip
    """Merge the entity's panes that start in [begin, end) into row ``row`` of the window moments."""
    for slot in range(pane_start.shape[1]):
        start = pane_start[entity, slot]
        if start < begin or start >= end:
            continue
        for j in range(count.shape[2]):
            merge_into(
                w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last, (row, j),
                count, total, mean, m2, low, high, last_time, last_offset, last, (entity, slot, j),
            )  # fmt: skip


@numba.njit(cache=True, inline="always")
def _merge_pane_integers(  # type: ignore[no-untyped-def]
    entity, begin, end, row, pane_start, count, last_time, last_offset,
    i_high, i_low, i_min, i_max, i_last,
    w_i_high, w_i_low, w_i_min, w_i_max, w_i_last, w_last_time, w_last_offset,
):  # fmt: skip
    """``_merge_panes`` for the integer statistics; call it after, as it reads the window's last time."""
    for slot in range(pane_start.shape[1]):
        start = pane_start[entity, slot]
        if start < begin or start >= end:
            continue
        for j in range(count.shape[2]):
            merge_integers_into(
                w_i_high, w_i_low, w_i_min, w_i_max, w_i_last, w_last_time, w_last_offset, (row, j),
                count, i_high, i_low, i_min, i_max, i_last, last_time, last_offset, (entity, slot, j),
            )  # fmt: skip


@numba.njit(cache=True)
def _apply(ids, times, offsets, values, integers, slide, pane_start, panes):  # type: ignore[no-untyped-def]
    exact = panes[9].itemsize == 8
    count, total, mean, m2, low, high, last_time, last_offset, last = panes[:9]
    i_high, i_low, i_min, i_max, i_last = panes[9:]
    for i in range(ids.shape[0]):
        _apply_event(
            ids[i], times[i], offsets[i], values, integers, i, slide, pane_start, exact,
            count, total, mean, m2, low, high, last_time, last_offset, last,
            i_high, i_low, i_min, i_max, i_last,
        )  # fmt: skip


@numba.njit(cache=True)
def _walk(  # type: ignore[no-untyped-def]
    ids, times, offsets, values, integers, point_ids, point_times, slide, window_us, pane_start, panes, window
):  # fmt: skip
    """Apply events (sorted by time) and evaluate the points (sorted by time) in one pass, each point
    once every event at or before it is in and none after it: then its panes hold exactly its events."""
    exact = panes[9].itemsize == 8
    count, total, mean, m2, low, high, last_time, last_offset, last = panes[:9]
    i_high, i_low, i_min, i_max, i_last = panes[9:]
    w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last = window[:9]
    w_i_high, w_i_low, w_i_min, w_i_max, w_i_last = window[9:]
    i = 0
    for row in range(point_ids.shape[0]):
        at = point_times[row]
        while i < ids.shape[0] and times[i] <= at:
            _apply_event(
                ids[i], times[i], offsets[i], values, integers, i, slide, pane_start, exact,
                count, total, mean, m2, low, high, last_time, last_offset, last,
                i_high, i_low, i_min, i_max, i_last,
            )  # fmt: skip
            i += 1
        end = (at // slide + 1) * slide
        _merge_panes(
            point_ids[row], end - window_us, end, row, pane_start,
            count, total, mean, m2, low, high, last_time, last_offset, last,
            w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last,
        )  # fmt: skip
        if exact:
            _merge_pane_integers(
                point_ids[row], end - window_us, end, row, pane_start, count, last_time, last_offset,
                i_high, i_low, i_min, i_max, i_last,
                w_i_high, w_i_low, w_i_min, w_i_max, w_i_last, w_last_time, w_last_offset,
            )  # fmt: skip
    while i < ids.shape[0]:
        _apply_event(
            ids[i], times[i], offsets[i], values, integers, i, slide, pane_start, exact,
            count, total, mean, m2, low, high, last_time, last_offset, last,
            i_high, i_low, i_min, i_max, i_last,
        )  # fmt: skip
        i += 1


@numba.njit(cache=True)
def _window_moments_with_events(  # type: ignore[no-untyped-def]
    point_ids, point_times, max_time, slide, window_us, pane_start, panes,
    event_ids, event_times, event_offsets, event_values, event_integers, window,
):  # fmt: skip
    """Window moments at each point: whole panes before the point's own pane, then the raw events of
    its own pane up to the point (the pane may hold later events). Events are sorted by entity."""
    exact = panes[9].itemsize == 8
    count, total, mean, m2, low, high, last_time, last_offset, last = panes[:9]
    i_high, i_low, i_min, i_max, i_last = panes[9:]
    w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last = window[:9]
    w_i_high, w_i_low, w_i_min, w_i_max, w_i_last = window[9:]
    for row in range(point_ids.shape[0]):
        entity, at = point_ids[row], point_times[row]
        end = (at // slide + 1) * slide
        # Once no event after the point is in, the panes alone are exact.
        own_pane_from_events = max_time[entity] > at
        until = end - slide if own_pane_from_events else end
        _merge_panes(
            entity, end - window_us, until, row, pane_start,
            count, total, mean, m2, low, high, last_time, last_offset, last,
            w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last,
        )  # fmt: skip
        if exact:
            _merge_pane_integers(
                entity, end - window_us, until, row, pane_start, count, last_time, last_offset,
                i_high, i_low, i_min, i_max, i_last,
                w_i_high, w_i_low, w_i_min, w_i_max, w_i_last, w_last_time, w_last_offset,
            )  # fmt: skip
        if not own_pane_from_events:
            continue
        for k in range(np.searchsorted(event_ids, entity), event_ids.shape[0]):
            if event_ids[k] != entity:
                break
            if event_times[k] < end - slide or event_times[k] > at:
                continue
            for j in range(event_values.shape[1]):
                value = event_values[k, j]
                if np.isnan(value):
                    continue
                add_value(
                    w_count, w_total, w_mean, w_m2, w_low, w_high, w_last_time, w_last_offset, w_last,
                    (row, j), value, event_times[k], event_offsets[k],
                )  # fmt: skip
                if exact:
                    add_integer(
                        w_i_high, w_i_low, w_i_min, w_i_max, w_i_last, w_last_time, w_last_offset,
                        (row, j), event_integers[k, j], event_times[k], event_offsets[k],
                    )  # fmt: skip
