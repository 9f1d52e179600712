"""Prometheus metrics of the monitor: each feature's latest drift score, so teams with Alertmanager can
alert their own way, and the counts of what the monitor consumed and refused."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitors.drift.detector import WindowReport

__all__ = ["MonitorMetrics", "sink_label"]


class MonitorMetrics:
    """The monitor's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "sluice_monitor_events_total",
            "Prediction events counted into a window.",
            ["model", "version"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "sluice_monitor_dead_letters_total",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.labelled = Counter(
            "sluice_monitor_labelled_total",
            "Predictions joined with their label.",
            ["model"],
            registry=self.registry,
        )
        self.join_held = Gauge(
            "sluice_monitor_join_held",
            "Held in memory to be joined (kind prediction: waiting for its label; kind label: waiting "
            "for its prediction), at most --join-capacity of each.",
            ["kind"],
            registry=self.registry,
        )
        self.join_forgotten = Counter(
            "sluice_monitor_join_forgotten_total",
            "Predictions or labels dropped unjoined, the oldest first, when --join-capacity of them "
            "were held.",
            ["kind"],
            registry=self.registry,
        )
        self.errors = Counter(
            "sluice_monitor_errors_total",
            "What the monitor could not do for one model version (the others went on): a window it could "
            "not score (stage scoring), or a setting that does not fit the version's profile (stage config).",
            ["model", "version", "stage"],
            registry=self.registry,
        )
        self.windows = Counter(
            "sluice_monitor_windows_total",
            "Windows closed and scored.",
            ["model", "version"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "sluice_alerts_total",
            "Alerts that fired or resolved, by severity and status.",
            ["model", "severity", "status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "sluice_alert_deliveries_total",
            "Attempts to deliver an alert to a sink (the alerts topic, each webhook), by outcome.",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.score = Gauge(
            "sluice_drift_score",
            "The latest closed window's score per feature: a p-value (after correction), a distance or "
            "a mismatch rate; see the metric label.",
            ["model", "version", "feature", "metric", "against"],
            registry=self.registry,
        )
        self.drift = Gauge(
            "sluice_feature_drift",
            "1 when the latest closed window's score crossed its threshold, else 0.",
            ["model", "version", "feature", "metric", "against"],
            registry=self.registry,
        )
        self.quality = Gauge(
            "sluice_data_quality",
            "The latest closed window's data-quality rate per feature (null_rate, type_error_rate, "
            "out_of_range_share, new_category_share); see the metric label.",
            ["model", "version", "feature", "metric"],
            registry=self.registry,
        )
        self.quality_flag = Gauge(
            "sluice_data_quality_problem",
            "1 when the latest closed window's data-quality rate is above what the reference makes "
            "expected (monitors.drift.quality), else 0.",
            ["model", "version", "feature", "metric"],
            registry=self.registry,
        )
        self.performance = Gauge(
            "sluice_model_performance",
            "The latest performance window's metric per model version (accuracy, roc_auc, log_loss, ... "
            "and label_coverage), provisional at its close and final once its labels are in.",
            ["model", "version", "metric", "stage"],
            registry=self.registry,
        )
        self.performance_problem = Gauge(
            "sluice_model_performance_problem",
            "1 when the latest final performance window's metric is worse than the reference's by more "
            "than the tolerance, and significantly so at --performance-alpha, else 0.",
            ["model", "version", "metric"],
            registry=self.registry,
        )
        self.dataset_drift = Gauge(
            "sluice_dataset_drift",
            "1 when at least the drift share of the latest window's features drifted, else 0.",
            ["model", "version"],
            registry=self.registry,
        )
        self.drift_share = Gauge(
            "sluice_drift_share",
            "Share of the latest window's features that drifted.",
            ["model", "version"],
            registry=self.registry,
        )

    def record(self, report: WindowReport) -> None:
        if report.stage != "drift":
            for score in report.scores:
                self.performance.labels(report.model, report.version, score.metric, report.stage).set(
                    score.score
                )
                if report.stage == "final" and score.metric != "label_coverage":
                    flag = 1 if score.drift else 0
                    self.performance_problem.labels(report.model, report.version, score.metric).set(flag)
            return
        self.windows.labels(report.model, report.version).inc()
        self.events.labels(report.model, report.version).inc(report.events)
        self.dataset_drift.labels(report.model, report.version).set(1 if report.dataset_drift else 0)
        self.drift_share.labels(report.model, report.version).set(report.drift_share)
        for score in report.scores:
            if score.kind == "quality":
                quality = (report.model, report.version, score.feature, score.metric)
                self.quality.labels(*quality).set(score.score)
                self.quality_flag.labels(*quality).set(1 if score.drift else 0)
                continue
            labels = (report.model, report.version, score.feature, score.metric, score.against)
            self.score.labels(*labels).set(score.score if not math.isnan(score.score) else math.nan)
            self.drift.labels(*labels).set(1 if score.drift else 0)


def sink_label(name: str) -> str:
    """A sink's name as a label, without credentials a webhook URL may carry.

    >>> sink_label("alertmanager:ops:s3cret@oncall.example:9093")
    'alertmanager:oncall.example:9093'
    >>> sink_label("kafka:fraud.alerts")
    'kafka:fraud.alerts'
    """
    kind, _, rest = name.partition(":")
    return f"{kind}:{rest.rpartition('@')[2]}"
