"""Training sets equal what serving returned: the real worker, then labels at random times, checked
row for row against a brute-force recomputation from the raw events, at two batch sizes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from kafka import KafkaConsumer

from features.repo import load_repo
from offline_store import get_historical_features
from online_store.layout import decode_value, entity_key, feature_field
from tests.reference import value_at
from tests.streaming import (
    BOOTSTRAP,
    delete_topics,
    produce,
    sluice,
    start_worker,
    stop,
    wait_until_committed,
)

pytestmark = pytest.mark.stack

BASE = datetime(2026, 2, 1, tzinfo=UTC)
MICROS = 1_000_000

DEFINITIONS = """
from datetime import timedelta

from features import (
    Aggregation, Entity, Field, FileSource, Float64, Int64, JsonFormat, KafkaSource, StreamFeatureView,
    ValueType,
)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)

clicks = KafkaSource(
    name="clicks",
    topic="{topic}",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="user_id BIGINT, amount DOUBLE, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds=5),
    batch_source=FileSource(name="clicks_history", path="offline", timestamp_field="event_timestamp"),
)

# A 10-minute count and sum, tumbling, and sliding by 1 minute.
user_stats = StreamFeatureView(
    name="user_stats",
    source=clicks,
    entities=[user],
    timestamp_field="ts",
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="count_tumbling", dtype=Int64),
        Field(name="sum_tumbling", dtype=Float64),
        Field(name="count_sliding", dtype=Int64),
        Field(name="sum_sliding", dtype=Float64),
    ],
    aggregations=[
        Aggregation(column="amount", function="count", time_window=timedelta(minutes=10),
                    name="count_tumbling"),
        Aggregation(column="amount", function="sum", time_window=timedelta(minutes=10),
                    name="sum_tumbling"),
        Aggregation(column="amount", function="count", time_window=timedelta(minutes=10),
                    slide_interval=timedelta(minutes=1), name="count_sliding"),
        Aggregation(column="amount", function="sum", time_window=timedelta(minutes=10),
                    slide_interval=timedelta(minutes=1), name="sum_sliding"),
    ],
)
"""


def _events(rng: np.random.Generator, count: int, users: int) -> pd.DataFrame:
    """Events over two hours, produced in time order with up to 3 s of jitter (the watermark allows
    5 s). A tenth of the users stop after 40 minutes: by the end their windows are long empty."""
    span = 2 * 3600 * MICROS
    user_id = rng.integers(0, users, count)
    ts = rng.integers(0, span, count)
    quiet = user_id < users // 10
    ts[quiet] = ts[quiet] % (40 * 60 * MICROS)
    order = np.argsort(ts)
    ts = ts[order] - rng.integers(0, 3 * MICROS, count)
    return pd.DataFrame(
        {
            "user_id": user_id[order],
            "amount": np.round(rng.lognormal(3, 1, count), 2),
            "ts_us": int(BASE.timestamp() * MICROS) + ts,
        }
    )


def _partitions(topic: str) -> pd.DataFrame:
    """Each record's partition and offset, read back with kafka-python."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return pd.DataFrame(
            [(int(r.key), r.partition, r.offset) for r in consumer],
            columns=["user_id", "partition", "offset"],
        )
    finally:
        consumer.close()


@pytest.mark.parametrize("batch_size", [20_000, 400])
def test_every_label_row_equals_the_window_at_its_time_and_serving_equals_the_stream_time(
    batch_size: int, tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 4\n")
    (repo / "definitions.py").write_text(DEFINITIONS.format(topic=topic))
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    try:
        rng = np.random.default_rng(batch_size)
        events = _events(rng, 50_000, users=200)
        produce(
            topic,
            [
                {
                    "user_id": int(u),
                    "amount": float(a),
                    "ts": datetime.fromtimestamp(t / MICROS, UTC).isoformat(),
                }
                for u, a, t in zip(events["user_id"], events["amount"], events["ts_us"], strict=True)
            ],
            key="user_id",
        )
        worker = start_worker(repo, tmp_path / "worker.log", "--batch-size", str(batch_size))
        try:
            wait_until_committed(f"sluice-{project}", topic, workers=[worker], timeout_s=300)
        finally:
            stop(worker)
        placed = _partitions(topic)
    finally:
        delete_topics(topic, f"{topic}.dlq")
    # Produced in order per user, so the records' partitions line up with the events by user.
    events["partition"] = placed.groupby("user_id")["partition"].first().reindex(events["user_id"]).to_numpy()
    events["order"] = np.arange(len(events))
    spec = load_repo(repo).spec("user_stats")
    features = list(spec.features)

    # 2,000 labels at random times, some before a user's first event, some after their last.
    labels = pd.DataFrame(
        {
            "user_id": rng.integers(0, 200, 2000),
            "event_timestamp": [
                BASE + timedelta(microseconds=int(t)) for t in rng.integers(-60 * MICROS, 7300 * MICROS, 2000)
            ],
        }
    )
    stream_time = events.groupby("partition")["ts_us"].max()
    newest = int(stream_time.min())  # change points are written up to each partition's stream time
    label_us = labels["event_timestamp"].map(lambda moment: int(moment.timestamp() * MICROS))
    labels = labels[label_us <= newest]
    training = get_historical_features(
        entity_df=labels, features=[f"user_stats:{name}" for name in features], repo=repo
    ).to_df()
    exact = 0
    for row in training.itertuples(index=False):
        at = int(pd.Timestamp(row.event_timestamp).value // 1000)
        expected = value_at(
            events, spec, key="user_id", time="ts_us", order="order", entity=row.user_id, at=at
        )
        if all(
            np.isclose(getattr(row, name), expected[name], rtol=1e-12, equal_nan=True) for name in features
        ):
            exact += 1
    assert exact == len(training), f"{exact} of {len(training)} label rows equal the window at their time"

    # Online, each user holds the value at its partition's stream time: quiet users' windows are empty.
    fields = [feature_field(spec.name, name) for name in features]
    for user in range(200):
        stored = redis_client.hmget(entity_key({"user_id": user}, spec.join_keys, spec.project), fields)
        mine = events[events["user_id"] == user]
        at = int(stream_time[mine["partition"].iloc[0]])
        expected = value_at(events, spec, key="user_id", time="ts_us", order="order", entity=user, at=at)
        for name, raw in zip(features, stored, strict=True):
            online = decode_value(raw)
            assert np.isclose(np.nan if online is None else online, expected[name], equal_nan=True), (
                user,
                name,
            )
        if user < 20:
            assert decode_value(stored[features.index("count_sliding")]) == 0

    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
