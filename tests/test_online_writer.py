"""The Redis writer keeps the newest version of each row, whatever order the writes come in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.registry import feature_store
from features.repo import load_repo
from features.spec import FeatureViewSpec
from online_store.layout import (
    decode_timestamp_micros,
    decode_value,
    entity_key,
    feature_field,
    timestamp_field,
)
from online_store.writer import FeatureRows, OnlineWriter
from tests.streaming import make_repo

pytestmark = pytest.mark.stack

SECOND = 1_000_000
KEYS = 4


@pytest.fixture
def spec(tmp_path: Path, project: str, topic: str) -> FeatureViewSpec:
    return load_repo(make_repo(tmp_path / "repo", project=project, topic=topic)).spec("card_stats")


def rows(spec: FeatureViewSpec, writes: list[tuple[int, int, int]]) -> FeatureRows:
    """One row per (card, event µs, created µs); every feature's value is a function of the three."""
    return FeatureRows(
        keys=[card for card, _, _ in writes],
        event_times_us=[event for _, event, _ in writes],
        created_times_us=[created for _, _, created in writes],
        features={
            name: [
                (event // SECOND % 1000 + created // SECOND % 7)
                if dtype == "INT64"
                else event / SECOND + created
                for _, event, created in writes
            ]
            for name, dtype in spec.features.items()
        },
    )


def stored(client: redis.Redis, spec: FeatureViewSpec, card: int) -> tuple[int | None, object]:
    """A card's stored event µs and the value of its first feature."""
    first = next(iter(spec.features))
    raw_ts, raw_value = client.hmget(
        entity_key({"card_id": card}, spec.join_keys, spec.project),
        [timestamp_field(spec.name), feature_field(spec.name, first)],
    )
    return (None if raw_ts is None else decode_timestamp_micros(raw_ts)), decode_value(raw_value)


# Event times from 1969 to 2100 (before the epoch too), created times in a few seconds, so that ties happen.
WRITES = st.lists(
    st.tuples(
        st.integers(0, KEYS - 1),
        st.sampled_from([-5 * SECOND - 250_000, -SECOND, 0, 1, 1_767_225_600_000_000, 4_102_444_800_123_456]),
        st.integers(0, 3).map(lambda seconds: 1_767_225_600_000_000 + seconds * SECOND),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=WRITES, split=st.integers(1, 40))
def test_the_newest_event_time_then_created_time_wins_in_any_order(
    spec: FeatureViewSpec, redis_client: redis.Redis, writes: list[tuple[int, int, int]], split: int
) -> None:
    redis_client.delete(
        *(entity_key({"card_id": card}, spec.join_keys, spec.project) for card in range(KEYS))
    )
    writer = OnlineWriter(client=redis_client, spec=spec)
    applied = sum(
        writer.write(rows(spec, writes[start : start + split])) for start in range(0, len(writes), split)
    )

    newest: dict[int, tuple[int, int]] = {}
    expected_applied = 0
    for card, event, created in writes:
        if card not in newest or (event, created) > newest[card]:
            newest[card] = (event, created)
            expected_applied += 1
    assert applied == expected_applied
    for card in range(KEYS):
        if card not in newest:
            assert stored(redis_client, spec, card) == (None, None)
            continue
        event, created = newest[card]
        first = next(iter(spec.features))
        value = rows(spec, [(card, event, created)]).features[first][0]
        assert stored(redis_client, spec, card) == (event, value)


def test_rewriting_the_same_rows_applies_nothing(spec: FeatureViewSpec, redis_client: redis.Redis) -> None:
    writer = OnlineWriter(client=redis_client, spec=spec)
    batch = rows(spec, [(card, 1_767_225_600_000_000 + card, 5) for card in range(KEYS)])
    assert writer.write(batch) == KEYS
    assert writer.write(batch) == 0


def test_the_script_is_loaded_again_after_redis_flushed_it(
    spec: FeatureViewSpec, redis_client: redis.Redis
) -> None:
    writer = OnlineWriter(client=redis_client, spec=spec)
    assert writer.write(rows(spec, [(0, SECOND, 1)])) == 1
    redis_client.script_flush()
    assert writer.write(rows(spec, [(0, 2 * SECOND, 1)])) == 1
    assert stored(redis_client, spec, 0)[0] == 2 * SECOND


def test_a_row_feast_wrote_is_compared_by_its_own_timestamp(
    stream_repo: Path, redis_client: redis.Redis
) -> None:
    repo = load_repo(stream_repo)
    spec = repo.spec("card_stats")
    writer = OnlineWriter(client=redis_client, spec=spec)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    start_us = int(start.timestamp()) * SECOND
    assert writer.write(rows(spec, [(7, start_us, start_us)])) == 1

    # Feast writes a newer row over ours; its version field is left from our write.
    feast_row = {"card_id": [7], "event_timestamp": [start + timedelta(seconds=10)]}
    feast_row |= {name: [42 if dtype == "INT64" else 4.2] for name, dtype in spec.features.items()}
    feature_store(repo).write_to_online_store("card_stats", pd.DataFrame(feast_row))
    assert stored(redis_client, spec, 7)[0] == start_us + 10 * SECOND

    # Older than Feast's row, though newer than our own last version: ignored.
    assert writer.write(rows(spec, [(7, start_us + 5 * SECOND, start_us + 5 * SECOND)])) == 0
    first = next(iter(spec.features))
    assert stored(redis_client, spec, 7) == (
        start_us + 10 * SECOND,
        42 if spec.features[first] == "INT64" else 4.2,
    )
    # Newer than Feast's row: applied.
    assert writer.write(rows(spec, [(7, start_us + 20 * SECOND, start_us)])) == 1
    assert stored(redis_client, spec, 7)[0] == start_us + 20 * SECOND
