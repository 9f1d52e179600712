"""``sluice monitor --performance``: predictions on Kafka, their labels seconds later, a model that gets
worse. Each window's final performance equals scikit-learn's over a join of the raw records read back
with kafka-python; the provisional report comes first; the worse windows raise critical alerts."""

from __future__ import annotations

import os
import random
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
from kafka import KafkaConsumer
from sklearn import metrics as sk

from features.config import load_config
from monitors.events.cloudevents import LabelEvent, PredictionEvent, decode
from monitors.events.logger import PredictionLogger
from streams.kafka_clients import ensure_topics
from tests.streaming import BOOTSTRAP, delete_topics, sluice, stop

pytestmark = pytest.mark.stack

T0 = datetime(2026, 8, 1, tzinfo=UTC)
WINDOW_S, LATENESS_S, DELAY_S = 5, 1, 5
WINDOWS, PER_WINDOW = 8, 200


@pytest.fixture
def repo(tmp_path: Path, project: str, topic: str) -> Iterator[Path]:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "sluice.yaml").write_text(
        f"project: {project}\ntopics: {{partitions: 3}}\n"
        f"alerts: {{topic: {topic}.alerts, consecutive_windows: 1}}\n"
    )
    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.3).astype(int)
    validation = pd.DataFrame(
        {
            "amount": rng.normal(0, 1, 4000),
            "score": np.clip(0.2 + 0.5 * labels + rng.normal(0, 0.15, 4000), 0, 1),
            "is_fraud": labels,
        }
    )
    validation.to_parquet(tmp_path / "validation.parquet")
    built = sluice(
        root, "profile", "--model", "m", "--version", "1", "--training", str(tmp_path / "validation.parquet"),
        "--prediction-column", "score", "--label-column", "is_fraud", env=state(root),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "4000 reference outcomes" in built.stdout
    yield root
    delete_topics(topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", f"{topic}.alerts")


def state(repo: Path) -> dict[str, str]:
    return {"SLUICE_STATE_DIR": str(repo / ".sluice")}


class Stream:
    """Predictions through the windows, each labelled 0.5 to 3 s later (10% never); from window 4 on the
    model scores at random."""

    def __init__(self) -> None:
        self.rng = random.Random(1)
        self.pending: list[tuple[datetime, str, int]] = []

    def produce(self, logger: PredictionLogger, indexes: range) -> None:
        for index in indexes:
            at = T0 + timedelta(seconds=index * WINDOW_S / PER_WINDOW)
            while self.pending and self.pending[0][0] <= at:
                label_at, request, truth = self.pending.pop(0)
                logger.log_label(model="m", request_id=request, label=truth, event_time=label_at)
            truth = int(self.rng.random() < 0.3)
            separation = 0.5 if index < 4 * PER_WINDOW else 0.0
            noise = self.rng.gauss(0, 0.15) + (0.25 if not separation else 0)
            score = min(1.0, max(0.0, 0.2 + separation * truth + noise))
            request = f"r{index}"
            logger.log(model="m", version="1", request_id=request, features={"amount": self.rng.gauss(0, 1)},
                       outputs={"score": score}, event_time=at)  # fmt: skip
            if self.rng.random() < 0.9:
                self.pending.append((at + timedelta(seconds=self.rng.uniform(0.5, 3.0)), request, truth))
                self.pending.sort()
        assert logger.flush(60)

    def finish(self, logger: PredictionLogger) -> None:
        """The labels still due, then a tick an hour later, so that every window is final."""
        for label_at, request, truth in self.pending:
            logger.log_label(model="m", request_id=request, label=truth, event_time=label_at)
        for tick in range(9):
            logger.log(model="m", version="1", request_id=f"tick-{tick}", features={}, outputs={},
                       event_time=T0 + timedelta(hours=1))  # fmt: skip
        assert logger.flush(60)


def brute_force(topic: str) -> dict[int, dict[str, float]]:
    """Per window start, scikit-learn's metrics over the raw records: each prediction with its first label
    (labels here come within the delay, and after their prediction)."""
    reader = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    predictions: dict[str, tuple[int, float]] = {}
    labels: dict[str, int] = {}
    for record in reader:
        event = decode(record.headers, record.value)
        if isinstance(event, PredictionEvent) and "score" in event.outputs:
            at = int(event.event_time.timestamp() * 1_000_000)
            predictions[event.request_id] = (at - at % (WINDOW_S * 1_000_000), float(event.outputs["score"]))
        elif isinstance(event, LabelEvent):
            labels.setdefault(event.request_id, int(event.label))
    reader.close()
    windows: dict[int, tuple[list[float], list[int], int]] = {}
    for request, (start, score) in predictions.items():
        scores, truths, count = windows.get(start, ([], [], 0))
        if request in labels:
            scores.append(score)
            truths.append(labels[request])
        windows[start] = (scores, truths, count + 1)
    result = {}
    for start, (scores, truths, count) in windows.items():
        predicted = (np.array(scores) >= 0.5).astype(int)
        result[start] = {
            "accuracy": sk.accuracy_score(truths, predicted),
            "recall": sk.recall_score(truths, predicted, zero_division=0),
            "log_loss": sk.log_loss(truths, scores, labels=[0, 1]),
            "roc_auc": sk.roc_auc_score(truths, scores),
            "label_coverage": len(truths) / count,
        }
    return result


def records(topic: str) -> list[dict[str, object]]:
    reader = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    found = [orjson.loads(record.value) for record in reader]
    reader.close()
    return found


def test_performance_windows_from_delayed_labels_alert_when_the_model_gets_worse(
    repo: Path, topic: str, tmp_path: Path
) -> None:
    config = load_config(repo, environ={**os.environ, **state(repo)})
    ensure_topics(config.kafka, [topic], partitions=3)
    logger = PredictionLogger(config=config.kafka, topic=topic, source="tests")
    stream = Stream()
    log = tmp_path / "monitor.log"

    def monitor() -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "sluice", "--repo", str(repo), "monitor", "--topic", topic,
                 "--window-seconds", str(WINDOW_S), "--lateness-seconds", str(LATENESS_S),
                 "--performance", "m=binary:score", "--performance-window-seconds", str(WINDOW_S),
                 "--label-delay-seconds", str(DELAY_S), "--min-labels", "50"],
                stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **state(repo)},
            )  # fmt: skip

    # Half the stream; the monitor is killed once some windows are provisional, with predictions of
    # windows not final still waiting for labels in its memory. The rest of the stream comes after.
    stream.produce(logger, range(0, 4 * PER_WINDOW))
    first = monitor()
    try:
        wait_for(lambda: any(r.get("stage") == "provisional" for r in records(f"{topic}.scores")), first, log)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    stream.produce(logger, range(4 * PER_WINDOW, WINDOWS * PER_WINDOW))
    stream.finish(logger)
    logger.close()
    second = monitor()
    try:
        wait_for(
            lambda: len([r for r in records(f"{topic}.scores") if r.get("stage") == "final"]) >= WINDOWS,
            second,
            log,
        )
        time.sleep(2)
    finally:
        stop(second)
    reports = records(f"{topic}.scores")
    final = {int(r["window_start_us"]): r for r in reports if r.get("stage") == "final"}  # type: ignore[call-overload]
    provisional = {int(r["window_start_us"]) for r in reports if r.get("stage") == "provisional"}  # type: ignore[call-overload]
    expected = brute_force(topic)
    starts = sorted(start for start in expected if start < int((T0 + timedelta(hours=1)).timestamp() * 1e6))
    assert sorted(final) == starts and set(starts) <= provisional
    for start in starts:
        got = {score["metric"]: score["score"] for score in final[start]["scores"]}  # type: ignore[attr-defined]
        for name, value in expected[start].items():
            assert got[name] == pytest.approx(value, abs=2e-3 if name == "roc_auc" else 1e-9), (start, name)
    # The windows after the model went bad alert (critical, through the same rules and sinks as drift).
    alerts = [r for r in records(f"{topic}.alerts") if r.get("status") == "firing"]
    worse = {int(r["window_start_us"]) for r in alerts if r["metric"] in ("accuracy", "roc_auc")}  # type: ignore[call-overload]
    assert all(r["severity"] == "critical" for r in alerts if r["metric"] in ("accuracy", "roc_auc"))
    assert worse and min(worse) >= starts[4] and starts[4] in worse, (worse, starts)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
