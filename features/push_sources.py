"""Feast's ``PushSource``: rows pushed through sluice go into a topic, and the worker writes both stores.

A view fed by a PushSource is streamed like a plain view over a Kafka topic that sluice owns,
``<project>.push.<source>``: ``sluice.push`` (Python) and ``POST /push`` (``sluice serve``) produce
the rows to it as JSON events, keyed by entity, and the stream worker writes them to Parquet and Redis
with the two-sink protocol, so a pushed row lands in both stores exactly once, whatever crashes.

Validation sees a push source as the Kafka source it becomes, so every check and message of a
streamed view applies: its events are the view's join keys, its features and the batch source's
timestamp field.

>>> push_topic("fraud", "card_updates")
'fraud.push.card_updates'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from features.schema import LIST_ELEMENTS

__all__ = ["PushAsKafka", "push_topic"]

_DDL = {
    "INT64": "BIGINT",
    "INT32": "INT",
    "FLOAT64": "DOUBLE",
    "FLOAT32": "FLOAT",
    "STRING": "STRING",
    "BOOL": "BOOLEAN",
    "UNIX_TIMESTAMP": "TIMESTAMP",
    "BYTES": "BINARY",
}


def push_topic(project: str, source: str) -> str:
    """The topic that holds a push source's rows."""
    return f"{project}.push.{source}"


@dataclass(frozen=True)
class _KafkaOptions:
    topic: str
    message_format: Any
    watermark_delay_threshold: timedelta | None = None


class PushAsKafka:
    """A PushSource, seen through the attributes validation reads of a KafkaSource."""

    kind = "PushSource"

    def __init__(self, *, source: Any, view: Any, project: str) -> None:
        from feast.data_format import JsonFormat

        from features.validation import type_name

        self.name = source.name
        self.batch_source = source.batch_source
        self.timestamp_field = getattr(source.batch_source, "timestamp_field", "") or ""
        columns = {field.name: type_name(field.dtype) for field in [*view.entity_columns, *view.features]}
        if self.timestamp_field:
            columns[self.timestamp_field] = "UNIX_TIMESTAMP"
        ddl = ", ".join(f"{name} {_ddl(dtype)}" for name, dtype in columns.items())
        # No delay: a pushed row is never late (a plain view has no windows to close).
        self.kafka_options = _KafkaOptions(
            topic=push_topic(project, source.name), message_format=JsonFormat(schema_json=ddl)
        )


def _ddl(dtype: str) -> str:
    if dtype in LIST_ELEMENTS:
        return f"ARRAY<{_DDL[LIST_ELEMENTS[dtype]]}>"
    return _DDL.get(dtype, dtype)
