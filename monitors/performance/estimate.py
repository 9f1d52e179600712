"""A binary classifier's performance before its labels arrive: confidence-based estimation, as NannyML's CBPE.

The reference's validation outputs and labels calibrate the model's probabilities (isotonic regression:
pool-adjacent-violators over the sorted scores, so the calibrated probability never falls as the score
rises). A window's predicted probabilities, calibrated, are each prediction's expected chance of being
positive, ``q``; the expected confusion counts follow (a prediction of the positive class is a true
positive with probability ``q``, a false positive otherwise, and so on), and from them the expected
accuracy, precision, recall and F1. The expected ROC AUC weighs every pair of predictions by the chance
that the higher-scored one is the positive: ``sum q_i (1 - q_j) [s_i > s_j] / (sum q_i * sum (1 - q_j))``.

It needs only the window's scores (a histogram, ``monitors.performance.stats.BINS`` bins, which adds up
across partitions), so it is there at the window's close, labels or not.

**Assumptions** (NannyML's): the relation between the features and the label does not change (no concept
drift: covariate shift only), and the model's calibrated probabilities are right on the reference. Under
concept drift the estimate is wrong in the way the realized metric will show, once the labels come.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> scores = rng.random(20_000)
>>> labels = (rng.random(20_000) < scores).astype(float)  # calibrated already
>>> calibration = Calibration.fit(scores, labels)
>>> window = histogram(rng.random(5000))
>>> estimate = calibration.estimate(window, threshold=0.5)
>>> round(estimate["accuracy"], 2), round(estimate["roc_auc"], 2)  # exactly: 0.75 and 0.83
(0.76, 0.84)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitors.performance.stats import BINS

__all__ = ["ESTIMATED", "Calibration", "histogram"]

ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")
"""The metrics estimated before labels; reported as ``estimated_<metric>``."""


def histogram(probabilities: NDArray[np.float64]) -> NDArray[np.int64]:
    """Predicted probabilities as counts over ``BINS`` equal bins of [0, 1] (NaN left out)."""
    values = np.asarray(probabilities, dtype=np.float64)
    values = np.clip(values[~np.isnan(values)], 0.0, 1.0)
    counts: NDArray[np.int64] = np.bincount(
        np.minimum((values * BINS).astype(np.int64), BINS - 1), minlength=BINS
    )
    return counts


@dataclass(frozen=True)
class Calibration:
    """The reference's calibration of the model's probabilities, at the centre of each histogram bin."""

    calibrated: NDArray[np.float64]

    @classmethod
    def fit(cls, scores: NDArray[np.float64], labels: NDArray[np.float64]) -> Calibration:
        """Isotonic regression of the labels on the scores (pool adjacent violators), read at the bins'
        centres (between two reference scores, linearly; past the ends, the ends' values)."""
        order = np.argsort(scores, kind="stable")
        x = np.asarray(scores, dtype=np.float64)[order]
        y = np.asarray(labels, dtype=np.float64)[order]
        means, weights, lefts = [], [], []
        for index, value in enumerate(y):  # pool adjacent violators
            means.append(float(value))
            weights.append(1.0)
            lefts.append(index)
            while len(means) > 1 and means[-2] > means[-1]:
                weight = weights[-2] + weights[-1]
                means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / weight
                weights[-2] = weight
                means.pop()
                weights.pop()
                lefts.pop()
        fitted = np.repeat(means, np.asarray(weights, dtype=np.int64))
        centres = (np.arange(BINS) + 0.5) / BINS
        return cls(calibrated=np.interp(centres, x, fitted))

    def estimate(self, counts: NDArray[np.int64], *, threshold: float = 0.5) -> dict[str, float]:
        """The expected metrics of a window of predictions (their histogram); NaN when it has none."""
        counts = np.asarray(counts, dtype=np.float64)
        total = counts.sum()
        if total == 0:
            return dict.fromkeys(ESTIMATED, math.nan)
        q = self.calibrated
        positive_weight = counts * q  # expected positives per bin
        negative_weight = counts * (1 - q)
        predicts_positive = (np.arange(BINS) + 0.5) / BINS >= threshold
        tp = positive_weight[predicts_positive].sum()
        fp = negative_weight[predicts_positive].sum()
        fn = positive_weight[~predicts_positive].sum()
        tn = negative_weight[~predicts_positive].sum()
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        positives, negatives = positive_weight.sum(), negative_weight.sum()
        below = np.concatenate(([0.0], np.cumsum(negative_weight)[:-1]))
        wins = float(np.sum(positive_weight * below) + 0.5 * np.sum(positive_weight * negative_weight))
        return {
            "accuracy": float((tp + tn) / total),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0,
            "roc_auc": wins / float(positives * negatives) if positives and negatives else math.nan,
        }
