"""What the console reads from Kafka, as an observer: it joins no consumer group and commits nothing.

Per partition of a group's topics: the committed offset, the end offset, the lag between them, and, from
the stream worker's commit metadata (``streams.checkpoints``), the newest event time each view had written
when it committed. A committed batch is in both stores, so ``now - newest`` is the freshness of what a
reader gets. Ingest rates come from the committed offsets sampled over time (``IngestRates``), and recent
dead letters are read from the end of the dead-letter topics.

>>> rates = IngestRates(span_s=60.0)
>>> rates.add(0.0, {("sluice-demo", "transactions", 0): 100, ("sluice-demo", "transactions", 1): 50})
>>> rates.add(10.0, {("sluice-demo", "transactions", 0): 600, ("sluice-demo", "transactions", 1): 150})
>>> rates.rate("sluice-demo", "transactions")
60.0
>>> rates.rate("sluice-demo", "payments") is None
True
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from features.config import KafkaConfig
from streams.checkpoints import parse_metadata
from streams.kafka_clients import admin_client

__all__ = ["DeadLetterRecord", "IngestRates", "KafkaState", "PartitionState"]

_NOTHING_WRITTEN = -(2**63)
PREVIEW_BYTES = 400
"""Of a dead letter's value, the console shows this much."""


@dataclass(frozen=True, kw_only=True)
class PartitionState:
    """One partition of a topic as a consumer group sees it."""

    group: str
    topic: str
    partition: int
    beginning: int
    end: int
    committed: int | None
    """None when the group has not committed in this partition."""
    newest_us: dict[str, int]
    """Per feature view, the newest event time written when the group committed (the worker's groups)."""

    @property
    def lag(self) -> int:
        """Records at or after the committed offset (all that are retained, before the first commit)."""
        return self.end - (self.beginning if self.committed is None else max(self.committed, self.beginning))

    def freshness_s(self, view: str, now_s: float) -> float | None:
        newest = self.newest_us.get(view)
        return None if newest is None else now_s - newest / 1_000_000


@dataclass(frozen=True, kw_only=True)
class DeadLetterRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    detail: str
    feature_view: str
    source: str
    """``topic/partition@offset`` of the rejected event."""
    preview: str
    """The start of the rejected value, decoded leniently: shown, never parsed."""


class IngestRates:
    """Records per second a group committed on a topic, from committed offsets sampled over time."""

    def __init__(self, *, span_s: float = 60.0) -> None:
        self.span_s = span_s
        self._samples: deque[tuple[float, dict[tuple[str, str, int], int]]] = deque()
        self._lock = threading.Lock()

    def add(self, at_s: float, committed: dict[tuple[str, str, int], int]) -> None:
        with self._lock:
            self._samples.append((at_s, committed))
            while len(self._samples) > 2 and at_s - self._samples[1][0] >= self.span_s:
                self._samples.popleft()

    def rate(self, group: str, topic: str) -> float | None:
        """Over the span (or as much of it as has been sampled); None before two samples."""
        with self._lock:
            if len(self._samples) < 2:
                return None
            (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        if last_at <= first_at:
            return None
        moved = [
            offset - first[key]
            for key, offset in last.items()
            if key[0] == group and key[1] == topic and key in first
        ]
        return max(sum(moved), 0) / (last_at - first_at) if moved else None


class KafkaState:
    """A lazily connected admin client and a group-less consumer, one call at a time (kafka-python's
    clients are not thread-safe). Every call is bounded by the clients' request timeouts."""

    def __init__(self, *, config: KafkaConfig, timeout_ms: int = 5000) -> None:
        self.config = config
        self.timeout_ms = timeout_ms
        self._lock = threading.Lock()
        self._admin: Any = None
        self._consumer: KafkaConsumer | None = None

    def topics(self) -> set[str]:
        with self._lock:
            return set(self._admin_client().list_topics())

    def partitions(self, group: str, topics: Iterable[str]) -> list[PartitionState]:
        """Each partition of ``topics`` (those that exist), with the group's commits."""
        with self._lock:
            consumer = self._reader()
            wanted = [
                TopicPartition(topic, partition)
                for topic in dict.fromkeys(topics)
                for partition in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not wanted:
                return []
            beginning = consumer.beginning_offsets(wanted)
            end = consumer.end_offsets(wanted)
            commits = self._admin_client().list_group_offsets({group: wanted}).get(group, {})
        states = []
        for tp in wanted:
            commit = commits.get(tp)
            committed = commit.offset if commit is not None and commit.offset >= 0 else None
            newest = {
                view: checkpoints[-1].newest_us
                for view, checkpoints in parse_metadata(commit.metadata if commit else None).items()
                if checkpoints and checkpoints[-1].newest_us > _NOTHING_WRITTEN
            }
            states.append(
                PartitionState(
                    group=group,
                    topic=tp.topic,
                    partition=tp.partition,
                    beginning=beginning[tp],
                    end=end[tp],
                    committed=committed,
                    newest_us=newest,
                )
            )
        return states

    def dead_letters(
        self,
        topic: str,
        *,
        limit: int | None = None,
        feature_view: str | None = None,
        scan: int = 5000,
        wait_s: float = 3.0,
    ) -> tuple[int, list[DeadLetterRecord]]:
        """The number of dead letters retained in ``topic``, and the newest ``limit`` (default: all) of the
        last ``scan`` (those of ``feature_view`` only, when given), newest first."""
        with self._lock:
            consumer = self._reader()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                return 0, []
            beginning = consumer.beginning_offsets(tps)
            end = consumer.end_offsets(tps)
            total = sum(end[tp] - beginning[tp] for tp in tps)
            each = max(scan // len(tps), 1)
            pending = {tp for tp in tps if end[tp] > beginning[tp]}
            consumer.assign(list(pending))
            for tp in pending:
                consumer.seek(tp, max(beginning[tp], end[tp] - each))
            found: list[DeadLetterRecord] = []
            deadline = time.monotonic() + wait_s
            while pending and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=200, max_records=1000).items():
                    for record in records:
                        if record.offset < end[tp]:
                            letter = _letter(record)
                            if feature_view is None or letter.feature_view == feature_view:
                                found.append(letter)
                for tp in list(pending):
                    if consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
            consumer.assign([])
        found.sort(key=lambda letter: (letter.timestamp_ms, letter.offset), reverse=True)
        return total, found[:limit]

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
            if self._consumer is not None:
                self._consumer.close()
            self._admin = self._consumer = None

    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = admin_client(self.config)
        return self._admin

    def _reader(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=max(self.timeout_ms, 1000),
                **self.config.client_kwargs(),
            )
        return self._consumer


def _letter(record: Any) -> DeadLetterRecord:
    headers = {key: value.decode("utf-8", "replace") for key, value in (record.headers or [])}
    value = record.value or b""
    return DeadLetterRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        reason=headers.get("sluice.reason", "unknown"),
        detail=headers.get("sluice.detail", ""),
        feature_view=headers.get("sluice.feature_view", ""),
        source=(
            f"{headers.get('sluice.source.topic', '?')}/{headers.get('sluice.source.partition', '?')}"
            f"@{headers.get('sluice.source.offset', '?')}"
        ),
        preview=value[:PREVIEW_BYTES].decode("utf-8", "replace"),
    )
