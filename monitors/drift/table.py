"""Compare a whole current dataset with a reference profile, every numeric feature at once.

The window path (``monitors.drift.window``) summarises a stream; this is the path for a full table: a
day of predictions, a candidate training set. The reference's sorted samples are stacked once, the
current columns are sorted together, and KS, Wasserstein and the bin counts for PSI and
Jensen-Shannon run in Numba, one feature per thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from monitors.drift import kernels
from monitors.drift.metrics import KSMethod, jensen_shannon, ks_result, psi
from monitors.drift.profile import ReferenceProfile

__all__ = ["compare_numeric"]

_WORKERS = os.cpu_count() or 1
_SORTERS = ThreadPoolExecutor(_WORKERS, thread_name_prefix="sluice-sort")


def compare_numeric(
    profile: ReferenceProfile,
    current: Mapping[str, NDArray[np.float64]],
    *,
    ks_method: KSMethod = "kolmogorov",
) -> dict[str, dict[str, float]]:
    """Per numeric feature: ``ks_statistic``, ``ks_pvalue``, ``wasserstein``, ``psi`` and ``jensen_shannon``,
    against the profile's sample and bins. ``ks_method`` is as in ``metrics.ks_result``."""
    names = [
        name for name, feature in profile.features.items() if feature.kind == "numeric" and name in current
    ]
    columns = [_present(np.asarray(current[name], dtype=np.float64)) for name in names]
    references = [profile.features[name].sample for name in names]
    if (
        names
        and _same_length(columns)
        and _same_length(references)
        and len(columns[0])
        and len(references[0])
    ):
        # One feature per row, each row ending with a +inf sentinel for the merge kernel.
        padded = _sorted_padded_rows(columns)
        both = kernels.ks_wasserstein_rows(profile.padded_samples(names), padded)
        ks, wasserstein = both[:, 0], both[:, 1]
        sorted_columns = [row[:-1] for row in padded]
    else:
        sorted_columns = [np.sort(column) for column in columns]
        pairs = [
            kernels.ks_wasserstein_sorted(r, c) if len(r) and len(c) else (np.nan, np.nan)
            for r, c in zip(references, sorted_columns, strict=True)
        ]
        ks = np.array([pair[0] for pair in pairs])
        wasserstein = np.array([pair[1] for pair in pairs])
    result = {}
    for index, name in enumerate(names):
        feature = profile.features[name]
        values = sorted_columns[index]
        # The current values are sorted: a bin's count is a difference of two positions.
        positions = np.searchsorted(values, feature.edges, side="right")
        counts = np.diff(np.concatenate(([0], positions, [len(values)])))
        if np.isnan(ks[index]):
            statistic, pvalue = float("nan"), float("nan")
        else:
            statistic, pvalue = ks_result(
                float(ks[index]), len(references[index]), len(values), method=ks_method
            )
        result[name] = {
            "ks_statistic": statistic,
            "ks_pvalue": pvalue,
            "wasserstein": float(wasserstein[index]),
            "psi": psi(feature.counts, counts),
            "jensen_shannon": jensen_shannon(feature.counts, counts),
        }
    return result


def _sorted_padded_rows(columns: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    """The columns as rows, each sorted, with a +inf appended. NumPy's SIMD sort beats Numba's, and it
    releases the GIL, so the rows are split over threads."""
    result = np.empty((len(columns), len(columns[0]) + 1))
    result[:, -1] = np.inf

    def sort(rows: range) -> None:
        for row in rows:
            result[row, :-1] = columns[row]
            result[row, :-1].sort()  # in place: no second copy of the column

    workers = min(_WORKERS, len(columns))
    list(_SORTERS.map(sort, [range(start, len(columns), workers) for start in range(workers)]))
    return result


def _present(column: NDArray[np.float64]) -> NDArray[np.float64]:
    missing = np.isnan(column)
    return column[~missing] if missing.any() else column


def _same_length(arrays: list[NDArray[np.float64]]) -> bool:
    return len({len(array) for array in arrays}) == 1
