"""The monitor's alerts and retraining on real Kafka and SQLite, through a restart that replays everything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from features.config import load_config
from monitors.alerts.store import AlertStore
from monitors.database import open_store
from monitors.events.logger import PredictionLogger
from monitors.retraining.store import JobStore
from monitors.runtime.parts import WindowParts
from tests.receiver import Receiver
from tests.streaming import BOOTSTRAP, delete_topics, sluice, stop

pytestmark = pytest.mark.stack

FEATURES = ["f0", "f1", "f2"]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW_S = 5
JOB = """import os, pathlib
pathlib.Path("ran-" + os.environ["SLUICE_JOB_ID"]).write_text(os.environ["SLUICE_ALERT_ID"])
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def repo(tmp_path: Path, project: str, topic: str, receiver: Receiver) -> Iterator[Path]:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "job.py").write_text(JOB)
    (root / "sluice.yaml").write_text(
        f"""project: {project}
topics: {{partitions: 2}}
alerts:
  topic: {topic}.alerts
  consecutive_windows: 2
  webhooks:
    - {{kind: alertmanager, url: "{receiver.url}/am"}}
retraining:
  enabled: true
  entrypoint: python job.py
  severities: [warning, critical]
"""
    )
    rng = np.random.default_rng(0)
    pd.DataFrame({name: rng.normal(0, 1, 5000) for name in FEATURES}).to_parquet(
        tmp_path / "training.parquet"
    )
    training = str(tmp_path / "training.parquet")
    built = sluice(root, "profile", "--model", "m", "--version", "1", "--training", training, env=state(root))
    assert built.returncode == 0, built.stderr
    yield root
    delete_topics(topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", f"{topic}.alerts")


def state(repo: Path) -> dict[str, str]:
    """This test's own state folder (store, profiles, scores, jobs), whatever the environment says."""
    return {"SLUICE_STATE_DIR": str(repo / ".sluice")}


def monitor(repo: Path, topic: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), "monitor", "--topic", topic,
             "--window-seconds", str(WINDOW_S), "--lateness-seconds", "0", "--loglevel", "info"],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **state(repo)},
        )  # fmt: skip


def wait_for(condition: object, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


def test_one_incident_is_one_alert_and_one_job_even_when_a_restarted_monitor_replays_it(
    repo: Path, topic: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = load_config(repo, environ={**os.environ, **state(repo)})
    # Ten windows of 200 events: f1 moves by 1.0 from window 4 on, so windows 4..9 drift, and with two
    # windows in a row needed, the alert fires at window 5; one job for that incident.
    logger = PredictionLogger(config=config.kafka, topic=topic, source="tests")
    rng = np.random.default_rng(1)
    for window in range(10):
        values = rng.normal(0, 1, (200, 3))
        values[:, 1] += 1.0 if window >= 4 else 0.0
        for row in range(200):
            logger.log(
                model="m", version="1", request_id=f"{window}-{row}",
                features=dict(zip(FEATURES, values[row].tolist(), strict=True)),
                event_time=T0 + timedelta(seconds=window * WINDOW_S + row * WINDOW_S / 200),
            )  # fmt: skip
    for tick in range(6):  # every partition's watermark past the last window
        logger.log(
            model="m", version="1", request_id=f"tick-{tick}", features={}, event_time=T0 + timedelta(hours=1)
        )
    assert logger.flush(60)
    logger.close()

    store = AlertStore(engine=open_store(config.store_url))
    jobs = JobStore(engine=open_store(config.store_url))
    scores = config.state_dir / "monitor" / "scores" / "model=m" / "version=1"
    log = tmp_path / "monitor.log"
    first = monitor(repo, topic, log)
    try:
        wait_for(lambda: len(list(scores.glob("window-*.summary.parquet"))) == 10, first, log)
        wait_for(lambda: any(job.state == "succeeded" for job in jobs.jobs()), first, log)
        wait_for(lambda: store.pending() == 0, first, log)
    finally:
        stop(first)
    [alert] = store.alerts()
    assert (alert.feature, alert.status, alert.window_start_us) == (
        "f1",
        "firing",
        int((T0.timestamp() + 25) * 1e6),
    )
    [job] = jobs.jobs()
    assert job.alert_id == alert.id
    assert (repo / f"ran-{job.job_id}").read_text() == alert.id  # the entrypoint got the request
    assert [request.json()["status"] for request in receiver.requests] == ["firing"]
    tail = sluice(repo, "alerts", "tail", "--from-beginning", "--idle-timeout", "3", env=state(repo))
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == [
        "2026-03-01 00:00:30 firing   warning  m 1: feature f1 drifts "
        f"(ks = {alert.value:.4g}, threshold {alert.threshold:g})"
    ]

    # The monitor restarts from the beginning of the topic, with its window scores and records gone:
    # every window is scored again, and the alert store sees each one a second time.
    shutil.rmtree(scores)
    WindowParts(engine=open_store(config.store_url), topic=topic).reset()
    group = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=f"sluice-monitor-{config.project}")
    partitions = [TopicPartition(topic, number) for number in sorted(group.partitions_for_topic(topic))]
    group.commit({partition: OffsetAndMetadata(0, "", -1) for partition in partitions})
    group.close()
    second = monitor(repo, topic, log)
    try:
        wait_for(lambda: len(list(scores.glob("window-*.summary.parquet"))) == 10, second, log)
        time.sleep(2)  # what a second alert or job would need to show up
    finally:
        stop(second)
    assert [item.id for item in store.alerts()] == [alert.id]
    assert [item.job_id for item in jobs.jobs()] == [job.job_id]
    assert len(list((config.state_dir / "jobs").iterdir())) == 1
    assert len(receiver.requests) == 1 and len(store.deliveries()) == 2  # the webhook and the Kafka topic
