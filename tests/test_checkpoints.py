"""A restart without a snapshot replays from an event-time checkpoint, not from the beginning: over
random out-of-order streams, batchings and commit points, a processor restarted at the checkpoint that
``replay_start`` picks emits exactly the rows and dead letters of one that replayed the whole partition
(and of the processor that never stopped)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import SluiceConfig
from features.repo import load_repo
from streams.checkpoints import Checkpoint, horizon_us, keep, metadata, parse_metadata, replay_start
from streams.dead_letters import SourceRecord
from streams.metrics import WorkerMetrics
from streams.processor import PartitionProcessor
from tests.streaming import make_repo, partition_processor
from tests.test_stream_worker import BASE, SECOND

STARTS: list[tuple[int, int]] = []
"""(checkpoint offset, commit offset) of every example, to check that replays did get shorter."""


def stream(seed: int, count: int) -> list[SourceRecord]:
    """Purchases of 8 cards over about 5 minutes: mostly in order, some up to 4 s out of order (within
    the 5 s watermark), a few 10-30 s behind (late), and a few that are not events."""
    rng = random.Random(seed)
    base_us = int(BASE.timestamp() * SECOND)
    records = []
    for offset in range(count):
        at = base_us + offset * 300_000 + rng.randrange(200_000)
        roll = rng.random()
        if roll < 0.15:
            at -= rng.randrange(4 * SECOND)
        elif roll < 0.18:
            at -= rng.randrange(10 * SECOND, 30 * SECOND)
        value: bytes = orjson.dumps(
            {
                "card_id": rng.randrange(8),
                "amount": None if rng.random() < 0.03 else round(rng.lognormvariate(3, 1), 2),
                "ts": datetime.fromtimestamp(at / SECOND, UTC).isoformat(),
            }
        )
        if rng.random() < 0.01:
            value = b"{not json"
        records.append(SourceRecord(topic="t", partition=0, offset=offset, key=None, value=value))
    return records


def outputs(processor: PartitionProcessor, batch: list[SourceRecord]) -> tuple[list[Any], list[Any]]:
    """A batch's rows (sorted by time and entity, without their creation time) and dead letters."""
    computed = processor.prepare(batch).computed
    if computed is None:
        return [], []
    rows = computed.rows
    features = {name: np.asarray(values, dtype=object).tolist() for name, values in rows.features.items()}
    table = sorted(
        (int(rows.event_times_us[index]), repr(rows.keys[index]), int(rows.offsets[index]),
         [features[name][index] for name in sorted(features)])
        for index in range(len(rows.keys))
    )  # fmt: skip
    letters = [(letter.record.offset, letter.reason) for letter in computed.letters]
    return table, letters


def assert_same(mine: tuple[list[Any], list[Any]], theirs: tuple[list[Any], list[Any]]) -> None:
    """Equal rows and dead letters. Values may differ in the last bits: a state rebuilt in one replay
    adds a pane's squares in another grouping than one fed batch by batch (see the issue note)."""
    assert mine[1] == theirs[1]
    assert [row[:3] for row in mine[0]] == [row[:3] for row in theirs[0]]
    for left, right in zip(mine[0], theirs[0], strict=True):
        np.testing.assert_allclose(
            np.array(left[3], dtype=float), np.array(right[3], dtype=float), rtol=1e-12, err_msg=str(left[:3])
        )


@pytest.mark.stack
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1), cut=st.floats(0.3, 0.95), sizes=st.lists(st.integers(1, 120), min_size=1)
)
def test_a_restart_from_a_checkpoint_emits_what_a_full_replay_emits(
    tmp_path: Path,
    stack_config: SluiceConfig,
    project: str,
    topic: str,
    redis_client: redis.Redis,
    seed: int,
    cut: float,
    sizes: list[int],
) -> None:
    spec = load_repo(make_repo(tmp_path / f"repo-{seed}", project=project, topic=topic)).spec("card_stats")
    records = stream(seed, 1000)
    batches, position, turn = [], 0, 0
    while position < len(records):
        size = sizes[turn % len(sizes)]
        batches.append(records[position : position + size])
        position += size
        turn += 1
    commit_after = max(1, int(cut * len(batches)))
    commit = batches[commit_after - 1][-1].offset + 1

    def new() -> PartitionProcessor:
        return partition_processor(spec, redis_client, stack_config, WorkerMetrics())

    # The worker that never stops, noting a checkpoint after every batch as the engine does; what it
    # commits is the metadata as the broker keeps it (a string).
    steady = new()
    steady.start(first_offset=0, history=[])
    kept: list[Checkpoint] = []
    every: list[Checkpoint] = []
    for batch in batches[:commit_after]:
        outputs(steady, batch)
        for checkpoint in steady.take_checkpoints():
            every.append(checkpoint)
            kept = keep(kept, checkpoint, horizon_us=horizon_us(spec))
    committed = parse_metadata(metadata({spec.name: kept}))[spec.name]
    assert committed[-1] == Checkpoint(offset=commit, newest_us=steady.max_event_time)
    start = replay_start(committed, horizon_us=horizon_us(spec))
    # The few checkpoints kept find a start within two eighths of the horizon of the best of all.
    best = replay_start(every, horizon_us=horizon_us(spec))
    assert (start is None) == (best is None)
    if start is not None and best is not None:
        assert best.newest_us - start.newest_us <= 2 * (horizon_us(spec) or 0) // 8

    replayed_all = new()
    replayed_all.start(first_offset=commit, history=records[:commit])
    from_checkpoint = new()
    if start is not None:
        from_checkpoint.resume_at(start)
    from_checkpoint.start(first_offset=commit, history=records[start.offset if start else 0 : commit])
    STARTS.append((start.offset if start else 0, commit))

    for batch in batches[commit_after:]:
        expected = outputs(steady, batch)
        assert_same(outputs(replayed_all, batch), expected)
        assert_same(outputs(from_checkpoint, batch), expected)
    assert from_checkpoint.max_event_time == steady.max_event_time


@pytest.mark.stack
def test_the_checkpoints_shortened_the_replays() -> None:
    """Runs after the property test: most of its restarts replayed from a checkpoint past offset 0."""
    if not STARTS:
        pytest.skip("the property test did not run")
    later = [start for start, commit in STARTS if start > 0]
    assert len(later) >= len(STARTS) // 4, STARTS


def test_checkpoints_stay_few_and_within_the_metadata_limit() -> None:
    rng = np.random.default_rng(0)
    horizon = 75 * SECOND
    kept: list[Checkpoint] = []
    newest = 0
    for offset in range(1, 20_000):
        newest += int(rng.integers(0, 2 * SECOND))
        kept = keep(kept, Checkpoint(offset=offset, newest_us=newest), horizon_us=horizon)
        assert len(kept) <= 10
        start = replay_start(kept, horizon_us=horizon)
        if start is not None:  # a valid start, and never more than an eighth of the horizon too early
            assert start.newest_us < newest - horizon
            assert start.newest_us >= newest - horizon - horizon // 8 - 2 * SECOND
    views = {f"view_{index:02d}": kept for index in range(30)}
    text = metadata(views)
    assert len(text) <= 3000
    shortened = parse_metadata(text)
    assert all(entries == [kept[0], kept[-1]] for entries in shortened.values())
    assert replay_start(shortened["view_00"], horizon_us=horizon) == kept[0]


def test_a_view_without_aggregations_resumes_at_its_commit() -> None:
    kept = keep([Checkpoint(offset=5, newest_us=10)], Checkpoint(offset=9, newest_us=12), horizon_us=None)
    assert kept == [Checkpoint(offset=9, newest_us=12)]
    assert replay_start(kept, horizon_us=None) == Checkpoint(offset=9, newest_us=12)


def test_metadata_that_is_not_sluices_is_ignored() -> None:
    assert parse_metadata("") == {}
    assert parse_metadata("written by a person") == {}
    assert parse_metadata('{"sluice": 99, "views": {}}') == {}
    assert parse_metadata('{"sluice": 1, "views": {"v": [["x", 1]]}}') == {}
