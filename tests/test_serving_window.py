"""A serving window against a recount from the raw events: over random values, nulls, duplicated
request ids, batchings and splits into parts, its counts, moments and bottom-k sample are those of the
events, and merged parts equal one window, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitors.drift.profile import ReferenceProfile
from monitors.drift.window import ServingWindow, event_keys

PROFILE = ReferenceProfile.build(
    pd.DataFrame(
        {"x": np.random.default_rng(0).normal(0, 1, 2000), "y": np.random.default_rng(1).exponential(1, 2000)}
    ),
    model="m",
    version="1",
    bins=8,
)


def events(seed: int) -> tuple[list[dict[str, object]], list[str]]:
    """Rows with nulls, values of other types, and request ids that repeat (a retried request)."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 6000))
    rows: list[dict[str, object]] = []
    ids = []
    for index in range(size):
        row: dict[str, object] = {"x": float(rng.normal(0.2, 1))}
        if rng.random() < 0.05:
            row["x"] = None
        if rng.random() > 0.03:
            row["y"] = float(rng.exponential(1)) if rng.random() > 0.01 else "n/a"
        rows.append(row)
        ids.append(f"r{index}" if rng.random() > 0.02 else f"r{int(rng.integers(0, index + 1))}")
    return rows, ids


def brute_force_sample(rows: list[dict[str, object]], ids: list[str], name: str, size: int) -> list[float]:
    keys = event_keys(ids).tolist()
    pairs = []
    for key, row in zip(keys, rows, strict=True):
        value = row.get(name)
        if isinstance(value, float):
            pairs.append((key, value))
    return sorted(value for _, value in sorted(pairs)[:size])


def fill(
    window: ServingWindow, rows: list[dict[str, object]], ids: list[str], rng: np.random.Generator
) -> None:
    position = 0
    while position < len(rows):
        step = int(rng.integers(1, 700))
        chunk = slice(position, position + step)
        window.update_rows(rows[chunk], keys=event_keys(ids[chunk]))
        position += step


@pytest.mark.parametrize("seed", range(12))
def test_a_window_holds_the_bottom_k_and_the_counts_of_its_events(seed: int) -> None:
    rows, ids = events(seed)
    rng = np.random.default_rng(seed + 100)
    size = int(rng.choice([1, 7, 50, 400, 2000]))
    window = ServingWindow(profile=PROFILE, start_us=0, end_us=1, sample_size=size)
    fill(window, rows, ids, rng)
    for name in ("x", "y"):
        present = np.array([row[name] for row in rows if isinstance(row.get(name), float)])
        # What the window holds: a bin count per reference bin, the rest as nulls, and the sample.
        assert window.counts(name).sum() == len(present)
        wrong = sum(1 for row in rows if isinstance(row.get(name), str))
        assert window.type_errors(name) == wrong  # there but not a number: neither null nor binned
        assert window.null_count(name) == len(rows) - len(present) - wrong
        below, above = window.outside(name)
        reference = PROFILE.features[name]
        assert (below, above) == (
            int((present < reference.minimum).sum()),
            int((present > reference.maximum).sum()),
        )
        # A value equal to an edge counts in the bin below it.
        edges = PROFILE.features[name].edges
        expected = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
        assert window.counts(name).tolist() == expected.tolist()
        assert window.sample(name).tolist() == brute_force_sample(rows, ids, name, size)
        if len(present):
            assert window.mean(name) == pytest.approx(present.mean(), rel=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_parts_of_a_window_merge_into_the_window_bit_for_bit(seed: int) -> None:
    rows, ids = events(seed)
    rng = np.random.default_rng(seed + 200)
    size = int(rng.choice([5, 300, 2000]))
    whole = ServingWindow(profile=PROFILE, start_us=0, end_us=1, sample_size=size)
    fill(whole, rows, ids, rng)
    # The same events dealt to three parts at random (as partitions), each batched its own way,
    # and one part saved and read back.
    owner = rng.integers(0, 3, len(rows))
    parts = []
    for part_index in range(3):
        chosen = np.flatnonzero(owner == part_index).tolist()
        part = ServingWindow(profile=PROFILE, start_us=0, end_us=1, sample_size=size)
        fill(part, [rows[i] for i in chosen], [ids[i] for i in chosen], rng)
        parts.append(part)
    parts[1] = ServingWindow.from_bytes(parts[1].to_bytes(), profile=PROFILE)
    merged = ServingWindow.merged(parts)
    again = ServingWindow.merged(
        [ServingWindow.from_bytes(part.to_bytes(), profile=PROFILE) for part in parts]
    )
    for name in ("x", "y"):
        assert merged.sample(name).tolist() == whole.sample(name).tolist()
        assert merged.counts(name).tolist() == whole.counts(name).tolist()
        assert merged.null_count(name) == whole.null_count(name)
        assert merged.type_errors(name) == whole.type_errors(name)
        assert merged.outside(name) == whole.outside(name)
    assert merged.to_bytes() == again.to_bytes()
    assert merged.events == whole.events == len(rows)


def test_a_window_saved_by_the_heap_release_reads_back() -> None:
    """Parts saved before the sample was a buffer hold min(seen, size) pairs in heap order, no 'filled'."""
    rows, ids = events(3)
    window = ServingWindow(profile=PROFILE, start_us=0, end_us=1, sample_size=100)
    window.update_rows(rows, keys=event_keys(ids))
    import io

    saved = dict(np.load(io.BytesIO(window.to_bytes()), allow_pickle=False))
    del saved["filled"]
    shuffled = np.random.default_rng(0).permutation(100)
    saved["sample_keys"] = saved["sample_keys"][:, shuffled]
    saved["sample"] = saved["sample"][:, shuffled]
    buffer = io.BytesIO()
    np.savez(buffer, **saved)
    restored = ServingWindow.from_bytes(buffer.getvalue(), profile=PROFILE)
    for name in ("x", "y"):
        assert restored.sample(name).tolist() == window.sample(name).tolist()
    more_rows, more_ids = events(4)
    restored.update_rows(more_rows, keys=event_keys([f"more-{i}" for i in more_ids]))
    window.update_rows(more_rows, keys=event_keys([f"more-{i}" for i in more_ids]))
    assert restored.sample("x").tolist() == window.sample("x").tolist()


def test_a_window_needs_room_in_its_sample() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        ServingWindow(profile=PROFILE, start_us=0, end_us=1, sample_size=0)
