"""`make demo` as a test, shortened: payments in, drift alert out, a retrained model promoted in MLflow
and scoring."""

from __future__ import annotations

import re

import pytest

from tests.conftest import DemoRun

pytestmark = pytest.mark.stack


def test_the_demo_alerts_on_the_shift_retrains_and_switches_to_version_2(demo_run: DemoRun) -> None:
    output = demo_run.output
    assert demo_run.returncode == 0, output[-4000:]
    lines = demo_run.stdout.splitlines()
    # The alert is for the first window after prices tripled (the demo checks the timing itself, and
    # fails otherwise), it reached both webhooks and the Python subscriber, and the job succeeded.
    assert any(line.startswith("   alert ") and "feature amount drifts" in line for line in lines), output
    assert "the first alert is for the window that starts 0 windows after the shift" in output
    # Each alert reaches both webhooks and the subscriber: the drift alert at least; also, as the data
    # allows, the shifted prices' share outside the training range, or version 2's own alerts.
    posts, heard = (
        int(number)
        for number in re.findall(
            r"webhooks received (\d+) posts; the Python subscriber (\d+) alerts", output
        )[0]
    )
    assert heard >= 1 and posts == 2 * heard, output
    # The job's run registered version 2 in MLflow, the gate promoted it, and scoring followed champion.
    assert any(" (local): succeeded in " in line and "promoted to champion" in line for line in lines), output
    assert "champion is now version 2; scoring follows" in output
    # The labels, joined as they came, show version 1 doing worse after the shift than before.
    before, after = (
        float(re.findall(rf"version 1 {when}: log loss ([\d.]+)", output)[0])
        for when in ("before the shift", "after the shift")
    )
    assert after > before, output
    state = demo_run.state
    assert (state / "mlflow" / "mlflow.db").exists()
    assert (state / "demo" / "models" / "2" / "model" / "model.json").exists()  # downloaded from MLflow
    assert (state / "profiles" / "fraud" / "2" / "profile.json").exists()
    assert (state / "demo" / "drift-scores.png").stat().st_size > 10_000
    assert list((state / "reports" / "fraud" / "1").glob("window-*.html"))
