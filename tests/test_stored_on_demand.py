"""On-demand views stored by the stream worker (``write_to_online_store=True``), read by Feast too.

The worker computes such a view from each row of its one stream view as it writes it, so Redis holds
the function of the source's newest row; sluice's client and Feast's SDK read it from Redis, and a
training set computes it from the same offline rows. What the worker cannot compute (request data,
several sources) is refused at plan.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import redis

from features.repo import load_repo
from features.validation import InvalidDefinitions
from online_store import OnlineClient
from tests.streaming import delete_topics, produce, sluice, start_worker, stop, wait_until_committed
from tests.test_stream_worker import transactions

DEFINITIONS = """
from datetime import timedelta

from feast import (
    Aggregation, Entity, Field, FileSource, KafkaSource, RequestSource, StreamFeatureView, ValueType,
)
from feast.data_format import JsonFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
transactions = KafkaSource(
    name="transactions",
    topic="{topic}",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, amount DOUBLE, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds=5),
    batch_source=FileSource(name="history", path="offline", timestamp_field="event_timestamp"),
)
card_stats = StreamFeatureView(
    name="card_stats", source=transactions, entities=[card], timestamp_field="ts", ttl=timedelta(days=3650),
    schema=[
        Field(name="card_id", dtype=Int64),
        Field(name="txn_count_1m", dtype=Int64),
        Field(name="amount_sum_1m", dtype=Float64),
    ],
    aggregations=[
        Aggregation(column="amount", function="count", time_window=timedelta(minutes=1), name="txn_count_1m"),
        Aggregation(column="amount", function="sum", time_window=timedelta(minutes=1), name="amount_sum_1m"),
    ],
)


@on_demand_feature_view(
    sources=[card_stats],
    entities=[card],
    schema=[Field(name="amount_per_txn", dtype=Float64)],
    mode="python",
    write_to_online_store=True,
)
def per_txn(inputs):
    return {
        "amount_per_txn": [
            None if total is None or not count else total / count
            for total, count in zip(inputs["amount_sum_1m"], inputs["card_stats__txn_count_1m"])
        ]
    }
"""

REQUEST = """
checkout = RequestSource(name="checkout", schema=[Field(name="amount", dtype=Float64)])


@on_demand_feature_view(
    sources=[card_stats, checkout], entities=[card], schema=[Field(name="ratio", dtype=Float64)],
    mode="python", write_to_online_store=True,
)
def needs_request(inputs):
    return {"ratio": [amount for amount in inputs["amount"]]}
"""


def repo_with(root: Path, *, project: str, topic: str, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 2\n")
    (root / "definitions.py").write_text(DEFINITIONS.replace("{topic}", topic) + extra)
    return root


@pytest.mark.stack
def test_the_worker_stores_the_view_and_feast_reads_what_sluice_reads(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    from feast import FeatureStore

    repo = repo_with(tmp_path / "repo", project=project, topic=topic)
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    assert sluice(repo, "plan").stdout.strip() == "no changes: the registry and the topics match the repo"
    spec = load_repo(repo).spec("card_stats")
    assert [view.name for view in spec.stored_on_demand] == ["per_txn"]
    worker = start_worker(repo, tmp_path / "worker.log")
    try:
        produce(topic, transactions(2_000, cards=30, seed=9))
        wait_until_committed(f"sluice-{project}", topic, workers=[worker])
    finally:
        stop(worker)
    cards = [{"card_id": card} for card in range(30)]
    features = ["card_stats:txn_count_1m", "card_stats:amount_sum_1m", "per_txn:amount_per_txn"]
    with OnlineClient(repo_path=repo) as client:
        ours = client.get_online_features(features=features, entity_rows=cards, include_event_timestamps=True)
    theirs = (
        FeatureStore(repo_path=str(repo)).get_online_features(features=features, entity_rows=cards).to_dict()
    )
    stored = 0
    for index in range(30):
        count, total = ours["txn_count_1m"][index], ours["amount_sum_1m"][index]
        want = None if total is None or not count else total / count
        got = ours["amount_per_txn"][index]
        assert (got is None) == (want is None) and (want is None or math.isclose(got, want, rel_tol=1e-12))
        assert theirs["amount_per_txn"][index] == got  # Feast reads the stored value from Redis
        # Stored with the source row's event time: the function of that row, not of another one.
        assert ours["amount_per_txn__ts"][index] == ours["amount_sum_1m__ts"][index]
        stored += got is not None
    assert stored >= 20
    assert sluice(repo, "verify").returncode == 0

    # Redis lost: materialize rebuilds the view and the on-demand view it stores, from the same rows.
    for key in redis_client.scan_iter(match=f"*{project}".encode(), count=1000):
        redis_client.delete(key)
    assert sluice(repo, "materialize").returncode == 0
    with OnlineClient(repo_path=repo) as client:
        rebuilt = client.get_online_features(features=features, entity_rows=cards)
    assert rebuilt["amount_per_txn"] == ours["amount_per_txn"]
    delete_topics(topic, f"{topic}.dlq")


def test_a_row_the_stored_function_fails_on_is_stored_as_nulls_not_retried(
    tmp_path: Path, project: str, redis_client: redis.Redis
) -> None:
    import numpy as np

    from online_store.on_demand import StoredOnDemand
    from online_store.writer import FeatureRows

    failing = DEFINITIONS.replace(
        "None if total is None or not count else total / count",
        "1 / (count - 3) if count != 3 else {}[count]",  # a KeyError for a count of 3
    )
    (tmp_path / "sluice.yaml").write_text(f"project: {project}\n")
    (tmp_path / "definitions.py").write_text(failing.replace("{topic}", "unused"))
    spec = load_repo(tmp_path).spec("card_stats")
    now_us = 1_800_000_000_000_000
    rows = FeatureRows(
        keys=[1, 2, 3],
        event_times_us=np.full(3, now_us, dtype=np.int64),
        created_times_us=np.full(3, now_us, dtype=np.int64),
        offsets=np.arange(3, dtype=np.int64),
        features={"txn_count_1m": [2, 3, 5], "amount_sum_1m": [1.0, 2.0, 3.0]},
    )
    assert StoredOnDemand(client=redis_client, spec=spec).write(rows) == 3
    from online_store.layout import decode_value, entity_key, feature_field

    values = [
        decode_value(
            redis_client.hget(
                entity_key({"card_id": card}, {"card_id": "INT64"}, project),
                feature_field("per_txn", "amount_per_txn"),
            )
        )
        for card in (1, 2, 3)
    ]
    assert values == [-1.0, None, 0.5]


def test_a_stored_view_that_needs_request_data_or_two_sources_is_refused(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, project="refusals", topic="unused", extra=REQUEST)
    with pytest.raises(InvalidDefinitions) as raised:
        load_repo(repo)
    messages = [str(error) for error in raised.value.errors]
    assert any("needs_request" in message and "request data" in message for message in messages), messages
