"""Training sets: sluice's get_historical_features (DuckDB ASOF join) against Feast's file offline store.

Workload (issue #4): 1,000,000 feature rows (10,000 entities x 100 event times, 10 FLOAT64 features)
and 100,000 entity rows to join at random times. 1,000 of the entity rows sit before their entity's
first feature row, so no value qualifies for them: a correct join returns them with null features.
sluice reads its own dataset layout (date partitions of stream batch files); Feast reads the same
rows from one Parquet file. Both results are compared wherever Feast returns a row. Prints one JSON
object on its last line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.spec import FeatureViewSpec  # noqa: E402
from offline_store import get_historical_features  # noqa: E402
from offline_store.dataset import OfflineDataset  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = [f"f{index}" for index in range(10)]


def build(
    root: Path, *, entities: int, times: int, labels: int, early: int
) -> tuple[FeatureViewSpec, pd.DataFrame]:
    rng = np.random.default_rng(0)
    spec = FeatureViewSpec(
        name="driver_stats",
        project="bench",
        topic="drivers",
        join_keys={"driver_id": "INT64"},
        timestamp_field="ts",
        message_schema={},
        features=dict.fromkeys(FEATURES, "FLOAT64"),
        offline_path=str(root / "driver_stats"),
    )
    # Each entity's rows start within its first day and are spread over 10 days.
    span_us = 10 * 86_400 * 1_000_000
    start_us = int(T0.timestamp() * 1e6)
    keys = np.repeat(np.arange(entities, dtype=np.int64), times)
    offsets = rng.integers(0, span_us, entities * times)
    first = np.full(entities, np.iinfo(np.int64).max)
    np.minimum.at(first, keys, offsets)
    event_us = start_us + offsets
    values = {name: rng.random(entities * times) for name in FEATURES}
    dataset = OfflineDataset(spec=spec)
    for partition, chunk in enumerate(np.array_split(np.arange(entities * times), 10)):
        dataset.write_batch(
            partition=partition,
            first_offset=int(chunk[0]),
            last_offset=int(chunk[-1]),
            keys=keys[chunk],
            event_times_us=event_us[chunk],
            created_times_us=event_us[chunk],
            features={name: column[chunk] for name, column in values.items()},
        )
    dataset.read().to_pandas().to_parquet(root / "feast.parquet")
    label_keys = rng.integers(0, entities, labels)
    label_us = start_us + rng.integers(0, span_us + 86_400 * 1_000_000, labels)
    # The first `early` labels come before their entity's first feature row.
    label_us[:early] = start_us + first[label_keys[:early]] - 1_000_000
    entity_df = pd.DataFrame(
        {"driver_id": label_keys, "event_timestamp": pd.to_datetime(label_us, unit="us", utc=True)}
    )
    return spec, entity_df


def feast_store(root: Path) -> object:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="driver_stats",
        entities=[driver],
        ttl=timedelta(0),
        schema=[Field(name="driver_id", dtype=Int64)]
        + [Field(name=name, dtype=Float64) for name in FEATURES],
        source=FileSource(
            path=str(root / "feast.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        ),
    )
    store = FeatureStore(
        config=RepoConfig(
            project="offline_bench",
            provider="local",
            registry=str(root / "registry.db"),
            online_store={"type": "sqlite", "path": str(root / "online.db")},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=root,
        )
    )
    store.apply([driver, view])
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--times", type=int, default=100, help="feature rows per entity")
    parser.add_argument("--labels", type=int, default=100_000, help="entity rows to join")
    parser.add_argument(
        "--early", type=int, default=1_000, help="entity rows with no value at or before them"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the median is reported")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sluice-offline-read-"))
    try:
        spec, entity_df = build(
            root, entities=args.entities, times=args.times, labels=args.labels, early=args.early
        )
        store = feast_store(root)
        features = [f"driver_stats:{name}" for name in FEATURES]
        sluice_times, feast_times = [], []
        ours = theirs = pd.DataFrame()
        for _ in range(args.runs):
            started = time.perf_counter()
            ours = get_historical_features(entity_df=entity_df, features=features, repo=[spec]).to_df()
            sluice_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            theirs = store.get_historical_features(entity_df=entity_df, features=features).to_df()  # type: ignore[attr-defined]
            feast_times.append(time.perf_counter() - started)
            print(f"sluice {sluice_times[-1]:.2f} s, feast {feast_times[-1]:.2f} s", file=sys.stderr)

        keys = ["driver_id", "event_timestamp"]
        merged = theirs.drop_duplicates(keys).merge(
            ours.drop_duplicates(keys), on=keys, suffixes=("_feast", "_ours")
        )
        agree = all(
            np.allclose(merged[f"{name}_feast"], merged[f"{name}_ours"], equal_nan=True) for name in FEATURES
        )
        early_null = bool(ours.iloc[: args.early][FEATURES].isna().all().all())
        sluice_s, feast_s = statistics.median(sluice_times), statistics.median(feast_times)
        print(
            json.dumps(
                {
                    "sluice_s": round(sluice_s, 3),
                    "feast_s": round(feast_s, 3),
                    "speedup": round(feast_s / sluice_s, 1),
                    "rows_in": len(entity_df),
                    "sluice_rows_out": len(ours),
                    "feast_rows_out": len(theirs),
                    "feature_rows": args.entities * args.times,
                    "agree_where_feast_returns_a_row": agree,
                    "compared_rows": len(merged),
                    "early_rows_null_in_sluice": early_null,
                    "runs": args.runs,
                }
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
