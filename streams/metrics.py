"""Prometheus metrics of the stream worker. Every dead-letter route is counted by reason."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """The worker's counters, in their own registry so that several workers can share a process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "sluice_events_total",
            "Source events accepted into a feature view.",
            ["feature_view"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "sluice_dead_letters_total",
            "Source events sent to the dead-letter topic, by reason.",
            ["feature_view", "reason"],
            registry=self.registry,
        )
        self.rows = Counter(
            "sluice_feature_rows_total",
            "Feature rows written, by sink (online rows count only those newer than what Redis held).",
            ["feature_view", "sink"],
            registry=self.registry,
        )
        self.before_cutover = Counter(
            "sluice_events_before_cutover_total",
            "Source events before a backfill's cutover, skipped: the backfill holds that history.",
            ["feature_view"],
            registry=self.registry,
        )
        self.overflows = Counter(
            "sluice_overflow_total",
            "Aggregated values that do not fit their integer feature type, stored as null.",
            ["feature_view", "feature"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "sluice_batch_seconds",
            "Time to process one batch, from decoding to the last sink.",
            ["feature_view"],
            registry=self.registry,
        )
        self.sink_failures = Counter(
            "sluice_sink_failures_total",
            "Sink writes that failed and were retried.",
            ["feature_view", "sink"],
            registry=self.registry,
        )
        self.event_time_lag = Gauge(
            "sluice_event_time_lag_seconds",
            "Wall clock minus the newest event time processed.",
            ["feature_view"],
            registry=self.registry,
        )
