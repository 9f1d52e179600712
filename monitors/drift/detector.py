"""Score a serving window against the reference profile, and against the window before it.

Each feature gets one metric: the one configured for it, or Evidently's default for its type and the
window's size (``metrics.default_metric``). P-values are corrected across features (Benjamini-Hochberg
by default, or Bonferroni), so that the chance of a false alarm in a window with no drift stays at the
configured level. The window drifts as a whole when the share of drifted features reaches
``drift_share`` (0.5, as Evidently).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from monitors.drift.calibration import CALIBRATED, Calibration, Permutation
from monitors.drift.metrics import Metric, default_metric, metric
from monitors.drift.profile import ReferenceProfile
from monitors.drift.window import ServingWindow

__all__ = ["DriftDetector", "FeatureScore", "WindowReport", "adjust_pvalues"]

Correction = Literal["benjamini-hochberg", "bonferroni", "none"]


@dataclass(frozen=True, kw_only=True)
class FeatureScore:
    feature: str
    metric: str
    against: Literal["reference", "previous", "offline"]
    """The training profile, the version's previous window, or the offline store (feature skew)."""
    score: float
    """The p-value (after correction) or the distance; NaN when a side had no values."""
    threshold: float
    drift: bool
    """Whether the score crossed its threshold: drift, skew, or a data-quality problem (see ``kind``)."""
    kind: Literal["drift", "quality", "performance"] = "drift"
    """A distribution's change (``drift``, skew included), or a data-quality rate
    (``monitors.drift.quality``)."""


@dataclass(frozen=True, kw_only=True)
class WindowReport:
    """Every score of one window; ``to_record`` is what goes to the scores topic and Parquet."""

    model: str
    version: str
    window_start_us: int
    window_end_us: int
    events: int
    scores: list[FeatureScore] = field(default_factory=list)
    drift_share: float = 0.0
    dataset_drift: bool = False
    stage: Literal["drift", "provisional", "final"] = "drift"
    """A drift window's report, or a performance window's, provisional (some labels may still come) or
    final (``monitors.runtime.performance``)."""

    @property
    def drifted_features(self) -> list[str]:
        return [
            score.feature
            for score in self.scores
            if score.against == "reference" and score.drift and score.kind == "drift"
        ]

    @property
    def quality_problems(self) -> list[tuple[str, str]]:
        """(feature, metric) of every data-quality rate flagged."""
        return [
            (score.feature, score.metric) for score in self.scores if score.kind == "quality" and score.drift
        ]

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["scores"] = [
            {**item, "score": None if math.isnan(item["score"]) else item["score"]}
            for item in record["scores"]
        ]
        return record


class DriftDetector:
    """Scores windows of one model version against its reference profile."""

    def __init__(
        self,
        *,
        profile: ReferenceProfile,
        metrics: Mapping[str, str] | None = None,
        alpha: float = 0.05,
        correction: Correction = "benjamini-hochberg",
        drift_share: float = 0.5,
        calibrated: bool = True,
    ) -> None:
        """``metrics`` maps a feature to a metric name (see ``monitors.drift.metrics.METRICS``); ``alpha``
        is the level for p-value metrics, ``correction`` how it is shared across features."""
        self.profile = profile
        self.alpha = alpha
        self.correction = correction
        self.drift_share = drift_share
        self.calibration = Calibration(profile) if calibrated else None
        """Null distributions for the distances (``monitors.drift.calibration``); None keeps the fixed
        thresholds of the metrics' registry (Evidently's)."""
        self._chosen: dict[str, Metric] = {}
        for name, chosen in (metrics or {}).items():
            feature = profile.features.get(name)
            if feature is None:
                raise ValueError(
                    f"no feature {name!r} in the reference profile of {profile.model} {profile.version}"
                )
            item = metric(chosen)
            if feature.kind not in item.feature_types:
                allowed = ", ".join(sorted(item.feature_types))
                raise ValueError(f"metric {chosen!r} is for {allowed} features; {name!r} is {feature.kind}")
            self._chosen[name] = item

    @staticmethod
    def applicable(profile: ReferenceProfile, metrics: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
        """The chosen metrics that fit this profile, and why the others do not: a feature it does not have
        is another model's (left out, not a problem); a metric for another type of feature is one.

        >>> import pandas as pd
        >>> profile = ReferenceProfile.build(pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]}), model="m",
        ...                                  version="1")
        >>> DriftDetector.applicable(profile, {"x": "ks", "c": "wasserstein", "other": "psi"})
        ({'x': 'ks'}, ["metric 'wasserstein' is for numeric features; 'c' is categorical"])
        """
        usable: dict[str, str] = {}
        problems: list[str] = []
        for name, chosen in metrics.items():
            feature = profile.features.get(name)
            if feature is None:
                continue
            item = metric(chosen)
            if feature.kind not in item.feature_types:
                allowed = ", ".join(sorted(item.feature_types))
                problems.append(f"metric {chosen!r} is for {allowed} features; {name!r} is {feature.kind}")
            else:
                usable[name] = chosen
        return usable, problems

    def evaluate(self, window: ServingWindow, previous: ServingWindow | None = None) -> WindowReport:
        scores = self._compare(window, against="reference")
        if previous is not None:
            scores += self._compare(window, against="previous", previous=previous)
        drifted = [score for score in scores if score.against == "reference" and score.drift]
        scored = [score for score in scores if score.against == "reference" and not math.isnan(score.score)]
        share = len(drifted) / len(scored) if scored else 0.0
        return WindowReport(
            model=self.profile.model,
            version=self.profile.version,
            window_start_us=window.start_us,
            window_end_us=window.end_us,
            events=window.events,
            scores=scores,
            drift_share=share,
            dataset_drift=bool(scored) and share >= self.drift_share,
        )

    def metric_for(self, feature: str, rows: int) -> Metric:
        return self._chosen.get(feature) or default_metric(self.profile.features[feature].kind, rows)

    def _compare(
        self,
        window: ServingWindow,
        *,
        against: Literal["reference", "previous"],
        previous: ServingWindow | None = None,
    ) -> list[FeatureScore]:
        raw: list[tuple[str, Metric, float, int]] = []
        """(feature, metric, the test's p-value or the distance, values on the window's side)."""
        compared: list[tuple[Any, Any]] = []
        """What each metric compared: the reference's and the window's samples or counts."""
        for name, feature in self.profile.features.items():
            item = self.metric_for(name, window.events)
            if against == "reference":
                base: Any = feature.sample if item.input == "samples" else feature.counts
            else:
                assert previous is not None
                base = previous.sample(name) if item.input == "samples" else previous.counts(name)
            current = window.sample(name) if item.input == "samples" else window.counts(name)
            compared.append((base, current))
            raw.append(
                (
                    name,
                    item,
                    item.compute(base, current),
                    int(len(current) if item.input == "samples" else current.sum()),
                )
            )
        # Every test against the reference is a p-value: a test's own, or a distance's tail under the null
        # (monitors.drift.calibration); one correction over them all keeps the window's false-alarm rate.
        pvalues: dict[int, float] = {}
        permuted: dict[int, Permutation] = {}
        for index, (name, item, value, values) in enumerate(raw):
            if item.drift_when == "below":
                pvalues[index] = value
            elif self.calibration is not None and against == "reference" and item.name in CALIBRATED:
                pvalues[index] = self.calibration.tail(name, item, window_values=values, observed=value)
                if pvalues[index] <= self.alpha:  # through the screen: the exact permutation test decides
                    reference, current = compared[index]
                    test = self.calibration.permutation(name, item, reference, current, seed=window.start_us)
                    permuted[index], pvalues[index] = test, test.pvalue
        tested = list(pvalues)
        adjusted = dict(
            zip(tested, adjust_pvalues([pvalues[index] for index in tested], self.correction), strict=True)
        )
        cutoff = _cutoff(
            [pvalues[index] for index in tested],
            [adjusted[index] for index in tested],
            self.alpha,
            self.correction,
        )
        scores = []
        for index, (name, item, value, values) in enumerate(raw):
            if index in adjusted and item.drift_when == "below":
                score, threshold = adjusted[index], self.alpha
                drift = not math.isnan(score) and score < threshold
            elif index in adjusted:  # a calibrated distance: shown as itself, flagged by its tail
                assert self.calibration is not None
                score = value
                threshold = (
                    permuted[index].critical(cutoff)
                    if index in permuted
                    else self.calibration.critical(name, item, window_values=values, level=cutoff)
                )
                drift = not math.isnan(adjusted[index]) and adjusted[index] < self.alpha
            else:
                score, threshold = value, item.default_threshold
                drift = item.is_drift(score)
            scores.append(
                FeatureScore(
                    feature=name,
                    metric=item.name,
                    against=against,
                    score=score,
                    threshold=threshold,
                    drift=drift,
                )
            )
        return scores


def _cutoff(pvalues: list[float], adjusted: list[float], alpha: float, correction: Correction) -> float:
    """The raw p-value at or under which a feature is flagged: the largest one flagged, or when none
    is, the smallest that would have been (``alpha`` over the tests; ``alpha`` with no correction)."""
    flagged = [
        p
        for p, corrected in zip(pvalues, adjusted, strict=True)
        if not math.isnan(corrected) and corrected < alpha
    ]
    if flagged:
        return max(flagged)
    tests = sum(not math.isnan(p) for p in pvalues)
    return alpha if correction == "none" or tests == 0 else alpha / tests


def adjust_pvalues(pvalues: list[float], correction: Correction) -> list[float]:
    """P-values adjusted for testing several features at once; NaN (no evidence) stays NaN.

    >>> [round(p, 3) for p in adjust_pvalues([0.01, 0.04, 0.03, float("nan")], "benjamini-hochberg")]
    [0.03, 0.04, 0.04, nan]
    >>> adjust_pvalues([0.01, 0.04], "bonferroni")
    [0.02, 0.08]
    """
    values = np.asarray(pvalues, dtype=np.float64)
    present = ~np.isnan(values)
    tested = int(present.sum())
    result = values.copy()
    if correction == "none" or tested == 0:
        return [float(value) for value in result]
    if correction == "bonferroni":
        result[present] = np.minimum(values[present] * tested, 1.0)
        return [float(value) for value in result]
    order = np.argsort(values[present])
    ranked = values[present][order] * tested / np.arange(1, tested + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(tested)
    adjusted[order] = np.minimum(ranked, 1.0)
    result[present] = adjusted
    return [float(value) for value in result]
