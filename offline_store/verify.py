"""``sluice verify``: prove that Redis holds exactly the latest Parquet row of every entity.

Values are compared as Redis holds them: a FLOAT32 (in a list too) in float32, a timestamp in whole
seconds, lists element by element (NaN equal to NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from online_store.connection import OnlineRedis
from online_store.layout import (
    decode_timestamp,
    decode_value,
    encode_value,
    entity_keys,
    feature_field,
    timestamp_field,
)

__all__ = ["VerifyReport", "latest_rows", "verify"]

_CHUNK = 2000
# Types whose offline value is not the one Redis holds: each is compared through the online encoding.
_ENCODED = frozenset(
    {
        "UNIX_TIMESTAMP",
        "BYTES",
        "BYTES_LIST",
        "STRING_LIST",
        "INT32_LIST",
        "INT64_LIST",
        "DOUBLE_LIST",
        "FLOAT_LIST",
        "BOOL_LIST",
        "UNIX_TIMESTAMP_LIST",
    }
)


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """What ``verify`` compared and what differed."""

    feature_view: str
    offline_rows: int
    offline_duplicates: int
    """Rows whose (entity, event time, source offset, created time) appears more than once: never expected."""
    entities: int
    matching: int
    missing_online: list[Any] = field(default_factory=list)
    mismatched: list[tuple[Any, str]] = field(default_factory=list)
    """(entity key, what differs) for each entity whose online row is not its latest offline row."""

    @property
    def ok(self) -> bool:
        return not self.missing_online and not self.mismatched and not self.offline_duplicates

    def describe(self, *, examples: int = 5) -> str:
        lines = [
            f"{self.feature_view}: {self.offline_rows} offline rows, {self.entities} entities, "
            f"{self.matching} match online, {len(self.missing_online)} missing online, "
            f"{len(self.mismatched)} differ, {self.offline_duplicates} duplicate offline rows"
        ]
        lines += [f"  missing online: {key!r}" for key in self.missing_online[:examples]]
        lines += [f"  differs: {key!r}: {what}" for key, what in self.mismatched[:examples]]
        return "\n".join(lines)


def latest_rows(dataset: OfflineDataset) -> tuple[Any, int, int]:
    """The latest row per entity (by event time, source offset, then created time), the row count and
    the duplicate count."""
    frame = dataset.read().to_pandas()
    join_names = list(dataset.spec.join_keys)
    identity = [*join_names, "event_timestamp", "source_offset", "created_timestamp"]
    duplicates = int(frame.duplicated(subset=identity).sum())
    version = ["event_timestamp", "source_offset", "created_timestamp"]
    ordered = frame.sort_values(version, kind="stable", na_position="first")
    return ordered.groupby(join_names, sort=False).tail(1), len(frame), duplicates


def verify(
    spec: FeatureViewSpec, client: OnlineRedis, *, progress: Callable[[int, int], None] | None = None
) -> VerifyReport:
    """Compare each entity's latest offline row with Redis (a cluster's pipeline asks each node);
    ``progress(done, total)`` hears of each chunk of entities checked."""
    latest, rows, duplicates = latest_rows(OfflineDataset(spec=spec))
    join_names = list(spec.join_keys)
    keys: list[Any] = (
        latest[join_names[0]].tolist()
        if len(join_names) == 1
        else list(latest[join_names].itertuples(index=False))
    )
    features = list(spec.features)
    fields = [feature_field(spec.name, name) for name in features] + [timestamp_field(spec.name)]
    redis_keys = entity_keys(keys, spec.join_keys, spec.project)
    missing: list[Any] = []
    mismatched: list[tuple[Any, str]] = []
    matching = 0
    expected_times = latest["event_timestamp"].tolist()
    expected = {name: _online(latest[name].tolist(), dtype) for name, dtype in spec.features.items()}
    for start in range(0, len(keys), _CHUNK):
        pipeline = client.pipeline(transaction=False)
        for redis_key in redis_keys[start : start + _CHUNK]:
            pipeline.hmget(redis_key, fields)  # type: ignore[arg-type]
        for offset, stored in enumerate(pipeline.execute()):
            row = start + offset
            key = keys[row]
            if stored[-1] is None:
                missing.append(key)
                continue
            online_time = decode_timestamp(stored[-1])
            if online_time != expected_times[row].to_pydatetime():
                mismatched.append((key, f"event time online {online_time} != offline {expected_times[row]}"))
                continue
            differences = [
                f"{name}: online {decode_value(raw)!r} != offline {expected[name][row]!r}"
                for name, raw in zip(features, stored[:-1], strict=True)
                if not _same(decode_value(raw), expected[name][row])
            ]
            if differences:
                mismatched.append((key, "; ".join(differences)))
            else:
                matching += 1
        if progress is not None:
            progress(min(start + _CHUNK, len(keys)), len(keys))
    return VerifyReport(
        feature_view=spec.name,
        offline_rows=rows,
        offline_duplicates=duplicates,
        entities=len(keys),
        matching=matching,
        missing_online=missing,
        mismatched=mismatched,
    )


def _online(values: list[Any], dtype: str) -> list[Any]:
    """Offline values as Redis should hold them, decoded. pandas gives a list as a numpy array and a
    timestamp as a pandas Timestamp; the writer takes datetimes, so timestamps are turned back into
    datetimes first, and rounded to seconds as the writer rounds them."""
    if dtype not in _ENCODED:
        return values
    result: list[Any] = []
    for value in values:
        if value is None or (not isinstance(value, np.ndarray) and pd.isna(value)):
            result.append(None)
            continue
        if dtype == "UNIX_TIMESTAMP":
            value = value.to_pydatetime()
        elif dtype == "UNIX_TIMESTAMP_LIST":
            value = value.astype("datetime64[us]").tolist()
        result.append(decode_value(encode_value(value, dtype)))
    return result


def _same(online: Any, offline: Any) -> bool:
    offline_missing = offline is None or (isinstance(offline, float) and math.isnan(offline))
    if online is None or offline_missing:
        return online is None and offline_missing
    if isinstance(online, list) and isinstance(offline, list):
        return len(online) == len(offline) and all(map(_same, online, offline))
    if isinstance(online, float) or isinstance(offline, float):
        return float(online) == float(offline) or (online != online and offline != offline)
    return bool(online == offline)
