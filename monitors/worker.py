"""``sluice monitor``: consume prediction events, score closed windows, publish the scores.

An aiokafka consumer (group ``sluice-monitor-<project>``) reads the predictions topic in batches.
Each record is decoded as a CloudEvent (``monitors.events``); invalid ones, late ones and those of
a model version without a reference profile go to ``<topic>.dlq`` with a ``sluice.reason`` header.
Labels are joined to their predictions by request id (``monitors.labels``); the pairs go to
``<topic>.labelled``. Closed windows' reports go to ``<topic>.scores`` (one JSON record per window,
keyed by model, version and window start) and to Parquet under ``<state_dir>/monitor/scores/``,
one file per window named by the window, so a replay rewrites it rather than adding one. Offsets
are committed only below the oldest event of a window still open, after the reports are written:
a restart replays exactly the open windows, and a window is never lost. Scored windows then go
through ``monitors.incidents``: alert rules, the delivery outbox, and retraining jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition

from features.config import SluiceConfig
from monitors.detector import WindowReport
from monitors.events import EventError, KServeJoiner, KServePart, LabelEvent, PredictionEvent, decode
from monitors.incidents import Incidents
from monitors.labels import LabelJoiner, LabelledPrediction
from monitors.monitor import ClosedWindow, Monitor, MonitorSettings
from monitors.monitor_metrics import MonitorMetrics
from monitors.window import ServingWindow
from streams.dead_letters import DeadLetter, DeadLetterSink
from streams.kafka_clients import aiokafka_kwargs, ensure_topics, producer
from streams.worker import source_record

__all__ = ["ScoresSink", "last_window", "run"]

log = logging.getLogger("sluice.monitor")


@dataclass(frozen=True, kw_only=True)
class ScoresSink:
    """Writes window reports to the scores topic and to Parquet."""

    producer: Any
    topic: str
    root: Path

    def write(self, closed: list[ClosedWindow]) -> None:
        futures = []
        for item in closed:
            report = item.report
            key = f"{report.model}/{report.version}/{report.window_start_us}".encode()
            futures.append(self.producer.send(self.topic, key=key, value=orjson.dumps(report.to_record())))
            self._parquet(report, item.window)
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)

    def _parquet(self, report: WindowReport, window: ServingWindow) -> None:
        folder = self.root / f"model={report.model}" / f"version={report.version}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "window_start_us": report.window_start_us,
                "window_end_us": report.window_end_us,
                "events": report.events,
                "drift_share": report.drift_share,
                "dataset_drift": report.dataset_drift,
                "feature": score.feature,
                "metric": score.metric,
                "against": score.against,
                "score": score.score,
                "threshold": score.threshold,
                "drift": score.drift,
            }
            for score in report.scores
        ]
        name = f"window-{report.window_start_us:020d}"
        _write(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
        _write(window.summary_table(), folder / f"{name}.summary.parquet")


def last_window(scores_root: Path, model: str, version: str) -> int | None:
    """The start (µs) of the last window of a model version written by ``ScoresSink``, if any."""
    folder = scores_root / f"model={model}" / f"version={version}"
    starts = [int(path.name[7:27]) for path in folder.glob("window-*.summary.parquet")]
    return max(starts, default=None)


def _write(table: pa.Table, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, temporary)
    temporary.replace(target)


async def run(
    config: SluiceConfig,
    *,
    topic: str,
    settings: MonitorSettings,
    kserve_features: list[str],
    repo_path: Path,
    metrics: MonitorMetrics | None = None,
) -> None:
    """Consume until SIGTERM or SIGINT; then commit what is safe and leave the group."""
    metrics = metrics or MonitorMetrics()
    scores_root = config.state_dir / "monitor" / "scores"
    monitor = Monitor(
        settings=settings, last_reported=lambda model, version: last_window(scores_root, model, version)
    )
    joiner = KServeJoiner(feature_names=kserve_features)
    labels = LabelJoiner()
    ensure_topics(config.kafka, [f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", config.alerts.topic])
    sender = producer(config.kafka, linger_ms=5)
    try:
        incidents = Incidents.from_config(config, repo_path=repo_path, producer=sender)
    except Exception:
        sender.close()
        raise
    sink = ScoresSink(producer=sender, topic=f"{topic}.scores", root=scores_root)
    dead_letters = DeadLetterSink(producer=sender, topic=f"{topic}.dlq")
    consumer = AIOKafkaConsumer(
        topic,
        group_id=f"sluice-monitor-{config.project}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        **aiokafka_kwargs(config.kafka),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await consumer.start()
        incidents.start()
        log.info("monitoring %s as group sluice-monitor-%s", topic, config.project)
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            if batches:
                offsets = await asyncio.to_thread(
                    _process,
                    batches,
                    monitor,
                    joiner,
                    labels,
                    sink,
                    dead_letters,
                    sender,
                    topic,
                    metrics,
                    incidents,
                )
                await consumer.commit(offsets)
            await asyncio.to_thread(incidents.tick)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        incidents.stop()
        sender.close()


def _process(
    batches: dict[TopicPartition, list[Any]],
    monitor: Monitor,
    joiner: KServeJoiner,
    labels: LabelJoiner,
    sink: ScoresSink,
    dead_letters: DeadLetterSink,
    sender: Any,
    topic: str,
    metrics: MonitorMetrics,
    incidents: Incidents,
) -> dict[TopicPartition, int]:
    events: list[tuple[PredictionEvent, int, int]] = []
    sources: list[Any] = []
    """The record of each event, for the dead-letter topic."""
    letters: list[DeadLetter] = []
    labelled: list[LabelledPrediction] = []
    ends: dict[TopicPartition, int] = {}
    for partition, messages in batches.items():
        for message in messages:
            try:
                event = decode(message.headers or [], message.value)
            except EventError as error:
                letters.append(
                    DeadLetter(record=source_record(message), reason=error.reason, detail=str(error))
                )
                continue
            if isinstance(event, LabelEvent):
                labelled += labels.add_label(event)
                continue
            predictions = joiner.add(event) if isinstance(event, KServePart) else [event]
            for prediction in predictions:
                labelled += labels.add_prediction(prediction)
            events += [(prediction, partition.partition, message.offset) for prediction in predictions]
            sources += [message] * len(predictions)
        if messages:
            ends[partition] = messages[-1].offset + 1
    _send_labelled(sender, f"{topic}.labelled", labelled)
    closed, rejected = monitor.add(events)
    for index, reason in rejected:
        event = events[index][0]
        detail = f"model {event.model} version {event.version}: {reason}"
        letters.append(DeadLetter(record=source_record(sources[index]), reason=reason, detail=detail))
    dead_letters.send(letters)
    for letter in letters:
        metrics.dead_letters.labels(letter.reason).inc()
    for pair in labelled:
        metrics.labelled.labels(pair.prediction.model).inc()
    if closed:
        sink.write(closed)
        for report in (item.report for item in closed):
            metrics.record(report)
            log.info(
                "window %s %s [%d, %d): %d events, drifted: %s",
                report.model,
                report.version,
                report.window_start_us,
                report.window_end_us,
                report.events,
                ", ".join(report.drifted_features) or "none",
            )
        for alert in incidents.on_windows(closed):
            metrics.alerts.labels(alert.model, alert.severity, alert.status).inc()
    open_offsets = monitor.open_offsets()
    return {
        partition: min(end, open_offsets.get(partition.partition, end)) for partition, end in ends.items()
    }


def _send_labelled(sender: Any, topic: str, labelled: list[LabelledPrediction]) -> None:
    futures = [
        sender.send(topic, key=pair.prediction.request_id.encode(), value=orjson.dumps(pair.to_record()))
        for pair in labelled
    ]
    if futures:
        sender.flush()
        for future in futures:
            future.get(timeout=30)
