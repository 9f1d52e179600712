"""Drift reports are rendered in a process of their own: an alert's link works at once, and shows
Evidently's report once it is rendered."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from monitors.drift.profile import ReferenceProfile
from monitors.drift.report import ReportRenderer, render_report
from monitors.drift.window import ServingWindow, event_keys

PROFILE = ReferenceProfile.build(
    pd.DataFrame({"amount": np.random.default_rng(0).normal(0, 1, 500), "country": ["DE", "FR"] * 250}),
    model="fraud",
    version="3",
)


def window() -> ServingWindow:
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    served = ServingWindow(profile=PROFILE, start_us=start, end_us=start + 60_000_000)
    rng = np.random.default_rng(1)
    rows = [{"amount": float(value), "country": "DE"} for value in rng.normal(3, 1, 300)]
    served.update_rows(rows, keys=event_keys([f"r{index}" for index in range(300)]))
    return served


def test_the_report_replaces_the_pending_page_once_rendered_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "fraud" / "3" / "window.html"
    renderer = ReportRenderer()
    served = window()
    future = renderer.submit(
        PROFILE, summary=served.summary_table(), path=path, window_start_us=served.start_us
    )
    assert future is not None
    renderer.close()
    assert future.done() and future.exception() is None
    page = path.read_text()
    assert "being rendered" not in page and "amount" in page and "country" in page
    assert "<html" in page and "drift" in page.lower()
    assert not list(path.parent.glob(".*.tmp"))


def test_the_renderer_runs_outside_the_monitor_process(tmp_path: Path) -> None:
    renderer = ReportRenderer()
    served = window()
    future = renderer.submit(
        PROFILE, summary=served.summary_table(), path=tmp_path / "a.html", window_start_us=0
    )
    assert future is not None
    future.result(timeout=120)
    assert renderer._pool is not None
    pids = {process.pid for process in renderer._pool._processes.values()}
    assert pids and os.getpid() not in pids
    renderer.close()


def test_render_report_writes_the_same_page_as_the_cli_path(tmp_path: Path) -> None:
    served = window()
    render_report(PROFILE, served.summary_table(), tmp_path / "direct.html")
    assert "amount" in (tmp_path / "direct.html").read_text()
