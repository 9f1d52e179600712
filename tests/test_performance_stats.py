"""Performance metrics from sufficient statistics equal scikit-learn's on the raw predictions, over
random data, however the predictions are split into partitions and batches."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from monitors.performance.stats import BinaryStats, RegressionStats, stats_from_bytes


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Straight from the definition, on the raw predictions."""
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    total = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            total += abs(labels[chosen].mean() - probabilities[chosen].mean()) * chosen.sum()
    return total / len(labels)


@pytest.mark.parametrize("seed", range(8))
def test_binary_metrics_equal_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(50, 5000))
    labels = (rng.random(size) < rng.uniform(0.05, 0.6)).astype(int)
    probabilities = np.clip(rng.beta(2, 5, size) + 0.3 * labels * rng.random(size), 0, 1)
    probabilities[rng.random(size) < 0.01] = 1.0  # a certain (and maybe wrong) one
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    parts = [BinaryStats(threshold=threshold) for _ in range(3)]
    owner = rng.integers(0, 3, size)
    for index, part in enumerate(parts):
        chosen = np.flatnonzero(owner == index)
        for batch in np.array_split(chosen, 4):
            part.add(probabilities[batch], labels[batch])
    whole = stats_from_bytes(parts[0].to_bytes())
    for part in parts[1:]:
        whole.merge(part)  # type: ignore[arg-type]
    got = whole.metrics()
    predicted = (probabilities >= threshold).astype(int)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted), abs=1e-12)
    assert got["precision"] == pytest.approx(
        sk.precision_score(labels, predicted, zero_division=0), abs=1e-12
    )
    assert got["recall"] == pytest.approx(sk.recall_score(labels, predicted, zero_division=0), abs=1e-12)
    assert got["f1"] == pytest.approx(sk.f1_score(labels, predicted, zero_division=0), abs=1e-12)
    assert got["log_loss"] == pytest.approx(sk.log_loss(labels, probabilities, labels=[0, 1]), rel=1e-9)
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, probabilities), abs=1e-3)
    assert got["calibration_error"] == pytest.approx(
        expected_calibration_error(probabilities, labels), abs=1e-9
    )


@pytest.mark.parametrize("seed", range(8))
def test_regression_metrics_equal_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 5000))
    labels = rng.normal(50, 20, size)
    labels[rng.random(size) < 0.01] = 0.0  # MAPE's floor
    predictions = labels + rng.normal(0, 5, size)
    parts = [RegressionStats() for _ in range(3)]
    owner = rng.integers(0, 3, size)
    for index, part in enumerate(parts):
        chosen = owner == index
        part.add(predictions[chosen], labels[chosen])
    whole = stats_from_bytes(parts[0].to_bytes())
    for part in parts[1:]:
        whole.merge(part)  # type: ignore[arg-type]
    got = whole.metrics()
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(labels, predictions), rel=1e-9)
    assert got["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(labels, predictions)), rel=1e-9)
    assert got["mape"] == pytest.approx(sk.mean_absolute_percentage_error(labels, predictions), rel=1e-9)
    assert got["r2"] == pytest.approx(sk.r2_score(labels, predictions), rel=1e-6, abs=1e-9)


def test_empty_stats_are_no_evidence() -> None:
    assert all(np.isnan(value) for value in BinaryStats().metrics().values())
    assert all(np.isnan(value) for value in RegressionStats().metrics().values())


def test_the_alerts_know_every_performance_metric_and_which_way_is_worse() -> None:
    from monitors.alerts.alert import LOWER_IS_BETTER, PERFORMANCE
    from monitors.performance.stats import METRICS

    assert set(PERFORMANCE) == set(METRICS)
    assert {name for name, item in METRICS.items() if not item.higher_is_better} == LOWER_IS_BETTER
