"""Brute-force references for windowed features, recomputed from the raw events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.spec import FeatureViewSpec


def value_at(
    events: pd.DataFrame, spec: FeatureViewSpec, *, key: str, time: str, order: str, entity: object, at: int
) -> dict[str, float]:
    """The value at ``at`` (µs) of every aggregation for one entity, by brute force: the events with
    event time in ``[end - window, at]``, ``end`` the first slide boundary after ``at``. An empty
    window gives 0 for count and NaN (null) for the others; ``order`` breaks ties of event time."""
    group = events[events[key] == entity].sort_values([time, order])
    times = group[time].to_numpy(dtype=np.int64)
    row: dict[str, float] = {}
    for aggregation in spec.aggregations:
        window = int(aggregation.window.total_seconds() * 1_000_000)
        slide = int(aggregation.slide.total_seconds() * 1_000_000)
        end = (at // slide + 1) * slide
        values = group[aggregation.column].to_numpy(dtype=float)[(times >= end - window) & (times <= at)]
        row[aggregation.feature] = _aggregate(aggregation.function, values[~np.isnan(values)])
    return row


def _aggregate(function: str, values: np.ndarray) -> float:
    if function == "count":
        return float(len(values))
    if not len(values) or (function == "stddev" and len(values) < 2):
        return float("nan")
    return float(
        {
            "sum": np.sum,
            "mean": np.mean,
            "min": np.min,
            "max": np.max,
            "last": lambda v: v[-1],
            "stddev": lambda v: np.std(v, ddof=1),
        }[function](values)
    )


def change_points(
    events: pd.DataFrame, spec: FeatureViewSpec, *, key: str, time: str, newest: int | None = None
) -> set[tuple[object, int]]:
    """Every (entity, time) up to ``newest`` (the stream's newest event time by default) where some
    aggregation's value can change: each event time, and each end ``p + window`` of a pane
    ``[p, p + slide)`` that holds an event."""
    newest = int(events[time].max()) if newest is None else newest
    points = set(zip(events[key].tolist(), events[time].astype("int64").tolist(), strict=True))
    for aggregation in spec.aggregations:
        window = int(aggregation.window.total_seconds() * 1_000_000)
        slide = int(aggregation.slide.total_seconds() * 1_000_000)
        ends = events[time].astype("int64") // slide * slide + window
        points |= {
            (entity, end)
            for entity, end in zip(events[key].tolist(), ends.tolist(), strict=True)
            if end <= newest
        }
    return points


def expected_online(
    events: pd.DataFrame,
    spec: FeatureViewSpec,
    *,
    key: str,
    time: str,
    order: str,
    stream_time: dict[object, int],
) -> pd.DataFrame:
    """What Redis must hold per entity once the stream is caught up: the value at its partition's
    stream time (``stream_time`` per entity), as of the entity's newest change point up to it."""
    rows = {}
    for entity, group in events.groupby(key):
        newest = stream_time[entity]
        points = [at for _, at in change_points(group, spec, key=key, time=time, newest=newest)]
        row: dict[str, object] = {"as_of": max(points)}
        row.update(value_at(group, spec, key=key, time=time, order=order, entity=entity, at=newest))
        rows[entity] = row
    return pd.DataFrame.from_dict(rows, orient="index")
