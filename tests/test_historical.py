"""Point-in-time training sets: exact against a brute-force reference, and against Feast's own join."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.spec import FeatureViewSpec
from offline_store import RetrievalError, get_historical_features
from offline_store.dataset import OfflineDataset

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MICROS = 1_000_000


def view(root: Path, *, ttl: timedelta = timedelta(0), name: str = "card_stats") -> FeatureViewSpec:
    return FeatureViewSpec(
        name=name,
        project="test",
        topic=f"{name}-topic",
        join_keys={"card_id": "INT64"},
        timestamp_field="ts",
        message_schema={},
        features={"amount_sum": "FLOAT64", "txn_count": "INT64"},
        ttl=ttl,
        offline_path=str(root / name),
    )


def write(
    spec: FeatureViewSpec,
    rows: list[tuple[int, int, int, float | None, int]],
    partition: int = 0,
    first_offset: int = 0,
) -> None:
    """Rows of (card, event second, created second, amount_sum, txn_count), as one stream batch
    whose rows have offsets from ``first_offset`` on."""
    OfflineDataset(spec=spec).write_batch(
        partition=partition,
        first_offset=first_offset,
        last_offset=first_offset + max(len(rows) - 1, 0),
        offsets=np.arange(first_offset, first_offset + len(rows), dtype=np.int64),
        keys=[row[0] for row in rows],
        event_times_us=np.array([int(T0.timestamp() + row[1]) * MICROS for row in rows], dtype=np.int64),
        created_times_us=np.array([int(T0.timestamp() + row[2]) * MICROS for row in rows], dtype=np.int64),
        features={"amount_sum": [row[3] for row in rows], "txn_count": [row[4] for row in rows]},
    )


def entities(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "card_id": [card for card, _ in pairs],
            "event_timestamp": [T0 + timedelta(seconds=second) for _, second in pairs],
            "label": list(range(len(pairs))),
        }
    )


def test_each_row_gets_the_latest_value_at_or_before_its_time_and_never_a_later_one(tmp_path: Path) -> None:
    spec = view(tmp_path)
    # Card 1 sums 10 at t=100 and 25 at t=200; card 2 sums 7 at t=150.
    write(spec, [(1, 100, 100, 10.0, 1), (1, 200, 200, 25.0, 2), (2, 150, 150, 7.0, 1)])
    labels = entities([(1, 99), (1, 100), (1, 199), (1, 200), (1, 10_000), (2, 149), (2, 151), (3, 500)])

    result = get_historical_features(
        entity_df=labels, features=["card_stats:amount_sum", "card_stats:txn_count"], repo=[spec]
    ).to_df()

    # Every row comes back, in order; before a card's first value, and for an unknown card, null.
    assert result["label"].tolist() == list(range(8))
    assert result["amount_sum"].iloc[1:5].tolist() == [10.0, 10.0, 25.0, 25.0]
    assert result["amount_sum"].isna().tolist() == [True, False, False, False, False, True, False, True]
    assert result["txn_count"].iloc[[1, 3, 6]].tolist() == [1, 2, 1]


def test_a_value_written_after_the_label_time_never_leaks_into_its_row(tmp_path: Path) -> None:
    spec = view(tmp_path)
    # The label is at t=500; the only feature row comes one microsecond later.
    OfflineDataset(spec=spec).write_batch(
        partition=0,
        first_offset=0,
        last_offset=0,
        keys=[1],
        event_times_us=np.array([int(T0.timestamp() + 500) * MICROS + 1], dtype=np.int64),
        created_times_us=np.array([int(T0.timestamp() + 400) * MICROS], dtype=np.int64),
        features={"amount_sum": [99.0], "txn_count": [9]},
    )
    result = get_historical_features(
        entity_df=entities([(1, 500)]), features=["card_stats:amount_sum"], repo=[spec]
    )
    assert result.to_df()["amount_sum"].isna().tolist() == [True]


def test_values_older_than_the_ttl_are_null(tmp_path: Path) -> None:
    spec = view(tmp_path, ttl=timedelta(seconds=60))
    write(spec, [(1, 100, 100, 10.0, 1)])
    # 60 s after the value is still inside the ttl (inclusive, as Feast), 61 s is not.
    result = get_historical_features(
        entity_df=entities([(1, 100), (1, 160), (1, 161)]), features=["card_stats:amount_sum"], repo=[spec]
    ).to_df()
    assert result["amount_sum"].isna().tolist() == [False, False, True]


def test_at_one_event_time_the_later_offset_wins_whatever_the_clocks_said(tmp_path: Path) -> None:
    spec = view(tmp_path)
    write(spec, [(1, 100, 100, 1.0, 1)], first_offset=0)
    # A later batch corrects the value at 100 s twice; its second row was stamped by a slower clock.
    write(spec, [(1, 100, 130, 3.0, 3), (1, 100, 120, 2.0, 2)], first_offset=10)
    result = get_historical_features(
        entity_df=entities([(1, 100)]), features=["card_stats:amount_sum"], repo=[spec]
    )
    assert result.to_df()["amount_sum"].tolist() == [2.0]


def test_two_views_join_side_by_side_with_full_names(tmp_path: Path) -> None:
    first, second = view(tmp_path, name="a"), view(tmp_path, name="b")
    write(first, [(1, 10, 10, 1.0, 1)])
    write(second, [(1, 20, 20, 2.0, 2)])
    result = get_historical_features(
        entity_df=entities([(1, 15), (1, 25)]),
        features=["a:amount_sum", "b:amount_sum"],
        repo=[first, second],
        full_feature_names=True,
    ).to_df()
    assert result["a__amount_sum"].tolist() == [1.0, 1.0]
    assert result["b__amount_sum"].isna().tolist() == [True, False]


def test_bad_requests_say_what_to_fix(tmp_path: Path) -> None:
    spec = view(tmp_path)
    labels = entities([(1, 1)])
    with pytest.raises(RetrievalError, match=r"no feature view named 'nope' \(known: card_stats\)"):
        get_historical_features(entity_df=labels, features=["nope:x"], repo=[spec])
    with pytest.raises(RetrievalError, match=r"has no feature 'x' \(it has: amount_sum, txn_count\)"):
        get_historical_features(entity_df=labels, features=["card_stats:x"], repo=[spec])
    with pytest.raises(RetrievalError, match=r"entity_df has no column 'card_id'"):
        get_historical_features(
            entity_df=labels.drop(columns="card_id"), features=["card_stats:txn_count"], repo=[spec]
        )
    with pytest.raises(RetrievalError, match=r"entity_df has no 'event_timestamp' column"):
        get_historical_features(
            entity_df=labels.drop(columns="event_timestamp"), features=["card_stats:txn_count"], repo=[spec]
        )
    with pytest.raises(RetrievalError, match=r"clashes with an entity_df column"):
        get_historical_features(
            entity_df=labels.assign(txn_count=1), features=["card_stats:txn_count"], repo=[spec]
        )


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),  # card
        st.integers(0, 40),  # event second
        st.integers(0, 5),  # created delay
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(0, 100),
    ),
    max_size=40,
)


@settings(max_examples=40)
@given(
    rows=rows_strategy,
    labels=st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 50)), min_size=1, max_size=30),
    ttl=st.sampled_from([0, 5, 20]),
)
def test_the_join_equals_a_brute_force_reference(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Any], labels: list[tuple[int, int]], ttl: int
) -> None:
    root = tmp_path_factory.mktemp("hist")
    spec = view(root, ttl=timedelta(seconds=ttl))
    unique = {
        (card, second, second + delay): (card, second, second + delay, amount, count)
        for card, second, delay, amount, count in rows
    }
    if unique:
        write(spec, list(unique.values()))
    result = get_historical_features(
        entity_df=entities(labels), features=["card_stats:amount_sum", "card_stats:txn_count"], repo=[spec]
    ).to_df()
    assert len(result) == len(labels)
    for position, (card, second) in enumerate(labels):
        # At one event time the row with the higher offset (its place in the batch) is the served one.
        eligible = [
            (offset, row)
            for offset, row in enumerate(unique.values())
            if row[0] == card and row[1] <= second and (not ttl or second - row[1] <= ttl)
        ]
        expected = max(eligible, key=lambda item: (item[1][1], item[0]))[1] if eligible else None
        got_amount, got_count = result["amount_sum"][position], result["txn_count"][position]
        if expected is None:
            assert pd.isna(got_amount) and pd.isna(got_count)
        else:
            assert (None if pd.isna(got_amount) else got_amount) == expected[3]
            assert got_count == expected[4]


def test_it_agrees_with_feast_wherever_feast_returns_a_row(tmp_path: Path) -> None:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    rng = np.random.default_rng(3)
    spec = view(tmp_path, ttl=timedelta(minutes=30))
    rows = [
        (int(card), int(second), int(second), float(rng.normal(50, 10)), int(rng.integers(0, 100)))
        for card, second in zip(
            rng.integers(0, 50, 3000), rng.choice(36_000, 3000, replace=False), strict=True
        )
    ]
    write(spec, rows)
    # Feast reads the same rows from one Parquet file.
    table = OfflineDataset(spec=spec).read()
    table.to_pandas().to_parquet(tmp_path / "feast.parquet")
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
    feast_view = FeatureView(
        name="card_stats",
        entities=[card],
        ttl=timedelta(minutes=30),
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="amount_sum", dtype=Float64),
            Field(name="txn_count", dtype=Int64),
        ],
        source=FileSource(
            path=str(tmp_path / "feast.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        ),
    )
    store = FeatureStore(
        config=RepoConfig(
            project="hist_compare",
            provider="local",
            registry=str(tmp_path / "registry.db"),
            online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=tmp_path,
        )
    )
    store.apply([card, feast_view])
    labels = pd.DataFrame(
        {
            "card_id": rng.integers(0, 60, 2000),
            "event_timestamp": [
                T0 + timedelta(seconds=int(s)) for s in rng.choice(40_000, 2000, replace=False)
            ],
        }
    )
    features = ["card_stats:amount_sum", "card_stats:txn_count"]
    theirs = store.get_historical_features(entity_df=labels, features=features).to_df()
    ours = get_historical_features(entity_df=labels, features=features, repo=[spec]).to_df()

    assert len(ours) == len(labels)
    merged = theirs.merge(
        ours, on=["card_id", "event_timestamp"], suffixes=("_feast", "_ours"), validate="one_to_one"
    )
    assert len(merged) == len(theirs)
    assert np.allclose(merged["amount_sum_feast"], merged["amount_sum_ours"], equal_nan=True)
    assert (merged["txn_count_feast"].fillna(-1) == merged["txn_count_ours"].fillna(-1)).all()
    # Where Feast dropped a row, ours is there with null features.
    dropped = ours.merge(theirs[["card_id", "event_timestamp"]], how="left", indicator=True)
    dropped = dropped[dropped["_merge"] == "left_only"]
    assert len(theirs) < len(labels) and len(dropped) == len(labels) - len(theirs)
    assert dropped["amount_sum"].isna().all()
