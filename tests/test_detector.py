"""Reference profiles, serving windows and the detector, on seeded streams with known drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitors.drift.detector import DriftDetector
from monitors.drift.profile import ProfileError, ReferenceProfile
from monitors.drift.window import ServingWindow

FEATURES = [f"f{index}" for index in range(20)]


def training(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(0, 1, rows) for name in FEATURES})
    frame["country"] = rng.choice(["DE", "FR", "NL"], rows, p=[0.5, 0.3, 0.2])
    return frame


def window_of(
    profile: ReferenceProfile, rows: int, *, seed: int, shift: dict[str, float] | None = None
) -> ServingWindow:
    rng = np.random.default_rng(seed)
    window = ServingWindow(profile=profile, start_us=0, end_us=10_000_000)
    columns: dict[str, object] = {
        name: rng.normal((shift or {}).get(name, 0.0), 1, rows) for name in FEATURES
    }
    columns["country"] = list(rng.choice(["DE", "FR", "NL"], rows, p=[0.5, 0.3, 0.2]))
    # Events arrive in small batches, as from a stream.
    for start in range(0, rows, 100):
        window.update({name: column[start : start + 100] for name, column in columns.items()})  # type: ignore[index]
    return window


def test_a_mean_shift_in_one_feature_flags_that_feature_and_only_it() -> None:
    profile = ReferenceProfile.build(training(), model="fraud", version="1")
    detector = DriftDetector(profile=profile, metrics=dict.fromkeys(FEATURES, "ks"))
    # 800 events, feature f7 moved by half a standard deviation.
    report = detector.evaluate(window_of(profile, 800, seed=1, shift={"f7": 0.5}))
    assert report.drifted_features == ["f7"]
    assert report.events == 800
    assert not report.dataset_drift  # 1 of 21 features


def test_no_drift_raises_false_alarms_at_most_at_the_configured_level() -> None:
    profile = ReferenceProfile.build(training(), model="fraud", version="1")
    detector = DriftDetector(profile=profile, metrics=dict.fromkeys(FEATURES, "ks"), alpha=0.05)
    alarms = sum(
        bool(detector.evaluate(window_of(profile, 300, seed=seed)).drifted_features) for seed in range(200)
    )
    # With no drift, Benjamini-Hochberg keeps the chance of an alarm in a window at most alpha: 10 of 200
    # expected. Allow for chance only as far as a binomial(200, alpha) count exceeds once in a thousand runs.
    from scipy.stats import binom

    assert alarms <= binom.ppf(0.999, 200, 0.05)


def test_windows_are_compared_with_the_previous_window_too() -> None:
    profile = ReferenceProfile.build(training(), model="fraud", version="1")
    detector = DriftDetector(profile=profile, metrics=dict.fromkeys(FEATURES, "ks"))
    before = window_of(profile, 800, seed=2)
    after = window_of(profile, 800, seed=3, shift={"f3": 1.0})
    report = detector.evaluate(after, previous=before)
    against_previous = [
        score.feature for score in report.scores if score.against == "previous" and score.drift
    ]
    assert against_previous == ["f3"]


def test_the_whole_window_drifts_when_half_the_features_do() -> None:
    profile = ReferenceProfile.build(training(), model="fraud", version="1")
    report = DriftDetector(profile=profile).evaluate(
        window_of(profile, 2000, seed=4, shift=dict.fromkeys(FEATURES[:12], 1.0))
    )
    assert report.dataset_drift and report.drift_share >= 0.5
    # Above 1,000 events the default metrics are Wasserstein (numeric) and Jensen-Shannon (categorical).
    assert {score.metric for score in report.scores} == {"wasserstein", "jensen_shannon"}


def test_a_profile_round_trips_through_disk_per_model_version(tmp_path: Path) -> None:
    profile = ReferenceProfile.build(training(2000), model="fraud", version="3")
    profile.save(tmp_path)
    loaded = ReferenceProfile.load(tmp_path, model="fraud", version="3")
    assert loaded.rows == 2000
    for name, feature in profile.features.items():
        again = loaded.features[name]
        assert (again.kind, again.count, again.vocabulary) == (
            feature.kind,
            feature.count,
            feature.vocabulary,
        )
        assert np.array_equal(again.counts, feature.counts)
        assert np.array_equal(again.sample, feature.sample)
    with pytest.raises(
        ProfileError, match=r"no reference profile for model 'fraud' version '4'.*versions there: 3"
    ):
        ReferenceProfile.load(tmp_path, model="fraud", version="4")


def test_bad_configuration_says_what_to_fix() -> None:
    profile = ReferenceProfile.build(training(500), model="fraud", version="1")
    with pytest.raises(ValueError, match=r"metric 'chi_square' is for categorical features; 'f1' is numeric"):
        DriftDetector(profile=profile, metrics={"f1": "chi_square"})
    with pytest.raises(ValueError, match=r"no feature 'amount' in the reference profile of fraud 1"):
        DriftDetector(profile=profile, metrics={"amount": "ks"})
    with pytest.raises(ProfileError, match=r"the training set has no column 'amount'"):
        ReferenceProfile.build(training(10), model="fraud", version="1", features=["amount"])


def test_an_empty_window_is_no_evidence_and_no_drift() -> None:
    profile = ReferenceProfile.build(training(500), model="fraud", version="1")
    report = DriftDetector(profile=profile).evaluate(ServingWindow(profile=profile, start_us=0, end_us=1))
    assert report.drifted_features == [] and not report.dataset_drift
    assert all(score.score != score.score for score in report.scores)  # NaN: nothing to compare


def test_a_training_set_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    (tmp_path / "training.csv").write_text("amount\n1.0\n")
    with pytest.raises(ProfileError, match=r"cannot read the training set .*training.csv as Parquet"):
        ReferenceProfile.build(tmp_path / "training.csv", model="fraud", version="1")
