"""After a restart, the events replayed for windows that were already scored are not scored again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from monitors.drift.profile import ReferenceProfile
from monitors.events.cloudevents import PredictionEvent
from monitors.runtime.monitor import Monitor, MonitorSettings
from monitors.runtime.pipeline import last_window
from offline_store.storage import Location

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def event(second: float, index: int) -> PredictionEvent:
    return PredictionEvent(
        model="fraud",
        version="1",
        request_id=str(index),
        features={"amount": float(index)},
        event_time=T0 + timedelta(seconds=second),
    )


def test_replayed_events_of_a_scored_window_are_skipped_and_the_next_window_is_whole(tmp_path: Path) -> None:
    profile = ReferenceProfile.build(
        pd.DataFrame({"amount": np.random.default_rng(0).normal(size=500)}), model="fraud", version="1"
    )
    window_us = 10_000_000
    first_start = int(T0.timestamp() * 1_000_000)
    # Before the crash, the window [0 s, 10 s) was scored and written; [10 s, 20 s) was still open.
    monitor = Monitor(
        settings=MonitorSettings(window=timedelta(seconds=10), lateness=timedelta(0)),
        load_profile=lambda model, version: profile,
        last_reported=lambda model, version: first_start,
    )
    replayed = [event(second, index) for index, second in enumerate([1, 5, 9, 11, 15, 19, 25])]
    closed, rejected = monitor.add([(item, 0, offset) for offset, item in enumerate(replayed)])
    assert rejected == []  # skipped, not dead-lettered as late
    assert [(item.report.window_start_us - first_start, item.report.events) for item in closed] == [
        (window_us, 3)
    ]


def test_last_window_reads_the_saved_window_files(tmp_path: Path) -> None:
    folder = tmp_path / "model=fraud" / "version=1"
    folder.mkdir(parents=True)
    for start in (100, 300, 200):
        (folder / f"window-{start:020d}.parquet").touch()
        (folder / f"window-{start:020d}.summary.parquet").touch()
    assert last_window(Location.parse(str(tmp_path)), "fraud", "1") == 300
    assert last_window(Location.parse(str(tmp_path)), "fraud", "2") is None


def test_a_profile_saved_after_the_monitor_started_is_picked_up(tmp_path: Path) -> None:
    from monitors.drift.profile import ProfileError

    profile = ReferenceProfile.build(
        pd.DataFrame({"amount": np.random.default_rng(0).normal(size=500)}), model="fraud", version="1"
    )
    saved: list[ReferenceProfile] = []
    now = [0.0]

    def load(model: str, version: str) -> ReferenceProfile:
        if not saved:
            raise ProfileError("no reference profile yet")
        return saved[0]

    monitor = Monitor(
        settings=MonitorSettings(window=timedelta(seconds=10), lateness=timedelta(0)),
        load_profile=load,
        clock=lambda: now[0],
    )
    _, rejected = monitor.add([(event(1, 0), 0, 0)])
    assert rejected == [(0, "no_profile")]
    saved.append(profile)
    now[0] = 5.0  # too soon to look again
    assert monitor.add([(event(2, 1), 0, 1)])[1] == [(0, "no_profile")]
    now[0] = 31.0
    assert monitor.add([(event(3, 2), 0, 2)])[1] == []
