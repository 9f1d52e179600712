"""An alert: one feature of one model version whose metric crossed its threshold, firing or resolved.

Its ``fingerprint`` is stable over (model, version, feature, metric), so every window that repeats the
same problem lands on the same alert; its ``id`` adds the window that fired, so each incident has its
own id.

>>> alert = Alert.firing(
...     model="fraud", version="1", feature="amount", metric="ks", severity="warning",
...     value=0.001, threshold=0.05, window_start_us=0, window_end_us=5_000_000, report_url="file:///r.html")
>>> alert.fingerprint
'82ffb218540297b9'
>>> alert.id
'82ffb218540297b9-0'
>>> Alert.from_record(alert.to_record()) == alert
True
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["PERFORMANCE", "RATES", "SCORING_ERROR", "Alert", "Severity", "Status", "fingerprint"]

Severity = Literal["warning", "critical"]
Status = Literal["firing", "resolved"]

SCORING_ERROR = "scoring_error"
"""The metric of the alert a monitor raises when it cannot score a model version's window."""
RATES = {
    "null_rate": "null rate",
    "type_error_rate": "share of values of the wrong type",
    "out_of_range_share": "share outside the training range",
    "new_category_share": "share of categories unseen in training",
}
"""Data-quality metrics (``monitors.drift.quality``), as an alert names them."""
LOWER_IS_BETTER = frozenset({"log_loss", "calibration_error", "mae", "rmse", "mape"})
PERFORMANCE = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2", *LOWER_IS_BETTER})
"""Performance metrics (``monitors.performance``): an alert says the model got worse."""


def fingerprint(*, model: str, version: str, feature: str, metric: str) -> str:
    return hashlib.sha256(f"{model}\0{version}\0{feature}\0{metric}".encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Alert:
    id: str
    fingerprint: str
    model: str
    version: str
    feature: str
    metric: str
    severity: Severity
    status: Status
    value: float | None
    """The metric's value in the window that fired (or resolved); None when it had no values."""
    threshold: float
    window_start_us: int
    """The window that fired the alert."""
    window_end_us: int
    resolved_window_start_us: int | None = None
    """The first window back under the threshold, once resolved."""
    report_url: str

    @classmethod
    def firing(
        cls,
        *,
        model: str,
        version: str,
        feature: str,
        metric: str,
        severity: Severity,
        value: float | None,
        threshold: float,
        window_start_us: int,
        window_end_us: int,
        report_url: str,
    ) -> Alert:
        key = fingerprint(model=model, version=version, feature=feature, metric=metric)
        return cls(
            id=f"{key}-{window_start_us}",
            fingerprint=key,
            model=model,
            version=version,
            feature=feature,
            metric=metric,
            severity=severity,
            status="firing",
            value=value,
            threshold=threshold,
            window_start_us=window_start_us,
            window_end_us=window_end_us,
            report_url=report_url,
        )

    def resolved(self, *, window_start_us: int, value: float | None) -> Alert:
        return replace(self, status="resolved", resolved_window_start_us=window_start_us, value=value)

    @property
    def starts_at(self) -> datetime:
        """When the incident began: the end of the window that fired it."""
        return datetime.fromtimestamp(self.window_end_us / 1_000_000, UTC)

    @property
    def ends_at(self) -> datetime | None:
        if self.resolved_window_start_us is None:
            return None
        return datetime.fromtimestamp(self.resolved_window_start_us / 1_000_000, UTC)

    @property
    def summary(self) -> str:
        if self.metric == SCORING_ERROR:
            state = "could not be scored" if self.status == "firing" else "is scored again"
            return f"{self.model} {self.version}: a window {state}; the monitor's log says why"
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        if self.metric in PERFORMANCE:
            worse = "above" if self.metric in LOWER_IS_BETTER else "under"
            state = f"is {worse}" if self.status == "firing" else "is back within"
            return (
                f"{self.model} {self.version}: {self.metric} of the labelled predictions ({shown}) {state} "
                f"{self.threshold:.4g} (the reference's, with the tolerance)"
            )
        if self.metric in RATES:
            state = "is above" if self.status == "firing" else "is back under"
            return (
                f"{self.model} {self.version}: feature {self.feature}'s {RATES[self.metric]} "
                f"({shown}) {state} {self.threshold:.4g}"
            )
        state = "drifts" if self.status == "firing" else "is back to normal"
        return (
            f"{self.model} {self.version}: feature {self.feature} {state} "
            f"({self.metric} = {shown}, threshold {self.threshold:g})"
        )

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Alert:
        """An alert from its record; a ValueError names what does not fit (records cross processes)."""
        alert = cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})
        if alert.severity not in ("warning", "critical") or alert.status not in ("firing", "resolved"):
            raise ValueError(f"not an alert: severity {alert.severity!r}, status {alert.status!r}")
        numbers = (alert.threshold, alert.window_start_us, alert.window_end_us)
        if not all(isinstance(value, int | float) for value in numbers) or not (
            alert.value is None or isinstance(alert.value, int | float)
        ):
            raise ValueError("not an alert: value, threshold and window bounds must be numbers")
        return alert
