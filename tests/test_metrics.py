"""Drift metrics: parity with scipy on awkward data, and one conformance suite over every metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monitors.drift.metrics import (
    METRICS,
    Metric,
    UnknownMetricError,
    bin_counts,
    chi_square,
    default_metric,
    hellinger,
    jensen_shannon,
    ks_2samp,
    l_infinity,
    metric,
    psi,
    quantile_edges,
    wasserstein_distance,
)

# scipy itself warns when its exact p-value fails and it falls back to asymp, as ours does silently.
pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
# Small integer ranges force ties; tiny sizes are windows with a handful of events.
tied = st.integers(-3, 3).map(float)
samples = st.one_of(
    arrays(np.float64, st.integers(1, 60), elements=finite),
    arrays(np.float64, st.integers(1, 60), elements=tied),
)


@settings(max_examples=300)
@given(reference=samples, current=samples)
def test_ks_2samp_equals_scipy(reference: np.ndarray, current: np.ndarray) -> None:
    ours = ks_2samp(reference, current)
    theirs = scipy.stats.ks_2samp(reference, current)
    assert ours[0] == theirs.statistic
    assert ours[1] == pytest.approx(theirs.pvalue, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("method", ["asymp", "exact"])
def test_ks_2samp_equals_scipy_for_each_method_on_heavy_tails(method: str) -> None:
    rng = np.random.default_rng(5)
    for size in (3, 50, 700):
        reference, current = rng.standard_cauchy(size * 2), rng.standard_cauchy(size) + 0.5
        ours = ks_2samp(reference, current, method=method)  # type: ignore[arg-type]
        theirs = scipy.stats.ks_2samp(reference, current, method=method)
        assert ours[0] == theirs.statistic
        assert ours[1] == pytest.approx(theirs.pvalue, rel=1e-12)


def test_ks_2samp_on_large_samples_uses_scipys_asymptotic_p_value() -> None:
    rng = np.random.default_rng(6)
    reference, current = rng.normal(size=20_000), rng.normal(0.02, 1, size=15_000)
    theirs = scipy.stats.ks_2samp(reference, current)
    assert ks_2samp(reference, current) == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-12)


@settings(max_examples=300)
@given(reference=samples, current=samples)
def test_wasserstein_distance_equals_scipy(reference: np.ndarray, current: np.ndarray) -> None:
    theirs = scipy.stats.wasserstein_distance(reference, current)
    assert wasserstein_distance(reference, current) == pytest.approx(theirs, rel=1e-9, abs=1e-9)


counts = arrays(np.int64, 6, elements=st.integers(0, 1000)).filter(lambda a: a.sum() > 0)


@settings(max_examples=200)
@given(reference=counts, current=counts)
def test_binned_metrics_equal_their_definitions(reference: np.ndarray, current: np.ndarray) -> None:
    p, q = reference / reference.sum(), current / current.sum()
    assert jensen_shannon(reference, current) == pytest.approx(
        scipy.spatial.distance.jensenshannon(p, q), rel=1e-9, abs=1e-9
    )
    assert hellinger(reference, current) == pytest.approx(
        math.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2) / 2), rel=1e-9, abs=1e-7
    )
    assert l_infinity(reference, current) == pytest.approx(np.max(np.abs(p - q)))
    floor_p, floor_q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert psi(reference, current) == pytest.approx(np.sum((floor_q - floor_p) * np.log(floor_q / floor_p)))
    seen = p > 0
    if not np.any(current[~seen]):
        expected = scipy.stats.chisquare(current[seen], p[seen] * current.sum())
        assert chi_square(reference, current) == pytest.approx(
            (expected.statistic, expected.pvalue), rel=1e-9, abs=1e-12, nan_ok=True
        )
    else:
        assert chi_square(reference, current) == (math.inf, 0.0)


def test_nan_values_are_dropped_and_an_empty_side_is_no_evidence() -> None:
    reference = np.array([1.0, 2.0, np.nan, 3.0])
    assert ks_2samp(reference, [1.0, 2.0, 3.0]) == (0.0, 1.0)
    assert wasserstein_distance(reference, [np.nan, 2.0]) == pytest.approx(
        scipy.stats.wasserstein_distance([1, 2, 3], [2])
    )
    for name, item in METRICS.items():
        empty = [] if item.input == "samples" else [0, 0, 0]
        filled = [1.0, 2.0, 3.0] if item.input == "samples" else [1, 2, 3]
        score = item.compute(filled, empty)
        assert math.isnan(score), name
        assert not item.is_drift(score), name
    assert bin_counts([np.nan, 0.5, 1.5, 99.0], [1.0, 2.0]).tolist() == [1, 1, 1]


def test_an_unknown_metric_lists_the_valid_ones() -> None:
    with pytest.raises(
        UnknownMetricError, match=r"unknown drift metric 'kl'; valid metrics: chi_square, hellinger, "
    ):
        metric("kl")


def test_defaults_follow_evidentlys_rules() -> None:
    assert default_metric("numeric", 500).name == "ks"
    assert default_metric("numeric", 5000).name == "wasserstein"
    assert default_metric("categorical", 500).name == "chi_square"
    assert default_metric("categorical", 5000).name == "jensen_shannon"


# --- one conformance suite over every registered metric ------------------------------------------------


def inputs(item: Metric, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current values (or counts over the reference bins), the current shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    if "numeric" in item.feature_types:
        reference, current = rng.normal(0, 1, 3000), rng.normal(shift, 1, 2000)
        if item.input == "samples":
            return reference, current
        edges = quantile_edges(reference, 10)
        return bin_counts(reference, edges), bin_counts(current, edges)
    # Categorical: five categories; the shift moves probability mass onto the last one.
    base = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    moved = base * (1 - min(shift, 0.99) / 1.5)
    moved[-1] += 1 - moved.sum()
    return rng.multinomial(3000, base), rng.multinomial(2000, moved)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_identical_inputs_are_not_drift(name: str) -> None:
    item = METRICS[name]
    reference, _ = inputs(item, 0.0)
    assert not item.is_drift(item.compute(reference, reference))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_the_same_distribution_is_not_drift(name: str) -> None:
    item = METRICS[name]
    reference, current = inputs(item, 0.0, seed=3)
    assert not item.is_drift(item.compute(reference, current))


@pytest.mark.parametrize("name", sorted(name for name, item in METRICS.items() if item.symmetric))
def test_symmetric_metrics_are_symmetric(name: str) -> None:
    item = METRICS[name]
    reference, current = inputs(item, 0.4)
    assert item.compute(reference, current) == pytest.approx(item.compute(current, reference), rel=1e-9)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_a_growing_shift_gives_more_drift_and_then_drift(name: str) -> None:
    item = METRICS[name]
    scores = [item.compute(*inputs(item, shift)) for shift in (0.0, 0.2, 0.5, 1.0)]
    # More drift means a larger distance, or a smaller p-value.
    ordered = scores if item.drift_when == "above" else [-score for score in scores]
    assert ordered == sorted(ordered), scores
    assert item.is_drift(scores[-1])


def test_the_kolmogorov_p_value_is_close_to_scipys_asymptotic_one_on_large_samples() -> None:
    from monitors.drift.metrics import ks_result

    rng = np.random.default_rng(9)
    for shift in (0.0, 0.01, 0.02, 0.05):
        reference, current = rng.normal(size=20_000), rng.normal(shift, 1, size=15_000)
        statistic = ks_2samp(reference, current, method="asymp")[0]
        fast = ks_result(statistic, 20_000, 15_000, method="kolmogorov")[1]
        assert fast == pytest.approx(
            scipy.stats.ks_2samp(reference, current, method="asymp").pvalue, abs=0.005
        )
