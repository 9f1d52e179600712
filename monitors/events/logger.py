"""``PredictionLogger``: log what a model served, from inference code, without slowing it down.

``log(...)`` puts the event on a bounded in-memory queue and returns at once; a background thread
batches the queue into a Kafka producer. Nothing it does raises into the caller: an event that
cannot be serialised, a full queue or a failed delivery is counted in ``stats`` and logged (at most
once a minute per kind), never thrown.

Example::

    logger = PredictionLogger(config=load_config().kafka, topic="predictions")
    logger.log(model="fraud", version="3", request_id="r-1", features={"amount": 12.5}, outputs={"p": 0.1})
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from features.config import KafkaConfig
from monitors.events.cloudevents import LabelEvent, PredictionEvent, encode

__all__ = ["LoggerStats", "PredictionLogger"]

log = logging.getLogger(__name__)


@dataclass
class LoggerStats:
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    """Events Kafka did not accept, or that could not be serialised."""
    dropped: int = 0
    """Events refused because the queue was full (Kafka slower than the traffic, or unreachable)."""


class PredictionLogger:
    """Produces prediction and label events to a Kafka topic in the background."""

    def __init__(
        self,
        *,
        config: KafkaConfig,
        topic: str,
        source: str = "sluice",
        max_queue: int = 100_000,
        linger_ms: int = 20,
    ) -> None:
        self.topic = topic
        self.source = source
        self.stats = LoggerStats()
        self._config = config
        self._linger_ms = linger_ms
        self._queue: queue.Queue[PredictionEvent | LabelEvent | None] = queue.Queue(maxsize=max_queue)
        self._last_warning: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sluice-prediction-logger", daemon=True)
        self._thread.start()

    def log(
        self,
        *,
        model: str,
        version: str = "",
        request_id: str,
        features: Mapping[str, Any],
        outputs: Mapping[str, Any] | None = None,
        entities: Mapping[str, Any] | None = None,
        event_time: datetime | None = None,
    ) -> None:
        """Queue one prediction; returns at once and never raises. ``model`` may be an MLflow reference
        (``models:/fraud@champion``), and ``version`` is then optional: the monitor resolves it."""
        try:
            if not version and not model.startswith("models:/"):
                raise ValueError(f"no version for model {model!r}, which is not a models:/ reference")
            event = PredictionEvent(
                model=model,
                version=str(version),
                request_id=str(request_id),
                features=dict(features),
                outputs=dict(outputs or {}),
                entities=dict(entities or {}),
                event_time=event_time or datetime.now(UTC),
            )
        except Exception as error:  # the caller's request path must never see a logging error
            self._failed("event", error)
            return
        self._put(event)

    def log_label(
        self, *, model: str, request_id: str, label: Any, event_time: datetime | None = None
    ) -> None:
        """Queue the ground truth of an earlier prediction; returns at once and never raises."""
        try:
            event = LabelEvent(
                model=model,
                request_id=str(request_id),
                label=label,
                event_time=event_time or datetime.now(UTC),
            )
        except Exception as error:
            self._failed("event", error)
            return
        self._put(event)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued event is delivered or failed; False if the time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                done = self.stats.delivered + self.stats.failed
            if done >= self.stats.queued and self._queue.empty():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _put(self, event: PredictionEvent | LabelEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
            self._warn("dropped", "prediction log queue is full; events are being dropped")
            return
        with self._lock:
            self.stats.queued += 1

    def _run(self) -> None:
        from streams.kafka_clients import producer

        sender = None
        while True:
            event = self._queue.get()
            if event is None:
                break
            if sender is None:
                try:
                    sender = producer(self._config, linger_ms=self._linger_ms, acks="all")
                except Exception as error:
                    self._failed("connect", error)
                    continue
            try:
                key, value, headers = encode(event, source=self.source)
                future = sender.send(self.topic, key=key, value=value, headers=headers)
                future.add_callback(self._delivered).add_errback(
                    lambda error: self._failed("delivery", error)
                )
            except Exception as error:
                self._failed("send", error)
        if sender is not None:
            sender.flush()
            sender.close()

    def _delivered(self, _: Any) -> None:
        with self._lock:
            self.stats.delivered += 1

    def _failed(self, kind: str, error: BaseException) -> None:
        with self._lock:
            self.stats.failed += 1
        self._warn(kind, f"prediction logging failed ({kind}): {error}")

    def _warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, -1e9) >= 60:
            self._last_warning[kind] = now
            log.warning(message)
