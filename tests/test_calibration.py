"""Calibrated alarms: on unshifted real data the drift detector's false alarms stay within their stated
rate, for windows of 1,000 rows and more, where fixed thresholds flag a few features in every window;
on a shifted copy the shift is still caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.datasets import load_digits

from monitors.drift.calibration import Calibration
from monitors.drift.detector import DriftDetector
from monitors.drift.metrics import metric
from monitors.drift.profile import ReferenceProfile
from monitors.drift.window import ServingWindow, event_keys

DIGITS = load_digits(as_frame=True).frame.drop(columns="target").astype(float)
# Pixels that are not blank in every image: a constant one has nothing to drift.
PIXELS = [name for name in DIGITS.columns if DIGITS[name].std() > 0]


def window_of(rows: pd.DataFrame, profile: ReferenceProfile, seed: int) -> ServingWindow:
    window = ServingWindow(profile=profile, start_us=0, end_us=1)
    window.update_rows(rows.to_dict("records"), keys=event_keys([f"{seed}-{i}" for i in range(len(rows))]))
    return window


def alarms(*, calibrated: bool, size: int, shift: float = 0.0) -> tuple[int, int, int]:
    """Over 4 references of 1,000 rows and 25 windows each, all drawn with replacement from the digits
    (one distribution: the data's own): windows with an alarm, (feature, window) alarms, and windows
    that flag the shifted pixel."""
    rng = np.random.default_rng(size)
    windows = flagged_windows = flagged_features = caught = 0
    for reference_seed in range(4):
        reference = DIGITS.iloc[rng.integers(0, len(DIGITS), 1000)][PIXELS]
        profile = ReferenceProfile.build(reference, model="digits", version=str(reference_seed))
        detector = DriftDetector(profile=profile, calibrated=calibrated)
        for seed in range(25):
            rows = DIGITS.iloc[rng.integers(0, len(DIGITS), size)][PIXELS].copy()
            if shift:
                rows["pixel_0_4"] += shift
            report = detector.evaluate(window_of(rows, profile, seed))
            drifted = report.drifted_features
            windows += 1
            flagged_windows += bool(drifted)
            flagged_features += len(drifted)
            caught += "pixel_0_4" in drifted
    return flagged_windows, flagged_features, caught


@pytest.mark.parametrize("size", [1500, 3000])
def test_unshifted_digits_raise_false_alarms_at_most_at_the_stated_rate(size: int) -> None:
    windows, features = 100, len(PIXELS)
    flagged_windows, flagged_features, _ = alarms(calibrated=True, size=size)
    # alpha 0.05 per window (Benjamini-Hochberg over the features): a binomial(100, 0.05) count of windows
    # exceeds this once in a thousand runs; per feature and window the rate is at most alpha over the
    # features.
    assert flagged_windows <= binom.isf(0.001, windows, 0.05), flagged_windows
    assert flagged_features <= binom.isf(0.001, windows * features, 0.05 / features) + 2 * flagged_windows
    # With the registry's fixed thresholds (normed Wasserstein at 0.1), the same windows alarm far more.
    fixed_windows, fixed_features, _ = alarms(calibrated=False, size=size)
    assert fixed_windows > 3 * max(flagged_windows, 1) and fixed_features > 5 * max(flagged_features, 1)


def test_a_shift_of_one_pixel_is_still_caught() -> None:
    # pixel_0_4 takes values 0 to 16 with a standard deviation near 4.7: a shift of 1.5 in every image.
    _, _, caught = alarms(calibrated=True, size=1500, shift=1.5)
    assert caught >= 95


def test_the_binned_distances_over_rows_equal_the_registry_s() -> None:
    rng = np.random.default_rng(1)
    from monitors.drift.calibration import _BINNED

    for name, rows in _BINNED.items():
        reference = rng.multinomial(500, rng.dirichlet(np.ones(8)), size=50).astype(float)
        current = rng.multinomial(200, rng.dirichlet(np.ones(8)), size=50).astype(float)
        reference[:, 0] = 0.0  # an empty bin on a side
        fast = rows(
            reference / reference.sum(axis=1, keepdims=True), current / current.sum(axis=1, keepdims=True)
        )
        one = [metric(name).compute(r, c) for r, c in zip(reference, current, strict=True)]
        np.testing.assert_allclose(fast, one, rtol=1e-12, atol=1e-15, err_msg=name)


def test_the_wasserstein_null_matches_resampled_two_sample_distances() -> None:
    """The Brownian-bridge shortcut against brute force: the 99th percentile of the normed distance
    between two fresh samples of the reference's distribution."""
    rng = np.random.default_rng(2)
    values = rng.gamma(2.0, 1.0, 20_000)
    profile = ReferenceProfile.build(pd.DataFrame({"x": values}), model="m", version="1")
    calibration = Calibration(profile, draws=20_000)
    wasserstein = metric("wasserstein")
    n, m = len(profile.features["x"].sample), 2000
    brute = []
    for _ in range(2000):
        first = rng.choice(profile.features["x"].sample, n)
        second = rng.choice(profile.features["x"].sample, m)
        brute.append(wasserstein.compute(first, second))
    expected = float(np.quantile(brute, 0.99))
    got = calibration.critical("x", wasserstein, window_values=m, level=0.01)
    assert got == pytest.approx(expected, rel=0.1)
