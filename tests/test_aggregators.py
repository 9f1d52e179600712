"""One conformance suite over every aggregator: each reads the shared window statistics correctly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.aggregations import AGGREGATIONS
from streams.aggregators import AGGREGATORS
from streams.moments import Moments, merge_moments, moments_of

VALUES = st.lists(
    st.one_of(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.just(math.nan)), max_size=40
)

REFERENCE = {
    "count": lambda values: float(len(values)),
    "sum": lambda values: float(np.sum(values)) if len(values) else math.nan,
    "mean": lambda values: float(np.mean(values)) if len(values) else math.nan,
    "min": lambda values: float(np.min(values)) if len(values) else math.nan,
    "max": lambda values: float(np.max(values)) if len(values) else math.nan,
    "last": lambda values: float(values[-1]) if len(values) else math.nan,
    "stddev": lambda values: float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
}


def _result(name: str, moments: Moments) -> float:
    return float(AGGREGATORS[name].result(moments)[0])


def _close(got: float, expected: float) -> bool:
    return bool(np.isclose(got, expected, rtol=1e-9, atol=1e-6, equal_nan=True))


def test_every_registered_function_has_an_aggregator_and_a_reference() -> None:
    assert set(AGGREGATORS) == set(AGGREGATIONS) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@given(values=VALUES)
def test_result_matches_numpy_ignoring_nulls(name: str, values: list[float]) -> None:
    present = np.array([value for value in values if not math.isnan(value)])
    assert _close(_result(name, moments_of(np.array(values))), REFERENCE[name](present))


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@given(left=VALUES, right=VALUES)
def test_merging_two_panes_equals_one_pane_of_both(name: str, left: list[float], right: list[float]) -> None:
    # The right pane's events come later (times 100+), so "last" is well defined across the merge.
    left_moments = moments_of(np.array(left), times=np.arange(len(left)))
    right_moments = moments_of(np.array(right), times=100 + np.arange(len(right)))
    both = moments_of(
        np.array(left + right), times=np.concatenate([np.arange(len(left)), 100 + np.arange(len(right))])
    )
    assert _close(_result(name, merge_moments(left_moments, right_moments)), _result(name, both))
    assert _close(_result(name, merge_moments(right_moments, left_moments)), _result(name, both))


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_an_empty_window_is_null_except_count(name: str) -> None:
    empty = Moments.empty((1,))
    expected = 0.0 if name == "count" else math.nan
    assert _close(_result(name, empty), expected)
    assert AGGREGATORS[name].empty_is_null == (name != "count")


@pytest.mark.parametrize("name", sorted(set(AGGREGATORS) - {"last"}))
@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=30),
    seed=st.integers(0, 99),
)
def test_order_does_not_matter_except_for_last(name: str, values: list[float], seed: int) -> None:
    shuffled = np.random.default_rng(seed).permutation(values)
    assert _close(_result(name, moments_of(np.array(values))), _result(name, moments_of(shuffled)))


def test_last_takes_the_latest_event_time_and_the_later_offset_on_ties() -> None:
    # Events arrive out of order: the latest event time wins, not the latest arrival.
    moments = moments_of(np.array([5.0, 9.0, 7.0]), times=np.array([10, 30, 20]), offsets=np.array([0, 1, 2]))
    assert _result("last", moments) == 9.0
    tied = moments_of(np.array([1.0, 2.0]), times=np.array([10, 10]), offsets=np.array([4, 3]))
    assert _result("last", tied) == 1.0
