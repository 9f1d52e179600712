"""The performance estimate before labels (CBPE) tracks the realized metric under covariate shift: the
features move, the relation between features and label does not; windows of 2,000 predictions."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from monitors.database import open_store
from monitors.drift.profile import ReferenceProfile
from monitors.events.batch import PredictionBatch
from monitors.runtime.parts import WindowParts
from monitors.runtime.performance import (
    LabelledBatch,
    PerformanceSettings,
    PerformanceTask,
    PerformanceTracker,
)

SECOND = 1_000_000
T0 = 1_790_000_000 * SECOND
WINDOW = 60 * SECOND
TOLERANCE = {"accuracy": 0.03, "roc_auc": 0.03, "f1": 0.05}
"""How far the estimate may be from the realized metric, for windows of 2,000 predictions."""


def truth(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(2.0 * x - 0.5)))


def model(x: np.ndarray) -> np.ndarray:
    """A model that ranks well but is overconfident: the reference's calibration has to fix it."""
    return 1 / (1 + np.exp(-(3.0 * x - 0.75)))


def test_the_estimate_stays_close_to_the_realized_metrics_under_covariate_shift() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 20_000)
    reference = pd.DataFrame(
        {"x": x, "score": model(x), "label": (rng.random(len(x)) < truth(x)).astype(int)}
    )
    profile = ReferenceProfile.build(
        reference, model="m", version="1", prediction_column="score", label_column="label"
    )
    engine = open_store("sqlite://")
    tracker = PerformanceTracker(
        settings=PerformanceSettings(
            tasks={"m": PerformanceTask(task="binary", output="score")},
            window=timedelta(microseconds=WINDOW),
            label_delay=timedelta(seconds=30),
        ),
        lateness=timedelta(0),
        provisional=WindowParts(engine=engine, topic="t/provisional"),
        final=WindowParts(engine=engine, topic="t/final"),
        partitions=1,
        load_profile=lambda model, version: profile,
    )
    shifts = [0.0, 0.5, 1.0, 1.5, -0.5, -1.0]
    reports = []
    offset = 0
    for index, shift in enumerate([*shifts, 0.0]):  # the last window only moves time past the others
        predictions, labels = PredictionBatch(partition=0), LabelledBatch(partition=0)
        features = rng.normal(shift, 1, 2000)
        outcome = (rng.random(2000) < truth(features)).astype(int)
        for row, (value, label) in enumerate(zip(features, outcome, strict=True)):
            at = T0 + index * WINDOW + row * (WINDOW // 2000)
            request = f"w{index}-{row}"
            predictions.append(
                {"model": "m", "version": "1", "request_id": request, "features": {"x": float(value)},
                 "outputs": {"score": float(model(np.array([value]))[0])}},
                event_us=at, offset=offset, record=None,
            )  # fmt: skip
            labels.append(model="m", request_id=request, label=int(label), event_us=at + SECOND)
            offset += 1
        reports += tracker.add({0: predictions}, {0: labels})
    finals = [report for report in reports if report.stage == "final"]
    assert len(finals) >= len(shifts)
    for report in finals[: len(shifts)]:
        scores = {score.metric: score.score for score in report.scores}
        for name, tolerance in TOLERANCE.items():
            assert scores[f"estimated_{name}"] == pytest.approx(scores[name], abs=tolerance), (
                report.window_start_us, name, scores[f"estimated_{name}"], scores[name],
            )  # fmt: skip
    # The provisional reports, at each window's close, already carry the estimate.
    provisional = [report for report in reports if report.stage == "provisional"]
    assert all(
        not np.isnan({score.metric: score.score for score in report.scores}["estimated_accuracy"])
        for report in provisional
    )
    # The realized accuracy does move with the shift: the estimate is not just the reference's.
    realized = [{score.metric: score.score for score in report.scores}["accuracy"] for report in finals]
    assert max(realized) - min(realized) > 0.05
