"""``sluice report``: Evidently's HTML drift report for one closed window, for people who want to look.

A window keeps summaries, not its events: a uniform sample per numeric feature and counts per category
(``ServingWindow.summary_table``, saved next to the window's scores). The report compares those with the
reference profile's sample and counts, so what Evidently shows is computed from the same data as the
monitor's scores; categories are expanded from their counts, scaled down to at most ``max_rows``.
"""

from __future__ import annotations

import html
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitors.drift.profile import OTHER, ReferenceProfile
from offline_store.storage import Location

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "ReportError",
    "ReportRenderer",
    "drift_report_html",
    "report_link",
    "report_path",
    "window_frames",
    "window_summary_path",
]


log = logging.getLogger("sluice.monitor")

PENDING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Drift report: rendering</title></head>
<body><p>The drift report of model {model} version {version}, window from {start} µs, is being rendered;
this page reloads until it is there.</p>
<p>If it stays like this, the monitor stopped before the report was done:
<code>sluice report --model {model} --model-version {version} --window-start {start} --out PATH</code>
writes it from the window's saved summary.</p></body></html>
"""


class ReportError(LookupError):
    """No such window; the message lists what there is."""


def window_summary_path(
    scores_root: Location, *, model: str, version: str, window_start_us: int | None
) -> Location:
    """The saved summary of a window (the latest one when ``window_start_us`` is None)."""
    folder = scores_root.child(f"model={model}", f"version={version}")
    summaries = sorted(
        (file for file in folder.files(recursive=False) if file.name.endswith(".summary.parquet")),
        key=lambda file: file.name,
    )
    if not summaries:
        raise ReportError(f"no closed windows of model {model!r} version {version!r} under {scores_root.uri}")
    if window_start_us is None:
        return summaries[-1]
    wanted = f"window-{window_start_us:020d}.summary.parquet"
    found = [file for file in summaries if file.name == wanted]
    if not found:
        starts = ", ".join(file.name[7:27].lstrip("0") or "0" for file in summaries[-5:])
        raise ReportError(f"no window starting at {window_start_us} µs; the latest start at: {starts}")
    return found[0]


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


class ReportRenderer:
    """Renders drift reports in a process of its own, one at a time, so that scoring never waits on
    Evidently (an import of seconds, then a render of seconds). The report's path holds a page that
    says so, and reloads, until the report replaces it.

    >>> import tempfile, pandas as pd
    >>> profile = ReferenceProfile.build(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), model="m", version="1")
    >>> folder = Path(tempfile.mkdtemp())
    >>> renderer = ReportRenderer()
    >>> future = renderer.submit(profile, summary=None, path=folder / "m" / "window.html", window_start_us=0)
    >>> "being rendered" in (folder / "m" / "window.html").read_text()
    True
    >>> renderer.close()
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._pending: set[Future[None]] = set()

    def submit(
        self, profile: ReferenceProfile, *, summary: pa.Table | None, path: Path, window_start_us: int
    ) -> Future[None] | None:
        """Write the pending page at ``path`` now, and the report over it once rendered (none without a
        ``summary``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(
            path,
            PENDING_PAGE.format(
                model=html.escape(profile.model),
                version=html.escape(profile.version),
                start=window_start_us,
            ),
        )
        if summary is None:
            return None
        if self._pool is None:
            # spawn: a fork would copy the monitor's threads and locks into the child.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = self._pool.submit(render_report, profile, summary, path)
        self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def close(self, *, timeout_s: float = 30.0) -> None:
        """Wait up to ``timeout_s`` for the reports being rendered, then stop the renderer."""
        if self._pool is None:
            return
        wait_for(list(self._pending), timeout=timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def _done(self, future: Future[None]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("could not render a drift report: %r", future.exception())


def render_report(profile: ReferenceProfile, summary: pa.Table, path: Path) -> None:
    """Write the window's drift report at ``path``, whole or not at all."""
    _replace(path, drift_report_html(profile, summary))


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def read_summary(location: Location) -> pa.Table:
    return location.read_parquet()


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
