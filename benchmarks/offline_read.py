"""Training sets: sluice's get_historical_features (DuckDB ASOF join) against Feast's file offline store.

Workload (issues #4 and #13): 1,000,000 raw events for 10,000 entities over 10 days, aggregated by the
stream worker's own window state (``streams.windows.WindowState``, 4 partitions, batches of 20,000)
into change-point rows: a 1-day tumbling count and sum, and a 7-day count, sum and mean sliding by a
day. 100,000 entity rows are joined at random times; 1,000 of them sit before their entity's first
event. sluice reads its own dataset layout (date partitions of stream batch files); Feast reads the
same rows from one Parquet file. Checked: a sample of label rows against a brute-force recomputation
from the raw events (the value at T), and sluice against Feast wherever Feast returns a row. Also
reported: rows and Parquet bytes per event.

The S3 case (skipped with ``--no-s3``) copies the same dataset's objects to a bucket on the local
stack's S3 server (moto, ``SLUICE_S3_ENDPOINT``) and times the same join read from ``s3://`` in the
same runs, checked equal to the local result. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.config import OfflineStoreConfig  # noqa: E402
from features.spec import AggregationSpec, FeatureViewSpec  # noqa: E402
from offline_store import get_historical_features  # noqa: E402
from offline_store.dataset import OfflineDataset  # noqa: E402
from streams.windows import WindowState  # noqa: E402
from tests.reference import value_at  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MICROS = 1_000_000
DAY = timedelta(days=1)
WINDOWS = {
    "count_1d": ("count", DAY, DAY),
    "sum_1d": ("sum", DAY, DAY),
    "count_7d": ("count", 7 * DAY, DAY),
    "sum_7d": ("sum", 7 * DAY, DAY),
    "mean_7d": ("mean", 7 * DAY, DAY),
}
FEATURES = list(WINDOWS)


def view(root: Path) -> FeatureViewSpec:
    aggregations = tuple(
        AggregationSpec(
            feature=name,
            column="amount",
            function=function,
            window=window,
            slide=slide,
            dtype="INT64" if function == "count" else "FLOAT64",
        )
        for name, (function, window, slide) in WINDOWS.items()
    )
    return FeatureViewSpec(
        name="driver_stats",
        project="bench",
        topic="drivers",
        join_keys={"driver_id": "INT64"},
        timestamp_field="ts",
        message_schema={"driver_id": "INT64", "amount": "FLOAT64", "ts": "UNIX_TIMESTAMP"},
        features={a.feature: a.dtype for a in aggregations},
        aggregations=aggregations,
        watermark_delay=timedelta(seconds=30),
        offline_path=str(root / "driver_stats"),
    )


def build(
    root: Path, *, entities: int, events: int, labels: int, early: int, partitions: int, batch: int
) -> tuple[FeatureViewSpec, pd.DataFrame, pd.DataFrame, float]:
    """The events, streamed through the worker's window state into the dataset. Returns the view, the
    raw events, the entity rows to join, and the seconds the window state took."""
    rng = np.random.default_rng(0)
    spec = view(root)
    span_us = 10 * 86_400 * MICROS
    start_us = int(T0.timestamp() * MICROS)
    ts = np.sort(rng.integers(0, span_us, events)) - rng.integers(0, 20 * MICROS, events)  # jitter < delay
    raw = pd.DataFrame(
        {
            "driver_id": rng.integers(0, entities, events),
            "amount": np.round(rng.lognormal(3, 1, events), 2),
            "ts_us": start_us + ts,
        }
    )
    raw["partition"] = raw["driver_id"] % partitions
    raw["offset"] = raw.groupby("partition").cumcount()
    dataset = OfflineDataset(spec=spec)
    streaming_s = 0.0
    for partition, records in raw.groupby("partition"):
        state = WindowState(spec=spec)
        for first in range(0, len(records), batch):
            chunk = records.iloc[first : first + batch]
            started = time.perf_counter()
            changes = state.advance(
                state.ids_for(chunk["driver_id"].tolist()),
                chunk["ts_us"].to_numpy(),
                chunk["offset"].to_numpy(),
                {"amount": chunk["amount"].to_numpy()},
            )
            streaming_s += time.perf_counter() - started
            dataset.write_batch(
                partition=int(partition),
                first_offset=int(chunk["offset"].iloc[0]),
                last_offset=int(chunk["offset"].iloc[-1]),
                keys=[state.entity_keys[entity] for entity in changes.entity_ids.tolist()],
                event_times_us=changes.times,
                created_times_us=np.full(len(changes), start_us + span_us + first, dtype=np.int64),
                offsets=np.full(len(changes), int(chunk["offset"].iloc[-1]), dtype=np.int64),
                features=changes.features,
            )
    dataset.read().to_pandas().to_parquet(root / "feast.parquet")
    first_event = raw.groupby("driver_id")["ts_us"].min()
    label_keys = rng.choice(first_event.index.to_numpy(), labels)
    newest = int(raw.groupby("partition")["ts_us"].max().min())
    label_us = rng.integers(start_us, newest, labels)
    # The first `early` labels come before their entity's first event.
    label_us[:early] = first_event.loc[label_keys[:early]].to_numpy() - MICROS
    entity_df = pd.DataFrame(
        {"driver_id": label_keys, "event_timestamp": pd.to_datetime(label_us, unit="us", utc=True)}
    )
    return spec, raw, entity_df, streaming_s


def copy_to_s3(spec: FeatureViewSpec) -> FeatureViewSpec:
    """The view with its dataset's objects copied to a new bucket on the stack's S3 server."""
    import pyarrow.fs as pafs

    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    endpoint = os.environ.get("SLUICE_S3_ENDPOINT", "http://127.0.0.1:5000")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3 = pafs.S3FileSystem(
        endpoint_override=endpoint.split("://")[1],
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    s3.create_dir(bucket)
    pafs.copy_files(spec.offline_path, f"{bucket}/driver_stats", destination_filesystem=s3)
    return replace(
        spec,
        offline_path=f"s3://{bucket}/driver_stats",
        offline_store=OfflineStoreConfig(endpoint_url=endpoint),
    )


def feast_store(root: Path) -> object:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    feast_view = FeatureView(
        name="driver_stats",
        entities=[driver],
        ttl=timedelta(0),
        schema=[Field(name="driver_id", dtype=Int64)]
        + [Field(name=name, dtype=Int64 if name.startswith("count") else Float64) for name in FEATURES],
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
    store.apply([driver, feast_view])
    return store


def exact_share(result: pd.DataFrame, raw: pd.DataFrame, spec: FeatureViewSpec, sample: np.ndarray) -> float:
    """The share of sampled rows whose every feature equals the brute-force value at the row's time."""
    by_driver = dict(tuple(raw.groupby("driver_id")))
    exact = 0
    for position in sample.tolist():
        row = result.iloc[position]
        at = int(pd.Timestamp(row["event_timestamp"]).value // 1000)
        expected = value_at(
            by_driver[row["driver_id"]], spec, key="driver_id", time="ts_us", order="offset",
            entity=row["driver_id"], at=at,
        )  # fmt: skip
        exact += all(
            np.isclose(float(row[name]), expected[name], rtol=1e-9, equal_nan=True) for name in FEATURES
        )
    return exact / len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=100_000, help="entity rows to join")
    parser.add_argument("--early", type=int, default=1_000, help="entity rows before their first event")
    parser.add_argument("--check", type=int, default=2_000, help="rows checked against brute force")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the median is reported")
    parser.add_argument("--no-s3", action="store_true", help="skip the same read from s3://")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sluice-offline-read-"))
    try:
        spec, raw, entity_df, streaming_s = build(
            root, entities=args.entities, events=args.events, labels=args.labels, early=args.early,
            partitions=4, batch=20_000,
        )  # fmt: skip
        dataset = OfflineDataset(spec=spec)
        rows = dataset.read().num_rows
        parquet_bytes = sum(Path(path).stat().st_size for path in dataset.paths())
        store = feast_store(root)
        remote = None if args.no_s3 else copy_to_s3(spec)
        features = [f"driver_stats:{name}" for name in FEATURES]
        sluice_times, feast_times, s3_times = [], [], []
        ours = theirs = pd.DataFrame()
        s3_equal = None
        for _ in range(args.runs):
            started = time.perf_counter()
            ours = get_historical_features(entity_df=entity_df, features=features, repo=[spec]).to_df()
            sluice_times.append(time.perf_counter() - started)
            if remote is not None:
                started = time.perf_counter()
                from_s3 = get_historical_features(
                    entity_df=entity_df, features=features, repo=[remote]
                ).to_df()
                s3_times.append(time.perf_counter() - started)
                s3_equal = from_s3.equals(ours)
            started = time.perf_counter()
            theirs = store.get_historical_features(entity_df=entity_df, features=features).to_df()  # type: ignore[attr-defined]
            feast_times.append(time.perf_counter() - started)
            print(f"sluice {sluice_times[-1]:.2f} s, feast {feast_times[-1]:.2f} s", file=sys.stderr)

        keys = ["driver_id", "event_timestamp"]
        merged = theirs.drop_duplicates(keys).merge(
            ours.drop_duplicates(keys), on=keys, suffixes=("_feast", "_ours")
        )
        agree = all(
            np.allclose(
                merged[f"{name}_feast"].astype(float), merged[f"{name}_ours"].astype(float), equal_nan=True
            )
            for name in FEATURES
        )
        sample = np.random.default_rng(1).choice(len(ours), min(args.check, len(ours)), replace=False)
        sluice_s, feast_s = statistics.median(sluice_times), statistics.median(feast_times)
        print(
            json.dumps(
                {
                    "sluice_s": round(sluice_s, 3),
                    "feast_s": round(feast_s, 3),
                    "speedup": round(feast_s / sluice_s, 1),
                    **(
                        {
                            "s3_s": round(statistics.median(s3_times), 3),
                            "s3_over_local": round(statistics.median(s3_times) / sluice_s, 2),
                            "s3_equal_to_local": s3_equal,
                        }
                        if s3_times
                        else {}
                    ),
                    "events": args.events,
                    "change_point_rows": rows,
                    "rows_per_event": round(rows / args.events, 3),
                    "parquet_bytes_per_event": round(parquet_bytes / args.events, 1),
                    "window_state_s": round(streaming_s, 2),
                    "rows_in": len(entity_df),
                    "sluice_rows_out": len(ours),
                    "feast_rows_out": len(theirs),
                    "sluice_exact_share": exact_share(ours, raw, spec, sample),
                    "checked_rows": len(sample),
                    "agree_where_feast_returns_a_row": agree,
                    "compared_rows": len(merged),
                    "early_rows_count_zero_in_sluice": bool((ours.iloc[: args.early]["count_7d"] == 0).all()),
                    "runs": args.runs,
                }
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
