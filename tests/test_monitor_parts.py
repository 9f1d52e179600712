"""Window parts merge into what one monitor sees: over random streams, random splits of the partitions
between monitors, random batch sizes and interleavings, and monitors that crash and replay from their
commit offsets, the reports are equal, bit for bit, to one monitor's, and the event counts to a
recomputation from the raw events."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitors.database import open_store
from monitors.drift.profile import ReferenceProfile
from monitors.events.cloudevents import PredictionEvent
from monitors.runtime.monitor import ClosedWindow, Monitor, MonitorSettings
from monitors.runtime.parts import WindowParts

T0 = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW_US = 10_000_000
LATENESS_US = 3_000_000
PARTITIONS = 4
MODELS = ("a", "b")

TRAINING = pd.DataFrame(
    {"x": np.random.default_rng(0).normal(0, 1, 3000), "y": np.random.default_rng(1).normal(0, 1, 3000)}
)
PROFILES = {model: ReferenceProfile.build(TRAINING, model=model, version="1", bins=10) for model in MODELS}


def stream(seed: int) -> dict[int, list[tuple[PredictionEvent, int, int]]]:
    """Per partition, (event, partition, offset) in offset order: both models, times mostly increasing,
    some out of order by less and by more than the lateness, and missing values; then one event per
    model far ahead."""
    rng = np.random.default_rng(seed)
    partitions: dict[int, list[tuple[PredictionEvent, int, int]]] = {p: [] for p in range(PARTITIONS)}
    clock = {p: 0 for p in range(PARTITIONS)}
    for index in range(int(rng.integers(600, 1200))):
        partition = int(rng.integers(PARTITIONS))
        clock[partition] += int(rng.integers(0, 200_000))
        at = clock[partition] - (int(rng.integers(0, 8_000_000)) if rng.random() < 0.05 else 0)
        model = MODELS[int(rng.integers(2))]
        x = None if rng.random() < 0.02 else float(rng.normal(0.5 if model == "a" else 0, 1))
        event = PredictionEvent(
            model=model, version="1", request_id=f"r{index}", features={"x": x, "y": float(rng.normal())},
            event_time=T0 + timedelta(microseconds=max(at, 0)),
        )  # fmt: skip
        partitions[partition].append((event, partition, len(partitions[partition])))
    for partition, events in partitions.items():
        for model in MODELS:
            tick = PredictionEvent(
                model=model, version="1", request_id=f"tick-{partition}-{model}", features={},
                event_time=T0 + timedelta(hours=1),
            )  # fmt: skip
            events.append((tick, partition, len(events)))
    return partitions


def expected_counts(
    partitions: dict[int, list[tuple[PredictionEvent, int, int]]],
) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for events in partitions.values():
        latest: dict[str, int] = {}
        for event, _, _ in events:
            at = int(event.event_time.timestamp() * 1_000_000)
            start = at - at % WINDOW_US
            before = latest.get(event.model)
            latest[event.model] = at if before is None else max(before, at)
            if before is not None and start + WINDOW_US <= before - LATENESS_US:
                continue
            counts[(event.model, start)] = counts.get((event.model, start), 0) + 1
    hour = int((T0 + timedelta(hours=1)).timestamp() * 1_000_000)
    return {key: count for key, count in counts.items() if key[1] < hour}


def run(
    partitions: dict[int, list[tuple[PredictionEvent, int, int]]],
    *,
    monitors: int,
    seed: int,
    crashes: int = 0,
    store_url: str = "sqlite://",
) -> list[ClosedWindow]:
    """Feed the stream to ``monitors`` monitors sharing a store, each reading some partitions, in random
    batches and order; ``crashes`` times, a monitor is dropped and replaced by a new one that starts at
    its commit offsets (as a restarted process would)."""
    rng = random.Random(seed)
    parts = WindowParts(engine=open_store(store_url), topic=f"predictions-{monitors}-{crashes}-{seed}")
    settings = MonitorSettings(
        window=timedelta(microseconds=WINDOW_US), lateness=timedelta(microseconds=LATENESS_US), sample_size=50
    )
    owned = [list(range(PARTITIONS))[index::monitors] for index in range(monitors)]

    def new() -> Monitor:
        return Monitor(
            settings=settings, parts=parts, partitions=PARTITIONS, load_profile=lambda m, v: PROFILES[m]
        )

    running = [new() for _ in range(monitors)]
    position = dict.fromkeys(range(PARTITIONS), 0)
    committed = dict.fromkeys(range(PARTITIONS), 0)
    crash_at = sorted(rng.sample(range(1, 60), crashes))
    closed: list[ClosedWindow] = []
    step = 0
    while any(position[p] < len(partitions[p]) for p in range(PARTITIONS)):
        step += 1
        if crash_at and step == crash_at[0]:
            crash_at.pop(0)
            victim = rng.randrange(monitors)
            running[victim] = new()
            for p in owned[victim]:
                position[p] = committed[p]  # the records after the commit are read again
        index = rng.randrange(monitors)
        waiting = [p for p in owned[index] if position[p] < len(partitions[p])]
        if not waiting:
            continue
        batch = []
        for p in rng.sample(waiting, rng.randint(1, len(waiting))):
            take = rng.randint(1, 150)
            batch += partitions[p][position[p] : position[p] + take]
            position[p] = min(position[p] + take, len(partitions[p]))
        behind = [p for p in owned[index] if position[p] < len(partitions[p])]
        found, _ = running[index].add(batch, behind=behind, assigned=owned[index])
        closed += found
        opened = running[index].open_offsets()
        for p in owned[index]:
            committed[p] = min(position[p], opened.get(p, position[p]))
    for monitor in running:  # the merging monitor finds what the others completed last
        if monitor.merges:
            closed += monitor.merge_ready()
    return closed


def fingerprint(closed: list[ClosedWindow]) -> list[tuple[object, ...]]:
    return sorted(
        (
            item.report.model,
            item.report.window_start_us,
            repr(item.report),
            item.window.summary_table().to_pylist(),
        )
        for item in closed
    )


@pytest.mark.parametrize("seed", range(16))
def test_any_split_of_the_partitions_gives_one_monitors_reports(seed: int) -> None:
    partitions = stream(seed)
    alone = run(partitions, monitors=1, seed=seed)
    counts = {(item.report.model, item.report.window_start_us): item.report.events for item in alone}
    assert counts == expected_counts(partitions)
    for monitors, crashes in ((2, 0), (3, 0), (2, 2), (3, 3)):
        shared = run(partitions, monitors=monitors, seed=seed * 10 + monitors + crashes, crashes=crashes)
        assert fingerprint(shared) == fingerprint(alone), (monitors, crashes)


@pytest.mark.stack
@pytest.mark.parametrize("seed", range(3))
def test_monitors_sharing_a_postgresql_store_give_one_monitors_reports(
    seed: int, postgres_store: Callable[[], str]
) -> None:
    """The same, with the parts, marks and merged windows in PostgreSQL, as monitors on several hosts
    keep them."""
    partitions = stream(100 + seed)
    url = postgres_store()
    alone = run(partitions, monitors=1, seed=seed, store_url=url)
    counts = {(item.report.model, item.report.window_start_us): item.report.events for item in alone}
    assert counts == expected_counts(partitions)
    for monitors, crashes in ((2, 1), (3, 2)):
        shared = run(partitions, monitors=monitors, seed=seed + monitors, crashes=crashes, store_url=url)
        assert fingerprint(shared) == fingerprint(alone), (monitors, crashes)
