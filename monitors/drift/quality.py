"""Data quality per window and feature, against what the reference makes expected.

Four rates. Each is tested against the reference as two samples of one population would compare, so
that the test holds its level however few rows the reference had (a rate estimated from the reference is
not taken as known):

- ``null_rate``: events without a value. Fisher's exact test, one-sided: the window's nulls against the
  reference's, given both (a hypergeometric tail).
- ``type_error_rate``: values there but of another type (not a number; an object for a category). A
  typed training table has none, so one is a problem.
- ``out_of_range_share``: a numeric feature's values below the reference's minimum or above its maximum.
  If window and reference come from one continuous distribution, every ordering of their values is
  equally likely, and the chance that exactly ``k`` of ``m`` window values fall outside the range of ``n``
  reference values is ``(k + 1) C(m - k + n - 2, n - 2) / C(n + m, n)``: an exact rank test. (Ties with
  the range's ends count as inside, which only makes the test more careful.) A binomial at ``2 / (n + 1)``
  would be wrong here: the values of one window share the same reference extremes.
- ``new_category_share``: a categorical feature's values outside the reference's vocabulary. Fisher's
  exact test, one-sided, against the reference's values outside it.

A rate is flagged when its count reaches the smallest count whose tail probability is at most ``alpha``
divided by the number of tests in the window (Bonferroni over the window's features and metrics): with
data like the reference, a window raises a false quality alarm with probability at most ``alpha``. The
score is the observed rate and the threshold the rate at which it is flagged, so a report and an alert
read the same way as a drift score.

>>> import pandas as pd
>>> from monitors.drift.profile import ReferenceProfile
>>> from monitors.drift.window import ServingWindow
>>> profile = ReferenceProfile.build(pd.DataFrame({"amount": [float(v) for v in range(1, 1001)]}),
...                                  model="m", version="1")
>>> window = ServingWindow(profile=profile, start_us=0, end_us=1)
>>> window.update_rows([{"amount": 5.0}] * 950 + [{"amount": None}] * 30 + [{"amount": 5000.0}] * 20)
>>> # 30 nulls where the reference had none; 20 of the 970 values above its maximum (1000.0)
>>> [(score.metric, round(score.score, 4), score.drift) for score in quality_scores(profile, window)]
[('null_rate', 0.03, True), ('type_error_rate', 0.0, False), ('out_of_range_share', 0.0206, True)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from scipy.stats import hypergeom

from monitors.drift.detector import FeatureScore
from monitors.drift.profile import ReferenceProfile
from monitors.drift.window import ServingWindow

__all__ = ["QUALITY_METRICS", "quality_scores"]

QUALITY_METRICS = ("null_rate", "type_error_rate", "out_of_range_share", "new_category_share")


def quality_scores(
    profile: ReferenceProfile, window: ServingWindow, *, alpha: float = 0.01
) -> list[FeatureScore]:
    """One score per feature and metric (see the module's doc); NaN where the window had no values."""
    tests: list[tuple[str, str, int, int, Callable[[int], float]]] = []
    """(feature, metric, count, out of, the tail probability of a count)."""
    for name, feature in profile.features.items():
        rows = feature.count + feature.null_count
        nulls, errors = window.null_count(name), window.type_errors(name)
        tests.append(
            (
                name,
                "null_rate",
                nulls,
                window.events,
                partial(_fisher, feature.null_count, rows, window.events),
            )
        )
        tests.append((name, "type_error_rate", errors, window.events, _never))
        if feature.kind == "numeric":
            below, above = window.outside(name)
            present = window.events - nulls - errors
            tests.append(
                (
                    name,
                    "out_of_range_share",
                    below + above,
                    present,
                    partial(_outside, present, feature.count),
                )
            )
        else:
            counts = window.counts(name)
            other = int(feature.counts[-1]) if len(feature.counts) else 0
            present = int(counts.sum())
            tests.append(
                (
                    name,
                    "new_category_share",
                    int(counts[-1]),
                    present,
                    partial(_fisher, other, feature.count, present),
                )
            )
    level = alpha / max(len(tests), 1)
    scores = []
    for name, metric, count, total, tail in tests:
        if total == 0:
            score, threshold, flagged = math.nan, math.nan, False
        else:
            critical = _critical(tail, total, level)
            score, threshold, flagged = count / total, critical / total, count >= critical
        scores.append(
            FeatureScore(
                feature=name, metric=metric, against="reference", score=score, threshold=threshold,
                drift=flagged, kind="quality",
            )
        )  # fmt: skip
    return scores


def _fisher(reference_count: int, reference_total: int, window_total: int, count: int) -> float:
    """P(at least ``count`` of the window's ``window_total`` carry the mark) if window and reference are
    one population: the hypergeometric tail of Fisher's one-sided exact test."""
    marked = reference_count + count
    return float(hypergeom.sf(count - 1, reference_total + window_total, marked, window_total))


def _outside(window_total: int, reference_total: int, count: int) -> float:
    """P(at least ``count`` of ``window_total`` values fall outside the range of ``reference_total``),
    every ordering of the pooled values being equally likely (see the module's doc). Summed from the
    small counts up: the tail falls about geometrically, so the counts a test needs are few."""
    m, n = window_total, reference_total
    if count <= 0:
        return 1.0
    if n < 2:
        return 1.0 if count <= m else 0.0
    total = _log_choose(n + m, n)
    below = sum(
        math.exp(math.log(k + 1) + _log_choose(m - k + n - 2, n - 2) - total)
        for k in range(min(count, m + 1))
    )
    return max(1.0 - below, 0.0)


def _never(count: int) -> float:
    """No value of the wrong type is expected: any is flagged."""
    return 1.0 if count == 0 else 0.0


def _critical(tail: Callable[[int], float], total: int, level: float) -> int:
    """The smallest count whose tail probability is at most ``level`` (``total + 1`` if none is): the
    tails fall as the count grows, so a search from the small counts up, widening, then a bisection,
    finds it after few tails."""
    high = 1
    while high <= total and tail(high) > level:
        high *= 2
    low, high = high // 2, min(high, total + 1)
    while low < high:
        middle = (low + high) // 2
        if tail(middle) <= level:
            high = middle
        else:
            low = middle + 1
    return low


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
