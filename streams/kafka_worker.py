"""The default stream worker engine: an aiokafka consumer group, polled in batches.

Each poll returns up to ``batch_size`` records per call, grouped by partition. Every (view,
partition) batch is prepared (applied to the window state), then written to the sinks, and only then
are the poll's offsets committed. While there is a backlog (a full poll), the writes and commit of one
poll run while the next poll is prepared: Redis applies the rows on its own core while the worker
decodes and aggregates the next batch, instead of each waiting for the other. Once caught up, the
worker waits for the writes before it polls again, so that a small poll does not compete with them
for the interpreter. A poll's writes start only after the previous poll's writes and commit are done,
so each partition's batches reach Parquet in offset order. The rebalance listener waits for the poll
being prepared and the writes in flight, so a revoked partition's offsets are committed before its
next owner starts, and then drops the partition's state. Beside the loop, it watches a single Redis for a
restart that lost the data, and refills it from the offline store (``streams.online_resets``).

Why not a faust agent here: on the 2-core development machine, a faust-streaming agent that does
nothing but acknowledge events moves about 6,000 events/s; aiokafka's ``getmany`` on the same
topic moves over 350,000 records/s. See ``docs/streaming.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError

from features.config import KafkaConfig
from features.repo import FeatureRepo
from online_store.resets import ResetWatch
from streams.checkpoints import Checkpoint, metadata
from streams.kafka_clients import aiokafka_kwargs, committed_metadata
from streams.metrics import WorkerMetrics
from streams.online_resets import watch_resets
from streams.processor import PartitionProcessor, PreparedBatch
from streams.worker import ViewRuntime, WorkerSettings, view_runtimes, write_until_done

__all__ = ["run"]

STOP_GRACE_S = 6.0
"""After SIGTERM, how long the writes in flight may keep failing before the worker stops without them."""

log = logging.getLogger("sluice.worker")


class _Writes:
    """The one poll whose batches are being written and whose offsets are then committed."""

    def __init__(self, consumer: AIOKafkaConsumer, metrics: WorkerMetrics) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.in_flight: asyncio.Task[None] | None = None

    def start(self, prepared: list[_Prepared], offsets: dict[Any, tuple[int, str]]) -> None:
        if self.in_flight is not None and not self.in_flight.done():
            raise RuntimeError("a poll's writes are still in flight")
        self.in_flight = asyncio.create_task(self._write(prepared, offsets))

    async def wait(self) -> None:
        """Return when the poll in flight is written and committed; raise what its commit raised."""
        if self.in_flight is not None:
            in_flight, self.in_flight = self.in_flight, None
            await in_flight

    async def _write(self, prepared: list[_Prepared], offsets: dict[Any, tuple[int, str]]) -> None:
        # The partitions' batches side by side: one packs its Redis commands while Redis runs another's.
        await asyncio.gather(
            *(write_until_done(item.processor, item.batch, self.metrics) for item in prepared)
        )
        await self.consumer.commit(offsets)
        for partition, (offset, _) in offsets.items():
            end = self.consumer.highwater(partition)
            if end is not None:
                self.metrics.consumer_lag.labels(partition.topic, str(partition.partition)).set(
                    max(end - offset, 0)
                )
        # Snapshots only of committed state: a restart resumes at the commit, and replays from its snapshot.
        for item in prepared:
            if item.snapshot is not None:
                await asyncio.to_thread(
                    item.runtime.save_snapshot, item.processor.partition, item.snapshot, offset=item.offset
                )


@dataclass(frozen=True)
class _Prepared:
    """One partition's batch of a poll for one view, with the snapshot of its state taken right after it."""

    runtime: ViewRuntime
    processor: PartitionProcessor
    batch: PreparedBatch
    offset: int
    snapshot: bytes | None
    checkpoints: list[Checkpoint]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtimes: list[ViewRuntime], busy: asyncio.Lock, writes: _Writes) -> None:
        self.runtimes = runtimes
        self.busy = busy
        self.writes = writes

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.busy:  # the poll being prepared and the writes in flight finish and commit first
            await self.writes.wait()
            for partition in revoked:
                for runtime in self.runtimes:
                    if runtime.spec.topic == partition.topic:
                        try:
                            # Everything applied is committed: the next owner starts from here.
                            await asyncio.to_thread(runtime.snapshot_partition, partition.partition)
                        except Exception as error:  # a snapshot only saves replay: never keep stale state
                            log.warning("%s: no snapshot at revocation (%r)", runtime.spec.name, error)
                        finally:
                            runtime.forget(partition.partition)
                with contextlib.suppress(KeyError):  # its next owner reports its lag
                    self.writes.metrics.consumer_lag.remove(partition.topic, str(partition.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


async def run(repo: FeatureRepo, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
    """Consume until SIGTERM or SIGINT, then finish the poll in flight, commit and leave the group."""
    runtimes = view_runtimes(repo, settings, metrics)
    group = f"sluice-{repo.config.project}"
    by_topic: dict[str, list[ViewRuntime]] = {}
    for runtime in runtimes:
        by_topic.setdefault(runtime.spec.topic, []).append(runtime)
    consumer = AIOKafkaConsumer(
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        group_instance_id=settings.instance_id,
        heartbeat_interval_ms=3_000,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
        **aiokafka_kwargs(repo.config.kafka),
    )
    busy = asyncio.Lock()
    writes = _Writes(consumer, metrics)
    consumer.subscribe(list(by_topic), listener=_Rebalance(runtimes, busy, writes))
    stopping = asyncio.Event()
    grace: list[asyncio.TimerHandle] = []
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def stop() -> None:
        # Finish the poll in flight if its sinks take it soon; during an outage, give up on it instead:
        # its offsets are not committed, so the next owner processes it again and nothing is lost.
        if not stopping.is_set():
            stopping.set()
            grace.append(loop.call_later(STOP_GRACE_S, main.cancel))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    await consumer.start()
    log.info("consuming %s as group sluice-%s", ", ".join(by_topic), repo.config.project)
    resets = None
    if repo.config.redis.redis_type == "redis" and runtimes:  # a cluster's nodes restart one at a time
        watch = ResetWatch(client=runtimes[0].writer.client, project=repo.config.project)
        resets = asyncio.create_task(watch_resets(watch, [runtime.spec for runtime in runtimes], metrics))
    try:
        while not stopping.is_set():
            polled = await consumer.getmany(
                timeout_ms=int(settings.batch_window_s * 1000), max_records=settings.batch_size
            )
            if not polled:
                continue
            async with busy:
                prepared = await _prepare(polled, by_topic, kafka=repo.config.kafka, group=group)
                await writes.wait()
                writes.start(prepared, _commits(polled, prepared))
                if sum(map(len, polled.values())) < settings.batch_size:
                    # Caught up: the next poll would be small, and preparing it alongside these writes
                    # only slows them down. Overlap polls only while there is a backlog.
                    await writes.wait()
        await writes.wait()
        for handle in grace:  # committed: the grace period was for the writes, not for the snapshots
            handle.cancel()
        # A clean stop: every applied batch is committed, so the next start replays nothing.
        for runtime in runtimes:
            await asyncio.to_thread(runtime.snapshot_all)
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
        log.warning(
            "stopped %.0f s after the signal with writes still failing; their batches are not committed "
            "and are processed again on restart", STOP_GRACE_S,
        )  # fmt: skip
    finally:
        if resets is not None:
            resets.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), timeout=1.0)


async def _prepare(
    polled: dict[TopicPartition, list[Any]],
    by_topic: dict[str, list[ViewRuntime]],
    *,
    kafka: KafkaConfig,
    group: str,
) -> list[_Prepared]:
    """Apply one poll's records to each view's window state, in a thread; returns what to write, with
    the snapshots due (taken before the next poll changes the state, written once committed) and each
    view's checkpoints after the batch. A partition new to a view first gets its processor, which finds
    its checkpoints in the group's commit of the partition."""
    fresh = [
        (tp.topic, tp.partition)
        for tp, records in polled.items()
        if records and any(tp.partition not in runtime.processors for runtime in by_topic[tp.topic])
    ]
    committed: dict[tuple[str, int], tuple[int, str]] = {}
    if fresh:
        try:
            committed = await asyncio.to_thread(committed_metadata, kafka, group, fresh)
        except KafkaError as error:  # checkpoints only shorten a replay: go on without them
            log.warning("could not read the group's commits for checkpoints (%r)", error)
    prepared = []
    for partition, records in polled.items():
        if not records:
            continue
        for runtime in by_topic[partition.topic]:
            processor = await runtime.processor_async(
                partition.partition,
                records[0].offset,
                committed=committed.get((partition.topic, partition.partition)),
            )
            due = runtime.snapshot_due(partition.partition)
            batch, snapshot = await asyncio.to_thread(_apply, processor, records, due)
            checkpoints = runtime.note_checkpoints(partition.partition, processor.take_checkpoints())
            prepared.append(
                _Prepared(runtime, processor, batch, processor.applied_until, snapshot, checkpoints)
            )
    return prepared


def _commits(
    polled: dict[TopicPartition, list[Any]], prepared: list[_Prepared]
) -> dict[TopicPartition, tuple[int, str]]:
    """Each polled partition's next offset, with its views' checkpoints as the commit's metadata."""
    views: dict[tuple[str, int], dict[str, list[Checkpoint]]] = {}
    for item in prepared:
        key = (item.runtime.spec.topic, item.processor.partition)
        views.setdefault(key, {})[item.runtime.spec.name] = item.checkpoints
    return {
        tp: (records[-1].offset + 1, metadata(views.get((tp.topic, tp.partition), {})))
        for tp, records in polled.items()
        if records
    }


def _apply(
    processor: PartitionProcessor, records: list[Any], snapshot: bool
) -> tuple[PreparedBatch, bytes | None]:
    batch = processor.prepare(records)
    return batch, processor.snapshot() if snapshot else None
