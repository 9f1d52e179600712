"""Window state equals a brute-force recomputation on random, out-of-order streams in any batching."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.spec import AggregationSpec, FeatureViewSpec
from streams.windows import WindowState
from tests.reference import value_at

SECOND = 1_000_000


def _spec() -> FeatureViewSpec:
    # Tumbling 10 s, sliding 30 s every 10 s, sliding 20 s every 5 s, tumbling 60 s: four pane
    # layouts over one column.
    windows = [(10, 10), (30, 10), (20, 5), (60, 60)]
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


def _events(rng: np.random.Generator, count: int) -> pd.DataFrame:
    """Three cards' purchases over two minutes, a tenth of amounts null, a third of times on a 5 s grid
    (so that events tie)."""
    ts = rng.integers(0, 120 * SECOND, count)
    ts = np.where(rng.random(count) < 1 / 3, ts // (5 * SECOND) * (5 * SECOND), ts)
    amount = np.where(rng.random(count) < 0.1, np.nan, np.round(rng.normal(50, 30, count), 2))
    return pd.DataFrame({"card_id": rng.integers(0, 3, count), "ts": ts, "amount": amount})


def _accepted(frame: pd.DataFrame, delay_us: int) -> pd.Series:
    """The processor's watermark, in arrival order: an event is on time when it is at most the
    delay behind the newest on-time event before it."""
    newest, on_time = None, []
    for ts in frame["ts"].tolist():
        keep = newest is None or ts >= newest - delay_us
        on_time.append(keep)
        if keep:
            newest = ts if newest is None else max(newest, ts)
    return pd.Series(on_time, index=frame.index)


def _as_of(rows: pd.DataFrame, card: int, at: int, spec: FeatureViewSpec) -> dict[str, float]:
    """What an as-of join returns at ``at``: the card's newest row at or before it, the row emitted
    last winning at one time; before the card's first row, an empty window."""
    mine = rows[(rows["card_id"] == card) & (rows["ts"] <= at)]
    if mine.empty:
        return {a.feature: 0.0 if a.function == "count" else np.nan for a in spec.aggregations}
    return mine.sort_values(["ts", "batch"]).iloc[-1][list(spec.features)].to_dict()


@settings(max_examples=80, deadline=None)
@given(
    count=st.integers(1, 150),
    batch_size=st.integers(1, 40),
    delay_s=st.sampled_from([0, 5, 25]),
    seed=st.integers(0, 2**32 - 1),
)
def test_an_as_of_join_on_the_rows_gives_the_value_at_any_time_in_any_batching(
    count: int, batch_size: int, delay_s: int, seed: int
) -> None:
    spec = replace(_spec(), watermark_delay=timedelta(seconds=delay_s))
    rng = np.random.default_rng(seed)
    frame = _events(rng, count)
    # Arrival order: event time plus a jitter of up to twice the delay, so some events come too late.
    jitter = rng.integers(0, 2 * delay_s * SECOND + 1, len(frame))
    frame = frame.iloc[np.argsort(frame["ts"].to_numpy() + jitter, kind="stable")].reset_index(drop=True)
    frame["offset"] = np.arange(len(frame))
    frame = frame[_accepted(frame, delay_s * SECOND)]

    state = WindowState(spec=spec, capacity=2)  # tiny, so the state must grow on the way
    emitted = []
    for batch_number, start in enumerate(range(0, len(frame), batch_size)):
        batch = frame.iloc[start : start + batch_size]
        changes = state.advance(
            state.ids_for(batch["card_id"].tolist()),
            batch["ts"].to_numpy(),
            batch["offset"].to_numpy(),
            {"amount": batch["amount"].to_numpy()},
        )
        points = list(zip(changes.entity_ids.tolist(), changes.times.tolist(), strict=True))
        assert len(set(points)) == len(points), "a batch emits each (entity, time) once"
        emitted.append(
            pd.DataFrame(
                {
                    "card_id": [state.entity_keys[entity] for entity in changes.entity_ids.tolist()],
                    "ts": changes.times,
                    "batch": batch_number,
                    **changes.features,
                }
            )
        )
    rows = pd.concat(emitted, ignore_index=True)
    assert state.stream_time == frame["ts"].max()

    # Every change point, and the microsecond before it, and random times, up to the stream time.
    times = set(rows["ts"].tolist()) | {t - 1 for t in rows["ts"].tolist()}
    times |= set(rng.integers(frame["ts"].min() - 10 * SECOND, state.stream_time + 1, 20).tolist())
    for at in sorted(t for t in times if t <= state.stream_time):
        for card in sorted(frame["card_id"].unique()):
            got = _as_of(rows, card, at, spec)
            expected = value_at(frame, spec, key="card_id", time="ts", order="offset", entity=card, at=at)
            for feature in spec.features:
                np.testing.assert_allclose(
                    got[feature], expected[feature], rtol=1e-9, atol=1e-6, err_msg=f"{feature} at {at}"
                )


def test_a_sliding_count_decays_to_zero_as_the_stream_passes_its_panes() -> None:
    spec = _spec()
    state = WindowState(spec=spec)
    # Card 1 buys at 5 s and 25 s. Its rows: at 5 s and 25 s (the events), then, on the sliding
    # 30 s window, at 30 s (the pane [0, 10) leaves: count 1) and 50 s (the pane [20, 30) leaves:
    # count 0). Card 2's event at 70 s moves the stream past both.
    state.advance(state.ids_for([1, 1]), np.array([5, 25]) * SECOND, np.array([0, 1]),
                  {"amount": np.array([1.0, 2.0])})  # fmt: skip
    changes = state.advance(
        state.ids_for([2]), np.array([70]) * SECOND, np.array([2]), {"amount": np.array([4.0])}
    )
    card_1 = changes.entity_ids == state.ids_for([1])[0]
    rows = dict(
        zip(
            (changes.times[card_1] // SECOND).tolist(),
            changes.features["count_30s"][card_1].tolist(),
            strict=True,
        )
    )
    assert rows[30] == 1.0
    assert rows[50] == 0.0
    # The tumbling 10 s window ends at 30 s: empty, so sum is null and count 0.
    at_30 = np.flatnonzero(card_1 & (changes.times == 30 * SECOND))[0]
    assert changes.features["count_10s"][at_30] == 0.0
    assert np.isnan(changes.features["sum_10s"][at_30])


def test_an_event_as_far_back_as_the_watermark_allows_is_counted_even_past_the_window() -> None:
    # Sliding 20 s every 5 s with a 25 s watermark delay: the delay reaches further back than the
    # window's own four panes. Card 1 buys at 12 s and 37 s, then the one at 22 s arrives (15 s late,
    # within the delay). As of 22 s, the window [5 s, 22 s] holds the 12 s and 22 s events.
    spec = replace(_spec(), watermark_delay=timedelta(seconds=25))
    state = WindowState(spec=spec)
    frame = pd.DataFrame(
        {"card_id": [1, 1, 1], "ts": np.array([12, 37, 22]) * SECOND, "amount": [1.0, 2.0, 4.0]}
    )
    frame["offset"] = np.arange(3)
    rows = {}
    for _, event in frame.iterrows():
        changes = state.advance(
            state.ids_for([1]), np.array([event["ts"]]), np.array([event["offset"]]),
            {"amount": np.array([event["amount"]])},
        )  # fmt: skip
        for position, at in enumerate(changes.times.tolist()):
            rows[at] = {name: values[position] for name, values in changes.features.items()}
    for at in (22 * SECOND, 30 * SECOND, 37 * SECOND):
        expected = value_at(frame, spec, key="card_id", time="ts", order="offset", entity=1, at=at)
        assert rows[at]["count_20s"] == expected["count_20s"]
        assert rows[at]["sum_20s"] == expected["sum_20s"]
    assert rows[22 * SECOND]["sum_20s"] == 5.0
