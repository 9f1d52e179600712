"""The faust-streaming engine: one faust agent per streamed feature view.

Use it to run sluice's views inside a faust app of your own (``add_agents``), or with
``sluice worker --engine faust``. Each agent takes batches with ``noack_take`` and acknowledges
them only after the batch's dead letters, Parquet file and Redis rows are written, so faust
commits no offset ahead of both sinks (``take()`` would acknowledge a batch even when the agent
fails on it). faust's per-event machinery caps this engine at a few thousand events per second
per worker on a 2-core machine; ``streams.kafka_worker`` is the fast default.

State snapshots (``streams.snapshots``) are taken right after a batch is applied, when one is due, and
written once the batch is acknowledged and faust has committed it; and at a revocation. A snapshot
stands for the offset it was taken at: a restart uses only one before the group's committed offset, so
one written ahead of a commit that never came is passed over for the older one kept beside it. faust
commits no metadata, so this engine leaves no checkpoints (``streams.checkpoints``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import faust

from features.config import KafkaConfig
from features.repo import FeatureRepo
from streams.dead_letters import KafkaRecord
from streams.metrics import WorkerMetrics
from streams.transform import TransformBroken
from streams.worker import ViewRuntime, WorkerSettings, view_runtimes, write_until_done

__all__ = ["add_agents", "build_app", "new_app"]

log = logging.getLogger("sluice.worker")


def build_app(
    repo: FeatureRepo, settings: WorkerSettings, *, metrics: WorkerMetrics | None = None
) -> faust.App:
    """A faust app for the repo: consumer group ``sluice-<project>``, one agent per streamed view."""
    config = repo.config
    app = new_app(
        f"sluice-{config.project}",
        config.kafka,
        datadir=config.state_dir / "faust",
        producer_max_request_size=settings.max_message_bytes * 2,
        consumer_max_fetch_size=max(settings.max_message_bytes * 2, 4 << 20),
    )
    add_agents(app, view_runtimes(repo, settings, metrics or WorkerMetrics()), settings)
    return app


def new_app(group: str, kafka: KafkaConfig, *, datadir: Path, **options: Any) -> faust.App:
    """A faust app in consumer group ``group`` as sluice's engines run it: raw bytes in and out, no web
    server, in-memory tables, reading from the earliest offset, leaving a group soon after a crash."""
    return faust.App(
        group,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(kafka),
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        value_serializer="raw",
        key_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A worker killed without leaving the group holds its partitions until the session times out.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        topic_disable_leader=True,
        # Shutting down, do not wait for the batch in flight: during an outage its write retries
        # forever, and SIGTERM must stop the worker. It is not acked, so its records come again.
        stream_wait_empty=False,
        **options,
    )


def add_agents(app: faust.App, runtimes: list[ViewRuntime], settings: WorkerSettings) -> None:
    """Add one agent per view to an existing faust app."""
    for runtime in runtimes:
        _add_agent(app, runtime, settings)


def _add_agent(app: faust.App, runtime: ViewRuntime, settings: WorkerSettings) -> None:
    topic = app.topic(runtime.spec.topic, value_serializer="raw", key_serializer="raw")

    @app.agent(topic, name=f"sluice.{runtime.spec.name}")
    async def agent(stream: Any) -> None:

        async for events in stream.noack_take(settings.batch_size, within=settings.batch_window_s):
            by_partition: dict[int, list[KafkaRecord]] = {}
            for event in events:
                record = event.message
                by_partition.setdefault(record.partition, []).append(record)
            snapshots: list[tuple[int, bytes, int]] = []
            for partition, records in by_partition.items():
                records.sort(key=lambda record: record.offset)
                processor = await runtime.processor_async(partition, records[0].offset)
                try:
                    batch = await asyncio.to_thread(processor.prepare, records)
                except TransformBroken as error:
                    await app.crash(error)  # the worker stops and `sluice worker` says why
                    return
                if runtime.snapshot_due(partition):
                    taken = await asyncio.to_thread(processor.snapshot)
                    snapshots.append((partition, taken, processor.applied_until))
                await write_until_done(processor, batch, runtime.metrics)
            for event in events:
                await stream.ack(event)
            if snapshots:
                await app.consumer.commit()
                for partition, taken, offset in snapshots:
                    await asyncio.to_thread(runtime.save_snapshot, partition, taken, offset=offset)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: faust.App, revoked: set[Any], **_: Any) -> None:
        for partition in revoked:
            if partition.topic == runtime.spec.topic:
                try:  # what the agent acknowledged, for the next owner (used if faust committed it)
                    await asyncio.to_thread(runtime.snapshot_partition, partition.partition)
                except Exception as error:  # a snapshot only saves replay: never keep stale state
                    log.warning("%s: no snapshot at revocation (%r)", runtime.spec.name, error)
                finally:
                    runtime.forget(partition.partition)


def _credentials(kafka: KafkaConfig) -> Any:
    """faust's broker credentials for the configured Kafka security settings."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    from streams.kafka_clients import ssl_context

    context = ssl_context(kafka)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password,
        ssl_context=context,
        mechanism=kafka.sasl_mechanism or "PLAIN",
    )
