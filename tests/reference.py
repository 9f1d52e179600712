"""The pandas reference for windowed features: what a row as of an entity's latest event must hold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.spec import FeatureViewSpec


def expected_rows(
    events: pd.DataFrame, spec: FeatureViewSpec, *, key: str, time: str, order: str
) -> pd.DataFrame:
    """One row per entity, as of its latest event time ``t``: each aggregation over the events in
    ``[end - window, end)`` with ``end`` the first slide boundary after ``t``. ``time`` is in µs;
    ``order`` breaks ties of event time for ``last``."""
    rows = {}
    for entity, group in events.groupby(key):
        as_of = int(group[time].max())
        row: dict[str, object] = {"as_of": as_of}
        for aggregation in spec.aggregations:
            window = int(aggregation.window.total_seconds() * 1_000_000)
            slide = int(aggregation.slide.total_seconds() * 1_000_000)
            end = (as_of // slide + 1) * slide
            inside = group[(group[time] >= end - window) & (group[time] < end)].sort_values([time, order])
            values = inside[aggregation.column].dropna()
            row[aggregation.feature] = {
                "count": lambda v: float(len(v)),
                "sum": lambda v: v.sum() if len(v) else np.nan,
                "mean": lambda v: v.mean() if len(v) else np.nan,
                "min": lambda v: v.min() if len(v) else np.nan,
                "max": lambda v: v.max() if len(v) else np.nan,
                "last": lambda v: v.iloc[-1] if len(v) else np.nan,
                "stddev": lambda v: v.std(ddof=1) if len(v) > 1 else np.nan,
            }[aggregation.function](values)
        rows[entity] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def value_at(
    events: pd.DataFrame, spec: FeatureViewSpec, *, key: str, time: str, order: str, entity: object, at: int
) -> dict[str, float]:
    """The value at ``at`` (µs) of every aggregation for one entity, by brute force: the events with
    event time in ``[end - window, at]``, ``end`` the first slide boundary after ``at``. An empty
    window gives 0 for count and NaN (null) for the others; ``order`` breaks ties of event time."""
    group = events[events[key] == entity]
    row: dict[str, float] = {}
    for aggregation in spec.aggregations:
        window = int(aggregation.window.total_seconds() * 1_000_000)
        slide = int(aggregation.slide.total_seconds() * 1_000_000)
        end = (at // slide + 1) * slide
        inside = group[(group[time] >= end - window) & (group[time] <= at)].sort_values([time, order])
        row[aggregation.feature] = _aggregate(aggregation.function, inside[aggregation.column].dropna())
    return row


def _aggregate(function: str, values: pd.Series) -> float:
    if function == "count":
        return float(len(values))
    if not len(values) or (function == "stddev" and len(values) < 2):
        return float("nan")
    return float(
        {
            "sum": values.sum,
            "mean": values.mean,
            "min": values.min,
            "max": values.max,
            "last": lambda: values.iloc[-1],
            "stddev": lambda: values.std(ddof=1),
        }[function]()
    )


def change_points(
    events: pd.DataFrame, spec: FeatureViewSpec, *, key: str, time: str
) -> set[tuple[object, int]]:
    """Every (entity, time) up to the stream's newest event time where some aggregation's value can
    change: each event time, and each end ``p + window`` of a pane ``[p, p + slide)`` that holds an event."""
    newest = int(events[time].max())
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
