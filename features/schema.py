"""Message schemas of Kafka sources: the declared JSON fields and their types.

A KafkaSource declares its messages with Feast's ``JsonFormat(schema_json=...)``, in the Spark DDL
form Feast documents (``"card_id BIGINT, amount DOUBLE, ts TIMESTAMP"``). Feast's own type names
(``Int64``, ``Float64``, ...) are accepted too. A list column is ``ARRAY<type>`` in Spark's form or
``Array(type)`` in Feast's, and has Feast's list type name (``FLOAT_LIST``, ...).

>>> parse_schema("card_id bigint, amount DOUBLE, merchant string, ts timestamp")
{'card_id': 'INT64', 'amount': 'FLOAT64', 'merchant': 'STRING', 'ts': 'UNIX_TIMESTAMP'}
>>> parse_schema("embedding ARRAY<FLOAT>, tags array<string>, scores Array(Float64), photo BINARY")
{'embedding': 'FLOAT_LIST', 'tags': 'STRING_LIST', 'scores': 'DOUBLE_LIST', 'photo': 'BYTES'}
"""

from __future__ import annotations

import re

__all__ = ["LIST_ELEMENTS", "SchemaError", "parse_schema"]

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
    "binary": "BYTES",
    "bytes": "BYTES",
}
# Feast's list type of each element type; sluice names scalars as feast.types does (FLOAT64), and
# lists as Feast's ValueType does (DOUBLE_LIST), which is ``Array(X).to_value_type().name``.
_LIST_TYPES = {
    "INT64": "INT64_LIST",
    "INT32": "INT32_LIST",
    "FLOAT64": "DOUBLE_LIST",
    "FLOAT32": "FLOAT_LIST",
    "STRING": "STRING_LIST",
    "BOOL": "BOOL_LIST",
    "UNIX_TIMESTAMP": "UNIX_TIMESTAMP_LIST",
    "BYTES": "BYTES_LIST",
}
LIST_ELEMENTS = {list_type: element for element, list_type in _LIST_TYPES.items()}
"""Each list type's element type: ``LIST_ELEMENTS["DOUBLE_LIST"] == "FLOAT64"``."""
_ARRAY = re.compile(r"array(?:<(\w+)>|\((\w+)\))", re.IGNORECASE)


class SchemaError(ValueError):
    """A message schema that cannot be parsed; the message says which part."""


def parse_schema(schema_json: str) -> dict[str, str]:
    """Column name to Feast type name, in declaration order.

    >>> parse_schema("card_id BIGINT, amount DECIMAL")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    features.schema.SchemaError: column 'amount' has unknown type 'DECIMAL'; use one of BIGINT, BINARY, ...
    """
    columns: dict[str, str] = {}
    for part in schema_json.split(","):
        words = part.split()
        if not words:
            continue
        # Spaces may sit inside a list type (``ARRAY< FLOAT >``), nowhere else.
        if len(words) < 2 or (len(words) > 2 and not {"<", "("} & set(part)):
            raise SchemaError(f"expected 'name TYPE', found {part.strip()!r}")
        name, type_name = words[0], "".join(words[1:])
        dtype = _column_type(type_name)
        if dtype is None:
            valid = ", ".join(sorted({key.upper() for key in _DDL_TYPES}))
            raise SchemaError(
                f"column {name!r} has unknown type {type_name!r}; use one of {valid}, or ARRAY<one of those>"
            )
        if name in columns:
            raise SchemaError(f"column {name!r} is declared twice")
        columns[name] = dtype
    if not columns:
        raise SchemaError("the schema declares no columns")
    return columns


def _column_type(type_name: str) -> str | None:
    """The Feast type name of a declared type, or None if it is not one sluice knows.

    >>> _column_type("array<bigint>"), _column_type("Array(UnixTimestamp)"), _column_type("ARRAY<MAP>")
    ('INT64_LIST', 'UNIX_TIMESTAMP_LIST', None)
    """
    array = _ARRAY.fullmatch(type_name)
    if array is None:
        return _DDL_TYPES.get(type_name.lower())
    element = _DDL_TYPES.get((array[1] or array[2]).lower())
    return None if element is None else _LIST_TYPES[element]
