"""`sluice materialize` rebuilds Redis from Parquet: idempotent, time-bounded, never overwriting newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis

from features.repo import load_repo
from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from offline_store.materialize import materialize
from online_store.layout import decode_value, entity_keys, feature_field
from online_store.writer import FeatureRows, OnlineWriter
from tests.streaming import make_repo, sluice

pytestmark = pytest.mark.stack

DAY1 = datetime(2026, 5, 1, 12, tzinfo=UTC)
MICROS = 1_000_000


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * MICROS


@pytest.fixture
def repo(tmp_path: Path, project: str, topic: str) -> Path:
    # No `apply`: materialize needs the definitions and Redis, not the registry or the topics.
    return make_repo(tmp_path / "repo", project=project, topic=topic)


def write_history(spec: FeatureViewSpec) -> None:
    """Cards 0..99 with a row on May 1st and a later one on May 2nd; cards 100..109 only on May 3rd."""
    dataset = OfflineDataset(spec=spec)
    for partition, (cards, moment, count) in enumerate(
        [
            (range(100), DAY1, 1),
            (range(100), DAY1 + timedelta(days=1), 2),
            (range(100, 110), DAY1 + timedelta(days=2), 3),
        ]
    ):
        keys = list(cards)
        dataset.write_batch(
            partition=partition,
            first_offset=0,
            last_offset=len(keys) - 1,
            keys=keys,
            event_times_us=np.full(len(keys), micros(moment), dtype=np.int64),
            created_times_us=np.full(len(keys), micros(moment), dtype=np.int64),
            features={name: _column(name, dtype, keys, count) for name, dtype in spec.features.items()},
        )


def _column(name: str, dtype: str, keys: list[int], count: int) -> list[object]:
    if dtype == "INT64":
        return [count] * len(keys)
    return [float(key) + count / 10 for key in keys]


def online(
    client: redis.Redis, spec: FeatureViewSpec, cards: list[int], feature: str = "txn_count_10s"
) -> list[object]:
    field = feature_field(spec.name, feature)
    pipeline = client.pipeline(transaction=False)
    for key in entity_keys(cards, spec.join_keys, spec.project):
        pipeline.hget(key, field)
    return [decode_value(raw) for raw in pipeline.execute()]


def test_materialize_rebuilds_redis_and_a_second_run_changes_nothing(
    repo: Path, redis_client: redis.Redis
) -> None:
    spec = load_repo(repo).spec("card_stats")
    write_history(spec)

    first = sluice(repo, "materialize")
    assert first.returncode == 0, first.stderr
    # The latest row of each card: 110 cards, from 300 rows.
    assert "card_stats: 210 offline rows, 110 entities, 110 written, 0 already as new online" in first.stdout
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert online(redis_client, spec, [0, 99, 100]) == [2, 2, 3]

    again = sluice(repo, "materialize")
    assert "110 entities, 0 written, 110 already as new online" in again.stdout


def test_a_newer_online_value_is_never_overwritten(repo: Path, redis_client: redis.Redis) -> None:
    spec = load_repo(repo).spec("card_stats")
    write_history(spec)
    # The stream has already written card 5 for May 4th.
    newer = micros(DAY1 + timedelta(days=3))
    OnlineWriter(client=redis_client, spec=spec).write(
        FeatureRows(
            keys=[5],
            event_times_us=[newer],
            created_times_us=[newer],
            features={name: [7 if dtype == "INT64" else 7.5] for name, dtype in spec.features.items()},
        )
    )
    report = materialize(spec, redis_client)
    assert (report.entities, report.written) == (110, 109)
    assert online(redis_client, spec, [5, 6]) == [7, 2]


def test_start_and_end_bound_the_rows_by_event_time(repo: Path, redis_client: redis.Redis) -> None:
    spec = load_repo(repo).spec("card_stats")
    write_history(spec)
    # [May 1st, May 2nd): only the first day's rows.
    report = materialize(spec, redis_client, start=DAY1 - timedelta(hours=1), end=DAY1 + timedelta(days=1))
    assert (report.offline_rows, report.entities, report.written) == (100, 100, 100)
    assert online(redis_client, spec, [0, 100]) == [1, None]
    # Then the rest: newer rows replace the first day's.
    report = materialize(spec, redis_client, start=DAY1 + timedelta(days=1))
    assert (report.offline_rows, report.entities, report.written) == (110, 110, 110)
    assert online(redis_client, spec, [0, 100]) == [2, 3]


def test_materialize_on_an_empty_dataset_writes_nothing(repo: Path, redis_client: redis.Redis) -> None:
    spec = load_repo(repo).spec("card_stats")
    assert materialize(spec, redis_client).written == 0
