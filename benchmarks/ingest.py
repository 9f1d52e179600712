"""Ingest: one stream worker, Kafka into Redis and Parquet, against Feast's push path on the same events.

Workload (issue #3): one StreamFeatureView with 3 aggregations (count, sum, mean) over 2 windows
(10 min tumbling, 1 h sliding every 10 min), 100k distinct entities, both sinks on, one worker.

1. Throughput: a backlog of events is produced first; then one ``sluice worker`` process drains it.
   Sustained events/s is measured between 10% and 100% of the backlog committed, so start-up and
   the consumer group join are not counted.
2. Freshness: a producer paces events at a fixed rate; for a sample of events, the time from
   ``send`` until Redis holds a row for that entity as of that event is measured.
3. Competitor: the glue people write today, on the same events: a kafka-python consumer, pandas
   for the latest row per entity, and Feast's ``FeatureStore.write_to_online_store`` (online only,
   no windows, no offline write), timed over the same backlog.

``--udf python|pandas`` defines the same view with a udf in that mode (the amount in cents, as the
column the aggregations read), and ``--compare-udfs`` runs only the throughput part for no udf, then
each mode, on the same backlog, for the overhead of a udf side by side. After each throughput run,
one entity's offline row is checked against its windows recomputed from the backlog.

``--redis-type redis_cluster`` (with ``SLUICE_REDIS_URL`` or ``--redis-url`` naming one of its nodes,
``redis://127.0.0.1:7000/0`` for the local stack's) runs all of it on a Redis Cluster: the worker and
Feast's push both write to the same cluster.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.config import RedisConfig  # noqa: E402
from features.repo import load_repo  # noqa: E402
from offline_store.dataset import OfflineDataset  # noqa: E402
from online_store.connection import OnlineRedis  # noqa: E402
from online_store.connection import client as online_redis  # noqa: E402
from online_store.layout import decode_timestamp, entity_key, timestamp_field  # noqa: E402

BOOTSTRAP = os.environ.get("SLUICE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("SLUICE_REDIS_URL", "redis://127.0.0.1:6379/0")

SOURCE = """
from datetime import timedelta
from features import (
    Aggregation, Entity, Field, FileSource, Float64, Int64, JsonFormat, KafkaSource, StreamFeatureView,
    ValueType,
)
card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
transactions = KafkaSource(
    name="transactions", topic="{topic}", timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, amount DOUBLE, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds=30),
    batch_source=FileSource(name="history", path="offline", timestamp_field="event_timestamp"),
)
TEN, HOUR = timedelta(minutes=10), timedelta(hours=1)
"""

# The view's arguments, over the column its aggregations read: ``amount`` from the message, or
# ``amount_cents`` from the udf.
VIEW_ARGUMENTS = """
    entities=[card], ttl=timedelta(days=1), source=transactions, timestamp_field="ts",
    schema=[Field(name="card_id", dtype=Int64)]
    + [Field(name=f"{column}_{{f}}_{{w}}", dtype=Int64 if f == "count" else Float64)
       for f in ("count", "sum", "mean") for w in ("10m", "1h")],
    aggregations=[Aggregation(column="{column}", function=f, time_window=TEN)
                  for f in ("count", "sum", "mean")]
    + [Aggregation(column="{column}", function=f, time_window=HOUR, slide_interval=TEN)
       for f in ("count", "sum", "mean")],
"""

PLAIN_VIEW = 'card_stats = StreamFeatureView(name="card_stats",{arguments})\n'

# The worker runs the body from its source alone, with ``pd`` and ``np`` at hand.
UDF_VIEW = """
from feast.stream_feature_view import stream_feature_view
@stream_feature_view(mode="{mode}",{arguments})
def card_stats(events):
{body}
"""

# The same transformation in both modes: the amount in cents, as a new column the aggregations read.
UDF_BODIES = {
    "python": '    return {"amount_cents": [None if a is None else a * 100 for a in events["amount"]]}',
    "pandas": '    return pd.DataFrame({"amount_cents": events["amount"] * 100})',
}
UDF_MODES = ("none", *UDF_BODIES)
UDF_SCALE = 100.0
"""The udf's column over the message's amount."""


def aggregated_column(udf: str) -> str:
    return "amount" if udf == "none" else "amount_cents"


def definitions(topic: str, udf: str) -> str:
    arguments = VIEW_ARGUMENTS.format(column=aggregated_column(udf))
    view = (
        PLAIN_VIEW.format(arguments=arguments)
        if udf == "none"
        else UDF_VIEW.format(mode=udf, arguments=arguments, body=UDF_BODIES[udf])
    )
    return SOURCE.format(topic=topic) + view


def events(count: int, *, entities: int, start_us: int, step_us: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "card_id": rng.randrange(entities),
            "amount": round(rng.lognormvariate(3, 1), 2),
            "ts": (start_us + index * step_us) / 1e6,
        }
        for index in range(count)
    ]


def produce(topic: str, batch: list[dict[str, object]]) -> None:
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20, batch_size=1 << 18)
    for event in batch:
        producer.send(topic, key=str(event["card_id"]).encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()


def committed_total(admin: KafkaAdminClient, group: str, topic: str) -> int:
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


def sluice(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "--repo", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
    )


def start_worker(repo: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), "worker"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def measure_throughput(repo: Path, topic: str, group: str, total: int, log: Path) -> float:
    # One admin client for the whole measurement: a new one per poll cost about 9 ms of CPU, taken from
    # the worker on the same two cores 20 times a second.
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    worker = start_worker(repo, log)
    try:
        marks: dict[float, float] = {}
        deadline = time.monotonic() + 900
        while len(marks) < 2 and time.monotonic() < deadline:
            done = committed_total(admin, group, topic) / total
            for mark in (0.1, 1.0):
                if done >= mark and mark not in marks:
                    marks[mark] = time.perf_counter()
            time.sleep(0.05)
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {log}")
        return 0.9 * total / (marks[1.0] - marks[0.1])
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        admin.close()


def measure_freshness(
    repo: Path, topic: str, *, rate: int, seconds: int, entities: int, log: Path, client: OnlineRedis
) -> list[float]:
    """Pace ``rate`` events/s for ``seconds``; sample one event in 50 and time it into Redis."""
    spec = load_repo(repo).spec("card_stats")
    ts_field = timestamp_field(spec.name)
    worker = start_worker(repo, log)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=1)
    # Start the clock once the worker has joined the group and rebuilt its state: a probe event on
    # every partition is readable in Redis.
    probe_us = int(datetime.now(UTC).timestamp() * 1e6)
    probes = [entities + index for index in range(64)]
    for card in probes:
        producer.send(
            topic,
            key=str(card).encode(),
            value=orjson.dumps({"card_id": card, "amount": 0.0, "ts": probe_us / 1e6}),
        )
    producer.flush()
    ready_by = time.monotonic() + 300
    while any(
        client.hget(entity_key({"card_id": card}, spec.join_keys, spec.project), ts_field) is None
        for card in probes
    ):
        if time.monotonic() > ready_by:
            raise RuntimeError(f"the worker did not become ready; see {log}")
        time.sleep(0.2)
    rng = random.Random(11)
    pending: dict[bytes, tuple[int, float]] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() or pending:
            with lock:
                items = list(pending.items())
            if not items:
                time.sleep(0.001)
                continue
            pipeline = client.pipeline(transaction=False)
            for key, _ in items:
                pipeline.hget(key, ts_field)
            stored = pipeline.execute()
            now = time.perf_counter()
            with lock:
                for (key, (event_us, sent)), raw in zip(items, stored, strict=True):
                    moment = decode_timestamp(raw)
                    if moment is not None and int(moment.timestamp() * 1e6) >= event_us:
                        latencies.append((now - sent) * 1000)
                        pending.pop(key, None)
            if stop.is_set() and time.perf_counter() > deadline:
                return
            time.sleep(0.001)

    deadline = time.perf_counter() + seconds + 30
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    try:
        for index in range(rate * seconds):
            target = start + index / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            card = rng.randrange(entities)
            event_us = now_us + int((time.perf_counter() - start) * 1e6)
            event = {"card_id": card, "amount": 1.0, "ts": event_us / 1e6}
            sampled = index % 50 == 0
            key = entity_key({"card_id": card}, spec.join_keys, spec.project)
            with lock:
                if sampled and key not in pending:
                    pending[key] = (event_us, time.perf_counter())
            producer.send(topic, key=str(card).encode(), value=orjson.dumps(event))
        producer.flush()
        stop.set()
        poller.join(timeout=40)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return latencies


def feast_push_baseline(repo: Path, topic: str, total: int, *, udf: str) -> float:
    """kafka-python + pandas + Feast's write_to_online_store, over the same backlog (online only); with a
    udf, the glue computes its column in pandas."""
    import pandas as pd
    from kafka import TopicPartition

    from features.registry import feature_store

    store = feature_store(load_repo(repo))
    column = aggregated_column(udf)
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, max_poll_records=5000)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = 0
    started = time.perf_counter()
    while seen < total:
        batch = [record.value for records in consumer.poll(timeout_ms=1000).values() for record in records]
        if not batch:
            continue
        seen += len(batch)
        frame = pd.DataFrame([json.loads(value) for value in batch])
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        if udf != "none":
            frame[column] = frame["amount"] * UDF_SCALE
        grouped = frame.groupby("card_id")[column]
        latest = pd.DataFrame(
            {
                "card_id": grouped.size().index,
                "event_timestamp": frame.groupby("card_id")["ts"].max().to_numpy(),
                **{f"{column}_count_{window}": grouped.size().to_numpy() for window in ("10m", "1h")},
                **{f"{column}_sum_{window}": grouped.sum().to_numpy() for window in ("10m", "1h")},
                **{f"{column}_mean_{window}": grouped.mean().to_numpy() for window in ("10m", "1h")},
            }
        )
        store.write_to_online_store("card_stats", latest)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


def check_aggregates(repo: Path, backlog: list[dict[str, object]], udf: str) -> int:
    """Fail unless the busiest entity's offline row as of its last event holds its windows recomputed
    here from the raw events (with a udf: sums and means of 100x the amounts). Returns the entity."""
    spec = load_repo(repo).spec("card_stats")
    scale = 1.0 if udf == "none" else UDF_SCALE
    card = Counter(event["card_id"] for event in backlog).most_common(1)[0][0]
    raw = [
        (round(float(event["ts"]) * 1e6), float(event["amount"]))
        for event in backlog
        if event["card_id"] == card
    ]
    at = max(moment for moment, _ in raw)
    epoch, micro = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
    rows = sorted(
        (
            row
            for row in OfflineDataset(spec=spec).read().to_pylist()
            if row["card_id"] == card and (row["event_timestamp"] - epoch) // micro <= at
        ),
        key=lambda row: (row["event_timestamp"], row["source_offset"]),
    )
    if not rows:
        raise RuntimeError(f"udf {udf}: the offline store has no row of card {card}")
    for aggregation in spec.aggregations:
        end = (at // (aggregation.slide // micro) + 1) * (aggregation.slide // micro)
        values = [amount * scale for moment, amount in raw if end - aggregation.window // micro <= moment]
        expected = {"count": len(values), "sum": sum(values), "mean": sum(values) / len(values)}
        got = rows[-1][aggregation.feature]
        if got is None or not math.isclose(got, expected[aggregation.function], rel_tol=1e-9):
            raise RuntimeError(
                f"udf {udf}: card {card}'s {aggregation.feature} is {got}, but its events make it "
                f"{expected[aggregation.function]}: the worker did not aggregate what the udf returns"
            )
    return card


def prepare_repo(
    root: Path, *, topic: str, project: str, partitions: int, udf: str, online: RedisConfig
) -> Path:
    root.mkdir()
    (root / "sluice.yaml").write_text(
        f"project: {project}\ntopics:\n  partitions: {partitions}\n"
        f"redis:\n  redis_type: {online.redis_type}\n  url: {online.url}\n"
    )
    (root / "definitions.py").write_text(definitions(topic, udf))
    sluice(root, "apply")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--feast-events", type=int, default=50_000)
    parser.add_argument("--udf", choices=UDF_MODES, default="none", help="the view's udf mode")
    parser.add_argument(
        "--compare-udfs",
        action="store_true",
        help="throughput only, for each udf mode in turn on the same backlog (ignores --udf)",
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--redis-type", choices=["redis", "redis_cluster"], default="redis")
    args = parser.parse_args()
    online = RedisConfig(redis_type=args.redis_type, url=args.redis_url)
    client = online_redis(online)

    run = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="sluice-ingest-"))
    topic = f"bench.ingest.{run}"
    # One project (consumer group, Redis rows, Parquet) per udf mode, all over the same topic.
    projects = {udf: f"bench_ingest_{run}_{udf}" for udf in (UDF_MODES if args.compare_udfs else (args.udf,))}
    try:
        repos = {
            udf: prepare_repo(
                workdir / f"repo-{udf}",
                topic=topic,
                project=project,
                partitions=args.partitions,
                udf=udf,
                online=online,
            )
            for udf, project in projects.items()
        }
        start_us = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6)
        backlog = events(args.events, entities=args.entities, start_us=start_us, step_us=2_000, seed=1)
        produce(topic, backlog)
        rates: dict[str, float] = {}
        for udf, project in projects.items():
            rates[udf] = measure_throughput(
                repos[udf], topic, f"sluice-{project}", args.events, workdir / f"worker-{udf}.log"
            )
            card = check_aggregates(repos[udf], backlog, udf)
            print(
                f"sluice worker, udf {udf}: {rates[udf]:,.0f} events/s over {args.events:,} events "
                f"(card {card}'s windows checked)",
                file=sys.stderr,
            )
        if args.compare_udfs:
            result: dict[str, object] = {
                "udf_events_per_s": {udf: round(rate) for udf, rate in rates.items()},
                "udf_ratio_to_none": {udf: round(rate / rates["none"], 3) for udf, rate in rates.items()},
            }
        else:
            repo = repos[args.udf]
            feast_events_per_s = feast_push_baseline(repo, topic, args.feast_events, udf=args.udf)
            print(f"kafka-python + pandas + Feast push: {feast_events_per_s:,.0f} events/s", file=sys.stderr)

            latencies = measure_freshness(
                repo,
                topic,
                rate=args.rate,
                seconds=args.seconds,
                entities=args.entities,
                log=workdir / "fresh.log",
                client=client,
            )
            p50, p99 = (
                (float(np.percentile(latencies, q)) for q in (50, 99)) if latencies else (float("nan"),) * 2
            )
            print(
                f"freshness at {args.rate}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(latencies)} samples)",
                file=sys.stderr,
            )
            sluice(repo, "verify")
            result = {
                "events_per_s": round(rates[args.udf]),
                "freshness_p50_ms": round(p50, 1),
                "freshness_p99_ms": round(p99, 1),
                "freshness_samples": len(latencies),
                "freshness_rate_per_s": args.rate,
                "feast_push_events_per_s": round(feast_events_per_s),
            }
    finally:
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        admin.delete_topics([topic, f"{topic}.dlq"])
        admin.close()
        for project in projects.values():
            for key in client.scan_iter(match=f"*{project}", count=10_000):
                client.delete(key)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                **result,
                **({"udfs": list(projects)} if args.compare_udfs else {"udf": args.udf}),
                "events": args.events,
                "entities": args.entities,
                "partitions": args.partitions,
                "redis_type": args.redis_type,
            }
        )
    )


if __name__ == "__main__":
    main()
