"""``sluice materialize``: rebuild the online store from the Parquet dataset, for example after losing Redis.

For each entity it writes the latest offline row (by event time, source offset, then created time)
whose event time falls in [start, end). The online writer only replaces a row with a newer one, so running it
twice changes nothing, and a value the stream wrote after the dataset was read is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa

from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from offline_store.duck import parquet_scan, quote
from online_store.connection import OnlineRedis
from online_store.on_demand import StoredOnDemand
from online_store.writer import FeatureRows, OnlineWriter

__all__ = ["MaterializeReport", "feature_rows", "materialize"]

_ROWS_PER_WRITE = 20_000
_NUMERIC_LISTS = frozenset({"INT64_LIST", "INT32_LIST", "DOUBLE_LIST", "FLOAT_LIST", "BOOL_LIST"})


@dataclass(frozen=True, kw_only=True)
class MaterializeReport:
    feature_view: str
    offline_rows: int
    """Rows in the time range."""
    entities: int
    """Entities with a row in the range: each one's latest row was offered to Redis."""
    written: int
    """Entities whose online row was older and got replaced."""

    def describe(self) -> str:
        return (
            f"{self.feature_view}: {self.offline_rows} offline rows, {self.entities} entities, "
            f"{self.written} written, {self.entities - self.written} already as new online"
        )


def materialize(
    spec: FeatureViewSpec,
    client: OnlineRedis,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MaterializeReport:
    """Write each entity's latest offline row in [start, end) to Redis where Redis holds an older one;
    ``progress(done, total)`` hears of each batch of entities written."""
    import duckdb

    dataset = OfflineDataset(spec=spec)
    files = dataset.paths(earliest=start, latest=end)
    if not files:
        return MaterializeReport(feature_view=spec.name, offline_rows=0, entities=0, written=0)
    keys = ", ".join(quote(key) for key in spec.join_keys)
    conditions = []
    parameters: list[datetime] = []
    if start is not None:
        conditions.append("event_timestamp >= ?")
        parameters.append(start)
    if end is not None:
        conditions.append("event_timestamp < ?")
        parameters.append(end)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    connection = duckdb.connect()
    try:
        connection.execute(
            f"CREATE TEMP TABLE rows AS SELECT * FROM {parquet_scan(connection, dataset, files)} {where}",
            parameters,
        )
        offline_rows = int(connection.sql("SELECT count(*) FROM rows").fetchall()[0][0])
        latest = connection.sql(
            f"SELECT * FROM rows QUALIFY row_number() OVER (PARTITION BY {keys} "
            "ORDER BY event_timestamp DESC, source_offset DESC NULLS LAST, "
            "created_timestamp DESC NULLS LAST) = 1"
        ).to_arrow_table()
    finally:
        connection.close()
    writer = OnlineWriter(client=client, spec=spec)
    stored = StoredOnDemand(client=client, spec=spec) if spec.stored_on_demand else None
    written = done = 0
    for batch in latest.to_batches(_ROWS_PER_WRITE):
        rows = feature_rows(spec, batch)
        written += writer.write(rows)
        if stored is not None:  # the on-demand views the worker stores, from the same rows
            stored.write(rows)
        done += batch.num_rows
        if progress is not None:
            progress(done, latest.num_rows)
    return MaterializeReport(
        feature_view=spec.name, offline_rows=offline_rows, entities=latest.num_rows, written=written
    )


def feature_rows(spec: FeatureViewSpec, batch: pa.RecordBatch | pa.Table) -> FeatureRows:
    """Rows of a view's Parquet dataset (a table or a batch of it) as the online writer takes them."""
    join_names = list(spec.join_keys)
    if len(join_names) == 1:
        keys: list[object] = batch.column(join_names[0]).to_pylist()
    else:
        keys = list(zip(*(batch.column(name).to_pylist() for name in join_names), strict=True))
    created = batch.column("created_timestamp")
    created_us = np.asarray(created.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
    offsets = batch.column("source_offset") if "source_offset" in batch.schema.names else None
    return FeatureRows(
        keys=keys,
        event_times_us=np.asarray(
            batch.column("event_timestamp").cast(pa.int64()).to_numpy(), dtype=np.int64
        ),
        created_times_us=created_us,
        offsets=None
        if offsets is None
        else np.asarray(offsets.cast(pa.int64()).fill_null(-1).to_numpy(), dtype=np.int64),
        features={name: _values(batch.column(name), dtype) for name, dtype in spec.features.items()},
    )


def _values(column: pa.Array, dtype: str) -> Sequence[Any]:
    if dtype == "FLOAT64":
        # The writer packs a float column straight from the array (nulls come back as NaN).
        return cast("Sequence[Any]", np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
    if dtype in _NUMERIC_LISTS:
        # Each row's numbers as one array (None for a null list), which the writer packs in one go.
        return list(column.to_numpy(zero_copy_only=False))
    # Timestamps (in lists too) as datetimes, as the stream worker writes them.
    return list(column.to_pylist())
