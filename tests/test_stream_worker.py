"""The real stream worker: Kafka in, Redis and Parquet out, bad input to the dead-letter topic."""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from kafka import KafkaConsumer

from features.repo import load_repo
from online_store.layout import decode_timestamp, decode_value, entity_key, feature_field, timestamp_field
from tests.reference import expected_online
from tests.streaming import (
    BOOTSTRAP,
    committed,
    dead_letters,
    produce,
    sluice,
    start_worker,
    stop,
    stream_times,
    wait_until_committed,
)

pytestmark = pytest.mark.stack

BASE = datetime(2026, 1, 1, tzinfo=UTC)
SECOND = 1_000_000


def transactions(count: int, *, cards: int, seed: int) -> list[dict[str, object]]:
    """Card transactions about 10 ms apart, each up to 3 s out of order (the watermark allows 5 s)."""
    rng = random.Random(seed)
    base_us = int(BASE.timestamp() * SECOND)
    events = []
    for index in range(count):
        ts_us = base_us + index * 10_000 - rng.randrange(3 * SECOND)
        events.append(
            {
                "card_id": rng.randrange(cards),
                "amount": None if rng.random() < 0.02 else round(rng.lognormvariate(3, 1), 2),
                "ts": datetime.fromtimestamp(ts_us / SECOND, UTC).isoformat(),
            }
        )
    return events


def online_rows(client: redis.Redis, repo_path: Path, cards: list[int]) -> pd.DataFrame:
    """What Redis holds for each card, decoded from Feast's layout."""
    spec = load_repo(repo_path).spec("card_stats")
    fields = [feature_field(spec.name, name) for name in spec.features] + [timestamp_field(spec.name)]
    rows = {}
    for card in cards:
        stored = client.hmget(entity_key({"card_id": card}, spec.join_keys, spec.project), fields)
        moment = decode_timestamp(stored[-1])
        rows[card] = {
            "as_of": None
            if moment is None
            else int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * SECOND),
            **{name: decode_value(raw) for name, raw in zip(spec.features, stored[:-1], strict=True)},
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def reference(
    events: list[dict[str, object]], repo_path: Path, stream_time: dict[object, int]
) -> pd.DataFrame:
    """What Redis must hold once caught up: each card's value at its partition's stream time."""
    frame = pd.DataFrame(events)
    frame["ts_us"] = pd.to_datetime(frame["ts"], format="ISO8601").astype("int64") // 1000
    frame["order"] = np.arange(len(frame))
    frame["amount"] = frame["amount"].astype(float)
    return expected_online(
        frame,
        load_repo(repo_path).spec("card_stats"),
        key="card_id",
        time="ts_us",
        order="order",
        stream_time=stream_time,
    )


def assert_same(online: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert online.index.tolist() == expected.index.tolist()
    assert online["as_of"].tolist() == expected["as_of"].tolist()
    for feature in expected.columns.drop("as_of"):
        np.testing.assert_allclose(
            online[feature].to_numpy(float), expected[feature].to_numpy(float), rtol=1e-9, err_msg=feature
        )


@pytest.mark.parametrize("engine", ["kafka", "faust"])
def test_poison_goes_to_the_dead_letter_topic_and_the_rest_is_exact(
    engine: str, stream_repo: Path, topic: str, project: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    good = transactions(3000, cards=40, seed=1)
    late = {
        "card_id": 3,
        "amount": 99.0,
        "ts": BASE.isoformat(),
    }  # 30 s behind by then: past the 5 s watermark
    poison: list[dict[str, object] | bytes | None] = [
        b"{not json",
        b"[1, 2, 3]",
        b'{"amount": 1.0, "ts": "2026-01-01T00:00:10+00:00"}',
        b'{"card_id": 5, "amount": "12.50", "ts": "2026-01-01T00:00:10+00:00"}',
        b'{"card_id": 5, "amount": 1.0, "ts": "yesterday"}',
        b'{"card_id": 5, "amount": 1.0, "ts": "2026-01-01T00:00:10+00:00", "pad": "'
        + b"x" * (1 << 20)
        + b'"}',
        None,
    ]
    produce(topic, good[:2000])
    produce(topic, [*poison, late])
    produce(topic, good[2000:])

    worker = start_worker(stream_repo, tmp_path / "worker.log", "--engine", engine)
    try:
        wait_until_committed(f"sluice-{project}", topic, workers=[worker])
    finally:
        stop(worker)

    letters = dead_letters(topic)
    reasons = sorted(headers["sluice.reason"].decode() for _, headers in letters)
    assert reasons == sorted(
        ["malformed_json", "schema", "schema", "type", "type", "oversized", "malformed_json", "late"]
    )
    late_letter = next(headers for _, headers in letters if headers["sluice.reason"] == b"late")
    assert late_letter["sluice.feature_view"] == b"card_stats"
    assert late_letter["sluice.source.topic"] == topic.encode()

    # The good events, and only they, made the features, exactly as pandas computes them.
    cards = sorted({int(event["card_id"]) for event in good})  # type: ignore[call-overload]
    expected = reference(good, stream_repo, stream_times(topic))
    assert_same(online_rows(redis_client, stream_repo, cards), expected)

    # Feast's own SDK reads the same values from Redis.
    from features.registry import feature_store

    store = feature_store(load_repo(stream_repo))
    names = ["txn_count_10s", "amount_sum_30s", "amount_last_1m"]
    feast_rows = store.get_online_features(
        features=[f"card_stats:{name}" for name in names], entity_rows=[{"card_id": card} for card in cards]
    ).to_dict()
    ours = online_rows(redis_client, stream_repo, cards)
    for name in names:
        assert feast_rows[name] == pytest.approx(ours[name].tolist(), rel=1e-12)

    verified = sluice(stream_repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(cards)} entities, {len(cards)} match online, 0 missing online, 0 differ" in verified.stdout


def test_the_metrics_count_every_dead_letter_route(
    stream_repo: Path, topic: str, project: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    produce(topic, [*transactions(200, cards=5, seed=2), b"{bad", b'{"card_id": 1}'])
    worker = start_worker(stream_repo, tmp_path / "worker.log", "--metrics-port", str(port))
    try:
        wait_until_committed(f"sluice-{project}", topic, workers=[worker])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        stop(worker)
    assert 'sluice_dead_letters_total{feature_view="card_stats",reason="malformed_json"} 1.0' in metrics
    assert 'sluice_dead_letters_total{feature_view="card_stats",reason="schema"} 1.0' in metrics
    assert 'sluice_events_total{feature_view="card_stats"} 200.0' in metrics

    # Freshness, per partition: the scrape's time minus the newest event time written there, recomputed
    # from the records as a plain Kafka client reads them back (valid events only).
    scraped_at = time.time()
    newest: dict[int, float] = {}
    reader = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    ends: dict[int, int] = {}
    for record in reader:
        ends[record.partition] = record.offset + 1
        with contextlib.suppress(ValueError, KeyError, TypeError):
            at = datetime.fromisoformat(json.loads(record.value)["ts"]).timestamp()
            newest[record.partition] = max(newest.get(record.partition, at), at)
    reader.close()
    freshness = {
        int(partition): float(value)
        for partition, value in re.findall(
            r'sluice_feature_freshness_seconds\{feature_view="card_stats",partition="(\d+)"\} (\S+)', metrics
        )
    }
    assert freshness.keys() == newest.keys()
    for partition, at in newest.items():
        assert freshness[partition] == pytest.approx(scraped_at - at, abs=10), partition
    # Consumer lag at the last commit: the partition's end minus the group's commit (all read: zero).
    lags = {
        int(partition): float(value)
        for partition, value in re.findall(
            rf'sluice_consumer_lag_records\{{partition="(\d+)",topic="{re.escape(topic)}"\}} (\S+)', metrics
        )
    }
    committed_offsets = committed(f"sluice-{project}", topic)
    assert lags == {partition: float(ends[partition] - committed_offsets[partition]) for partition in ends}
