"""The online client against real Redis, compared value by value with Feast's own SDK."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from features.config import RedisConfig, load_config
from features.spec import FeatureViewSpec
from online_store import (
    AsyncOnlineClient,
    EntityRowError,
    OnlineClient,
    OnlineStoreUnavailable,
    UnknownFeatureError,
)
from online_store.catalog import load_catalog
from online_store.writer import FeatureRows, OnlineWriter
from tests.served import (
    MERCHANT_FEATURES,
    ServedRepo,
    entity_rows,
    feast_materialized_repo,
    now_utc,
)

pytestmark = pytest.mark.stack


@pytest.fixture
def served(tmp_path: Path, project: str, redis_client: redis.Redis) -> Iterator[ServedRepo]:
    yield feast_materialized_repo(tmp_path / "repo", project=project, now=now_utc())


def same(ours: dict[str, list[Any]], feast: dict[str, list[Any]]) -> None:
    assert sorted(ours) == sorted(feast)  # Feast orders the features of a view as a set does
    for name, values in feast.items():
        assert len(ours[name]) == len(values), name
        for mine, theirs in zip(ours[name], values, strict=True):
            if isinstance(theirs, float) and math.isnan(theirs):
                assert isinstance(mine, float) and math.isnan(mine), name
            elif isinstance(theirs, float):
                assert mine == pytest.approx(theirs, rel=1e-7), name
            else:
                assert mine == theirs, name


def test_the_catalog_reads_feasts_registry_as_feast_does(served: ServedRepo) -> None:
    config = load_config(served.path)
    catalog = load_catalog(config.registry.location(served.path), project=served.project)
    for view in served.store.list_feature_views():
        ours = catalog.views[view.name]
        assert ours.join_keys == {
            column.name: column.dtype.to_value_type().name for column in view.entity_columns
        }
        assert list(ours.features) == [feature.name for feature in view.features]
        assert ours.ttl == view.ttl
    assert catalog.services == {
        "checkout_model": (
            ("card_profile", ("amount_avg", "txn_count")),
            ("merchant_profile", tuple(MERCHANT_FEATURES)),
        )
    }


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_it_reads_what_feast_materialize_wrote_exactly_as_feast_does(
    served: ServedRepo, flavour: str
) -> None:
    rows = entity_rows()
    expected = served.store.get_online_features(features=served.all_features, entity_rows=rows).to_dict(
        include_event_timestamps=True
    )
    ours = read(
        served, flavour, features=served.all_features, entity_rows=rows, include_event_timestamps=True
    )
    same(ours, expected)
    # The unknown card and merchant come back as None, like Feast; card 0's amount is a stored null.
    assert ours["amount_avg"][0] is None and ours["amount_avg"][-1] is None
    assert ours["merchant_rating"][-1] is None


def test_a_feature_service_reads_its_projection_like_feast(served: ServedRepo) -> None:
    rows = entity_rows()
    service = served.store.get_feature_service("checkout_model")
    expected = served.store.get_online_features(features=service, entity_rows=rows).to_dict()
    with OnlineClient(repo_path=served.path) as client:
        ours = client.get_online_features(feature_service="checkout_model", entity_rows=rows)
        full = client.get_online_features(
            features=["card_profile:txn_count"], entity_rows=rows, full_feature_names=True
        )
    same(ours, expected)
    assert list(full) == ["card_id", "card_profile__txn_count"]


def test_statuses_say_present_null_and_not_found(served: ServedRepo) -> None:
    with OnlineClient(repo_path=served.path) as client:
        ours = client.get_online_features(
            features=["card_profile:amount_avg"],
            entity_rows={"card_id": [0, 2, 10_000]},
            include_status=True,
        )
    assert ours["amount_avg__status"] == ["NULL_VALUE", "PRESENT", "NOT_FOUND"]


def test_feast_reads_what_the_stream_writer_wrote_and_so_do_we(
    tmp_path: Path, project: str, redis_client: redis.Redis
) -> None:
    served = feast_materialized_repo(tmp_path / "repo", project=project, now=now_utc())
    spec = FeatureViewSpec(
        name="card_profile",
        project=project,
        topic="unused",
        join_keys={"card_id": "INT64"},
        timestamp_field="event_timestamp",
        message_schema={},
        features={"amount_avg": "FLOAT64", "txn_count": "INT64", "country": "STRING"},
    )
    now_us = time.time_ns() // 1000
    OnlineWriter(client=redis_client, spec=spec).write(
        FeatureRows(
            keys=[500, 501],
            event_times_us=np.array([now_us, now_us], dtype=np.int64),
            created_times_us=np.array([now_us, now_us], dtype=np.int64),
            features={"amount_avg": [1.25, None], "txn_count": [7, 8], "country": ["PT", "ES"]},
        )
    )
    features = [f"card_profile:{name}" for name in ("amount_avg", "txn_count", "country")]
    rows = [{"card_id": 500}, {"card_id": 501}]
    expected = served.store.get_online_features(features=features, entity_rows=rows).to_dict()
    assert expected == {
        "card_id": [500, 501],
        "amount_avg": [1.25, None],
        "txn_count": [7, 8],
        "country": ["PT", "ES"],
    }
    with OnlineClient(repo_path=served.path) as client:
        assert client.get_online_features(features=features, entity_rows=rows) == expected


def test_values_older_than_the_ttl_are_not_served(served: ServedRepo, redis_client: redis.Redis) -> None:
    # card_profile has a ttl of one day: a row from two days ago is outside it.
    spec = FeatureViewSpec(
        name="card_profile",
        project=served.project,
        topic="unused",
        join_keys={"card_id": "INT64"},
        timestamp_field="event_timestamp",
        message_schema={},
        features={"txn_count": "INT64"},
    )
    two_days_ago = (time.time_ns() // 1000) - int(timedelta(days=2).total_seconds() * 1e6)
    OnlineWriter(client=redis_client, spec=spec).write(
        FeatureRows(
            keys=[900],
            event_times_us=[two_days_ago],
            created_times_us=[two_days_ago],
            features={"txn_count": [3]},
        )
    )
    with OnlineClient(repo_path=served.path) as client:
        ours = client.get_online_features(
            features=["card_profile:txn_count"],
            entity_rows=[{"card_id": 900}, {"card_id": 5}],
            include_status=True,
        )
    assert ours["txn_count"][0] is None
    assert ours["txn_count__status"] == ["OUTSIDE_MAX_AGE", "PRESENT"]


def test_one_round_trip_per_call_whatever_the_shape(served: ServedRepo) -> None:
    class Counting(redis.Connection):
        writes = 0

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            Counting.writes += 1
            super().send_packed_command(command, check_health)

    url = load_config(served.path).redis.url
    counting = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, connection_class=Counting))
    with OnlineClient(repo_path=served.path, redis_client=counting) as client:
        counting.ping()  # the connection's handshake is not part of a read
        for rows in ([{"card_id": 1, "merchant_id": "m-1"}], entity_rows()):
            Counting.writes = 0
            client.get_online_features(features=served.all_features, entity_rows=rows)
            assert Counting.writes == 1


def test_a_dropped_connection_is_retried_once(served: ServedRepo, redis_client: redis.Redis) -> None:
    with OnlineClient(repo_path=served.path) as client:
        before = client.get_online_features(features=["card_profile:txn_count"], entity_rows=[{"card_id": 2}])
        redis_client.client_kill_filter(_type="normal", skipme=True)
        assert (
            client.get_online_features(features=["card_profile:txn_count"], entity_rows=[{"card_id": 2}])
            == before
        )


def test_errors_name_what_to_fix(served: ServedRepo) -> None:
    with OnlineClient(repo_path=served.path) as client:
        with pytest.raises(
            UnknownFeatureError, match=r"no feature view named 'card_profil'.*did you mean 'card_profile'"
        ):
            client.get_online_features(features=["card_profil:txn_count"], entity_rows=[{"card_id": 1}])
        with pytest.raises(UnknownFeatureError, match=r"has no feature 'txn_cnt'; did you mean 'txn_count'"):
            client.get_online_features(features=["card_profile:txn_cnt"], entity_rows=[{"card_id": 1}])
        with pytest.raises(
            UnknownFeatureError, match=r"no feature service named 'checkout'; did you mean 'checkout_model'"
        ):
            client.get_online_features(feature_service="checkout", entity_rows=[{"card_id": 1}])
        with pytest.raises(EntityRowError, match=r"entity row 1 has no join key 'card_id' \(it has: card\)"):
            client.get_online_features(
                features=["card_profile:txn_count"], entity_rows=[{"card_id": 1}, {"card": 2}]
            )
        with pytest.raises(
            EntityRowError, match=r"join key 'card_id' is INT64, but an entity row gives 'abc'"
        ):
            client.get_online_features(features=["card_profile:txn_count"], entity_rows=[{"card_id": "abc"}])
    unreachable = load_config(served.path).model_copy(
        update={"redis": RedisConfig(url="redis://127.0.0.1:1/0")}
    )
    with pytest.raises(OnlineStoreUnavailable, match=r"cannot reach Redis at 127.0.0.1:1 \(db 0\)"):
        OnlineClient(repo_path=served.path, config=unreachable)


def test_a_missing_registry_says_to_apply(tmp_path: Path) -> None:
    (tmp_path / "sluice.yaml").write_text("project: nothing_here\n")
    from online_store.catalog import CatalogError

    with pytest.raises(
        CatalogError, match=r"cannot read Feast's registry at .*registry.db.*run `sluice apply`"
    ):
        OnlineClient(repo_path=tmp_path)


def test_the_registry_refreshes_in_the_background(served: ServedRepo) -> None:
    (served.path / "sluice.yaml").write_text(
        f"project: {served.project}\nregistry:\n  cache_ttl_seconds: 1\n"
    )
    with OnlineClient(repo_path=served.path) as client:
        assert "card_profile" in client.catalog.views
        served.store.delete_feature_view("card_profile")
        deadline = time.monotonic() + 10
        while "card_profile" in client.catalog.views and time.monotonic() < deadline:
            # Reads go on against the cached catalog while the refresh happens elsewhere.
            client.get_online_features(
                features=["merchant_profile:merchant_rating"], entity_rows=[{"merchant_id": "m-0"}]
            )
            time.sleep(0.1)
        assert "card_profile" not in client.catalog.views
        with pytest.raises(UnknownFeatureError, match="no feature view named 'card_profile'"):
            client.get_online_features(features=["card_profile:txn_count"], entity_rows=[{"card_id": 1}])


def read(served: ServedRepo, flavour: str, **kwargs: Any) -> dict[str, list[Any]]:
    if flavour == "sync":
        with OnlineClient(repo_path=served.path) as client:
            return client.get_online_features(**kwargs)

    async def go() -> dict[str, list[Any]]:
        async with AsyncOnlineClient(repo_path=served.path) as client:
            await client.ping()
            return await client.get_online_features(**kwargs)

    return asyncio.run(go())
