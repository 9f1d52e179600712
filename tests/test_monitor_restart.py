"""Either monitor engine, killed with a window open, loses and repeats nothing when it restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition

from features.config import load_config
from monitors.events.cloudevents import PredictionEvent, decode
from monitors.events.logger import PredictionLogger
from streams.kafka_clients import ensure_topics
from tests.s3 import s3_keys
from tests.streaming import BOOTSTRAP, delete_topics, sluice, stop

pytestmark = pytest.mark.stack

FEATURES = ["f0", "f1", "f2"]
T0 = datetime(2026, 4, 1, tzinfo=UTC)
WINDOW_S = 5
PER_WINDOW = 300


@pytest.fixture
def profiles() -> str:
    """Where the repo keeps reference profiles: the state folder, or ``s3`` for a bucket of its own."""
    return "local"


@pytest.fixture
def repo(
    tmp_path: Path, project: str, topic: str, profiles: str, request: pytest.FixtureRequest
) -> Iterator[Path]:
    root = tmp_path / "repo"
    root.mkdir()
    settings = f"project: {project}\ntopics: {{partitions: 3}}\nalerts: {{topic: {topic}.alerts}}\n"
    if profiles == "s3":
        bucket = request.getfixturevalue("bucket")
        settings += f"profiles: s3://{bucket}/profiles\nscores: s3://{bucket}/scores\n"
    (root / "sluice.yaml").write_text(settings)
    rng = np.random.default_rng(0)
    training = tmp_path / "training.parquet"
    pd.DataFrame({name: rng.normal(0, 1, 5000) for name in FEATURES}).to_parquet(training)
    built = sluice(
        root, "profile", "--model", "m", "--version", "1", "--training", str(training), env=state(root)
    )
    assert built.returncode == 0, built.stderr
    yield root
    delete_topics(topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", f"{topic}.alerts")


def state(repo: Path) -> dict[str, str]:
    """This test's own state folder (profiles, window scores), whatever the environment says."""
    return {"SLUICE_STATE_DIR": str(repo / ".sluice")}


def produce(logger: PredictionLogger, windows: range) -> None:
    """PER_WINDOW events spread over each window; f1 moves by 1.0 from window 3 on."""
    for window in windows:
        values = np.random.default_rng(window).normal(0, 1, (PER_WINDOW, len(FEATURES)))
        values[:, 1] += 1.0 if window >= 3 else 0.0
        for row in range(PER_WINDOW):
            logger.log(
                model="m", version="1", request_id=f"{window}-{row}",
                features=dict(zip(FEATURES, values[row].tolist(), strict=True)),
                event_time=T0 + timedelta(seconds=window * WINDOW_S + row * WINDOW_S / PER_WINDOW),
            )  # fmt: skip
    assert logger.flush(60)


def reports(topic: str) -> list[dict[str, object]]:
    """Every record on the scores topic, duplicates included."""
    consumer = KafkaConsumer(
        f"{topic}.scores", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    found = [orjson.loads(record.value) for record in consumer]
    consumer.close()
    return found


def first_offsets(topic: str, *, since: datetime) -> dict[int, int]:
    """Per partition, the offset of the first prediction at or after ``since``."""
    reader = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    found: dict[int, int] = {}
    for record in reader:
        event = decode(record.headers, record.value)
        if isinstance(event, PredictionEvent) and event.event_time >= since:
            found[record.partition] = min(found.get(record.partition, record.offset), record.offset)
    reader.close()
    return found


def committed(topic: str, project: str) -> dict[int, int | None]:
    group = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=f"sluice-monitor-{project}")
    found = {number: group.committed(TopicPartition(topic, number)) for number in range(3)}
    group.close()
    return found


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def wait_for_reports(topic: str, count: int, process: subprocess.Popen[bytes], log: Path) -> None:
    wait_for(lambda: len(reports(topic)) >= count, process, log)


@pytest.mark.parametrize(("engine", "profiles"), [("kafka", "local"), ("faust", "local"), ("kafka", "s3")])
def test_a_monitor_killed_with_a_window_open_finishes_it_whole_after_a_restart(
    engine: str, profiles: str, repo: Path, topic: str, tmp_path: Path
) -> None:
    config = load_config(repo, environ={**os.environ, **state(repo)})
    log = tmp_path / "monitor.log"

    def monitor() -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "sluice", "--repo", str(repo), "monitor", "--topic", topic,
                 "--engine", engine, "--window-seconds", str(WINDOW_S), "--lateness-seconds", "0"],
                stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **state(repo)},
            )  # fmt: skip

    ensure_topics(config.kafka, [topic], partitions=3)
    logger = PredictionLogger(config=config.kafka, topic=topic, source="tests")
    # Windows 0..5: the watermark reaches window 5 but not its end, so 0..4 close and 5 stays open.
    produce(logger, range(6))
    # The monitor may commit up to the first event of window 5 on each partition, and no further.
    open_from = first_offsets(topic, since=T0 + timedelta(seconds=5 * WINDOW_S))
    first = monitor()
    try:
        wait_for_reports(topic, 5, first, log)
        wait_for(lambda: committed(topic, config.project) == open_from, first, log)
        time.sleep(2)  # and it stays there
        assert committed(topic, config.project) == open_from
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Windows 6..9 and one event per partition far ahead, so every window closes.
    produce(logger, range(6, 10))
    for tick in range(9):
        logger.log(
            model="m", version="1", request_id=f"tick-{tick}", features={}, event_time=T0 + timedelta(hours=1)
        )
    assert logger.flush(60)
    logger.close()
    second = monitor()
    try:
        wait_for_reports(topic, 10, second, log)
        time.sleep(2)  # what a repeated report would need to show up
    finally:
        stop(second)

    found = sorted(reports(topic), key=lambda report: report["window_start_us"])
    starts = [int((T0.timestamp() + window * WINDOW_S) * 1e6) for window in range(10)]
    assert [report["window_start_us"] for report in found] == starts, "a window lost or reported twice"
    # Window 5 was open at the kill: its events before the kill were replayed, none twice.
    assert [report["events"] for report in found] == [PER_WINDOW] * 10
    drifting = [
        window for window, report in enumerate(found)
        if any(score["feature"] == "f1" and score["against"] == "reference" and score["drift"]
               for score in report["scores"])
    ]  # fmt: skip
    assert drifting == list(range(3, 10))
    if profiles == "s3":  # the profile the monitor scored against was read from the bucket
        bucket = config.profiles_location.split("/")[2]
        assert sorted(s3_keys(bucket, "profiles/m/1/")) == [
            "profiles/m/1/profile.json",
            "profiles/m/1/samples.npz",
        ]
        # and the windows' scores and summaries were written there, one pair per window, whole
        written = sorted(s3_keys(bucket, "scores/model=m/version=1/"))
        assert written == sorted(
            f"scores/model=m/version=1/window-{start:020d}{suffix}"
            for start in starts
            for suffix in (".parquet", ".summary.parquet")
        )
        made = sluice(repo, "report", "--model", "m", "--version", "1", "--out", str(tmp_path / "r.html"))
        assert made.returncode == 0, made.stderr
        assert "f1" in (tmp_path / "r.html").read_text()
