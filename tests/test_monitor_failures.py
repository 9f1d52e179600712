"""A monitor never dies of one model's problem: a window one version cannot score is said (logged,
counted, alerted) and skipped, the other versions go on; a ``--metric`` for one model's feature leaves
the others alone; a metric that does not fit a feature is refused at start."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitors.alerts.alert import SCORING_ERROR, Alert
from monitors.alerts.delivery import Deliverer
from monitors.alerts.rules import AlertRules
from monitors.alerts.store import AlertStore
from monitors.database import open_store
from monitors.drift.profile import ReferenceProfile
from monitors.events.cloudevents import PredictionEvent
from monitors.runtime.incidents import Incidents
from monitors.runtime.monitor import Monitor, MonitorSettings
from tests.streaming import sluice

T0 = datetime(2026, 7, 1, tzinfo=UTC)
RNG = np.random.default_rng(0)
GOOD = ReferenceProfile.build(
    pd.DataFrame({"amount": RNG.normal(size=500), "country": RNG.choice(["DE", "FR"], 500)}),
    model="good",
    version="1",
)
_whole = ReferenceProfile.build(
    pd.DataFrame({"score": RNG.normal(size=500), "kind": RNG.choice(["a", "b"], 500)}),
    model="broken",
    version="1",
)
# A profile damaged on disk: its category counts lost an entry, which no comparison can line up.
BROKEN = replace(
    _whole, features={**_whole.features, "kind": replace(_whole.features["kind"], counts=np.array([250]))}
)
PROFILES = {"good": GOOD, "broken": BROKEN}


def events(
    model: str, feature: str, seconds: range, partition: int = 0
) -> list[tuple[PredictionEvent, int, int]]:
    """One event a second, with ``feature`` (and broken's category too, which its profile cannot count)."""
    served = {
        "amount": lambda: {"amount": float(RNG.normal())},
        "score": lambda: {"score": float(RNG.normal()), "kind": "a"},
    }[feature]
    return [
        (
            PredictionEvent(
                model=model, version="1", request_id=f"{model}-{second}", features=served(),
                event_time=T0 + timedelta(seconds=second),
            ),
            partition,
            offset,
        )
        for offset, second in enumerate(seconds)
    ]  # fmt: skip


def monitor(metrics: dict[str, str] | None = None) -> Monitor:
    return Monitor(
        settings=MonitorSettings(window=timedelta(seconds=10), lateness=timedelta(0), metrics=metrics or {}),
        load_profile=lambda model, version: PROFILES[model],
    )


def test_a_version_whose_windows_cannot_be_scored_is_said_and_skipped_and_the_others_go_on() -> None:
    watcher = monitor()
    mixed = events("good", "amount", range(0, 35))
    mixed += [(event, 0, offset + len(mixed)) for event, _, offset in events("broken", "score", range(0, 35))]
    closed, rejected = watcher.add(mixed)
    assert rejected == []
    # good's three closed windows are scored; broken's three fail, each said once, and are dropped.
    assert [(item.report.model, item.report.events) for item in closed] == [("good", 10)] * 3
    failures = watcher.take_failures()
    assert [(failure.model, failure.stage, failure.window_start_us) for failure in failures] == [
        ("broken", "scoring", int((T0 + timedelta(seconds=start)).timestamp() * 1_000_000))
        for start in (0, 10, 20)
    ]
    assert "ValueError" in failures[0].error
    assert watcher.take_failures() == []
    assert [key for key, _ in watcher.parts.pending()] == [], "a failed window's parts stay behind"


def test_a_metric_for_one_models_feature_leaves_the_others_alone_and_a_misfit_is_said() -> None:
    watcher = monitor({"amount": "wasserstein", "country": "ks"})  # ks does not fit a categorical feature
    closed, _ = watcher.add(events("good", "amount", range(0, 15)))
    [report] = [item.report for item in closed]
    metrics = {s.feature: s.metric for s in report.scores if s.against == "reference" and s.kind == "drift"}
    assert metrics["amount"] == "wasserstein" and metrics["country"] != "ks"
    [failure] = watcher.take_failures()
    assert (failure.model, failure.stage) == (
        "good",
        "config",
    ) and "'country' is categorical" in failure.error


def test_a_failure_fires_one_critical_alert_and_the_next_scored_window_resolves_it(tmp_path: Path) -> None:
    store = AlertStore(engine=open_store(f"sqlite:///{tmp_path / 'alerts.db'}"))
    incidents = Incidents(
        store=store,
        rules=AlertRules(
            consecutive_windows=1, cooldown_us=0, critical_share=0.5, report_url=lambda report: ""
        ),
        deliverer=Deliverer(store=store, sinks=[]),
        reports_root=tmp_path / "reports",
    )
    watcher = monitor()
    watcher.add(events("broken", "score", range(0, 35)))
    fired = incidents.on_failures(watcher.take_failures())
    assert [(alert.model, alert.metric, alert.severity, alert.status) for alert in fired] == [
        ("broken", SCORING_ERROR, "critical", "firing")
    ]
    assert "could not be scored" in fired[0].summary
    # The same version failing again changes nothing: one incident, one alert.
    watcher.add([(event, 0, offset + 35) for event, _, offset in events("broken", "score", range(35, 45))])
    assert incidents.on_failures(watcher.take_failures()) == []
    # Its profile is mended; the next window it scores resolves the alert.
    PROFILES["broken"] = ReferenceProfile.build(
        pd.DataFrame({"score": RNG.normal(size=500)}), model="broken", version="1"
    )
    try:
        mended = monitor()
        closed, _ = mended.add(events("broken", "score", range(100, 115)))
        incidents.on_windows(closed)
    finally:
        PROFILES["broken"] = BROKEN
    [alert] = [alert for alert in store.alerts(model="broken") if alert.metric == SCORING_ERROR]
    assert alert.status == "resolved" and alert.id == fired[0].id
    assert isinstance(Alert.from_record(alert.to_record()), Alert)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("nothing=ks", "no model's reference profile has feature 'nothing'"),
        ("country=wasserstein", "metric 'wasserstein' is for numeric features; 'country' is categorical"),
        ("amount=median", "unknown"),
    ],
)
def test_a_metric_flag_that_fits_no_profile_is_refused_at_start(
    tmp_path: Path, flag: str, message: str
) -> None:
    GOOD.save(tmp_path / "state" / "profiles")
    (tmp_path / "repo").mkdir()
    result = sluice(
        tmp_path / "repo", "monitor", "--topic", "never-read", "--metric", flag,
        env={"SLUICE_STATE_DIR": str(tmp_path / "state"), "SLUICE_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
