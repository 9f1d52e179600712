"""Prometheus metrics of the stream worker. Every dead-letter route is counted by reason.

Freshness is computed when Prometheus scrapes, from the newest event time each partition has written: a
view whose stream stopped grows stale on the dashboard, instead of showing the lag of its last batch.

>>> metrics = WorkerMetrics(clock_s=lambda: 100.0)
>>> metrics.written("card_stats", 0, newest_us=90_000_000)
>>> metrics.written("card_stats", 1, newest_us=-(2**63))  # nothing written yet: no figure
>>> [(s.labels["partition"], s.value) for s in metrics.freshness_family().samples]
[('0', 10.0)]
>>> metrics.forget("card_stats", 0)
>>> metrics.freshness_family().samples
[]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """The worker's counters, in their own registry so that several workers can share a process."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock_s: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.clock_s = clock_s
        self._newest: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
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
        self.consumer_lag = Gauge(
            "sluice_consumer_lag_records",
            "Records of a partition not yet committed by the worker's group: end offset minus the commit, "
            "as of the last commit (kafka engine).",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.online_resets = Counter(
            "sluice_online_store_resets",
            "Times Redis came back empty and the worker rebuilt it from the offline store.",
            registry=self.registry,
        )
        self.registry.register(_Freshness(self))

    def written(self, view: str, partition: int, *, newest_us: int) -> None:
        """A batch of the partition is written: its newest event time so far (microseconds)."""
        if newest_us > -(2**62):  # the empty state's sentinel: no event yet
            with self._lock:
                self._newest[(view, partition)] = newest_us

    def forget(self, view: str, partition: int) -> None:
        """The partition went to another worker, which reports it from now on."""
        with self._lock:
            self._newest.pop((view, partition), None)

    def freshness_family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "sluice_feature_freshness_seconds",
            "Now minus the newest event time a feature view has written, per partition (as Feast's "
            "feast_feature_freshness_seconds).",
            labels=["feature_view", "partition"],
        )
        now = self.clock_s()
        with self._lock:
            newest = sorted(self._newest.items())
        for (view, partition), at_us in newest:
            family.add_metric([view, str(partition)], now - at_us / 1e6)
        return family


class _Freshness(Collector):
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield self.metrics.freshness_family()
