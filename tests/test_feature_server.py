"""``sluice serve`` as a real process over HTTP: Feast's JSON, a bearer token, size limits and clear 4xx."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.served import (
    MERCHANT_FEATURES,
    ServedRepo,
    entity_rows,
    feast_materialized_repo,
    now_utc,
    serving,
)

pytestmark = pytest.mark.stack

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(tmp_path: Path, project: str, redis_client: redis.Redis) -> ServedRepo:
    return feast_materialized_repo(tmp_path / "repo", project=project, now=now_utc())


@pytest.fixture
def server(served: ServedRepo, tmp_path: Path) -> Iterator[str]:
    args = ("--max-rows", "50", "--max-body-bytes", "8192", "--request-timeout", "2")
    with serving(served.path, tmp_path / "serve.log", *args, token=TOKEN) as url:
        yield url


def by_name(body: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))


def test_responses_are_feasts_feature_server_json(served: ServedRepo, server: str) -> None:
    from feast.feature_server import convert_response_to_dict

    rows = entity_rows()
    entities = {
        "card_id": [row["card_id"] for row in rows],
        "merchant_id": [row["merchant_id"] for row in rows],
    }
    expected = convert_response_to_dict(
        served.store.get_online_features(features=served.all_features, entity_rows=rows).proto
    )
    response = httpx.post(
        f"{server}/get-online-features",
        json={"features": served.all_features, "entities": entities},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    ours, theirs = by_name(response.json()), by_name(expected)
    assert sorted(ours) == sorted(theirs)  # Feast orders a view's features as a set does
    for name, result in theirs.items():
        assert ours[name]["event_timestamps"] == result["event_timestamps"], name
        for mine, value in zip(ours[name]["values"], result["values"], strict=True):
            assert mine == (pytest.approx(value, rel=1e-7) if isinstance(value, float) else value), name
        # Feast 0.67 says PRESENT for every value it returns, even a missing entity's; ours say which.
        for mine, value, status in zip(
            ours[name]["statuses"], result["values"], result["statuses"], strict=True
        ):
            assert mine == status if value is not None else mine in ("NULL_VALUE", "NOT_FOUND"), name
    assert ours["amount_avg"]["statuses"][0] == "NULL_VALUE"  # card 0's stored null
    assert ours["amount_avg"]["statuses"][-1] == "NOT_FOUND"  # the unknown card


def test_non_finite_floats_are_spelled_as_protobuf_json_spells_them() -> None:
    from online_store.reads import FeatureVectors

    vectors = FeatureVectors(
        names=["card_id", "score"],
        values=[[1, 2, 3, 4], [float("nan"), float("inf"), float("-inf"), 0.5]],
        statuses=[["PRESENT"] * 4, ["PRESENT"] * 4],
        event_times_us=[[0] * 4, [1_500_000, 2_000_123, 0, 3_000_000]],
        join_key_count=1,
    )
    body = vectors.to_feast_json()
    assert body["results"][1]["values"] == ["NaN", "Infinity", "-Infinity", 0.5]
    assert body["results"][1]["event_timestamps"] == [
        "1970-01-01T00:00:01.500Z",
        "1970-01-01T00:00:02.000123Z",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:03Z",
    ]


def test_a_feature_service_can_replace_the_feature_list(server: str) -> None:
    response = httpx.post(
        f"{server}/get-online-features",
        json={
            "feature_service": "checkout_model",
            "entities": {"card_id": [3], "merchant_id": ["m-1"]},
            "full_feature_names": True,
        },
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    names = response.json()["metadata"]["feature_names"]
    assert names == ["card_id", "merchant_id", "card_profile__amount_avg", "card_profile__txn_count"] + [
        f"merchant_profile__{name}" for name in MERCHANT_FEATURES
    ]


def test_the_bearer_token_guards_reads_and_metrics_but_not_health(server: str) -> None:
    body = {"features": ["card_profile:txn_count"], "entities": {"card_id": [1]}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(f"{server}/get-online-features", json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in response.json()["error"]
    assert httpx.get(f"{server}/metrics").status_code == 401
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "body is not valid JSON"),
        (b"[1, 2]", 400, "body must be a JSON object"),
        (b"", 400, "empty body"),
        (b'{"features": ["card_profile:txn_count"]}', 400, "entities must be an object of join key to list"),
        (
            b'{"features": ["card_profile:txn_count"], "entities": {"card_id": 1}}',
            400,
            "entities.card_id must be a list",
        ),
        (b'{"entities": {"card_id": [1]}}', 400, "features must be a non-empty list"),
        (
            b'{"features": ["card_profile:txn_cnt"], "entities": {"card_id": [1]}}',
            400,
            "did you mean 'txn_count'",
        ),
        (
            b'{"features": ["card_profile:txn_count"], "entities": {"card": [1]}}',
            400,
            "no join key 'card_id'",
        ),
        (
            b'{"features": ["card_profile:txn_count"], "entities": {"card_id": ["x"]}}',
            400,
            "join key 'card_id' is INT64",
        ),
        (
            b'{"features": ["card_profile:txn_count"], "entities": {"card_id": [1]}, "extra": 1}',
            400,
            "unknown field 'extra'",
        ),
        (
            b'{"features": ["card_profile:txn_count"], "entities": {"card_id": '
            + str(list(range(51))).encode()
            + b"}}",
            413,
            "at most 50",
        ),
        (b'{"features": ["' + b"x" * 9000 + b'"], "entities": {"card_id": [1]}}', 413, "the limit is 8192"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(
    server: str, body: bytes, status: int, message: str
) -> None:
    response = httpx.post(
        f"{server}/get-online-features", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_metrics_count_requests_by_route_and_status(server: str) -> None:
    body = {"features": ["card_profile:txn_count"], "entities": {"card_id": [1, 2]}}
    for _ in range(3):
        assert httpx.post(f"{server}/get-online-features", json=body, headers=AUTH).status_code == 200
    httpx.post(f"{server}/get-online-features", content=b"{", headers=AUTH)
    text = httpx.get(f"{server}/metrics", headers=AUTH).text
    assert 'sluice_http_requests_total{route="/get-online-features",status="200"} 3.0' in text
    assert 'sluice_http_requests_total{route="/get-online-features",status="400"} 1.0' in text
    assert "sluice_http_entity_rows_total 6.0" in text
    assert "sluice_http_request_seconds_count 3.0" in text


def test_a_request_not_answered_within_the_timeout_gets_503_with_the_reason(server: str) -> None:
    # A client that announces a body and sends only its start: the server answers 503 when its 2 s are up,
    # instead of holding a connection and a task for as long as the client likes.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        started = time.monotonic()
        slow.sendall(
            b"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"entities": '
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = slow.recv(4096)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer
    assert b"not answered within 2 s" in body
    assert 1.9 < waited < 6, waited


def test_the_openapi_description_is_public_and_names_every_route(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json").json()
    assert (
        spec["openapi"].startswith("3.")
        and spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    )
    assert set(spec["paths"]) == {"/get-online-features", "/push", "/health", "/metrics", "/openapi.json"}
