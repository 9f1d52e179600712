"""When a drifting feature becomes an alert, and when the alert resolves.

Per fingerprint (model, version, feature, metric) the rules keep a streak: drifting windows in a row.
An alert fires when the streak reaches ``consecutive_windows``, unless the fingerprint resolved less
than ``cooldown`` ago (event time, so that a replay decides the same). While it fires, more drifting
windows change nothing: one incident, one alert. The first window back under the threshold resolves
it. A window with no values for the feature (NaN) is no evidence either way and leaves the streak.
Windows at or before the last one seen are replays after a restart and are skipped.

>>> from monitors.drift.detector import FeatureScore, WindowReport
>>> rules = AlertRules(consecutive_windows=2, cooldown_us=0, critical_share=0.5, report_url=lambda r: "")
>>> def window(start, drift):
...     score = FeatureScore(feature="amount", metric="ks", against="reference",
...                          score=0.001 if drift else 0.5, threshold=0.05, drift=drift)
...     return WindowReport(model="m", version="1", window_start_us=start, window_end_us=start + 5,
...                         events=100, scores=[score], drift_share=float(drift), dataset_drift=drift)
>>> streaks = {}
>>> [a.status for a in rules.evaluate(window(0, True), streaks)]   # one drifting window: not yet
[]
>>> [a.status for a in rules.evaluate(window(5, True), streaks)]   # two in a row: fires
['firing']
>>> [a.status for a in rules.evaluate(window(10, True), streaks)]  # still drifting: same alert
[]
>>> [a.status for a in rules.evaluate(window(15, False), streaks)] # back under the threshold
['resolved']
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from monitors.alerts.alert import Alert, Severity, fingerprint
from monitors.drift.detector import FeatureScore, WindowReport

__all__ = ["AlertRules", "Streak"]


@dataclass(kw_only=True)
class Streak:
    """What the rules remember per fingerprint; the store keeps it across restarts."""

    streak: int = 0
    last_window_start_us: int = -(2**62)
    firing: Alert | None = None
    resolved_at_us: int | None = None
    """The end of the window that resolved the last alert: the cooldown counts from there."""


class AlertRules:
    def __init__(
        self,
        *,
        consecutive_windows: int,
        cooldown_us: int,
        critical_share: float,
        report_url: Callable[[WindowReport], str],
    ) -> None:
        if consecutive_windows < 1:
            raise ValueError("consecutive_windows must be at least 1")
        self.consecutive_windows = consecutive_windows
        self.cooldown_us = cooldown_us
        self.critical_share = critical_share
        self.report_url = report_url

    @staticmethod
    def fingerprints(report: WindowReport) -> list[str]:
        return [_fingerprint(report, score) for score in _alertable(report)]

    def evaluate(self, report: WindowReport, streaks: MutableMapping[str, Streak]) -> list[Alert]:
        """The alerts this window fires or resolves; ``streaks`` is updated in place."""
        changes = []
        for score in _alertable(report):
            key = _fingerprint(report, score)
            state = streaks.setdefault(key, Streak())
            if report.window_start_us <= state.last_window_start_us:
                continue
            state.last_window_start_us = report.window_start_us
            value = None if math.isnan(score.score) else score.score
            if value is None:
                continue
            if not score.drift:
                state.streak = 0
                if state.firing is not None:
                    changes.append(state.firing.resolved(window_start_us=report.window_start_us, value=value))
                    state.firing = None
                    state.resolved_at_us = report.window_end_us
                continue
            state.streak += 1
            if state.firing is not None or state.streak < self.consecutive_windows:
                continue
            if (
                state.resolved_at_us is not None
                and report.window_end_us - state.resolved_at_us < self.cooldown_us
            ):
                continue
            state.firing = Alert.firing(
                model=report.model,
                version=report.version,
                feature=score.feature,
                metric=_metric(score),
                severity=_severity(report, score, self.critical_share),
                value=value,
                threshold=score.threshold,
                window_start_us=report.window_start_us,
                window_end_us=report.window_end_us,
                report_url=self.report_url(report),
            )
            changes.append(state.firing)
        return changes

    def _cooling(self, report: WindowReport, resolved_at_us: int) -> bool:
        return report.window_end_us - resolved_at_us < self.cooldown_us


def _alertable(report: WindowReport) -> list[FeatureScore]:
    """Drift, data quality and performance against the training profile, and skew against the offline
    store; window-to-window changes are context in the report, not alerts."""
    return [score for score in report.scores if score.against in ("reference", "offline")]


def _severity(report: WindowReport, score: FeatureScore, critical_share: float) -> Severity:
    """Drift is critical when it reaches ``critical_share`` of the features; a data-quality problem is a
    warning, but for values of the wrong type, which a model cannot read."""
    if score.kind == "quality":
        return "critical" if score.metric == "type_error_rate" else "warning"
    if score.kind == "performance":
        return "critical"
    return "critical" if report.drift_share >= critical_share else "warning"


def _metric(score: FeatureScore) -> str:
    return f"skew:{score.metric}" if score.against == "offline" else score.metric


def _fingerprint(report: WindowReport, score: FeatureScore) -> str:
    return fingerprint(
        model=report.model, version=report.version, feature=score.feature, metric=_metric(score)
    )
