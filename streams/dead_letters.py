"""The dead-letter topic: every rejected event, unchanged, with the reason in its headers.

A dead letter keeps the original key and value, so it can be fixed and replayed. Headers say why
and where from: ``sluice.reason`` (one of ``streams.decoding.REASONS``), ``sluice.detail``,
``sluice.feature_view``, ``sluice.source.topic``, ``sluice.source.partition`` and
``sluice.source.offset``. Delivery is at least once: after a crash, the batch being processed may
be dead-lettered again, and the source coordinates identify the repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DeadLetter", "DeadLetterSink", "SourceRecord"]


@dataclass(frozen=True, kw_only=True)
class SourceRecord:
    """One Kafka record of a source topic, as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    record: SourceRecord
    reason: str
    detail: str


class DeadLetterSink:
    """Sends dead letters of one feature view to its ``<topic>.dlq`` with a kafka-python producer."""

    def __init__(self, *, producer: Any, topic: str, feature_view: str) -> None:
        self.producer = producer
        self.topic = topic
        self.feature_view = feature_view

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Send and wait until the broker has them all (so the batch may be committed after)."""
        if not letters:
            return
        futures = [
            self.producer.send(
                self.topic,
                key=letter.record.key,
                value=letter.record.value,
                headers=[
                    ("sluice.reason", letter.reason.encode()),
                    ("sluice.detail", letter.detail.encode()[:1000]),
                    ("sluice.feature_view", self.feature_view.encode()),
                    ("sluice.source.topic", letter.record.topic.encode()),
                    ("sluice.source.partition", str(letter.record.partition).encode()),
                    ("sluice.source.offset", str(letter.record.offset).encode()),
                ],
            )
            for letter in letters
        ]
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)
