"""The default monitor engine: an aiokafka consumer in group ``sluice-monitor-<project>``.

It polls the predictions topic in batches of up to 20,000 records, hands each batch to
``MonitorPipeline.process`` on a thread (so heartbeats keep going), and commits what the pipeline
says is done: never past the oldest event of a window still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from features.config import SluiceConfig
from monitors.runtime.pipeline import MonitorPipeline
from streams.kafka_clients import aiokafka_kwargs

__all__ = ["run"]

log = logging.getLogger("sluice.monitor")


async def run(config: SluiceConfig, pipeline: MonitorPipeline) -> None:
    """Consume until SIGTERM or SIGINT; then commit what is safe, leave the group and close the pipeline."""
    topic = pipeline.topic
    consumer = AIOKafkaConsumer(
        group_id=pipeline.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        # Large fetches: each poll costs the monitor a few store round trips, whatever its size.
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
        # Partitions added to the topic show within this, and rebalance the group (Monitor.grow).
        metadata_max_age_ms=30_000,
        **aiokafka_kwargs(config.kafka),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await consumer.start()
        consumer.subscribe([topic], listener=_Forget(pipeline, consumer))
        pipeline.incidents.start()
        # What start-up made (modules, the profiles, the stores) lives as long as the process: keep it
        # out of the collector's full passes, which the per-event objects trigger over and over.
        gc.freeze()
        log.info("monitoring %s as group %s", topic, pipeline.group)
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            if batches:
                assigned = consumer.assignment()
                highwater = {partition.partition: consumer.highwater(partition) for partition in assigned}
                positions = {
                    partition.partition: await consumer.position(partition) for partition in assigned
                }
                done = await asyncio.to_thread(
                    pipeline.process,
                    {partition.partition: records for partition, records in batches.items()},
                    highwater=highwater,
                    positions=positions,
                )
                await consumer.commit(
                    {TopicPartition(topic, partition): end for partition, end in done.items()}
                )
            else:
                await asyncio.to_thread(pipeline.tick)
            await asyncio.to_thread(pipeline.incidents.tick)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        pipeline.close()


class _Forget(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the pipeline which partitions it lost, before they go to another monitor, and how many the
    topic has (partitions added to a subscribed topic cause a rebalance); logs the new ones."""

    def __init__(self, pipeline: MonitorPipeline, consumer: AIOKafkaConsumer) -> None:
        self.pipeline = pipeline
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await asyncio.to_thread(self.pipeline.revoked, [partition.partition for partition in revoked])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("reading partitions %s", ",".join(str(p.partition) for p in sorted(assigned)) or "none")
        partitions = self.consumer.partitions_for_topic(self.pipeline.topic)
        if partitions:
            await asyncio.to_thread(self.pipeline.assigned, len(partitions))
