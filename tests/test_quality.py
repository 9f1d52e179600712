"""Data quality per window and feature, checked against a recount from the raw events and against an
independent binomial computation (scipy), over random windows; on unshifted real data (scikit-learn's
breast cancer set) the quality flags stay within their stated false-alarm rate, and injected problems
are caught."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, fisher_exact
from sklearn.datasets import load_breast_cancer

from monitors.drift.profile import ReferenceProfile
from monitors.drift.quality import _outside, quality_scores
from monitors.drift.window import ServingWindow, event_keys

RNG = np.random.default_rng(7)
TRAINING = pd.DataFrame(
    {
        "amount": RNG.lognormal(3, 1, 4000),
        "age": np.where(RNG.random(4000) < 0.02, np.nan, RNG.normal(40, 10, 4000)),
        "country": RNG.choice(["DE", "FR", "NL", "IT"], 4000, p=[0.4, 0.3, 0.2, 0.1]),
    }
)
PROFILE = ReferenceProfile.build(TRAINING, model="m", version="1", vocabulary_size=3)


def served(seed: int) -> list[dict[str, object]]:
    """A window's events with every kind of problem, in random amounts."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for _ in range(int(rng.integers(50, 3000))):
        row: dict[str, object] = {
            "amount": float(rng.lognormal(3, 1.2)),
            "age": float(rng.normal(40, 12)),
            "country": str(rng.choice(["DE", "FR", "NL", "IT", "ES"])),
        }
        roll = rng.random()
        if roll < 0.03:
            row["amount"] = None
        elif roll < 0.05:
            del row["age"]
        elif roll < 0.06:
            row["amount"] = "12,50"  # a string where a number goes
        elif roll < 0.07:
            row["country"] = {"code": "DE"}
        rows.append(row)
    return rows


def recount(rows: list[dict[str, object]], name: str) -> dict[str, tuple[int, int]]:
    """(count, out of) per quality metric, from the raw events."""
    feature = PROFILE.features[name]
    values = [row.get(name) for row in rows]
    nulls = sum(value is None for value in values)
    if feature.kind == "numeric":
        errors = sum(isinstance(value, str) for value in values)
        present = [value for value in values if isinstance(value, float)]
        outside = sum(value < feature.minimum or value > feature.maximum for value in present)
        return {
            "null_rate": (nulls, len(rows)),
            "type_error_rate": (errors, len(rows)),
            "out_of_range_share": (outside, len(present)),
        }
    errors = sum(isinstance(value, dict) for value in values)
    present = [value for value in values if isinstance(value, str)]
    unseen = sum(value not in feature.vocabulary for value in present)
    return {
        "null_rate": (nulls, len(rows)),
        "type_error_rate": (errors, len(rows)),
        "new_category_share": (unseen, len(present)),
    }


@pytest.mark.parametrize("seed", range(10))
def test_quality_rates_equal_a_recount_and_flags_equal_scipys_binomial_test(seed: int) -> None:
    rows = served(seed)
    window = ServingWindow(profile=PROFILE, start_us=0, end_us=1)
    for start in range(0, len(rows), 333):  # as a stream: in batches
        chunk = rows[start : start + 333]
        window.update_rows(chunk, keys=event_keys([f"{seed}-{start + i}" for i in range(len(chunk))]))
    scores = quality_scores(PROFILE, window, alpha=0.01)
    level = 0.01 / len(scores)
    for score in scores:
        count, total = recount(rows, score.feature)[score.metric]
        assert score.score == pytest.approx(count / total)
        feature = PROFILE.features[score.feature]
        # Flagged exactly when seeing this many or more is that unlikely for one population.
        if score.metric == "type_error_rate":
            tail = 1.0 if count == 0 else 0.0
        elif score.metric == "out_of_range_share":
            tail = _outside(total, feature.count, count)
        else:  # Fisher's exact test, scipy's own, one-sided
            marked, reference_total = (
                (feature.null_count, feature.count + feature.null_count)
                if score.metric == "null_rate"
                else (int(feature.counts[-1]), feature.count)
            )
            table = [[count, total - count], [marked, reference_total - marked]]
            tail = fisher_exact(table, alternative="greater").pvalue
        assert score.drift == (tail <= level), (score, tail, level)


def test_the_out_of_range_tail_equals_an_enumeration_of_every_ordering() -> None:
    """The exact tail against brute force: every way to place n reference values among n + m."""
    for n, m in [(2, 3), (3, 5), (5, 4), (6, 6)]:
        counts: dict[int, int] = {}
        for reference in itertools.combinations(range(n + m), n):
            outside = min(reference) + (n + m - 1 - max(reference))
            counts[outside] = counts.get(outside, 0) + 1
        orderings = math.comb(n + m, n)
        for k in range(m + 2):
            exact = sum(number for outside, number in counts.items() if outside >= k) / orderings
            assert _outside(m, n, k) == pytest.approx(exact, abs=1e-12), (n, m, k)


def test_on_unshifted_real_data_quality_flags_stay_within_their_false_alarm_rate() -> None:
    """scikit-learn's breast cancer set, unshifted: each window is a fresh random split, a reference
    of 285 rows and a window of 200 of the others; a window should raise a quality flag at most alpha
    of the time."""
    data = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rng = np.random.default_rng(0)
    alpha, windows = 0.05, 300
    flagged = 0
    for index in range(windows):
        order = rng.permutation(len(data))
        profile = ReferenceProfile.build(data.iloc[order[:285]], model="cancer", version="1")
        rows = data.iloc[order[285:485]].to_dict("records")
        window = ServingWindow(profile=profile, start_us=0, end_us=1)
        window.update_rows(rows, keys=event_keys([f"{index}-{i}" for i in range(len(rows))]))
        flagged += any(score.drift for score in quality_scores(profile, window, alpha=alpha))
    # Chance alone takes a binomial(300, alpha) count past this once in a thousand runs.
    assert flagged <= binom.isf(0.001, windows, alpha), flagged


def test_injected_problems_are_caught() -> None:
    rng = np.random.default_rng(3)
    rows = [
        {"amount": float(v), "age": float(a), "country": "DE"}
        for v, a in zip(rng.lognormal(3, 1, 1000), rng.normal(40, 10, 1000), strict=True)
    ]
    for row in rows[:50]:
        row["age"] = None  # 5% nulls where the reference had 2%
    for row in rows[50:60]:
        row["amount"] = float(TRAINING["amount"].max() * 10)  # 1% far above the training range
    for row in rows[60:70]:
        row["country"] = "BR"  # 1% unseen
    rows[70]["amount"] = "n/a"  # one value of the wrong type
    profile = ReferenceProfile.build(TRAINING, model="m", version="1")  # every country in the vocabulary
    window = ServingWindow(profile=profile, start_us=0, end_us=1)
    window.update_rows(rows, keys=event_keys([str(i) for i in range(len(rows))]))
    flagged = {(score.feature, score.metric) for score in quality_scores(profile, window) if score.drift}
    assert flagged == {
        ("age", "null_rate"),
        ("amount", "out_of_range_share"),
        ("country", "new_category_share"),
        ("amount", "type_error_rate"),
    }


def test_a_window_without_values_is_no_evidence() -> None:
    window = ServingWindow(profile=PROFILE, start_us=0, end_us=1)
    scores = quality_scores(PROFILE, window)
    assert all(math.isnan(score.score) and not score.drift for score in scores)
