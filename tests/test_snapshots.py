"""A window state loaded from a snapshot continues exactly as the state it was taken from.

Over random out-of-order streams, random batchings and a random point to snapshot at, the loaded
state and the original one are fed the same remaining batches: every batch's change rows and the
final arrays must be equal, for float and exact-integer layouts, with and without a watermark delay.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.spec import FeatureViewSpec
from offline_store.storage import Location
from streams.snapshots import PartitionSnapshot, SnapshotError, SnapshotStore, dump_state, load_state
from streams.windows import ChangeRows, WindowState
from tests.test_windows import SECOND, _integer_spec, _spec


def _batches(rng: np.random.Generator, spec: FeatureViewSpec, count: int, size: int) -> list[dict]:
    column = spec.value_columns[0]
    times = np.sort(rng.integers(0, 120 * SECOND, count)) + rng.integers(0, 3 * SECOND, count)
    keys = rng.integers(0, 40, count)
    if column == "units":
        values = rng.integers(-(2**62), 2**62, count)
        floats = values.astype(np.float64)
        integers = {column: values}
    else:
        floats = np.where(rng.random(count) < 0.1, np.nan, np.round(rng.normal(50, 30, count), 2))
        integers = None
    return [
        {
            "keys": keys[start : start + size].tolist(),
            "times": times[start : start + size],
            "offsets": np.arange(start, min(start + size, count)),
            "values": {column: floats[start : start + size]},
            "integers": None if integers is None else {column: integers[column][start : start + size]},
        }
        for start in range(0, count, size)
    ]


def _advance(state: WindowState, batch: dict) -> ChangeRows:
    return state.advance(
        state.ids_for(batch["keys"]), batch["times"], batch["offsets"], batch["values"],
        integers=batch["integers"],
    )  # fmt: skip


def _assert_rows_equal(mine: ChangeRows, theirs: ChangeRows) -> None:
    np.testing.assert_array_equal(mine.entity_ids, theirs.entity_ids)
    np.testing.assert_array_equal(mine.times, theirs.times)
    assert mine.features.keys() == theirs.features.keys()
    for name, values in mine.features.items():
        other = theirs.features[name]
        np.testing.assert_array_equal(np.ma.getmaskarray(values), np.ma.getmaskarray(other), err_msg=name)
        np.testing.assert_array_equal(np.ma.getdata(values), np.ma.getdata(other), err_msg=name)
    assert mine.overflows == theirs.overflows


def _arrays(state: WindowState) -> dict[str, np.ndarray]:
    archive = np.load(io.BytesIO(dump_state(state)), allow_pickle=False)
    return {name: archive[name] for name in archive.files}


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["float", "integer"]),
    delay_s=st.sampled_from([0, 4]),
    size=st.sampled_from([1, 9, 50]),
    cut=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_loaded_snapshot_continues_exactly_as_the_state_it_was_taken_from(
    kind: str, delay_s: int, size: int, cut: float, seed: int
) -> None:
    spec = _integer_spec(delay_s) if kind == "integer" else replace(
        _spec(), watermark_delay=timedelta(seconds=delay_s)
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    batches = _batches(rng, spec, 400, size)
    split = int(cut * len(batches))
    original = WindowState(spec=spec, capacity=2)
    for batch in batches[:split]:
        _advance(original, batch)
    loaded = load_state(spec, dump_state(original))
    assert loaded.entity_keys == original.entity_keys
    for batch in batches[split:]:
        _assert_rows_equal(_advance(loaded, batch), _advance(original, batch))
    mine, theirs = _arrays(loaded), _arrays(original)
    assert mine.keys() == theirs.keys()
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def test_a_snapshot_keeps_string_and_composite_keys() -> None:
    spec = replace(_spec(), join_keys={"card_id": "INT64", "shop": "STRING"})
    state = WindowState(spec=spec)
    keys = [(1, "a"), (2, "b"), (1, "a")]
    _advance(state, {"keys": keys, "times": np.array([1, 2, 3]), "offsets": np.array([0, 1, 2]),
                     "values": {"amount": np.array([1.0, 2.0, 3.0])}, "integers": None})  # fmt: skip
    loaded = load_state(spec, dump_state(state))
    assert loaded.entity_keys == [(1, "a"), (2, "b")]
    np.testing.assert_array_equal(loaded.ids_for([(2, "b"), (3, "c")]), [1, 2])


def test_a_snapshot_of_another_definition_or_damaged_is_refused_with_the_reason() -> None:
    spec = _spec()
    state = WindowState(spec=spec)
    _advance(state, {"keys": [1], "times": np.array([5]), "offsets": np.array([0]),
                     "values": {"amount": np.array([1.0])}, "integers": None})  # fmt: skip
    data = dump_state(state)
    changed = replace(spec, watermark_delay=timedelta(seconds=1))
    with pytest.raises(SnapshotError, match="another definition of feature view 'card_stats'"):
        load_state(changed, data)
    with pytest.raises(SnapshotError, match="unreadable snapshot"):
        load_state(spec, data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="unreadable snapshot"):
        load_state(spec, b"not a snapshot")


def test_the_store_gives_the_newest_usable_snapshot_before_the_commit_and_keeps_two(tmp_path: Path) -> None:
    spec = _spec()
    store = SnapshotStore(spec=spec, root=Location.parse(str(tmp_path / "card_stats")))
    state = WindowState(spec=spec)
    _advance(state, {"keys": [1, 2], "times": np.array([5, 6]), "offsets": np.array([0, 1]),
                     "values": {"amount": np.array([1.0, 2.0])}, "integers": None})  # fmt: skip

    def snapshot(offset: int, of: FeatureViewSpec = spec) -> bytes:
        return PartitionSnapshot(
            offset=offset, max_event_time=6, vocabularies={"shop": {"a": 0}}, state=state
        ).to_bytes(of)

    store.save(0, snapshot(10), offset=10)
    store.save(0, snapshot(20), offset=20)
    store.save(1, snapshot(15), offset=15)  # another partition's
    # The newest (at 30) was made by another definition of the view: the one at 20 is used.
    store.save(0, snapshot(30, replace(spec, watermark_delay=timedelta(seconds=2))), offset=30)
    assert sorted(path.name for path in (tmp_path / "card_stats" / "_snapshots").iterdir()) == [
        f"{spec.topic}-00000-{20:020d}.npz",
        f"{spec.topic}-00000-{30:020d}.npz",
        f"{spec.topic}-00001-{15:020d}.npz",
    ], "the newest two per partition are kept"
    found = store.newest(0, before=100)
    assert found is not None and found.offset == 20 and found.vocabularies == {"shop": {"a": 0}}
    assert found.state is not None and found.state.entity_keys == [1, 2]
    # A commit rewound below a snapshot (a rebuild): that snapshot is not of this history.
    assert store.newest(0, before=20) is None
    # A damaged file is skipped as well.
    (tmp_path / "card_stats" / "_snapshots" / f"{spec.topic}-00001-{15:020d}.npz").write_bytes(b"torn")
    assert store.newest(1, before=100) is None


def test_a_view_without_aggregations_snapshots_its_watermark_alone() -> None:
    spec = replace(_spec(), aggregations=(), features={"amount": "FLOAT64"})
    data = PartitionSnapshot(offset=7, max_event_time=123, state=None).to_bytes(spec)
    loaded = PartitionSnapshot.from_bytes(spec, data)
    assert (loaded.offset, loaded.max_event_time, loaded.state) == (7, 123, None)
