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

__all__ = [
    "Moments",
    "add_integer",
    "add_value",
    "arrays",
    "merge_integers_into",
    "merge_into",
    "merge_moments",
    "moments_of",
    "reset_integers",
    "reset_slot",
]

EMPTY_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True, kw_only=True)
class Moments:
    """Statistics of one or more columns, vectorised over rows (entities); each array has the same shape.

    Integer columns are also summed exactly: each value ``v`` splits into ``v >> 32`` and
    ``v & 0xFFFFFFFF``, summed apart in int64, so a sum of up to 2^31 values never wraps and the
    exact total is ``int_high * 2^32 + int_low``. Their min, max and last are kept as int64 too.
    """

    count: NDArray[np.float64]
    sum: NDArray[np.float64]
    mean: NDArray[np.float64]
    m2: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    last_time: NDArray[np.int64]
    last_offset: NDArray[np.int64]
    last: NDArray[np.float64]
    int_high: NDArray[np.int64]
    int_low: NDArray[np.int64]
    int_min: NDArray[np.int64]
    int_max: NDArray[np.int64]
    int_last: NDArray[np.int64]

    @classmethod
    def empty(cls, shape: tuple[int, ...], *, exact: bool = True) -> Moments:
        """Empty statistics; with ``exact=False`` (float columns only) the integer ones are empty
        int8 arrays, a type for which the kernels compile without them."""
        if not exact:
            floats = cls.empty(shape)
            none = np.zeros((0, *shape[1:]), dtype=np.int8)
            return cls(**{**vars(floats), **{name: none for name in _INTEGER_STATISTICS}})
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
            int_high=np.zeros(shape, dtype=np.int64),
            int_low=np.zeros(shape, dtype=np.int64),
            int_min=np.full(shape, _INT64_MAX, dtype=np.int64),
            int_max=np.full(shape, EMPTY_TIME, dtype=np.int64),
            int_last=np.zeros(shape, dtype=np.int64),
        )

    def exact_sum(self) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """The integer sums as int64, and where each fits int64 (elsewhere its value is meaningless).

        >>> m = moments_of(np.array([2.0**62, 2.0**62]), integers=np.array([2**62, 2**62]))
        >>> m.exact_sum()
        (array([-1]), array([False]))
        >>> moments_of(np.array([1.0, 2.0]), integers=np.array([2**63 - 1, -2])).exact_sum()[0]
        array([9223372036854775805])
        """
        high = self.int_high + (self.int_low >> 32)
        low = self.int_low & _LOW_MASK
        fits = (high >= -(1 << 31)) & (high < (1 << 31))
        return np.where(fits, (np.where(fits, high, 0) << 32) | low, -1), fits


_INT64_MAX = np.iinfo(np.int64).max
_INTEGER_STATISTICS = ("int_high", "int_low", "int_min", "int_max", "int_last")
_LOW_MASK = 0xFFFFFFFF


# The helpers take the statistics as separate arrays, not tuples: unpacking a tuple in a kernel's
# inner loop counts references to each of its arrays, which halves the speed of the window state.
# The integer statistics have their own helpers, which a kernel calls only where a column is an
# integer (``exact``, a compile-time constant): a branch on it at run time costs a third.
@numba.njit(cache=True, inline="always")
def add_value(  # type: ignore[no-untyped-def]
    count, total, mean, m2, low, high, last_time, last_offset, last, index, value, time, offset
):  # fmt: skip
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
def add_integer(  # type: ignore[no-untyped-def]
    i_high, i_low, i_min, i_max, i_last, last_time, last_offset, index, integer, time, offset
):  # fmt: skip
    """The exact update of one slot with one non-null integer. Call it after ``add_value``: the value
    is the slot's last when its (time, offset) is the slot's last."""
    i_high[index] += integer >> 32
    i_low[index] += integer & _LOW_MASK
    i_min[index] = min(i_min[index], integer)
    i_max[index] = max(i_max[index], integer)
    if time == last_time[index] and offset == last_offset[index]:
        i_last[index] = integer


@numba.njit(cache=True, inline="always")
def merge_into(  # type: ignore[no-untyped-def]
    count, total, mean, m2, low, high, last_time, last_offset, last, target,
    s_count, s_total, s_mean, s_m2, s_low, s_high, s_last_time, s_last_offset, s_last, at,
):  # fmt: skip
    """Chan's parallel merge of slot ``at`` of the ``s_`` statistics into slot ``target``."""
    source_count = s_count[at]
    if source_count == 0.0:
        return
    n = count[target] + source_count
    delta = s_mean[at] - mean[target]
    m2[target] += s_m2[at] + delta * delta * count[target] * source_count / n
    mean[target] += delta * source_count / n
    count[target] = n
    total[target] += s_total[at]
    low[target] = min(low[target], s_low[at])
    high[target] = max(high[target], s_high[at])
    if s_last_time[at] > last_time[target] or (
        s_last_time[at] == last_time[target] and s_last_offset[at] > last_offset[target]
    ):
        last_time[target] = s_last_time[at]
        last_offset[target] = s_last_offset[at]
        last[target] = s_last[at]


@numba.njit(cache=True, inline="always")
def merge_integers_into(  # type: ignore[no-untyped-def]
    i_high, i_low, i_min, i_max, i_last, last_time, last_offset, target,
    s_count, s_i_high, s_i_low, s_i_min, s_i_max, s_i_last, s_last_time, s_last_offset, at,
):  # fmt: skip
    """The exact merge of one slot's integer statistics. Call it after ``merge_into`` has merged every
    slot: the last value comes from the slot whose last (time, offset) won."""
    if s_count[at] == 0.0:
        return
    i_high[target] += s_i_high[at]
    i_low[target] += s_i_low[at]
    i_min[target] = min(i_min[target], s_i_min[at])
    i_max[target] = max(i_max[target], s_i_max[at])
    if s_last_time[at] == last_time[target] and s_last_offset[at] == last_offset[target]:
        i_last[target] = s_i_last[at]


@numba.njit(cache=True, inline="always")
def reset_slot(count, total, mean, m2, low, high, last_time, last_offset, last, index):  # type: ignore[no-untyped-def]
    """Empty one slot, as ``Moments.empty`` makes it."""
    count[index] = 0.0
    total[index] = 0.0
    mean[index] = 0.0
    m2[index] = 0.0
    low[index] = np.inf
    high[index] = -np.inf
    last_time[index] = EMPTY_TIME
    last_offset[index] = -1
    last[index] = np.nan


@numba.njit(cache=True, inline="always")
def reset_integers(i_high, i_low, i_min, i_max, i_last, index):  # type: ignore[no-untyped-def]
    i_high[index] = 0
    i_low[index] = 0
    i_min[index] = _INT64_MAX
    i_max[index] = EMPTY_TIME
    i_last[index] = 0


@numba.njit(cache=True)
def _moments_of(
    values: NDArray[np.float64],
    integers: NDArray[np.int64],
    times: NDArray[np.int64],
    offsets: NDArray[np.int64],
    out: tuple[NDArray[Any], ...],
) -> None:
    count, total, mean, m2, low, high, last_time, last_offset, last, i_high, i_low, i_min, i_max, i_last = out
    for i in range(values.shape[0]):
        if not np.isnan(values[i]):
            add_value(
                count, total, mean, m2, low, high, last_time, last_offset, last, (0,), values[i], times[i],
                offsets[i],
            )  # fmt: skip
            add_integer(
                i_high, i_low, i_min, i_max, i_last, last_time, last_offset, (0,), integers[i], times[i],
                offsets[i],
            )  # fmt: skip


def moments_of(
    values: NDArray[np.float64],
    times: NDArray[np.int64] | None = None,
    offsets: NDArray[np.int64] | None = None,
    *,
    integers: NDArray[np.int64] | None = None,
) -> Moments:
    """Statistics of one column (NaN is null), as a one-row Moments; ``integers`` holds the exact
    values of an integer column (any value where ``values`` is NaN).

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
    integers = (
        np.zeros(n, dtype=np.int64) if integers is None else np.ascontiguousarray(integers, dtype=np.int64)
    )
    result = Moments.empty((1,))
    _moments_of(values, integers, times, offsets, arrays(result))
    return result


@numba.njit(cache=True)
def _merge(left: tuple[NDArray[Any], ...], right: tuple[NDArray[Any], ...]) -> None:
    count, total, mean, m2, low, high, last_time, last_offset, last, i_high, i_low, i_min, i_max, i_last = (
        left
    )
    r_count, r_total, r_mean, r_m2, r_low, r_high, r_last_time, r_last_offset, r_last = right[:9]
    r_i_high, r_i_low, r_i_min, r_i_max, r_i_last = right[9:]
    for i in range(count.shape[0]):
        merge_into(
            count, total, mean, m2, low, high, last_time, last_offset, last, (i,),
            r_count, r_total, r_mean, r_m2, r_low, r_high, r_last_time, r_last_offset, r_last, (i,),
        )  # fmt: skip
        merge_integers_into(
            i_high, i_low, i_min, i_max, i_last, last_time, last_offset, (i,),
            r_count, r_i_high, r_i_low, r_i_min, r_i_max, r_i_last, r_last_time, r_last_offset, (i,),
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
        moments.int_high,
        moments.int_low,
        moments.int_min,
        moments.int_max,
        moments.int_last,
    )
