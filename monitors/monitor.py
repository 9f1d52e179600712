"""The monitor's core: prediction events in, one drift report per closed window out.

Windows are tumbling, in event time, per (model, version). A model version's watermark is the latest
event time it has seen (the earliest such time over the partitions it arrives on) less the allowed
lateness; a window closes when the watermark passes its end,
and is then scored against the reference profile and against the version's previous window. An event
for a window that has already closed is late: it goes to the dead-letter topic with reason "late".

This module knows nothing about Kafka; ``monitors.worker`` feeds it records and commits offsets only
below the oldest record of a window still open, so a restart replays exactly the open windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from features.config import OfflineStoreConfig
from monitors.detector import DriftDetector, WindowReport
from monitors.events import PredictionEvent
from monitors.profile import ProfileError, ReferenceProfile
from monitors.skew import SkewSample, SkewSettings, skew_scores
from monitors.window import ServingWindow
from offline_store.storage import StorageError

__all__ = ["ClosedWindow", "Monitor", "MonitorSettings"]

log = logging.getLogger(__name__)

_PROFILE_RETRY_S = 30.0
"""How long a model version without a reference profile waits before the monitor looks again."""


@dataclass(frozen=True, kw_only=True)
class MonitorSettings:
    window: timedelta = timedelta(minutes=1)
    """Length of the tumbling event-time windows; down to a second."""
    lateness: timedelta = timedelta(seconds=10)
    """How far behind the latest event time an event may arrive and still count."""
    profiles: Path | str = Path(".sluice/profiles")
    """Where reference profiles are saved, ``<profiles>/<model>/<version>/``: a folder or a URI."""
    storage: OfflineStoreConfig = field(default_factory=OfflineStoreConfig)
    """How to reach ``profiles`` on object storage."""
    metrics: dict[str, str] = field(default_factory=dict)
    """Feature to metric name; unlisted features get Evidently's default for their type and size."""
    alpha: float = 0.05
    sample_size: int = 2000
    """Values a window keeps per numeric feature for KS and Wasserstein."""
    skew: SkewSettings | None = None
    """Compare a sample of served values with the offline store; None to skip."""

    def __post_init__(self) -> None:
        if self.window < timedelta(seconds=1):
            raise ValueError(f"the window must be at least one second, not {self.window.total_seconds()} s")
        if self.lateness < timedelta(0):
            raise ValueError("the lateness cannot be negative")


@dataclass(frozen=True)
class ClosedWindow:
    """A window that closed: its scores, and its summaries (for the report a person can look at)."""

    report: WindowReport
    window: ServingWindow


@dataclass
class _Version:
    detector: DriftDetector
    open: dict[int, ServingWindow] = field(default_factory=dict)
    """Window start (µs) to its window."""
    skew_samples: dict[int, SkewSample] = field(default_factory=dict)
    first_offsets: dict[int, dict[int, int]] = field(default_factory=dict)
    """Window start to the smallest offset per partition of its events."""
    previous: ServingWindow | None = None
    reported_until_us: int = -(2**62)
    """Windows ending at or before this were scored before a restart: their replayed events are skipped."""
    closed_until_us: int = -(2**62)
    """The watermark when the windows were last closed: an event of a window ending at or before it is
    late. Not the watermark of the moment, which moves within a batch as partitions are read one after
    the other: the events of a partition read later in the batch would be late against it."""
    latest_us: dict[int, int] = field(default_factory=dict)
    """The latest event time of this version seen per partition. The version's watermark is the earliest
    of them (and of the partitions still behind, ``Monitor.add``), less the lateness: events are in time
    order within a partition, not across partitions."""


class Monitor:
    """Routes events into windows per model version and scores the windows that close."""

    def __init__(
        self,
        *,
        settings: MonitorSettings,
        load_profile: Callable[[str, str], ReferenceProfile] | None = None,
        last_reported: Callable[[str, str], int | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``last_reported(model, version)`` gives the start of the version's last window already scored
        (before a restart), so that the events replayed for it are not scored again."""
        self.settings = settings
        self._last_reported = last_reported or (lambda model, version: None)
        self._load = load_profile or (
            lambda model, version: ReferenceProfile.load(
                settings.profiles, model=model, version=version, storage=settings.storage
            )
        )
        self._versions: dict[tuple[str, str], _Version] = {}
        self._missing: dict[tuple[str, str], float] = {}
        """When loading each version's profile last failed: it is tried again after a while."""
        self._clock = clock
        self._window_us = int(settings.window.total_seconds() * 1_000_000)
        self._lateness_us = int(settings.lateness.total_seconds() * 1_000_000)
        self._seen_us: dict[int, int] = {}
        """The latest event time seen per partition, of any model."""

    def add(
        self, events: list[tuple[PredictionEvent, int, int]], *, behind: Collection[int] = ()
    ) -> tuple[list[ClosedWindow], list[tuple[int, str]]]:
        """Add (event, partition, offset) triples; returns the windows that closed, scored, and
        (index, reason) for each event that was not counted (late, or no reference profile).

        ``behind`` are the partitions that have records not read yet, after these events. They hold
        every version's watermark at the latest event time read from them (at no time when none was):
        an unread record may be of any model. Without it, a monitor that starts on a backlog would close
        windows on the first partition it reads and reject the others' events as late.
        """
        rejected: list[tuple[int, str]] = []
        batches: dict[tuple[tuple[str, str], int], list[PredictionEvent]] = {}
        for index, (event, partition, offset) in enumerate(events):
            event_us = int(event.event_time.timestamp() * 1_000_000)
            self._seen_us[partition] = max(self._seen_us.get(partition, event_us), event_us)
            key = (event.model, event.version)
            state = self._version(key)
            if state is None:
                rejected.append((index, "no_profile"))
                continue
            start = event_us - event_us % self._window_us
            if start + self._window_us <= state.reported_until_us:
                continue  # replayed after a restart: its window was scored before it
            if start + self._window_us <= state.closed_until_us:
                rejected.append((index, "late"))  # its window has closed, or would have
                continue
            if start not in state.open:
                state.open[start] = ServingWindow(
                    profile=state.detector.profile,
                    start_us=start,
                    end_us=start + self._window_us,
                    sample_size=self.settings.sample_size,
                )
            if self.settings.skew is not None:
                state.skew_samples.setdefault(
                    start, SkewSample(capacity=self.settings.skew.sample_size, seed=start)
                ).add(event)
            offsets = state.first_offsets.setdefault(start, {})
            offsets[partition] = min(offsets.get(partition, offset), offset)
            batches.setdefault((key, start), []).append(event)
            state.latest_us[partition] = max(state.latest_us.get(partition, event_us), event_us)
        for (key, start), batch in batches.items():
            state = self._versions[key]
            names = list(state.detector.profile.features)
            state.open[start].update({name: [event.features.get(name) for event in batch] for name in names})
        # The partitions behind hold every watermark at the latest event time read from them.
        held_us = min((self._seen_us.get(partition, -(2**62)) for partition in behind), default=2**62)
        closed = []
        # Every version: a partition that caught up may release the windows of versions not in this batch.
        for key in sorted(self._versions):
            closed += self._close(key, held_us)
        return closed, rejected

    def open_offsets(self) -> dict[int, int]:
        """Per partition, the smallest offset of an event in a window that is still open."""
        result: dict[int, int] = {}
        for state in self._versions.values():
            for offsets in state.first_offsets.values():
                for partition, offset in offsets.items():
                    result[partition] = min(result.get(partition, offset), offset)
        return result

    def _version(self, key: tuple[str, str]) -> _Version | None:
        if key not in self._versions:
            failed_at = self._missing.get(key)
            if failed_at is not None and self._clock() - failed_at < _PROFILE_RETRY_S:
                return None
            try:
                profile = self._load(*key)
            except (ProfileError, StorageError) as error:  # missing, or its store is away: try later
                if failed_at is None:
                    log.warning("%s", error)
                self._missing[key] = self._clock()
                return None
            self._missing.pop(key, None)
            detector = DriftDetector(
                profile=profile, metrics=self.settings.metrics, alpha=self.settings.alpha
            )
            reported = self._last_reported(*key)
            self._versions[key] = _Version(
                detector=detector,
                reported_until_us=reported + self._window_us if reported is not None else -(2**62),
            )
        return self._versions[key]

    def _close(self, key: tuple[str, str], held_us: int) -> list[ClosedWindow]:
        state = self._versions[key]
        watermark = min(min(state.latest_us.values(), default=-(2**62)), held_us) - self._lateness_us
        state.closed_until_us = max(state.closed_until_us, watermark)
        closed = []
        for start in sorted(state.open):
            window = state.open[start]
            if window.end_us > watermark:
                break
            report = state.detector.evaluate(window, previous=state.previous)
            sample = state.skew_samples.pop(start, None)
            if sample is not None and self.settings.skew is not None:
                report = replace(
                    report, scores=report.scores + skew_scores(sample.events, self.settings.skew)
                )
            closed.append(ClosedWindow(report, window))
            state.previous = window
            del state.open[start]
            del state.first_offsets[start]
        return closed
