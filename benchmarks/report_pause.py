"""How long an alert's Evidently report holds up scoring: rendered in the monitor's thread (as before)
against handed to ``ReportRenderer`` (a process of its own).

A reference profile of 20 numeric features (10,000 rows) and one closed window of 20,000 events (its
sample and counts, as the monitor keeps them). Timed, in this order, each in a fresh interpreter so that
neither pays the other's imports:

- ``inline``: ``drift_report_html`` called where scoring runs, the first time (Evidently's import
  included, as the monitor's first alert pays it) and again (a later alert);
- ``renderer``: ``ReportRenderer.submit``, the time until it returns (what scoring waits for), the first
  time and again, and the time until the report has replaced the pending page.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CASE = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, sys.argv[1])
from monitors.drift.profile import ReferenceProfile
from monitors.drift.window import ServingWindow, event_keys

features = [f"f{index}" for index in range(20)]
rng = np.random.default_rng(0)
training = pd.DataFrame({n: rng.normal(size=10_000) for n in features})
profile = ReferenceProfile.build(training, model="m", version="1")
window = ServingWindow(profile=profile, start_us=0, end_us=60_000_000)
window.update_rows([dict(zip(features, row)) for row in rng.normal(0.3, 1, (20_000, 20)).tolist()],
                   keys=event_keys([f"r{i}" for i in range(20_000)]))
folder = Path(sys.argv[3])
timings = {}
if sys.argv[2] == "inline":
    from monitors.drift.report import drift_report_html
    for name in ("first_s", "again_s"):
        started = time.perf_counter()
        (folder / f"{name}.html").write_text(drift_report_html(profile, window.summary_table()))
        timings[name] = time.perf_counter() - started
else:
    from monitors.drift.report import ReportRenderer
    renderer = ReportRenderer()
    futures = []
    for name in ("first_s", "again_s"):
        started = time.perf_counter()
        futures.append(renderer.submit(profile, summary=window.summary_table(), path=folder / f"{name}.html",
                                       window_start_us=0))
        timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    for future in futures:
        future.result()
    timings["until_rendered_s"] = time.perf_counter() - started + timings["again_s"]
    renderer.close()
print(json.dumps(timings))
"""


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sluice-report-pause-"))
    results = {}
    for case in ("inline", "renderer"):
        done = subprocess.run(
            [sys.executable, "-c", _CASE, str(ROOT), case, str(work)],
            capture_output=True, text=True, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )  # fmt: skip
        results[case] = {
            key: round(value, 4) for key, value in json.loads(done.stdout.splitlines()[-1]).items()
        }
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), ""
    )
    print(
        json.dumps(
            {
                "benchmark": "report_pause",
                "cpu": model,
                **results,
                "pause_ratio_first": round(results["inline"]["first_s"] / results["renderer"]["first_s"], 1),
                "pause_ratio_again": round(results["inline"]["again_s"] / results["renderer"]["again_s"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
