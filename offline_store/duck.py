"""The few pieces of DuckDB SQL that the offline readers share."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["parquet_scan", "quote"]


def quote(name: str) -> str:
    """An SQL identifier.

    >>> quote('a"b')
    '"a""b"'
    """
    return '"' + name.replace('"', '""') + '"'


def parquet_scan(files: Sequence[str]) -> str:
    """A ``read_parquet`` over the files; columns come from the files themselves, not from folder names."""
    listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
    return f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"
