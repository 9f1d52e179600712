"""What both monitor engines share: the per-batch pipeline, and where window reports go.

``sluice monitor`` consumes the predictions topic in consumer group ``sluice-monitor-<project>``,
with one of two engines: ``monitors.runtime.kafka_engine`` (aiokafka, the default) or
``monitors.runtime.faust_engine`` (a faust-streaming agent). Both hand each batch of records to
``MonitorPipeline.process``. Each record is decoded as a CloudEvent (``monitors.events.cloudevents``); invalid
ones, late ones and those of a model version without a reference profile go to ``<topic>.dlq``
with a ``sluice.reason`` header. Labels are joined to their predictions by request id
(``monitors.events.labels``); the pairs go to ``<topic>.labelled``. Closed windows' reports go to
``<topic>.scores`` (one JSON record per window, keyed by model, version and window start) and to
Parquet under ``scores`` (``<state_dir>/monitor/scores/`` by default, or object storage), one file per
window named by the window, so a replay rewrites it rather than adding one. ``process`` returns, per
partition, the offset below which everything is done: below the oldest event of a window still open,
after the reports are written. An engine commits no further, so a restart replays exactly the open
windows, and a window is never lost. Scored windows then go through ``monitors.runtime.incidents``: alert
rules, the delivery outbox, and retraining jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from kafka import TopicPartition

from features.config import SluiceConfig
from monitors.drift.detector import WindowReport
from monitors.drift.window import ServingWindow
from monitors.events.batch import PredictionBatch
from monitors.events.cloudevents import LABEL_TYPE, PREDICTION_TYPE, EventError, KServeJoiner, decode_record
from monitors.events.labels import LabelJoiner, LabelledPrediction
from monitors.retraining.mlflow import References, open_registry, parse_reference
from monitors.runtime.incidents import Incidents
from monitors.runtime.monitor import ClosedWindow, Monitor, MonitorSettings
from monitors.runtime.parts import WindowParts
from monitors.runtime.performance import LabelledBatch, PerformanceTracker
from monitors.runtime.prometheus import MonitorMetrics, sink_label
from offline_store.storage import Location
from streams.dead_letters import DeadLetter, DeadLetterSink
from streams.kafka_clients import consumer, ensure_topics, producer

__all__ = ["MonitorPipeline", "ScoresSink", "last_window"]

log = logging.getLogger("sluice.monitor")


@dataclass(frozen=True, kw_only=True)
class ScoresSink:
    """Writes window reports to the scores topic and to Parquet (a folder or object storage)."""

    producer: Any
    topic: str
    root: Location

    def write(self, closed: list[ClosedWindow]) -> None:
        futures = []
        for item in closed:
            report = item.report
            stage = "" if report.stage == "drift" else f"/{report.stage}"
            key = f"{report.model}/{report.version}/{report.window_start_us}{stage}".encode()
            futures.append(self.producer.send(self.topic, key=key, value=orjson.dumps(report.to_record())))
            self._parquet(report, item.window)
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)

    def _parquet(self, report: WindowReport, window: ServingWindow | None) -> None:
        folder = self.root.child(f"model={report.model}", f"version={report.version}")
        rows = [
            {
                "window_start_us": report.window_start_us,
                "window_end_us": report.window_end_us,
                "events": report.events,
                "drift_share": report.drift_share,
                "dataset_drift": report.dataset_drift,
                "stage": report.stage,
                "feature": score.feature,
                "kind": score.kind,
                "metric": score.metric,
                "against": score.against,
                "score": score.score,
                "threshold": score.threshold,
                "drift": score.drift,
            }
            for score in report.scores
        ]
        name = f"window-{report.window_start_us:020d}"
        if report.stage != "drift":  # a performance window: window-<start>.performance[-provisional]
            name += ".performance" + ("-provisional" if report.stage == "provisional" else "")
        # Whole or not at all, and named by the window: a replay writes the same objects again.
        folder.child(f"{name}.parquet").write_parquet(pa.Table.from_pylist(rows))
        if window is not None:
            folder.child(f"{name}.summary.parquet").write_parquet(window.summary_table())


def last_window(scores_root: Location, model: str, version: str) -> int | None:
    """The start (µs) of the last window of a model version written by ``ScoresSink``, if any."""
    folder = scores_root.child(f"model={model}", f"version={version}")
    if not folder.exists():
        return None
    starts = [
        int(file.name[7:27])
        for file in folder.files(recursive=False)
        if file.name.endswith(".summary.parquet")
    ]
    return max(starts, default=None)


@dataclass(frozen=True, kw_only=True)
class MonitorPipeline:
    """A monitor's state and sinks: records in (``process``), reports, dead letters and alerts out."""

    topic: str
    group: str
    """The consumer group both engines consume ``topic`` in: ``sluice-monitor-<project>``."""
    monitor: Monitor
    joiner: KServeJoiner
    labels: LabelJoiner
    sink: ScoresSink
    dead_letters: DeadLetterSink
    sender: Any
    metrics: MonitorMetrics
    incidents: Incidents
    next_offsets: dict[int, int]
    """Per partition, the offset of the next record to process: the group's committed offsets at the
    start, then past each batch."""
    performance: PerformanceTracker | None = None
    """Performance windows from delayed labels, for the models that have a task (``MonitorSettings``)."""
    references: References | None = None
    """Resolves prediction events that name an MLflow model (``models:/fraud@champion``)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held by ``process`` and ``tick``, which the engines run on threads."""

    @classmethod
    def open(
        cls,
        config: SluiceConfig,
        *,
        topic: str,
        settings: MonitorSettings,
        kserve_features: list[str],
        repo_path: Path,
        metrics: MonitorMetrics,
    ) -> MonitorPipeline:
        """Create the output topics and the producer, and load the alert, job and offset state."""
        scores_root = Location.parse(config.scores_location, config.offline_store)
        group = f"sluice-monitor-{config.project}"
        next_offsets = _start_offsets(config, topic, group=group)
        ensure_topics(
            config.kafka, [f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", config.alerts.topic]
        )
        sender = producer(config.kafka, linger_ms=5)
        try:
            incidents = Incidents.from_config(
                config,
                repo_path=repo_path,
                producer=sender,
                on_attempt=lambda sink, ok: metrics.deliveries.labels(
                    sink_label(sink), "ok" if ok else "failed"
                ).inc(),
            )
        except Exception:
            sender.close()
            raise
        labels = LabelJoiner(
            capacity=settings.join_capacity,
            on_forget=lambda kind: metrics.join_forgotten.labels(kind).inc(),
        )
        metrics.join_held.labels("prediction").set_function(lambda: labels.held_predictions)
        metrics.join_held.labels("label").set_function(lambda: labels.held_labels)
        monitor = Monitor(
            settings=settings,
            parts=WindowParts(engine=incidents.store.engine, topic=topic),
            partitions=len(next_offsets),
            last_reported=lambda model, version: last_window(scores_root, model, version),
        )
        performance = None
        if settings.performance is not None:
            performance = PerformanceTracker(
                settings=settings.performance,
                lateness=settings.lateness,
                provisional=WindowParts(
                    engine=incidents.store.engine, topic=f"{topic}/performance-provisional"
                ),
                final=WindowParts(engine=incidents.store.engine, topic=f"{topic}/performance"),
                partitions=len(next_offsets),
                load_profile=monitor.load_profile,
            )
        return cls(
            topic=topic,
            group=group,
            monitor=monitor,
            performance=performance,
            joiner=KServeJoiner(feature_names=kserve_features),
            labels=labels,
            sink=ScoresSink(producer=sender, topic=f"{topic}.scores", root=scores_root),
            dead_letters=DeadLetterSink(producer=sender, topic=f"{topic}.dlq"),
            sender=sender,
            metrics=metrics,
            incidents=incidents,
            next_offsets=next_offsets,
            references=References(registry=open_registry(config)),
        )

    def close(self) -> None:
        try:
            with self.lock:
                self.monitor.release()
                if self.performance is not None:
                    self.performance.release()
        except Exception as error:  # the store is away: the marks say what was read last
            log.warning("could not release the partitions' marks: %s", error)
        self.incidents.stop()
        self.sender.close()

    def assigned(self, partitions: int) -> None:
        """A rebalance happened, and the topic has ``partitions`` partitions (more when some were added)."""
        with self.lock:
            self.monitor.grow(partitions)
            if self.performance is not None:
                self.performance.grow(partitions)

    def revoked(self, partitions: Collection[int]) -> None:
        """Forget partitions this monitor no longer reads; whoever reads them next resumes them."""
        with self.lock:
            self.monitor.forget(partitions)
            if self.performance is not None:
                self.performance.forget(partitions)
            for partition in partitions:
                self.next_offsets.pop(partition, None)

    def tick(self) -> None:
        """Merge and report the windows that other monitors' parts completed (when this one merges)."""
        with self.lock:
            if self.monitor.merges:
                closed = self.monitor.merge_ready()
                if self.performance is not None:
                    closed += [ClosedWindow(report) for report in self.performance.merge_ready()]
                if closed:
                    self._report(closed)
                self._failed()

    def process(
        self,
        batches: Mapping[int, Sequence[Any]],
        *,
        highwater: Mapping[int, int | None],
        positions: Mapping[int, int] | None = None,
    ) -> dict[int, int]:
        """Handle a batch of records of the predictions topic, in offset order per partition (kafka-python,
        aiokafka or faust messages); return per partition the offset up to which all is done.

        ``highwater`` is the consumer's last known end offset of each assigned partition (None when not
        known yet), and ``positions`` its position in each (by default, where the last batch ended): a
        partition whose end is past its position is behind, and holds the windows open until its records
        are read (``monitors.runtime.parts``)."""
        with self.lock:
            return self._process(batches, highwater=highwater, positions=positions)

    def _process(
        self,
        batches: Mapping[int, Sequence[Any]],
        *,
        highwater: Mapping[int, int | None],
        positions: Mapping[int, int] | None,
    ) -> dict[int, int]:
        predictions: dict[int, PredictionBatch] = {}
        labels: dict[int, LabelledBatch] = {}
        letters: list[DeadLetter] = []
        labelled: list[LabelledPrediction] = []
        ends: dict[int, int] = {}
        add_prediction = self.labels.add_prediction_json
        for partition, messages in batches.items():
            batch = predictions[partition] = PredictionBatch(partition=partition)
            for message in messages:
                try:
                    kind, payload, event_us = decode_record(_headers(message.headers), message.value)
                except EventError as error:
                    letters.append(DeadLetter(record=message, reason=error.reason, detail=str(error)))
                    continue
                if kind == PREDICTION_TYPE:
                    value = message.value
                    if payload["model"].startswith("models:/"):
                        if not self._resolve(payload, message, letters):
                            continue
                        value = orjson.dumps(payload)  # its labelled pair names the version
                    batch.append(payload, event_us=event_us, offset=message.offset, record=message)
                    labelled += add_prediction(payload["model"], payload["request_id"], value)
                elif kind == LABEL_TYPE:
                    if payload.model.startswith("models:/"):  # a label is the model's, whichever version
                        parsed = parse_reference(payload.model)
                        payload = replace(payload, model=parsed[0]) if parsed else payload
                    labelled += self.labels.add_label(payload)
                    labels.setdefault(partition, LabelledBatch(partition=partition)).append(
                        model=payload.model,
                        request_id=payload.request_id,
                        label=payload.label,
                        event_us=event_us,
                    )
                else:
                    try:
                        completed = self.joiner.add(payload)
                    except EventError as error:  # the pair cannot be read: this half says why
                        letters.append(DeadLetter(record=message, reason=error.reason, detail=str(error)))
                        continue
                    for event in completed:  # a pair is complete: its request's time
                        data = event.data()
                        event_us = int(event.event_time.timestamp() * 1_000_000)
                        batch.append(data, event_us=event_us, offset=message.offset, record=message)
                        labelled += self.labels.add_prediction(event)
            if messages:
                if partition not in self.monitor.reading:
                    self.monitor.resume(partition)
                ends[partition] = messages[-1].offset + 1
        self.next_offsets.update(ends)
        at = {**self.next_offsets, **(positions or {})}
        behind = [
            partition
            for partition, end in highwater.items()
            if end is None or partition not in at or at[partition] < end
        ]
        _send_labelled(self.sender, f"{self.topic}.labelled", labelled)
        closed, rejected = self.monitor.add_batches(predictions, behind=behind, assigned=list(highwater))
        if self.performance is not None:
            reports = self.performance.add(predictions, labels, behind=behind, assigned=list(highwater))
            closed += [ClosedWindow(report) for report in reports]
        for record, reason, (model, version) in rejected:
            detail = f"model {model} version {version}: {reason}"
            letters.append(DeadLetter(record=record, reason=reason, detail=detail))
        self.dead_letters.send(letters)
        for letter in letters:
            self.metrics.dead_letters.labels(letter.reason).inc()
        for pair in labelled:
            self.metrics.labelled.labels(pair.prediction.model).inc()
        if closed:
            self._report(closed)
        self._failed()
        held = [self.monitor.open_offsets()]
        if self.performance is not None:
            held.append(self.performance.open_offsets())
        return {
            partition: min([end, *(offsets[partition] for offsets in held if partition in offsets)])
            for partition, end in ends.items()
        }

    def _resolve(self, payload: dict[str, Any], message: Any, letters: list[DeadLetter]) -> bool:
        """Name the model version a ``models:/`` event means, or dead-letter it (False) when nothing
        registered answers to it."""
        reference = payload["model"]
        found = self.references.resolve(reference, payload["version"]) if self.references else None
        if found is None:
            problem = self.references.problem if self.references else "no model registry"
            letters.append(DeadLetter(record=message, reason="unresolved_model", detail=problem))
            return False
        payload["model"], payload["version"] = found
        return True

    def _failed(self) -> None:
        """Count what failed for one model version, and alert on windows that could not be scored."""
        failures = self.monitor.take_failures()
        for failure in failures:
            self.metrics.errors.labels(failure.model, failure.version, failure.stage).inc()
        for alert in self.incidents.on_failures(failures):
            self.metrics.alerts.labels(alert.model, alert.severity, alert.status).inc()

    def _report(self, closed: list[ClosedWindow]) -> None:
        """Write the closed windows' reports; the final ones (drift, and performance once all labels are
        in) go on to the alert rules, a provisional performance window only to the reports."""
        self.sink.write(closed)
        for report in (item.report for item in closed):
            self.metrics.record(report)
            log.info(
                "window %s %s [%d, %d): %d events, drifted: %s",
                report.model,
                report.version,
                report.window_start_us,
                report.window_end_us,
                report.events,
                ", ".join(report.drifted_features) or "none",
            )
        for alert in self.incidents.on_windows(
            [item for item in closed if item.report.stage != "provisional"]
        ):
            self.metrics.alerts.labels(alert.model, alert.severity, alert.status).inc()


def _start_offsets(config: SluiceConfig, topic: str, *, group: str) -> dict[int, int]:
    """Where the group starts on each partition: its committed offset, else the partition's beginning."""
    reader = consumer(config.kafka, group_id=group)
    try:
        partitions = [TopicPartition(topic, number) for number in reader.partitions_for_topic(topic) or ()]
        beginnings = reader.beginning_offsets(partitions) if partitions else {}
        committed = {partition: reader.committed(partition) for partition in partitions}
    finally:
        reader.close()
    return {
        partition.partition: committed[partition]
        if committed[partition] is not None
        else beginnings[partition]
        for partition in partitions
    }


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    """Record headers as (name, value) pairs: a list or tuple of pairs, or a mapping (faust's)."""
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _send_labelled(sender: Any, topic: str, labelled: list[LabelledPrediction]) -> None:
    futures = [
        sender.send(topic, key=pair.prediction.request_id.encode(), value=orjson.dumps(pair.to_record()))
        for pair in labelled
    ]
    if futures:
        sender.flush()
        for future in futures:
            future.get(timeout=30)
