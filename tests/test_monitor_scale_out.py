"""Monitors that share a topic's partitions give the reports one monitor gives, bit for bit, and lose
nothing when one of them is killed mid-window.

One recorded stream (two models, four partitions, a shift, and events that arrive late by less and by
more than the lateness) is read by three groups at once: one monitor, two monitors, and three monitors
of which the one merging the windows (it reads partition 0) is killed while windows are open. Every
group's window reports and window summaries must be equal, and each window's event count must equal
a recomputation from the raw records with the lateness rule applied per partition.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from features.config import load_config
from monitors.events.cloudevents import PredictionEvent, decode
from monitors.events.logger import PredictionLogger
from streams.kafka_clients import ensure_topics
from tests.streaming import BOOTSTRAP, delete_topics, sluice, stop

pytestmark = pytest.mark.stack

FEATURES = ["f0", "f1", "f2", "f3"]
MODELS = ("a", "b")
PARTITIONS = 4
T0 = datetime(2026, 5, 1, tzinfo=UTC)
WINDOW_S = 5
LATENESS_S = 2
PER_WINDOW = 160
"""Events per model and window."""


def state(repo: Path) -> dict[str, str]:
    return {"SLUICE_STATE_DIR": str(repo / ".sluice")}


@pytest.fixture
def repos(tmp_path: Path, project: str, topic: str) -> Iterator[list[Path]]:
    """Three projects (so three consumer groups and stores) on one topic, with the same profiles."""
    training = tmp_path / "training.parquet"
    rng = np.random.default_rng(0)
    pd.DataFrame({name: rng.normal(0, 1, 4000) for name in FEATURES}).to_parquet(training)
    roots = []
    for run in range(3):
        root = tmp_path / f"run{run}"
        root.mkdir()
        (root / "sluice.yaml").write_text(
            f"project: {project}_{run}\ntopics: {{partitions: {PARTITIONS}}}\n"
            f"alerts: {{topic: {topic}.alerts}}\n"
        )
        roots.append(root)
    for model in MODELS:
        built = sluice(
            roots[0], "profile", "--model", model, "--version", "1", "--training", str(training),
            env=state(roots[0]),
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
    for root in roots[1:]:
        shutil.copytree(roots[0] / ".sluice" / "profiles", root / ".sluice" / "profiles")
    yield roots
    delete_topics(topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", f"{topic}.alerts")


def produce(logger: PredictionLogger, windows: range) -> None:
    """Both models' events interleaved over each window; model a's f1 shifts from window 4 on. From
    window 2 on, some events come late: by less than the lateness (some count, some do not, by
    partition) and by more (never counted)."""
    for window in windows:
        start = T0 + timedelta(seconds=window * WINDOW_S)
        rng = np.random.default_rng(window)
        values = rng.normal(0, 1, (len(MODELS), PER_WINDOW, len(FEATURES)))
        values[0, :, 1] += 0.8 if window >= 4 else 0.0
        for row in range(PER_WINDOW):
            for index, model in enumerate(MODELS):
                at = start + timedelta(seconds=WINDOW_S * row / PER_WINDOW)
                if window >= 2 and row % 40 == 7:
                    at = start - timedelta(seconds=1 if row % 80 == 7 else 7)
                logger.log(
                    model=model, version="1", request_id=f"{model}-{window}-{row}",
                    features=dict(zip(FEATURES, values[index, row].tolist(), strict=True)), event_time=at,
                )  # fmt: skip
    assert logger.flush(60)


def ticks(logger: PredictionLogger) -> None:
    """One event per model and partition an hour ahead, so that every window closes."""
    for model in MODELS:
        for partition in range(PARTITIONS):
            key = next(
                f"{model}-tick-{n}" for n in range(1000)
                if (murmur2(f"{model}-tick-{n}".encode()) & 0x7FFFFFFF) % PARTITIONS == partition
            )  # fmt: skip
            logger.log(
                model=model, version="1", request_id=key, features={}, event_time=T0 + timedelta(hours=1)
            )
    assert logger.flush(60)


def expected_counts(topic: str) -> dict[tuple[str, int], int]:
    """Per (model, window start µs), the events counted: recomputed from the raw records, partition by
    partition in offset order, an event being late when its window ended at least the lateness before
    the latest event time of its model read before it from its partition."""
    reader = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    records = sorted(reader, key=lambda record: (record.partition, record.offset))
    reader.close()
    window_us, lateness_us = WINDOW_S * 1_000_000, LATENESS_S * 1_000_000
    latest: dict[tuple[int, str], int] = {}
    counts: dict[tuple[str, int], int] = {}
    for record in records:
        event = decode(record.headers, record.value)
        assert isinstance(event, PredictionEvent)
        at = int(event.event_time.timestamp() * 1_000_000)
        start = at - at % window_us
        before = latest.get((record.partition, event.model))
        latest[(record.partition, event.model)] = max(before if before is not None else at, at)
        if before is not None and start + window_us <= before - lateness_us:
            continue
        counts[(event.model, start)] = counts.get((event.model, start), 0) + 1
    return counts


def window_files(repo: Path) -> dict[str, Path]:
    root = repo / ".sluice" / "monitor" / "scores"
    return {
        str(path.relative_to(root)): path for path in sorted(root.glob("model=*/version=*/window-*.parquet"))
    }


def wait_for(
    condition: Callable[[], bool],
    processes: list[subprocess.Popen[bytes]],
    describe: Callable[[], str],
    timeout: float = 240,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert all(process.poll() is None for process in processes), describe()
        assert time.monotonic() < deadline, describe()
        time.sleep(0.5)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_one_two_or_three_monitors_give_the_same_reports_and_a_killed_one_loses_nothing(
    repos: list[Path], topic: str, tmp_path: Path, store: str, postgres_store: Callable[[], str]
) -> None:
    """With ``postgresql``, each group's monitors share a PostgreSQL store, as monitors on several hosts
    do; with ``sqlite``, the file in the group's state folder."""
    if store == "postgresql":
        for repo in repos:
            settings = repo / "sluice.yaml"
            settings.write_text(
                settings.read_text().replace("alerts: {", f"alerts: {{store_url: '{postgres_store()}', ")
            )
    config = load_config(repos[0], environ={**os.environ, **state(repos[0])})
    ensure_topics(config.kafka, [topic], partitions=PARTITIONS)
    logger = PredictionLogger(config=config.kafka, topic=topic, source="tests")
    produce(logger, range(6))

    logs: list[Path] = []

    def monitor(repo: Path) -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"monitor-{len(logs)}.log")
        with logs[-1].open("wb") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "sluice", "--repo", str(repo), "monitor", "--topic", topic,
                 "--window-seconds", str(WINDOW_S), "--lateness-seconds", str(LATENESS_S),
                 "--loglevel", "info"],
                stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **state(repo)},
            )  # fmt: skip

    groups = [[monitor(repo) for _ in range(count)] for repo, count in zip(repos, (1, 2, 3), strict=True)]
    everyone = [process for group in groups for process in group]

    def describe() -> str:
        """What a failed wait shows: each group's window files, and the end of each monitor's log."""
        found = [sorted(window_files(repo)) for repo in repos]
        tails = [f"== {log.name}\n" + "\n".join(log.read_text().splitlines()[-40:]) for log in logs]
        return f"window files per group: {[len(names) for names in found]}\n{found}\n" + "\n".join(tails)

    try:
        # Wait for the third group to have split the partitions three ways and reported some windows.
        def split_three_ways() -> bool:
            last = [re.findall(r"reading partitions ([\d,]+|none)", log.read_text())[-1:] for log in logs[3:]]
            return all(last) and sorted(",".join(found[0] for found in last).split(",")) == [
                "0",
                "1",
                "2",
                "3",
            ]

        wait_for(split_three_ways, everyone, describe)
        wait_for(lambda: len(window_files(repos[2])) >= 2 * 2 * 2, everyone, describe)
        # Kill the monitor of the third group that reads partition 0: the one that merges.
        merger = next(
            index for index, log in enumerate(logs[3:])
            if "0" in re.findall(r"reading partitions ([\d,]+|none)", log.read_text())[-1].split(",")
        )  # fmt: skip
        groups[2][merger].send_signal(signal.SIGKILL)
        groups[2][merger].wait()
        everyone.remove(groups[2][merger])
        produce(logger, range(6, 12))
        ticks(logger)
        logger.close()
        expected = 2 * 12 * 2  # two models, twelve windows, a report and a summary each
        wait_for(lambda: all(len(window_files(repo)) >= expected for repo in repos), everyone, describe)
        time.sleep(3)  # what a window reported twice would need to show up
    finally:
        for process in everyone:
            stop(process)

    files = [window_files(repo) for repo in repos]
    assert len(files[0]) == expected and files[1].keys() == files[0].keys() == files[2].keys()
    for name, path in files[0].items():
        reference = pq.read_table(path)
        for other in files[1:]:
            assert pq.read_table(other[name]).equals(reference), f"{name} differs"
    counts = expected_counts(topic)
    found = {}
    drifting = set()
    for name, path in files[0].items():
        if name.endswith(".summary.parquet"):
            continue
        table = pq.read_table(path).to_pylist()
        model = name.split("/")[0].removeprefix("model=")
        found[(model, table[0]["window_start_us"])] = table[0]["events"]
        if any(row["feature"] == "f1" and row["against"] == "reference" and row["drift"] for row in table):
            drifting.add(
                (model, (table[0]["window_start_us"] - int(T0.timestamp() * 1e6)) // (WINDOW_S * 10**6))
            )
    assert found == {
        key: count
        for key, count in counts.items()
        if key[1] < int((T0 + timedelta(hours=1)).timestamp() * 1e6)
    }
    assert sorted(window for model, window in drifting if model == "a") == list(range(4, 12))
