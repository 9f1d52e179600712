"""The few pieces of DuckDB SQL that the offline readers share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from offline_store.dataset import OfflineDataset

__all__ = ["parquet_scan", "quote"]


def quote(name: str) -> str:
    """An SQL identifier.

    >>> quote('a"b')
    '"a""b"'
    """
    return '"' + name.replace('"', '""') + '"'


def parquet_scan(connection: duckdb.DuckDBPyConnection, dataset: OfflineDataset, files: Sequence[str]) -> str:
    """SQL that scans the given files of a dataset; columns come from the files, not from folder names.

    Local files take DuckDB's own reader. On object storage (DuckDB's httpfs extension cannot be
    installed offline) the files are a pyarrow dataset on the dataset's file system, registered with
    the connection, which DuckDB scans with the same projection and filter pushdown."""
    if dataset.root.is_local:
        listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
        return f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"
    import pyarrow.dataset as ds

    name = f"files_{uuid.uuid4().hex}"
    scanned = ds.dataset(
        list(files), schema=dataset.schema, format="parquet", filesystem=dataset.root.filesystem
    )
    connection.register(name, scanned)
    return quote(name)
