"""What a window keeps of its labelled predictions: sufficient statistics that add up across partitions.

A binary classifier's window keeps, for a decision threshold, the confusion counts; the sum of log
losses; and two histograms of the predicted probability of the positive class (``BINS`` equal bins over
[0, 1]), one for each true class, with each bin's sum of probabilities. From these come accuracy,
precision, recall, F1 and log loss exactly as scikit-learn computes them, the expected calibration error
over ten bins, and ROC AUC to within the pairs that share a histogram bin (counted as ties, as sklearn
counts equal scores): for continuous scores, a difference under 1e-3.

A regressor's window keeps the count, the sums of absolute, squared and absolute percentage errors, and
the sums of the labels and their squares: MAE, RMSE, MAPE and R2 exactly as scikit-learn computes them.

Every statistic is a sum, so the stats of a window's partitions add up to the window's, in any order.

>>> stats = BinaryStats()
>>> stats.add(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 1]))
>>> stats.metrics()["accuracy"], stats.metrics()["recall"]
(0.5, 0.5)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = [
    "BINS",
    "METRICS",
    "BinaryStats",
    "PerformanceMetric",
    "RegressionStats",
    "Task",
    "stats_for",
    "stats_from_bytes",
]

BINS = 10_000
"""Histogram bins of the predicted probability, over [0, 1]."""

Task = Literal["binary", "regression"]


@dataclass(frozen=True, kw_only=True)
class PerformanceMetric:
    """A performance metric and which way is better."""

    name: str
    task: Task
    higher_is_better: bool


METRICS: dict[str, PerformanceMetric] = {
    item.name: item
    for item in (
        PerformanceMetric(name="accuracy", task="binary", higher_is_better=True),
        PerformanceMetric(name="precision", task="binary", higher_is_better=True),
        PerformanceMetric(name="recall", task="binary", higher_is_better=True),
        PerformanceMetric(name="f1", task="binary", higher_is_better=True),
        PerformanceMetric(name="log_loss", task="binary", higher_is_better=False),
        PerformanceMetric(name="roc_auc", task="binary", higher_is_better=True),
        PerformanceMetric(name="calibration_error", task="binary", higher_is_better=False),
        PerformanceMetric(name="mae", task="regression", higher_is_better=False),
        PerformanceMetric(name="rmse", task="regression", higher_is_better=False),
        PerformanceMetric(name="mape", task="regression", higher_is_better=False),
        PerformanceMetric(name="r2", task="regression", higher_is_better=True),
    )
}
"""Every performance metric, by name."""

_PROPORTIONS = {
    "accuracy": lambda tp, fp, tn, fn: (tp + tn, tp + fp + tn + fn),
    "precision": lambda tp, fp, tn, fn: (tp, tp + fp),
    "recall": lambda tp, fp, tn, fn: (tp, tp + fn),
}
"""The metrics that are a share of successes: successes and trials from the confusion counts."""

_EPSILON = float(np.finfo(np.float64).eps)
"""scikit-learn's clipping of probabilities in log loss, and its floor under |y| in MAPE."""


@dataclass
class BinaryStats:
    """A binary classifier's labelled predictions, summed (see the module's doc)."""

    threshold: float = 0.5
    """A probability at or above it predicts the positive class."""
    confusion: NDArray[np.int64] = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    """True positives, false positives, true negatives, false negatives."""
    log_loss_sum: float = 0.0
    histogram: NDArray[np.int64] = field(default_factory=lambda: np.zeros((2, BINS), dtype=np.int64))
    """Per true class (negative, positive), the predictions per probability bin."""
    probability_sums: NDArray[np.float64] = field(default_factory=lambda: np.zeros((2, BINS)))

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def add(self, probabilities: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        """Add labelled predictions: the predicted probability of the positive class, and the true class
        (0 or 1)."""
        p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
        y = np.asarray(labels, dtype=np.int64)
        predicted = p >= self.threshold
        truth = y == 1
        self.confusion += [
            int(np.sum(predicted & truth)),
            int(np.sum(predicted & ~truth)),
            int(np.sum(~predicted & ~truth)),
            int(np.sum(~predicted & truth)),
        ]
        clipped = np.clip(p, _EPSILON, 1 - _EPSILON)
        self.log_loss_sum += float(-np.sum(np.where(truth, np.log(clipped), np.log(1 - clipped))))
        bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
        for label in (0, 1):
            chosen = y == label
            self.histogram[label] += np.bincount(bins[chosen], minlength=BINS)
            self.probability_sums[label] += np.bincount(bins[chosen], weights=p[chosen], minlength=BINS)

    def merge(self, other: BinaryStats) -> None:
        self.confusion += other.confusion
        self.log_loss_sum += other.log_loss_sum
        self.histogram += other.histogram
        self.probability_sums += other.probability_sums

    def metrics(self) -> dict[str, float]:
        tp, fp, tn, fn = (int(value) for value in self.confusion)
        total = tp + fp + tn + fn
        if total == 0:
            return dict.fromkeys((name for name, item in METRICS.items() if item.task == "binary"), math.nan)
        precision = tp / (tp + fp) if tp + fp else 0.0  # scikit-learn's zero_division=0
        recall = tp / (tp + fn) if tp + fn else 0.0
        return {
            "accuracy": (tp + tn) / total,
            "precision": precision,
            "recall": recall,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "log_loss": self.log_loss_sum / total,
            "roc_auc": self._auc(),
            "calibration_error": self._calibration_error(),
        }

    def below(self, name: str, level: float) -> float:
        """The one-sided p-value that the metric's true value is ``level`` or better, given this window:
        small when the window's labels show it worse than ``level`` beyond their sampling noise. Accuracy,
        precision and recall are proportions (an exact binomial test); ROC AUC uses Hanley and McNeil's
        standard error at ``level``. Other metrics have no test here: NaN.

        >>> stats = BinaryStats()
        >>> stats.add(np.r_[np.full(70, 0.9), np.full(30, 0.1)], np.ones(100, dtype=np.int64))
        >>> round(stats.below("accuracy", 0.8), 4), round(stats.below("accuracy", 0.7), 2)
        (0.0112, 0.54)
        """
        tp, fp, tn, fn = (int(value) for value in self.confusion)
        if name in _PROPORTIONS:
            successes, trials = _PROPORTIONS[name](tp, fp, tn, fn)
            return float(special.bdtr(successes, trials, level)) if trials else math.nan
        if name == "roc_auc":
            auc = self._auc()
            negatives, positives = (int(counts.sum()) for counts in self.histogram)
            if math.isnan(auc) or not 0 < level < 1:
                return math.nan
            q1, q2 = level / (2 - level), 2 * level * level / (1 + level)
            variance = (
                level * (1 - level) + (positives - 1) * (q1 - level**2) + (negatives - 1) * (q2 - level**2)
            ) / (positives * negatives)
            return float(special.ndtr((auc - level) / math.sqrt(variance)))
        return math.nan

    def _auc(self) -> float:
        """The chance a positive scores above a negative (ties count half), over the histograms."""
        negatives, positives = self.histogram
        if not negatives.sum() or not positives.sum():
            return math.nan  # scikit-learn refuses: one class only
        below = np.concatenate(([0], np.cumsum(negatives)[:-1]))
        wins = float(np.sum(positives * below) + 0.5 * np.sum(positives * negatives))
        return wins / float(positives.sum() * negatives.sum())

    def _calibration_error(self, bins: int = 10) -> float:
        """Expected calibration error over ``bins`` equal bins: the count-weighted gap between the share
        of positives and the mean predicted probability."""
        counts = self.histogram.sum(axis=0).reshape(bins, -1).sum(axis=1)
        positives = self.histogram[1].reshape(bins, -1).sum(axis=1)
        probabilities = self.probability_sums.sum(axis=0).reshape(bins, -1).sum(axis=1)
        present = counts > 0
        if not present.any():
            return math.nan
        gaps = np.abs(positives[present] - probabilities[present])  # count x |share - mean probability|
        return float(gaps.sum() / counts.sum())

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            kind=np.array([0]),
            threshold=np.array([self.threshold]),
            confusion=self.confusion,
            log_loss_sum=np.array([self.log_loss_sum]),
            histogram=self.histogram,
            probability_sums=self.probability_sums,
        )
        return buffer.getvalue()


@dataclass
class RegressionStats:
    """A regressor's labelled predictions, summed (see the module's doc)."""

    count: int = 0
    absolute: float = 0.0
    squared: float = 0.0
    percentage: float = 0.0
    label_sum: float = 0.0
    label_squares: float = 0.0

    def add(self, predictions: NDArray[np.float64], labels: NDArray[np.float64]) -> None:
        predicted = np.asarray(predictions, dtype=np.float64)
        truth = np.asarray(labels, dtype=np.float64)
        errors = predicted - truth
        self.count += len(truth)
        self.absolute += float(np.sum(np.abs(errors)))
        self.squared += float(np.sum(errors * errors))
        self.percentage += float(np.sum(np.abs(errors) / np.maximum(np.abs(truth), _EPSILON)))
        self.label_sum += float(np.sum(truth))
        self.label_squares += float(np.sum(truth * truth))

    def merge(self, other: RegressionStats) -> None:
        self.count += other.count
        self.absolute += other.absolute
        self.squared += other.squared
        self.percentage += other.percentage
        self.label_sum += other.label_sum
        self.label_squares += other.label_squares

    def metrics(self) -> dict[str, float]:
        if self.count == 0:
            return dict.fromkeys(("mae", "rmse", "mape", "r2"), math.nan)
        spread = self.label_squares - self.label_sum * self.label_sum / self.count
        return {
            "mae": self.absolute / self.count,
            "rmse": math.sqrt(self.squared / self.count),
            "mape": self.percentage / self.count,
            # scikit-learn: 1 - SSE / SST; with constant labels, 1.0 for a perfect fit, else 0.0
            "r2": 1 - self.squared / spread if spread > 0 else (1.0 if self.squared == 0 else 0.0),
        }

    def below(self, name: str, level: float) -> float:
        """No sampling test for a regressor's metrics here: NaN (the tolerance alone decides)."""
        return math.nan

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            kind=np.array([1]),
            values=np.array(
                [self.count, self.absolute, self.squared, self.percentage, self.label_sum, self.label_squares]
            ),
        )
        return buffer.getvalue()


def stats_for(task: Task, *, threshold: float = 0.5) -> BinaryStats | RegressionStats:
    return BinaryStats(threshold=threshold) if task == "binary" else RegressionStats()


def stats_from_bytes(data: bytes) -> BinaryStats | RegressionStats:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        if int(stored["kind"][0]) == 0:
            return BinaryStats(
                threshold=float(stored["threshold"][0]),
                confusion=stored["confusion"],
                log_loss_sum=float(stored["log_loss_sum"][0]),
                histogram=stored["histogram"],
                probability_sums=stored["probability_sums"],
            )
        count, absolute, squared, percentage, label_sum, label_squares = stored["values"].tolist()
        return RegressionStats(
            count=int(count),
            absolute=absolute,
            squared=squared,
            percentage=percentage,
            label_sum=label_sum,
            label_squares=label_squares,
        )
