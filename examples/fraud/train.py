"""The fraud model's training entrypoint, as a retraining job runs it (``retraining.entrypoint``).

    python train.py --model fraud --version 1 --alert-id ... --job-id ... \
        --train-start 2026-11-28T12:00:00+00:00 --train-end 2026-11-28T12:05:00+00:00

1. Read the labelled predictions of the training window from Kafka (``<predictions>.labelled``, written
   by ``sluice monitor``): who paid, when, how much, where, and whether it was fraud.
2. Join each with the card's features as they were at prediction time (``get_historical_features``).
3. Fit the model (scikit-learn; PyTorch on the GPU when CUDA is there) on all but the latest fifth, and
   score it and the current champion on that fifth (the held-out slice, as it would be scored next).
4. Log an MLflow run (the training window, the alert, both held-out log losses, the model's files),
   register its files as the model's next version, tagged with the job's id, and point the
   ``challenger`` alias at it; save its reference profile for the monitor. The promotion gate
   (``retraining.promotion``) decides on ``champion`` once the job has succeeded.
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

from model import ONLINE, SERVED, FraudModel, fit, log_loss  # noqa: E402

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
    labels: Any,
    *,
    repo_path: Path,
    model: str,
    job_id: str | None = None,
    alert_id: str | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    """Join features to ``labels`` as of each row's time, fit, evaluate against the champion, and
    register the new version in MLflow as the ``challenger``; save its reference profile."""
    import tempfile

    import numpy as np

    from features import load_config
    from monitors import ReferenceProfile
    from monitors.retraining.gate import CHALLENGER, CHAMPION, JOB_TAG
    from monitors.retraining.mlflow import open_registry
    from offline_store import get_historical_features

    config = load_config(repo_path)
    registry = open_registry(config)
    started = time.perf_counter()
    frame = get_historical_features(entity_df=labels, features=ONLINE, repo=repo_path).to_df()
    frame = frame.sort_values("event_timestamp").reset_index(drop=True)
    frame["txn_count_10m"] = frame["txn_count_10m"].fillna(0)
    rows = frame[SERVED].to_dict("records")
    outcome = frame["is_fraud"].to_numpy(dtype=float)
    cut = int(len(rows) * 0.8)  # hold out the latest fifth, as it would be scored next
    # MLflow numbers versions; the model and its profile carry the number it will get.
    version = str(max((int(entry.version) for entry in registry.versions(model)), default=0) + 1)
    fitted = fit(rows[:cut], outcome[:cut], version=version)
    metrics = {
        "rows": float(len(rows)),
        "fraud_rate": float(np.mean(outcome)),
        "holdout_log_loss": log_loss(fitted, rows[cut:], outcome[cut:]),
    }
    champion = registry.alias(model, CHAMPION)
    if champion is not None:
        with tempfile.TemporaryDirectory() as folder:
            current = FraudModel.load(registry.download(model, champion, Path(folder)) / "model.json")
        metrics["champion_holdout_log_loss"] = log_loss(current, rows[cut:], outcome[cut:])
    metrics["seconds"] = time.perf_counter() - started
    tags = {"sluice.model": model, JOB_TAG: job_id or "", "sluice.alert_id": alert_id or ""}
    tags = {key: value for key, value in tags.items() if value}
    run = registry.start_run(experiment=config.mlflow.experiment, name=f"{model}-{version}", tags=tags)
    params = {"trainer": fitted.trainer, "features": ",".join(SERVED), "holdout_rows": len(rows) - cut}
    if window is not None:
        params |= {"train_start": window[0].isoformat(), "train_end": window[1].isoformat()}
    registry.log(run, metrics=metrics, params=params)
    with tempfile.TemporaryDirectory() as folder:
        fitted.save(Path(folder))
        source = registry.log_artifacts(run, Path(folder))
    registry.finish(run)
    registered = registry.register(model, source=source, run_id=run, tags=tags)
    if registered != version:
        raise SystemExit(
            f"MLflow registered version {registered}, not {version}: another job registered {model} "
            "meanwhile; run this one again"
        )
    registry.set_alias(model, CHALLENGER, version)
    # The profile keeps the held-out slice's outputs and outcomes: the reference of performance windows.
    scored = frame[[*SERVED, "is_fraud"]].assign(fraud_probability=np.nan)
    scored.loc[cut:, "fraud_probability"] = fitted.score(rows[cut:])
    profile = ReferenceProfile.build(
        scored,
        model=model,
        version=version,
        features=SERVED,
        prediction_column="fraud_probability",
        label_column="is_fraud",
    )
    profile.save(config.state_dir / "profiles")
    return {"version": version, "trainer": fitted.trainer, "run_id": run, "champion": champion, **metrics}


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
    result = fit_and_register(
        labels,
        repo_path=args.repo,
        model=args.model,
        job_id=args.job_id,
        alert_id=args.alert_id,
        window=(args.train_start, args.train_end),
    )
    against = result.get("champion_holdout_log_loss")
    print(
        f"registered {args.model} version {result['version']} ({result['trainer']}) as the challenger, "
        f"run {result['run_id']}: {result['rows']:.0f} rows, holdout log loss "
        f"{result['holdout_log_loss']:.3f}"
        + (f" (champion version {result['champion']}: {against:.3f})" if against is not None else "")
    )


if __name__ == "__main__":
    main()
