"""`make demo`: the fraud example's whole loop on the local stack, from payments to a retrained model.

1. `sluice apply` registers the card features with Feast and creates the topics.
2. A stream worker computes windowed card features into Redis and Parquet from the payments topic,
   starting with 15 minutes of history (and a few bad messages, for the dead-letter topic).
3. Model version 1 is trained on a point-in-time training set, logged as an MLflow run and registered in
   MLflow's registry (the embedded store, SQLite in the state folder); the promotion gate makes it the
   `champion`. Feast and sluice's OnlineClient read the same features back; `sluice verify` proves Redis
   holds the latest Parquet row of every card.
4. `sluice monitor` watches the prediction events in 5-second windows: drift, and the model's
   performance from its labels, with alerts and retraining on.
5. A scoring loop loads `models:/fraud@champion`, reads each card's features with OnlineClient, scores
   the payment, and logs the prediction and (at once, as the demo knows the truth) its label.
6. Halfway, prices triple. The monitor fires an alert within one window, and the model's log loss and
   accuracy drop; the local webhook receiver and a Python subscriber show the alerts. A retraining job
   trains on the labelled predictions of the drifted window, logs its run and registers version 2 as
   the `challenger`; the promotion gate finds it beats the champion on held-out payments and moves
   `champion` to it, and scoring follows.
7. A summary, the window's Evidently report, and a PNG of drift scores over time.

Run it twice and it starts over cleanly: it clears its own earlier models, profiles, alerts and jobs
(MLflow keeps the earlier runs, in their experiment).
SLUICE_DEMO_QUICK=1 runs a shorter version (the test suite does).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import orjson
from traffic import Traffic, window_start

from features import load_config
from streams import consumer, ensure_topics, producer

REPO = Path(__file__).resolve().parent / "fraud"
sys.path.insert(0, str(REPO))
QUICK = os.environ.get("SLUICE_DEMO_QUICK") == "1"
RATE = 60 if QUICK else 100
"""Payments per second, in the history and while scoring: the same rate keeps the counts steady."""
HISTORY = timedelta(minutes=12 if QUICK else 15)
"""Payments before scoring starts: the 10-minute counts are steady after the first 10 minutes."""
WINDOW_S = 5
BEFORE_SHIFT = 2 if QUICK else 4
"""Windows scored before prices triple."""
AFTER_SWITCH = 2 if QUICK else 4
"""Windows scored by version 2 before the demo ends."""
ALPHA = 0.001
LABEL_DELAY_S = 2
"""How long after a window the monitor waits for its labels before its performance is final."""
TOPIC = "fraud.predictions"
WEBHOOK_PORT = 8787


def sluice(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sluice", "--repo", str(REPO), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"sluice {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def start(name: str, *args: str) -> subprocess.Popen[bytes]:
    log_path = load_config(REPO).state_dir / "logs" / f"demo-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(REPO), *args], stdout=log, stderr=subprocess.STDOUT
        )


def clear_earlier_runs() -> None:
    """Start again at version 1, on this run's payments only: delete the demo's topics (an earlier run's
    later payments would make this run's history late), its features in Redis and Parquet, and the
    models, profiles, alerts, jobs and scores of earlier runs."""
    import redis

    from streams import admin_client

    config = load_config(REPO)
    admin = admin_client(config.kafka)
    topics = [
        "transactions",
        "transactions.dlq",
        *(f"{TOPIC}{suffix}" for suffix in ("", ".scores", ".dlq", ".labelled")),
    ]
    try:
        admin.delete_topics([topic for topic in topics if topic in set(admin.list_topics())])
        deadline = time.monotonic() + 60
        while set(topics) & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        admin.close()
    client = redis.Redis.from_url(config.redis.url, **config.redis.client_kwargs())
    # Feast's Redis keys end with the project name; the offline rows live under the repo's data folder.
    for key in client.scan_iter(match=f"*{config.project}", count=1000):
        client.delete(key)
    client.close()
    shutil.rmtree(REPO / "data" / "card_transaction_stats", ignore_errors=True)
    from monitors.retraining.mlflow import open_registry

    open_registry(config).delete_model("fraud")
    state = config.state_dir
    for path in ("sluice.db", "sluice.db-wal", "sluice.db-shm"):
        (state / path).unlink(missing_ok=True)
    for folder in (
        "profiles/fraud",
        "models/fraud",
        "monitor/scores/model=fraud",
        "reports/fraud",
        "jobs",
        "demo",
    ):
        shutil.rmtree(state / folder, ignore_errors=True)


def produce(payments: list[Any], *, bad: tuple[bytes, ...] = ()) -> None:
    sender = producer(load_config(REPO).kafka, linger_ms=20)
    for payment in payments:
        sender.send("transactions", key=str(payment.card_id).encode(), value=orjson.dumps(payment.event()))
    for value in bad:
        sender.send("transactions", key=b"bad", value=value)
    sender.flush()
    sender.close()


def wait_until_consumed(worker: subprocess.Popen[bytes], timeout_s: float = 120) -> float:
    """Wait until the worker's group has committed the end of every partition; returns the seconds."""
    from kafka import TopicPartition

    config = load_config(REPO)
    probe = consumer(config.kafka, group_id=f"sluice-{config.project}")
    partitions = [
        TopicPartition("transactions", p) for p in sorted(probe.partitions_for_topic("transactions"))
    ]
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            if worker.poll() is not None:
                raise SystemExit(f"the stream worker exited with {worker.returncode}")
            ends = probe.end_offsets(partitions)
            if all((probe.committed(tp) or 0) >= ends[tp] for tp in partitions):
                return time.monotonic() - started
            time.sleep(0.3)
    finally:
        probe.close()
    raise SystemExit("the stream worker did not catch up in time")


def train_version_1(traffic: Traffic, history: list[Any]) -> dict[str, Any]:
    """Version 1 learns from the history after its first 10.5 minutes, when the 10-minute counts have
    filled up: the features as they were at each payment (a millisecond before it, as scoring sees
    them), and whether it was fraud."""
    import pandas as pd
    from train import fit_and_register

    settled = history[0].event_time + timedelta(minutes=10.5)
    recent = [payment for payment in history if payment.event_time >= settled]
    labels = pd.DataFrame(
        {
            "card_id": [payment.card_id for payment in recent],
            "event_timestamp": [payment.event_time - timedelta(milliseconds=1) for payment in recent],
            "amount": [payment.amount for payment in recent],
            "country": [payment.country for payment in recent],
            "is_fraud": [traffic.is_fraud(payment) for payment in recent],
        }
    )
    trained = fit_and_register(labels, repo_path=REPO, model="fraud")
    from monitors.retraining.gate import promote
    from monitors.retraining.mlflow import open_registry

    decision = promote(open_registry(load_config(REPO)), "fraud")
    return {**trained, "gate": decision.reason}


def compare_reads() -> None:
    import warnings

    from features.registry import feature_store
    from features.repo import load_repo
    from online_store import OnlineClient

    repo = load_repo(REPO)
    warnings.filterwarnings("ignore", message="Stream feature views are experimental")
    features = [
        f"card_transaction_stats:{name}" for name in ("txn_count_10m", "amount_mean_1h", "amount_max_1d")
    ]
    rows = [{"card_id": card} for card in (1, 2, 3)]
    theirs = feature_store(repo).get_online_features(features=features, entity_rows=rows).to_dict()
    with OnlineClient(repo_path=REPO) as client:
        ours = client.get_online_features(features=features, entity_rows=rows)
    if ours != theirs:
        raise SystemExit(f"OnlineClient and Feast disagree:\n{ours}\n{theirs}")
    print(f"     Feast's get_online_features and sluice's OnlineClient agree, e.g. card 1: {_card(ours)}")
    verified = sluice("verify", check=False)
    if verified.returncode != 0:
        raise SystemExit(f"verify found differences between Redis and Parquet:\n{verified.stdout}")
    print(f"     sluice verify: {verified.stdout.strip().splitlines()[-1]}")


def _card(response: dict[str, list[Any]]) -> str:
    return ", ".join(
        f"{name}={values[0]:.2f}" if isinstance(values[0], float) else f"{name}={values[0]}"
        for name, values in response.items()
        if name != "card_id"
    )


class WebhookReceiver:
    """The local stand-in for Slack and Alertmanager: prints what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                receiver.received.append((time.time(), self.path, body))
                text = body.get("text") or f"{body['status']} {body['alerts'][0]['labels']['feature']}"
                print(f"     webhook {self.path}: {text}")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", WEBHOOK_PORT), Handler)
        except OSError as error:
            raise SystemExit(f"the demo's webhook receiver needs 127.0.0.1:{WEBHOOK_PORT}: {error}") from None
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def score_live(traffic: Traffic, history_end: datetime, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Score payments as they come, switch to each new model version, shift prices halfway."""
    from model import SERVED, log_loss

    from monitors import PredictionLogger
    from monitors.retraining.mlflow import open_registry
    from online_store import OnlineClient

    config = load_config(REPO)
    registry = open_registry(config)
    champion = registry.alias("fraud", "champion")
    assert champion is not None
    model = load_version(registry, champion)
    # Payments went on while version 1 was trained: catch the stream up to now at the same rate, and
    # let the worker count them before scoring reads the counts. Payments go on while it counts, too: a
    # gap of a few seconds lowers every card's 10-minute count enough for the monitor to see it, so
    # catch up again until the gap is what one small batch takes.
    caught_up = history_end
    for _ in range(3):
        now = datetime.now(UTC)
        produce(traffic.between(caught_up, now, per_second=RATE))
        caught_up = now
        wait_until_consumed(worker)
    logger = PredictionLogger(config=config.kafka, topic=TOPIC, source="demo")
    sender = producer(config.kafka, linger_ms=5)
    shift_at = window_start(datetime.now(UTC), WINDOW_S) + timedelta(seconds=WINDOW_S * (BEFORE_SHIFT + 1))
    print(
        f"5. scoring {RATE} payments/s with models:/fraud@champion (version {model.version}); "
        f"prices triple at {shift_at:%H:%M:%S}"
    )
    latencies: list[float] = []
    outcomes: dict[str, list[tuple[dict[str, Any], int]]] = {}
    switched_at: datetime | None = None
    deadline = time.monotonic() + (90 if QUICK else 120) + WINDOW_S * BEFORE_SHIFT
    next_poll = time.monotonic()
    scored = 0
    with OnlineClient(repo_path=REPO) as client:
        started = time.monotonic()
        while time.monotonic() < deadline:
            now = datetime.now(UTC)
            if traffic.level == 1.0 and now >= shift_at:
                traffic.level = 3.0
                print(f"6. {now:%H:%M:%S} prices triple")
            due = int((time.monotonic() - started) * RATE) - scored
            for _ in range(due):
                payment = traffic.payment(datetime.now(UTC))
                began = time.perf_counter()
                online = client.get_online_features(
                    features=["card_transaction_stats:txn_count_10m"],
                    entity_rows=[{"card_id": payment.card_id}],
                )
                latencies.append((time.perf_counter() - began) * 1000)
                served = {"amount": payment.amount, "country": payment.country, **_first(online)}
                probability = float(model.score([served])[0])
                label = traffic.is_fraud(payment)
                request_id = f"{payment.event_time.timestamp():.6f}-{payment.card_id}"
                logger.log(
                    model="fraud",
                    version=model.version,
                    request_id=request_id,
                    features={name: served[name] for name in SERVED},
                    entities={"card_id": payment.card_id},
                    outputs={"fraud_probability": probability},
                    event_time=payment.event_time,
                )
                logger.log_label(
                    model="fraud", request_id=request_id, label=label, event_time=payment.event_time
                )
                # The payment itself lands a millisecond after it was scored, as training assumes.
                paid = replace(payment, event_time=payment.event_time + timedelta(milliseconds=1))
                sender.send(
                    "transactions", key=str(payment.card_id).encode(), value=orjson.dumps(paid.event())
                )
                if traffic.level > 1:
                    outcomes.setdefault(model.version, []).append((served, label))
                scored += 1
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 1
                champion = registry.alias("fraud", "champion")
                if champion is not None and champion != model.version:
                    model = load_version(registry, champion)
                    switched_at = datetime.now(UTC)
                    print(
                        f"7. {switched_at:%H:%M:%S} champion is now version {model.version}; scoring follows"
                    )
            if switched_at is not None and datetime.now(UTC) > switched_at + timedelta(
                seconds=WINDOW_S * (AFTER_SWITCH + 1.5)
            ):
                break
            time.sleep(0.02)
    logger.close()
    sender.flush()
    sender.close()
    if switched_at is None:
        raise SystemExit("no retrained model version was registered in time; see sluice jobs list")
    # How each version did on the payments after the shift, scored by version 2's weights and 1's.
    after = [row for rows in outcomes.values() for row in rows]
    served = [row for row, _ in after]
    truth = np.asarray([label for _, label in after], dtype=float)
    losses = {
        entry.version: log_loss(load_version(registry, entry.version), served, truth)
        for entry in registry.versions("fraud")
    }
    return {
        "scored": scored,
        "latencies": latencies,
        "shift_at": shift_at,
        "switched_at": switched_at,
        "losses": losses,
    }


def final_performance(config: Any, shift_at: datetime) -> dict[tuple[str, bool], dict[str, float]]:
    """The monitor's final performance windows of each version, before and after the shift: the mean of
    each metric over the windows (from the scores topic)."""
    reader = consumer(
        config.kafka, f"{TOPIC}.scores", group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    found: dict[tuple[str, bool], list[dict[str, float]]] = {}
    for record in reader:
        report = orjson.loads(record.value)
        if report.get("stage") != "final":
            continue
        after = report["window_start_us"] >= shift_at.timestamp() * 1e6
        scores = {item["metric"]: item["score"] for item in report["scores"] if item["score"] is not None}
        found.setdefault((report["version"], after), []).append(scores)
    reader.close()
    return {
        key: {
            **{
                name: float(np.mean([window[name] for window in windows if name in window]))
                for name in ("log_loss", "accuracy", "roc_auc")
            },
            "windows": float(len(windows)),
        }
        for key, windows in found.items()
    }


def load_version(registry: Any, version: str) -> Any:
    """A version of the fraud model, from its files in MLflow."""
    from model import FraudModel

    folder = load_config(REPO).state_dir / "demo" / "models" / version
    shutil.rmtree(folder, ignore_errors=True)
    return FraudModel.load(registry.download("fraud", version, folder) / "model.json")


def file_path(uri: str) -> Path:
    """The local path of a ``file://`` URI (as ``Path.as_uri`` writes them, percent-encoded)."""
    return Path(url2pathname(urlsplit(uri).path))


def _first(response: dict[str, list[Any]]) -> dict[str, Any]:
    return {name: values[0] for name, values in response.items() if name != "card_id"}


def main() -> None:
    started = time.monotonic()
    config = load_config(REPO)
    clear_earlier_runs()
    print("1. sluice apply")  # it creates the topics again
    for line in sluice("apply").stdout.splitlines():
        print(f"     {line}")

    traffic = Traffic(seed=int(time.time()))
    history_end = datetime.now(UTC)
    history = traffic.between(history_end - HISTORY, history_end, per_second=RATE)
    # The default batch size: the offline store keeps a row at every change point, whatever the batching.
    worker = start("worker", "worker", "--loglevel", "info")
    monitor = None
    receiver = None
    try:
        ensure_topics(config.kafka, [TOPIC], partitions=config.topics.partitions)
        produce(
            history, bad=(b"{not json", b'{"card_id": "seven", "amount": 1.0, "event_time": "2026-01-01"}')
        )
        seconds = wait_until_consumed(worker)
        print(
            f"2. the stream worker computed features of {len(history):,} payments (+2 bad) in {seconds:.1f} s"
        )

        version_1 = train_version_1(traffic, history)
        print(
            f"3. trained fraud version {version_1['version']} ({version_1['trainer']}) on a point-in-time "
            f"training set of {version_1['rows']:.0f} payments in {version_1['seconds']:.1f} s, "
            f"registered in MLflow ({config.mlflow_tracking_uri}); promotion gate: {version_1['gate']}"
        )
        compare_reads()

        receiver = WebhookReceiver()
        from monitors import alerts

        heard: list[Any] = []
        subscription = alerts.on_alert(heard.append, model="fraud", config=config)
        monitor = start(
            "monitor", "monitor", "--topic", TOPIC, "--window-seconds", str(WINDOW_S),
            "--lateness-seconds", "1", "--alpha", str(ALPHA), "--loglevel", "info",
            "--performance", "fraud=binary:fraud_probability", "--performance-window-seconds", str(WINDOW_S),
            "--label-delay-seconds", str(LABEL_DELAY_S),
        )  # fmt: skip
        print(
            f"4. sluice monitor watches {TOPIC} in {WINDOW_S}-second windows, drift and performance "
            f"(log: {config.state_dir}/logs)"
        )
        live = score_live(traffic, history_end, worker)
        time.sleep(1)
        subscription.close()
    finally:
        for process in (monitor, worker):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
        if receiver is not None:
            receiver.close()
    summarize(config, live, heard, receiver.received, started)


def summarize(
    config: Any, live: dict[str, Any], heard: list[Any], webhooks: list[Any], started: float
) -> None:
    from demo_plot import plot_drift
    from model import SERVED

    from monitors.database import open_store
    from monitors.retraining.store import JobStore

    firing = [alert for alert in heard if alert.status == "firing"]
    drifted = [alert for alert in firing if alert.feature in SERVED]
    if not drifted:
        raise SystemExit("the monitor sent no drift alert after the shift; see the monitor's log")
    first = min(drifted, key=lambda alert: alert.window_start_us)
    fired_window = datetime.fromtimestamp(first.window_start_us / 1e6, UTC)
    windows_late = (fired_window - live["shift_at"]).total_seconds() / WINDOW_S
    jobs = JobStore(engine=open_store(config.store_url)).jobs(model="fraud")
    report = file_path(first.report_url)
    plot = plot_drift(
        Path(config.scores_location),
        config.state_dir / "demo" / "drift-scores.png",
        model="fraud",
        shift_at=live["shift_at"],
        alerts_at=[datetime.fromtimestamp(alert.window_end_us / 1e6, UTC) for alert in firing],
        switched_at=live["switched_at"],
        alpha=ALPHA,
    )
    p50, p99 = np.percentile(live["latencies"], [50, 99])
    print("summary")
    print(f"   payments scored live: {live['scored']:,}; feature reads p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    for alert in firing:
        when = datetime.fromtimestamp(alert.window_start_us / 1e6, UTC)
        print(f"   alert {alert.severity}: {alert.summary}, window from {when:%H:%M:%S}")
    print(f"   the first alert is for the window that starts {windows_late:.0f} windows after the shift")
    print(f"   webhooks received {len(webhooks)} posts; the Python subscriber {len(heard)} alerts")
    for job in jobs:
        took = "-" if job.duration_s is None else f"{job.duration_s:.1f} s"
        print(f"   job {job.job_id} ({job.backend}): {job.state} in {took}; {job.detail}")
    performance = final_performance(config, live["shift_at"])
    for (version, after), metrics in sorted(performance.items()):
        when = "after the shift" if after else "before the shift"
        print(
            f"   version {version} {when}: log loss {metrics['log_loss']:.3f}, accuracy "
            f"{metrics['accuracy']:.3f}, ROC AUC {metrics['roc_auc']:.3f} (final, from the labels; "
            f"{metrics['windows']:.0f} windows)"
        )
    losses = ", ".join(f"v{version} {loss:.3f}" for version, loss in sorted(live["losses"].items()))
    print(f"   log loss on the payments after the shift: {losses}")
    print(f"   Evidently report of the drifted window: {report}")
    print(f"   drift scores over time: {plot}")
    promoted = any(job.state == "succeeded" and "promoted to champion" in job.detail for job in jobs)
    worse = performance.get(("1", True), {}).get("log_loss", 0.0) > performance.get(("1", False), {}).get(
        "log_loss", math.inf
    )
    if not 0 <= windows_late <= 1 or not report.exists() or not promoted or not worse:
        raise SystemExit("the demo did not go as it should: see above")
    print(f"demo ok in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
