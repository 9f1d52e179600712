"""The default monitor engine: an aiokafka consumer in group ``sluice-monitor-<project>``.

It polls the predictions topic in batches of up to 20,000 records, hands each batch to
``MonitorPipeline.process`` on a thread (so heartbeats keep going), and commits what the pipeline
says is done: never past the oldest event of a window still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiokafka import AIOKafkaConsumer, TopicPartition

from features.config import SluiceConfig
from monitors.worker import MonitorPipeline
from streams.kafka_clients import aiokafka_kwargs

__all__ = ["run"]

log = logging.getLogger("sluice.monitor")


async def run(config: SluiceConfig, pipeline: MonitorPipeline) -> None:
    """Consume until SIGTERM or SIGINT; then commit what is safe, leave the group and close the pipeline."""
    topic = pipeline.topic
    consumer = AIOKafkaConsumer(
        topic,
        group_id=pipeline.group,
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
        pipeline.incidents.start()
        log.info("monitoring %s as group %s", topic, pipeline.group)
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            if batches:
                highwater = {
                    partition.partition: consumer.highwater(partition) for partition in consumer.assignment()
                }
                done = await asyncio.to_thread(
                    pipeline.process,
                    {partition.partition: records for partition, records in batches.items()},
                    highwater=highwater,
                )
                await consumer.commit(
                    {TopicPartition(topic, partition): end for partition, end in done.items()}
                )
            await asyncio.to_thread(pipeline.incidents.tick)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        pipeline.close()
