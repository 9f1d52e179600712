"""The faust-streaming monitor engine: one agent over the predictions topic.

Use it to run the monitor inside a faust app of your own (``add_monitor``), or with
``sluice monitor --engine faust``. The agent takes batches with ``noack_take`` and hands them to
``MonitorPipeline.process`` on a thread. faust commits the highest offset below which every record
is acknowledged, and acknowledges per record; so the agent holds each record until the pipeline
says it is done, that is, until its window has closed and been reported, and acknowledges the held
records of a partition in offset order. This engine therefore keeps the open windows' records in
memory (the aiokafka engine keeps only their offsets), and faust's per-event machinery caps it at a
few thousand events per second; ``monitors.runtime.kafka_engine`` is the default.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import faust

from features.config import SluiceConfig
from monitors.runtime.pipeline import MonitorPipeline
from streams.faust_worker import new_app

__all__ = ["add_monitor", "run"]


def run(config: SluiceConfig, pipeline: MonitorPipeline, *, loglevel: str = "warn") -> None:
    """Run a faust worker with the monitor agent until it is stopped (SIGTERM or SIGINT); then close the
    pipeline."""
    try:
        app = new_app(pipeline.group, config.kafka, datadir=config.state_dir / "faust-monitor")
        add_monitor(app, pipeline)
        faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    finally:
        pipeline.close()


def add_monitor(
    app: faust.App, pipeline: MonitorPipeline, *, batch_size: int = 20_000, batch_window_s: float = 0.2
) -> None:
    """Add the monitor's agent, and a task that runs its alert delivery and jobs, to a faust app."""
    topic = app.topic(pipeline.topic, value_serializer="raw", key_serializer="raw")
    held: dict[int, deque[Any]] = {}
    """Per partition, the events not yet acknowledged, in offset order."""

    @app.agent(topic, name="sluice.monitor")
    async def monitor(stream: Any) -> None:
        async for events in stream.noack_take(batch_size, within=batch_window_s):
            batches: dict[int, list[Any]] = {}
            for event in events:
                batches.setdefault(event.message.partition, []).append(event.message)
                held.setdefault(event.message.partition, deque()).append(event)
            for messages in batches.values():
                messages.sort(key=lambda message: message.offset)
            highwater = {
                partition.partition: app.consumer.highwater(partition)
                for partition in app.consumer.assignment()
                if partition.topic == pipeline.topic
            }
            done = await asyncio.to_thread(pipeline.process, batches, highwater=highwater)
            for partition, end in done.items():
                waiting = held[partition]
                while waiting and waiting[0].message.offset < end:
                    await stream.ack(waiting.popleft())

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: faust.App, revoked: set[Any], **_: Any) -> None:
        # Their records will be read again by whoever gets the partitions.
        lost = [partition.partition for partition in revoked if partition.topic == pipeline.topic]
        for partition in lost:
            held.pop(partition, None)
        await asyncio.to_thread(pipeline.revoked, lost)

    @app.task  # type: ignore[untyped-decorator]
    async def incidents() -> None:
        pipeline.incidents.start()
        while True:
            await asyncio.to_thread(pipeline.tick)
            await asyncio.to_thread(pipeline.incidents.tick)
            await asyncio.sleep(0.2)
