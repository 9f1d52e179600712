"""Helpers for tests that run the real stream worker against the real broker and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from features.config import KafkaConfig

BOOTSTRAP = os.environ.get("SLUICE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")

DEFINITIONS = """
from datetime import timedelta

from features import (
    Aggregation, Entity, Field, FileSource, Float64, Int64, JsonFormat, KafkaSource, StreamFeatureView,
    ValueType,
)

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)

transactions = KafkaSource(
    name="transactions",
    topic="{topic}",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, amount DOUBLE, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds={delay_s}),
    batch_source=FileSource(name="transactions_history", path="{offline}", timestamp_field="event_timestamp"),
)

# Tumbling 10 s, sliding 30 s every 10 s, and tumbling 60 s.
card_stats = StreamFeatureView(
    name="card_stats",
    source=transactions,
    entities=[card],
    ttl=timedelta(days=1),
    timestamp_field="ts",
    schema=[
        Field(name="card_id", dtype=Int64),
        Field(name="txn_count_10s", dtype=Int64),
        Field(name="amount_sum_30s", dtype=Float64),
        Field(name="amount_mean_30s", dtype=Float64),
        Field(name="amount_stddev_30s", dtype=Float64),
        Field(name="amount_max_1m", dtype=Float64),
        Field(name="amount_last_1m", dtype=Float64),
    ],
    aggregations=[
        Aggregation(
            column="amount", function="count", time_window=timedelta(seconds=10), name="txn_count_10s"
        ),
        Aggregation(column="amount", function="sum", time_window=timedelta(seconds=30),
                    slide_interval=timedelta(seconds=10)),
        Aggregation(column="amount", function="mean", time_window=timedelta(seconds=30),
                    slide_interval=timedelta(seconds=10)),
        Aggregation(column="amount", function="stddev", time_window=timedelta(seconds=30),
                    slide_interval=timedelta(seconds=10)),
        Aggregation(column="amount", function="max", time_window=timedelta(seconds=60)),
        Aggregation(column="amount", function="last", time_window=timedelta(seconds=60)),
    ],
)
"""


def make_repo(
    root: Path, *, project: str, topic: str, partitions: int = 4, delay_s: int = 5, offline: str = "offline"
) -> Path:
    """A feature repo with one stream feature view over ``topic``, its offline data under ``offline`` (a
    path relative to the repo, or an object-storage URI)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: {partitions}\n")
    (root / "definitions.py").write_text(DEFINITIONS.format(topic=topic, delay_s=delay_s, offline=offline))
    return root


def sluice(
    repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "--repo", str(repo), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_worker(
    repo: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``sluice worker`` with ``extra`` arguments and ``env`` on top of this process's environment."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), "worker", "--loglevel", "info", *extra],
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_when_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> str:
    """The body of ``url`` once the process serves it; fails with the end of its log if it exits first
    or never answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


def connection(kafka: KafkaConfig | None) -> dict[str, Any]:
    """kafka-python's connection and security arguments: the plain stack's broker, or ``kafka``'s."""
    return kafka.client_kwargs() if kafka is not None else {"bootstrap_servers": BOOTSTRAP}


def produce(
    topic: str,
    events: Sequence[dict[str, Any] | bytes | None],
    *,
    key: str = "card_id",
    kafka: KafkaConfig | None = None,
) -> None:
    """Produce JSON events (or raw bytes) in order, keyed by entity so an entity stays in one partition."""
    producer = KafkaProducer(**connection(kafka), linger_ms=20, batch_size=1 << 18, max_request_size=4 << 20)
    for event in events:
        if isinstance(event, dict):
            producer.send(topic, key=str(event[key]).encode(), value=orjson.dumps(event))
        else:
            producer.send(topic, key=b"poison", value=event)
    producer.flush()
    producer.close()


def end_offsets(topic: str, *, kafka: KafkaConfig | None = None) -> dict[int, int]:
    consumer = KafkaConsumer(**connection(kafka))
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed(group: str, topic: str, *, kafka: KafkaConfig | None = None) -> dict[int, int]:
    """The group's committed offsets; empty while the broker is still electing the group's coordinator."""
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(**connection(kafka))
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError as error:
        if getattr(error, "retriable", False):
            return {}  # a fresh broker creates __consumer_offsets on the first group lookup
        raise
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def progress(group: str, topic: str, total: int) -> float:
    """The share of the topic's ``total`` records the group has committed."""
    return sum(committed(group, topic).values()) / total


def wait_until_committed(
    group: str,
    topic: str,
    *,
    timeout_s: float = 120,
    workers: Sequence[Any] = (),
    kafka: KafkaConfig | None = None,
) -> None:
    """Wait until the group has committed the end of every partition of the topic."""
    target = end_offsets(topic, kafka=kafka)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.poll() is None, f"a worker exited with {worker.returncode}"
        done = committed(group, topic, kafka=kafka)
        if all(done.get(partition, 0) == end for partition, end in target.items()):
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} committed {committed(group, topic, kafka=kafka)}, expected {target}")


def dead_letters(topic: str) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = KafkaConsumer(
        f"{topic}.dlq", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return [(record.value, dict(record.headers)) for record in consumer]
    finally:
        consumer.close()


def delete_topics(*topics: str, kafka: KafkaConfig | None = None) -> None:
    admin = KafkaAdminClient(**connection(kafka))
    try:
        existing = set(admin.list_topics())
        admin.delete_topics([topic for topic in topics if topic in existing])
    finally:
        admin.close()


def stream_times(
    topic: str, *, key: str = "card_id", time: str = "ts", kafka: KafkaConfig | None = None
) -> dict[Any, int]:
    """Per entity, the stream time (newest event time, µs) of the partition its events are in, read
    back from the topic with kafka-python. Messages that are not events are skipped."""
    from datetime import UTC, datetime

    consumer = KafkaConsumer(
        topic, **connection(kafka), auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    newest: dict[int, int] = {}
    partition_of: dict[Any, int] = {}
    try:
        for record in consumer:
            try:
                event = orjson.loads(record.value)
                moment = datetime.fromisoformat(event[time])
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                continue
            if not isinstance(event, dict) or event.get(key) is None:
                continue
            micros = (
                moment.replace(tzinfo=moment.tzinfo or UTC) - datetime(1970, 1, 1, tzinfo=UTC)
            ) // timedelta(microseconds=1)
            partition_of[event[key]] = record.partition
            newest[record.partition] = max(newest.get(record.partition, micros), micros)
    finally:
        consumer.close()
    return {entity: newest[partition] for entity, partition in partition_of.items()}


def partition_processor(spec: Any, redis_client: Any, config: Any, metrics: Any) -> Any:
    """Partition 0's processor of the view, with the real sinks (Redis, Parquet, the dead-letter topic)."""
    from offline_store.dataset import OfflineDataset
    from online_store.writer import OnlineWriter
    from streams import producer
    from streams.dead_letters import DeadLetterSink
    from streams.processor import PartitionProcessor

    return PartitionProcessor(
        spec=spec,
        partition=0,
        dataset=OfflineDataset(spec=spec),
        writer=OnlineWriter(client=redis_client, spec=spec),
        dead_letters=DeadLetterSink(
            producer=producer(config.kafka), topic=spec.dlq_topic, feature_view=spec.name
        ),
        metrics=metrics,
    )


def assert_every_offset_in_exactly_one_batch_file(repo: Path, topic: str) -> None:
    """Every record of the topic is in exactly one offline batch file of view ``card_stats``: none lost,
    none written twice."""
    from features.repo import load_repo
    from offline_store.dataset import OfflineDataset

    dataset = OfflineDataset(spec=load_repo(repo).spec("card_stats"))
    for partition, end in end_offsets(topic).items():
        # A batch spanning midnight writes one file per date with the same offsets: count it once.
        ranges = sorted(
            {(file.first_offset, file.last_offset) for file in dataset.batch_files(partition=partition)}
        )
        covered = 0
        for first, last in ranges:
            assert first == covered, (
                f"partition {partition}: offsets {covered}..{first - 1} missing or repeated"
            )
            covered = last + 1
        assert covered == end, f"partition {partition}: batch files end at {covered}, the partition at {end}"
