"""Aggregators: how each aggregation function reads its result from merged window statistics.

Every function shares one mergeable state, ``streams.moments.Moments``, so a window is computed
once per (window, slide) and read by as many functions as the view declares. The names match
``features.aggregations.AGGREGATIONS``. A result is float64 with NaN for null.

>>> from streams.moments import moments_of
>>> state = moments_of(np.array([2.0, 4.0, 9.0]))
>>> {name: round(float(AGGREGATORS[name].result(state)[0]), 3) for name in sorted(AGGREGATORS)}
{'count': 3.0, 'last': 9.0, 'max': 9.0, 'mean': 5.0, 'min': 2.0, 'stddev': 3.606, 'sum': 15.0}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streams.moments import Moments

__all__ = ["AGGREGATORS", "Aggregator"]

Result = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class Aggregator:
    """One aggregation function, as a read of the shared window statistics."""

    name: str
    result: Callable[[Moments], Result]
    empty_is_null: bool
    """Whether a window with no non-null values gives null (all but count, which gives 0)."""
    exact: Callable[[Moments], tuple[NDArray[np.int64], NDArray[np.bool_]]] | None = None
    """For an integer column, the result as exact int64 and where it fits int64 (its value is
    meaningless where the window is empty); None where the result is not an integer."""


def _null_where_empty(values: Result, moments: Moments, *, minimum: int = 1) -> Result:
    return np.where(moments.count >= minimum, values, np.nan)


def _stddev(moments: Moments) -> Result:
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = moments.m2 / (moments.count - 1.0)
    return _null_where_empty(np.sqrt(np.maximum(variance, 0.0)), moments, minimum=2)


def _mean(moments: Moments) -> Result:
    # sum / count rather than Welford's running mean: it matches a plain mean to the last bit more often.
    with np.errstate(invalid="ignore", divide="ignore"):
        return _null_where_empty(moments.sum / moments.count, moments)


def _exact_input(statistic: str) -> Callable[[Moments], tuple[NDArray[np.int64], NDArray[np.bool_]]]:
    """An exact read of ``Moments.<statistic>``: the result is one of the inputs, so it always fits."""
    return lambda moments: (getattr(moments, statistic).copy(), np.ones(moments.count.shape, dtype=bool))


AGGREGATORS: dict[str, Aggregator] = {
    aggregator.name: aggregator
    for aggregator in (
        Aggregator(name="count", result=lambda m: m.count.copy(), empty_is_null=False),
        Aggregator(
            name="sum",
            result=lambda m: _null_where_empty(m.sum, m),
            empty_is_null=True,
            exact=Moments.exact_sum,
        ),
        Aggregator(name="mean", result=_mean, empty_is_null=True),
        Aggregator(
            name="min",
            result=lambda m: _null_where_empty(m.min, m),
            empty_is_null=True,
            exact=_exact_input("int_min"),
        ),
        Aggregator(
            name="max",
            result=lambda m: _null_where_empty(m.max, m),
            empty_is_null=True,
            exact=_exact_input("int_max"),
        ),
        Aggregator(
            name="last",
            result=lambda m: _null_where_empty(m.last, m),
            empty_is_null=True,
            exact=_exact_input("int_last"),
        ),
        Aggregator(name="stddev", result=_stddev, empty_is_null=True),
    )
}
