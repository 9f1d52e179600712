"""Performance with delayed labels, as a stream: predictions and labels of two partitions, labels on
time, before their prediction, too late, or never; the final report of each window equals scikit-learn's
metrics over a brute-force join of the raw records, whatever the batching, and with monitors that split
the partitions and crash."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from monitors.database import open_store
from monitors.drift.profile import ReferenceProfile
from monitors.events.batch import PredictionBatch
from monitors.runtime.parts import WindowParts
from monitors.runtime.performance import (
    LabelledBatch,
    PerformanceSettings,
    PerformanceTask,
    PerformanceTracker,
)

SECOND = 1_000_000
T0 = 1_780_000_000 * SECOND
WINDOW, LATENESS, DELAY = 60 * SECOND, 5 * SECOND, 120 * SECOND
PARTITIONS = 2
SETTINGS = PerformanceSettings(
    tasks={"fraud": PerformanceTask(task="binary", output="score")},
    window=timedelta(microseconds=WINDOW),
    label_delay=timedelta(microseconds=DELAY),
    min_labels=10,
)
REFERENCE_RNG = np.random.default_rng(99)
_labels = (REFERENCE_RNG.random(2000) < 0.3).astype(float)
PROFILE = ReferenceProfile.build(
    pd.DataFrame(
        {
            "amount": REFERENCE_RNG.normal(size=2000),
            "score": np.clip(0.2 + 0.5 * _labels + REFERENCE_RNG.normal(0, 0.2, 2000), 0, 1),
            "label": _labels,
        }
    ),
    model="fraud",
    version="1",
    prediction_column="score",
    label_column="label",
)

Record = tuple[str, dict[str, object], int]
"""("prediction" or "label", the event's data, its time in µs)."""


def stream(seed: int) -> dict[int, list[Record]]:
    """Per partition, records in order: predictions about every half second for 10 minutes, 80% labelled
    within 100 s, 5% of those before their prediction, 10% labelled 200 to 300 s later (after their window
    is final), 10% never; the model gets worse after 5 minutes. Then one tick an hour later."""
    rng = random.Random(seed)
    partitions: dict[int, list[tuple[int, int, Record]]] = {p: [] for p in range(PARTITIONS)}
    for index in range(2400):
        partition = rng.randrange(PARTITIONS)
        at = T0 + int(index * 0.25 * SECOND)
        truth = int(rng.random() < 0.3)
        quality = 0.5 if at - T0 < 300 * SECOND else 0.1
        score = min(1.0, max(0.0, 0.2 + quality * truth + rng.gauss(0, 0.2)))
        request = f"r{index}"
        prediction: Record = (
            "prediction",
            {"model": "fraud", "version": "1", "request_id": request, "features": {"amount": rng.random()},
             "outputs": {"score": score}},
            at,
        )  # fmt: skip
        partitions[partition].append((at, 1, prediction))
        roll = rng.random()
        label: Record = ("label", {"model": "fraud", "request_id": request, "label": truth}, 0)
        if roll < 0.04:
            partitions[partition].append((at, 0, (label[0], label[1], at)))  # just before its prediction
        elif roll < 0.8:
            later = at + int(rng.uniform(1, 100) * SECOND)
            partitions[partition].append((later, 2, (label[0], label[1], later)))
        elif roll < 0.9:
            later = at + int(rng.uniform(200, 300) * SECOND)
            partitions[partition].append((later, 2, (label[0], label[1], later)))
        if rng.random() < 0.1:  # another model's predictions, which no task judges
            other: Record = ("prediction", {**prediction[1], "model": "other", "request_id": f"o{index}"}, at)
            partitions[partition].append((at, 1, other))
    result = {}
    for partition, records in partitions.items():
        records.sort(key=lambda item: (item[0], item[1]))
        tick: Record = (
            "prediction",
            {
                "model": "fraud",
                "version": "1",
                "request_id": f"tick-{partition}",
                "features": {},
                "outputs": {},
            },
            T0 + 3600 * SECOND,
        )
        result[partition] = [record for _, _, record in records] + [tick]
    return result


def brute_force(partitions: dict[int, list[Record]]) -> dict[int, dict[str, float]]:
    """Per window start, scikit-learn's metrics over the predictions joined with their first label that
    came by the window's end plus the lateness and the delay; and the label coverage."""
    windows: dict[int, dict[str, list[float]]] = {}
    for records in partitions.values():
        predicted: dict[str, tuple[int, float]] = {}
        labelled: set[str] = set()
        waiting: dict[str, tuple[int, int]] = {}
        rows: dict[int, dict[str, list[float]]] = {}

        def judge(
            request: str,
            label: int,
            label_at: int,
            predicted: dict[str, tuple[int, float]] = predicted,
            labelled: set[str] = labelled,
            rows: dict[int, dict[str, list[float]]] = rows,
        ) -> None:
            start, score = predicted[request]
            if request in labelled or label_at > start + WINDOW + LATENESS + DELAY:
                return
            labelled.add(request)
            rows.setdefault(start, {"score": [], "label": [], "n": []})
            rows[start]["score"].append(score)
            rows[start]["label"].append(label)

        counts: dict[int, int] = {}
        for kind, data, at in records:
            if kind == "prediction" and data["model"] == "fraud" and data["outputs"]:
                start = at - at % WINDOW
                predicted[str(data["request_id"])] = (start, float(data["outputs"]["score"]))  # type: ignore[index]
                counts[start] = counts.get(start, 0) + 1
                if str(data["request_id"]) in waiting:
                    judge(str(data["request_id"]), *waiting.pop(str(data["request_id"])))
            elif kind == "label":
                request = str(data["request_id"])
                if request in predicted:
                    judge(request, int(data["label"]), at)  # type: ignore[arg-type]
                else:
                    waiting[request] = (int(data["label"]), at)  # type: ignore[arg-type]
        for start, count in counts.items():
            merged = windows.setdefault(start, {"score": [], "label": [], "n": [0]})
            merged["score"] += rows.get(start, {}).get("score", [])
            merged["label"] += rows.get(start, {}).get("label", [])
            merged["n"][0] += count
    expected = {}
    for start, merged in windows.items():
        labels = np.array(merged["label"])
        scores = np.array(merged["score"])
        predicted_class = (scores >= 0.5).astype(int)
        expected[start] = {
            "accuracy": sk.accuracy_score(labels, predicted_class),
            "f1": sk.f1_score(labels, predicted_class, zero_division=0),
            "log_loss": sk.log_loss(labels, scores, labels=[0, 1]),
            "roc_auc": sk.roc_auc_score(labels, scores),
            "label_coverage": len(labels) / merged["n"][0],
        }
    return expected


def batches(records: list[Record], partition: int, offset: int) -> tuple[PredictionBatch, LabelledBatch]:
    predictions, labels = PredictionBatch(partition=partition), LabelledBatch(partition=partition)
    for position, (kind, data, at) in enumerate(records):
        if kind == "prediction":
            predictions.append(dict(data), event_us=at, offset=offset + position, record=None)
        else:
            labels.append(
                model=str(data["model"]), request_id=str(data["request_id"]), label=data["label"], event_us=at
            )
    return predictions, labels


def run(partitions: dict[int, list[Record]], *, trackers: int, seed: int, crashes: int = 0) -> list:  # type: ignore[type-arg]
    rng = random.Random(seed)
    engine = open_store("sqlite://")
    stores = (
        WindowParts(engine=engine, topic=f"p/provisional-{seed}-{trackers}"),
        WindowParts(engine=engine, topic=f"p/final-{seed}-{trackers}"),
    )

    def new() -> PerformanceTracker:
        return PerformanceTracker(
            settings=SETTINGS, lateness=timedelta(microseconds=LATENESS), provisional=stores[0],
            final=stores[1], partitions=PARTITIONS, load_profile=lambda model, version: PROFILE,
        )  # fmt: skip

    running = [new() for _ in range(trackers)]
    owned = [list(range(PARTITIONS))[index::trackers] for index in range(trackers)]
    position = dict.fromkeys(range(PARTITIONS), 0)
    committed = dict.fromkeys(range(PARTITIONS), 0)
    crash_at = sorted(rng.sample(range(5, 80), crashes))
    reports = []
    step = 0
    while any(position[p] < len(partitions[p]) for p in range(PARTITIONS)):
        step += 1
        if crash_at and step == crash_at[0]:
            crash_at.pop(0)
            victim = rng.randrange(trackers)
            running[victim] = new()
            for p in owned[victim]:
                position[p] = committed[p]
        index = rng.randrange(trackers)
        predictions, labels = {}, {}
        for p in owned[index]:
            if position[p] >= len(partitions[p]):
                continue
            take = rng.randint(1, 200)
            chunk = partitions[p][position[p] : position[p] + take]
            predictions[p], labels[p] = batches(chunk, p, position[p])
            position[p] += len(chunk)
        behind = [p for p in owned[index] if position[p] < len(partitions[p])]
        reports += running[index].add(predictions, labels, behind=behind, assigned=owned[index])
        opened = running[index].open_offsets()
        for p in owned[index]:
            committed[p] = min(position[p], opened.get(p, position[p]))
    for tracker in running:
        if tracker.merges:
            reports += tracker.merge_ready()
    return reports


def finals(reports: list) -> dict[int, dict[str, float]]:  # type: ignore[type-arg]
    return {
        report.window_start_us: {score.metric: score.score for score in report.scores}
        for report in reports
        if report.stage == "final" and report.window_start_us < T0 + 3600 * SECOND
    }


@pytest.mark.parametrize("seed", range(4))
def test_final_performance_equals_scikit_learn_on_a_brute_force_join(seed: int) -> None:
    partitions = stream(seed)
    expected = brute_force(partitions)
    reports = run(partitions, trackers=1, seed=seed)
    got = finals(reports)
    assert got.keys() == expected.keys()
    for start, metrics in expected.items():
        for name, value in metrics.items():
            assert got[start][name] == pytest.approx(value, abs=2e-3 if name == "roc_auc" else 1e-9), (
                start,
                name,
            )
    # Every window was reported provisional first, at its close, with at most the final's labels.
    provisional = {report.window_start_us: report for report in reports if report.stage == "provisional"}
    assert set(expected) <= set(provisional)
    for start in expected:
        coverage = {score.metric: score.score for score in provisional[start].scores}["label_coverage"]
        assert coverage <= got[start]["label_coverage"]
    # The model got worse after five minutes: the final windows after it are flagged, the ones before not.
    flagged = {
        report.window_start_us: any(score.drift for score in report.scores)
        for report in reports
        if report.stage == "final" and report.window_start_us < T0 + 3600 * SECOND
    }
    assert not any(flag for start, flag in flagged.items() if start < T0 + 240 * SECOND)
    assert all(flag for start, flag in flagged.items() if start >= T0 + 300 * SECOND)


@pytest.mark.parametrize("seed", range(3))
def test_trackers_that_split_the_partitions_and_crash_report_what_one_reports(seed: int) -> None:
    partitions = stream(100 + seed)
    alone = finals(run(partitions, trackers=1, seed=seed))
    for trackers, crashes in ((2, 0), (2, 2)):
        shared = finals(run(partitions, trackers=trackers, seed=seed * 7 + crashes, crashes=crashes))
        assert shared == alone, (trackers, crashes)
