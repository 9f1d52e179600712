"""What every stream worker engine shares: settings, per-view sinks, and per-partition processors.

A worker consumes the source topics of a repo's streamed feature views in the consumer group
``sluice-<project>``. For each (view, partition) it keeps a ``PartitionProcessor``; a partition
that arrives (at start, or by a rebalance) gets a new processor that rebuilds its window state by
replaying the partition up to the committed offset. Two engines drive this: ``streams.kafka_worker``
(aiokafka, the default) and ``streams.faust_worker`` (a faust-streaming app with one agent per view).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from features.config import KafkaConfig
from features.repo import FeatureRepo
from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from online_store.connection import client as online_redis
from online_store.writer import OnlineWriter
from streams.checkpoints import Checkpoint, horizon_us, keep, parse_metadata, replay_start
from streams.dead_letters import DeadLetterSink, KafkaRecord
from streams.kafka_clients import aiokafka_kwargs, producer
from streams.metrics import WorkerMetrics
from streams.processor import PartitionProcessor, PreparedBatch, SinkFailed
from streams.snapshots import SnapshotStore

__all__ = ["ViewRuntime", "WorkerSettings", "view_runtimes", "write_until_done"]

log = logging.getLogger("sluice.worker")


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """How a stream worker batches, and which views it runs."""

    batch_size: int = 20_000
    """The most records taken from Kafka in one poll."""
    batch_window_s: float = 0.05
    """How long a poll waits for records when there are none: a floor under freshness."""
    max_message_bytes: int = 1 << 20
    """Larger messages go to the dead-letter topic as oversized."""
    views: tuple[str, ...] = ()
    """Only these feature views; all streamed views when empty."""
    snapshot_interval_s: float = 60.0
    """How often each partition's state is snapshotted (after a commit, and at a clean stop or a
    revocation), so that a restart replays only what follows; 0 turns snapshots off."""
    instance_id: str | None = None
    """Kafka's ``group.instance.id`` (static membership): a member restarted under the same id gets its
    partitions back at once, without a rebalance, if it is back within the session timeout."""


@dataclass
class ViewRuntime:
    """One streamed feature view inside a worker: its sinks and its partitions' processors."""

    spec: FeatureViewSpec
    kafka: KafkaConfig
    dataset: OfflineDataset
    writer: OnlineWriter
    dead_letters: DeadLetterSink
    metrics: WorkerMetrics
    settings: WorkerSettings
    processors: dict[int, PartitionProcessor] = field(default_factory=dict)
    snapshotted_at: dict[int, float] = field(default_factory=dict)
    """When each partition's state was last snapshotted (monotonic seconds)."""
    checkpoints: dict[int, list[Checkpoint]] = field(default_factory=dict)
    """Per partition, the checkpoints to commit with its next offset."""

    @cached_property
    def snapshots(self) -> SnapshotStore | None:
        if self.settings.snapshot_interval_s <= 0:
            return None
        return SnapshotStore(spec=self.spec, root=self.dataset.root)

    def processor(
        self, partition: int, first_offset: int, *, committed: tuple[int, str] | None = None
    ) -> PartitionProcessor:
        """The partition's processor; a new one first rebuilds state from the partition's history: from
        its newest usable snapshot, else from the checkpoints in ``committed`` (the group's committed
        offset and metadata), else from the oldest record retained."""
        existing = self.processors.get(partition)
        if existing is not None:
            return existing
        processor = PartitionProcessor(
            spec=self.spec,
            partition=partition,
            dataset=self.dataset,
            writer=self.writer,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            max_message_bytes=self.settings.max_message_bytes,
        )
        started = time.perf_counter()
        snapshots = self.snapshots
        snapshot = snapshots.newest(partition, before=first_offset) if snapshots is not None else None
        replay_from, source = 0, "no snapshot, no checkpoint"
        horizon = horizon_us(self.spec)
        kept = self._committed_checkpoints(partition, first_offset, committed)
        if snapshot is not None:
            processor.restore(snapshot)
            self.snapshotted_at[partition] = time.monotonic()  # what it would write, it just read
            replay_from, source = snapshot.offset + 1, f"snapshot at offset {snapshot.offset}"
        else:
            start = replay_start(kept, horizon_us=horizon)
            if start is not None:
                processor.resume_at(start)
                replay_from, source = start.offset, f"checkpoint at offset {start.offset}"
        self.checkpoints[partition] = kept
        replayed = processor.start(
            first_offset=first_offset,
            history=history(self.kafka, self.spec.topic, partition, first_offset, start_offset=replay_from),
        )
        log.info(
            "%s partition %d: rebuilt window state from %d records in %.2f s (%s); resuming at offset %d",
            self.spec.name, partition, replayed, time.perf_counter() - started, source, first_offset,
        )  # fmt: skip
        self.processors[partition] = processor
        return processor

    def _committed_checkpoints(
        self, partition: int, first_offset: int, committed: tuple[int, str] | None
    ) -> list[Checkpoint]:
        """The view's checkpoints in the group's commit of the partition, if that commit is where the
        worker resumes (an offset moved by hand, or by retention, carries none that are valid)."""
        if committed is None or committed[0] != first_offset:
            return []
        kept = parse_metadata(committed[1]).get(self.spec.name, [])
        return kept if kept and kept[-1].offset == first_offset else []

    def note_checkpoints(self, partition: int, passed: list[Checkpoint]) -> list[Checkpoint]:
        """Add the checkpoints the partition's processor passed in a batch; returns those to commit."""
        kept = self.checkpoints.get(partition, [])
        for checkpoint in passed:
            kept = keep(kept, checkpoint, horizon_us=horizon_us(self.spec))
        self.checkpoints[partition] = kept
        return kept

    async def processor_async(
        self, partition: int, first_offset: int, *, committed: tuple[int, str] | None = None
    ) -> PartitionProcessor:
        """``processor`` for the event loop: only a new processor's replay runs in a thread."""
        existing = self.processors.get(partition)
        if existing is not None:
            return existing
        return await asyncio.to_thread(self.processor, partition, first_offset, committed=committed)

    def forget(self, partition: int) -> None:
        """Drop a partition's state: it was revoked, and its next owner rebuilds it."""
        self.processors.pop(partition, None)
        self.metrics.forget(self.spec.name, partition)
        self.snapshotted_at.pop(partition, None)
        self.checkpoints.pop(partition, None)

    def snapshot_due(self, partition: int) -> bool:
        """Whether the partition's state is to be snapshotted at this batch (and then notes that it is)."""
        if self.settings.snapshot_interval_s <= 0:
            return False
        now = time.monotonic()
        if now - self.snapshotted_at.get(partition, -float("inf")) < self.settings.snapshot_interval_s:
            return False
        self.snapshotted_at[partition] = now
        return True

    def save_snapshot(self, partition: int, data: bytes, *, offset: int) -> None:
        """Keep a snapshot whose offset is committed. A failed write costs only replay on a restart."""
        snapshots = self.snapshots
        if snapshots is None:
            return
        try:
            snapshots.save(partition, data, offset=offset)
        except OSError as error:
            log.warning("%s partition %d: snapshot not written (%r)", self.spec.name, partition, error)
            self.snapshotted_at.pop(partition, None)  # try again at the next batch

    def snapshot_partition(self, partition: int) -> None:
        """Snapshot one partition's state now. A restart uses it once its offset is committed (see
        ``SnapshotStore.newest``): call it after the applied batches are committed, or about to be."""
        processor = self.processors.get(partition)
        if processor is not None and self.settings.snapshot_interval_s > 0 and processor.applied_until >= 0:
            self.save_snapshot(partition, processor.snapshot(), offset=processor.applied_until)

    def snapshot_all(self) -> None:
        """Snapshot every partition's state now: call only with every applied batch committed."""
        for partition in list(self.processors):
            self.snapshot_partition(partition)


def view_runtimes(repo: FeatureRepo, settings: WorkerSettings, metrics: WorkerMetrics) -> list[ViewRuntime]:
    """A runtime per selected streamed view, sharing one Redis client and one dead-letter producer."""
    unknown = set(settings.views) - {spec.name for spec in repo.specs}
    if unknown:
        known = ", ".join(spec.name for spec in repo.specs) or "none"
        raise ValueError(
            f"no streamed feature view named {', '.join(sorted(unknown))}; the repo has: {known}"
        )
    config = repo.config
    redis_client = online_redis(config.redis)  # a cluster's slot map is loaded here
    dead_letter_producer = producer(config.kafka, linger_ms=20)
    return [
        ViewRuntime(
            spec=spec,
            kafka=config.kafka,
            dataset=OfflineDataset(spec=spec),
            writer=OnlineWriter(client=redis_client, spec=spec),
            dead_letters=DeadLetterSink(
                producer=dead_letter_producer, topic=spec.dlq_topic, feature_view=spec.name
            ),
            metrics=metrics,
            settings=settings,
        )
        for spec in repo.specs
        if not settings.views or spec.name in settings.views
    ]


async def write_until_done(
    processor: PartitionProcessor, batch: PreparedBatch, metrics: WorkerMetrics
) -> None:
    """Write one prepared batch in a thread, retrying with backoff until its sinks accept it.

    A batch is never skipped: its offsets are committed only after this returns.
    """
    delay = 0.2
    while True:
        try:
            await asyncio.to_thread(processor.write, batch)
            return
        except Exception as error:  # Redis, Parquet or the dead-letter producer: retry, never skip
            sink = error.sink if isinstance(error, SinkFailed) else "unknown"
            metrics.sink_failures.labels(processor.spec.name, sink).inc()
            log.warning(
                "%s: writing a batch failed (%r); retrying in %.1f s", processor.spec.name, error, delay
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def history(
    kafka: KafkaConfig, topic: str, partition: int, end_offset: int, *, start_offset: int = 0
) -> Iterator[KafkaRecord]:
    """The records of one partition from ``start_offset`` (or the oldest the broker still has, if that
    is later) up to ``end_offset``.

    Runs in a worker thread, so it reads with aiokafka on an event loop of its own (kafka-python's
    consumer is about ten times slower at this).
    """
    if end_offset <= start_offset:
        return
    from aiokafka import AIOKafkaConsumer, TopicPartition

    assigned = TopicPartition(topic, partition)

    async def open_reader() -> AIOKafkaConsumer:
        # aiokafka clients must be created inside a running event loop.
        reader = AIOKafkaConsumer(
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a start the retention has deleted: the oldest kept
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=32 << 20,
            **aiokafka_kwargs(kafka),
        )
        await reader.start()
        reader.assign([assigned])
        if start_offset > 0:
            reader.seek(assigned, start_offset)
        else:
            await reader.seek_to_beginning(assigned)
        return reader

    loop = asyncio.new_event_loop()
    reader = loop.run_until_complete(open_reader())
    first = True
    try:
        while loop.run_until_complete(reader.position(assigned)) < end_offset:
            batches = loop.run_until_complete(reader.getmany(assigned, timeout_ms=1000, max_records=50_000))
            for message in batches.get(assigned, []):
                if first and start_offset > 0 and message.offset > start_offset:
                    log.warning(
                        "%s[%d]: offsets %d..%d are gone (retention); the state is rebuilt without them",
                        topic, partition, start_offset, message.offset - 1,
                    )  # fmt: skip
                first = False
                if message.offset >= end_offset:
                    return
                yield message
    finally:
        loop.run_until_complete(reader.stop())
        loop.close()
