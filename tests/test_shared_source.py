"""Three feature views on one Kafka source: each owns its folder, files, state and recovery."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from features.registry import feature_store
from features.repo import load_repo
from offline_store.dataset import OfflineDataset
from tests.reference import expected_online
from tests.streaming import (
    delete_topics,
    produce,
    progress,
    sluice,
    start_worker,
    stop,
    stream_times,
    wait_until_committed,
)
from tests.test_stream_worker import transactions

pytestmark = pytest.mark.stack

DEFINITIONS = """
from datetime import timedelta

from features import (
    Aggregation, Entity, FeatureView, Field, FileSource, Float64, Int64, JsonFormat, KafkaSource,
    StreamFeatureView, ValueType,
)

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)

transactions = KafkaSource(
    name="transactions",
    topic="{topic}",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, amount DOUBLE, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds=5),
    batch_source=FileSource(name="transactions_history", path="offline", timestamp_field="event_timestamp"),
)

counts = StreamFeatureView(
    name="counts", source=transactions, entities=[card], timestamp_field="ts",
    schema=[Field(name="card_id", dtype=Int64), Field(name="txn_count_10s", dtype=Int64)],
    aggregations=[Aggregation(column="amount", function="count", time_window=timedelta(seconds=10),
                              name="txn_count_10s")],
)

sums = StreamFeatureView(
    name="sums", source=transactions, entities=[card], timestamp_field="ts",
    schema=[Field(name="card_id", dtype=Int64), Field(name="amount_sum_30s", dtype=Float64)],
    aggregations=[Aggregation(column="amount", function="sum", time_window=timedelta(seconds=30),
                              slide_interval=timedelta(seconds=10))],
)

latest = FeatureView(
    name="latest", source=transactions, entities=[card],
    schema=[Field(name="card_id", dtype=Int64), Field(name="amount", dtype=Float64)],
)
"""


def test_three_views_on_one_topic_survive_sigkill_each_in_its_own_folder(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 4\n")
    (repo / "definitions.py").write_text(DEFINITIONS.format(topic=topic))
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    events = transactions(60_000, cards=1_000, seed=7)
    group = f"sluice-{project}"
    worker = None
    try:
        produce(topic, events)
        worker = start_worker(repo, tmp_path / "worker.log", "--batch-size", "2000")
        for kill_at in (0.3, 0.6):
            deadline = time.monotonic() + 120
            while progress(group, topic, len(events)) < kill_at:
                assert time.monotonic() < deadline, f"no progress to {kill_at:.0%}"
                assert worker.poll() is None
                time.sleep(0.05)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            worker = start_worker(repo, tmp_path / "worker.log", "--batch-size", "2000")
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")

    loaded = load_repo(repo)
    folders = {spec.name: Path(spec.offline_path) for spec in loaded.specs}
    assert folders == {name: repo / "offline" / name for name in ("counts", "sums", "latest")}
    for spec in loaded.specs:
        files = list(OfflineDataset(spec=spec).batch_files())
        assert files and all(folders[spec.name] in Path(file.path).parents for file in files), spec.name
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("0 missing online, 0 differ, 0 duplicate offline rows") == 3

    # Feast's SDK reads every value of the three views from Redis, equal to a brute-force recomputation.
    frame = pd.DataFrame(events)
    frame["ts_us"] = pd.to_datetime(frame["ts"], format="ISO8601").astype("int64") // 1000
    frame["order"] = np.arange(len(frame))
    frame["amount"] = frame["amount"].astype(float)
    cards = sorted(frame["card_id"].unique().tolist())
    served = (
        feature_store(loaded)
        .get_online_features(
            features=["counts:txn_count_10s", "sums:amount_sum_30s", "latest:amount"],
            entity_rows=[{"card_id": card} for card in cards],
        )
        .to_dict()
    )
    for name in ("counts", "sums"):
        expected = expected_online(
            frame, loaded.spec(name), key="card_id", time="ts_us", order="order", stream_time=caught_up
        ).loc[cards]
        feature = next(iter(loaded.spec(name).features))
        got = np.array([np.nan if value is None else value for value in served[feature]], dtype=float)
        np.testing.assert_allclose(got, expected[feature].to_numpy(float), rtol=1e-9, atol=1e-6)
    # The plain view serves each card's latest event: the newest time, then the later offset.
    newest = frame.sort_values(["ts_us", "order"]).groupby("card_id").tail(1).set_index("card_id")["amount"]
    newest = newest.loc[cards]
    got = np.array([np.nan if value is None else value for value in served["amount"]], dtype=float)
    np.testing.assert_allclose(got, newest.to_numpy(float), equal_nan=True)
