"""The promotion gate: ``champion`` moves to the ``challenger`` only when it is better on held-out data.

A retraining job evaluates the model it trained, and the current champion, on the same held-out slice
of its data (the latest rows, as they would be scored next), logs both in its run as
``holdout_<metric>`` and ``champion_holdout_<metric>``, registers its model with the tag
``sluice.job_id`` and points ``challenger`` at it. When the job has succeeded, the retrainer runs the
gate on that version (``job_gate``, configured by ``retraining.promotion``), so no job skips it;
``sluice models promote`` runs it by hand. ``promote`` decides: the challenger becomes the champion
when there is none yet, or when its metric beats the champion's by at least ``margin`` (in the
metric's own units); otherwise the champion stays. Either way the decision and its reason are tags of
the challenger's version (``sluice.gate``, ``sluice.gate.reason``), so ``sluice models list`` (and
MLflow's UI) says why.

>>> decide(challenger=0.31, champion=0.35, margin=0.01, higher_is_better=False)
(True, "holdout log loss 0.31 beats the champion's 0.35 by 0.04 (margin 0.01)")
>>> decide(challenger=0.345, champion=0.35, margin=0.01, higher_is_better=False)[0]
False
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitors.retraining.mlflow import MlflowRegistry, open_registry
from monitors.retraining.store import Job

if TYPE_CHECKING:
    from features.config import SluiceConfig

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "JOB_TAG",
    "GateDecision",
    "decide",
    "job_gate",
    "promote",
    "promotion_gate",
]

CHAMPION, CHALLENGER = "champion", "challenger"
JOB_TAG = "sluice.job_id"
"""The version tag that names the retraining job that made it."""


@dataclass(frozen=True, kw_only=True)
class GateDecision:
    model: str
    challenger: str
    champion: str | None
    """The champion before the decision."""
    promoted: bool
    reason: str


def decide(
    *,
    challenger: float,
    champion: float | None,
    margin: float,
    higher_is_better: bool,
    metric: str = "log_loss",
) -> tuple[bool, str]:
    """Whether the challenger's held-out metric beats the champion's by the margin, and why (not)."""
    label = metric.replace("_", " ")
    if champion is None:
        return True, "there is no champion yet"
    if math.isnan(challenger) or math.isnan(champion):
        return False, f"the holdout {label} of one of them is missing"
    gain = challenger - champion if higher_is_better else champion - challenger
    if gain >= margin:
        return True, (
            f"holdout {label} {challenger:.4g} beats the champion's {champion:.4g} by {gain:.4g} "
            f"(margin {margin:g})"
        )
    return False, (
        f"holdout {label} {challenger:.4g} does not beat the champion's {champion:.4g} by the margin "
        f"{margin:g} (by {gain:.4g})"
    )


def promote(
    registry: MlflowRegistry,
    model: str,
    *,
    version: str | None = None,
    metric: str = "log_loss",
    margin: float = 0.0,
    higher_is_better: bool = False,
) -> GateDecision:
    """Decide on a version (the model's ``challenger`` by default) from its run's ``holdout_<metric>``
    and ``champion_holdout_<metric>``; move ``champion`` when it wins; tag the version either way."""
    challenger = version or registry.alias(model, CHALLENGER)
    if challenger is None:
        raise ValueError(f"model {model!r} has no {CHALLENGER!r} alias to decide on")
    champion = registry.alias(model, CHAMPION)
    if champion == challenger:  # decided before (a retry after a crash, or twice by hand)
        return GateDecision(
            model=model,
            challenger=challenger,
            champion=champion,
            promoted=True,
            reason="already the champion",
        )
    entry = registry.version(model, challenger)
    if entry is None:
        raise ValueError(f"model {model!r} has no version {challenger}")
    logged = registry.run(entry.run_id)["metrics"] if entry.run_id else {}
    mine = logged.get(f"holdout_{metric}", math.nan)
    theirs = None if champion is None else logged.get(f"champion_holdout_{metric}", math.nan)
    promoted, reason = decide(
        challenger=mine, champion=theirs, margin=margin, higher_is_better=higher_is_better, metric=metric
    )
    if promoted:
        registry.set_alias(model, CHAMPION, challenger)
    registry.set_version_tag(model, challenger, "sluice.gate", "promoted" if promoted else "kept")
    registry.set_version_tag(model, challenger, "sluice.gate.reason", reason)
    return GateDecision(
        model=model, challenger=challenger, champion=champion, promoted=promoted, reason=reason
    )


def job_gate(
    registry: MlflowRegistry, *, metric: str, margin: float, higher_is_better: bool
) -> Callable[[Job], str]:
    """What the retrainer runs when a job succeeds: the gate on the version the job registered (the one
    tagged with its ``sluice.job_id``); returns what it decided, for the job's detail."""

    def gate(job: Job) -> str:
        made = [entry for entry in registry.versions(job.model) if entry.tags.get(JOB_TAG) == job.job_id]
        if not made:
            return "the gate found no version it registered (tag sluice.job_id)"
        decision = promote(
            registry,
            job.model,
            version=made[-1].version,
            metric=metric,
            margin=margin,
            higher_is_better=higher_is_better,
        )
        verdict = "promoted to champion" if decision.promoted else "kept as challenger"
        return f"version {decision.challenger} {verdict}: {decision.reason}"

    return gate


def promotion_gate(config: SluiceConfig) -> Callable[[Job], str] | None:
    """The gate of ``retraining.promotion`` on the configured registry; None when it is off."""
    settings = config.retraining.promotion
    if not settings.enabled:
        return None
    return job_gate(
        open_registry(config),
        metric=settings.metric,
        margin=settings.margin,
        higher_is_better=settings.higher_is_better,
    )
