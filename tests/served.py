"""A feature repo written by Feast itself: ``apply`` and ``materialize`` into Redis, as Feast users do.

It has two entities with different join key types, views of every scalar type sluice reads, and a
feature service, so the online client and the feature server can be compared with Feast's SDK.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import load_config
from features.registry import feast_repo_config

CARD_FEATURES = ["amount_avg", "txn_count", "country", "is_business", "risk_score", "chargebacks"]
MERCHANT_FEATURES = ["merchant_rating", "merchant_category"]
CARDS = 30
MERCHANTS = ["m-0", "m-1", "m-2"]


@dataclass(frozen=True, kw_only=True)
class ServedRepo:
    path: Path
    project: str
    store: Any
    """Feast's FeatureStore over the same registry and Redis."""

    @property
    def all_features(self) -> list[str]:
        return [f"card_profile:{name}" for name in CARD_FEATURES] + [
            f"merchant_profile:{name}" for name in MERCHANT_FEATURES
        ]


def feast_materialized_repo(root: Path, *, project: str, now: datetime, config: str = "") -> ServedRepo:
    """Write source Parquet, register the views with Feast, and let Feast materialize them into Redis;
    ``config`` is more of ``sluice.yaml`` (a ``redis:`` section, say)."""
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float32, Float64, Int32, Int64, String

    root.mkdir(parents=True, exist_ok=True)
    (root / "sluice.yaml").write_text(f"project: {project}\n{config}")
    rng = np.random.default_rng(7)
    # Three rows per card; the last is the one online. Card 0 has a null amount, card 1 a NaN score.
    times = [now - timedelta(hours=hours) for hours in (5, 3, 1)]
    rows = []
    for card in range(CARDS):
        for time in times:
            rows.append(
                {
                    "card_id": card,
                    "event_timestamp": time,
                    "amount_avg": None if card == 0 else float(rng.normal(40, 10)),
                    "txn_count": int(rng.integers(0, 500)),
                    "country": str(rng.choice(["DE", "FR", "NL"])),
                    "is_business": bool(rng.integers(0, 2)),
                    "risk_score": float("nan") if card == 1 else float(rng.random()),
                    "chargebacks": int(rng.integers(0, 5)),
                }
            )
    cards = pd.DataFrame(rows)
    cards["risk_score"] = cards["risk_score"].astype("float32")
    cards["chargebacks"] = cards["chargebacks"].astype("int32")
    cards.to_parquet(root / "cards.parquet")
    merchants = pd.DataFrame(
        {
            "merchant_id": MERCHANTS,
            "event_timestamp": [now - timedelta(minutes=30)] * len(MERCHANTS),
            "merchant_rating": [4.5, 3.0, 1.5],
            "merchant_category": ["food", "travel", "games"],
        }
    )
    merchants.to_parquet(root / "merchants.parquet")

    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
    card_profile = FeatureView(
        name="card_profile",
        entities=[card],
        ttl=timedelta(days=1),
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="amount_avg", dtype=Float64),
            Field(name="txn_count", dtype=Int64),
            Field(name="country", dtype=String),
            Field(name="is_business", dtype=Bool),
            Field(name="risk_score", dtype=Float32),
            Field(name="chargebacks", dtype=Int32),
        ],
        source=FileSource(path=str(root / "cards.parquet"), timestamp_field="event_timestamp"),
    )
    merchant_profile = FeatureView(
        name="merchant_profile",
        entities=[merchant],
        ttl=timedelta(days=1),
        schema=[
            Field(name="merchant_id", dtype=String),
            Field(name="merchant_rating", dtype=Float64),
            Field(name="merchant_category", dtype=String),
        ],
        source=FileSource(path=str(root / "merchants.parquet"), timestamp_field="event_timestamp"),
    )
    service = FeatureService(
        name="checkout_model", features=[card_profile[["amount_avg", "txn_count"]], merchant_profile]
    )
    store = FeatureStore(config=feast_repo_config(load_config(root), root))
    store.apply([card, merchant, card_profile, merchant_profile, service])
    store.materialize(start_date=now - timedelta(days=1), end_date=now + timedelta(minutes=1))
    return ServedRepo(path=root, project=project, store=store)


def entity_rows() -> list[dict[str, Any]]:
    """Every card and merchant, plus a card and a merchant that have no features."""
    rows = [{"card_id": card, "merchant_id": MERCHANTS[card % len(MERCHANTS)]} for card in range(CARDS)]
    return [*rows, {"card_id": 10_000, "merchant_id": "m-unknown"}]


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@contextlib.contextmanager
def serving(repo: Path, log: Path, *args: str, token: str) -> Iterator[str]:
    """``sluice serve`` on a free port with ``args`` and a bearer token; yields its URL once healthy."""
    from tests.streaming import free_port, get_when_up

    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), "serve", "--port", str(port), *args],
            env={**os.environ, "SLUICE_SERVE_TOKEN": token},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        get_when_up(f"{url}/health", process, log, timeout_s=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
