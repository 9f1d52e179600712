"""The monitor's core: prediction events in, one drift report per closed window out.

Windows are tumbling, in event time, per (model, version), and are built per partition of the
predictions topic: one part per (version, window, partition). An event whose window ended at least the
lateness before the latest event time of its version read from its partition is late (it goes to the
dead-letter topic with reason "late"), and a part is saved (``monitors.runtime.parts``) once that time has
passed its window's end by the lateness, with the partition's mark. The
monitor that reads partition 0 merges a window once every partition's mark has passed it
(``PartitionMark.hold_us``), and scores it against the reference profile and the version's previous
window. Lateness is decided per partition, from that partition's records alone, and the parts merge in
partition order: one monitor or several, the reports are the same, bit for bit.

This module knows nothing about Kafka; ``monitors.runtime.pipeline`` feeds it records and commits offsets only
below the oldest record of a part not saved yet, so a restart replays exactly the open parts. It needs
no other state: every event before the committed offset is in a saved part or was late, so skipping
the events of the windows already saved decides every replayed event as it was decided before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from features.config import OfflineStoreConfig
from monitors.drift.detector import DriftDetector, WindowReport
from monitors.drift.profile import ProfileError, ReferenceProfile
from monitors.drift.quality import quality_scores
from monitors.drift.skew import SkewSample, SkewSettings, skew_scores
from monitors.drift.window import ServingWindow, event_keys
from monitors.events.batch import PredictionBatch, Version
from monitors.events.cloudevents import PredictionEvent
from monitors.runtime.parts import Part, PartitionMark, WindowParts, oldest_offsets
from monitors.runtime.performance import PerformanceSettings
from offline_store.storage import StorageError

__all__ = ["ClosedWindow", "Failure", "Monitor", "MonitorSettings"]

log = logging.getLogger(__name__)

_PROFILE_RETRY_S = 30.0
"""How long a model version without a reference profile waits before the monitor looks again."""
_NEVER = -(2**62)


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
    """The level of the drift tests, shared over a window's features (``monitors.drift.detector``)."""
    quality_alpha: float = 0.01
    """The chance that a window of data like the reference raises a false data-quality flag
    (``monitors.drift.quality``); 0 turns the quality checks off."""
    sample_size: int = 2000
    """Values a window keeps per numeric feature for KS and Wasserstein."""
    skew: SkewSettings | None = None
    """Compare a sample of served values with the offline store; None to skip."""
    performance: PerformanceSettings | None = None
    """Performance windows from delayed labels, per model (``monitors.runtime.performance``); None to skip."""
    join_capacity: int = 100_000
    """Predictions held in memory to be joined with a later label for ``<topic>.labelled`` (and as many
    labels that came first); the oldest go first, counted. The monitor's memory grows until they are
    held: each costs about 0.3 KiB plus its JSON event."""

    def __post_init__(self) -> None:
        if self.window < timedelta(seconds=1):
            raise ValueError(f"the window must be at least one second, not {self.window.total_seconds()} s")
        if self.lateness < timedelta(0):
            raise ValueError("the lateness cannot be negative")
        if self.join_capacity < 1:
            raise ValueError(f"the join capacity must be at least 1, not {self.join_capacity}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, not {self.alpha}")
        if not 0 <= self.quality_alpha < 1:
            raise ValueError(
                f"the quality checks' alpha must be at least 0 and under 1, not {self.quality_alpha}"
            )


@dataclass(frozen=True, kw_only=True)
class Failure:
    """Something about one model version the monitor could not do; the other versions go on."""

    model: str
    version: str
    stage: str
    """``scoring``: a window could not be merged and scored (its parts are dropped, the next window goes
    on); ``config``: a setting does not fit the version's profile (the version goes on without it)."""
    error: str
    window_start_us: int | None = None
    window_end_us: int | None = None


@dataclass(frozen=True)
class ClosedWindow:
    """A window that closed: its scores, and its summaries (for the report a person can look at); a
    performance window has none."""

    report: WindowReport
    window: ServingWindow | None = None


@dataclass
class _Version:
    detector: DriftDetector
    floor_us: int
    """Windows ending at or before this were scored before a restart (``last_reported``)."""
    previous: ServingWindow | None = None
    """The version's last merged window (the merging monitor's), which the next one is compared with."""


@dataclass
class _Part:
    """One partition's share of a window, while it is open."""

    window: ServingWindow
    skew: SkewSample | None
    first_offset: int


@dataclass
class _Partition:
    floors: dict[Version, int]
    """Per version, the end of the newest window whose part this partition saved or that was merged
    before the partition was (re)assigned here: its replayed events are skipped."""
    stream_time_us: int | None = None
    """The latest event time read from the partition, of any model."""
    latest: dict[Version, int] = field(default_factory=dict)
    """Per version, its latest event time read from the partition."""


class Monitor:
    """Routes events into per-partition window parts, saves them, and merges and scores the windows
    whose parts are all in."""

    def __init__(
        self,
        *,
        settings: MonitorSettings,
        parts: WindowParts | None = None,
        partitions: int | None = None,
        load_profile: Callable[[str, str], ReferenceProfile] | None = None,
        last_reported: Callable[[str, str], int | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``parts`` is the store the monitors of the topic share (by default, one in memory: a monitor
        alone); ``partitions``, the topic's partition count (by default, the partitions with a mark).
        ``last_reported(model, version)`` gives the start of the version's last window scored before a
        restart (by the release before window parts), so that the events replayed for it are skipped."""
        if parts is None:
            from monitors.database import open_store

            parts = WindowParts(engine=open_store("sqlite://"), topic="predictions")
        self.settings = settings
        self.parts = parts
        self._partitions = partitions
        self._last_reported = last_reported or (lambda model, version: None)
        self.load_profile = load_profile or (
            lambda model, version: ReferenceProfile.load(
                settings.profiles, model=model, version=version, storage=settings.storage
            )
        )
        self._versions: dict[Version, _Version] = {}
        self._missing: dict[Version, float] = {}
        """When loading each version's profile last failed: it is tried again after a while."""
        self._clock = clock
        self._window_us = int(settings.window.total_seconds() * 1_000_000)
        self._lateness_us = int(settings.lateness.total_seconds() * 1_000_000)
        self._read: dict[int, _Partition] = {}
        """The partitions this monitor reads, with their stream time."""
        self._open: dict[tuple[Version, int, int], _Part] = {}
        """(version, window start, partition) to the part still open."""
        self._assigned: set[int] = set()
        self._failures: list[Failure] = []

    @property
    def reading(self) -> frozenset[int]:
        """The partitions this monitor has resumed reading."""
        return frozenset(self._read)

    @property
    def merges(self) -> bool:
        """Whether this monitor merges the windows: it reads partition 0, or it is the only one."""
        return self._partitions is None or 0 in self._assigned

    def grow(self, partitions: int) -> None:
        """The topic now has ``partitions`` partitions (Kafka only adds them): windows wait for the new
        ones' marks too, from now on."""
        if self._partitions is not None and partitions > self._partitions:
            log.info("the topic has %d partitions now (was %d)", partitions, self._partitions)
            self._partitions = partitions

    def resume(self, partition: int) -> None:
        """Start reading ``partition`` (at its committed offset), skipping the windows whose part was
        saved, or that were merged, before."""
        floors = {key: start + self._window_us for key, start in self.parts.merged_until().items()}
        for (key, _), start in self.parts.saved_until([partition]).items():
            floors[key] = max(floors.get(key, _NEVER), start + self._window_us)
        self._read[partition] = _Partition(floors=floors)

    def forget(self, partitions: Collection[int]) -> None:
        """Drop what this monitor held of partitions it no longer reads (revoked): their open parts are
        rebuilt by the monitor that reads them next, from the committed offsets."""
        for partition in partitions:
            self._read.pop(partition, None)
            self._assigned.discard(partition)
        for key in [key for key in self._open if key[2] in partitions]:
            del self._open[key]

    def release(self) -> None:
        """At a clean stop: mark this monitor's partitions as not caught up, so that no window closes
        without them until another monitor reads them."""
        marks = {partition: self._mark(partition, caught_up=False) for partition in self._read}
        self.parts.save(parts=[], marks=marks)

    def add(
        self,
        events: list[tuple[PredictionEvent, int, int]],
        *,
        behind: Collection[int] = (),
        assigned: Collection[int] = (),
    ) -> tuple[list[ClosedWindow], list[tuple[int, str]]]:
        """``add_batches`` for (event, partition, offset) triples, in offset order per partition; the
        rejections are (index of the event, reason), in the order of the events."""
        closed, rejected = self.add_batches(
            PredictionBatch.of_events(events), behind=behind, assigned=assigned
        )
        return closed, sorted((index, reason) for index, reason, _ in rejected)

    def add_batches(
        self,
        batches: Mapping[int, PredictionBatch],
        *,
        behind: Collection[int] = (),
        assigned: Collection[int] = (),
    ) -> tuple[list[ClosedWindow], list[tuple[Any, str, Version]]]:
        """Add each partition's batch of events; returns the windows that closed, scored (when this
        monitor merges), and (record, reason, model version) for each event that was not counted (late,
        or no reference profile).

        ``assigned`` are the partitions this monitor reads (by default, those of the batches);
        ``behind``, those with records not read yet.
        """
        rejected: list[tuple[Any, str, Version]] = []
        merged = {key: start + self._window_us for key, start in self.parts.merged_until().items()}
        for partition, batch in batches.items():
            if not len(batch):
                continue
            if partition not in self._read:
                self.resume(partition)
            read = self._read[partition]
            times = np.asarray(batch.times, dtype=np.int64)
            newest = int(times.max())
            if read.stream_time_us is None or newest > read.stream_time_us:
                read.stream_time_us = newest
            for key, positions in batch.versions.items():
                state = self._version(key)
                if state is None:
                    rejected += [(batch.records[index], "no_profile", key) for index in positions]
                    continue
                self._route(batch, key, np.asarray(positions, dtype=np.int64), times, state, merged, rejected)
        if assigned:
            self._assigned = set(assigned)
        else:
            self._assigned |= {partition for partition, batch in batches.items() if len(batch)} | set(behind)
        self.parts.save(parts=self._close_parts(), marks=self._marks(behind=behind))
        closed = self.merge_ready() if self.merges else []
        return closed, rejected

    def _route(
        self,
        batch: PredictionBatch,
        key: Version,
        positions: NDArray[np.int64],
        times: NDArray[np.int64],
        state: _Version,
        merged: Mapping[Version, int],
        rejected: list[tuple[Any, str, Version]],
    ) -> None:
        """Put one version's events of a partition's batch into their windows' parts. An event of a window
        whose part was saved before a restart is skipped (replayed); one whose window ended the lateness
        before the latest time of the version read from the partition before it, or that merged, is late."""
        partition = batch.partition
        read = self._read[partition]
        at = times[positions]
        starts = at - at % self._window_us
        ends = starts + self._window_us
        fresh = ends > max(state.floor_us, read.floors.get(key, _NEVER))
        if not fresh.all():
            positions, at, starts, ends = positions[fresh], at[fresh], starts[fresh], ends[fresh]
        if not len(positions):
            return
        running = np.maximum.accumulate(np.concatenate(([read.latest.get(key, _NEVER)], at)))
        read.latest[key] = int(running[-1])
        late = (ends <= running[:-1] - self._lateness_us) | (ends <= merged.get(key, _NEVER))
        if late.any():
            rejected += [(batch.records[index], "late", key) for index in positions[late].tolist()]
            positions, starts = positions[~late], starts[~late]
        windows = np.unique(starts).tolist()
        for start in windows:
            chosen = positions if len(windows) == 1 else positions[starts == start]
            slot = (key, start, partition)
            part = self._open.get(slot)
            if part is None:
                part = self._open[slot] = _Part(
                    window=ServingWindow(
                        profile=state.detector.profile,
                        start_us=start,
                        end_us=start + self._window_us,
                        sample_size=self.settings.sample_size,
                    ),
                    skew=SkewSample(capacity=self.settings.skew.sample_size) if self.settings.skew else None,
                    first_offset=batch.offsets[int(chosen[0])],
                )
            data = [batch.data[index] for index in chosen.tolist()]
            keys = event_keys([event["request_id"] for event in data])
            part.window.update_rows([event["features"] for event in data], keys=keys)
            if part.skew is not None:
                part.skew.add(data, keys)

    def open_offsets(self) -> dict[int, int]:
        """Per partition, the smallest offset of an event in a part that is still open."""
        return oldest_offsets(self._open)

    def merge_ready(self) -> list[ClosedWindow]:
        """Merge and score every window whose parts are all saved, oldest first."""
        marks = self.parts.marks()
        partitions = range(self._partitions) if self._partitions is not None else sorted(marks)
        if not partitions or any(partition not in marks for partition in partitions):
            return []
        closed = []
        for key, start in self.parts.pending():
            hold = min(
                marks[partition].hold_us(key, lateness_us=self._lateness_us) for partition in partitions
            )
            if start + self._window_us > hold:
                continue
            state = self._version(key)
            if state is None:
                continue  # its profile cannot be read now: the window waits
            try:
                closed.append(self._merge(key, start, state))
            except Exception as error:  # one version's window: the rest go on, and this one is said
                log.exception("%s %s: the window from %d µs could not be scored", *key, start)
                reason = f"{type(error).__name__}: {error}"
                self._failures.append(
                    Failure(
                        model=key[0], version=key[1], stage="scoring", error=reason,
                        window_start_us=start, window_end_us=start + self._window_us,
                    )
                )  # fmt: skip
                self.parts.merge(key, start, window=None)
        return closed

    def take_failures(self) -> list[Failure]:
        """What failed since the last call (``Failure``), for the pipeline to log, count and alert."""
        failures, self._failures = self._failures, []
        return failures

    def _merge(self, key: Version, start: int, state: _Version) -> ClosedWindow:
        profile = state.detector.profile
        parts = self.parts.parts(key, start)
        window = ServingWindow.merged(
            [ServingWindow.from_bytes(part.window, profile=profile) for part in parts]
        )
        previous = state.previous
        if previous is None:
            last = self.parts.last_merged(key)
            if last is not None and last[0] < start:
                previous = ServingWindow.from_bytes(last[1], profile=profile)
        report = state.detector.evaluate(window, previous=previous)
        if self.settings.quality_alpha > 0:
            quality = quality_scores(profile, window, alpha=self.settings.quality_alpha)
            report = replace(report, scores=report.scores + quality)
        if self.settings.skew is not None:
            samples = [
                SkewSample.from_bytes(part.skew, capacity=self.settings.skew.sample_size)
                for part in parts
                if part.skew is not None
            ]
            if samples:
                sample = SkewSample.merged(samples)
                report = replace(
                    report, scores=report.scores + skew_scores(sample.events, self.settings.skew)
                )
        self.parts.merge(key, start, window=window.to_bytes())
        state.previous = window
        return ClosedWindow(report, window)

    def _close_parts(self) -> list[Part]:
        """The open parts whose version's latest event time in their partition has passed their end by
        the lateness, as parts to save; they are no longer open."""
        saved = []
        for slot in sorted(self._open):
            (model, version), start, partition = slot
            read = self._read[partition]
            if start + self._window_us > read.latest.get((model, version), _NEVER) - self._lateness_us:
                continue
            part = self._open.pop(slot)
            saved.append(
                Part(
                    model=model,
                    version=version,
                    start_us=start,
                    partition=partition,
                    window=part.window.to_bytes(),
                    skew=part.skew.to_bytes() if part.skew is not None else None,
                )
            )
        return saved

    def _marks(self, *, behind: Collection[int]) -> dict[int, PartitionMark]:
        stored = self.parts.marks() if any(p not in self._read for p in self._assigned) else {}
        return {
            partition: self._mark(partition, caught_up=partition not in behind, stored=stored.get(partition))
            for partition in self._assigned
        }

    def _mark(self, partition: int, *, caught_up: bool, stored: PartitionMark | None = None) -> PartitionMark:
        """The partition's mark; for one assigned here but not read yet, the one saved before (by the
        monitor that read it then), with this monitor's view of whether it is caught up."""
        read = self._read.get(partition)
        if read is None:
            return PartitionMark(
                stream_time_us=stored.stream_time_us if stored is not None else None,
                caught_up=caught_up,
                latest=stored.latest if stored is not None else {},
                open={},
            )
        opened: dict[Version, int] = {}
        for key, start, at in self._open:
            if at == partition:
                opened[key] = min(opened.get(key, start), start)
        return PartitionMark(
            stream_time_us=read.stream_time_us,
            caught_up=caught_up,
            latest=dict(read.latest),
            open=opened,
        )

    def _version(self, key: Version) -> _Version | None:
        if key not in self._versions:
            failed_at = self._missing.get(key)
            if failed_at is not None and self._clock() - failed_at < _PROFILE_RETRY_S:
                return None
            try:
                profile = self.load_profile(*key)
            except (ProfileError, StorageError) as error:  # missing, or its store is away: try later
                if failed_at is None:
                    log.warning("%s", error)
                self._missing[key] = self._clock()
                return None
            self._missing.pop(key, None)
            usable, problems = DriftDetector.applicable(profile, self.settings.metrics)
            for problem in problems:
                log.error("%s %s: %s; scored with the default metric instead", *key, problem)
                self._failures.append(Failure(model=key[0], version=key[1], stage="config", error=problem))
            detector = DriftDetector(profile=profile, metrics=usable, alpha=self.settings.alpha)
            reported = self._last_reported(*key)
            self._versions[key] = _Version(
                detector=detector,
                floor_us=reported + self._window_us if reported is not None else _NEVER,
            )
        return self._versions[key]
