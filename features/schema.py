"""Message schemas of Kafka sources: the declared JSON fields and their types.

A KafkaSource declares its messages with Feast's ``JsonFormat(schema_json=...)``, in the Spark DDL
form Feast documents (``"card_id BIGINT, amount DOUBLE, ts TIMESTAMP"``). Feast's own type names
(``Int64``, ``Float64``, ...) are accepted too.

>>> parse_schema("card_id bigint, amount DOUBLE, merchant string, ts timestamp")
{'card_id': 'INT64', 'amount': 'FLOAT64', 'merchant': 'STRING', 'ts': 'UNIX_TIMESTAMP'}
"""

from __future__ import annotations

__all__ = ["SchemaError", "parse_schema"]

_DDL_TYPES = {
    "bigint": "INT64",
    "long": "INT64",
    "int64": "INT64",
    "int": "INT32",
    "integer": "INT32",
    "int32": "INT32",
    "double": "FLOAT64",
    "float64": "FLOAT64",
    "float": "FLOAT32",
    "float32": "FLOAT32",
    "real": "FLOAT32",
    "string": "STRING",
    "varchar": "STRING",
    "boolean": "BOOL",
    "bool": "BOOL",
    "timestamp": "UNIX_TIMESTAMP",
    "unixtimestamp": "UNIX_TIMESTAMP",
    "unix_timestamp": "UNIX_TIMESTAMP",
}


class SchemaError(ValueError):
    """A message schema that cannot be parsed; the message says which part."""


def parse_schema(schema_json: str) -> dict[str, str]:
    """Column name to Feast type name, in declaration order."""
    columns: dict[str, str] = {}
    for part in schema_json.split(","):
        words = part.split()
        if not words:
            continue
        if len(words) != 2:
            raise SchemaError(f"expected 'name TYPE', found {part.strip()!r}")
        name, type_name = words
        dtype = _DDL_TYPES.get(type_name.lower())
        if dtype is None:
            valid = ", ".join(sorted({key.upper() for key in _DDL_TYPES}))
            raise SchemaError(f"column {name!r} has unknown type {type_name!r}; use one of {valid}")
        if name in columns:
            raise SchemaError(f"column {name!r} is declared twice")
        columns[name] = dtype
    if not columns:
        raise SchemaError("the schema declares no columns")
    return columns
