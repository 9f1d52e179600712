"""Receive alerts in Python: iterate over them, or hand each to a callback.

Both follow the Kafka alerts topic (``alerts.topic``, CloudEvents in binary mode) without joining a
consumer group, so any number of subscribers each see every alert. A subscriber starts at the end of
the topic unless ``from_beginning`` is set. Records that are not alert events are skipped and logged;
payloads are parsed as JSON only.

    from monitors import alerts

    for alert in alerts.subscribe(model="fraud"):
        page_someone(alert.summary, alert.report_url)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from features.config import SluiceConfig, load_config
from monitors.alerts.alert import Alert
from streams.kafka_clients import consumer, ensure_topics

__all__ = ["Subscription", "on_alert", "subscribe"]

log = logging.getLogger("sluice.alerts")


class Subscription:
    """An open subscription: iterate it for alerts, ``close()`` it to stop."""

    def __init__(
        self,
        *,
        config: SluiceConfig,
        model: str | None = None,
        severity: str | None = None,
        from_beginning: bool = False,
        idle_timeout_s: float | None = None,
    ) -> None:
        """``idle_timeout_s`` ends the iteration after that long without an alert; None waits forever."""
        self.model = model
        self.severity = severity
        self.idle_timeout_s = idle_timeout_s
        self._closed = threading.Event()
        self._iterating = False
        topic = config.alerts.topic
        ensure_topics(config.kafka, [topic])
        self._consumer = consumer(config.kafka, group_id=None)
        partitions = [TopicPartition(topic, number) for number in _partitions(self._consumer, topic)]
        self._consumer.assign(partitions)
        if from_beginning:
            self._consumer.seek_to_beginning(*partitions)
        else:
            self._consumer.seek_to_end(*partitions)
            for partition in partitions:  # resolve the end now, so that alerts sent from here on are seen
                self._consumer.position(partition)

    def __iter__(self) -> Iterator[Alert]:
        idle = 0.0
        self._iterating = True
        try:
            while not self._closed.is_set():
                batches = self._consumer.poll(timeout_ms=200)
                if not batches:
                    idle += 0.2
                    if self.idle_timeout_s is not None and idle >= self.idle_timeout_s:
                        return
                    continue
                idle = 0.0
                for records in batches.values():
                    for record in records:
                        alert = _decode(record)
                        if alert is not None and self._wanted(alert):
                            yield alert
        finally:
            self._closed.set()
            self._consumer.close()

    def close(self) -> None:
        """Stop; safe from another thread (the iterating thread closes the consumer, which is not
        thread-safe, when it sees this)."""
        self._closed.set()
        if not self._iterating:
            self._consumer.close()

    def _wanted(self, alert: Alert) -> bool:
        return (self.model is None or alert.model == self.model) and (
            self.severity is None or alert.severity == self.severity
        )


def subscribe(
    *,
    model: str | None = None,
    severity: str | None = None,
    from_beginning: bool = False,
    idle_timeout_s: float | None = None,
    config: SluiceConfig | None = None,
    repo_path: Path | None = None,
) -> Subscription:
    """Alerts as they are sent, optionally only one model's or one severity's."""
    return Subscription(
        config=config or load_config(repo_path),
        model=model,
        severity=severity,
        from_beginning=from_beginning,
        idle_timeout_s=idle_timeout_s,
    )


def on_alert(
    callback: Callable[[Alert], object],
    *,
    model: str | None = None,
    severity: str | None = None,
    config: SluiceConfig | None = None,
    repo_path: Path | None = None,
) -> Subscription:
    """Call ``callback(alert)`` in a background thread for each alert; close the returned subscription
    to stop. An exception in the callback is logged and the subscription goes on."""
    subscription = subscribe(model=model, severity=severity, config=config, repo_path=repo_path)

    def run() -> None:
        for alert in subscription:
            try:
                callback(alert)
            except Exception:
                log.exception("alert callback failed for %s", alert.id)

    threading.Thread(target=run, name="sluice-alert-callback", daemon=True).start()
    return subscription


def _partitions(reader: Any, topic: str, timeout_s: float = 30.0) -> list[int]:
    """The topic's partitions; metadata may lag just after the topic is created."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = reader.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no partitions for the alerts topic {topic!r} after {timeout_s:.0f} s")
        reader.topics()  # asks the broker for fresh metadata
        time.sleep(0.2)


def _decode(record: object) -> Alert | None:
    headers = dict(getattr(record, "headers", None) or [])
    kind = headers.get("ce_type", b"").decode(errors="replace")
    if not kind.startswith("io.sluice.alert."):
        log.warning("skipping a record that is not an alert event (ce_type %r)", kind)
        return None
    try:
        return Alert.from_record(json.loads(getattr(record, "value", b"")))
    except (ValueError, TypeError, KeyError) as error:
        log.warning("skipping an alert event that does not parse: %s", error)
        return None
