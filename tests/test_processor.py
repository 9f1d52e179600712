"""A prepared batch written again after a sink failure writes the same rows and counts nothing twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import redis

from features.config import SluiceConfig
from features.repo import load_repo
from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from streams.dead_letters import SourceRecord
from streams.metrics import WorkerMetrics
from streams.processor import SinkFailed
from tests.reference import change_points, expected_online
from tests.streaming import make_repo, partition_processor
from tests.test_stream_worker import assert_same, online_rows, transactions

pytestmark = pytest.mark.stack


def test_a_failed_parquet_write_is_retried_without_counting_events_twice(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    spec = load_repo(repo).spec("card_stats")
    # The offline path is a file for now, so the Parquet write fails.
    Path(spec.offline_path).parent.mkdir(parents=True)
    Path(spec.offline_path).write_text("in the way")
    processor = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
    events = transactions(500, cards=20, seed=5)
    records = [
        SourceRecord(topic=topic, partition=0, offset=offset, key=None, value=orjson.dumps(event))
        for offset, event in enumerate(events)
    ]
    batch = processor.prepare(records)
    with pytest.raises(SinkFailed) as failed:
        processor.write(batch)
    assert failed.value.sink == "offline" and isinstance(failed.value.error, OSError)

    # The same records again apply nothing: they are already in the window state.
    again = processor.prepare(records)
    assert again.computed is None and again.replayed == 0

    Path(spec.offline_path).unlink()  # the disk is back
    outcome = processor.write(batch)
    assert outcome.accepted == 500

    frame = pd.DataFrame(events)
    frame["ts_us"] = pd.to_datetime(frame["ts"], format="ISO8601").astype("int64") // 1000
    frame["order"] = np.arange(len(frame))
    frame["amount"] = frame["amount"].astype(float)
    # One partition: every card's stream time is the newest event's.
    newest = int(frame["ts_us"].max())
    expected = expected_online(
        frame,
        spec,
        key="card_id",
        time="ts_us",
        order="order",
        stream_time=dict.fromkeys(frame["card_id"], newest),
    )
    assert_same(online_rows(redis_client, repo, sorted(expected.index)), expected)
    files = list(OfflineDataset(spec=spec).batch_files())
    assert {(file.first_offset, file.last_offset) for file in files} == {(0, 499)}
    # One offline row per change point: each event time, and each time a pane leaves a window.
    offline = OfflineDataset(spec=spec).read()
    written = list(
        zip(offline["card_id"].to_pylist(), offline["event_timestamp"].cast("int64").to_pylist(), strict=True)
    )
    assert len(written) == len(set(written))
    assert set(written) == change_points(frame, spec, key="card_id", time="ts_us")


def test_a_sum_past_int64_is_stored_as_null_and_counted_and_the_batch_goes_on(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    from datetime import timedelta

    from features.spec import AggregationSpec
    from online_store.layout import decode_value, entity_key, feature_field

    total, last = (
        AggregationSpec(
            feature=f"units_{function}",
            column="units",
            function=function,
            window=timedelta(hours=1),
            slide=timedelta(hours=1),
            dtype="INT64",
        )
        for function in ("sum", "last")
    )
    spec = FeatureViewSpec(
        name="stock",
        project=project,
        topic=topic,
        join_keys={"sku": "INT64"},
        timestamp_field="ts",
        message_schema={"sku": "INT64", "units": "INT64", "ts": "UNIX_TIMESTAMP"},
        features={"units_sum": "INT64", "units_last": "INT64"},
        aggregations=(total, last),
        offline_path=str(tmp_path / "offline"),
    )
    metrics = WorkerMetrics()
    processor = partition_processor(spec, redis_client, stack_config, metrics)
    # SKU 1: 2^62 twice is 2^63, one past INT64. SKU 2: 2^61 twice fits. SKU 3: 2^63 - 1 and -2,
    # exact although float64 rounds both sums and the last value (2^63 - 1 becomes 2^63).
    events = [(1, 2**62, 1), (2, 2**61, 2), (1, 2**62, 3), (2, 2**61, 4), (3, 2**63 - 1, 5), (3, -2, 6)]
    records = [
        SourceRecord(topic=topic, partition=0, offset=offset, key=None,
                     value=orjson.dumps({"sku": sku, "units": units, "ts": 1.7e9 + second}))
        for offset, (sku, units, second) in enumerate(events)
    ]  # fmt: skip
    outcome = processor.write(processor.prepare(records))
    assert outcome.accepted == 6 and outcome.dead_letters == 0

    def online(sku: int, feature: str) -> object:
        key = entity_key({"sku": sku}, spec.join_keys, project)
        return decode_value(redis_client.hget(key, feature_field("stock", feature)))

    assert online(1, "units_sum") is None
    assert online(2, "units_sum") == 2**62
    assert online(3, "units_sum") == 2**63 - 3
    assert online(3, "units_last") == -2
    offline = processor.dataset.read().to_pylist()
    at_3 = sorted(
        (row["event_timestamp"], row["units_sum"], row["units_last"]) for row in offline if row["sku"] == 3
    )
    assert [(total, newest) for _, total, newest in at_3] == [(2**63 - 1, 2**63 - 1), (2**63 - 3, -2)]
    assert metrics.overflows.labels("stock", "units_sum")._value.get() == 1


def test_a_new_owner_removes_the_temporary_files_a_crash_left_in_its_partition(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    spec = load_repo(repo).spec("card_stats")
    folder = Path(spec.offline_path) / "date=2026-01-01"
    folder.mkdir(parents=True)
    # A SIGKILL between writing and renaming leaves these; partition 1's belongs to another owner.
    mine = folder / f".{topic}-00000-{0:020d}-{99:020d}.parquet.0123abcd.tmp"
    theirs = folder / f".{topic}-00001-{0:020d}-{99:020d}.parquet.4567ef01.tmp"
    mine.write_bytes(b"half a file")
    theirs.write_bytes(b"being written")
    processor = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
    processor.start(first_offset=0, history=[])
    assert not mine.exists()
    assert theirs.exists()


def test_a_batch_cut_short_between_its_date_files_is_computed_again_on_restart(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    spec = load_repo(repo).spec("card_stats")
    # The events start a few seconds before midnight: the batch writes one file per date.
    events = transactions(2_000, cards=30, seed=8)
    records = [
        SourceRecord(topic=topic, partition=0, offset=offset, key=None, value=orjson.dumps(event))
        for offset, event in enumerate(events)
    ]
    first = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
    first.write(first.prepare(records))
    files = sorted(OfflineDataset(spec=spec).batch_files(), key=lambda file: file.date)
    assert [file.date for file in files] == ["2025-12-31", "2026-01-01"]
    # A crash after the first date's file and before the second's: no commit, one file of two.
    files[1].location.delete()

    restarted = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
    restarted.start(first_offset=0, history=[])
    assert not list(OfflineDataset(spec=spec).batch_files()), "the partial batch is deleted"
    outcome = restarted.write(restarted.prepare(records))
    assert outcome.accepted == 2_000 and outcome.replayed == 0

    frame = pd.DataFrame(events)
    frame["ts_us"] = pd.to_datetime(frame["ts"], format="ISO8601").astype("int64") // 1000
    offline = OfflineDataset(spec=spec).read()
    written = list(
        zip(offline["card_id"].to_pylist(), offline["event_timestamp"].cast("int64").to_pylist(), strict=True)
    )
    assert len(written) == len(set(written))
    assert set(written) == change_points(frame, spec, key="card_id", time="ts_us")
