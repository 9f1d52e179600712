"""The stream worker: a faust-streaming app with one agent per streamed feature view.

Each agent takes batches of raw records with ``noack_take`` and acknowledges them only after the
batch's dead letters, Parquet file and Redis rows are all written, so faust commits no offset
ahead of both sinks. A sink failure is retried with backoff, never skipped. Workers that share the
project's consumer group split the partitions; a worker that gains a partition rebuilds its window
state by replaying that partition up to the committed offset (see ``streams.processor``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
import redis

from features.config import KafkaConfig
from features.repo import FeatureRepo
from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from online_store.writer import OnlineWriter
from streams.dead_letters import DeadLetterSink, SourceRecord
from streams.kafka_clients import consumer, producer
from streams.metrics import WorkerMetrics
from streams.processor import PartitionProcessor

__all__ = ["WorkerSettings", "build_app"]

log = logging.getLogger("sluice.worker")


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """How a stream worker batches and where it reports."""

    batch_size: int = 5000
    """The most records in one batch."""
    batch_window_s: float = 0.1
    """How long a batch waits to fill up: the floor of freshness."""
    max_message_bytes: int = 1 << 20
    """Larger messages go to the dead-letter topic as oversized."""
    commit_interval_s: float = 1.0
    """How often faust commits acknowledged offsets."""
    metrics_port: int = 0
    """Serve Prometheus metrics on 127.0.0.1:<port>; 0 turns it off."""
    views: tuple[str, ...] = ()
    """Only these feature views; all streamed views when empty."""


def build_app(
    repo: FeatureRepo, settings: WorkerSettings, *, metrics: WorkerMetrics | None = None
) -> faust.App:
    """The faust app for a repo: consumer group ``sluice-<project>``, one agent per streamed view."""
    config = repo.config
    metrics = metrics or WorkerMetrics()
    app = faust.App(
        f"sluice-{config.project}",
        broker=[f"kafka://{server}" for server in config.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(config.kafka),
        store="memory://",
        datadir=str(config.state_dir / "faust"),
        web_enabled=False,
        value_serializer="raw",
        key_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        # A worker killed without leaving the group holds its partitions until the session times out.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        topic_disable_leader=True,
        producer_max_request_size=settings.max_message_bytes * 2,
        consumer_max_fetch_size=max(settings.max_message_bytes * 2, 4 << 20),
    )
    specs = [spec for spec in repo.specs if not settings.views or spec.name in settings.views]
    unknown = set(settings.views) - {spec.name for spec in repo.specs}
    if unknown:
        known = ", ".join(spec.name for spec in repo.specs)
        raise ValueError(
            f"no streamed feature view named {', '.join(sorted(unknown))}; the repo has: {known}"
        )
    redis_client = redis.Redis.from_url(config.redis.url, **config.redis.client_kwargs())
    dead_letter_producer = producer(config.kafka, linger_ms=20)
    for spec in specs:
        _add_agent(app, spec, config.kafka, redis_client, dead_letter_producer, metrics, settings)
    return app


def _add_agent(
    app: faust.App,
    spec: FeatureViewSpec,
    kafka: KafkaConfig,
    redis_client: redis.Redis,
    dead_letter_producer: Any,
    metrics: WorkerMetrics,
    settings: WorkerSettings,
) -> None:
    topic = app.topic(spec.topic, value_serializer="raw", key_serializer="raw")
    dataset = OfflineDataset(spec=spec)
    writer = OnlineWriter(client=redis_client, spec=spec)
    dead_letters = DeadLetterSink(producer=dead_letter_producer, topic=spec.dlq_topic, feature_view=spec.name)
    processors: dict[int, PartitionProcessor] = {}

    def new_processor(partition: int, first_offset: int) -> PartitionProcessor:
        processor = PartitionProcessor(
            spec=spec,
            partition=partition,
            dataset=dataset,
            writer=writer,
            dead_letters=dead_letters,
            metrics=metrics,
            max_message_bytes=settings.max_message_bytes,
        )
        started = time.perf_counter()
        replayed = processor.start(
            first_offset=first_offset, history=_history(kafka, spec.topic, partition, first_offset)
        )
        log.info(
            "%s partition %d: rebuilt window state from %d records in %.2f s; resuming at offset %d",
            spec.name, partition, replayed, time.perf_counter() - started, first_offset,
        )  # fmt: skip
        return processor

    @app.agent(topic, name=f"sluice.{spec.name}")
    async def agent(stream: Any) -> None:
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_window_s):
            by_partition: dict[int, list[SourceRecord]] = {}
            for event in events:
                message = event.message
                by_partition.setdefault(message.partition, []).append(
                    SourceRecord(
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=message.key,
                        value=message.value,
                    )
                )
            for partition, records in by_partition.items():
                records.sort(key=lambda record: record.offset)
                processor = processors.get(partition)
                if processor is None:
                    processor = await asyncio.to_thread(new_processor, partition, records[0].offset)
                    processors[partition] = processor
                await _process_until_done(processor, records, metrics)
            for event in events:
                await stream.ack(event)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: faust.App, revoked: set[Any], **_: Any) -> None:
        for partition in revoked:
            if partition.topic == spec.topic:
                processors.pop(partition.partition, None)


async def _process_until_done(
    processor: PartitionProcessor, records: list[SourceRecord], metrics: WorkerMetrics
) -> None:
    """Process one partition's batch, retrying with backoff until its sinks accept it."""
    delay = 0.2
    while True:
        try:
            await asyncio.to_thread(processor.process, records)
            return
        except (redis.RedisError, OSError) as error:
            metrics.sink_failures.labels(processor.spec.name, type(error).__name__).inc()
            log.warning(
                "%s: writing a batch failed (%s); retrying in %.1f s", processor.spec.name, error, delay
            )
        except Exception as error:  # a Kafka producer error on the dead-letter topic, among others
            metrics.sink_failures.labels(processor.spec.name, type(error).__name__).inc()
            log.warning("%s: batch failed (%r); retrying in %.1f s", processor.spec.name, error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def _history(kafka: KafkaConfig, topic: str, partition: int, end_offset: int) -> Iterator[SourceRecord]:
    """The records of one partition before ``end_offset``, from the oldest the broker still has."""
    if end_offset <= 0:
        return
    from kafka import TopicPartition

    reader = consumer(kafka, group_id=None, fetch_max_bytes=32 << 20, max_partition_fetch_bytes=16 << 20)
    try:
        assigned = TopicPartition(topic, partition)
        reader.assign([assigned])
        reader.seek_to_beginning(assigned)
        while reader.position(assigned) < end_offset:
            batches = reader.poll(timeout_ms=1000, max_records=50_000)
            for record in batches.get(assigned, []):
                if record.offset >= end_offset:
                    return
                yield SourceRecord(
                    topic=topic, partition=partition, offset=record.offset, key=record.key, value=record.value
                )
    finally:
        reader.close()


def _credentials(kafka: KafkaConfig) -> Any:
    """faust's broker credentials for the configured Kafka security settings."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    import ssl

    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password,
        ssl_context=context,
        mechanism=kafka.sasl_mechanism or "PLAIN",
    )
