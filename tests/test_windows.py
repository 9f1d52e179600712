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


def _integer_spec(delay_s: int) -> FeatureViewSpec:
    aggregations = tuple(
        AggregationSpec(
            feature=f"{function}_{window}s",
            column="units",
            function=function,
            window=timedelta(seconds=window),
            slide=timedelta(seconds=slide),
            dtype="INT64",
        )
        for window, slide in [(10, 10), (30, 10)]
        for function in ("count", "sum", "min", "max", "last")
    )
    return FeatureViewSpec(
        name="stock",
        project="test",
        topic="moves",
        join_keys={"sku": "INT64"},
        timestamp_field="ts",
        message_schema={"sku": "INT64", "units": "INT64", "ts": "UNIX_TIMESTAMP"},
        features={aggregation.feature: aggregation.dtype for aggregation in aggregations},
        aggregations=aggregations,
        watermark_delay=timedelta(seconds=delay_s),
    )


def _exact_value_at(events: list[tuple[int, int, int, int | None]], at: int, window: int, slide: int,
                    function: str) -> int | None:  # fmt: skip
    """The value at ``at`` over (time, offset, sku's units or None) events, in Python integers:
    a sum outside int64 is None (null), as the store keeps it."""
    end = (at // slide + 1) * slide
    held = sorted((t, o, u) for t, o, _, u in events if end - window <= t <= at and u is not None)
    units = [u for _, _, u in held]
    if function == "count":
        return len(units)
    if not units:
        return None
    if function == "sum":
        total = sum(units)
        return total if -(2**63) <= total < 2**63 else None
    return {"min": min, "max": max, "last": lambda v: v[-1]}[function](units)


@settings(max_examples=60, deadline=None)
@given(
    units=st.lists(
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(2**62, 2**63 - 1),  # two of these overflow a sum
            st.integers(-(2**53) - 5, -(2**53) + 5),  # where float64 stops being exact
        ),
        min_size=1,
        max_size=60,
    ),
    batch_size=st.integers(1, 20),
    delay_s=st.sampled_from([0, 15]),
    seed=st.integers(0, 2**32 - 1),
)
def test_integer_sum_min_max_and_last_are_exact_over_the_whole_int64_range(
    units: list[int | None], batch_size: int, delay_s: int, seed: int
) -> None:
    spec = _integer_spec(delay_s)
    rng = np.random.default_rng(seed)
    count = len(units)
    times = rng.integers(0, 60, count) * SECOND
    skus = rng.integers(0, 2, count)
    # Arrival order within the watermark: jitter of at most the delay, so nothing is late.
    order = np.argsort(times + rng.integers(0, delay_s * SECOND + 1, count), kind="stable")
    events = [(int(times[i]), offset, int(skus[i]), units[i]) for offset, i in enumerate(order.tolist())]

    state = WindowState(spec=spec)
    rows: list[tuple[int, int, int, dict[str, object]]] = []  # (sku, time, batch, features)
    for batch_number, start in enumerate(range(0, count, batch_size)):
        batch = events[start : start + batch_size]
        exact = np.array([0 if u is None else u for *_, u in batch], dtype=np.int64)
        changes = state.advance(
            state.ids_for([sku for _, _, sku, _ in batch]),
            np.array([t for t, *_ in batch]),
            np.array([o for _, o, *_ in batch]),
            {"units": np.array([np.nan if u is None else float(u) for *_, u in batch])},
            integers={"units": exact},
        )
        for position, (entity, at) in enumerate(zip(changes.entity_ids.tolist(), changes.times.tolist(),
                                                    strict=True)):  # fmt: skip
            values = {}
            for name, column in changes.features.items():
                value = column[position]
                values[name] = None if value is np.ma.masked or value != value else int(value)
            rows.append((state.entity_keys[entity], at, batch_number, values))

    for sku in (0, 1):
        mine = [(t, o, s, u) for t, o, s, u in events if s == sku]
        for at in sorted({t for t, *_ in events} | {row[1] for row in rows}):
            if at > state.stream_time:
                continue
            seen = [row for row in rows if row[0] == sku and row[1] <= at]
            if not seen:
                continue
            got = max(seen, key=lambda row: (row[1], row[2]))[3]
            for aggregation in spec.aggregations:
                window = int(aggregation.window.total_seconds()) * SECOND
                slide = int(aggregation.slide.total_seconds()) * SECOND
                expected = _exact_value_at(mine, at, window, slide, aggregation.function)
                assert got[aggregation.feature] == expected, f"{aggregation.feature} of {sku} at {at}"
