"""Window state equals a pandas reference on random, shuffled, out-of-order streams."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.spec import AggregationSpec, FeatureViewSpec
from streams.windows import WindowState
from tests.reference import expected_rows

SECOND = 1_000_000


def _spec() -> FeatureViewSpec:
    # Tumbling 10 s, sliding 30 s every 10 s, tumbling 60 s: three pane layouts over one column.
    windows = [(10, 10), (30, 10), (60, 60)]
    aggregations = tuple(
        AggregationSpec(
            feature=f"{function}_{window}s",
            column="amount",
            function=function,
            window=timedelta(seconds=window),
            slide=timedelta(seconds=slide),
            dtype="INT64" if function == "count" else "FLOAT64",
        )
        for window, slide in windows
        for function in ("count", "sum", "mean", "min", "max", "last", "stddev")
    )
    return FeatureViewSpec(
        name="card_stats",
        project="test",
        topic="transactions",
        join_keys={"card_id": "INT64"},
        timestamp_field="ts",
        message_schema={"card_id": "INT64", "amount": "FLOAT64", "ts": "UNIX_TIMESTAMP"},
        features={aggregation.feature: aggregation.dtype for aggregation in aggregations},
        aggregations=aggregations,
    )


EVENTS = st.lists(
    st.tuples(
        st.integers(0, 6),  # card
        st.integers(0, 180 * SECOND),  # event time within three minutes
        st.one_of(st.floats(-1000, 1000, allow_nan=False), st.none()),  # amount, sometimes null
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=150)
@given(events=EVENTS, batch_size=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_rows_equal_the_pandas_reference_in_any_arrival_order(
    events: list[tuple[int, int, float | None]], batch_size: int, seed: int
) -> None:
    spec = _spec()
    frame = pd.DataFrame(events, columns=["card_id", "ts", "amount"]).astype({"amount": float})
    # Shuffle the arrival order; the offset is the arrival position, as Kafka would assign it.
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame["offset"] = np.arange(len(frame))

    state = WindowState(spec=spec, capacity=2)  # tiny, so the state must grow on the way
    for start in range(0, len(frame), batch_size):
        batch = frame.iloc[start : start + batch_size]
        ids = state.ids_for(batch["card_id"].tolist())
        state.update(
            ids, batch["ts"].to_numpy(), batch["offset"].to_numpy(), {"amount": batch["amount"].to_numpy()}
        )

    cards = sorted(frame["card_id"].unique())
    as_of, results = state.rows(state.ids_for(cards))
    expected = expected_rows(frame, spec, key="card_id", time="ts", order="offset").loc[cards]
    assert as_of.tolist() == expected["as_of"].tolist()
    for feature in spec.features:
        np.testing.assert_allclose(results[feature], expected[feature].to_numpy(float), rtol=1e-9, atol=1e-6)


def test_a_row_never_holds_an_event_after_its_timestamp() -> None:
    spec = _spec()
    state = WindowState(spec=spec)
    # Card 1: events at 5 s and 25 s. As of 25 s, the sliding 30 s window ends at 30 s: both count.
    ids = state.ids_for([1, 1])
    state.update(ids, np.array([5, 25]) * SECOND, np.array([0, 1]), {"amount": np.array([1.0, 2.0])})
    as_of, results = state.rows(state.ids_for([1]))
    assert as_of.tolist() == [25 * SECOND]
    assert results["count_30s"].tolist() == [2.0]
    # The tumbling 10 s window as of 25 s is [20 s, 30 s): only the second event.
    assert results["sum_10s"].tolist() == [2.0]
    assert results["last_60s"].tolist() == [2.0]
