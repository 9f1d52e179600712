"""Thresholds that hold a false-alarm rate: each distance metric's null distribution, from the reference.

A distance between a window and the reference (Wasserstein, PSI, Jensen-Shannon, Hellinger, L-infinity)
has no fixed threshold that means the same for every feature and window size: a tenth of a standard
deviation is noise for a small window and a sure shift for a large one, and a feature that is nearly
constant (a border pixel) moves by its whole deviation on chance alone. So each distance is turned into a
tail probability under the null hypothesis "window and reference come from one distribution", and tested
like a p-value, in two steps:

1. **A screen, from the reference alone, kept per feature and window size.** ``draws`` pairs of samples,
   one of the reference's size and one of the window's, are drawn from the reference's own distribution
   and the distance between each pair is a null draw. Binned distances (``input == "counts"``) draw count
   vectors from ``Multinomial(size, shares)`` over the reference's bins; Wasserstein (normed by the
   reference's standard deviation, as Evidently's) does the same over the reference sample's distinct
   values, since between two samples on the same values it is ``sum_k |F1(x_k) - F2(x_k)| (x_{k+1} -
   x_k)`` (past ``_GRID`` distinct values, neighbours are pooled). Window sizes are grouped in quarter
   powers of two, rounded down: a smaller window's null is wider, so a group's screen is never too tight.
2. **A permutation test for what the screen lets through** (a tail under ``screen``): the reference's
   and the window's counts over the same values or bins are pooled, and ``draws`` times the window's share
   is drawn from the pool without replacement (a multivariate hypergeometric draw: a permutation of the
   pooled values, counted), the rest being the reference's. That null assumes nothing about the
   distribution. The screen alone is not enough: it takes the reference's shares as the truth, and a value
   the reference saw rarely by chance (a pixel dark in one image of a thousand, in two hundred of the next
   thousand) makes any window with a few of them look impossible. With the screen alone, a quarter of
   unshifted windows of scikit-learn's digits raised an alarm; an asymptotic shortcut (the Brownian-bridge
   functional of the Wasserstein distance) did no better.

A tail probability is ``(1 + draws at or above the observed distance) / (1 + draws)``, never 0, so it can be
corrected across features like any p-value (``monitors.drift.detector``). The random draws are seeded from
the feature and the window's start, so a window scored twice (by one monitor or three) scores the same.

>>> import pandas as pd
>>> from monitors.drift.metrics import metric
>>> from monitors.drift.profile import ReferenceProfile
>>> rng = np.random.default_rng(0)
>>> profile = ReferenceProfile.build(pd.DataFrame({"x": rng.normal(size=5000)}), model="m", version="1")
>>> calibration = Calibration(profile, draws=4000)
>>> wasserstein = metric("wasserstein")
>>> small, large = (calibration.critical("x", wasserstein, window_values=n, level=0.01) for n in (100, 2000))
>>> bool(small > 2 * large)  # a small window's chance distance is larger
True
>>> calibration.tail("x", wasserstein, window_values=2000, observed=large * 3) < 0.001
True
>>> shifted = rng.normal(0.3, 1, 2000)
>>> test = calibration.permutation("x", wasserstein, profile.features["x"].sample, shifted, seed=1)
>>> test.pvalue < 0.001, bool(test.critical(0.01) < test.observed)
(True, True)
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitors.drift.metrics import PSI_FLOOR, Metric
from monitors.drift.profile import ReferenceProfile

__all__ = ["CALIBRATED", "Calibration", "Permutation"]

CALIBRATED = frozenset({"wasserstein", "psi", "jensen_shannon", "hellinger", "l_infinity"})
"""The distance metrics whose thresholds come from their null distribution here."""

_GRID = 256
"""Distinct values of a reference sample the Wasserstein null is drawn over, at the most."""
_POOLED_GRID = 1024
"""Distinct values of the pooled samples a Wasserstein permutation test runs over, at the most."""
_CHUNK = 2000
"""Null draws made at a time (memory: ``_CHUNK * _POOLED_GRID`` numbers)."""


@dataclass(frozen=True)
class Permutation:
    """One permutation test of a distance: the observed distance on the pooled values or bins, and its
    null draws, sorted."""

    observed: float
    null: NDArray[np.float64]

    @property
    def pvalue(self) -> float:
        if math.isnan(self.observed):
            return math.nan
        beyond = len(self.null) - int(np.searchsorted(self.null, self.observed, side="left"))
        return (1 + beyond) / (1 + len(self.null))

    def critical(self, level: float) -> float:
        return _critical(self.null, level)


class Calibration:
    """The null distributions of one reference profile's features, computed on first use and kept."""

    def __init__(
        self, profile: ReferenceProfile, *, draws: int = 20_000, screen_draws: int = 4000, seed: int = 0
    ) -> None:
        self.profile = profile
        self.draws = draws
        """Permutations for a test that may decide (its first ``draws // 10`` gave a tail under 0.01)."""
        self.screen_draws = screen_draws
        """Draws of a screen's null: enough to tell a tail under ``alpha`` from one above."""
        self.seed = seed
        self._nulls: dict[tuple[str, str, int], NDArray[np.float64]] = {}

    def tail(self, feature: str, metric: Metric, *, window_values: int, observed: float) -> float:
        """The chance, under the null, of a distance at least ``observed`` for a window of this many values
        (NaN when ``observed`` is NaN)."""
        if math.isnan(observed):
            return math.nan
        null = self._null(feature, metric, window_values)
        beyond = len(null) - int(np.searchsorted(null, observed, side="left"))
        return (1 + beyond) / (1 + len(null))

    def critical(self, feature: str, metric: Metric, *, window_values: int, level: float) -> float:
        """The distance a window of this many values exceeds by chance with probability at most ``level``
        (to the draws' precision: the smallest null draw with at most ``level`` of the draws above it)."""
        return _critical(self._null(feature, metric, window_values), level)

    def permutation(
        self,
        feature: str,
        metric: Metric,
        reference: ArrayLike,
        current: ArrayLike,
        *,
        seed: int,
        draws: int | None = None,
    ) -> Permutation:
        """The permutation test of one comparison: ``reference`` and ``current`` are what the metric
        compares (the two samples, or the two count vectors over the same bins)."""
        if draws is None:  # a tenth first; all of them only where the tail is small enough to matter
            first_try = self.permutation(
                feature, metric, reference, current, seed=seed, draws=self.draws // 10
            )
            if math.isnan(first_try.pvalue) or first_try.pvalue > 0.01:
                return first_try
        rng = np.random.default_rng([self.seed, zlib.crc32(feature.encode()), seed & 0xFFFFFFFF])
        count = draws or self.draws
        if metric.input == "counts":
            first = np.asarray(reference, dtype=np.int64)
            second = np.asarray(current, dtype=np.int64)
            if first.sum() == 0 or second.sum() == 0:
                return Permutation(observed=math.nan, null=np.full(1, math.nan))
            observed = float(_BINNED[metric.name](_rows(first), _rows(second))[0])
            pooled = first + second
            drawn = _permuted(rng, pooled, int(second.sum()), count)
            null = _BINNED[metric.name](_rows(pooled - drawn), _rows(drawn))
            return Permutation(observed=observed, null=np.sort(null))
        first_values = np.asarray(reference, dtype=np.float64)
        second_values = np.asarray(current, dtype=np.float64)
        spread = _std(first_values)
        if not len(first_values) or not len(second_values) or math.isnan(spread):
            return Permutation(observed=math.nan, null=np.full(1, math.nan))
        distinct = np.unique(np.concatenate([first_values, second_values]))
        first = np.bincount(np.searchsorted(distinct, first_values), minlength=len(distinct))
        second = np.bincount(np.searchsorted(distinct, second_values), minlength=len(distinct))
        gaps = np.diff(distinct)
        if len(distinct) > _POOLED_GRID:
            edges = np.linspace(0, len(distinct), _POOLED_GRID + 1).astype(np.int64)[:-1]
            first, second = np.add.reduceat(first, edges), np.add.reduceat(second, edges)
            gaps = np.add.reduceat(np.append(gaps, 0.0), edges)[:-1]
        observed = float(_wasserstein_rows(_cdf(first[None, :]), _cdf(second[None, :]), gaps)[0]) / spread
        pooled = first + second
        chunks = []
        for start in range(0, count, _CHUNK):
            size = min(_CHUNK, count - start)
            drawn = _permuted(rng, pooled, int(second.sum()), size)
            chunks.append(_wasserstein_rows(_cdf(pooled - drawn), _cdf(drawn), gaps) / spread)
        return Permutation(observed=observed, null=np.sort(np.concatenate(chunks)))

    def _null(self, feature: str, metric: Metric, window_values: int) -> NDArray[np.float64]:
        if metric.name not in CALIBRATED:
            raise ValueError(
                f"metric {metric.name!r} is a test with its own p-value, not a calibrated distance"
            )
        profile = self.profile.features[feature]
        group = _group(window_values)
        key = (feature, metric.name, group)
        if key not in self._nulls:
            if metric.input == "samples":
                draws = self._wasserstein(profile.sample, group) / _std(profile.sample)
            else:
                draws = self._counts(profile.counts, group, metric)
            self._nulls[key] = np.sort(draws)
        return self._nulls[key]

    def _counts(self, counts: NDArray[np.int64], window: int, metric: Metric) -> NDArray[np.float64]:
        """Null draws of a binned distance: both sides drawn from the reference's shares."""
        rng = np.random.default_rng(self.seed)
        total = int(counts.sum())
        draws = self.screen_draws
        if total == 0 or window == 0:
            return np.full(1, math.nan)
        shares = counts / total
        reference = rng.multinomial(total, shares, size=draws) / total
        current = rng.multinomial(window, shares, size=draws) / window
        return _BINNED[metric.name](reference, current)

    def _wasserstein(self, sample: NDArray[np.float64], window: int) -> NDArray[np.float64]:
        """Null draws of the Wasserstein distance between a sample of the reference's size and one of
        ``window`` values, both drawn from the reference sample's distinct values and their shares."""
        values = np.sort(np.asarray(sample, dtype=np.float64))
        if len(values) < 2 or values[0] == values[-1] or window == 0:
            return np.full(1, math.nan)
        distinct, repeats = np.unique(values, return_counts=True)
        gaps = np.diff(distinct)
        shares = repeats / len(values)
        if len(distinct) > _GRID:  # pool neighbours: each group's mass at its first value's gap onwards
            edges = np.linspace(0, len(distinct), _GRID + 1).astype(np.int64)[:-1]
            shares = np.add.reduceat(shares, edges)
            gaps = np.add.reduceat(np.append(gaps, 0.0), edges)[:-1]
        rng = np.random.default_rng(self.seed)
        draws = []
        for start in range(0, self.screen_draws, _CHUNK):
            size = min(_CHUNK, self.screen_draws - start)
            first = _cdf(rng.multinomial(len(values), shares, size=size))
            second = _cdf(rng.multinomial(window, shares, size=size))
            draws.append(_wasserstein_rows(first, second, gaps))
        return np.concatenate(draws)


def _permuted(
    rng: np.random.Generator, pooled: NDArray[np.int64], taken: int, size: int
) -> NDArray[np.int64]:
    """``size`` draws of ``taken`` of the pooled counts without replacement: the counts a permutation
    gives one side. numpy's two methods cost by the colours (marginals) or by the draws (count)."""
    method: Literal["marginals", "count"] = "marginals" if len(pooled) < taken else "count"
    drawn: NDArray[np.int64] = rng.multivariate_hypergeometric(pooled, taken, size=size, method=method)
    return drawn


def _cdf(counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each row's cumulative shares at every value but the last."""
    result: NDArray[np.float64] = np.cumsum(counts, axis=1)[:, :-1] / counts.sum(axis=1, keepdims=True)
    return result


def _wasserstein_rows(
    first: NDArray[np.float64], second: NDArray[np.float64], gaps: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per row, ``sum_k |F1(x_k) - F2(x_k)| (x_{k+1} - x_k)``: the distance between two samples on the
    same values, from their cumulative shares."""
    result: NDArray[np.float64] = np.abs(first - second) @ gaps
    return result


def _rows(counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Count vectors (one, or one per row) as rows of shares."""
    rows = np.atleast_2d(counts).astype(np.float64)
    result: NDArray[np.float64] = rows / rows.sum(axis=1, keepdims=True)
    return result


def _critical(null: NDArray[np.float64], level: float) -> float:
    """The smallest sorted null draw with at most ``level`` of the draws' weight at or above it."""
    allowed = math.floor(level * (1 + len(null))) - 1  # draws that may lie at or above it
    if allowed < 0:
        return math.inf
    return float(null[max(len(null) - 1 - allowed, 0)])


def _psi_rows(reference: NDArray[np.float64], current: NDArray[np.float64]) -> NDArray[np.float64]:
    reference, current = np.maximum(reference, PSI_FLOOR), np.maximum(current, PSI_FLOOR)
    result: NDArray[np.float64] = np.sum((current - reference) * np.log(current / reference), axis=1)
    return result


def _jensen_shannon_rows(reference: NDArray[np.float64], current: NDArray[np.float64]) -> NDArray[np.float64]:
    middle = (reference + current) / 2
    divergence = np.zeros(len(reference))
    for side in (reference, current):
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(side > 0, side * np.log(side / middle), 0.0)
        divergence += terms.sum(axis=1) / 2
    return np.sqrt(np.maximum(divergence, 0.0))


def _hellinger_rows(reference: NDArray[np.float64], current: NDArray[np.float64]) -> NDArray[np.float64]:
    result: NDArray[np.float64] = np.sqrt(np.maximum(0.0, 1.0 - np.sum(np.sqrt(reference * current), axis=1)))
    return result


def _l_infinity_rows(reference: NDArray[np.float64], current: NDArray[np.float64]) -> NDArray[np.float64]:
    result: NDArray[np.float64] = np.max(np.abs(reference - current), axis=1)
    return result


_BINNED = {
    "psi": _psi_rows,
    "jensen_shannon": _jensen_shannon_rows,
    "hellinger": _hellinger_rows,
    "l_infinity": _l_infinity_rows,
}
"""The binned distances of ``monitors.drift.metrics``, over rows of shares at once (the same formulas)."""


def _group(values: int) -> int:
    """Window sizes grouped by quarter powers of two, rounded down (a smaller window's null is wider)."""
    if values <= 1:
        return max(values, 0)
    return int(2 ** (math.floor(4 * math.log2(values)) / 4))


def _std(sample: NDArray[np.float64]) -> float:
    deviation = float(np.std(sample)) if len(sample) else math.nan
    return deviation if deviation > 0 else math.nan
