"""The monitor's watermark over several partitions: a backlog read one partition at a time loses nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitors.drift.profile import ReferenceProfile
from monitors.events.cloudevents import PredictionEvent
from monitors.runtime.monitor import Monitor, MonitorSettings

T0 = datetime(2026, 5, 1, tzinfo=UTC)
PROFILE = ReferenceProfile.build(
    pd.DataFrame({"amount": np.random.default_rng(0).normal(size=500)}), model="fraud", version="1"
)


def monitor() -> Monitor:
    return Monitor(
        settings=MonitorSettings(window=timedelta(seconds=10), lateness=timedelta(0)),
        load_profile=lambda model, version: PROFILE,
    )


def backlog(partition: int, seconds: range) -> list[tuple[PredictionEvent, int, int]]:
    """One event a second on a partition, in time order, at consecutive offsets."""
    return [
        (
            PredictionEvent(
                model="fraud",
                version="1",
                request_id=f"{partition}-{second}",
                features={"amount": float(second)},
                event_time=T0 + timedelta(seconds=second),
            ),
            partition,
            offset,
        )
        for offset, second in enumerate(seconds)
    ]


def counts(closed: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    start = int(T0.timestamp() * 1_000_000)
    return [((item.report.window_start_us - start) // 1_000_000, item.report.events) for item in closed]


def test_partitions_read_one_after_another_in_one_batch_are_not_late() -> None:
    events = backlog(0, range(0, 35)) + backlog(1, range(0, 35)) + backlog(2, range(0, 35))
    closed, rejected = monitor().add(events)
    assert rejected == []
    assert counts(closed) == [(0, 30), (10, 30), (20, 30)]  # [30 s, 40 s) is still open


def test_partitions_behind_hold_the_windows_until_they_are_read() -> None:
    watcher = monitor()
    closed, rejected = watcher.add(backlog(0, range(0, 35)), behind=[1, 2])
    assert (closed, rejected) == ([], [])  # partitions 1 and 2 may still hold events of any window
    closed, rejected = watcher.add(backlog(1, range(0, 35)), behind=[2])
    assert (closed, rejected) == ([], [])
    closed, rejected = watcher.add(backlog(2, range(0, 35)), behind=[])
    assert rejected == []
    assert counts(closed) == [(0, 30), (10, 30), (20, 30)]


def test_a_partition_behind_releases_the_windows_its_read_events_have_passed() -> None:
    watcher = monitor()
    watcher.add(backlog(0, range(0, 35)) + backlog(1, range(0, 35)), behind=[2])
    closed, _ = watcher.add(backlog(2, range(0, 15)), behind=[2])
    assert counts(closed) == [(0, 30)]  # partition 2 has been read up to 14 s


@pytest.mark.parametrize("behind", [[], [1]])
def test_an_event_of_a_window_that_closed_is_late(behind: list[int]) -> None:
    watcher = monitor()
    closed, _ = watcher.add(backlog(0, range(0, 25)) + backlog(1, range(0, 25)))
    assert counts(closed) == [(0, 20), (10, 20)]
    _, rejected = watcher.add(backlog(1, range(5, 6)), behind=behind)
    assert rejected == [(0, "late")]


def test_partitions_added_to_the_topic_hold_the_windows_until_they_are_read() -> None:
    # A topic of two partitions, read by one monitor; then a third partition is added (Kafka only adds).
    watcher = Monitor(
        settings=MonitorSettings(window=timedelta(seconds=10), lateness=timedelta(0)),
        partitions=2,
        load_profile=lambda model, version: PROFILE,
    )
    closed, _ = watcher.add(backlog(0, range(0, 8)) + backlog(1, range(0, 8)), assigned=[0, 1])
    assert counts(closed) == []
    watcher.grow(3)
    # Partitions 0 and 1 are past window [0, 10), but the new partition 2 has no mark yet: it waits.
    closed, _ = watcher.add(
        [(event, partition, offset + 8) for event, partition, offset in backlog(0, range(8, 25))]
        + [(event, partition, offset + 8) for event, partition, offset in backlog(1, range(8, 25))],
        assigned=[0, 1, 2],
        behind=[2],
    )
    assert counts(closed) == []
    # Partition 2's events of the first two windows count in them.
    closed, rejected = watcher.add(backlog(2, range(0, 25)), assigned=[0, 1, 2])
    assert rejected == []
    assert counts(closed) == [(0, 30), (10, 30)]
    watcher.grow(2)  # a smaller count is not news: partitions are never removed
    assert watcher.merge_ready() == []
