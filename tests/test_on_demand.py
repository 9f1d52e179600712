"""On-demand feature views, computed by sluice's read path, compared value by value with Feast's SDK.

Feast applies the views and materializes their sources into Redis; sluice's clients and server then
compute the on-demand views from the same registry and Redis, over random entities and request data.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from online_store import AsyncOnlineClient, EntityRowError, OnDemandError, OnlineClient
from tests.served import CARDS, MERCHANTS, ServedRepo, feast_materialized_repo, now_utc

pytestmark = pytest.mark.stack


def amount_plus_request(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["amount_plus"] = inputs["amount_avg"] + inputs["val_to_add"]
    out["risk_scaled"] = inputs["card_profile__risk_score"] * inputs["factor"]
    out["is_big"] = inputs["txn_count"] > 250
    return out


def rating_per_txn(inputs: dict[str, Any]) -> dict[str, Any]:
    ratings, counts = inputs["merchant_rating"], inputs["card_profile__txn_count"]
    return {
        "rating_per_txn": [
            None if rating is None or not count else rating / count
            for rating, count in zip(ratings, counts, strict=True)
        ],
        "label": [
            f"{country}:{category}"
            for country, category in zip(inputs["country"], inputs["merchant_category"], strict=True)
        ],
    }


def chargeback_flag(row: dict[str, Any]) -> dict[str, Any]:
    chargebacks = row["chargebacks"]
    return {"chargeback_share": None if chargebacks is None else chargebacks / (1 + row["txn_count"])}


@functools.cache
def definitions(cards: Any, merchants: Any) -> tuple[Any, ...]:
    """The request source and the on-demand views, made once (dill cannot read a function's source twice)."""
    from feast import Field, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Bool, Float64, Int64, String

    request = RequestSource(
        name="checkout", schema=[Field(name="val_to_add", dtype=Int64), Field(name="factor", dtype=Float64)]
    )
    return (
        request,
        on_demand_feature_view(
            sources=[cards, request],
            schema=[
                Field(name="amount_plus", dtype=Float64),
                Field(name="risk_scaled", dtype=Float64),
                Field(name="is_big", dtype=Bool),
            ],
            mode="pandas",
        )(amount_plus_request),
        on_demand_feature_view(
            sources=[cards[["txn_count", "country"]], merchants],
            schema=[Field(name="rating_per_txn", dtype=Float64), Field(name="label", dtype=String)],
            mode="python",
        )(rating_per_txn),
        on_demand_feature_view(
            sources=[cards[["chargebacks", "txn_count"]]],
            schema=[Field(name="chargeback_share", dtype=Float64)],
            mode="python",
            singleton=True,
        )(chargeback_flag),
    )


_FIRST: dict[str, Any] = {}


@pytest.fixture
def served(tmp_path: Path, project: str, redis_client: redis.Redis) -> ServedRepo:
    served = feast_materialized_repo(tmp_path / "repo", project=project, now=now_utc())
    # The views are made from the first repo's sources; later repos have the same views by name.
    _FIRST.setdefault("cards", served.store.get_feature_view("card_profile"))
    _FIRST.setdefault("merchants", served.store.get_feature_view("merchant_profile"))
    served.store.apply(list(definitions(_FIRST["cards"], _FIRST["merchants"])))
    return served


FEATURES = [
    "amount_plus_request:amount_plus",
    "amount_plus_request:risk_scaled",
    "amount_plus_request:is_big",
    "card_profile:txn_count",
    "rating_per_txn:rating_per_txn",
    "rating_per_txn:label",
]


def rows(seed: int, count: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    cards = [*range(CARDS), 10_000]
    return [
        {
            "card_id": rng.choice(cards),
            "merchant_id": rng.choice([*MERCHANTS, "m-unknown"]),
            "val_to_add": rng.randint(-1000, 1000),
            "factor": rng.uniform(-5, 5),
        }
        for _ in range(count)
    ]


def same(ours: dict[str, list[Any]], feast: dict[str, list[Any]]) -> None:
    assert sorted(ours) == sorted(feast)
    for name, values in feast.items():
        for mine, theirs in zip(ours[name], values, strict=True):
            if isinstance(theirs, float) and math.isnan(theirs):
                assert mine is None or math.isnan(mine), name
            elif isinstance(theirs, float):
                assert mine == pytest.approx(theirs, rel=1e-6), name
            else:
                assert mine == theirs, name


@pytest.mark.parametrize("seed", range(4))
def test_on_demand_views_equal_feasts_over_random_entities_and_request_data(
    served: ServedRepo, seed: int
) -> None:
    entity_rows = rows(seed)
    expected = served.store.get_online_features(features=FEATURES, entity_rows=entity_rows).to_dict()
    with OnlineClient(repo_path=served.path) as client:
        ours = client.get_online_features(features=FEATURES, entity_rows=entity_rows)
    # Feast's response also echoes the request data; sluice returns the join keys and the features.
    for name in ("val_to_add", "factor"):
        expected.pop(name, None)
    same(ours, expected)
    assert list(ours)[2:] == [reference.split(":")[1] for reference in FEATURES]


def test_singleton_python_mode_equals_feast_row_by_row(served: ServedRepo) -> None:
    features = ["chargeback_flag:chargeback_share"]
    with OnlineClient(repo_path=served.path) as client:
        for card in (0, 1, 5, 10_000):
            entity_rows = [{"card_id": card}]
            expected = served.store.get_online_features(features=features, entity_rows=entity_rows).to_dict()
            same(client.get_online_features(features=features, entity_rows=entity_rows), expected)
        # Feast's singleton mode computes the first row only; sluice computes every row.
        many = client.get_online_features(features=features, entity_rows=[{"card_id": 2}, {"card_id": 3}])
    assert len(many["chargeback_share"]) == 2 and None not in many["chargeback_share"]


def test_full_names_request_data_apart_and_the_async_client(served: ServedRepo) -> None:
    entity_rows = rows(9, count=5)
    expected = served.store.get_online_features(
        features=FEATURES, entity_rows=entity_rows, full_feature_names=True
    ).to_dict()
    for name in ("val_to_add", "factor"):
        expected.pop(name, None)
    keys = [{"card_id": row["card_id"], "merchant_id": row["merchant_id"]} for row in entity_rows]
    request_data = {name: [row[name] for row in entity_rows] for name in ("val_to_add", "factor")}

    async def read() -> dict[str, list[Any]]:
        async with AsyncOnlineClient(repo_path=served.path) as client:
            return await client.get_online_features(
                features=FEATURES, entity_rows=keys, request_data=request_data, full_feature_names=True
            )

    ours = asyncio.run(read())
    # Feast 0.67 drops python-mode outputs under full names (it looks the short names up among the full
    # ones); sluice returns them, equal to the short-named read.
    python_mode = ["rating_per_txn__rating_per_txn", "rating_per_txn__label"]
    assert not set(python_mode) & set(expected)
    same({name: values for name, values in ours.items() if name not in python_mode}, expected)
    with OnlineClient(repo_path=served.path) as client:
        short = client.get_online_features(features=FEATURES, entity_rows=entity_rows)
    assert [ours[name] for name in python_mode] == [short["rating_per_txn"], short["label"]]


def test_missing_request_data_and_a_failing_function_say_what_is_wrong(served: ServedRepo) -> None:
    with OnlineClient(repo_path=served.path) as client:
        with pytest.raises(EntityRowError, match="request data field 'val_to_add'"):
            client.get_online_features(features=FEATURES[:1], entity_rows=[{"card_id": 1, "factor": 1.0}])
        with pytest.raises(OnDemandError, match="amount_plus_request"):
            client.get_online_features(
                features=FEATURES[:1], entity_rows=[{"card_id": 1, "val_to_add": "x", "factor": 1.0}]
            )


def sluice_type(field: Any) -> str:
    """sluice's name for a Field's type: Feast's ValueType name, DOUBLE and FLOAT as FLOAT64 and FLOAT32."""
    name = field.dtype.to_value_type().name
    return {"DOUBLE": "FLOAT64", "FLOAT": "FLOAT32"}.get(name, name)


def test_the_catalog_reads_on_demand_views_as_feast_registered_them(served: ServedRepo) -> None:
    from features.config import load_config
    from online_store.catalog import load_catalog

    config = load_config(served.path)
    catalog = load_catalog(config.registry.location(served.path), project=served.project)
    for view in served.store.list_on_demand_feature_views():
        ours = catalog.on_demand[view.name]
        assert ours.mode == view.mode and ours.singleton == view.singleton
        assert ours.features == {field.name: sluice_type(field) for field in view.features}
        assert sorted(ours.sources) == sorted(
            (projection.name, tuple(feature.name for feature in projection.features))
            for projection in view.source_feature_view_projections.values()
        )
        assert ours.request_fields == {
            field.name: sluice_type(field)
            for source in view.source_request_sources.values()
            for field in source.schema
        }
        assert ours.udf_source == view.feature_transformation.udf_string


def test_the_feature_server_computes_them_from_feasts_json(served: ServedRepo) -> None:
    from starlette.testclient import TestClient

    from online_store.server import create_app

    entity_rows = rows(21, count=6)
    expected = served.store.get_online_features(features=FEATURES, entity_rows=entity_rows).to_dict()
    entities = {name: [row[name] for row in entity_rows] for name in ("card_id", "merchant_id")}
    request_data = {name: [row[name] for row in entity_rows] for name in ("val_to_add", "factor")}
    with TestClient(create_app(AsyncOnlineClient(repo_path=served.path))) as http:
        # Request data beside the join keys (Feast's form), and apart.
        together = http.post(
            "/get-online-features", json={"features": FEATURES, "entities": {**entities, **request_data}}
        )
        apart = http.post(
            "/get-online-features",
            json={"features": FEATURES, "entities": entities, "request_data": request_data},
        )
        missing = http.post("/get-online-features", json={"features": FEATURES, "entities": entities})
        failing = http.post(
            "/get-online-features",
            json={"features": FEATURES, "entities": {**entities, **request_data, "val_to_add": ["x"] * 6}},
        )
    assert together.status_code == apart.status_code == 200, together.text
    assert together.json() == apart.json()
    body = together.json()
    names = body["metadata"]["feature_names"]
    values = {name: result["values"] for name, result in zip(names, body["results"], strict=True)}
    for name in ("val_to_add", "factor"):
        expected.pop(name, None)
    same(values, expected)
    assert missing.status_code == 400 and "request data field 'val_to_add'" in missing.json()["error"]
    assert failing.status_code == 422 and "amount_plus_request" in failing.json()["error"]


TRAINING_DEFINITIONS = """
from datetime import timedelta

import pandas as pd
from feast import Entity, Field, FileSource, KafkaSource, RequestSource, StreamFeatureView, ValueType
from feast.data_format import JsonFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
payments = KafkaSource(
    name="payments",
    topic="{project}-payments",
    timestamp_field="ts",
    message_format=JsonFormat(
        schema_json="card_id BIGINT, amount_sum DOUBLE, txn_count BIGINT, ts TIMESTAMP"
    ),
    batch_source=FileSource(name="history", path="offline", timestamp_field="event_timestamp"),
)
card_stats = StreamFeatureView(
    name="card_stats",
    source=payments,
    entities=[card],
    ttl=timedelta(days=30),
    timestamp_field="ts",
    schema=[
        Field(name="card_id", dtype=Int64),
        Field(name="amount_sum", dtype=Float64),
        Field(name="txn_count", dtype=Int64),
    ],
)
checkout = RequestSource(name="checkout", schema=[Field(name="val_to_add", dtype=Int64)])


@on_demand_feature_view(
    sources=[card_stats, checkout], schema=[Field(name="amount_plus", dtype=Float64)], mode="pandas"
)
def amount_plus(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["amount_plus"] = inputs["amount_sum"] + inputs["val_to_add"]
    return out


@on_demand_feature_view(sources=[card_stats], schema=[Field(name="per_txn", dtype=Float64)], mode="python")
def per_txn(inputs):
    return {
        "per_txn": [
            None if amount is None or not count else amount / count
            for amount, count in zip(inputs["card_stats__amount_sum"], inputs["txn_count"])
        ]
    }
"""


def test_training_sets_compute_on_demand_views_as_feast_does_over_the_rows_sluice_wrote(
    tmp_path: Path, project: str
) -> None:
    """sluice applies the repo and writes the offline rows; Feast's SDK reads the same repo as it is."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    from feast import FeatureStore

    from features.registry import apply_changes, feature_store, plan_changes, write_feast_config
    from features.repo import load_repo
    from offline_store import get_historical_features
    from offline_store.dataset import OfflineDataset

    (tmp_path / "sluice.yaml").write_text(f"project: {project}\n")
    (tmp_path / "definitions.py").write_text(TRAINING_DEFINITIONS.replace("{project}", project))
    repo = load_repo(tmp_path)
    store = feature_store(repo)
    apply_changes(repo, store, plan_changes(repo, store))
    assert write_feast_config(repo) is not None

    rng = np.random.default_rng(3)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    count = 300
    seconds = np.sort(rng.integers(0, 86_400, count))
    OfflineDataset(spec=repo.spec("card_stats")).write_batch(
        partition=0,
        first_offset=0,
        last_offset=count - 1,
        offsets=np.arange(count, dtype=np.int64),
        keys=rng.integers(0, 20, count).tolist(),
        event_times_us=(int(start.timestamp()) + seconds) * 1_000_000,
        created_times_us=(int(start.timestamp()) + seconds) * 1_000_000,
        features={
            "amount_sum": [
                None if rng.random() < 0.1 else float(value) for value in rng.normal(50, 20, count)
            ],
            "txn_count": rng.integers(0, 5, count).tolist(),
        },
    )
    labels = pd.DataFrame(
        {
            "card_id": rng.integers(0, 20, 200),
            "event_timestamp": [
                start + timedelta(seconds=int(value)) for value in rng.integers(3_600, 90_000, 200)
            ],
            "val_to_add": rng.integers(-100, 100, 200),
        }
    )
    features = ["card_stats:txn_count", "amount_plus:amount_plus", "per_txn:per_txn"]
    ours = get_historical_features(entity_df=labels, features=features, repo=tmp_path).to_df()
    theirs = (
        FeatureStore(repo_path=str(tmp_path))
        .get_historical_features(entity_df=labels, features=features)
        .to_df()
    )
    assert len(ours) == len(labels) and list(ours.columns) == [
        *labels.columns,
        "txn_count",
        "amount_plus",
        "per_txn",
    ]
    keys = ["card_id", "event_timestamp", "val_to_add"]
    theirs["event_timestamp"] = pd.to_datetime(theirs["event_timestamp"], utc=True)
    ours["event_timestamp"] = pd.to_datetime(ours["event_timestamp"], utc=True)
    merged = theirs.merge(ours, on=keys, suffixes=("_feast", "_ours"), validate="one_to_one")
    assert len(merged) >= 0.8 * len(labels)  # Feast drops the rows it finds no feature row for
    assert merged["amount_plus_ours"].notna().sum() > 100 and merged["per_txn_ours"].notna().sum() > 100
    for name in ("amount_plus", "per_txn"):
        assert np.allclose(
            merged[f"{name}_feast"].astype(float), merged[f"{name}_ours"].astype(float), equal_nan=True
        ), name
