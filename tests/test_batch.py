"""``compare_numeric``: the whole-table path gives scipy's statistics for every feature at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from monitors.drift.profile import ReferenceProfile
from monitors.drift.table import compare_numeric

pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")


@st.composite
def tables(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current table with 1 to 5 features (odd counts leave a row out of the pairs),
    drawn from small integers (ties) or from wide floats."""
    features = draw(st.integers(1, 5))
    sizes = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tied = draw(st.booleans())

    def column(size: int, shift: float) -> np.ndarray:
        if tied:
            return rng.integers(-3, 4, size).astype(float)
        return rng.standard_cauchy(size) * 1e3 + shift

    reference = pd.DataFrame({f"f{i}": column(sizes[0], 0.0) for i in range(features)})
    current = pd.DataFrame({f"f{i}": column(sizes[1], float(i)) for i in range(features)})
    return reference, current


@settings(max_examples=150, deadline=None)
@given(pair=tables())
def test_every_feature_matches_scipy(pair: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = pair
    profile = ReferenceProfile.build(reference, model="m", version="1", sample_size=len(reference))
    columns = {name: current[name].to_numpy() for name in current.columns}
    # scipy's default method, so that small samples get its exact p-value and lattice-rounded statistic.
    ours = compare_numeric(profile, columns, ks_method="auto")
    assert sorted(ours) == sorted(reference.columns)
    for name, scores in ours.items():
        ks = scipy.stats.ks_2samp(reference[name], current[name])
        assert scores["ks_statistic"] == ks.statistic, name
        assert scores["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300), name
        wasserstein = scipy.stats.wasserstein_distance(reference[name], current[name])
        assert scores["wasserstein"] == pytest.approx(wasserstein, rel=1e-9, abs=1e-12), name


def test_missing_values_are_dropped_per_feature() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    a, b = rng.normal(0.5, 1, 400), rng.normal(size=400)
    b[::4] = np.nan
    profile = ReferenceProfile.build(reference, model="m", version="1", sample_size=500)
    ours = compare_numeric(profile, {"a": a, "b": b}, ks_method="auto")
    assert ours["a"]["ks_statistic"] == scipy.stats.ks_2samp(reference["a"], a).statistic
    assert ours["b"]["ks_statistic"] == scipy.stats.ks_2samp(reference["b"], b[~np.isnan(b)]).statistic
