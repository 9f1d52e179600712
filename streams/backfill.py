"""Backfill: a feature view's history from raw events (a Parquet file or an archive topic), joined to
its live stream.

The cutover C splits the timeline: the file's events before C are history, the topic's events from C
are live (the topic's events before C are covered by the file, skipped and counted, never
dead-lettered as late). ``sluice backfill``

1. decodes the file's events with the view's own decoder (the same types, ranges and reasons as the
   stream), keeps those before C, and runs them in event-time order through a window state;
2. writes every change-point row of that history to the view's dataset, up to the last pane leaving a
   window (decay), as ``backfill-<C>.parquet`` files with no source offset, so at one event time a
   stream row wins;
3. keeps the history's latest events (the largest window, slide and watermark delay before C) as the
   view's seed, and writes each entity's newest row at or before now to Redis;
4. sets the view's earlier stream rows aside and rewinds the worker group (``streams.rebuild``).

The next ``sluice worker`` replays the topic. A partition processor loads an entity's seed events into
its window state the first time it sees the entity, so windows that straddle C hold history and live
events together. Until an entity's first live event its values come from its history alone: those
rows are the backfill's. An entity that never shows up live keeps the backfill's rows, exact for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from features.config import KafkaConfig
from features.spec import FeatureViewSpec
from offline_store.dataset import OfflineDataset
from offline_store.storage import Location
from online_store.writer import FeatureRows
from streams.decoding import EventDecoder
from streams.transform import EventTransform
from streams.windows import ChangeRows, WindowState

__all__ = [
    "BackfillError",
    "BackfillPlan",
    "BackfillReport",
    "Seed",
    "file_messages",
    "history_rows",
    "plan_backfill",
    "topic_messages",
]

_CHUNK = 20_000


class BackfillError(ValueError):
    """A backfill that cannot run; the message says what to fix."""


@dataclass(frozen=True, kw_only=True)
class BackfillReport:
    view: str
    cutover: datetime
    events: int
    """Events of the file before the cutover, accepted."""
    after_cutover: int
    """Events of the file at or after the cutover, left to the stream."""
    rejected: dict[str, int]
    """Events that failed decoding, by reason (as the stream's dead-letter reasons)."""
    offline_rows: int
    seed_events: int

    def describe(self) -> str:
        rejected = ", ".join(f"{count} {reason}" for reason, count in sorted(self.rejected.items())) or "none"
        return (
            f"{self.view}: {self.events} events before {self.cutover.isoformat()} -> {self.offline_rows} "
            f"offline rows; {self.after_cutover} at or after the cutover left "
            f"to the stream; rejected: {rejected}; {self.seed_events} events kept to seed the workers"
        )


@dataclass(frozen=True, kw_only=True)
class Seed:
    """A backfill's latest events per entity, which a partition processor loads as an entity's history."""

    cutover_us: int
    events: dict[Any, tuple[Any, ...]]
    """Entity key to (times, order, float columns, integer columns) of its events, sorted by time."""

    @classmethod
    def load(cls, dataset: OfflineDataset) -> Seed | None:
        stored = dataset.read_seed()
        if stored is None:
            return None
        table, cutover_us = stored
        keys = _keys(table, list(dataset.spec.join_keys))
        times = np.asarray(table.column("event_time_us").to_numpy(), dtype=np.int64)
        order = np.asarray(table.column("order").to_numpy(), dtype=np.int64)
        columns = [name for name in table.schema.names if name.startswith("value:")]
        floats = {
            name[6:]: np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
            for name in columns
        }
        integers = {
            name[8:]: np.asarray(table.column(name).to_numpy(), dtype=np.int64)
            for name in table.schema.names
            if name.startswith("integer:")
        }
        positions: dict[Any, list[int]] = {}
        for position, key in enumerate(keys):
            positions.setdefault(key, []).append(position)
        events = {}
        for key, where in positions.items():
            index = np.asarray(where, dtype=np.int64)
            events[key] = (
                times[index],
                order[index],
                {name: values[index] for name, values in floats.items()},
                {name: values[index] for name, values in integers.items()},
            )
        return cls(cutover_us=cutover_us, events=events)


@dataclass(frozen=True, kw_only=True)
class BackfillPlan:
    """A backfill computed and not yet written: ``write`` puts it in the view's dataset."""

    spec: FeatureViewSpec
    cutover_us: int
    rows: FeatureRows
    seed: pa.Table
    report: BackfillReport

    def write(self, dataset: OfflineDataset, *, now_us: int | None = None) -> FeatureRows:
        """Write the rows and the seed; returns each entity's newest row at or before now, for Redis."""
        rows = self.rows
        dataset.write_backfill(
            cutover_us=self.cutover_us,
            keys=rows.keys,
            event_times_us=np.asarray(rows.event_times_us, dtype=np.int64),
            created_times_us=np.asarray(rows.created_times_us, dtype=np.int64),
            features=rows.features,
        )
        dataset.write_seed(self.seed, cutover_us=self.cutover_us)
        return _newest_until(rows, time.time_ns() // 1000 if now_us is None else now_us)


def plan_backfill(spec: FeatureViewSpec, messages: Sequence[bytes], *, cutover: datetime) -> BackfillPlan:
    """Decode the history's events (JSON messages, as the stream carries them: ``file_messages`` or
    ``topic_messages``), keep those before the cutover and compute their rows and seed."""
    cutover_us = _micros(cutover)
    strings = [
        aggregation.column
        for aggregation in spec.aggregations
        if spec.input_types.get(aggregation.column) == "STRING"
    ]
    if strings:
        raise BackfillError(
            f"feature view {spec.name!r} aggregates the STRING column {strings[0]!r}, which backfill "
            "does not support yet; backfill a view over numeric or BOOL columns, or replay the topic "
            "(`sluice rebuild`)"
        )
    decoder = EventDecoder.for_view(spec)
    decoded = decoder.decode(messages)
    transform = EventTransform.for_view(spec)
    if transform is not None:
        decoded = transform.apply(decoded, live=False)  # the history's failures are counted, not fatal
    rejected: dict[str, int] = {}
    for rejection in decoded.rejections:
        rejected[rejection.reason] = rejected.get(rejection.reason, 0) + 1
    before = decoded.times < cutover_us
    keep = np.flatnonzero(before)
    # Event-time order; the file's order breaks ties, as the log's offsets do in the stream.
    keep = keep[np.argsort(decoded.times[keep], kind="stable")]
    keys = [decoded.keys[index] for index in keep.tolist()]
    times = decoded.times[keep]
    order = keep.astype(np.int64)
    floats = {name: np.asarray(decoded.columns[name])[keep] for name in spec.value_columns}
    integers = {name: values[keep] for name, values in decoded.integers.items()}
    rows = history_rows(spec, keys, times, order, floats, integers)
    # A plain view keeps no events in its seed, only the cutover: its stream skips what came before.
    recent = np.zeros(len(keys), dtype=bool)
    if spec.is_aggregated:
        reach = max(
            int((aggregation.window + aggregation.slide).total_seconds() * 1_000_000)
            for aggregation in spec.aggregations
        ) + int(spec.watermark_delay.total_seconds() * 1_000_000)
        recent = times >= cutover_us - reach
    report = BackfillReport(
        view=spec.name,
        cutover=cutover,
        events=len(keep),
        after_cutover=int((~before).sum()),
        rejected=rejected,
        offline_rows=len(rows),
        seed_events=int(recent.sum()),
    )
    return BackfillPlan(
        spec=spec,
        cutover_us=cutover_us,
        rows=rows,
        seed=_seed_table(spec, keys, times, order, floats, integers, recent),
        report=report,
    )


def history_rows(
    spec: FeatureViewSpec,
    keys: list[Any],
    times: np.ndarray,
    order: np.ndarray,
    floats: dict[str, np.ndarray],
    integers: dict[str, np.ndarray],
) -> FeatureRows:
    """The rows of a history sorted by event time: every change point through the last decay for an
    aggregated view, one row per (entity, event time) (the later event winning) for a plain view."""
    created = time.time_ns() // 1000
    if not spec.is_aggregated:
        last: dict[tuple[Any, int], int] = {}
        for position, (key, moment) in enumerate(zip(keys, times.tolist(), strict=True)):
            last[(key, moment)] = position
        index = np.fromiter(sorted(last.values()), dtype=np.int64, count=len(last))
        return FeatureRows(
            keys=[keys[position] for position in index.tolist()],
            event_times_us=times[index],
            created_times_us=np.full(len(index), created, dtype=np.int64),
            features={name: list(floats[name][index]) for name in spec.features},
        )
    state = WindowState(spec=spec)
    parts: list[ChangeRows] = []
    for start in range(0, len(keys), _CHUNK):
        stop = start + _CHUNK
        parts.append(
            state.advance(
                state.ids_for(keys[start:stop]), times[start:stop], order[start:stop],
                {name: values[start:stop] for name, values in floats.items()},
                integers={name: values[start:stop] for name, values in integers.items()},
            )
        )  # fmt: skip
    if len(keys):
        last_end = max(
            (int(times.max()) // layout.layout.slide_us + 1) * layout.layout.slide_us
            + layout.layout.window_us
            for layout in state.layouts
        )
        parts.append(state.advance_to(last_end))
    return _feature_rows(spec, state, parts, created)


def _feature_rows(
    spec: FeatureViewSpec, state: WindowState, parts: list[ChangeRows], created: int
) -> FeatureRows:
    entity_ids = np.concatenate([part.entity_ids for part in parts]) if parts else np.empty(0, np.int64)
    times = np.concatenate([part.times for part in parts]) if parts else np.empty(0, np.int64)
    features: dict[str, Any] = {}
    for name in spec.features:
        columns = [part.features[name] for part in parts]
        if columns and isinstance(columns[0], np.ma.MaskedArray):
            features[name] = np.ma.concatenate(columns)  # type: ignore[no-untyped-call]
        else:
            features[name] = np.concatenate(columns) if columns else np.empty(0)
    # A point emitted twice (never here: the history is in event-time order) would keep the later row.
    return FeatureRows(
        keys=[state.entity_keys[entity] for entity in entity_ids.tolist()],
        event_times_us=times,
        created_times_us=np.full(len(times), created, dtype=np.int64),
        features=features,
    )


def _newest_until(rows: FeatureRows, now_us: int) -> FeatureRows:
    """Each entity's newest row at or before ``now_us``."""
    times = np.asarray(rows.event_times_us, dtype=np.int64)
    newest: dict[Any, int] = {}
    for position in np.flatnonzero(times <= now_us)[
        np.argsort(times[times <= now_us], kind="stable")
    ].tolist():
        newest[rows.keys[position]] = position
    return rows.take(np.sort(np.fromiter(newest.values(), dtype=np.int64, count=len(newest))))


def file_messages(path: Path | str, spec: FeatureViewSpec) -> list[bytes]:
    """A Parquet file's events (a local path or an object-storage URI, reached with the view's
    settings) as JSON messages, so that they take the stream's decoder: one set of types, ranges and
    reasons."""
    try:
        table = Location.parse(str(path), spec.offline_store).read_parquet()
    except (OSError, pa.ArrowInvalid) as error:
        raise BackfillError(f"cannot read {path} as Parquet: {error}") from None
    # The columns the stream's decoder needs: with a udf, the message's fields (the udf makes the rest).
    needed = [*spec.join_keys, spec.timestamp_field, *EventDecoder.for_view(spec).columns]
    missing = [name for name in needed if name not in table.schema.names]
    if missing:
        raise BackfillError(
            f"{path} has no column {', '.join(missing)}; feature view {spec.name!r} reads "
            f"{', '.join(needed)} (the source's join keys, timestamp field and "
            f"{'message fields' if spec.transform is not None else 'value columns'})"
        )
    rows = table.select(needed).to_pylist()
    return [orjson.dumps(row, option=orjson.OPT_NAIVE_UTC, default=str) for row in rows]


def topic_messages(kafka: KafkaConfig, topic: str) -> list[bytes]:
    """Every message a topic retains now (an archive of the source's events, say), by partition and
    offset; read without a consumer group."""
    from kafka import TopicPartition

    from streams.kafka_clients import consumer

    reader = consumer(kafka, enable_auto_commit=False, group_id=None)
    try:
        known = reader.partitions_for_topic(topic)
        if not known:
            raise BackfillError(f"topic {topic!r} does not exist or has no partitions")
        partitions = [TopicPartition(topic, partition) for partition in sorted(known)]
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        ends = reader.end_offsets(partitions)
        by_partition: dict[int, list[bytes]] = {partition.partition: [] for partition in partitions}
        while any(reader.position(partition) < ends[partition] for partition in partitions):
            for assigned, records in reader.poll(timeout_ms=1000, max_records=50_000).items():
                by_partition[assigned.partition] += [
                    record.value for record in records if record.offset < ends[assigned]
                ]
        return [message for partition in sorted(by_partition) for message in by_partition[partition]]
    finally:
        reader.close()


def _seed_table(
    spec: FeatureViewSpec,
    keys: list[Any],
    times: np.ndarray,
    order: np.ndarray,
    floats: dict[str, np.ndarray],
    integers: dict[str, np.ndarray],
    keep: np.ndarray,
) -> pa.Table:
    index = np.flatnonzero(keep)
    columns: dict[str, Any] = {}
    join_names = list(spec.join_keys)
    chosen = [keys[position] for position in index.tolist()]
    if len(join_names) == 1:
        columns[join_names[0]] = chosen
    else:
        for position, name in enumerate(join_names):
            columns[name] = [key[position] for key in chosen]
    columns["event_time_us"] = times[index]
    columns["order"] = order[index]
    for name, values in floats.items():
        columns[f"value:{name}"] = pa.array(values[index], type=pa.float64(), from_pandas=False)
    for name, values in integers.items():
        columns[f"integer:{name}"] = values[index]
    return pa.table(columns)


def _keys(table: pa.Table, join_names: list[str]) -> list[Any]:
    if len(join_names) == 1:
        return list(table.column(join_names[0]).to_pylist())
    return list(zip(*(table.column(name).to_pylist() for name in join_names), strict=True))


def _micros(moment: datetime) -> int:
    from datetime import UTC

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond
