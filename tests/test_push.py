"""Feast's push, through sluice: pushed rows reach both stores once, through the stream worker.

Rows are pushed from Python and over HTTP (Feast's ``/push`` JSON) to a ``PushSource`` view; the real
worker writes them; sluice's client and Feast's SDK then read the same latest row per entity, the
Parquet dataset holds each pushed row once, and ``sluice verify`` is clean. Bad pushes are refused
with their reason, and nothing of them is sent.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.repo import load_repo
from offline_store.dataset import OfflineDataset
from online_store import OnlineClient
from streams.push import Pusher, PushError
from tests.streaming import delete_topics, end_offsets, sluice, start_worker, stop

pytestmark = pytest.mark.stack

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
card_updates = PushSource(
    name="card_updates",
    batch_source=FileSource(name="card_history", path="offline", timestamp_field="event_timestamp"),
)
card_profile = FeatureView(
    name="card_profile",
    entities=[card],
    ttl=timedelta(days=30),
    schema=[
        Field(name="card_id", dtype=Int64),
        Field(name="risk", dtype=Float64),
        Field(name="segment", dtype=String),
        Field(name="card_limit", dtype=Int64),
    ],
    source=card_updates,
)
"""
FEATURES = ["card_profile:risk", "card_profile:segment", "card_profile:card_limit"]


def rows(count: int, *, seed: int, start: datetime) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "card_id": [rng.randrange(40) for _ in range(count)],
            "event_timestamp": [start + timedelta(seconds=index) for index in range(count)],
            "risk": [None if rng.random() < 0.05 else round(rng.random(), 6) for _ in range(count)],
            "segment": [rng.choice(["gold", "basic", "student"]) for _ in range(count)],
            "card_limit": [rng.randrange(100, 10_000) for _ in range(count)],
        }
    )


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("event_timestamp").groupby("card_id").tail(1).set_index("card_id").sort_index()


def test_pushed_rows_reach_both_stores_once_and_feast_reads_them(tmp_path: Path, project: str) -> None:
    from feast import FeatureStore
    from starlette.testclient import TestClient

    from online_store import AsyncOnlineClient
    from online_store.server import create_app

    root = tmp_path / "repo"
    root.mkdir()
    (root / "sluice.yaml").write_text(f"project: {project}\n")
    (root / "definitions.py").write_text(DEFINITIONS)
    applied = sluice(root, "apply")
    assert applied.returncode == 0, applied.stderr
    topic = f"{project}.push.card_updates"
    assert f"+ Topic {topic}" in applied.stdout
    repo = load_repo(root)
    spec = repo.spec("card_profile")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)  # within the ttl
    first, second = rows(300, seed=1, start=start), rows(200, seed=2, start=start + timedelta(hours=1))
    worker = start_worker(root, tmp_path / "worker.log")
    pusher = Pusher(repo=repo)
    try:
        receipt = pusher.push("card_updates", first, wait_s=90)
        assert receipt.rows == 300 and receipt.topic == topic

        # Over HTTP, as Feast's feature server takes it: the rows as a dict of columns.
        columns: dict[str, list[Any]] = {
            name: [None if pd.isna(value) else value for value in second[name].tolist()]
            for name in second.columns
        }
        columns["event_timestamp"] = [moment.isoformat() for moment in second["event_timestamp"]]
        with TestClient(
            create_app(AsyncOnlineClient(repo_path=root), pusher=lambda: Pusher(repo=repo))
        ) as http:
            pushed = http.post(
                "/push", json={"push_source_name": "card_updates", "df": columns, "to": "online"}
            )
            assert pushed.status_code == 200, pushed.text
            missing_key = http.post(
                "/push",
                json={
                    "push_source_name": "card_updates",
                    "df": {k: v for k, v in columns.items() if k != "card_id"},
                },
            )
            unknown = http.post("/push", json={"push_source_name": "nope", "df": columns})
            bad_type = http.post(
                "/push",
                json={"push_source_name": "card_updates", "df": {**columns, "card_limit": ["x"] * 200}},
            )
        assert pushed.json()["rows"] == 200
        assert missing_key.status_code == 400 and "card_id" in missing_key.json()["error"]
        assert unknown.status_code == 400 and "card_updates" in unknown.json()["error"]
        assert bad_type.status_code == 400 and "card_limit" in bad_type.json()["error"]
        ends = end_offsets(topic)
        assert sum(ends.values()) == 500  # the refused pushes sent nothing
        from streams.push import PushReceipt

        offsets = {int(partition): offset for partition, offset in pushed.json()["last_offsets"].items()}
        pusher.wait(
            PushReceipt(source="card_updates", topic=topic, rows=200, last_offsets=offsets), timeout_s=90
        )
    finally:
        pusher.close()
        stop(worker)

    everything = pd.concat([first, second], ignore_index=True)
    expected = latest(everything)
    entity_rows = [{"card_id": int(card)} for card in expected.index]
    with OnlineClient(repo_path=root) as client:
        ours = client.get_online_features(features=FEATURES, entity_rows=entity_rows)
    theirs = (
        FeatureStore(repo_path=str(root))
        .get_online_features(features=FEATURES, entity_rows=entity_rows)
        .to_dict()
    )
    for name in ("risk", "segment", "card_limit"):
        want = [None if pd.isna(value) else value for value in expected[name].tolist()]
        assert ours[name] == want, name
        assert theirs[name] == want, name

    offline = OfflineDataset(spec=spec).read().to_pandas()
    assert len(offline) == len(everything)  # each pushed row once
    merged = offline.merge(everything, on=["card_id", "event_timestamp"], suffixes=("_stored", "_pushed"))
    assert len(merged) == len(everything)
    assert (merged["card_limit_stored"] == merged["card_limit_pushed"]).all()
    assert (merged["segment_stored"] == merged["segment_pushed"]).all()
    verified = sluice(root, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    delete_topics(topic, f"{topic}.dlq")


def test_a_push_to_an_unknown_source_or_with_bad_rows_is_refused_before_anything_is_sent(
    tmp_path: Path, project: str
) -> None:
    (tmp_path / "sluice.yaml").write_text(f"project: {project}\n")
    (tmp_path / "definitions.py").write_text(DEFINITIONS)

    class NoProducer:
        def send(self, *_: Any, **__: Any) -> Any:
            raise AssertionError("a refused push sent a row")

    pusher = Pusher(repo=load_repo(tmp_path), producer=NoProducer())
    good = rows(3, seed=5, start=datetime(2026, 5, 1, tzinfo=UTC))
    with pytest.raises(PushError, match=r"no push source named 'card_update'.*known: card_updates"):
        pusher.push("card_update", good)
    with pytest.raises(PushError, match=r"row 1 .*'card_profile' \(type\)"):
        pusher.push("card_updates", good.assign(card_limit=[1, "lots", 3]))
    with pytest.raises(PushError, match="to must be one of"):
        pusher.push("card_updates", good, to="everywhere")
    with pytest.raises(PushError, match="no rows"):
        pusher.push("card_updates", good.iloc[:0])


def test_a_push_view_with_aggregations_is_refused(tmp_path: Path) -> None:
    from features.validation import InvalidDefinitions

    (tmp_path / "sluice.yaml").write_text("project: refusals\n")
    (tmp_path / "definitions.py").write_text(
        DEFINITIONS.replace("FeatureView(", "StreamFeatureView(")
        .replace("ValueType\n", "ValueType, StreamFeatureView, Aggregation\n")
        .replace(
            "    source=card_updates,\n",
            "    source=card_updates,\n    timestamp_field='event_timestamp',\n"
            "    aggregations=[Aggregation(column='risk', function='sum',\n"
            "                              time_window=timedelta(hours=1))],\n",
        )
    )
    with pytest.raises(InvalidDefinitions, match="a PushSource carries feature values"):
        load_repo(tmp_path)
