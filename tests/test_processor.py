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
from offline_store.dataset import OfflineDataset
from online_store.writer import OnlineWriter
from streams import producer
from streams.dead_letters import DeadLetterSink, SourceRecord
from streams.metrics import WorkerMetrics
from streams.processor import PartitionProcessor
from tests.reference import change_points, expected_rows
from tests.streaming import make_repo
from tests.test_stream_worker import assert_same, online_rows, transactions

pytestmark = pytest.mark.stack


def test_a_failed_parquet_write_is_retried_without_counting_events_twice(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    spec = load_repo(repo).spec("card_stats")
    # The offline path is a file for now, so the Parquet write fails.
    Path(spec.offline_path).write_text("in the way")
    processor = PartitionProcessor(
        spec=spec,
        partition=0,
        dataset=OfflineDataset(spec=spec),
        writer=OnlineWriter(client=redis_client, spec=spec),
        dead_letters=DeadLetterSink(
            producer=producer(stack_config.kafka), topic=spec.dlq_topic, feature_view="card_stats"
        ),
        metrics=WorkerMetrics(),
    )
    events = transactions(500, cards=20, seed=5)
    records = [
        SourceRecord(topic=topic, partition=0, offset=offset, key=None, value=orjson.dumps(event))
        for offset, event in enumerate(events)
    ]
    batch = processor.prepare(records)
    with pytest.raises(OSError):
        processor.write(batch)

    # The same records again apply nothing: they are already in the window state.
    again = processor.prepare(records)
    assert again.computed is None and again.replayed == 0

    Path(spec.offline_path).unlink()  # the disk is back
    outcome = processor.write(batch)
    assert outcome.accepted == 500

    frame = pd.DataFrame(events)
    frame["ts_us"] = pd.to_datetime(frame["ts"]).astype("int64") // 1000
    frame["order"] = np.arange(len(frame))
    frame["amount"] = frame["amount"].astype(float)
    expected = expected_rows(frame, spec, key="card_id", time="ts_us", order="order")
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
