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
