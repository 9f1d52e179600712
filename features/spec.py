"""What the rest of sluice needs to know about a feature view, as plain data.

Validation turns Feast's objects into these specs once. Streams, stores and the online read path
use the specs, never Feast's objects, so they stay fast to import and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from features.config import OfflineStoreConfig

__all__ = ["AggregationSpec", "FeatureViewSpec", "OnDemandSpec", "TransformSpec", "window_label"]


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
class TransformSpec:
    """A stream feature view's ``udf``: it maps each batch of decoded events to the view's inputs."""

    mode: str
    """``python`` (a dict of lists in and out) or ``pandas`` (a DataFrame in and out)."""
    name: str
    source: str
    """The function's source, as Feast's registry keeps it; the worker runs this text."""
    output_types: dict[str, str]
    """The Feast type of each column the view reads from the function's output."""


@dataclass(frozen=True, kw_only=True)
class OnDemandSpec:
    """An on-demand feature view: a function of other views' features and request data."""

    name: str
    mode: str
    """``python`` or ``pandas``."""
    singleton: bool
    """A python-mode function called once per row, with one value per input."""
    features: dict[str, str]
    """Output feature name to its Feast type name."""
    sources: tuple[tuple[str, tuple[str, ...]], ...]
    """(feature view, features) of each input projection."""
    request_fields: dict[str, str]
    """Request data the function takes, passed with the entity rows, to its Feast type name."""
    udf_name: str
    udf_source: str
    """The function's source, as Feast's registry keeps it."""
    write_to_online_store: bool = False
    """Computed by the stream worker from its one source view's rows and stored in Redis."""


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
    """Root of the Parquet dataset (the source's batch source path): a local path or an object-storage URI."""
    offline_store: OfflineStoreConfig = field(default_factory=OfflineStoreConfig, repr=False, compare=False)
    """How to reach object storage at ``offline_path``: where the process runs, not what the view means
    (so it is left out of the view's identity, which snapshots are checked against)."""
    tags: dict[str, str] = field(default_factory=dict)
    transform: TransformSpec | None = None
    """The view's udf, run on decoded events before aggregation; None for none."""
    stored_on_demand: tuple[OnDemandSpec, ...] = ()
    """The on-demand views computed from this view's rows as they are written, and stored beside them."""

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def is_aggregated(self) -> bool:
        return bool(self.aggregations)

    @property
    def input_types(self) -> dict[str, str]:
        """The Feast type of each column the view reads: the message's, or its udf's output."""
        if self.transform is None:
            return self.message_schema
        return {**self.message_schema, **self.transform.output_types}

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The source columns the view reads: its aggregations' inputs, or its features (a plain view)."""
        if self.aggregations:
            return tuple(dict.fromkeys(aggregation.column for aggregation in self.aggregations))
        return tuple(self.features)
