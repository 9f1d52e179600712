"""``sluice backfill``: history from a Parquet file joined to the live stream at a cutover, checked
against a brute-force recomputation over the file's events before the cutover and the topic's from it."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import SluiceConfig
from features.registry import feature_store
from features.repo import load_repo
from offline_store import get_historical_features
from offline_store.dataset import OfflineDataset
from streams.backfill import file_messages, plan_backfill
from streams.dead_letters import SourceRecord
from streams.metrics import WorkerMetrics
from tests.reference import value_at
from tests.streaming import (
    dead_letters,
    delete_topics,
    make_repo,
    partition_processor,
    produce,
    sluice,
    start_worker,
    stop,
    stream_times,
    wait_until_committed,
)
from tests.test_stream_worker import BASE, SECOND

pytestmark = pytest.mark.stack

CUTOVER = BASE + timedelta(seconds=60)


def _events(rng: random.Random, cards: range, start_s: float, end_s: float, count: int) -> list[dict]:
    """Purchases with times spread over [start, end), in arrival order up to 3 s out of order."""
    events = []
    for index in range(count):
        ts = BASE + timedelta(seconds=start_s + (end_s - start_s) * index / count - rng.uniform(0, 3))
        amount = None if rng.random() < 0.03 else round(rng.lognormvariate(3, 1), 2)
        events.append({"card_id": rng.choice(cards), "amount": amount, "ts": ts})
    return events


@pytest.mark.parametrize("source", ["file", "topic"])
def test_a_backfill_joins_the_stream_at_the_cutover_in_both_stores(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis, source: str
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    rng = random.Random(11)
    # History: 60 s before the cutover (cards 0-29, and 30-39 only there), and 10 s past it that
    # the backfill must leave to the stream. The topic: from 8 s before the cutover (covered by the
    # history, so skipped) to 70 s after it (cards 0-29 and 40-49, new ones).
    history = _events(rng, range(40), 0, 70, 4_000)
    live = _events(rng, [*range(30), *range(40, 50)], 52, 130, 5_000)
    events_file = tmp_path / "history.parquet"
    pq.write_table(pa.Table.from_pylist(history), events_file)
    cutover_us = int(CUTOVER.timestamp()) * SECOND

    group = f"sluice-{project}"
    worker = None
    try:
        produce(topic, [{**event, "ts": event["ts"].isoformat()} for event in live])
        if source == "topic":  # an archive of the source's events, in its JSON format
            produce(f"{topic}.archive", [{**event, "ts": event["ts"].isoformat()} for event in history])
            where = ["--topic", f"{topic}.archive"]
        else:
            where = ["--events", str(events_file)]
        backfilled = sluice(
            repo,
            "backfill",
            "--view",
            "card_stats",
            *where,
            "--cutover",
            CUTOVER.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        assert backfilled.returncode == 0, backfilled.stderr
        kept = sum(event["ts"] < CUTOVER for event in history)
        assert f"{kept} events before" in backfilled.stdout
        worker = start_worker(repo, tmp_path / "worker.log", "--batch-size", "500")
        wait_until_committed(group, topic, workers=[worker], timeout_s=120)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
        letters = dead_letters(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq", f"{topic}.archive")
    # The topic's events before the cutover are the history's: skipped, not late.
    assert letters == []

    def frame(rows: list[dict], order_from: int) -> pd.DataFrame:
        table = pd.DataFrame(rows)
        table["ts_us"] = (table["ts"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        table["order"] = order_from + np.arange(len(table))
        table["amount"] = table["amount"].astype(float)
        return table

    before, after = frame(history, 0), frame(live, 10**9)
    truth = pd.concat(
        [before[before["ts_us"] < cutover_us], after[after["ts_us"] >= cutover_us]], ignore_index=True
    )
    spec = load_repo(repo).spec("card_stats")

    # Training set: labels before, around and after the cutover, up to the slowest partition's stream time.
    newest = min(caught_up.values())
    labels = pd.DataFrame(
        {
            "card_id": [rng.randrange(50) for _ in range(600)],
            "event_timestamp": [
                BASE + timedelta(microseconds=rng.randrange(0, newest - int(BASE.timestamp()) * SECOND))
                for _ in range(600)
            ],
        }
    )
    training = get_historical_features(
        entity_df=labels, features=[f"card_stats:{name}" for name in spec.features], repo=load_repo(repo)
    ).to_df()
    for row in training.itertuples(index=False):
        at = (row.event_timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        expected = value_at(
            truth, spec, key="card_id", time="ts_us", order="order", entity=row.card_id, at=at
        )
        for feature in spec.features:
            got = getattr(row, feature)
            got = np.nan if got is None or pd.isna(got) else float(got)
            np.testing.assert_allclose(
                got, expected[feature], rtol=1e-9, atol=1e-6,
                err_msg=f"{feature} of card {row.card_id} at {row.event_timestamp}",
            )  # fmt: skip

    # Online, read by Feast's SDK: live cards at their partition's stream time, history-only cards decayed.
    cards = list(range(50))
    served = (
        feature_store(load_repo(repo))
        .get_online_features(
            features=[f"card_stats:{name}" for name in spec.features],
            entity_rows=[{"card_id": card} for card in cards],
        )
        .to_dict()
    )
    for position, card in enumerate(cards):
        at = caught_up.get(card, 2**62)
        expected = value_at(truth, spec, key="card_id", time="ts_us", order="order", entity=card, at=at)
        for feature in spec.features:
            got = served[feature][position]
            np.testing.assert_allclose(
                np.nan if got is None else float(got), expected[feature], rtol=1e-9, atol=1e-6,
                err_msg=f"online {feature} of card {card}",
            )  # fmt: skip

    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_file_without_the_columns_the_view_reads_is_refused_with_what_to_fix(
    tmp_path: Path, project: str, topic: str
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    events_file = tmp_path / "history.parquet"
    pq.write_table(pa.table({"card_id": [1], "ts": [BASE]}), events_file)
    refused = sluice(
        repo, "backfill", "--view", "card_stats", "--events", str(events_file), "--cutover", "2026-01-02"
    )
    assert refused.returncode == 1
    assert "has no column amount" in refused.stderr
    assert "join keys, timestamp field and value columns" in refused.stderr
    neither = sluice(repo, "backfill", "--view", "card_stats", "--cutover", "2026-01-02")
    assert neither.returncode == 1
    assert "give the history as one of --events FILE.parquet or --topic TOPIC" in neither.stderr
    # Nothing was set aside or written.
    assert not (repo / "offline").exists()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    cutover_s=st.integers(15, 100),
    batch_size=st.integers(1, 200),
)
def test_backfill_rows_and_stream_rows_give_the_value_at_any_time_for_any_cutover_and_batching(
    tmp_path: Path,
    stack_config: SluiceConfig,
    project: str,
    topic: str,
    redis_client: redis.Redis,
    seed: int,
    cutover_s: int,
    batch_size: int,
) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        spec = load_repo(make_repo(Path(root) / "repo", project=project, topic=topic)).spec("card_stats")
        cutover_us = int(BASE.timestamp() + cutover_s) * SECOND
        # 600 purchases of 4 cards over 2 minutes, arriving up to 3 s out of order, some ties.
        ts = int(BASE.timestamp()) * SECOND + np.sort(rng.integers(0, 120, 600)) * SECOND
        ts = ts + rng.choice([0, 250_000], 600)
        arrival = np.argsort(ts + rng.integers(0, 3 * SECOND, 600), kind="stable")
        frame = pd.DataFrame(
            {
                "card_id": rng.integers(0, 4, 600)[arrival],
                "amount": np.where(rng.random(600) < 0.05, np.nan, np.round(rng.normal(40, 20, 600), 2)),
                "ts_us": ts[arrival],
            }
        )
        frame["order"] = np.arange(len(frame))
        history_file = Path(root) / "history.parquet"
        pq.write_table(
            pa.table(
                {
                    "card_id": frame["card_id"].to_numpy(),
                    "amount": pa.array(frame["amount"].to_numpy(), from_pandas=True),
                    "ts": pa.array(frame["ts_us"].to_numpy(), type=pa.timestamp("us", tz="UTC")),
                }
            ),
            history_file,
        )
        cutover = datetime.fromtimestamp(cutover_us / SECOND, UTC)
        plan = plan_backfill(spec, file_messages(history_file, spec), cutover=cutover)
        plan.write(OfflineDataset(spec=spec))

        # The topic holds everything from 10 s before the cutover; the processor skips what is before it.
        live = frame[frame["ts_us"] >= cutover_us - 10 * SECOND].reset_index(drop=True)
        records = [
            SourceRecord(topic=topic, partition=0, offset=offset, key=None, value=orjson.dumps({
                "card_id": int(row.card_id), "amount": None if np.isnan(row.amount) else row.amount,
                "ts": datetime.fromtimestamp(row.ts_us / SECOND, UTC).isoformat(),
            }))
            for offset, row in enumerate(live.itertuples(index=False))
        ]  # fmt: skip
        processor = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
        processor.start(first_offset=0, history=[])
        for start in range(0, len(records), batch_size):
            outcome = processor.write(processor.prepare(records[start : start + batch_size]))
            assert outcome.dead_letters == 0

        rows = OfflineDataset(spec=spec).read().to_pandas()
        rows["at"] = (rows["event_timestamp"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        rows = rows.sort_values(["at", "source_offset"], na_position="first", kind="stable")
        truth = pd.concat([frame[frame["ts_us"] < cutover_us], live[live["ts_us"] >= cutover_us]])
        truth["order"] = np.concatenate(
            [frame["order"][frame["ts_us"] < cutover_us], 10**6 + np.flatnonzero(live["ts_us"] >= cutover_us)]
        )
        stream_time = int(live["ts_us"].max())
        times = rng.integers(int(BASE.timestamp()) * SECOND, stream_time + 1, 150)
        # Reads up to the stream time: past it, the stream has not written its rows yet, and the backfill's
        # decay rows (history alone) are all there is.
        points = rows["at"].to_numpy()
        points = points[points <= stream_time]
        for at in np.concatenate([times, points[rng.integers(0, len(points), 50)]]).tolist():
            for card in range(4):
                mine = rows[(rows["card_id"] == card) & (rows["at"] <= at)]
                expected = value_at(
                    truth, spec, key="card_id", time="ts_us", order="order", entity=card, at=at
                )
                for feature in spec.features:
                    got = np.nan if mine.empty else mine.iloc[-1][feature]
                    if mine.empty and feature == "txn_count_10s":
                        got = 0
                    np.testing.assert_allclose(
                        np.nan if got is None or pd.isna(got) else float(got), expected[feature],
                        rtol=1e-9, atol=1e-6, err_msg=f"{feature} of card {card} at {at}",
                    )  # fmt: skip
