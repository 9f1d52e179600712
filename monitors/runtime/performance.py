"""Performance with delayed labels: predictions wait for their labels, per partition, and each window's
metrics are reported twice, provisional and final.

A label event (``io.sluice.label``) is keyed by its request id, as the prediction it judges, so both are in
one partition: the monitor that reads the partition joins them there. Each (model version, performance
window, partition) has a part: the window's predictions that wait (their request ids' 64-bit hashes and
the output to judge) and the sufficient statistics of those whose label came (``monitors.performance``).
A label before its prediction waits for it, up to ``label_capacity`` labels a partition.

- **Provisional** once the partition's stream time (the newest event time read there, predictions and
  labels alike) has passed the window's end by the lateness: the part's statistics so far are saved, and
  the monitor that reads partition 0 merges the window's parts once every partition has passed, and
  reports it with ``stage: provisional`` (no alert).
- **Final** once the stream time has passed the end by the lateness and the longest label delay: the
  part is saved for good and its waiting predictions dropped; the merged report (``stage: final``) goes
  through the alert rules, sinks and retraining policy like drift. A label that comes later finds no part:
  it is counted as late (while the window's keys are still remembered, one more label delay), else as
  unmatched.

**Durability.** Predictions wait in memory, and the engine commits offsets only below the oldest
prediction of a part not yet final: after a crash, the records since are read again, predictions and
labels, and every part that was not final is rebuilt as it was; a part saved before the crash skips its
replayed predictions. So the topic holds the waiting predictions; its retention must exceed the lateness
plus the label delay.

Each window's report compares its metrics with the same metrics of the reference's validation outputs
(``ReferenceProfile.predictions`` and ``labels``): a metric worse than the reference's by more than
``tolerance`` (relative), with at least ``min_labels`` labels, is flagged, when the window's labels show
it worse than that level beyond their sampling noise: a one-sided test at ``alpha`` (exact binomial for
accuracy, precision and recall; Hanley and McNeil's standard error for ROC AUC; metrics with no test here
go by the tolerance alone). So a small window's noise does not page anyone. Label coverage (labelled over
predictions) is reported beside them.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from monitors.drift.detector import FeatureScore, WindowReport
from monitors.drift.profile import ProfileError, ReferenceProfile
from monitors.drift.window import event_keys
from monitors.events.batch import PredictionBatch, Version
from monitors.performance.estimate import Calibration, histogram
from monitors.performance.stats import BINS, METRICS, Task, stats_for, stats_from_bytes
from monitors.runtime.parts import Part, PartitionMark, WindowParts, oldest_offsets
from offline_store.storage import StorageError

__all__ = ["LabelledBatch", "PerformanceSettings", "PerformanceTask", "PerformanceTracker"]

log = logging.getLogger(__name__)

_NEVER = -(2**62)
_ALWAYS = 2**62


@dataclass(frozen=True, kw_only=True)
class PerformanceTask:
    """How one model's outputs are judged against its labels."""

    task: Task
    """``binary``: the output is the probability of the positive class, a label is 1/true or 0/false;
    ``regression``: the output and the label are numbers."""
    output: str
    """The name of the output to judge, in the prediction event's ``outputs``."""
    threshold: float = 0.5
    """For a binary classifier: a probability at or above it predicts the positive class."""


@dataclass(frozen=True, kw_only=True)
class PerformanceSettings:
    tasks: Mapping[str, PerformanceTask]
    """Per model, how it is judged; models not named here get no performance windows."""
    window: timedelta = timedelta(hours=1)
    """Performance windows, by prediction time."""
    label_delay: timedelta = timedelta(hours=1)
    """How long after a window's end (and the lateness) its labels may come: it is final then."""
    tolerance: float = 0.1
    """How much worse than the reference a metric may be (relative) before it is flagged."""
    min_labels: int = 100
    """Fewer labels than this flag nothing: no evidence either way."""
    alpha: float = 0.01
    """Level of the test that the window's metric is worse than the tolerated level (see the module)."""
    label_capacity: int = 100_000
    """Labels waiting for their prediction, per partition: the oldest go first, and are counted."""
    alert_metrics: tuple[str, ...] | None = None
    """The metrics that are flagged, and so alert; the others are reported, with no threshold. By default
    ``accuracy`` and ``roc_auc`` for a binary classifier, ``mae`` and ``rmse`` for a regressor: metrics whose
    window-to-window noise a relative tolerance can stand (calibration error and log loss of a few hundred
    labels scatter far more than a tenth of the reference's)."""

    def alerting(self, task: Task) -> tuple[str, ...]:
        if self.alert_metrics is not None:
            return self.alert_metrics
        return ("accuracy", "roc_auc") if task == "binary" else ("mae", "rmse")

    def __post_init__(self) -> None:
        if self.window < timedelta(seconds=1):
            raise ValueError("the performance window must be at least one second")
        if self.label_delay < timedelta(0):
            raise ValueError("the label delay cannot be negative")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"the performance tolerance must be in [0, 1), not {self.tolerance}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"the performance alpha must be in (0, 1), not {self.alpha}")
        unknown = sorted(set(self.alert_metrics or ()) - set(METRICS))
        if unknown:
            raise ValueError(
                f"no performance metric {', '.join(unknown)}; the metrics are: {', '.join(sorted(METRICS))}"
            )


@dataclass
class LabelledBatch:
    """One partition's label events of a poll: model, the request id's hash, the label, its time."""

    partition: int
    models: list[str] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    times: list[int] = field(default_factory=list)

    def append(self, *, model: str, request_id: str, label: Any, event_us: int) -> None:
        self.models.append(model)
        self.keys.append(int(event_keys([request_id])[0]))
        self.labels.append(label)
        self.times.append(event_us)


@dataclass
class _Part:
    task: PerformanceTask
    first_offset: int
    predictions: int = 0
    provisional: bool = False
    """Whether its provisional statistics were saved."""
    keys: NDArray[np.uint64] = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    """The predictions' request-id hashes, sorted, with their outputs and labels (NaN until judged)."""
    outputs: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    labels: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    judged: NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=bool))
    _new: list[tuple[NDArray[np.uint64], NDArray[np.float64]]] = field(default_factory=list)

    def add(self, keys: NDArray[np.uint64], outputs: NDArray[np.float64]) -> None:
        self._new.append((keys, outputs))
        self.predictions += len(keys)

    def index(self) -> tuple[NDArray[np.uint64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """The sorted keys, their outputs, labels and whether each was judged: new predictions merged in."""
        if self._new:
            keys = np.concatenate([self.keys, *(keys for keys, _ in self._new)])
            outputs = np.concatenate([self.outputs, *(outputs for _, outputs in self._new)])
            fresh = len(keys) - len(self.judged)
            labels = np.concatenate([self.labels, np.full(fresh, np.nan)])
            judged = np.concatenate([self.judged, np.zeros(fresh, dtype=bool)])
            order = np.argsort(keys, kind="stable")
            self.keys, self.outputs = keys[order], outputs[order]
            self.labels, self.judged = labels[order], judged[order]
            self._new = []
        return self.keys, self.outputs, self.labels, self.judged

    def payload(self) -> bytes:
        """The part's statistics, summed in the order of its keys: the same however its predictions and
        labels were batched, or replayed after a crash."""
        _, outputs, labels, _ = self.index()
        usable = ~np.isnan(labels)
        stats = stats_for(self.task.task, threshold=self.task.threshold)
        stats.add(outputs[usable], labels[usable])  # type: ignore[arg-type]
        payload: dict[str, Any] = {
            "predictions": self.predictions,
            "labelled": int(usable.sum()),
            "stats": stats.to_bytes().hex(),
        }
        if self.task.task == "binary":  # every prediction's score, labelled or not: the estimate's input
            counts = histogram(outputs)
            present = np.flatnonzero(counts)
            payload["scores"] = [present.tolist(), counts[present].tolist()]
        return orjson.dumps(payload)


@dataclass
class _Partition:
    floors: dict[Version, int]
    stream_time_us: int | None = None
    waiting_labels: OrderedDict[tuple[str, int], tuple[Any, int]] = field(default_factory=OrderedDict)
    finished: list[tuple[int, str, NDArray[np.uint64]]] = field(default_factory=list)
    """(window end, model, keys) of parts made final lately: a label for them is late, not unmatched."""


class PerformanceTracker:
    """Joins labels to predictions per partition, and saves, merges and reports performance windows."""

    def __init__(
        self,
        *,
        settings: PerformanceSettings,
        lateness: timedelta,
        provisional: WindowParts,
        final: WindowParts,
        partitions: int | None,
        load_profile: Callable[[str, str], ReferenceProfile],
    ) -> None:
        self.settings = settings
        self.provisional = provisional
        self.final = final
        self._partitions = partitions
        self._load = load_profile
        self._window_us = int(settings.window.total_seconds() * 1_000_000)
        self._lateness_us = int(lateness.total_seconds() * 1_000_000)
        self._delay_us = int(settings.label_delay.total_seconds() * 1_000_000)
        self._read: dict[int, _Partition] = {}
        self._open: dict[tuple[Version, int, int], _Part] = {}
        self._assigned: set[int] = set()
        self._references: dict[Version, dict[str, float] | None] = {}
        self._calibrations: dict[Version, Calibration | None] = {}
        self.late_labels = 0
        self.unmatched_labels = 0
        self.invalid_labels = 0

    @property
    def merges(self) -> bool:
        return self._partitions is None or 0 in self._assigned

    def grow(self, partitions: int) -> None:
        if self._partitions is not None and partitions > self._partitions:
            self._partitions = partitions

    def forget(self, partitions: Collection[int]) -> None:
        for partition in partitions:
            self._read.pop(partition, None)
            self._assigned.discard(partition)
        for key in [key for key in self._open if key[2] in partitions]:
            del self._open[key]

    def release(self) -> None:
        marks = {partition: self._mark(partition, caught_up=False, final=True) for partition in self._read}
        self.final.save(parts=[], marks=marks)
        marks = {partition: self._mark(partition, caught_up=False, final=False) for partition in self._read}
        self.provisional.save(parts=[], marks=marks)

    def add(
        self,
        predictions: Mapping[int, PredictionBatch],
        labels: Mapping[int, LabelledBatch],
        *,
        behind: Collection[int] = (),
        assigned: Collection[int] = (),
    ) -> list[WindowReport]:
        """Add a poll's predictions (the events the drift monitor counted) and labels, per partition;
        returns the windows merged and reported (when this monitor merges)."""
        for partition in set(predictions) | set(labels):
            if partition not in self._read:
                self._resume(partition)
        for predicted in predictions.values():
            self._predictions(predicted)
        for labelled in labels.values():
            self._labels(labelled)
        self._assigned = set(assigned) if assigned else self._assigned | set(predictions) | set(labels)
        self._publish(behind=behind)
        return self.merge_ready() if self.merges else []

    def open_offsets(self) -> dict[int, int]:
        """Per partition, the smallest offset of a prediction in a part not final yet."""
        return oldest_offsets(self._open)

    def merge_ready(self) -> list[WindowReport]:
        """Merge and report the windows whose parts are all in: provisional, then final."""
        reports = []
        for parts, final in ((self.provisional, False), (self.final, True)):
            marks = parts.marks()
            partitions = range(self._partitions) if self._partitions is not None else sorted(marks)
            if not partitions or any(partition not in marks for partition in partitions):
                continue
            wait = self._lateness_us + (self._delay_us if final else 0)
            for key, start in parts.pending():
                hold = min(marks[partition].hold_us(key, lateness_us=wait) for partition in partitions)
                if start + self._window_us > hold:
                    continue
                merged = self._merge(parts, key, start, final=final)
                if merged is not None:
                    reports.append(merged)
        return reports

    # --- internals --------------------------------------------------------------------------------

    def _resume(self, partition: int) -> None:
        floors = {key: start + self._window_us for key, start in self.final.merged_until().items()}
        for (key, _), start in self.final.saved_until([partition]).items():
            floors[key] = max(floors.get(key, _NEVER), start + self._window_us)
        self._read[partition] = _Partition(floors=floors)

    def _predictions(self, batch: PredictionBatch) -> None:
        read = self._read[batch.partition]
        if batch.times:
            newest = max(batch.times)
            read.stream_time_us = newest if read.stream_time_us is None else max(read.stream_time_us, newest)
        for (model, version), positions in batch.versions.items():
            task = self.settings.tasks.get(model)
            if task is None:
                continue
            key = (model, version)
            floor = read.floors.get(key, _NEVER)
            by_window: dict[int, list[int]] = {}
            for position in positions:
                at = batch.times[position]
                start = at - at % self._window_us
                if start + self._window_us <= floor:
                    continue  # replayed: its window was final before
                by_window.setdefault(start, []).append(position)
            for start, chosen in by_window.items():
                data = [batch.data[position] for position in chosen]
                outputs = np.array(
                    [_number(event.get("outputs"), task.output) for event in data], dtype=np.float64
                )
                keys = event_keys([event["request_id"] for event in data])
                slot = (key, start, batch.partition)
                part = self._open.get(slot)
                if part is None:
                    part = self._open[slot] = _Part(task=task, first_offset=batch.offsets[chosen[0]])
                part.add(keys, outputs)
            self._match_waiting(batch.partition, model)

    def _labels(self, batch: LabelledBatch) -> None:
        read = self._read[batch.partition]
        if batch.times:
            newest = max(batch.times)
            read.stream_time_us = newest if read.stream_time_us is None else max(read.stream_time_us, newest)
        for model in dict.fromkeys(batch.models):
            if model not in self.settings.tasks:
                continue
            chosen = [index for index, name in enumerate(batch.models) if name == model]
            keys = np.array([batch.keys[index] for index in chosen], dtype=np.uint64)
            labels = [batch.labels[index] for index in chosen]
            times = np.array([batch.times[index] for index in chosen], dtype=np.int64)
            rest = self._apply(batch.partition, model, keys, labels, times)
            for index in rest:
                label_key = (model, int(keys[index]))
                if any(
                    finished_model == model and _contains(finished, keys[index])
                    for _, finished_model, finished in read.finished
                ):
                    self.late_labels += 1
                    continue
                read.waiting_labels[label_key] = (labels[index], batch.times[chosen[index]])
                read.waiting_labels.move_to_end(label_key)
                if len(read.waiting_labels) > self.settings.label_capacity:
                    read.waiting_labels.popitem(last=False)
                    self.unmatched_labels += 1

    def _apply(
        self,
        partition: int,
        model: str,
        keys: NDArray[np.uint64],
        labels: list[Any],
        times: NDArray[np.int64],
    ) -> list[int]:
        """Apply labels to the waiting predictions of the model's open parts in the partition; returns the
        positions of the labels no prediction waited for. A prediction is judged by its first label; a
        label that cannot be read, or whose prediction has no output to judge, is counted as invalid; one
        whose time is past its window's end, the lateness and the label delay is counted as late."""
        task = self.settings.tasks[model]
        left = np.ones(len(keys), dtype=bool)
        for (version, start, at), part in self._open.items():
            if at != partition or version[0] != model or not left.any():
                continue
            sorted_keys, outputs, judged_labels, judged = part.index()
            if not len(sorted_keys):
                continue
            positions = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
            found = left & (sorted_keys[positions] == keys) & ~judged[positions]
            if not found.any():
                continue
            deadline = start + self._window_us + self._lateness_us + self._delay_us
            late = found & (times > deadline)
            self.late_labels += int(late.sum())
            left[late] = False
            found &= ~late
            if not found.any():
                continue
            hits = np.flatnonzero(found)
            values = np.array([_label(labels[index], task.task) for index in hits.tolist()], dtype=np.float64)
            usable = ~np.isnan(values) & ~np.isnan(outputs[positions[hits]])
            self.invalid_labels += int((~usable).sum())
            judged_labels[positions[hits[usable]]] = values[usable]
            judged[positions[hits]] = True
            left[hits] = False
        return np.flatnonzero(left).tolist()

    def _match_waiting(self, partition: int, model: str) -> None:
        """Labels that came before their predictions, tried again now that predictions came."""
        read = self._read[partition]
        waiting = [(key, value) for key, value in read.waiting_labels.items() if key[0] == model]
        if not waiting:
            return
        keys = np.array([key[1] for key, _ in waiting], dtype=np.uint64)
        times = np.array([value[1] for _, value in waiting], dtype=np.int64)
        rest = set(self._apply(partition, model, keys, [value[0] for _, value in waiting], times))
        for index, (key, _) in enumerate(waiting):
            if index not in rest:
                del read.waiting_labels[key]

    def _publish(self, *, behind: Collection[int]) -> None:
        """Save the parts whose partition passed their end by the lateness (provisional) and by the label
        delay too (final, and forgotten), with every assigned partition's marks."""
        provisional: list[Part] = []
        final: list[Part] = []
        for slot in sorted(self._open):
            (model, version), start, partition = slot
            read = self._read[partition]
            part = self._open[slot]
            now = read.stream_time_us if read.stream_time_us is not None else _NEVER
            end = start + self._window_us
            if not part.provisional and end <= now - self._lateness_us:
                provisional.append(_part(model, version, start, partition, part))
                part.provisional = True
            if end <= now - self._lateness_us - self._delay_us:
                final.append(_part(model, version, start, partition, part))
                read.finished.append((end, model, part.index()[0]))
                del self._open[slot]
        for read in self._read.values():  # remember a final part's keys for one more label delay
            now = read.stream_time_us if read.stream_time_us is not None else _NEVER
            read.finished = [
                item for item in read.finished if item[0] > now - self._lateness_us - 2 * self._delay_us
            ]
        marks_final = {
            partition: self._mark(partition, caught_up=partition not in behind, final=True)
            for partition in self._assigned
        }
        marks_provisional = {
            partition: self._mark(partition, caught_up=partition not in behind, final=False)
            for partition in self._assigned
        }
        self.provisional.save(parts=provisional, marks=marks_provisional)
        self.final.save(parts=final, marks=marks_final)

    def _mark(self, partition: int, *, caught_up: bool, final: bool) -> PartitionMark:
        read = self._read.get(partition)
        opened: dict[Version, int] = {}
        for (key, start, at), part in self._open.items():
            if at == partition and (final or not part.provisional):
                opened[key] = min(opened.get(key, start), start)
        return PartitionMark(
            stream_time_us=read.stream_time_us if read is not None else None,
            caught_up=caught_up,
            latest={},
            open=opened,
        )

    def _merge(self, parts: WindowParts, key: Version, start: int, *, final: bool) -> WindowReport | None:
        model, version = key
        task = self.settings.tasks.get(model)
        stored = parts.parts(key, start)
        if task is None or not stored:
            parts.merge(key, start, window=None)
            return None
        stats = stats_for(task.task, threshold=task.threshold)
        predictions = labelled = 0
        scores = np.zeros(BINS, dtype=np.int64)
        for item in stored:  # in partition order: the same sums whoever merges
            payload = orjson.loads(item.window)
            predictions += payload["predictions"]
            labelled += payload["labelled"]
            stats.merge(stats_from_bytes(bytes.fromhex(payload["stats"])))  # type: ignore[arg-type]
            if "scores" in payload:
                bins, counts = payload["scores"]
                scores[np.asarray(bins, dtype=np.int64)] += np.asarray(counts, dtype=np.int64)
        parts.merge(key, start, window=None)
        reference = self._reference(key, task)
        alerting = self.settings.alerting(task.task)
        estimated = self._estimate(key, task, scores)
        scores_out: list[FeatureScore] = []
        for name, value in stats.metrics().items():
            expected = (
                reference.get(name, math.nan) if reference is not None and name in alerting else math.nan
            )
            better_up = METRICS[name].higher_is_better
            threshold = (
                expected * (1 - self.settings.tolerance)
                if better_up
                else expected * (1 + self.settings.tolerance)
            )
            worse = value < threshold if better_up else value > threshold
            flagged = (
                final
                and labelled >= self.settings.min_labels
                and not math.isnan(value)
                and not math.isnan(threshold)
                and bool(worse)
                and not stats.below(name, threshold) >= self.settings.alpha  # NaN: no test, worse is enough
            )
            scores_out.append(
                FeatureScore(
                    feature=task.output, metric=name, against="reference", score=value,
                    threshold=threshold, drift=flagged, kind="performance",
                )
            )  # fmt: skip
        for name, value in estimated.items():
            scores_out.append(
                FeatureScore(
                    feature=task.output, metric=f"estimated_{name}", against="reference", score=value,
                    threshold=math.nan, drift=False, kind="performance",
                )
            )  # fmt: skip
        coverage = labelled / predictions if predictions else math.nan
        scores_out.append(
            FeatureScore(
                feature=task.output, metric="label_coverage", against="reference", score=coverage,
                threshold=math.nan, drift=False, kind="performance",
            )
        )  # fmt: skip
        return WindowReport(
            model=model,
            version=version,
            window_start_us=start,
            window_end_us=start + self._window_us,
            events=predictions,
            scores=scores_out,
            stage="final" if final else "provisional",
        )

    def _estimate(self, key: Version, task: PerformanceTask, scores: NDArray[np.int64]) -> dict[str, float]:
        """The binary classifier's metrics expected from its scores alone (``monitors.performance.estimate``),
        calibrated on the reference's validation outcomes; none for a regressor or without them."""
        if task.task != "binary":
            return {}
        if key not in self._calibrations:
            try:
                profile = self._load(*key)
            except (ProfileError, StorageError):
                return {}
            usable = profile.predictions is not None and profile.labels is not None
            self._calibrations[key] = (
                Calibration.fit(profile.predictions, profile.labels)  # type: ignore[arg-type]
                if usable
                else None
            )
        calibration = self._calibrations[key]
        return calibration.estimate(scores, threshold=task.threshold) if calibration is not None else {}

    def _reference(self, key: Version, task: PerformanceTask) -> dict[str, float] | None:
        """The reference's metrics for the version, from its profile's validation outcomes."""
        if key not in self._references:
            try:
                profile = self._load(*key)
            except (ProfileError, StorageError) as error:
                log.warning("%s %s: no reference performance (%s)", *key, error)
                return None  # tried again next window
            if profile.predictions is None or profile.labels is None:
                self._references[key] = None
            else:
                stats = stats_for(task.task, threshold=task.threshold)
                stats.add(profile.predictions, profile.labels)  # type: ignore[arg-type]
                self._references[key] = stats.metrics()
        return self._references[key]


def _part(model: str, version: str, start: int, partition: int, part: _Part) -> Part:
    return Part(
        model=model, version=version, start_us=start, partition=partition, window=part.payload(), skew=None
    )


def _contains(sorted_keys: NDArray[np.uint64], key: np.uint64) -> bool:
    position = int(np.searchsorted(sorted_keys, key))
    return position < len(sorted_keys) and sorted_keys[position] == key


def _number(outputs: Any, name: str) -> float:
    """The output to judge as a number; NaN where it is missing or not a number."""
    value = outputs.get(name) if isinstance(outputs, dict) else None
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _label(value: Any, task: Task) -> float:
    """A label as the task reads it; NaN when it cannot be (counted as invalid)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not math.isnan(value):
        if task == "binary" and value not in (0, 1):
            return math.nan
        return float(value)
    if task == "binary" and isinstance(value, str) and value.lower() in ("0", "1", "true", "false"):
        return 1.0 if value.lower() in ("1", "true") else 0.0
    return math.nan
