"""The offline store on object storage: ``s3://`` against the local stack's S3 server (moto's server mode).

The worker (killed once mid-stream), ``verify``, ``materialize``, ``backfill`` and
``get_historical_features`` all run with the dataset at ``s3://``; what they wrote is read back with
a plain S3 REST client (``urllib``, no pyarrow), and training sets from ``s3://`` equal those from a
local copy of the same objects.
"""

from __future__ import annotations

import io
import os
import re
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis

from features.config import OfflineStoreConfig
from features.repo import load_repo
from offline_store.dataset import OfflineDataset
from offline_store.historical import get_historical_features
from offline_store.storage import Location, StorageError
from tests.s3 import ENDPOINT, s3_keys, s3_object
from tests.streaming import (
    delete_topics,
    end_offsets,
    make_repo,
    produce,
    progress,
    sluice,
    start_worker,
    stop,
    stream_times,
    wait_until_committed,
)
from tests.test_stream_worker import assert_same, online_rows, reference, transactions

# --- the file-system layer -------------------------------------------------------------------------


def test_a_location_refuses_what_it_cannot_store_with_what_to_write() -> None:
    with pytest.raises(StorageError, match="the scheme 'hdfs' is not one of file, s3, gs"):
        Location.parse("hdfs://namenode/features")
    with pytest.raises(StorageError, match="names no bucket: write s3://<bucket>/<prefix>"):
        Location.parse("s3:///features")


def test_a_local_write_leaves_no_temporary_file_and_a_file_url_is_a_path(tmp_path: Path) -> None:
    target = Location.parse(f"file://{tmp_path}/a/b.bin")
    target.write_bytes(b"payload")
    assert target.is_local and target.read_bytes() == b"payload"
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == ["b.bin"]


@pytest.mark.stack
def test_s3_files_round_trip_and_a_missing_bucket_names_the_location(bucket: str) -> None:
    folder = Location.parse(f"s3://{bucket}/x", OfflineStoreConfig(endpoint_url=ENDPOINT))
    folder.child("date=2026-01-01", "one.bin").write_bytes(b"1")
    folder.child("date=2026-01-02", "two.bin").write_bytes(b"22")
    assert sorted(file.path for file in folder.files()) == [
        f"{bucket}/x/date=2026-01-01/one.bin",
        f"{bucket}/x/date=2026-01-02/two.bin",
    ]
    assert s3_object(bucket, "x/date=2026-01-02/two.bin") == b"22"
    moved = folder.at(f"{bucket}/y")
    folder.move_to(moved)
    assert sorted(s3_keys(bucket, "")) == ["y/date=2026-01-01/one.bin", "y/date=2026-01-02/two.bin"]
    missing = Location.parse(
        f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/a", OfflineStoreConfig(endpoint_url=ENDPOINT)
    )
    with pytest.raises(StorageError, match="object storage failed at s3://no-such-bucket"):
        missing.write_bytes(b"1")


def test_validation_refuses_a_batch_source_on_a_file_system_sluice_cannot_write(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", project="p", topic="t", offline="hdfs://namenode/offline")
    result = sluice(repo, "plan")
    assert result.returncode != 0
    assert "sluice cannot write offline data at 'hdfs://namenode/offline'" in result.stderr


# --- every command on s3:// ------------------------------------------------------------------------


@pytest.mark.stack
def test_worker_verify_and_materialize_on_s3_with_a_sigkill_mid_stream(
    tmp_path: Path, project: str, topic: str, bucket: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic, offline=f"s3://{bucket}/features")
    assert sluice(repo, "apply").returncode == 0
    events = transactions(30_000, cards=1_500, seed=11)
    group = f"sluice-{project}"
    worker = None
    try:
        produce(topic, events)
        worker = start_worker(repo, tmp_path / "worker.log")
        deadline = time.monotonic() + 120
        while progress(group, topic, len(events)) < 0.4:
            assert time.monotonic() < deadline, "no progress to 40%"
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker = start_worker(repo, tmp_path / "worker.log")
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
        ends = end_offsets(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")

    # Every offset of every partition is in exactly one object, as a plain S3 client lists them.
    spec = load_repo(repo).spec("card_stats")
    # (pyarrow leaves an empty marker object for a folder whose last file it deleted: not data.)
    keys = [key for key in s3_keys(bucket, "features/card_stats/date=") if not key.endswith("/")]
    assert keys and all(key.endswith(".parquet") for key in keys), keys
    # The state snapshots are beside the data, in the bucket too, at offsets that were committed. (A
    # partition the restarted worker had nothing left to read on has none: the first worker was killed
    # before its first snapshot, and the second never built that partition's state.)
    snapshots = s3_keys(bucket, "features/card_stats/_snapshots/")
    taken = [tuple(map(int, re.findall(r"-(\d{5})-(\d{20})\.npz$", key)[0])) for key in snapshots]
    assert taken and all(0 <= offset <= ends[partition] for partition, offset in taken), snapshots
    for partition, end in ends.items():
        named = [re.search(r"-(\d{5})-(\d{20})-(\d{20})\.parquet$", key) for key in keys]
        ranges = sorted({(int(m[2]), int(m[3])) for m in named if m is not None and int(m[1]) == partition})
        covered = 0
        for first, last in ranges:
            assert first == covered, (
                f"partition {partition}: offsets {covered}..{first - 1} missing or repeated"
            )
            covered = last + 1
        assert covered == end
    # The objects, read without pyarrow's file system, hold the rows the dataset reads.
    raw = pd.concat([pq.read_table(io.BytesIO(s3_object(bucket, key))).to_pandas() for key in sorted(keys)])
    assert len(raw) == OfflineDataset(spec=spec).read().num_rows

    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    expected = reference(events, repo, caught_up)
    assert_same(online_rows(redis_client, repo, cards), expected)

    # Redis emptied: materialize from s3:// rebuilds exactly what the worker served.
    redis_client.delete(*redis_client.scan_iter(match=f"*{project}", count=1000))
    materialized = sluice(repo, "materialize")
    assert materialized.returncode == 0, materialized.stderr
    assert_same(online_rows(redis_client, repo, cards), expected)
    assert sluice(repo, "verify").returncode == 0


@pytest.mark.stack
def test_training_sets_from_s3_equal_those_from_a_local_copy_of_the_objects(
    tmp_path: Path, project: str, topic: str, bucket: str
) -> None:
    remote = load_repo(make_repo(tmp_path / "s3", project=project, topic=topic, offline=f"s3://{bucket}/f"))
    local = load_repo(make_repo(tmp_path / "local", project=project, topic=topic))
    rng = np.random.default_rng(5)
    spec = remote.spec("card_stats")
    base_us = 1_767_225_600_000_000  # 2026-01-01, rows over three days
    for partition in range(3):
        count = 400
        keys = rng.integers(0, 50, count).tolist()
        times = np.sort(base_us + rng.integers(0, 3 * 86_400_000_000, count))
        features = {
            name: rng.integers(0, 9, count).tolist() if dtype == "INT64" else rng.normal(size=count)
            for name, dtype in spec.features.items()
        }
        for dataset in (OfflineDataset(spec=spec), OfflineDataset(spec=local.spec("card_stats"))):
            dataset.write_batch(
                partition=partition,
                first_offset=partition * 1000,
                last_offset=partition * 1000 + count - 1,
                keys=keys,
                event_times_us=times,
                created_times_us=times,
                features=features,
                offsets=np.arange(count, dtype=np.int64),
            )
    entities = pd.DataFrame(
        {
            "card_id": rng.integers(0, 60, 500),
            "event_timestamp": pd.to_datetime(
                base_us + rng.integers(-86_400_000_000, 4 * 86_400_000_000, 500), unit="us", utc=True
            ),
        }
    )
    names = [f"card_stats:{name}" for name in spec.features]
    from_s3 = get_historical_features(entity_df=entities, features=names, repo=remote).to_df()
    from_disk = get_historical_features(entity_df=entities, features=names, repo=local).to_df()
    assert len(from_s3) == 500 and from_s3[names[0].split(":")[1]].notna().any()
    pd.testing.assert_frame_equal(from_s3, from_disk)


@pytest.mark.stack
def test_backfill_reads_its_events_from_s3_and_writes_the_view_there(
    tmp_path: Path, project: str, topic: str, bucket: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic, offline=f"s3://{bucket}/features")
    assert sluice(repo, "apply").returncode == 0
    try:
        events = pd.DataFrame(transactions(2_000, cards=100, seed=12))
        events["ts"] = pd.to_datetime(events["ts"], utc=True)
        buffer = io.BytesIO()
        events.to_parquet(buffer)
        Location.parse(
            f"s3://{bucket}/history/events.parquet", OfflineStoreConfig(endpoint_url=ENDPOINT)
        ).write_bytes(buffer.getvalue())
        cutover = (events["ts"].max() + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        result = sluice(
            repo,
            "backfill",
            "--view",
            "card_stats",
            "--events",
            f"s3://{bucket}/history/events.parquet",
            "--cutover",
            cutover,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        delete_topics(topic, f"{topic}.dlq")
    keys = s3_keys(bucket, "features/card_stats/")
    assert any("/backfill-" in key for key in keys) and any(
        key.endswith("_backfill/seed.parquet") for key in keys
    )
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    missing = sluice(
        repo,
        "backfill",
        "--view",
        "card_stats",
        "--events",
        f"s3://{bucket}/history/none.parquet",
        "--cutover",
        cutover,
    )
    assert missing.returncode == 1 and f"s3://{bucket}/history/none.parquet" in missing.stderr
