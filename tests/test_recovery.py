"""Crashes, restarts and scale-out neither lose nor duplicate a feature row."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import redis

from features.repo import load_repo
from offline_store.dataset import OfflineDataset
from tests.streaming import (
    assert_every_offset_in_exactly_one_batch_file,
    committed,
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

pytestmark = pytest.mark.stack


def test_sigkill_three_times_in_a_200k_event_stream(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    events = transactions(200_000, cards=5_000, seed=3)
    group = f"sluice-{project}"
    worker = None
    try:
        produce(topic, events)
        worker = start_worker(repo, tmp_path / "worker.log")
        for kill_at in (0.2, 0.45, 0.7):
            deadline = time.monotonic() + 120
            while progress(group, topic, len(events)) < kill_at:
                assert time.monotonic() < deadline, f"no progress to {kill_at:.0%}"
                assert worker.poll() is None
                time.sleep(0.1)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            worker = start_worker(repo, tmp_path / "worker.log")
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None

        assert_every_offset_in_exactly_one_batch_file(repo, topic)
        verified = sluice(repo, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
        cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
        assert_same(online_rows(redis_client, repo, cards), reference(events, repo, stream_times(topic)))
        # Restarted workers rebuilt window state by replaying what earlier ones had committed.
        replays = re.findall(
            r"rebuilt window state from (\d+) records", (tmp_path / "worker.log").read_text()
        )
        assert any(int(count) > 0 for count in replays)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")


def test_two_workers_in_one_group_give_the_same_state_as_one(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    single = make_repo(tmp_path / "single", project=f"{project}_one", topic=topic)
    pair = make_repo(tmp_path / "pair", project=f"{project}_two", topic=topic)
    assert sluice(single, "apply").returncode == 0
    assert sluice(pair, "apply").returncode == 0
    events = transactions(40_000, cards=2_000, seed=4)
    workers = []
    try:
        workers = [
            start_worker(single, tmp_path / "single.log"),
            start_worker(pair, tmp_path / "pair-a.log"),
            start_worker(pair, tmp_path / "pair-b.log"),
        ]
        # Produce only once the pair has split the partitions, so that both of them work.
        deadline = time.monotonic() + 60
        while not all(
            re.search(r"assigned \[\(", (tmp_path / log).read_text()) for log in ("pair-a.log", "pair-b.log")
        ):
            assert time.monotonic() < deadline, "the two workers did not both get partitions"
            time.sleep(0.2)
        produce(topic, events)
        wait_until_committed(f"sluice-{project}_one", topic, workers=workers, timeout_s=180)
        wait_until_committed(f"sluice-{project}_two", topic, workers=workers, timeout_s=180)
        # Both workers of the pair got partitions: each rebuilt state for the ones it owned.
        assert "rebuilt window state" in (tmp_path / "pair-a.log").read_text()
        assert "rebuilt window state" in (tmp_path / "pair-b.log").read_text()
        caught_up = stream_times(topic)
    finally:
        for worker in workers:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    one, two = online_rows(redis_client, single, cards), online_rows(redis_client, pair, cards)
    assert_same(two, one)
    assert_same(one, reference(events, single, caught_up))
    for repo in (single, pair):
        assert sluice(repo, "verify").returncode == 0


@pytest.mark.parametrize("engine", ["kafka", "faust"])
def test_sigterm_stops_a_worker_within_10_s_while_redis_is_away_and_the_restart_loses_nothing(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis, engine: str
) -> None:
    import subprocess
    import sys

    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    events = transactions(5_000, cards=200, seed=9)
    group = f"sluice-{project}"
    log = tmp_path / "away.log"
    try:
        produce(topic, events)
        # Nothing listens on port 1: every Redis write fails, an outage the worker retries with backoff.
        with log.open("ab") as output:
            away = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sluice",
                    "--repo",
                    str(repo),
                    "worker",
                    "--engine",
                    engine,
                    "--loglevel",
                    "info",
                ],
                env={**os.environ, "SLUICE_REDIS_URL": "redis://127.0.0.1:1/0"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "writing a batch failed" not in log.read_text():
            assert time.monotonic() < deadline and away.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        signalled = time.monotonic()
        away.send_signal(signal.SIGTERM)
        try:
            away.wait(timeout=15)
        finally:
            away.kill()  # no-op once it has exited; else it would outlive the test
        assert time.monotonic() - signalled < 10
        assert sum(committed(group, topic).values()) == 0  # nothing it could not write was committed

        worker = start_worker(repo, tmp_path / "worker.log")
        try:
            wait_until_committed(group, topic, workers=[worker])
        finally:
            stop(worker)
        caught_up = stream_times(topic)
    finally:
        delete_topics(topic, f"{topic}.dlq")
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(events, repo, caught_up))


def test_a_restart_after_a_clean_stop_replays_nothing_from_its_snapshots_and_stays_exact(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    whole = make_repo(tmp_path / "whole", project=f"{project}_whole", topic=topic)
    assert sluice(repo, "apply").returncode == 0
    assert sluice(whole, "apply").returncode == 0
    events = transactions(30_000, cards=1_000, seed=21)
    group = f"sluice-{project}"
    log = tmp_path / "worker.log"
    worker = None
    try:
        produce(topic, events[:15_000])
        worker = start_worker(repo, log)
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)  # SIGTERM: a clean stop snapshots every partition at its commit
        ends = end_offsets(topic)
        snapshots = sorted(path.name for path in (repo / "offline" / "card_stats" / "_snapshots").iterdir())
        assert [name for name in snapshots if name.endswith(f"{ends[int(name[-31:-26])] - 1:020d}.npz")], (
            snapshots
        )
        produce(topic, events[15_000:])
        worker = start_worker(repo, log)
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        # The same stream, read once by a worker that never stopped: its rows are the truth.
        worker = start_worker(whole, tmp_path / "whole.log")
        wait_until_committed(f"sluice-{project}_whole", topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")
    second_start = log.read_text().split("consuming ")[-1]
    resumed = re.findall(
        r"rebuilt window state from (\d+) records .*\(snapshot at offset (\d+)\)", second_start
    )
    assert len(resumed) == len(ends) and all(count == "0" for count, _ in resumed), second_start[-3000:]
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(events, repo, caught_up))
    pd.testing.assert_frame_equal(_offline_rows(repo), _offline_rows(whole), rtol=1e-9)


def test_a_sigkill_while_a_snapshot_is_written_leaves_a_usable_older_one_and_loses_nothing(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    """The worker is killed the moment a snapshot's temporary file appears (its bytes half written):
    the restart sweeps the temporary file, starts from the snapshot before it (or its checkpoint), and
    the rows are exact."""
    repo = make_repo(tmp_path / "repo", project=project, topic=topic, partitions=1)
    assert sluice(repo, "apply").returncode == 0
    events = transactions(110_000, cards=60_000, seed=24)  # many entities: a snapshot of some MB
    group = f"sluice-{project}"
    folder = repo / "offline" / "card_stats" / "_snapshots"
    log = tmp_path / "worker.log"
    produced = events[:60_000]
    worker = None
    caught: list[str] = []
    try:
        produce(topic, produced)
        for attempt in range(5):  # a write takes milliseconds: a few backlogs, a snapshot a second
            worker = start_worker(repo, log, "--snapshot-interval", "1", "--batch-size", "2000")
            caught = _kill_when_written(worker, folder, timeout_s=60)
            if caught:
                break
            stop(worker)
            more = events[60_000 + 10_000 * attempt : 70_000 + 10_000 * attempt]
            produce(topic, more)
            produced = produced + more
        assert caught, "no snapshot write was caught in five tries"
        assert any(path.name.endswith(".tmp") for path in folder.iterdir())  # the kill left it there
        worker = start_worker(repo, log, "--snapshot-interval", "1")
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")
    assert not any(path.name.endswith(".tmp") for path in folder.iterdir())
    restarted = log.read_text().split("consuming ")[-1]
    assert re.search(r"rebuilt window state from \d+ records .*\(snapshot at offset", restarted), restarted
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cards = sorted({int(event["card_id"]) for event in produced})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(produced, repo, caught_up))


def _kill_when_written(worker: subprocess.Popen[bytes], folder: Path, *, timeout_s: float) -> list[str]:
    """SIGKILL the worker as soon as a temporary snapshot file shows in ``folder`` beside a whole one
    (so that one older snapshot is there to use); its names, or none if the worker wrote none before
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while worker.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            names = [entry.name for entry in os.scandir(folder)]
            temporary = [name for name in names if name.endswith(".tmp")]
            if temporary and any(name.endswith(".npz") for name in names):
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                return temporary
        time.sleep(0.0005)
    return []


def test_the_faust_engine_writes_snapshots_and_restarts_from_them_exactly(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    """faust commits acknowledged offsets on its own schedule: its snapshots are written after the
    batch is acknowledged and committed, and the restart resumes from one before its commit."""
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    events = transactions(20_000, cards=500, seed=23)
    group = f"sluice-{project}"
    log = tmp_path / "worker.log"
    engine = ("--engine", "faust", "--snapshot-interval", "1")
    worker = None
    try:
        produce(topic, events[:10_000])
        worker = start_worker(repo, log, *engine)
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        written = list((repo / "offline" / "card_stats" / "_snapshots").glob("*.npz"))
        assert written, "the faust engine wrote no snapshot"
        produce(topic, events[10_000:])
        worker = start_worker(repo, log, *engine)
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")
    resumed = re.findall(r"\(snapshot at offset (\d+)\)", log.read_text())
    assert resumed, log.read_text()[-3000:]
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(events, repo, caught_up))


def test_a_restart_without_snapshots_replays_from_its_checkpoint_and_stays_exact(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    """Snapshots off: the restart reads the event-time checkpoints in the group's commit metadata and
    replays only the last horizon (5 s delay + 60 s window + 10 s slide) of each partition, not the
    whole of it; the rows are those of a worker that read the stream without stopping."""
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    whole = make_repo(tmp_path / "whole", project=f"{project}_whole", topic=topic)
    assert sluice(repo, "apply").returncode == 0
    assert sluice(whole, "apply").returncode == 0
    events = transactions(40_000, cards=1_000, seed=22)  # 400 s of events, 10 ms apart
    group = f"sluice-{project}"
    log = tmp_path / "worker.log"
    worker = None
    try:
        produce(topic, events[:30_000])
        worker = start_worker(repo, log, "--snapshot-interval", "0")
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        commits = committed(group, topic)
        produce(topic, events[30_000:])
        worker = start_worker(repo, log, "--snapshot-interval", "0")
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = start_worker(whole, tmp_path / "whole.log", "--snapshot-interval", "0")
        wait_until_committed(f"sluice-{project}_whole", topic, workers=[worker], timeout_s=180)
        stop(worker)
        worker = None
        caught_up = stream_times(topic)
    finally:
        if worker is not None:
            stop(worker)
        delete_topics(topic, f"{topic}.dlq")
    assert not list((repo / "offline" / "card_stats").glob("_snapshots/*.npz"))
    second_start = log.read_text().split("consuming ")[-1]
    resumed = re.findall(
        r"partition (\d+): rebuilt window state from (\d+) records .*\(checkpoint at offset (\d+)\)",
        second_start,
    )
    assert len(resumed) == len(commits), second_start[-3000:]
    for partition, replayed, start in resumed:
        # 300 s before the stop, some 7,500 records a partition; the horizon and an eighth, about 2,100.
        assert int(replayed) == commits[int(partition)] - int(start)
        assert int(replayed) < commits[int(partition)] // 2, (partition, replayed, commits)
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(events, repo, caught_up))
    pd.testing.assert_frame_equal(_offline_rows(repo), _offline_rows(whole), rtol=1e-9)


def _offline_rows(repo: Path) -> pd.DataFrame:
    """The view's value at each (entity, event time) as training sets read it: of the rows at one time,
    the one last in the log. (A row's source offset, and how many rows share a time, follow the batches.)"""
    table = OfflineDataset(spec=load_repo(repo).spec("card_stats")).read().drop_columns(["created_timestamp"])
    frame = table.to_pandas().sort_values(["card_id", "event_timestamp", "source_offset"], kind="stable")
    latest = frame.drop_duplicates(["card_id", "event_timestamp"], keep="last").drop(
        columns=["source_offset"]
    )
    return latest.reset_index(drop=True)
