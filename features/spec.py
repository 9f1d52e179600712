"""What the rest of sluice needs to know about a feature view, as plain data.

Validation turns Feast's objects into these specs once. Streams, stores and the online read path
use the specs, never Feast's objects, so they stay fast to import and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["AggregationSpec", "FeatureViewSpec", "window_label"]


def window_label(window: timedelta) -> str:
    """A short label for a window length, used in default feature names.

    >>> [window_label(timedelta(seconds=s)) for s in (30, 600, 3600, 86400, 5400)]
    ['30s', '10m', '1h', '1d', '90m']
    """
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, kw_only=True)
class AggregationSpec:
    """One output feature: ``function`` over ``column`` in windows of ``window``, every ``slide``."""

    feature: str
    column: str
    function: str
    window: timedelta
    slide: timedelta
    dtype: str

    @property
    def is_tumbling(self) -> bool:
        return self.window == self.slide


@dataclass(frozen=True, kw_only=True)
class FeatureViewSpec:
    """A feature view that sluice computes from a Kafka topic and writes to both stores."""

    name: str
    project: str
    topic: str
    join_keys: dict[str, str]
    """Join key to its Feast type name, in the entity's declared order."""
    timestamp_field: str
    message_schema: dict[str, str]
    """The declared JSON fields of a message and their Feast type names."""
    features: dict[str, str]
    """Output feature name to Feast type name, in schema order."""
    aggregations: tuple[AggregationSpec, ...] = ()
    """Empty for a plain feature view: then each event's columns are the feature values."""
    watermark_delay: timedelta = timedelta(0)
    ttl: timedelta = timedelta(0)
    """Values older than this are not served; zero means they never expire."""
    offline_path: str = ""
    """Root of the Parquet dataset (the source's batch source path)."""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def is_aggregated(self) -> bool:
        return bool(self.aggregations)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The source columns the view reads: its aggregations' inputs, or its features (a plain view)."""
        if self.aggregations:
            return tuple(dict.fromkeys(aggregation.column for aggregation in self.aggregations))
        return tuple(self.features)
