"""Performance windows: sluice's summed statistics against scikit-learn and Evidently's
ClassificationPreset, on the same labelled predictions.

Workload: a binary classifier's labelled predictions (scores N(0, 1) for negatives and N(1.5, 1) for
positives, 20% positives, squashed into probabilities), cut into windows, each window's rows spread over
four partitions. sluice does what the monitor does: each partition's rows go into ``BinaryStats`` in
batches of 5,000, the partitions' stats merge, and the window gets its seven metrics and the tests of the
two that alert. scikit-learn computes the same seven metrics from the window's raw rows (the exact
recomputation the figures are checked against); Evidently runs its ClassificationPreset per window
against a reference of the same size, once. Each side is warmed up first (imports, first calls). Prints
one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in drift.py: BLAS threads busy-wait on two cores

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTITIONS = 4
BATCH = 5_000


def window(rng: np.random.Generator, rows: int, separation: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    labels = (rng.random(rows) < 0.2).astype(np.int64)
    scores = rng.normal(0, 1, rows) + separation * labels
    return 1 / (1 + np.exp(-(scores - 1.5))), labels


def sluice_window(probabilities: np.ndarray, labels: np.ndarray, level: dict[str, float]) -> dict[str, float]:
    from monitors.performance.stats import BinaryStats

    owner = np.arange(len(labels)) % PARTITIONS
    merged = BinaryStats()
    for partition in range(PARTITIONS):
        part = BinaryStats()
        chosen = np.flatnonzero(owner == partition)
        for start in range(0, len(chosen), BATCH):
            rows = chosen[start : start + BATCH]
            part.add(probabilities[rows], labels[rows])
        merged.merge(part)
    metrics = merged.metrics()
    for name in ("accuracy", "roc_auc"):
        metrics[f"{name}_p"] = merged.below(name, level[name])
    return metrics


def sklearn_window(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as sk

    predicted = (probabilities >= 0.5).astype(int)
    which = np.minimum((probabilities * 10).astype(int), 9)
    calibration = sum(
        abs(labels[which == b].mean() - probabilities[which == b].mean()) * np.sum(which == b)
        for b in range(10)
        if np.any(which == b)
    ) / len(labels)
    return {
        "accuracy": sk.accuracy_score(labels, predicted),
        "precision": sk.precision_score(labels, predicted, zero_division=0),
        "recall": sk.recall_score(labels, predicted),
        "f1": sk.f1_score(labels, predicted),
        "log_loss": sk.log_loss(labels, probabilities),
        "roc_auc": sk.roc_auc_score(labels, probabilities),
        "calibration_error": float(calibration),
    }


def evidently_window(
    reference: tuple[np.ndarray, np.ndarray], current: tuple[np.ndarray, np.ndarray]
) -> None:
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[BinaryClassification(target="target", prediction_probas="prediction")]
    )

    def dataset(data: tuple[np.ndarray, np.ndarray]) -> Dataset:
        frame = pd.DataFrame({"prediction": data[0], "target": data[1]})
        return Dataset.from_pandas(frame, data_definition=definition)

    Report([ClassificationPreset()]).run(current_data=dataset(current), reference_data=dataset(reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="labelled predictions per window")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of sluice and scikit-learn")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    reference = window(rng, args.rows)
    windows = [
        window(rng, args.rows, 1.5 if index < args.windows // 2 else 0.75) for index in range(args.windows)
    ]
    level = sluice_window(*reference, {"accuracy": 0.5, "roc_auc": 0.5})
    # Warm-ups: imports and first calls are not what a window costs.
    sluice_window(*windows[0], level)
    sklearn_window(*windows[0])
    evidently_window(window(rng, 1_000), window(rng, 1_000))

    sluice_times, sklearn_times = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        ours = [sluice_window(*data, level) for data in windows]
        sluice_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = [sklearn_window(*data) for data in windows]
        sklearn_times.append(time.perf_counter() - started)
    gaps = {
        name: max(abs(mine[name] - exact[name]) for mine, exact in zip(ours, theirs, strict=True))
        for name in theirs[0]
    }
    assert gaps["roc_auc"] <= 1e-3 and all(gap <= 1e-9 for name, gap in gaps.items() if name != "roc_auc"), (
        gaps
    )

    started = time.perf_counter()
    for data in windows:
        evidently_window(reference, data)
    evidently_s = time.perf_counter() - started

    sluice_s, sklearn_s = statistics.median(sluice_times), statistics.median(sklearn_times)
    flagged = [
        index
        for index, metrics in enumerate(ours)
        if metrics["roc_auc"] < level["roc_auc"] and metrics["roc_auc_p"] < 0.01
    ]
    print(
        json.dumps(
            {
                "sluice_s": round(sluice_s, 4),
                "sklearn_s": round(sklearn_s, 3),
                "evidently_s": round(evidently_s, 3),
                "speedup_vs_sklearn": round(sklearn_s / sluice_s, 1),
                "speedup_vs_evidently": round(evidently_s / sluice_s, 1),
                "max_gap_vs_sklearn": {name: float(f"{gap:.2e}") for name, gap in gaps.items()},
                "degraded_windows_flagged": flagged,
                "rows_per_window": args.rows,
                "windows": args.windows,
                "partitions": PARTITIONS,
                "runs": args.runs,
            }
        )
    )


if __name__ == "__main__":
    main()
