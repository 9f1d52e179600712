"""Feature skew: served values against the offline store's point-in-time values, per feature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.spec import FeatureViewSpec
from monitors.drift.profile import ReferenceProfile
from monitors.drift.skew import SkewSettings, skew_scores
from monitors.events.cloudevents import PredictionEvent
from monitors.runtime.monitor import Monitor, MonitorSettings
from offline_store.dataset import OfflineDataset

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def card_stats(root: Path) -> FeatureViewSpec:
    """Card k sums k at t=10 s and 2k at t=100 s; its count is k throughout."""
    spec = FeatureViewSpec(
        name="card_stats",
        project="skew",
        topic="cards",
        join_keys={"card_id": "INT64"},
        timestamp_field="ts",
        message_schema={},
        features={"amount_sum": "FLOAT64", "txn_count": "INT64"},
        offline_path=str(root / "card_stats"),
    )
    cards = list(range(50))
    for partition, (second, factor) in enumerate([(10, 1.0), (100, 2.0)]):
        micros = int((T0 + timedelta(seconds=second)).timestamp() * 1e6)
        OfflineDataset(spec=spec).write_batch(
            partition=partition,
            first_offset=0,
            last_offset=49,
            keys=cards,
            event_times_us=np.full(50, micros, dtype=np.int64),
            created_times_us=np.full(50, micros, dtype=np.int64),
            features={"amount_sum": [card * factor for card in cards], "txn_count": cards},
        )
    return spec


def served(card: int, second: int, *, wrong: bool) -> PredictionEvent:
    factor = 1.0 if second < 100 else 2.0
    return PredictionEvent(
        model="fraud",
        version="1",
        request_id=f"{card}-{second}",
        entities={"card_id": card},
        features={"amount_sum": card * factor + (0.5 if wrong else 0.0), "txn_count": card, "other": 1.0},
        event_time=T0 + timedelta(seconds=second),
    )


def test_the_mismatch_rate_is_the_share_of_served_values_the_offline_store_disagrees_with(
    tmp_path: Path,
) -> None:
    spec = card_stats(tmp_path)
    # 100 predictions, before and after the second row; every fourth served a stale amount.
    events = [served(card, second, wrong=card % 4 == 0) for card in range(50) for second in (50, 150)]
    scores = {score.feature: score for score in skew_scores(events, SkewSettings(views=(spec,)))}
    assert set(scores) == {"amount_sum", "txn_count"}
    assert scores["amount_sum"].score == 26 / 100 and scores["amount_sum"].drift
    assert scores["txn_count"].score == 0.0 and not scores["txn_count"].drift
    assert {score.against for score in scores.values()} == {"offline"}


def test_a_value_served_before_the_offline_store_had_it_counts_as_skew(tmp_path: Path) -> None:
    spec = card_stats(tmp_path)
    # At t=5 s the offline store has nothing for the card yet: any served value disagrees with "no value".
    event = served(3, 50, wrong=False)
    early = PredictionEvent(**{**event.__dict__, "event_time": T0 + timedelta(seconds=5)})
    [amount, count] = skew_scores([early], SkewSettings(views=(spec,)))
    assert (amount.score, count.score) == (1.0, 1.0)


def test_the_monitor_adds_skew_scores_to_each_closed_window(tmp_path: Path) -> None:
    spec = card_stats(tmp_path)
    rng = np.random.default_rng(0)
    profile = ReferenceProfile.build(
        pd.DataFrame({"amount_sum": rng.normal(50, 30, 1000), "txn_count": rng.integers(0, 50, 1000)}),
        model="fraud",
        version="1",
    )
    monitor = Monitor(
        settings=MonitorSettings(
            window=timedelta(seconds=60), lateness=timedelta(0), skew=SkewSettings(views=(spec,))
        ),
        load_profile=lambda model, version: profile,
    )
    events = [served(card, 30, wrong=card % 2 == 0) for card in range(50)] + [served(1, 200, wrong=False)]
    closed, rejected = monitor.add([(event, 0, offset) for offset, event in enumerate(events)])
    assert rejected == []
    [window] = closed
    skew = {score.feature: score.score for score in window.report.scores if score.against == "offline"}
    assert skew == {"amount_sum": 0.5, "txn_count": 0.0}


def test_the_monitor_command_names_an_unknown_skew_view(tmp_path: Path) -> None:
    from tests.streaming import make_repo, sluice

    repo = make_repo(tmp_path / "repo", project="skew_cli", topic="unused")
    refused = sluice(repo, "monitor", "--skew-view", "card_stat")
    assert refused.returncode == 2
    assert "no streamed feature view named 'card_stat'; the repo has: card_stats" in refused.stderr
