"""`make demo`: the fraud example end to end on the local stack.

1. `sluice apply` registers the card features with Feast and creates the topics.
2. Synthetic card transactions, timed around now, are produced to Kafka, with a few bad ones.
3. A stream worker computes the windowed features into Redis and Parquet.
4. Feast's own SDK reads the features back from Redis, and `sluice verify` proves that Redis holds
   the latest Parquet row of every card.

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

    verified = sluice("verify", check=False)
    print("5. sluice verify")
    for line in verified.stdout.splitlines():
        print(f"     {line}")
    if verified.returncode != 0:
        raise SystemExit("verify found differences between Redis and Parquet")
    print("demo ok")


if __name__ == "__main__":
    main()
