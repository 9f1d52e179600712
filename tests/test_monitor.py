"""The monitor end to end on real Kafka: prediction events in through the logger, drift scores out."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, KafkaProducer
from scipy.stats import binom

from features.config import load_config
from monitors.events.logger import PredictionLogger
from tests.streaming import BOOTSTRAP, dead_letters, delete_topics, sluice, stop

pytestmark = pytest.mark.stack

FEATURES = [f"f{index}" for index in range(20)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW_S = 5


@pytest.fixture
def repo(tmp_path: Path, project: str, topic: str) -> Iterator[Path]:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 3\n")
    rng = np.random.default_rng(0)
    pd.DataFrame({name: rng.normal(0, 1, 20_000) for name in FEATURES}).to_parquet(
        tmp_path / "training.parquet"
    )
    for model in ("drifting", "steady"):
        built = sluice(
            root,
            "profile",
            "--model",
            model,
            "--version",
            "1",
            "--training",
            str(tmp_path / "training.parquet"),
            env=state(root),
        )
        assert built.returncode == 0, built.stderr
        assert "profiled 20000 rows of " in built.stdout and "20 numeric and 0 categorical" in built.stdout
    yield root
    delete_topics(topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled")


def state(repo: Path) -> dict[str, str]:
    """This test's own state folder (profiles, window scores): a run before it leaves its windows in a
    shared one (``make test`` exports SLUICE_STATE_DIR), and they would count as reported."""
    return {"SLUICE_STATE_DIR": str(repo / ".sluice")}


def produce(
    logger: PredictionLogger, model: str, windows: int, per_window: int, *, shift_from: int | None, seed: int
) -> None:
    """Events spread evenly over each 5 s window, in time order; f7 moves by 0.6 from ``shift_from`` on."""
    rng = np.random.default_rng(seed)
    for window in range(windows):
        shift = 0.6 if shift_from is not None and window >= shift_from else 0.0
        values = rng.normal(0, 1, (per_window, len(FEATURES)))
        values[:, 7] += shift
        for row in range(per_window):
            logger.log(
                model=model,
                version="1",
                request_id=f"{model}-{window}-{row}",
                features=dict(zip(FEATURES, values[row].tolist(), strict=True)),
                outputs={"score": 0.5},
                event_time=T0 + timedelta(seconds=window * WINDOW_S + WINDOW_S * row / per_window),
            )
    # One event per partition far ahead moves every partition's watermark past the last window.
    for tick in range(12):
        logger.log(
            model=model,
            version="1",
            request_id=f"{model}-tick-{tick}",
            features={},
            event_time=T0 + timedelta(days=1),
        )


def scores(
    topic: str, expected: int, monitor: subprocess.Popen[bytes], timeout_s: float = 180
) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        f"{topic}.scores", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=1000
    )
    found: dict[bytes, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            assert monitor.poll() is None, "the monitor exited"
            for record in consumer:
                found[record.key] = orjson.loads(record.value)
    finally:
        consumer.close()
    assert len(found) == expected, f"{len(found)} window reports, expected {expected}"
    return list(found.values())


def test_a_shift_in_one_feature_is_flagged_in_its_first_window_and_steady_windows_rarely_alarm(
    repo: Path, topic: str, tmp_path: Path
) -> None:
    config = load_config(repo, environ={**os.environ, **state(repo)})
    env = {**os.environ, **state(repo)}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    log = (tmp_path / "monitor.log").open("wb")
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "--repo",
            str(repo),
            "monitor",
            "--topic",
            topic,
            "--window-seconds",
            str(WINDOW_S),
            "--lateness-seconds",
            "0",
            "--loglevel",
            "info",
            "--metrics-port",
            str(metrics_port),
            *[argument for name in FEATURES for argument in ("--metric", f"{name}=ks")],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        logger = PredictionLogger(config=config.kafka, topic=topic, source="tests")
        produce(logger, "drifting", 20, 250, shift_from=12, seed=1)
        produce(logger, "steady", 200, 150, shift_from=None, seed=2)
        # Ground truth for five predictions of the first window, and one for a request never seen.
        for row in range(5):
            logger.log_label(model="drifting", request_id=f"drifting-0-{row}", label=row % 2)
        logger.log_label(model="drifting", request_id="never-predicted", label=1)
        assert logger.flush(60)
        assert logger.stats.failed == 0 and logger.stats.dropped == 0
        # Poison: not JSON, not a CloudEvent, and an event for a window that has long closed.
        producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
        producer.send(
            topic,
            key=b"x",
            value=b"{oops",
            headers=[("ce_specversion", b"1.0"), ("ce_type", b"io.sluice.prediction")],
        )
        producer.send(topic, key=b"y", value=b"{}")
        producer.flush()
        producer.close()
        logger.log(model="drifting", version="1", request_id="late", features={"f0": 1.0}, event_time=T0)
        logger.log(model="unknown", version="9", request_id="who", features={"f0": 1.0}, event_time=T0)
        assert logger.flush(30)
        logger.close()

        reports = scores(topic, 220, monitor)
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        )
    finally:
        stop(monitor)
        log.close()

    drifting = sorted((r for r in reports if r["model"] == "drifting"), key=lambda r: r["window_start_us"])
    assert [r["events"] for r in drifting] == [250] * 20
    flagged = [
        r["scores"] and [s["feature"] for s in r["scores"] if s["against"] == "reference" and s["drift"]]
        for r in drifting
    ]
    # The first window after the shift flags f7, and only f7.
    assert flagged[12] == ["f7"]
    steady = [r for r in reports if r["model"] == "steady"]
    alarms = sum(any(s["drift"] for s in r["scores"] if s["against"] == "reference") for r in steady)
    assert alarms <= binom.ppf(0.999, 200, 0.05), alarms

    labelled = KafkaConsumer(
        f"{topic}.labelled",
        bootstrap_servers=BOOTSTRAP,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    pairs = sorted((orjson.loads(record.value) for record in labelled), key=lambda pair: pair["request_id"])
    labelled.close()
    assert [(p["request_id"], p["version"], p["label"], p["outputs"]) for p in pairs] == [
        (f"drifting-0-{row}", "1", row % 2, {"score": 0.5}) for row in range(5)
    ]

    # Prometheus has the latest window's score per feature, for teams that alert with Alertmanager.
    assert (
        'sluice_feature_drift{against="reference",feature="f7",metric="ks",model="drifting",version="1"} 1.0'
        in scraped
    )
    assert 'sluice_monitor_dead_letters_total{reason="late"} 1.0' in scraped
    assert 'sluice_monitor_windows_total{model="steady",version="1"} 200.0' in scraped
    # What the label join holds: every decoded prediction, 35,000 and the 24 ticks (a joined one stays,
    # for a corrected label; the late and unknown ones may come after the scrape), and the label that
    # never met its prediction.
    assert 'sluice_monitor_join_held{kind="label"} 1.0' in scraped
    held = re.search(r'sluice_monitor_join_held\{kind="prediction"\} (\S+)', scraped)
    assert held is not None and 35_024 <= float(held.group(1)) <= 35_026, held

    reasons = sorted(headers["sluice.reason"].decode() for _, headers in dead_letters(topic))
    assert reasons == ["late", "malformed_json", "no_profile", "not_cloudevent"]

    folder = config.state_dir / "monitor" / "scores" / "model=drifting" / "version=1"
    written = [path for path in folder.glob("window-*.parquet") if not path.name.endswith(".summary.parquet")]
    assert len(written) == 20
    assert len(list(folder.glob("window-*.summary.parquet"))) == 20
    table = pq.read_table(sorted(written)[12])
    assert set(table.column("feature").to_pylist()) == set(FEATURES)

    # A person can look at the window that drifted, in Evidently's report.
    start_us = int((T0 + timedelta(seconds=12 * WINDOW_S)).timestamp() * 1_000_000)
    out = tmp_path / "window12.html"
    made = sluice(
        repo,
        "report",
        "--model",
        "drifting",
        "--version",
        "1",
        "--window-start",
        str(start_us),
        "--out",
        str(out),
        env=state(repo),
    )
    assert made.returncode == 0, made.stderr
    html = out.read_text()
    assert "<html" in html.lower() and "f7" in html
    missing = sluice(
        repo, "report", "--model", "drifting", "--version", "1", "--window-start", "5", env=state(repo)
    )
    assert missing.returncode == 1 and "no window starting at 5 µs" in missing.stderr
