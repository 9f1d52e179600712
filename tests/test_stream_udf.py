"""A stream feature view's udf runs in the worker before aggregation, checked against brute force.

The udf's results are recomputed here in plain Python from the raw events, independently of the
worker, and compared as of random times over random batchings; the events it fails on go to the
dead-letter topic with reason ``transform`` and the error; a udf that fails on every event stops the
worker before it writes; and ``plan`` refuses a udf that sluice cannot run or whose results would
depend on batching.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import redis

from features.config import SluiceConfig
from features.repo import RepoLoadError, load_repo
from features.validation import InvalidDefinitions
from offline_store.dataset import OfflineDataset
from streams.backfill import file_messages, plan_backfill
from streams.dead_letters import SourceRecord
from streams.metrics import WorkerMetrics
from streams.transform import TransformBroken
from tests.reference import value_at
from tests.streaming import dead_letters, partition_processor

BASE = datetime(2026, 1, 1, tzinfo=UTC)
SECOND = 1_000_000

HEAD = """
from datetime import timedelta

import pandas as pd
from feast import Aggregation, Entity, Field, FileSource, KafkaSource, ValueType
from feast.data_format import JsonFormat
from feast.stream_feature_view import stream_feature_view
from feast.types import Float64, Int64

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
payments = KafkaSource(
    name="payments",
    topic="{topic}",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, amount DOUBLE, country STRING, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(seconds=5),
    batch_source=FileSource(name="history", path="offline", timestamp_field="event_timestamp"),
)
"""

VIEW = """
@stream_feature_view(
    entities=[card], ttl=timedelta(days=1), mode="{mode}", source=payments, timestamp_field="ts",
    schema=[
        Field(name="card_id", dtype=Int64),
        Field(name="cents_sum_30s", dtype=Float64),
        Field(name="cents_count_10s", dtype=Int64),
        Field(name="fee_max_1m", dtype=Float64),
    ],
    aggregations=[
        Aggregation(column="cents", function="sum", time_window=timedelta(seconds=30),
                    slide_interval=timedelta(seconds=10), name="cents_sum_30s"),
        Aggregation(column="cents", function="count", time_window=timedelta(seconds=10),
                    name="cents_count_10s"),
        Aggregation(column="fee", function="max", time_window=timedelta(seconds=60), name="fee_max_1m"),
    ],
)
def card_stats(events):
{body}
"""

# The same transformation in both modes: amounts in cents, a fee that depends on the country, and an
# error on amounts over 900 (bad data for this udf).
BODIES = {
    "python": """
    for amount in events["amount"]:
        if amount is not None and amount > 900:
            raise ValueError(f"amount {amount} is over the limit")
    return {
        "cents": [None if amount is None else round(amount * 100, 0) for amount in events["amount"]],
        "fee": [
            None if amount is None else amount * (0.03 if country == "FR" else 0.01) + 0.25
            for amount, country in zip(events["amount"], events["country"])
        ],
    }
""",
    "pandas": """
    if (events["amount"] > 900).any():
        raise ValueError("an amount is over the limit")
    out = pd.DataFrame()
    out["cents"] = (events["amount"] * 100).round()
    rate = events["country"].map(lambda country: 0.03 if country == "FR" else 0.01)
    out["fee"] = events["amount"] * rate + 0.25
    return out
""",
}


def repo_with(root: Path, *, project: str, topic: str, body: str, mode: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sluice.yaml").write_text(f"project: {project}\n")
    (root / "definitions.py").write_text(
        HEAD.replace("{topic}", topic) + VIEW.replace("{mode}", mode).replace("{body}", body)
    )
    return root


def events(count: int, *, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    base_us = int(BASE.timestamp() * SECOND)
    rows = []
    for index in range(count):
        ts_us = base_us + index * 20_000 - rng.randrange(3 * SECOND)
        roll = rng.random()
        amount = (
            None
            if roll < 0.03
            else (round(rng.uniform(901, 2000), 2) if roll < 0.06 else round(rng.lognormvariate(3, 1), 2))
        )
        if amount is not None and amount > 900 and rng.random() < 0.5:
            amount = round(rng.uniform(1, 900), 2)
        rows.append(
            {
                "card_id": rng.randrange(6),
                "amount": amount,
                "country": rng.choice(["FR", "DE", "NL"]),
                "ts": datetime.fromtimestamp(ts_us / SECOND, UTC).isoformat(),
            }
        )
    return rows


def brute_force(raw: list[dict[str, object]]) -> pd.DataFrame:
    """The udf's output per event, recomputed here; the events it fails on are left out."""
    frame = pd.DataFrame(raw)
    frame["order"] = np.arange(len(frame))
    frame["ts_us"] = pd.to_datetime(frame["ts"], format="ISO8601").astype("int64") // 1000
    amount = frame["amount"].astype(float)
    frame["cents"] = (amount * 100).round()
    frame["fee"] = amount * np.where(frame["country"] == "FR", 0.03, 0.01) + 0.25
    return frame[~(amount > 900)]


def assert_rows_match(
    dataset: OfflineDataset, truth: pd.DataFrame, rng: np.random.Generator, *, label: str
) -> None:
    """The dataset's newest row as of random times equals the brute-force value, for every card."""
    spec = dataset.spec
    rows = dataset.read().to_pandas()
    rows["at"] = (rows["event_timestamp"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    rows = rows.sort_values(["at", "source_offset"], na_position="first", kind="stable")
    newest = int(truth["ts_us"].max())
    for at in rng.integers(int(truth["ts_us"].min()), newest + 1, 120).tolist():
        for card in range(6):
            mine = rows[(rows["card_id"] == card) & (rows["at"] <= at)]
            expected = value_at(truth, spec, key="card_id", time="ts_us", order="order", entity=card, at=at)
            for feature in spec.features:
                got = (
                    (0 if feature == "cents_count_10s" else np.nan) if mine.empty else mine.iloc[-1][feature]
                )
                np.testing.assert_allclose(
                    np.nan if got is None or pd.isna(got) else float(got), expected[feature],
                    rtol=1e-9, atol=1e-6, err_msg=f"{label}: {feature} of card {card} at {at}",
                )  # fmt: skip


@pytest.mark.stack
@pytest.mark.parametrize("mode", ["python", "pandas"])
def test_the_udf_feeds_the_aggregations_as_a_brute_force_recomputation_over_random_batchings(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis, mode: str
) -> None:
    raw = events(1_500, seed=7)
    truth = brute_force(raw)
    failing = len(raw) - len(truth)
    assert failing > 10
    rng = np.random.default_rng(1)
    for trial in range(2):
        repo = repo_with(
            tmp_path / f"repo{trial}",
            project=f"{project}{trial}",
            topic=f"{topic}{trial}",
            body=BODIES[mode],
            mode=mode,
        )
        spec = load_repo(repo).spec("card_stats")
        assert spec.transform is not None and spec.transform.output_types == {
            "cents": "FLOAT64",
            "fee": "FLOAT64",
        }
        records = [
            SourceRecord(topic=spec.topic, partition=0, offset=offset, key=None, value=orjson.dumps(event))
            for offset, event in enumerate(raw)
        ]
        processor = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
        processor.start(first_offset=0, history=[])
        start, dead = 0, 0
        while start < len(records):
            size = int(rng.choice([1, 7, 64, 333]))
            dead += processor.write(processor.prepare(records[start : start + size])).dead_letters
            start += size
        assert dead == failing

        assert_rows_match(OfflineDataset(spec=spec), truth, rng, label=mode)

    letters = dead_letters(spec.topic)
    assert len(letters) == failing
    for value, headers in letters:
        assert headers["sluice.reason"] == b"transform"
        assert b"over the limit" in headers["sluice.detail"]
        assert orjson.loads(value)["amount"] > 900


@pytest.mark.parametrize("mode", ["python", "pandas"])
def test_a_backfill_from_a_file_runs_the_udf_as_the_stream_does(
    tmp_path: Path, project: str, mode: str
) -> None:
    raw = events(800, seed=11)
    truth = brute_force(raw)
    repo = repo_with(tmp_path / "repo", project=project, topic="payments", body=BODIES[mode], mode=mode)
    spec = load_repo(repo).spec("card_stats")
    history = tmp_path / "history.parquet"
    frame = pd.DataFrame(raw)
    frame["ts"] = pd.to_datetime(frame["ts"], format="ISO8601")
    frame.to_parquet(history)
    plan = plan_backfill(spec, file_messages(history, spec), cutover=BASE + timedelta(days=1))
    assert plan.report.rejected == {"transform": len(raw) - len(truth)}
    dataset = OfflineDataset(spec=spec)
    plan.write(dataset)
    assert_rows_match(dataset, truth, np.random.default_rng(2), label=f"backfill, {mode}")


@pytest.mark.stack
def test_a_udf_that_fails_on_every_event_stops_the_worker_before_it_writes(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    broken = "    return {'cents': [amount / 0 for amount in events['amount']], 'fee': events['amount']}"
    repo = repo_with(tmp_path / "repo", project=project, topic=topic, body=BODIES["python"], mode="python")
    spec = load_repo(repo).spec("card_stats")
    processor = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
    # The function from its source is what runs: swap in a broken one, as a bad deploy would.
    from features.udf import load_udf

    processor.transform.udf.function = load_udf(f"def card_stats(events):\n{broken}\n", name="card_stats")
    raw = [event for event in events(300, seed=3) if event["amount"] is not None]
    records = [
        SourceRecord(topic=spec.topic, partition=0, offset=offset, key=None, value=orjson.dumps(event))
        for offset, event in enumerate(raw)
    ]
    processor.start(first_offset=0, history=[])
    assert processor.write(processor.prepare(records[:100])).dead_letters == 100
    assert processor.write(processor.prepare(records[100:200])).dead_letters == 100
    with pytest.raises(
        TransformBroken, match=r"failed on every event of 3 batches in a row \(last: ZeroDivisionError"
    ):
        processor.prepare(records[200:])
    assert not list(OfflineDataset(spec=spec).batch_files())


def test_a_spark_udf_is_refused_with_what_to_use_instead(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, project="refusals", topic="unused", body="    return events", mode="spark")
    with pytest.raises(RepoLoadError, match="use mode='python' or mode='pandas'"):
        load_repo(repo)


@pytest.mark.parametrize(
    ("body", "mode", "message"),
    [
        (
            "    out = pd.DataFrame()\n    out['cents'] = events['amount'] - events['amount'].mean()\n"
            "    out['fee'] = events['amount']\n    return out",
            "pandas",
            "is not row-wise",
        ),
        (
            "    import random\n"
            "    return {'cents': [random.random() for _ in events['amount']], 'fee': events['amount']}",
            "python",
            "is not deterministic",
        ),
        ("    return {'cents': events['amount']}", "python", "its output has no column 'fee'"),
        (
            "    return {'cents': [math.floor(a) for a in events['amount']], 'fee': events['amount']}",
            "python",
            "import what it uses inside its body",
        ),
        ("    raise RuntimeError('always')", "python", "fails on every sample event (RuntimeError: always)"),
    ],
)
def test_plan_refuses_a_udf_it_cannot_run_and_says_what_to_change(
    tmp_path: Path, body: str, mode: str, message: str
) -> None:
    repo = repo_with(tmp_path, project="refusals", topic="unused", body=body, mode=mode)
    with pytest.raises(InvalidDefinitions) as raised:
        load_repo(repo)
    assert any(message in str(error) and error.name == "card_stats" for error in raised.value.errors), str(
        raised.value
    )


@pytest.mark.stack
@pytest.mark.parametrize("engine", ["kafka", "faust"])
def test_a_worker_with_a_broken_udf_stops_and_says_why_without_emptying_the_stream(
    tmp_path: Path, project: str, topic: str, engine: str
) -> None:
    """Every event over the limit: the udf fails on all of them. The worker dead-letters at most two
    batches, then exits with the reason, and the rest of the stream stays in the topic, uncommitted."""
    from tests.streaming import committed, delete_topics, produce, sluice, start_worker, stop

    repo = repo_with(tmp_path / "repo", project=project, topic=topic, body=BODIES["python"], mode="python")
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 1\n")
    assert sluice(repo, "apply").returncode == 0
    over = [{**event, "amount": 950.0} for event in events(400, seed=4)]
    worker = None
    try:
        produce(topic, over)
        log = tmp_path / "worker.log"
        worker = start_worker(repo, log, "--engine", engine, "--batch-size", "50")
        assert worker.wait(timeout=120) != 0, log.read_text()[-3000:]
        output = log.read_text()
        assert "failed on every event of 3 batches in a row" in output, output[-3000:]
        assert "Traceback" not in output.split("failed on every event")[-1][:400]
        done = committed(f"sluice-{project}", topic).get(0, 0)
        letters = dead_letters(topic)
        assert len(letters) <= 2 * 50 and done <= 2 * 50 < len(over)
        assert all(headers["sluice.reason"] == b"transform" for _, headers in letters)
    finally:
        if worker is not None and worker.poll() is None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")
