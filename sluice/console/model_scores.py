"""A model's window scores over time, as the monitor wrote them (``monitors.runtime.pipeline.ScoresSink``).

The scores folder holds ``model=<name>/version=<version>/window-<start>.parquet`` (drift, skew and
quality scores), ``...performance.parquet`` (final performance from the labels) and ``...summary.parquet``
(what the window's Evidently report is made from). The console reads the newest windows only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from offline_store.storage import Location

__all__ = ["ScoreSeries", "WindowRow", "history", "monitored"]


@dataclass(frozen=True, kw_only=True)
class WindowRow:
    window_start_us: int
    window_end_us: int
    events: int
    drift_share: float
    dataset_drift: bool
    has_report: bool


@dataclass(kw_only=True)
class ScoreSeries:
    """One score of one feature over windows: ``(window_start_us, score, drift)`` in window order."""

    kind: str
    feature: str
    metric: str
    against: str
    threshold: float | None
    points: list[tuple[int, float | None, bool]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.feature, self.metric, self.against)


def monitored(root: Location) -> dict[str, list[str]]:
    """Model name to the versions that have scored windows, from the folder names."""
    found: dict[str, set[str]] = {}
    for file in root.files(recursive=True):
        parts = file.path[len(root.path) :].strip("/").split("/")
        if len(parts) == 3 and parts[0].startswith("model=") and parts[1].startswith("version="):
            found.setdefault(parts[0][6:], set()).add(parts[1][8:])
    return {model: sorted(versions, key=_version_order) for model, versions in sorted(found.items())}


def history(
    root: Location, *, model: str, version: str, last: int = 120
) -> tuple[list[WindowRow], list[ScoreSeries]]:
    """The newest ``last`` windows of a model version, oldest first, and every score's series over them
    (drift, skew, quality; and the final performance windows)."""
    folder = root.child(f"model={model}", f"version={version}")
    names = {file.name: file for file in folder.files(recursive=False)}
    starts = sorted(
        {int(name[7:27]) for name in names if name.startswith("window-") and name.endswith(".parquet")}
    )[-last:]
    windows: list[WindowRow] = []
    series: dict[tuple[str, str, str, str], ScoreSeries] = {}
    for start in starts:
        stem = f"window-{start:020d}"
        for name in (f"{stem}.parquet", f"{stem}.performance.parquet"):
            if name not in names:
                continue
            rows = names[name].read_parquet().to_pylist()
            if name == f"{stem}.parquet" and rows:
                windows.append(
                    WindowRow(
                        window_start_us=start,
                        window_end_us=rows[0]["window_end_us"],
                        events=rows[0]["events"],
                        drift_share=rows[0]["drift_share"],
                        dataset_drift=bool(rows[0]["dataset_drift"]),
                        has_report=f"{stem}.summary.parquet" in names,
                    )
                )
            for row in rows:
                key = (row["kind"], row["feature"], row["metric"], row["against"])
                if key not in series:
                    threshold = row["threshold"]
                    series[key] = ScoreSeries(
                        kind=row["kind"],
                        feature=row["feature"],
                        metric=row["metric"],
                        against=row["against"],
                        threshold=None if threshold is None or math.isnan(threshold) else float(threshold),
                    )
                score = row["score"]
                finite = score is not None and math.isfinite(score)
                series[key].points.append((start, float(score) if finite else None, bool(row["drift"])))
    ordered = sorted(series.values(), key=lambda item: (_KIND_ORDER.get(item.kind, 9), item.key))
    return windows, ordered


_KIND_ORDER = {"drift": 0, "skew": 1, "quality": 2, "performance": 3}


def _version_order(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
