"""One Feast repo with every kind of definition sluice runs, from apply to serving, against Feast's SDK.

A udf stream view (pandas), a plain view with list and embedding fields, a push source, an on-demand
view with request data, a stored on-demand view and a feature service over them: ``sluice apply``
registers them and writes ``feature_store.yaml``; ``sluice plan`` is then empty; the real worker streams
the events and the pushed rows; sluice's client and Feast's ``FeatureStore(repo_path=...)`` read the same
values from the same Redis.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.repo import load_repo
from online_store import OnlineClient
from streams.push import Pusher
from tests.streaming import delete_topics, produce, sluice, start_worker, stop, wait_until_committed

pytestmark = pytest.mark.stack

DEFINITIONS = """
from datetime import timedelta

import pandas as pd
from feast import (
    Aggregation, Entity, FeatureService, FeatureView, Field, FileSource, KafkaSource, PushSource,
    RequestSource, ValueType,
)
from feast.data_format import JsonFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.stream_feature_view import stream_feature_view
from feast.types import Array, Float32, Float64, Int64, String

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
payments = KafkaSource(
    name="payments", topic="{topic}", timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, amount DOUBLE, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds=5),
    batch_source=FileSource(name="payments_history", path="offline", timestamp_field="event_timestamp"),
)
profiles = KafkaSource(
    name="profiles", topic="{topic}.profiles", timestamp_field="ts",
    message_format=JsonFormat(
        schema_json="card_id BIGINT, tags ARRAY<STRING>, embedding ARRAY<FLOAT>, ts TIMESTAMP"
    ),
    batch_source=FileSource(name="profiles_history", path="offline", timestamp_field="event_timestamp"),
)
updates = PushSource(
    name="card_updates",
    batch_source=FileSource(name="updates_history", path="offline", timestamp_field="event_timestamp"),
)


@stream_feature_view(
    entities=[card], source=payments, mode="pandas", timestamp_field="ts", ttl=timedelta(days=3650),
    schema=[Field(name="card_id", dtype=Int64), Field(name="cents_sum_1h", dtype=Float64),
            Field(name="payments_1h", dtype=Int64)],
    aggregations=[
        Aggregation(column="cents", function="sum", time_window=timedelta(hours=1), name="cents_sum_1h"),
        Aggregation(column="cents", function="count", time_window=timedelta(hours=1), name="payments_1h"),
    ],
)
def card_cents(events: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["cents"] = (events["amount"] * 100).round()
    return out


card_profile = FeatureView(
    name="card_profile", entities=[card], source=profiles, ttl=timedelta(days=3650),
    schema=[Field(name="card_id", dtype=Int64), Field(name="tags", dtype=Array(String)),
            Field(name="embedding", dtype=Array(Float32))],
)
card_risk = FeatureView(
    name="card_risk", entities=[card], source=updates, ttl=timedelta(days=3650),
    schema=[Field(name="card_id", dtype=Int64), Field(name="risk", dtype=Float64)],
)
checkout = RequestSource(name="checkout", schema=[Field(name="amount", dtype=Float64)])


@on_demand_feature_view(
    sources=[card_cents, card_risk, checkout], schema=[Field(name="score", dtype=Float64)], mode="pandas"
)
def score(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["score"] = inputs["amount"] * 100 / (inputs["cents_sum_1h"] + 1) + inputs["risk"]
    return out


@on_demand_feature_view(
    sources=[card_cents], entities=[card], schema=[Field(name="mean_cents", dtype=Float64)], mode="python",
    write_to_online_store=True,
)
def mean_cents(inputs):
    return {"mean_cents": [None if not count else total / count
                           for total, count in zip(inputs["cents_sum_1h"], inputs["payments_1h"])]}


checkout_model = FeatureService(
    name="checkout_model", features=[card_cents, card_profile, card_risk, score, mean_cents]
)
"""
CARDS = 12


def close(left: Any, right: Any) -> bool:
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(close, left, right))
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-6) or (math.isnan(left) and math.isnan(right))
    return bool(left == right)


def test_a_repo_with_every_kind_of_definition_applies_streams_and_serves_as_feast_reads_it(
    tmp_path: Path, project: str, topic: str
) -> None:
    from feast import FeatureStore

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 2\n")
    (repo / "definitions.py").write_text(DEFINITIONS.replace("{topic}", topic))
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    assert "+ File feature_store.yaml" in applied.stdout
    assert sluice(repo, "plan").stdout.strip() == "no changes: the registry and the topics match the repo"
    store = FeatureStore(repo_path=str(repo))  # no hand step
    assert {view.name for view in store.list_on_demand_feature_views()} == {"score", "mean_cents"}

    rng = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    # All in one hour, so that each card's tumbling 1 h window holds all of its payments.
    hour = now.replace(minute=0, second=0)
    payments = [
        {"card_id": rng.randrange(CARDS), "amount": round(rng.uniform(1, 300), 2),
         "ts": (hour + timedelta(minutes=1, seconds=index)).isoformat()}
        for index in range(600)
    ]  # fmt: skip
    profiles = [
        {"card_id": card, "tags": rng.sample(["gold", "travel", "online", "new"], 2),
         "embedding": [round(rng.uniform(-1, 1), 3) for _ in range(16)], "ts": now.isoformat()}
        for card in range(CARDS)
    ]  # fmt: skip
    risks = pd.DataFrame(
        {
            "card_id": list(range(CARDS)),
            "event_timestamp": [now] * CARDS,
            "risk": [rng.random() for _ in range(CARDS)],
        }
    )
    worker = start_worker(repo, tmp_path / "worker.log")
    pusher = Pusher(repo=load_repo(repo))
    try:
        produce(topic, payments)
        produce(f"{topic}.profiles", profiles)
        pusher.push("card_updates", risks, wait_s=90)
        for name in (topic, f"{topic}.profiles"):
            wait_until_committed(f"sluice-{project}", name, workers=[worker])
    finally:
        pusher.close()
        stop(worker)

    rows = [{"card_id": card, "amount": rng.uniform(1, 500)} for card in range(CARDS)]
    with OnlineClient(repo_path=repo) as client:
        ours = client.get_online_features(feature_service="checkout_model", entity_rows=rows)
    theirs = store.get_online_features(
        features=store.get_feature_service("checkout_model"), entity_rows=rows
    ).to_dict()
    for name in ("cents_sum_1h", "payments_1h", "tags", "embedding", "risk", "score", "mean_cents"):
        assert all(map(close, ours[name], theirs[name])), name
    frame = pd.DataFrame(payments)
    for index, card in enumerate(range(CARDS)):
        cents = (frame[frame["card_id"] == card]["amount"] * 100).round()
        assert math.isclose(ours["cents_sum_1h"][index], cents.sum(), rel_tol=1e-9)
        assert math.isclose(ours["mean_cents"][index], cents.mean(), rel_tol=1e-9)
        assert ours["tags"][index] == profiles[card]["tags"]
    assert sluice(repo, "verify").returncode == 0
    delete_topics(
        topic, f"{topic}.dlq", f"{topic}.profiles", f"{topic}.profiles.dlq", f"{project}.push.card_updates"
    )
