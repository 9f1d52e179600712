"""The fraud model's training entrypoint, as a retraining job runs it (``retraining.entrypoint``).

    python train.py --model fraud --version 1 --alert-id ... --job-id ... \
        --train-start 2026-11-28T12:00:00+00:00 --train-end 2026-11-28T12:05:00+00:00

1. Read the labelled predictions of the training window from Kafka (``<predictions>.labelled``, written
   by ``sluice monitor``): who paid, when, how much, where, and whether it was fraud.
2. Join each with the card's features as they were at prediction time (``get_historical_features``).
3. Fit the model (scikit-learn; PyTorch on the GPU when CUDA is there), and register the next version:
   its weights, its reference profile for the monitor, and a row in the model registry.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from model import ONLINE, SERVED, fit, log_loss  # noqa: E402

MIN_ROWS = 200


def read_labelled(config: Any, topic: str, model: str, start: datetime, end: datetime) -> Any:
    """The labelled predictions of ``model`` made in [start, end), as an entity DataFrame."""
    import orjson
    import pandas as pd
    from kafka import TopicPartition

    from streams import consumer

    reader = consumer(config.kafka, group_id=None, consumer_timeout_ms=2000)
    partitions = [
        TopicPartition(topic, number) for number in sorted(reader.partitions_for_topic(topic) or [])
    ]
    if not partitions:
        raise SystemExit(f"no topic {topic!r}: is sluice monitor running on the predictions topic?")
    reader.assign(partitions)
    # Labels arrive after their predictions: start from where records were written at the window's start.
    found = reader.offsets_for_times({partition: int(start.timestamp() * 1000) for partition in partitions})
    ends = reader.end_offsets(partitions)
    for partition in partitions:
        offset = found.get(partition)
        reader.seek(partition, offset.offset if offset is not None else ends[partition])
    rows = []
    for record in reader:
        pair = orjson.loads(record.value)
        when = datetime.fromisoformat(pair["prediction_time"])
        if pair["model"] == model and start <= when < end and "card_id" in pair["entities"]:
            rows.append(
                {
                    "card_id": pair["entities"]["card_id"],
                    "event_timestamp": when,
                    "amount": pair["features"].get("amount"),
                    "country": pair["features"].get("country"),
                    "is_fraud": int(pair["label"]),
                }
            )
        if all(reader.position(partition) >= ends[partition] for partition in partitions):
            break
    reader.close()
    return pd.DataFrame(rows)


def fit_and_register(
    labels: Any, *, repo_path: Path, model: str, job_id: str | None = None
) -> dict[str, Any]:
    """Join features to ``labels`` as of each row's time, fit, save, profile and register a new version."""
    import numpy as np

    from features import load_config
    from monitors import ReferenceProfile
    from monitors.database import open_store
    from monitors.retraining.store import ModelRegistry
    from offline_store import get_historical_features

    config = load_config(repo_path)
    started = time.perf_counter()
    frame = get_historical_features(entity_df=labels, features=ONLINE, repo=repo_path).to_df()
    frame = frame.sort_values("event_timestamp").reset_index(drop=True)
    frame["txn_count_10m"] = frame["txn_count_10m"].fillna(0)
    rows = frame[SERVED].to_dict("records")
    outcome = frame["is_fraud"].to_numpy(dtype=float)
    cut = int(len(rows) * 0.8)  # validate on the latest fifth, as it would be scored next
    registry = ModelRegistry(engine=open_store(config.store_url))
    latest = registry.latest(model)
    version = str(int(latest.version) + 1) if latest is not None and latest.version.isdigit() else "1"
    fitted = fit(rows[:cut], outcome[:cut], version=version)
    metrics = {
        "rows": float(len(rows)),
        "fraud_rate": float(np.mean(outcome)),
        "validation_log_loss": log_loss(fitted, rows[cut:], outcome[cut:]),
        "seconds": time.perf_counter() - started,
    }
    uri = fitted.save(config.state_dir / "models" / model / version)
    ReferenceProfile.build(frame[SERVED], model=model, version=version).save(config.state_dir / "profiles")
    registry.register(model=model, version=version, uri=uri.as_uri(), job_id=job_id, metrics=metrics)
    return {"version": version, "trainer": fitted.trainer, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", required=True, help="The version whose alert started this job.")
    parser.add_argument("--alert-id", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--train-start", required=True, type=datetime.fromisoformat)
    parser.add_argument("--train-end", required=True, type=datetime.fromisoformat)
    parser.add_argument("--repo", type=Path, default=Path(os.environ.get("SLUICE_REPO", HERE)))
    parser.add_argument(
        "--labelled-topic", default=os.environ.get("SLUICE_LABELLED_TOPIC", "predictions.labelled")
    )
    args = parser.parse_args()

    from features import load_config

    config = load_config(args.repo)
    print(f"job {args.job_id}: retraining {args.model} after alert {args.alert_id}")
    labels = read_labelled(config, args.labelled_topic, args.model, args.train_start, args.train_end)
    print(f"{len(labels)} labelled predictions from {args.train_start} to {args.train_end}")
    if len(labels) < MIN_ROWS or labels["is_fraud"].nunique() < 2:
        raise SystemExit(
            f"too few labelled predictions to train on ({len(labels)}; needs {MIN_ROWS}, both classes)"
        )
    result = fit_and_register(labels, repo_path=args.repo, model=args.model, job_id=args.job_id)
    print(
        f"registered {args.model} version {result['version']} ({result['trainer']}): "
        f"{result['rows']:.0f} rows, validation log loss {result['validation_log_loss']:.3f}"
    )


if __name__ == "__main__":
    main()
