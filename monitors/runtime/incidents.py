"""What the monitor does with a scored window after publishing it: alerts, their delivery, retraining.

For each closed window, the alert rules run in the store (one transaction); when an alert fires, the
window's Evidently report is started first, in a process of its own (``ReportRenderer``): the link in
the alert works when it arrives, and shows the report once it is rendered, while scoring goes on. Deliveries
leave from the outbox in a background thread. Firing alerts go to the retraining policy when it is
enabled, and ``tick`` moves queued and running jobs along.
"""

from __future__ import annotations

import functools
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.config import SluiceConfig
from monitors.alerts.alert import SCORING_ERROR, Alert
from monitors.alerts.delivery import Deliverer, KafkaAlertSink, Sink, WebhookSink
from monitors.alerts.rules import AlertRules
from monitors.alerts.store import AlertStore
from monitors.database import open_store
from monitors.drift.detector import WindowReport
from monitors.drift.report import ReportRenderer, report_link, report_path
from monitors.retraining.backends import job_backend
from monitors.retraining.gate import promotion_gate
from monitors.retraining.policy import RetrainPolicy
from monitors.retraining.retrainer import Retrainer
from monitors.retraining.store import JobStore
from monitors.runtime.monitor import ClosedWindow, Failure

__all__ = ["Incidents"]

log = logging.getLogger("sluice.monitor")


class Incidents:
    def __init__(
        self,
        *,
        store: AlertStore,
        rules: AlertRules,
        deliverer: Deliverer,
        reports_root: Path,
        retrainer: Retrainer | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.deliverer = deliverer
        self.reports_root = reports_root
        self.retrainer = retrainer
        self.renderer = ReportRenderer()
        self._last_tick = 0.0

    @classmethod
    def from_config(
        cls,
        config: SluiceConfig,
        *,
        repo_path: Path,
        producer: Any,
        on_attempt: Callable[[str, bool], None] | None = None,
    ) -> Incidents:
        engine = open_store(config.store_url)
        store = AlertStore(engine=engine)
        settings = config.alerts
        reports_root = config.state_dir / "reports"
        rules = AlertRules(
            consecutive_windows=settings.consecutive_windows,
            cooldown_us=int(settings.cooldown_seconds * 1_000_000),
            critical_share=settings.critical_share,
            report_url=lambda report: report_link(
                reports_root,
                settings.report_base_url,
                model=report.model,
                version=report.version,
                window_start_us=report.window_start_us,
            ),
        )
        sinks: list[Sink] = [KafkaAlertSink(producer=producer, topic=settings.topic)]
        sinks += [WebhookSink(webhook) for webhook in settings.webhooks]
        deliverer = Deliverer(
            store=store,
            sinks=sinks,
            retry_initial_s=settings.retry_initial_seconds,
            retry_max_s=settings.retry_max_seconds,
            on_attempt=on_attempt,
        )
        retrainer = None
        retraining = config.retraining
        if retraining.enabled:
            retrainer = Retrainer(
                policy=RetrainPolicy(
                    severities=retraining.severities,
                    metrics=retraining.metrics,
                    cooldown_us=int(retraining.cooldown_seconds * 1_000_000),
                ),
                store=JobStore(engine=engine),
                backend=job_backend(config, repo_path),
                entrypoint=shlex.split(retraining.entrypoint),
                training_window_us=int(retraining.training_window_seconds * 1_000_000),
                max_running=retraining.max_running,
                gpus=retraining.gpus,
                env={"SLUICE_REPO": str(repo_path), **retraining.env},
                dry_run=retraining.dry_run,
                gate=promotion_gate(config),
            )
        return cls(
            store=store, rules=rules, deliverer=deliverer, reports_root=reports_root, retrainer=retrainer
        )

    def start(self) -> None:
        """Start delivering; give retraining the alerts still firing, in case the process stopped
        between recording an alert and recording its job (their job ids make this safe to repeat)."""
        self.deliverer.start()
        if self.retrainer is not None:
            self._retrain(self.store.alerts(status="firing"))
        self.tick()

    def stop(self) -> None:
        self.deliverer.stop()
        self.renderer.close()

    def on_failures(self, failures: list[Failure]) -> list[Alert]:
        """Fire a critical alert for each version with a window it could not score, unless one fires
        already; the version's next scored window resolves it."""
        changes: list[Alert] = []
        for failure in failures:
            if failure.stage != "scoring" or failure.window_start_us is None or failure.window_end_us is None:
                continue
            if self._firing_error(failure.model, failure.version) or any(
                (alert.model, alert.version) == (failure.model, failure.version) for alert in changes
            ):
                continue
            changes.append(
                Alert.firing(
                    model=failure.model, version=failure.version, feature="*", metric=SCORING_ERROR,
                    severity="critical", value=None, threshold=0.0, window_start_us=failure.window_start_us,
                    window_end_us=failure.window_end_us, report_url="",
                )
            )  # fmt: skip
        self._record(changes)
        return changes

    def on_windows(self, closed: list[ClosedWindow]) -> list[Alert]:
        changes: list[Alert] = []
        resolved: list[Alert] = []
        for item in closed:
            report = item.report
            firing = self._firing_error(report.model, report.version)
            if firing is not None:
                resolved.append(firing.resolved(window_start_us=report.window_start_us, value=None))
        self._record(resolved)
        for item in closed:
            changes += self.store.apply(
                item.report,
                self.rules,
                payloads=self.deliverer.payloads,
                now=time.time(),
                before_queue=functools.partial(self._write_report, item),
            )
        for alert in changes:
            log.warning("alert %s: %s", alert.status, alert.summary)
        if changes:
            self.deliverer.wake()
            self._retrain(changes)
        return changes

    def _firing_error(self, model: str, version: str) -> Alert | None:
        firing = self.store.alerts(model=model, status="firing", limit=1000)
        return next(
            (alert for alert in firing if alert.metric == SCORING_ERROR and alert.version == version), None
        )

    def _record(self, changes: list[Alert]) -> None:
        if not changes:
            return
        self.store.record(changes, payloads=self.deliverer.payloads, now=time.time())
        for alert in changes:
            log.warning("alert %s: %s", alert.status, alert.summary)
        self.deliverer.wake()

    def tick(self, *, every_s: float = 1.0) -> None:
        """Move retraining jobs along, at most once per ``every_s``."""
        now = time.monotonic()
        if self.retrainer is not None and now - self._last_tick >= every_s:
            self._last_tick = now
            try:
                self.retrainer.pump()
            except Exception:  # a backend or store outage must not stop drift monitoring
                log.exception("moving retraining jobs along failed; trying again")

    def _retrain(self, alerts: list[Alert]) -> None:
        if self.retrainer is None:
            return
        try:
            self.retrainer.on_alerts(alerts)
        except Exception:  # the alert is recorded and sent; the next start retries its job
            log.exception("starting retraining for %d alerts failed", len(alerts))

    def _write_report(self, item: ClosedWindow, alerts: list[Alert]) -> None:
        if item.window is None or not any(alert.status == "firing" for alert in alerts):
            return
        report: WindowReport = item.report
        path = report_path(
            self.reports_root,
            model=report.model,
            version=report.version,
            window_start_us=report.window_start_us,
        )
        try:
            self.renderer.submit(
                item.window.profile,
                summary=item.window.summary_table(),
                path=path,
                window_start_us=report.window_start_us,
            )
        except Exception:  # the alert matters more than its report: send it with a dead link, say so
            log.exception("could not write the drift report %s", path)
