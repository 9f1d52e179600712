"""Drift detection: sluice's Numba metrics against a scipy loop and Evidently's DataDriftPreset.

Workload (issue #5): 20 numeric features, 100,000 reference rows and 100,000 current rows, 10 of
the features shifted. All three compute KS and Wasserstein for every feature; sluice and the scipy
loop also compute PSI and Jensen-Shannon over the reference's 20 quantile bins (Evidently's preset
picks its own test per column). sluice's reference profile (sorted sample, bins) is built once, as a
monitor does at start, and timed apart. Then the streaming update rate of a serving window: numeric
values per second into the per-feature histograms, samples and moments. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# OpenBLAS's worker threads busy-wait for a while after a BLAS call, and scipy's wasserstein_distance
# makes one: on two cores they took a core from the sluice run after each scipy run (its merge ran twice
# as long). Neither side's work gains from BLAS threads (the scipy loop takes the same time with one), so
# BLAS gets one thread unless OPENBLAS_NUM_THREADS is set outside. Set before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES = 20


def data(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({f"f{i}": rng.normal(0, 1, rows) for i in range(FEATURES)})
    current = pd.DataFrame(
        {f"f{i}": rng.normal(0.1 if i < FEATURES // 2 else 0.0, 1, rows) for i in range(FEATURES)}
    )
    return reference, current


def scipy_loop(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict[str, float]]:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp, wasserstein_distance

    result = {}
    for name in reference.columns:
        ref, cur = reference[name].to_numpy(), current[name].to_numpy()
        ks = ks_2samp(ref, cur)
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 21)[1:-1]))
        bins = np.concatenate([[-np.inf], edges, [np.inf]])
        p = np.histogram(ref, bins)[0] / len(ref)
        q = np.histogram(cur, bins)[0] / len(cur)
        fp, fq = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        result[name] = {
            "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "wasserstein": float(wasserstein_distance(ref, cur)),
            "psi": float(np.sum((fq - fp) * np.log(fq / fp))),
            "jensen_shannon": float(jensenshannon(p, q)),
        }
    return result


def evidently_preset(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)


def cold_start() -> float:
    """Seconds for a fresh process to import the metrics and run them once (Numba's cache warm on disk)."""
    code = (
        "import time, numpy as np; started = time.perf_counter(); "
        "from monitors.drift.metrics import ks_2samp, wasserstein_distance, bin_counts; "
        "from monitors.drift import kernels; "
        "a = np.random.default_rng(0).normal(size=1000); ks_2samp(a, a + 1); wasserstein_distance(a, a); "
        "b = np.sort(np.stack([a, a]), axis=1); kernels.ks_wasserstein_rows(b, b); "
        "print(time.perf_counter() - started)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(output.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs of sluice and scipy; Evidently runs once"
    )
    args = parser.parse_args()

    from monitors.drift.profile import ReferenceProfile
    from monitors.drift.table import compare_numeric
    from monitors.drift.window import ServingWindow

    reference, current = data(args.rows)
    started = time.perf_counter()
    profile = ReferenceProfile.build(reference, model="bench", version="1", sample_size=args.rows)
    profile_s = time.perf_counter() - started
    columns = {name: current[name].to_numpy() for name in current.columns}
    compare_numeric(profile, columns)  # JIT warm-up (compiled code is cached on disk after the first run)

    sluice_times, scipy_times = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        ours = compare_numeric(profile, columns)
        sluice_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = scipy_loop(reference, current)
        scipy_times.append(time.perf_counter() - started)
    for name in ours:
        assert ours[name]["ks_statistic"] == theirs[name]["ks_statistic"], name
        assert (
            abs(ours[name]["wasserstein"] - theirs[name]["wasserstein"]) <= 1e-9 * theirs[name]["wasserstein"]
        ), name
        assert abs(ours[name]["psi"] - theirs[name]["psi"]) <= 1e-9, name
        assert abs(ours[name]["jensen_shannon"] - theirs[name]["jensen_shannon"]) <= 1e-9, name

    started = time.perf_counter()
    evidently_preset(reference, current)
    evidently_s = time.perf_counter() - started

    window = ServingWindow(profile=profile, start_us=0, end_us=1)
    batch = {name: column[:10_000] for name, column in columns.items()}
    window.update(batch)  # warm-up
    updates = []
    for _ in range(args.runs):
        window = ServingWindow(profile=profile, start_us=0, end_us=1)
        started = time.perf_counter()
        for offset in range(0, args.rows, 10_000):
            window.update({name: column[offset : offset + 10_000] for name, column in columns.items()})
        updates.append(args.rows * FEATURES / (time.perf_counter() - started))

    sluice_s, scipy_s = statistics.median(sluice_times), statistics.median(scipy_times)
    drifted = sorted(name for name, scores in ours.items() if scores["ks_pvalue"] < 0.05 / FEATURES)
    print(
        json.dumps(
            {
                "sluice_s": round(sluice_s, 4),
                "scipy_s": round(scipy_s, 3),
                "evidently_s": round(evidently_s, 3),
                "speedup_vs_scipy": round(scipy_s / sluice_s, 1),
                "speedup_vs_evidently": round(evidently_s / sluice_s, 1),
                "update_values_per_s": round(statistics.median(updates)),
                "profile_s": round(profile_s, 3),
                "cold_start_s": round(cold_start(), 3),
                "drifted_features": len(drifted),
                "rows": args.rows,
                "features": FEATURES,
                "runs": args.runs,
                "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
            }
        )
    )


if __name__ == "__main__":
    main()
