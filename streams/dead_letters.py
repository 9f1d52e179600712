"""The dead-letter topic: every rejected event, unchanged, with the reason in its headers.

A dead letter keeps the original key and value, so it can be fixed and replayed. Headers say why
and where from: ``sluice.reason`` (one of ``streams.decoding.REASONS``), ``sluice.detail``,
``sluice.feature_view`` (for a feature view's letters), ``sluice.source.topic``,
``sluice.source.partition`` and ``sluice.source.offset``. Delivery is at least once: after a crash,
the batch being processed may be dead-lettered again, and the source coordinates identify the repeat.

An oversized message is dead-lettered with its first 64 KiB only (and ``sluice.original_bytes``):
the whole message would not fit a producer request either, and the source coordinates lead back
to it while the source topic retains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["DeadLetter", "DeadLetterSink", "KafkaRecord", "SourceRecord"]

OVERSIZED_PREFIX_BYTES = 64 * 1024


class KafkaRecord(Protocol):
    """A Kafka record as every client gives it: kafka-python's and aiokafka's ConsumerRecord, faust's
    Message, and ``SourceRecord``. Workers pass the client's own records along, not copies: a copy per
    record cost a sixth of the stream worker's time."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, kw_only=True)
class SourceRecord:
    """One Kafka record of a source topic, built by hand (tests, tools)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    record: KafkaRecord
    reason: str
    detail: str


class DeadLetterSink:
    """Sends dead letters of one source (a feature view's, or the monitor's) to its ``<topic>.dlq`` with a
    kafka-python producer."""

    def __init__(self, *, producer: Any, topic: str, feature_view: str | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.feature_view = feature_view

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Send and wait until the broker has them all (so the batch may be committed after)."""
        if not letters:
            return
        futures = [self._send(letter) for letter in letters]
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)

    def _send(self, letter: DeadLetter) -> Any:
        value = letter.record.value
        headers = [
            ("sluice.reason", letter.reason.encode()),
            ("sluice.detail", letter.detail.encode()[:1000]),
            *([("sluice.feature_view", self.feature_view.encode())] if self.feature_view is not None else []),
            ("sluice.source.topic", letter.record.topic.encode()),
            ("sluice.source.partition", str(letter.record.partition).encode()),
            ("sluice.source.offset", str(letter.record.offset).encode()),
        ]
        if value is not None and len(value) > OVERSIZED_PREFIX_BYTES and letter.reason == "oversized":
            headers.append(("sluice.original_bytes", str(len(value)).encode()))
            value = value[:OVERSIZED_PREFIX_BYTES]
        return self.producer.send(self.topic, key=letter.record.key, value=value, headers=headers)
