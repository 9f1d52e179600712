"""Failure drills against the real servers, bounded in time: the processes must ride out their neighbours'
outages by themselves, and lose or duplicate nothing.

These stop and restart the local stack's own services (``stack.down(only=...)``, then ``stack.up``), so
they run against the same broker and Redis as every other test, which find them back up afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from features.config import SluiceConfig
from monitors.events.logger import PredictionLogger
from sluice import stack
from tests.streaming import (
    assert_every_offset_in_exactly_one_batch_file,
    committed,
    delete_topics,
    free_port,
    get_when_up,
    make_repo,
    produce,
    progress,
    sluice,
    start_worker,
    stop,
    stream_times,
    wait_until_committed,
)
from tests.test_monitor import FEATURES, T0, WINDOW_S, scores
from tests.test_monitor import state as monitor_state
from tests.test_stream_worker import assert_same, online_rows, reference, transactions

pytestmark = pytest.mark.stack

OUTAGE_S = 30


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _predictions(logger: PredictionLogger, windows: range, per_window: int) -> None:
    """``per_window`` predictions spread over each 5 s window of ``windows``, in time order."""
    rng = np.random.default_rng(windows.start)
    for window in windows:
        values = rng.normal(0, 1, (per_window, len(FEATURES)))
        for row in range(per_window):
            logger.log(
                model="steady",
                version="1",
                request_id=f"{window}-{row}",
                features=dict(zip(FEATURES, values[row].tolist(), strict=True)),
                event_time=T0 + timedelta(seconds=window * WINDOW_S + WINDOW_S * row / per_window),
            )
    assert logger.flush(60)


def _start_monitor(root: Path, topic: str, log: Path) -> subprocess.Popen[bytes]:
    rng = np.random.default_rng(0)
    pd.DataFrame({name: rng.normal(0, 1, 5_000) for name in FEATURES}).to_parquet(root / "training.parquet")
    profile = ("profile", "--model", "steady", "--version", "1", "--training", str(root / "training.parquet"))
    assert sluice(root, *profile, env=monitor_state(root)).returncode == 0
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(root), "monitor", "--topic", topic,
             "--window-seconds", str(WINDOW_S), "--lateness-seconds", "0", "--loglevel", "info"],
            env={**os.environ, **monitor_state(root)}, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_the_broker_stopped_for_30_s_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis, stack_config: SluiceConfig
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    events = transactions(200_000, cards=5_000, seed=21)
    before, after = events[:150_000], events[150_000:]
    group, predictions = f"sluice-{project}", f"{topic}-predictions"
    log, monitor_log = tmp_path / "worker.log", tmp_path / "monitor.log"
    worker = start_worker(repo, log)
    monitor = _start_monitor(repo, predictions, monitor_log)
    logger = PredictionLogger(config=stack_config.kafka, topic=predictions, source="drill")
    try:
        _predictions(logger, range(0, 10), 100)
        produce(topic, before)
        deadline = time.monotonic() + 120
        while (done := progress(group, topic, len(before))) < 0.2:
            assert time.monotonic() < deadline and worker.poll() is None, _log_tail(log)
            time.sleep(0.05)
        # Mid-stream: the worker has committed part of what is there, and is working on the rest.
        assert stack.down(stack_config, only=["kafka"]) == ["kafka"]
        try:
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, f"the worker gave up during the outage:\n{_log_tail(log)}"
            assert monitor.poll() is None, f"the monitor gave up during the outage:\n{_log_tail(monitor_log)}"
        finally:
            stack.up(stack_config)
        produce(topic, after)
        _predictions(logger, range(10, 20), 100)
        for tick in range(12):  # far ahead on every partition: the 20 windows close
            logger.log(
                model="steady",
                version="1",
                request_id=f"tick-{tick}",
                features={},
                event_time=T0 + timedelta(days=1),
            )
        assert logger.flush(60)
        wait_until_committed(group, topic, workers=[worker], timeout_s=240)
        caught_up = stream_times(topic)
        reports = scores(predictions, 20, monitor)
    finally:
        logger.close()
        stop(worker)
        stop(monitor)
        delete_topics(
            topic, f"{topic}.dlq", *(f"{predictions}{end}" for end in ("", ".scores", ".dlq", ".labelled"))
        )
    assert done < 1.0, "the broker went down only after the worker had caught up: not a mid-stream drill"
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(events, repo, caught_up))
    # The monitor counted every prediction once, in its window, on both sides of the outage.
    windows = sorted((report["window_start_us"], report["events"]) for report in reports)
    start_us = int(T0.timestamp() * 1_000_000)
    assert windows == [(start_us + window * WINDOW_S * 1_000_000, 100) for window in range(20)]


class _PrivateRedis:
    """A redis-server of the test's own, so that it can be restarted, and emptied, without touching the
    stack's."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> redis.Redis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--dir", str(self.folder), "--save", "3600 1"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)

    def restart(self, *, keep_data: bool) -> redis.Redis:
        """SIGTERM (Redis saves its data first), or SIGKILL and the data deleted: Redis comes back empty."""
        assert self.process is not None
        if keep_data:
            self.process.terminate()
        else:
            self.process.kill()
        self.process.wait(timeout=30)
        if not keep_data:
            (self.folder / "dump.rdb").unlink(missing_ok=True)
        return self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def test_redis_restarted_mid_stream_and_then_restarted_empty_is_rebuilt_and_loses_nothing(
    tmp_path: Path, project: str, topic: str, stack_config: SluiceConfig
) -> None:
    server = _PrivateRedis(tmp_path)
    client = server.start()
    env = {"SLUICE_REDIS_URL": server.url}
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply", env=env).returncode == 0
    events = transactions(90_000, cards=2_000, seed=5)
    group = f"sluice-{project}"
    log, metrics_port = tmp_path / "worker.log", free_port()
    worker = start_worker(repo, log, "--metrics-port", str(metrics_port), env=env)
    try:
        produce(topic, events[:30_000])
        wait_until_committed(group, topic, workers=[worker])
        # Restarted with its data, while the worker writes the next events: the writes wait and go on.
        produce(topic, events[30_000:60_000])
        client = server.restart(keep_data=True)
        assert client.dbsize() > 0
        wait_until_committed(group, topic, workers=[worker])
        # Restarted empty: every feature is gone until the worker notices and rebuilds from Parquet.
        client = server.restart(keep_data=False)
        assert client.dbsize() == 0
        produce(topic, events[60_000:])
        wait_until_committed(group, topic, workers=[worker])
        deadline = time.monotonic() + 60
        while "rebuilt after the Redis restart" not in log.read_text():
            assert time.monotonic() < deadline and worker.poll() is None, _log_tail(log)
            time.sleep(0.2)
        metrics = get_when_up(f"http://127.0.0.1:{metrics_port}/metrics", worker, log)
        assert "sluice_online_store_resets_total 1.0" in metrics  # the empty restart only
        caught_up = stream_times(topic)
    finally:
        stop(worker)
        delete_topics(topic, f"{topic}.dlq")
        try:
            verified = sluice(repo, "verify", env=env)
            cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
            online = online_rows(client, repo, cards)
        finally:
            server.stop()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    assert_same(online, reference(events, repo, caught_up))


def test_a_full_disk_under_the_offline_store_stops_commits_and_loses_nothing_when_it_has_room_again(
    tmp_path: Path, project: str, topic: str, redis_client: redis.Redis
) -> None:
    """The worker's offline writes fail with ENOSPC (``tests/failpoints/sitecustomize.py``, in the worker's
    file-system layer) while a trigger file exists: it must commit nothing past what it wrote, say so in its
    log and its metrics, stay up, and write everything once there is room again."""
    full = tmp_path / "disk-full"
    env = {
        "PYTHONPATH": str(Path(__file__).parent / "failpoints"),
        "SLUICE_TEST_DISK_FULL": str(full),
    }
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    events = transactions(60_000, cards=2_000, seed=13)
    group, log, metrics_port = f"sluice-{project}", tmp_path / "worker.log", free_port()
    worker = start_worker(repo, log, "--metrics-port", str(metrics_port), env=env)
    try:
        produce(topic, events[:20_000])
        wait_until_committed(group, topic, workers=[worker])
        before = committed(group, topic)
        full.touch()
        produce(topic, events[20_000:40_000])
        deadline = time.monotonic() + 60
        while "No space left on device" not in log.read_text():
            assert time.monotonic() < deadline and worker.poll() is None, _log_tail(log)
            time.sleep(0.2)
        time.sleep(10)  # the worker keeps retrying; nothing it could not write is committed meanwhile
        assert worker.poll() is None, _log_tail(log)
        assert committed(group, topic) == before
        metrics = get_when_up(f"http://127.0.0.1:{metrics_port}/metrics", worker, log)
        failures = [line for line in metrics.splitlines() if line.startswith("sluice_sink_failures_total{")]
        assert failures and all('sink="offline"' in line for line in failures), failures
        full.unlink()
        produce(topic, events[40_000:])
        wait_until_committed(group, topic, workers=[worker], timeout_s=180)
        caught_up = stream_times(topic)
    finally:
        full.unlink(missing_ok=True)
        stop(worker)
        delete_topics(topic, f"{topic}.dlq")
    assert_every_offset_in_exactly_one_batch_file(repo, topic)
    assert not list((repo / "offline").rglob("*.tmp")), "a half-written file was left behind"
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    assert_same(online_rows(redis_client, repo, cards), reference(events, repo, caught_up))
