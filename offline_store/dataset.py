"""The Parquet dataset of a feature view: the offline store, and the source of truth.

Layout, under the view's batch source path::

    <root>/date=2024-05-01/<topic>-<partition>-<first offset>-<last offset>.parquet
    <root>/date=2024-05-01/backfill-<cutover>.parquet      (rows ``sluice backfill`` wrote)
    <root>/_backfill/seed.parquet                           (its latest events, for stream workers)

One file per (stream batch, event date). A file's name comes from the Kafka offsets it covers, so a
batch replayed after a crash rewrites the same file instead of adding a duplicate, and a file is
written whole or not at all, so readers never see half of one: on a local disk under a hidden
temporary name that is then renamed (pyarrow and DuckDB skip names that start with a dot), on object
storage (``s3://``, ``gs://``, ``abfs://``) straight to its name, since an object appears only when
its upload completes (``offline_store/storage.py``).

Rows are (join keys, event_timestamp, created_timestamp, source_offset, features), with the feature
values exactly as they were written online (timestamps to the microsecond, where Redis keeps seconds).
``source_offset`` is the row's version in its partition's log: at one event time, the row with the
higher offset is the later one (a correction).

A list feature is an Arrow list of its element's type (``FLOAT_LIST`` is ``list<float>``,
``UNIX_TIMESTAMP_LIST`` is ``list<timestamp[us, UTC]>``), and ``BYTES`` is ``binary``: the types
Feast's file source reads back as those Feast types, so ``get_historical_features`` and ``feast
materialize`` read the same values from it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from features.schema import LIST_ELEMENTS
from features.spec import FeatureViewSpec
from offline_store.storage import Location

__all__ = ["ARROW_TYPES", "BACKFILL", "BatchFile", "OfflineDataset", "arrow_schema"]

ARROW_TYPES = {
    "INT64": pa.int64(),
    "INT32": pa.int32(),
    "FLOAT64": pa.float64(),
    "FLOAT32": pa.float32(),
    "STRING": pa.string(),
    "BOOL": pa.bool_(),
    "UNIX_TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "BYTES": pa.binary(),
}
# A list type is an Arrow list of its element's type: what Feast's file source reads back as that list
# type. Timestamps stay timestamps (not epoch seconds), so Feast reads UNIX_TIMESTAMP_LIST, as it does.
ARROW_TYPES |= {list_type: pa.list_(ARROW_TYPES[element]) for list_type, element in LIST_ELEMENTS.items()}
_FILE_NAME = re.compile(r"^(?P<topic>.+)-(?P<partition>\d{5})-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$")
_BACKFILL_NAME = re.compile(r"^backfill-\d{20}\.parquet$")
_MICROS_PER_DAY = 86_400 * 1_000_000
_BATCH_DATES = b"sluice.batch_dates"
BACKFILL = -1
"""The partition of a backfill's files: they come from no partition of the topic."""


def arrow_schema(spec: FeatureViewSpec) -> pa.Schema:
    """The Parquet schema of a view: join keys, event and created timestamps, then the features."""
    timestamp = pa.timestamp("us", tz="UTC")
    fields = [pa.field(name, ARROW_TYPES[dtype], nullable=False) for name, dtype in spec.join_keys.items()]
    fields += [
        pa.field("event_timestamp", timestamp, nullable=False),
        pa.field("created_timestamp", timestamp),
        pa.field("source_offset", pa.int64()),
    ]
    fields += [pa.field(name, ARROW_TYPES[dtype]) for name, dtype in spec.features.items()]
    return pa.schema(fields)


@dataclass(frozen=True, kw_only=True)
class BatchFile:
    """One written file and the Kafka offsets its rows came from (inclusive)."""

    location: Location
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def path(self) -> str:
        """The file's local path or URI."""
        return self.location.uri

    @property
    def date(self) -> str:
        """The event date of the file's rows (its ``date=`` folder), as ``YYYY-MM-DD``."""
        return posixpath.basename(posixpath.dirname(self.location.path))[5:]


class OfflineDataset:
    """Reads and writes one feature view's Parquet dataset, on a local disk or on object storage."""

    def __init__(self, *, spec: FeatureViewSpec) -> None:
        if not spec.offline_path:
            raise ValueError(f"feature view {spec.name!r} has no offline path (its batch source path)")
        self.spec = spec
        self.root = Location.parse(spec.offline_path, spec.offline_store)
        self.schema = arrow_schema(spec)

    def write_batch(
        self,
        *,
        partition: int,
        first_offset: int,
        last_offset: int,
        keys: Sequence[Any],
        event_times_us: NDArray[np.int64],
        created_times_us: NDArray[np.int64],
        features: Mapping[str, Sequence[Any]],
        offsets: NDArray[np.int64] | None = None,
    ) -> list[BatchFile]:
        """Write one batch's rows, one file per event date; returns the files in date order.
        ``offsets`` are the rows' versions (null where not given)."""
        table = self._table(keys, event_times_us, created_times_us, offsets, features)
        name = f"{self.spec.topic}-{partition:05d}-{first_offset:020d}-{last_offset:020d}.parquet"
        return [
            BatchFile(
                location=path,
                topic=self.spec.topic,
                partition=partition,
                first_offset=first_offset,
                last_offset=last_offset,
            )
            for path in self._write_by_date(table, event_times_us, name)
        ]

    def write_backfill(
        self,
        *,
        cutover_us: int,
        keys: Sequence[Any],
        event_times_us: NDArray[np.int64],
        created_times_us: NDArray[np.int64],
        features: Mapping[str, Sequence[Any]],
    ) -> list[BatchFile]:
        """Write a backfill's rows (no source offset: at one event time a stream row wins), one file
        per event date named by the cutover, replacing any earlier backfill's files."""
        for file in list(self._files()):  # the earlier backfill's files, and its writes a crash cut short
            earlier = _BACKFILL_NAME.match(file.name) is not None
            if earlier or (file.name.startswith(".backfill-") and file.name.endswith(".tmp")):
                file.delete()
        table = self._table(keys, event_times_us, created_times_us, None, features)
        return [
            BatchFile(
                location=path, topic=self.spec.topic, partition=BACKFILL, first_offset=-1, last_offset=-1
            )
            for path in self._write_by_date(table, event_times_us, f"backfill-{cutover_us:020d}.parquet")
        ]

    def backfill_files(self) -> list[BatchFile]:
        return [file for file in self.batch_files() if file.partition == BACKFILL]

    def write_seed(self, table: pa.Table, *, cutover_us: int) -> Location:
        """Keep a backfill's latest events, which stream workers load as the history of the entities
        they see (``read_seed``). Under ``_backfill/``, which Parquet readers skip."""
        target = self.root.child("_backfill", "seed.parquet")
        metadata = {**(table.schema.metadata or {}), b"sluice.cutover_us": str(cutover_us).encode()}
        target.write_parquet(table.replace_schema_metadata(metadata), compression="zstd")
        return target

    def read_seed(self) -> tuple[pa.Table, int] | None:
        """The backfill's seed events and its cutover (µs), or None without a backfill."""
        path = self.root.child("_backfill", "seed.parquet")
        if not path.exists():
            return None
        table = path.read_parquet()
        return table, int((table.schema.metadata or {})[b"sluice.cutover_us"])

    def _write_by_date(self, table: pa.Table, event_times_us: NDArray[np.int64], name: str) -> list[Location]:
        """One file per event date, each written whole or not at all."""
        days = np.asarray(event_times_us, dtype=np.int64) // _MICROS_PER_DAY
        dates = [np.datetime64(int(day), "D").astype(str) for day in np.unique(days)]
        # Each file names every date of its batch, so a crash between two of them can be told from a
        # whole batch (``whole_batches``).
        metadata = {**(table.schema.metadata or {}), _BATCH_DATES: ",".join(dates).encode()}
        written = []
        for date in dates:
            target = self.root.child(f"date={date}", name)
            part = table.filter(pa.array(days == np.datetime64(date, "D").astype(np.int64)))
            target.write_parquet(part.replace_schema_metadata(metadata), compression="zstd")
            written.append(target)
        return written

    def whole_batches(self, files: Sequence[BatchFile]) -> tuple[list[BatchFile], list[BatchFile]]:
        """Split one partition's files into the batches written whole, in offset order, and the rest: the
        first batch with a date file missing (a crash between its writes) and every batch after it."""
        batches: dict[tuple[int, int], list[BatchFile]] = {}
        for file in files:
            batches.setdefault((file.first_offset, file.last_offset), []).append(file)
        whole: list[BatchFile] = []
        for position, (_, batch) in enumerate(sorted(batches.items())):
            if not self._whole(batch):
                later = [file for _, rest in sorted(batches.items())[position:] for file in rest]
                return whole, later
            whole += batch
        return whole, []

    def _files(self) -> Iterator[Location]:
        """The files in the dataset's ``date=`` folders (temporary ones included)."""
        for file in self.root.files():
            folder = posixpath.basename(posixpath.dirname(file.path))
            if (
                folder.startswith("date=")
                and posixpath.dirname(posixpath.dirname(file.path)) == self.root.path
            ):
                yield file

    def _whole(self, batch: list[BatchFile]) -> bool:
        """Whether every date file of one batch is there, by the dates its first file lists."""
        try:
            schema = self.root.at(batch[0].location.path).read_schema()
        except (OSError, pa.ArrowInvalid):  # a file cut short: the batch is not whole either
            return False
        listed = (schema.metadata or {}).get(_BATCH_DATES)
        # Files written before the dates were recorded are taken as whole, as they always were.
        return listed is None or set(listed.decode().split(",")) <= {file.date for file in batch}

    def batch_files(self, *, partition: int | None = None) -> Iterator[BatchFile]:
        """Every batch file of this view's topic (optionally of one partition), in no particular order."""
        for path in self._files():
            if _BACKFILL_NAME.match(path.name):
                if partition is None:
                    yield BatchFile(
                        location=path,
                        topic=self.spec.topic,
                        partition=BACKFILL,
                        first_offset=-1,
                        last_offset=-1,
                    )
                continue
            match = _FILE_NAME.match(path.name)
            if match is None or match["topic"] != self.spec.topic:
                continue
            if partition is not None and int(match["partition"]) != partition:
                continue
            yield BatchFile(
                location=path,
                topic=match["topic"],
                partition=int(match["partition"]),
                first_offset=int(match["first"]),
                last_offset=int(match["last"]),
            )

    def remove_temporary(self, *, partition: int) -> int:
        """Delete the temporary files a crash left behind for one partition; returns how many.

        Only the partition's owner writes them, so a new owner removes them before its first write."""
        if not self.root.is_local:
            return 0  # object storage has no temporary files: objects are written under their names
        prefix = f".{self.spec.topic}-{partition:05d}-"
        orphans = [
            file for file in self._files() if file.name.startswith(prefix) and file.name.endswith(".tmp")
        ]
        for orphan in orphans:
            orphan.delete()
        return len(orphans)

    def paths(self, *, earliest: datetime | None = None, latest: datetime | None = None) -> list[str]:
        """The dataset's files (paths on ``self.root.filesystem``), sorted, skipping date partitions
        wholly outside [earliest, latest]."""
        first = earliest.astimezone(UTC).date().isoformat() if earliest is not None else ""
        last = latest.astimezone(UTC).date().isoformat() if latest is not None else "9999-12-31"
        return sorted(file.location.path for file in self.batch_files() if first <= file.date <= last)

    def read(self, files: Sequence[BatchFile] | None = None) -> pa.Table:
        """All rows (or those of the given files) as one table with the view's schema."""
        chosen = files if files is not None else list(self.batch_files())
        paths = sorted({file.location.path for file in chosen})
        if not paths:
            return self.schema.empty_table()
        return pa.concat_tables(self.root.at(path).read_parquet(schema=self.schema) for path in paths)

    def _table(
        self,
        keys: Sequence[Any],
        event_times_us: NDArray[np.int64],
        created_times_us: NDArray[np.int64],
        offsets: NDArray[np.int64] | None,
        features: Mapping[str, Sequence[Any]],
    ) -> pa.Table:
        columns: dict[str, Any] = {}
        join_names = list(self.spec.join_keys)
        if len(join_names) == 1:
            columns[join_names[0]] = keys
        else:
            for position, name in enumerate(join_names):
                columns[name] = [key[position] for key in keys]
        columns["event_timestamp"] = np.asarray(event_times_us, dtype=np.int64)
        columns["created_timestamp"] = np.asarray(created_times_us, dtype=np.int64)
        columns["source_offset"] = (
            pa.nulls(len(keys), pa.int64()) if offsets is None else np.asarray(offsets, dtype=np.int64)
        )
        for name in self.spec.features:
            columns[name] = features[name]
        arrays = []
        for field in self.schema:
            values = columns[field.name]
            if (
                pa.types.is_timestamp(field.type)
                and isinstance(values, np.ndarray)
                and values.dtype.kind == "i"
            ):
                # Event and created times, in microseconds; a timestamp feature holds datetimes.
                arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
            elif isinstance(values, np.ndarray) and values.dtype.kind == "f":
                arrays.append(pa.array(values, type=pa.float64(), from_pandas=True).cast(field.type))
            else:
                arrays.append(pa.array(values, type=field.type, from_pandas=True))
        return pa.Table.from_arrays(arrays, schema=self.schema)
