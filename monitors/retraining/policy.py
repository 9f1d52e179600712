"""Which alerts start a retraining job.

An alert starts a job when it fires, its severity and metric are ones the policy retrains for, and its
model has had no job within the cooldown (event time: the alert's window against the last job's). How
many jobs run at once is not the policy's concern: a job it accepts waits in the queue for a slot.

>>> from monitors.alerts.alert import Alert
>>> policy = RetrainPolicy(severities=["critical"], metrics=[], cooldown_us=3_600_000_000)
>>> alert = Alert.firing(model="fraud", version="1", feature="amount", metric="ks", severity="critical",
...     value=0.001, threshold=0.05, window_start_us=0, window_end_us=5_000_000, report_url="")
>>> policy.decide(alert, last_job_window_end_us=None)
Decision(retrain=True, reason='critical alert on amount (ks)')
>>> policy.decide(alert, last_job_window_end_us=0).reason
'model fraud had a job 5 s before this alert; the cooldown is 3600 s'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitors.alerts.alert import Alert

__all__ = ["Decision", "RetrainPolicy"]


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str


class RetrainPolicy:
    def __init__(self, *, severities: Sequence[str], metrics: Sequence[str], cooldown_us: int) -> None:
        """``metrics`` empty means any metric."""
        self.severities = frozenset(severities)
        self.metrics = frozenset(metrics)
        self.cooldown_us = cooldown_us

    def decide(self, alert: Alert, *, last_job_window_end_us: int | None) -> Decision:
        if alert.status != "firing":
            return Decision(False, "the alert is resolved")
        if alert.severity not in self.severities:
            return Decision(
                False, f"severity {alert.severity} does not retrain ({', '.join(sorted(self.severities))} do)"
            )
        if self.metrics and alert.metric not in self.metrics:
            return Decision(
                False, f"metric {alert.metric} does not retrain ({', '.join(sorted(self.metrics))} do)"
            )
        if last_job_window_end_us is not None:
            since_us = alert.window_end_us - last_job_window_end_us
            if since_us < self.cooldown_us:
                return Decision(
                    False,
                    f"model {alert.model} had a job {since_us / 1e6:.0f} s before this alert; "
                    f"the cooldown is {self.cooldown_us / 1e6:.0f} s",
                )
        return Decision(True, f"{alert.severity} alert on {alert.feature} ({alert.metric})")
