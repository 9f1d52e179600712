"""Mergeable per-pane statistics, updated by Numba kernels: the state every aggregator reads.

A pane holds, per value column, the count of non-null values, their sum, Welford's mean and M2,
min, max, and the value with the latest (event time, offset). Panes merge exactly (Chan's
parallel update for M2), so a window is the merge of its panes and panes can be combined in any
order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["Moments", "arrays", "merge_moments", "moments_of"]

EMPTY_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True, kw_only=True)
class Moments:
    """Statistics of one or more columns, vectorised over rows (entities); each array has the same shape."""

    count: NDArray[np.float64]
    sum: NDArray[np.float64]
    mean: NDArray[np.float64]
    m2: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    last_time: NDArray[np.int64]
    last_offset: NDArray[np.int64]
    last: NDArray[np.float64]

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> Moments:
        return cls(
            count=np.zeros(shape),
            sum=np.zeros(shape),
            mean=np.zeros(shape),
            m2=np.zeros(shape),
            min=np.full(shape, np.inf),
            max=np.full(shape, -np.inf),
            last_time=np.full(shape, EMPTY_TIME, dtype=np.int64),
            last_offset=np.full(shape, -1, dtype=np.int64),
            last=np.full(shape, np.nan),
        )


@numba.njit(cache=True, inline="always")
def add_value(
    count: NDArray[np.float64],
    total: NDArray[np.float64],
    mean: NDArray[np.float64],
    m2: NDArray[np.float64],
    low: NDArray[np.float64],
    high: NDArray[np.float64],
    last_time: NDArray[np.int64],
    last_offset: NDArray[np.int64],
    last: NDArray[np.float64],
    index: tuple[int, ...],
    value: float,
    time: int,
    offset: int,
) -> None:
    """Welford's update of one slot with one non-null value."""
    n = count[index] + 1.0
    delta = value - mean[index]
    mean[index] += delta / n
    m2[index] += delta * (value - mean[index])
    count[index] = n
    total[index] += value
    low[index] = min(low[index], value)
    high[index] = max(high[index], value)
    if time > last_time[index] or (time == last_time[index] and offset > last_offset[index]):
        last_time[index] = time
        last_offset[index] = offset
        last[index] = value


@numba.njit(cache=True, inline="always")
def merge_into(
    count: NDArray[np.float64],
    total: NDArray[np.float64],
    mean: NDArray[np.float64],
    m2: NDArray[np.float64],
    low: NDArray[np.float64],
    high: NDArray[np.float64],
    last_time: NDArray[np.int64],
    last_offset: NDArray[np.int64],
    last: NDArray[np.float64],
    target: tuple[int, ...],
    source_count: float,
    source_sum: float,
    source_mean: float,
    source_m2: float,
    source_min: float,
    source_max: float,
    source_last_time: int,
    source_last_offset: int,
    source_last: float,
) -> None:
    """Chan's parallel merge of one slot's statistics into another."""
    if source_count == 0.0:
        return
    n = count[target] + source_count
    delta = source_mean - mean[target]
    m2[target] += source_m2 + delta * delta * count[target] * source_count / n
    mean[target] += delta * source_count / n
    count[target] = n
    total[target] += source_sum
    low[target] = min(low[target], source_min)
    high[target] = max(high[target], source_max)
    if source_last_time > last_time[target] or (
        source_last_time == last_time[target] and source_last_offset > last_offset[target]
    ):
        last_time[target] = source_last_time
        last_offset[target] = source_last_offset
        last[target] = source_last


@numba.njit(cache=True)
def _moments_of(
    values: NDArray[np.float64],
    times: NDArray[np.int64],
    offsets: NDArray[np.int64],
    out: tuple[NDArray[Any], ...],
) -> None:
    count, total, mean, m2, low, high, last_time, last_offset, last = out
    for i in range(values.shape[0]):
        if not np.isnan(values[i]):
            add_value(
                count,
                total,
                mean,
                m2,
                low,
                high,
                last_time,
                last_offset,
                last,
                (0,),
                values[i],
                times[i],
                offsets[i],
            )


def moments_of(
    values: NDArray[np.float64],
    times: NDArray[np.int64] | None = None,
    offsets: NDArray[np.int64] | None = None,
) -> Moments:
    """Statistics of one column (NaN is null), as a one-row Moments.

    >>> m = moments_of(np.array([1.0, np.nan, 3.0]))
    >>> float(m.count[0]), float(m.sum[0]), float(m.mean[0]), float(m.last[0])
    (2.0, 4.0, 2.0, 3.0)
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    n = values.shape[0]
    times = np.zeros(n, dtype=np.int64) if times is None else np.ascontiguousarray(times, dtype=np.int64)
    offsets = (
        np.arange(n, dtype=np.int64) if offsets is None else np.ascontiguousarray(offsets, dtype=np.int64)
    )
    result = Moments.empty((1,))
    _moments_of(values, times, offsets, arrays(result))
    return result


@numba.njit(cache=True)
def _merge(left: tuple[NDArray[Any], ...], right: tuple[NDArray[Any], ...]) -> None:
    count, total, mean, m2, low, high, last_time, last_offset, last = left
    r_count, r_total, r_mean, r_m2, r_low, r_high, r_last_time, r_last_offset, r_last = right
    for i in range(count.shape[0]):
        merge_into(
            count, total, mean, m2, low, high, last_time, last_offset, last, (i,),
            r_count[i], r_total[i], r_mean[i], r_m2[i], r_low[i], r_high[i],
            r_last_time[i], r_last_offset[i], r_last[i],
        )  # fmt: skip


def merge_moments(left: Moments, right: Moments) -> Moments:
    """The statistics of both inputs together (row by row), as a new Moments."""
    merged = Moments(**{name: array.copy() for name, array in vars(left).items()})
    _merge(arrays(merged), arrays(right))
    return merged


def arrays(moments: Moments) -> tuple[NDArray[Any], ...]:
    """The statistics as the positional arrays the Numba kernels take, in their order."""
    return (
        moments.count,
        moments.sum,
        moments.mean,
        moments.m2,
        moments.min,
        moments.max,
        moments.last_time,
        moments.last_offset,
        moments.last,
    )
