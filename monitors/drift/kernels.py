"""The Numba kernels behind ``monitors.drift.metrics``: sorted-sample statistics and binned distances.

Every kernel takes plain NumPy arrays that the typed functions in ``monitors.drift.metrics`` have
checked (finite values, sorted where it says so), and is compiled once per machine (``cache=True``).
The ``*_rows`` kernels take one feature per row and run one feature per thread (``prange``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "bin_counts",
    "bottom_k",
    "ecdf_steps",
    "ks_sorted",
    "ks_wasserstein_padded",
    "ks_wasserstein_rows",
    "ks_wasserstein_sorted",
    "wasserstein_sorted",
    "window_update",
]


@njit(cache=True, nogil=True)
def ecdf_steps(size: int) -> np.ndarray:  # pragma: no cover - compiled
    """``i / size`` for ``i`` in ``0..size``: an ECDF's heights, looked up in the merge instead of divided.
    Each is the same float as the division scipy does, so the statistics stay bit-identical."""
    return np.arange(size + 1) / size


@njit(cache=True, nogil=True, inline="always")
def _merge_step(
    left: np.ndarray,
    right: np.ndarray,
    left_ecdf: np.ndarray,
    right_ecdf: np.ndarray,
    i: int,
    j: int,
    value: float,
    largest: float,
    area: float,
) -> tuple[int, int, float, float, float]:  # pragma: no cover - compiled
    """One step of the merge in ``ks_wasserstein_padded``: take the smaller head, then score the gap."""
    take = left[i] <= right[j]
    i += take
    j += 1 - take
    following = min(left[i], right[j])
    gap = abs(left_ecdf[i] - right_ecdf[j])
    if following != value and gap > largest:
        largest = gap
    if following != np.inf:
        area += gap * (following - value)
    return i, j, following, largest, area


@njit(cache=True, nogil=True)
def ks_wasserstein_padded(left: np.ndarray, right: np.ndarray) -> tuple[float, float]:  # pragma: no cover
    """The KS statistic and the 1-Wasserstein distance of two sorted, non-empty samples, in one merge.

    Each sample ends with one extra +inf, a sentinel, so the merge needs no bounds checks: it takes one
    value a step, from whichever side is smaller, without a data-dependent branch. The ECDF gap counts
    for KS only where the next value differs (so ties are compared after the jump, as scipy's
    ``searchsorted(side="right")`` does); the area between the ECDFs adds the gap times the step to the
    next value, which is zero inside a run of ties.
    """
    n1, n2 = left.shape[0] - 1, right.shape[0] - 1
    left_ecdf, right_ecdf = ecdf_steps(n1), ecdf_steps(n2)
    i = j = 0
    largest = area = 0.0
    value = min(left[0], right[0])
    for _ in range(n1 + n2):
        i, j, value, largest, area = _merge_step(
            left, right, left_ecdf, right_ecdf, i, j, value, largest, area
        )
    return largest, area


@njit(cache=True, nogil=True)
def _ks_wasserstein_pair(
    first: np.ndarray, second: np.ndarray, a: int, b: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``ks_wasserstein_padded`` of rows ``a`` and ``b`` at once, into ``out[a]`` and ``out[b]``.

    A merge is bound by the latency of its compare-and-advance chain, not by the core's width, so two
    independent merges in one loop run in little more than the time of one (1.8x on one core here).
    """
    n1, n2 = first.shape[1] - 1, second.shape[1] - 1
    left_ecdf, right_ecdf = ecdf_steps(n1), ecdf_steps(n2)
    l1, r1, l2, r2 = first[a], second[a], first[b], second[b]
    i1 = j1 = i2 = j2 = 0
    largest1 = area1 = largest2 = area2 = 0.0
    value1, value2 = min(l1[0], r1[0]), min(l2[0], r2[0])
    for _ in range(n1 + n2):
        i1, j1, value1, largest1, area1 = _merge_step(
            l1, r1, left_ecdf, right_ecdf, i1, j1, value1, largest1, area1
        )
        i2, j2, value2, largest2, area2 = _merge_step(
            l2, r2, left_ecdf, right_ecdf, i2, j2, value2, largest2, area2
        )
    out[a, 0], out[a, 1] = largest1, area1
    out[b, 0], out[b, 1] = largest2, area2


@njit(cache=True, nogil=True)
def ks_wasserstein_sorted(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:  # pragma: no cover
    """``ks_wasserstein_padded`` of two sorted samples without their sentinels."""
    left = np.empty(first.shape[0] + 1)
    left[:-1] = first
    left[-1] = np.inf
    right = np.empty(second.shape[0] + 1)
    right[:-1] = second
    right[-1] = np.inf
    return ks_wasserstein_padded(left, right)


@njit(cache=True, nogil=True)
def ks_sorted(first: np.ndarray, second: np.ndarray) -> float:  # pragma: no cover - compiled
    """The two-sample KS statistic of two sorted samples: the largest gap between their ECDFs."""
    return ks_wasserstein_sorted(first, second)[0]


@njit(cache=True, nogil=True)
def wasserstein_sorted(first: np.ndarray, second: np.ndarray) -> float:  # pragma: no cover - compiled
    """The 1-Wasserstein distance of two sorted samples: the area between their ECDFs."""
    return ks_wasserstein_sorted(first, second)[1]


@njit(cache=True, nogil=True)
def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Counts per bin for bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``; NaNs are not counted."""
    counts = np.zeros(edges.shape[0] + 1, dtype=np.int64)
    for value in values:
        if value == value:
            counts[np.searchsorted(edges, value, side="left")] += 1
    return counts


@njit(cache=True, parallel=True)
def ks_wasserstein_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``ks_wasserstein_padded`` of each pair of rows of two row-sorted 2-D arrays whose last column is
    +inf, two rows per thread step (``_ks_wasserstein_pair``). Returns a (rows, 2) array: each feature's
    KS statistic and Wasserstein distance.
    """
    rows = first.shape[0]
    result = np.empty((rows, 2))
    half = (rows + 1) // 2
    for row in prange(half):
        if row + half < rows:
            _ks_wasserstein_pair(first, second, row, row + half, result)
        else:  # an odd row out
            result[row, 0], result[row, 1] = ks_wasserstein_padded(first[row], second[row])
    return result


@njit(cache=True, nogil=True)
def bottom_k(keys: np.ndarray, values: np.ndarray, size: int, capacity: int) -> int:  # pragma: no cover
    """Sort the first ``size`` (key, value) pairs in place by key, then value, and keep the ``capacity``
    smallest at the front; returns how many are kept."""
    order = np.argsort(keys[:size], kind="mergesort")
    sorted_keys = keys[:size][order]
    sorted_values = values[:size][order]
    start = 0
    while start < size:  # pairs with one key (one request id seen twice) go by value
        end = start + 1
        while end < size and sorted_keys[end] == sorted_keys[start]:
            end += 1
        if end - start > 1:
            sorted_values[start:end] = np.sort(sorted_values[start:end])
        start = end
    kept = min(size, capacity)
    keys[:kept] = sorted_keys[:kept]
    values[:kept] = sorted_values[:kept]
    return kept


@njit(cache=True, nogil=True)
def window_update(
    values: np.ndarray,
    row_keys: np.ndarray,
    edges: np.ndarray,
    counts: np.ndarray,
    nulls: np.ndarray,
    sample_keys: np.ndarray,
    sample_values: np.ndarray,
    filled: np.ndarray,
    bound_keys: np.ndarray,
    bound_values: np.ndarray,
    seen: np.ndarray,
    moments: np.ndarray,
    capacity: int,
    ranges: np.ndarray,
    outside: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add a batch of rows (one column per numeric feature, one 64-bit key per row) to a window, in
    O(1) memory per feature.

    Per feature: a count per reference bin (``edges`` padded with +inf), the nulls, the count of values
    (``seen``), their sum, sum of squares, min and max, how many fall below and above the reference's range
    (``ranges`` in, ``outside`` out), and the sample of the ``capacity`` values with the smallest (key,
    value) pairs (bottom-k). The keys are hashes of the events' request ids, so the sample
    is a uniform one that does not depend on the order of the rows or on how they were split: two
    windows' samples merge into the one sample of their union (``ServingWindow.merged``).

    The sample is a buffer of twice the capacity (``sample_keys``, ``sample_values``; the first
    ``filled`` in use): a pair that can still be among the smallest is appended, and a full buffer is cut
    back to the smallest ``capacity`` (``bottom_k``), the largest of which (``bound_keys``,
    ``bound_values``) a later pair must come before. ``filled`` is negative once a bound holds. That costs
    O(log capacity) per pair kept, in sequential passes, where a heap paid a sift with scattered reads.
    """
    rows, features = values.shape
    buffer = sample_keys.shape[1]
    for feature in range(features):
        feature_edges = edges[feature]
        total = seen[feature]
        used = filled[feature]
        bounded = used < 0
        if bounded:
            used = -used
        bound_key = bound_keys[feature]
        bound_value = bound_values[feature]
        low, high = ranges[feature, 0], ranges[feature, 1]
        for row in range(rows):
            value = values[row, feature]
            if value != value:
                nulls[feature] += 1
                continue
            counts[feature, np.searchsorted(feature_edges, value, side="left")] += 1
            total += 1
            moments[feature, 0] += value
            moments[feature, 1] += value * value
            if value < moments[feature, 2]:
                moments[feature, 2] = value
            if value > moments[feature, 3]:
                moments[feature, 3] = value
            if value < low:
                outside[feature, 0] += 1
            elif value > high:
                outside[feature, 1] += 1
            key = row_keys[row]
            if bounded and (key > bound_key or (key == bound_key and value >= bound_value)):
                continue
            sample_keys[feature, used] = key
            sample_values[feature, used] = value
            used += 1
            if used == buffer:
                used = bottom_k(sample_keys[feature], sample_values[feature], used, capacity)
                bounded = True
                bound_key = sample_keys[feature, used - 1]
                bound_value = sample_values[feature, used - 1]
        seen[feature] = total
        filled[feature] = -used if bounded else used
        bound_keys[feature] = bound_key
        bound_values[feature] = bound_value
