"""Point-in-time correct training sets from the Parquet datasets, with DuckDB's ASOF join.

For each entity row and feature view, the feature values come from the latest row of that entity
whose event time is at or before the entity row's timestamp (at one event time, the row with the
highest source offset: the last correction of the log),
and only if it is no older than the view's ttl. A value from after the timestamp never appears.
Every entity row comes back, in the order given; where no feature row qualifies, the features
are null, except a windowed count before the entity's first row, which is 0 (its window is empty).
(Feast 0.67's file offline store drops such rows without a word.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.repo import FeatureRepo
from features.schema import LIST_ELEMENTS
from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from offline_store.duck import parquet_scan, quote

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RetrievalError", "TrainingSet", "get_historical_features"]

_ROW = "__sluice_row"
_ENTITY_TIME = "__sluice_entity_time"
_ENTITY_ORDER = "__sluice_entity_order"
# Above every source offset (an int64) plus one.
_OFFSET_SCALE = 10**19


class RetrievalError(ValueError):
    """The entity frame or the feature references cannot make a training set; the message says why."""


@dataclass(frozen=True)
class TrainingSet:
    """The entity rows with their point-in-time feature values, like Feast's ``RetrievalJob``."""

    table: pa.Table

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_df(self) -> pd.DataFrame:
        """The rows as pandas. An integer column holding nulls comes back as pandas' nullable integer
        type (``Int64``), not float64 as plain pandas makes it, which would round values past 2^53."""
        import pandas as pd

        nullable = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
        frame = self.table.to_pandas()
        for field in self.table.schema:
            column = self.table.column(field.name)
            if field.type in nullable and column.null_count:
                frame[field.name] = column.to_pandas(types_mapper=nullable.get).array
        return frame

    def __len__(self) -> int:
        return int(self.table.num_rows)


def get_historical_features(
    *,
    entity_df: pd.DataFrame | pa.Table,
    features: Sequence[str],
    repo: FeatureRepo | str | Path | Sequence[FeatureViewSpec],
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
) -> TrainingSet:
    """Join each entity row with the features as they were at its ``timestamp_column``.

    ``entity_df`` has the views' join keys and a timestamp column (naive times are UTC);
    ``features`` are ``"feature_view:feature"`` references; ``repo`` is a loaded repo, its path,
    or the feature view specs themselves. On-demand views (of a repo) are computed from their
    sources as of each row, their request data taken from entity_df's columns.
    """
    if isinstance(repo, (str, Path)):
        from features.repo import load_repo

        repo = load_repo(Path(repo))
    if isinstance(repo, FeatureRepo) and not isinstance(features, str):
        from offline_store.on_demand import on_demand_views, with_on_demand

        views = on_demand_views(repo.objects)
        if any(reference.partition(":")[0] in views for reference in features):
            specs = list(repo.specs)
            table = with_on_demand(
                features=features,
                views=views,
                full_feature_names=full_feature_names,
                retrieve=lambda plain: (
                    get_historical_features(
                        entity_df=entity_df,
                        features=plain,
                        repo=specs,
                        full_feature_names=True,
                        timestamp_column=timestamp_column,
                    ).table
                ),
                error=RetrievalError,
            )
            return TrainingSet(table)
    return _retrieve(entity_df, features, _specs(repo), full_feature_names, timestamp_column)


def _retrieve(
    entity_df: pd.DataFrame | pa.Table,
    features: Sequence[str],
    specs: list[FeatureViewSpec],
    full_feature_names: bool,
    timestamp_column: str,
) -> TrainingSet:
    import duckdb

    requested = _resolve(features, specs)
    entities = _entity_table(entity_df, timestamp_column)
    outputs = _output_names(requested, full_feature_names, entities.column_names)
    for spec, _ in requested:
        missing = [key for key in spec.join_keys if key not in entities.column_names]
        if missing:
            raise RetrievalError(
                f"entity_df has no column {missing[0]!r}, which feature view {spec.name!r} is keyed by"
            )

    bounds = pc.min_max(entities[_ENTITY_TIME]).as_py()
    earliest, latest = bounds["min"], bounds["max"]
    connection = duckdb.connect()
    try:
        connection.register("entities", entities)
        entity_order = f"epoch_us({_ENTITY_TIME})::HUGEINT * {_OFFSET_SCALE} + {_OFFSET_SCALE - 1}"
        connection.execute(
            f"CREATE TEMP VIEW keyed AS SELECT *, {entity_order} AS {_ENTITY_ORDER} FROM entities"
        )
        hidden = {_ENTITY_TIME, _ENTITY_ORDER}
        selects = [f"e.{quote(name)}" for name in entities.column_names if name not in hidden]
        joins = []
        for index, (spec, names) in enumerate(requested):
            alias = f"v{index}"
            dataset = OfflineDataset(spec=spec)
            files = dataset.paths(earliest=_earliest_needed(earliest, spec.ttl), latest=latest)
            scan = parquet_scan(connection, dataset, files) if files else None
            joins.append(_asof_join(spec, names, alias, scan))
            ttl_us = spec.ttl // timedelta(microseconds=1)
            fresh = (
                f"epoch_us(e.{_ENTITY_TIME}) - {alias}.__feature_time_us <= {ttl_us}" if ttl_us else "TRUE"
            )
            counts = {a.feature for a in spec.aggregations if a.function == "count"}
            for name in names:
                # Before an entity's first row its windows are empty: a count of 0, like any empty window.
                empty = f"WHEN {alias}.__feature_time_us IS NULL THEN 0 " if name in counts else ""
                selects.append(
                    f"CASE {empty}WHEN {fresh} THEN {alias}.{quote(name)} END "
                    f"AS {quote(outputs[(spec.name, name)])}"
                )
        query = f"SELECT {', '.join(selects)} FROM keyed e {' '.join(joins)} ORDER BY e.{_ROW}"
        table = connection.sql(query).to_arrow_table()
    finally:
        connection.close()
    return TrainingSet(table.drop_columns([_ROW]))


def _asof_join(spec: FeatureViewSpec, names: list[str], alias: str, scan: str | None) -> str:
    keys = list(spec.join_keys)
    columns = ", ".join(quote(name) for name in [*keys, *names])
    if scan is not None:
        # The ASOF key orders by event time, then source offset, so that at one event time the
        # row written last in the log (the correction, the one served) wins, without a window function.
        source = (
            f"SELECT {columns}, epoch_us(event_timestamp) AS __feature_time_us, "
            f"epoch_us(event_timestamp)::HUGEINT * {_OFFSET_SCALE} "
            f"+ coalesce(source_offset + 1, 0) AS __feature_order "
            f"FROM {scan}"
        )
    else:
        nulls = ", ".join(f"NULL::{_duck_type(spec, name)} AS {quote(name)}" for name in [*keys, *names])
        source = (
            f"SELECT {nulls}, NULL::BIGINT AS __feature_time_us, NULL::HUGEINT AS __feature_order WHERE FALSE"
        )
    conditions = " AND ".join(f"e.{quote(key)} = {alias}.{quote(key)}" for key in keys)
    return (
        f"ASOF LEFT JOIN ({source}) {alias} ON {conditions} AND e.{_ENTITY_ORDER} >= {alias}.__feature_order"
    )


def _specs(repo: FeatureRepo | str | Path | Sequence[FeatureViewSpec]) -> list[FeatureViewSpec]:
    if isinstance(repo, (str, Path)):
        from features.repo import load_repo

        return list(load_repo(Path(repo)).specs)
    if isinstance(repo, FeatureRepo):
        return list(repo.specs)
    return list(repo)


def _resolve(
    features: Sequence[str], specs: list[FeatureViewSpec]
) -> list[tuple[FeatureViewSpec, list[str]]]:
    if isinstance(features, str):
        raise RetrievalError('features must be a list of "feature_view:feature" strings, not one string')
    by_name = {spec.name: spec for spec in specs}
    requested: dict[str, list[str]] = {}
    for reference in features:
        view_name, _, feature = reference.partition(":")
        spec = by_name.get(view_name)
        if spec is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise RetrievalError(f"no feature view named {view_name!r} (known: {known})")
        if feature not in spec.features:
            raise RetrievalError(
                f"feature view {view_name!r} has no feature {feature!r} (it has: {', '.join(spec.features)})"
            )
        names = requested.setdefault(view_name, [])
        if feature not in names:
            names.append(feature)
    return [(by_name[name], names) for name, names in requested.items()]


def _output_names(
    requested: list[tuple[FeatureViewSpec, list[str]]], full_feature_names: bool, entity_columns: list[str]
) -> dict[tuple[str, str], str]:
    outputs = {
        (spec.name, name): f"{spec.name}__{name}" if full_feature_names else name
        for spec, names in requested
        for name in names
    }
    taken = set(entity_columns)
    for output in outputs.values():
        if output in taken:
            raise RetrievalError(
                f"feature {output!r} clashes with an entity_df column or another view's feature; "
                "pass full_feature_names=True or rename the column"
            )
        taken.add(output)
    return outputs


def _entity_table(entity_df: Any, timestamp_column: str) -> pa.Table:
    table = (
        entity_df
        if isinstance(entity_df, pa.Table)
        else pa.Table.from_pandas(entity_df, preserve_index=False)
    )
    if timestamp_column not in table.column_names:
        raise RetrievalError(
            f"entity_df has no {timestamp_column!r} column; give each row the time its label refers to"
        )
    times = table[timestamp_column]
    if not pa.types.is_timestamp(times.type):
        raise RetrievalError(f"entity_df column {timestamp_column!r} holds {times.type}, not timestamps")
    if times.null_count:
        raise RetrievalError(
            f"entity_df column {timestamp_column!r} has {times.null_count} missing timestamps"
        )
    utc = times.cast(pa.timestamp("us", tz=times.type.tz or "UTC")).cast(pa.timestamp("us", tz="UTC"))
    table = table.append_column(_ENTITY_TIME, utc)
    return table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _earliest_needed(earliest: datetime | None, ttl: timedelta) -> datetime | None:
    """The oldest feature row that can still be served: unbounded without a ttl."""
    return earliest - ttl if earliest is not None and ttl > timedelta(0) else None


_DUCK_TYPES = {
    "INT64": "BIGINT",
    "INT32": "INTEGER",
    "FLOAT64": "DOUBLE",
    "FLOAT32": "FLOAT",
    "STRING": "VARCHAR",
    "BOOL": "BOOLEAN",
    "UNIX_TIMESTAMP": "TIMESTAMPTZ",
    "BYTES": "BLOB",
}
_DUCK_TYPES |= {list_type: f"{_DUCK_TYPES[element]}[]" for list_type, element in LIST_ELEMENTS.items()}


def _duck_type(spec: FeatureViewSpec, column: str) -> str:
    dtype = spec.join_keys.get(column) or spec.features[column]
    return _DUCK_TYPES.get(dtype, "VARCHAR")
