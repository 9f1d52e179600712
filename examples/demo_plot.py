"""The demo's picture: each feature's drift score per window, with the shift, the alert and the switch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyarrow.parquet as pq


def plot_drift(
    scores_root: Path,
    out: Path,
    *,
    model: str,
    shift_at: datetime,
    alerts_at: list[datetime],
    switched_at: datetime | None,
    alpha: float,
) -> Path:
    """-log10(p) of every feature against its reference, per window and version, as a PNG."""
    figure, axis = plt.subplots(figsize=(10, 4.5))
    for folder in sorted((scores_root / f"model={model}").glob("version=*")):
        version = folder.name.removeprefix("version=")
        files = [
            path for path in folder.glob("window-*.parquet") if not path.name.endswith(".summary.parquet")
        ]
        if not files:
            continue
        rows = [row for path in sorted(files) for row in pq.read_table(path).to_pylist()]
        features = sorted({row["feature"] for row in rows if row["against"] == "reference"})
        for feature in features:
            points = [
                (datetime.fromtimestamp(row["window_end_us"] / 1e6, UTC), _strength(row["score"]))
                for row in rows
                if row["feature"] == feature and row["against"] == "reference"
            ]
            points.sort()
            axis.plot(
                [when for when, _ in points],
                [value for _, value in points],
                marker="o",
                label=f"v{version} {feature}",
            )
    axis.axhline(_strength(alpha), color="grey", linestyle=":", label=f"threshold (p = {alpha:g})")
    axis.axvline(shift_at, color="red", linestyle="--", label="prices triple")
    for when in alerts_at:
        axis.axvline(when, color="orange", linewidth=2, label="alert fired")
    if switched_at is not None:
        axis.axvline(switched_at, color="green", linestyle="-.", label="scoring switches to v2")
    axis.set_yscale("symlog", linthresh=1)
    axis.set_ylim(bottom=0)
    axis.set_ylabel("drift: -log10(p-value)")
    axis.set_xlabel("window end (UTC)")
    axis.set_title(f"{model}: drift of served features against each version's training set")
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axis.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left")
    figure.autofmt_xdate()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _strength(pvalue: float | None) -> float:
    import math

    if pvalue is None:
        return 0.0
    return -math.log10(max(pvalue, 1e-300))
