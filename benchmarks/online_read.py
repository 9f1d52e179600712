"""Online reads: sluice's OnlineClient against Feast's get_online_features and a raw redis-py pipeline.

Workload (issue #4): Feast registers three feature views of 10 FLOAT64 features each, keyed by one
INT64 entity, and writes 1,000 entities into Redis with ``write_to_online_store``. All three readers
then read the same Redis data in one process, interleaved call by call:

- ``single``: 1 entity x 10 features (one view);
- ``batch100``: 100 entities x 10 features (one view);
- ``batch100_3fv``: 100 entities x 3 views x 10 features;
- ``odfv_python_single`` / ``odfv_pandas_single`` (issue: at most 0.1 ms / 1 ms added p50): 1 entity, an
  on-demand view over ``view0`` adding 3 of its features and the request field ``val_to_add``, in
  python and pandas mode. Each is timed in one loop with the plain read of its source features (all
  10 of ``view0``), for sluice and Feast, and its added cost is the difference of the two p50s; the
  function's own time on one read's input is reported beside it (no reader can save that part).

The raw reader sends the same HMGET commands as sluice in one redis-py pipeline (a plain HMGET for
one entity) and does not decode the replies: it is the floor for a Python client. Feast and sluice
return the same values (checked before timing). Prints one JSON object on its last line.

``--redis-type redis_cluster --redis-url redis://127.0.0.1:7000/0`` runs the same on the local stack's
Redis Cluster: Feast with ``redis_type: redis_cluster`` and sluice on the same cluster, and the raw
reader as redis-py's cluster pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.config import RedisConfig, load_config  # noqa: E402
from features.registry import feast_repo_config  # noqa: E402
from online_store import AsyncOnlineClient, OnlineClient  # noqa: E402
from online_store.connection import client as redis_client  # noqa: E402
from online_store.reads import ReadPlan  # noqa: E402

VIEWS, FEATURES, ENTITIES = 3, 10, 1000
ON_DEMAND_CASES = {"odfv_python_single": "total_python", "odfv_pandas_single": "total_pandas"}
"""Case name to its on-demand view, both computing ``total``."""


def total_python(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "total": [
            a + b + c + add
            for a, b, c, add in zip(
                inputs["f0_0"], inputs["f0_1"], inputs["f0_2"], inputs["val_to_add"], strict=True
            )
        ]
    }


def total_pandas(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["total"] = inputs["f0_0"] + inputs["f0_1"] + inputs["f0_2"] + inputs["val_to_add"]
    return out


def on_demand_views(source: Any) -> list[Any]:
    """The request source and both on-demand views; call once a process (dill reads a source once)."""
    from feast import Field, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64

    request = RequestSource(name="bench_request", schema=[Field(name="val_to_add", dtype=Int64)])
    schema = [Field(name="total", dtype=Float64)]
    return [
        request,
        on_demand_feature_view(sources=[source, request], schema=schema, mode="python")(total_python),
        on_demand_feature_view(sources=[source, request], schema=schema, mode="pandas")(total_pandas),
    ]


def build(root: Path, project: str, online: RedisConfig) -> Any:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    section = f"redis:\n  redis_type: {online.redis_type}\n  url: {online.url}\n"
    (root / "sluice.yaml").write_text(f"project: {project}\n{section}")
    now = datetime.now(UTC).replace(microsecond=0)
    rng = np.random.default_rng(0)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    store = FeatureStore(config=feast_repo_config(load_config(root), root))
    views = []
    frames = []
    for index in range(VIEWS):
        names = [f"f{index}_{feature}" for feature in range(FEATURES)]
        frame = pd.DataFrame({name: rng.random(ENTITIES) for name in names})
        frame.insert(0, "driver_id", np.arange(ENTITIES, dtype=np.int64))
        frame["event_timestamp"] = now - timedelta(minutes=5)
        path = root / f"view{index}.parquet"
        frame.to_parquet(path)
        views.append(
            FeatureView(
                name=f"view{index}",
                entities=[driver],
                ttl=timedelta(days=1),
                schema=[Field(name="driver_id", dtype=Int64)]
                + [Field(name=name, dtype=Float64) for name in names],
                source=FileSource(path=str(path), timestamp_field="event_timestamp"),
            )
        )
        frames.append(frame)
    store.apply([driver, *views, *on_demand_views(views[0])])
    for view, frame in zip(views, frames, strict=True):
        store.write_to_online_store(view.name, frame)
    return store


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="calls per reader and case")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-type", choices=["redis", "redis_cluster"], default="redis")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sluice-online-read-"))
    project = "bench_" + uuid.uuid4().hex[:8]
    redis_config = RedisConfig(redis_type=args.redis_type, url=args.redis_url)
    client_redis = redis_client(redis_config)
    try:
        store = build(root, project, redis_config)
        ours = OnlineClient(repo_path=root)
        raw = redis_client(redis_config)
        rng = np.random.default_rng(1)
        cases: dict[str, tuple[list[str], int]] = {
            "single": ([f"view0:f0_{feature}" for feature in range(FEATURES)], 1),
            "batch100": ([f"view0:f0_{feature}" for feature in range(FEATURES)], 100),
            "batch100_3fv": (
                [f"view{view}:f{view}_{feature}" for view in range(VIEWS) for feature in range(FEATURES)],
                100,
            ),
        }
        results: dict[str, Any] = {}
        for case, (features, count) in cases.items():
            plan = ReadPlan(catalog=ours.catalog, features=features)

            def raw_read(rows: list[dict[str, int]], plan: ReadPlan = plan) -> Any:
                commands = plan.commands({"driver_id": [row["driver_id"] for row in rows]})
                if len(commands) == 1:
                    return raw.execute_command("HMGET", commands[0][0], *commands[0][1])
                pipeline = raw.pipeline(transaction=False)
                for key, fields in commands:
                    pipeline.execute_command("HMGET", key, *fields)
                return pipeline.execute()

            readers: dict[str, Callable[[list[dict[str, int]]], Any]] = {
                "feast": lambda rows, features=features: store.get_online_features(
                    features=features, entity_rows=rows
                ).to_dict(),
                "sluice": lambda rows, features=features: ours.get_online_features(
                    features=features, entity_rows=rows
                ),
                "raw": raw_read,
            }
            probe = [{"driver_id": int(key)} for key in rng.choice(ENTITIES, count, replace=False)]
            expected = readers["feast"](probe)
            got = readers["sluice"](probe)
            assert set(got) == set(expected)
            for name, values in expected.items():
                assert np.allclose(np.asarray(got[name], dtype=float), np.asarray(values, dtype=float)), name
            samples: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(args.iterations // (5 if count > 1 else 1)):
                rows = [{"driver_id": int(key)} for key in rng.choice(ENTITIES, count, replace=False)]
                for name, reader in readers.items():
                    started = time.perf_counter()
                    reader(rows)
                    samples[name].append(time.perf_counter() - started)
            for name, timings in samples.items():
                p50, p99 = percentiles(timings)
                prefix = "" if name == "sluice" else f"{name}_"
                results[f"{prefix}{case}_p50_ms"] = round(p50, 4)
                results[f"{prefix}{case}_p99_ms"] = round(p99, 4)
            print(
                f"{case}: sluice p50 {results[f'{case}_p50_ms']} ms, "
                f"feast {results[f'feast_{case}_p50_ms']} ms, raw {results[f'raw_{case}_p50_ms']} ms",
                file=sys.stderr,
            )
        results.update(async_case(root, rng, args.iterations // 5))
        for case, view in ON_DEMAND_CASES.items():
            results[case] = on_demand_case(store, ours, view, rng, args.iterations)
            figures = results[case]
            print(
                f"{case}: sluice p50 {figures['sluice_p50_ms']} ms "
                f"(+{figures['sluice_added_p50_ms']} over plain), feast p50 {figures['feast_p50_ms']} ms "
                f"(+{figures['feast_added_p50_ms']} over plain)",
                file=sys.stderr,
            )
        for case in cases:
            results[f"speedup_vs_feast_{case}"] = round(
                results[f"feast_{case}_p50_ms"] / results[f"{case}_p50_ms"], 2
            )
            results[f"ratio_to_raw_{case}"] = round(
                results[f"{case}_p50_ms"] / results[f"raw_{case}_p50_ms"], 2
            )
        results["iterations"] = args.iterations
        results["redis_type"] = args.redis_type
        print(json.dumps(results))
    finally:
        for key in client_redis.scan_iter(match=f"*{project}".encode(), count=1000):
            client_redis.delete(key)
        shutil.rmtree(root, ignore_errors=True)


def on_demand_case(
    store: Any, ours: OnlineClient, view: str, rng: np.random.Generator, iterations: int
) -> dict[str, float]:
    """One entity through an on-demand view and, in the same loop, the plain read of its sources."""
    plain = [f"view0:f0_{feature}" for feature in range(FEATURES)]
    readers: dict[str, Callable[[list[dict[str, int]]], Any]] = {
        "feast": lambda rows: store.get_online_features(
            features=[f"{view}:total"], entity_rows=rows
        ).to_dict(),
        "sluice": lambda rows: ours.get_online_features(features=[f"{view}:total"], entity_rows=rows),
        "feast_plain": lambda rows: store.get_online_features(features=plain, entity_rows=rows).to_dict(),
        "sluice_plain": lambda rows: ours.get_online_features(features=plain, entity_rows=rows),
    }

    def entity_rows() -> list[dict[str, int]]:
        return [{"driver_id": int(rng.integers(ENTITIES)), "val_to_add": int(rng.integers(-1000, 1000))}]

    for _ in range(5):
        probe = entity_rows()
        expected, got = readers["feast"](probe)["total"], readers["sluice"](probe)["total"]
        assert np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float)), view
    samples: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(iterations):
        rows = entity_rows()
        # The plain reads get the join key alone, so neither reader sees request data it does not use.
        keys = [{"driver_id": row["driver_id"]} for row in rows]
        for name, reader in readers.items():
            arguments = keys if name.endswith("_plain") else rows
            started = time.perf_counter()
            reader(arguments)
            samples[name].append(time.perf_counter() - started)
    figures: dict[str, float] = {}
    for name, timings in samples.items():
        p50, p99 = percentiles(timings)
        figures[f"{name}_p50_ms"] = round(p50, 4)
        figures[f"{name}_p99_ms"] = round(p99, 4)
    for reader in ("sluice", "feast"):
        figures[f"{reader}_added_p50_ms"] = round(
            figures[f"{reader}_p50_ms"] - figures[f"{reader}_plain_p50_ms"], 4
        )
    figures["speedup_vs_feast"] = round(figures["feast_p50_ms"] / figures["sluice_p50_ms"], 2)
    figures["function_alone_p50_ms"] = round(function_alone(ours, view, iterations), 4)
    return figures


def function_alone(ours: OnlineClient, view: str, iterations: int) -> float:
    """The p50 of the view's own function on one read's input (what no reader can save), in ms."""
    from online_store.on_demand import Transform, frame_like_arrow

    transform = Transform(view=ours.catalog.on_demand[view])
    inputs: dict[str, list[Any]] = {"driver_id": [1], "val_to_add": [3]}
    for feature in range(FEATURES):
        inputs[f"f0_{feature}"] = inputs[f"view0__f0_{feature}"] = [0.5]
    timings = []
    for _ in range(iterations):
        # A fresh frame each time, as each read has: pandas caches a frame's columns once read.
        argument = frame_like_arrow(inputs) if transform.view.mode == "pandas" else dict(inputs)
        started = time.perf_counter()
        transform.function(argument)
        timings.append(time.perf_counter() - started)
    return percentiles(timings)[0]


def async_case(root: Path, rng: np.random.Generator, iterations: int) -> dict[str, float]:
    """AsyncOnlineClient on the batch100 case, one call at a time on an asyncio loop."""
    features = [f"view0:f0_{feature}" for feature in range(FEATURES)]

    async def run() -> list[float]:
        async with AsyncOnlineClient(repo_path=root) as client:
            timings = []
            for _ in range(iterations):
                rows = [{"driver_id": int(key)} for key in rng.choice(ENTITIES, 100, replace=False)]
                started = time.perf_counter()
                await client.get_online_features(features=features, entity_rows=rows)
                timings.append(time.perf_counter() - started)
            return timings

    p50, p99 = percentiles(asyncio.run(run()))
    return {"async_batch100_p50_ms": round(p50, 4), "async_batch100_p99_ms": round(p99, 4)}


if __name__ == "__main__":
    main()
