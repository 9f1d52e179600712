"""``sluice report``: Evidently's HTML drift report for one closed window, for people who want to look.

A window keeps summaries, not its events: a uniform sample per numeric feature and counts per category
(``ServingWindow.summary_table``, saved next to the window's scores). The report compares those with the
reference profile's sample and counts, so what Evidently shows is computed from the same data as the
monitor's scores; categories are expanded from their counts, scaled down to at most ``max_rows``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from monitors.profile import OTHER, ReferenceProfile

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "ReportError",
    "drift_report_html",
    "report_link",
    "report_path",
    "window_frames",
    "window_summary_path",
]


class ReportError(LookupError):
    """No such window; the message lists what there is."""


def window_summary_path(scores_root: Path, *, model: str, version: str, window_start_us: int | None) -> Path:
    """The saved summary of a window (the latest one when ``window_start_us`` is None)."""
    folder = scores_root / f"model={model}" / f"version={version}"
    summaries = sorted(folder.glob("window-*.summary.parquet"))
    if not summaries:
        raise ReportError(f"no closed windows of model {model!r} version {version!r} under {scores_root}")
    if window_start_us is None:
        return summaries[-1]
    wanted = folder / f"window-{window_start_us:020d}.summary.parquet"
    if wanted not in summaries:
        starts = ", ".join(path.name[7:27].lstrip("0") or "0" for path in summaries[-5:])
        raise ReportError(f"no window starting at {window_start_us} µs; the latest start at: {starts}")
    return wanted


def report_path(reports_root: Path, *, model: str, version: str, window_start_us: int) -> Path:
    """Where the HTML report of a window is written when one of its alerts fires."""
    return reports_root / model / version / f"window-{window_start_us:020d}.html"


def report_link(
    reports_root: Path, base_url: str | None, *, model: str, version: str, window_start_us: int
) -> str:
    """The link an alert carries: under ``base_url`` when the reports are served, else a file URL.

    >>> report_link(Path("/srv/reports"), "https://reports.example", model="m", version="1",
    ...             window_start_us=5)
    'https://reports.example/m/1/window-00000000000000000005.html'
    """
    path = report_path(reports_root, model=model, version=version, window_start_us=window_start_us)
    if base_url:
        return f"{base_url.rstrip('/')}/{path.relative_to(reports_root).as_posix()}"
    return path.resolve().as_uri()


def window_frames(
    profile: ReferenceProfile, summary: pa.Table, *, max_rows: int = 10_000
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current) DataFrames with one column per feature, shorter columns padded with nulls."""
    import pandas as pd

    reference: dict[str, list[object]] = {}
    current: dict[str, list[object]] = {}
    rows = summary.to_pydict()
    for name, feature in profile.features.items():
        picked = [index for index, value in enumerate(rows["feature"]) if value == name]
        if feature.kind == "numeric":
            reference[name] = feature.sample.tolist()
            current[name] = [rows["value"][index] for index in picked]
        else:
            labels = [*feature.vocabulary, OTHER]
            reference[name] = _expand(labels, feature.counts.tolist(), max_rows)
            current[name] = _expand(
                [rows["category"][index] for index in picked],
                [rows["count"][index] for index in picked],
                max_rows,
            )
    return _padded(reference, pd), _padded(current, pd)


def drift_report_html(profile: ReferenceProfile, summary: pa.Table) -> str:
    """Evidently's DataDriftPreset over the window's sample against the reference's, as one HTML page."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current = window_frames(profile, summary)
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    return str(snapshot.get_html_str(as_iframe=False))


def read_summary(path: Path) -> pa.Table:
    return pq.read_table(path)


def _expand(labels: Sequence[str | None], counts: Sequence[int], max_rows: int) -> list[object]:
    total = sum(counts)
    scale = min(1.0, max_rows / total) if total else 0.0
    repeated = np.repeat(np.asarray(labels, dtype=object), np.round(np.asarray(counts) * scale).astype(int))
    return list(repeated)


def _padded(columns: dict[str, list[object]], pandas: Any) -> pd.DataFrame:
    length = max((len(values) for values in columns.values()), default=0)
    return pandas.DataFrame(
        {name: values + [None] * (length - len(values)) for name, values in columns.items()}
    )
