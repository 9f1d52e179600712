"""`make demo`: the fraud example end to end on the local stack.

1. `sluice apply` registers the card features with Feast and creates the topics.
2. Synthetic card transactions, timed around now, are produced to Kafka, with a few bad ones.
3. A stream worker computes the windowed features into Redis and Parquet.
4. Feast's own SDK reads the features back from Redis, and so does sluice's OnlineClient, faster.
5. `sluice verify` proves that Redis holds the latest Parquet row of every card.
6. A point-in-time training set is joined from Parquet, and `sluice serve` answers over HTTP.
7. The model logs the features it served; `sluice monitor` scores 5-second windows against the training
   set's profile and flags the feature whose values drift.

Run it twice and it goes on where it left off: the topics, the registry and the data are kept.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from features import load_config
from streams import consumer, producer

REPO = Path(__file__).resolve().parent / "fraud"
TRANSACTIONS = 20_000
CARDS = 500


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


def produce_transactions() -> tuple[int, int]:
    """Transactions over the last hour, in event-time order, plus bad messages for the dead-letter topic."""
    config = load_config(REPO)
    rng = random.Random()
    sender = producer(config.kafka, linger_ms=20)
    start = datetime.now(UTC) - timedelta(hours=1)
    for index in range(TRANSACTIONS):
        card = rng.randrange(CARDS)
        event = {
            "card_id": card,
            "amount": round(rng.lognormvariate(3, 1), 2),
            "merchant": f"m{rng.randrange(200)}",
            "country": rng.choice(["DE", "FR", "NL", "US"]),
            "event_time": (start + timedelta(seconds=index * 3600 / TRANSACTIONS)).isoformat(),
        }
        sender.send("transactions", key=str(card).encode(), value=orjson.dumps(event))
    bad = [b"{not json", b'{"card_id": "seven", "amount": 1.0, "event_time": "2026-01-01T00:00:00Z"}']
    for value in bad:
        sender.send("transactions", key=b"bad", value=value)
    sender.flush()
    sender.close()
    return TRANSACTIONS, len(bad)


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
            time.sleep(0.5)
    finally:
        probe.close()
    raise SystemExit("the stream worker did not catch up in time")


def main() -> None:
    print("1. sluice apply")
    for line in sluice("apply").stdout.splitlines():
        print(f"     {line}")

    produced, bad = produce_transactions()
    print(
        f"2. produced {produced} card transactions for {CARDS} cards (the last hour) and {bad} bad messages"
    )

    log_path = Path(os.environ.get("SLUICE_STATE_DIR", REPO / ".sluice")) / "logs" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(REPO), "worker", "--loglevel", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        seconds = wait_until_consumed(worker)
        print(f"3. the stream worker caught up in {seconds:.1f} s (log: {log_path})")
    except SystemExit:
        print(log_path.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    from features.registry import feature_store
    from features.repo import load_repo

    repo = load_repo(REPO)
    # Importing Feast resets warning filters; Feast flags every stream feature view as alpha.
    warnings.filterwarnings("ignore", message="Stream feature views are experimental")
    store = feature_store(repo)
    features = ["txn_count_10m", "txn_count_1h", "amount_sum_1h", "amount_mean_1h", "amount_max_1d"]
    rows = store.get_online_features(
        features=[f"card_transaction_stats:{name}" for name in features],
        entity_rows=[{"card_id": card} for card in (1, 2, 3)],
    ).to_dict()
    print("4. Feast's get_online_features reads what the worker wrote:")
    for position, card in enumerate(rows["card_id"]):
        values = ", ".join(
            f"{name}={rows[name][position]:.2f}"
            if isinstance(rows[name][position], float)
            else f"{name}={rows[name][position]}"
            for name in features
        )
        print(f"     card {card}: {values}")

    from online_store import OnlineClient

    with OnlineClient(repo_path=REPO) as client:
        ours = client.get_online_features(
            features=[f"card_transaction_stats:{name}" for name in features],
            entity_rows=[{"card_id": card} for card in (1, 2, 3)],
        )
        started = time.perf_counter()
        for _ in range(100):
            client.get_online_features(feature_service="fraud_model_v1", entity_rows=[{"card_id": 1}])
        per_call_ms = (time.perf_counter() - started) * 10
    if ours != rows:
        raise SystemExit(f"OnlineClient and Feast disagree:\n{ours}\n{rows}")
    print(f"   sluice's OnlineClient returns the same; a fraud_model_v1 read takes {per_call_ms:.2f} ms")

    verified = sluice("verify", check=False)
    print("5. sluice verify")
    for line in verified.stdout.splitlines():
        print(f"     {line}")
    if verified.returncode != 0:
        raise SystemExit("verify found differences between Redis and Parquet")

    training = training_set(repo)
    serve_one_request()
    watch_for_drift(training)
    print("demo ok")


def training_set(repo: Any) -> Any:
    """Labels at random moments of the last hour, joined with the features as they were then."""
    import pandas as pd

    from offline_store import get_historical_features

    rng = random.Random(1)
    now = datetime.now(UTC)
    labels = pd.DataFrame(
        {
            "card_id": [rng.randrange(CARDS) for _ in range(5000)],
            "event_timestamp": [now - timedelta(seconds=rng.uniform(0, 3600)) for _ in range(5000)],
            "is_fraud": [rng.random() < 0.02 for _ in range(5000)],
        }
    )
    started = time.perf_counter()
    frame = get_historical_features(
        entity_df=labels,
        features=["card_transaction_stats:txn_count_1h", "card_transaction_stats:amount_sum_1h"],
        repo=repo,
    ).to_df()
    seconds = time.perf_counter() - started
    known = int(frame["txn_count_1h"].notna().sum())
    print(
        f"6. a point-in-time training set: {len(frame)} labelled rows in {seconds:.2f} s, "
        f"{known} with features as of their label time ({len(frame) - known} before the card's first window)"
    )
    return frame


def serve_one_request() -> None:
    """Start `sluice serve`, ask for one card in Feast's JSON, and stop it."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "sluice", "--repo", str(REPO), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        body = orjson.dumps({"feature_service": "fraud_model_v1", "entities": {"card_id": [1]}})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/get-online-features",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our loopback server)
                    answer = orjson.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("sluice serve did not answer") from None
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    names = answer["metadata"]["feature_names"]
    values = {name: result["values"][0] for name, result in zip(names, answer["results"], strict=True)}
    print(f"7. sluice serve answered POST /get-online-features: card 1 txn_count_1h={values['txn_count_1h']}")


def watch_for_drift(training: Any) -> None:
    """The model logs what it served; the monitor scores 5-second windows against the training set."""
    from kafka import KafkaConsumer

    from monitors import PredictionLogger, ReferenceProfile

    config = load_config(REPO)
    features = ["txn_count_1h", "amount_sum_1h"]
    version = datetime.now(UTC).strftime("%Y%m%d%H%M%S")  # a fresh model version per demo run
    reference = training[features].dropna()
    ReferenceProfile.build(reference, model="fraud", version=version).save(config.state_dir / "profiles")
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "--repo",
            str(REPO),
            "monitor",
            "--topic",
            "demo.predictions",
            "--window-seconds",
            "5",
            "--lateness-seconds",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        logger = PredictionLogger(config=config.kafka, topic="demo.predictions", source="demo")
        rng = random.Random(2)
        start = datetime.fromtimestamp(int(time.time()) // 5 * 5, UTC)  # on a window boundary
        rows = reference.to_dict("records")
        # Six windows of served features; from the fifth on, amounts arrive three times larger.
        for window in range(6):
            for index in range(300):
                served = dict(rng.choice(rows))
                if window >= 4:
                    served["amount_sum_1h"] *= 3
                logger.log(
                    model="fraud",
                    version=version,
                    request_id=f"{version}-{window}-{index}",
                    features=served,
                    outputs={"score": rng.random()},
                    event_time=start + timedelta(seconds=window * 5 + index / 60),
                )
        for tick in range(8):  # move every partition's watermark past the last window
            logger.log(
                model="fraud",
                version=version,
                request_id=f"{version}-tick-{tick}",
                features={},
                event_time=start + timedelta(minutes=5),
            )
        logger.close()
        reports = []
        scores = KafkaConsumer(
            "demo.predictions.scores",
            bootstrap_servers=config.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=1000,
        )
        deadline = time.monotonic() + 90
        while len(reports) < 6 and time.monotonic() < deadline:
            for record in scores:
                report = orjson.loads(record.value)
                if report["version"] == version:
                    reports.append(report)
        scores.close()
    finally:
        monitor.terminate()
        monitor.wait(timeout=60)
    if len(reports) < 6:
        raise SystemExit(f"the monitor scored {len(reports)} of 6 windows in time")
    print("8. sluice monitor scored six 5-second windows of served features against the training set:")
    for number, report in enumerate(sorted(reports, key=lambda item: item["window_start_us"]), start=1):
        drifted = [s["feature"] for s in report["scores"] if s["against"] == "reference" and s["drift"]]
        print(f"     window {number}: {report['events']} events, drifted: {', '.join(drifted) or 'none'}")


if __name__ == "__main__":
    main()
