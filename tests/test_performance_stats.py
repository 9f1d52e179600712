"""Performance metrics from sufficient statistics equal scikit-learn's on the raw predictions, over
random data, however the predictions are split into partitions and batches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
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


@pytest.mark.parametrize("seed", range(6))
def test_the_proportion_tests_equal_scipys_binomial_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(20, 3000))
    labels = (rng.random(size) < rng.uniform(0.1, 0.6)).astype(int)
    probabilities = np.clip(rng.beta(2, 5, size) + 0.4 * labels * rng.random(size), 0, 1)
    stats = BinaryStats()
    stats.add(probabilities, labels)
    predicted = probabilities >= 0.5
    counts = {
        "accuracy": (int(np.sum(predicted == (labels == 1))), size),
        "precision": (int(np.sum(predicted & (labels == 1))), int(predicted.sum())),
        "recall": (int(np.sum(predicted & (labels == 1))), int(labels.sum())),
    }
    for name, (successes, trials) in counts.items():
        level = float(rng.uniform(0.2, 0.95))
        expected = scipy_stats.binomtest(successes, trials, level, alternative="less").pvalue
        assert stats.below(name, level) == pytest.approx(expected, rel=1e-9), name
    assert np.isnan(stats.below("log_loss", 0.5)) and np.isnan(RegressionStats().below("mae", 1.0))


def binormal_window(rng: np.random.Generator, size: int, separation: float) -> BinaryStats:
    """A window of a classifier whose scores are N(0, 1) for negatives and N(separation, 1) for
    positives (20% positives), squashed into probabilities: its true AUC is Phi(separation / sqrt 2)."""
    labels = (rng.random(size) < 0.2).astype(int)
    scores = rng.normal(0, 1, size) + separation * labels
    stats = BinaryStats()
    stats.add(1 / (1 + np.exp(-(scores - 1.5))), labels)
    return stats


def test_an_unchanged_models_windows_alarm_at_the_stated_rate_and_a_worse_one_is_caught() -> None:
    """The flag rule a performance window uses (worse than the level, and significantly so at alpha),
    with the level at the true value itself (tolerance 0, the hardest case): over 1,000 windows of 400
    labels of an unchanged model, accuracy and ROC AUC each flag within the binomial bound of alpha. A
    model whose scores separate the classes half as well is flagged in nearly every window."""
    alpha, windows, size = 0.05, 1000, 400
    rng = np.random.default_rng(11)
    truth = binormal_window(rng, 2_000_000, 1.5).metrics()  # the reference: the same model, at scale
    assert truth["roc_auc"] == pytest.approx(float(scipy_stats.norm.cdf(1.5 / np.sqrt(2))), abs=2e-3)

    def flagged(stats: BinaryStats, name: str) -> bool:
        level = truth[name]
        return stats.metrics()[name] < level and stats.below(name, level) < alpha

    bound = scipy_stats.binom.ppf(0.999, windows, alpha)
    unchanged = [binormal_window(rng, size, 1.5) for _ in range(windows)]
    for name in ("accuracy", "roc_auc"):
        alarms = sum(flagged(stats, name) for stats in unchanged)
        assert alarms <= bound, (name, alarms, bound)
    worse = [binormal_window(rng, size, 0.75) for _ in range(200)]
    assert sum(flagged(stats, "roc_auc") for stats in worse) >= 190
