"""One feature view over one Kafka partition: decode, drop late events, aggregate, write both sinks.

A batch is handled in two steps. ``prepare`` applies its records to the window state and computes its
dead letters and feature rows; ``write`` puts them in the sinks: dead letters (flushed) first, then the
Parquet file named by the batch's offsets and the Redis rows, side by side. The caller commits the
offsets only after ``write`` returns, retries ``write`` with the same prepared batch after a sink
failure, and may prepare the next batch while one is being written, as long as it writes the batches
of a partition in order.

After a crash, a new processor first rebuilds its window state by replaying the partition up to the
committed offset (``start``). Batches written to Parquet but not committed are then not computed
again: their events only rebuild state, and their files are written to Redis as they are. So
every feature row is in Parquet exactly once, and Redis ends equal to the latest row per entity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from features.spec import FeatureViewSpec
from offline_store.dataset import BatchFile, OfflineDataset
from offline_store.materialize import feature_rows
from online_store.on_demand import StoredOnDemand
from online_store.writer import FeatureRows, OnlineWriter
from streams.backfill import Seed
from streams.checkpoints import Checkpoint, horizon_us
from streams.dead_letters import DeadLetter, DeadLetterSink, KafkaRecord
from streams.decoding import DecodedBatch, EventDecoder
from streams.metrics import WorkerMetrics
from streams.moments import EMPTY_TIME
from streams.snapshots import PartitionSnapshot
from streams.transform import EventTransform
from streams.windows import ChangeRows, WindowState

__all__ = ["BatchOutcome", "PartitionProcessor", "PreparedBatch", "SinkFailed"]

_REPLAY_CHUNK = 10_000
_SINKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sluice-sink")


class SinkFailed(Exception):
    """A sink (``dead_letters``, ``offline`` or ``online``) did not take a batch; the batch is written
    again, whole, and its offsets are not committed until it is.

    >>> str(SinkFailed("offline", OSError(28, "No space left on device")))
    "offline: OSError(28, 'No space left on device')"
    """

    def __init__(self, sink: str, error: BaseException) -> None:
        super().__init__(f"{sink}: {error!r}")
        self.sink = sink
        self.error = error

    @staticmethod
    @contextmanager
    def naming(sink: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            raise SinkFailed(sink, error) from error


@dataclass(frozen=True, kw_only=True)
class _ComputedBatch:
    first_offset: int
    last_offset: int
    accepted: int
    letters: list[DeadLetter]
    rows: FeatureRows
    """Every change-point row, for Parquet."""
    online: FeatureRows
    """Each entity's newest row of ``rows``, for Redis."""


@dataclass(frozen=True, kw_only=True)
class PreparedBatch:
    """One batch applied to the window state: what ``write`` puts in the sinks. Writing it twice is safe."""

    replayed: int
    """Records that only rebuilt window state: their rows were written before a restart."""
    rewrite: tuple[BatchFile, ...] = ()
    """Files written to Parquet but never committed before a restart: their rows go to Redis again."""
    computed: _ComputedBatch | None = None
    """The batch's new dead letters and feature rows, if it had records not seen before."""


@dataclass(frozen=True, kw_only=True)
class BatchOutcome:
    """What one ``write`` did: events accepted and dead-lettered, rows written, records replayed."""

    accepted: int
    dead_letters: int
    offline_rows: int
    online_rows: int
    replayed: int


class PartitionProcessor:
    """Processes the records of one partition, in offset order, for one feature view."""

    def __init__(
        self,
        *,
        spec: FeatureViewSpec,
        partition: int,
        dataset: OfflineDataset,
        writer: OnlineWriter,
        dead_letters: DeadLetterSink,
        metrics: WorkerMetrics,
        max_message_bytes: int = 1 << 20,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.spec = spec
        self.partition = partition
        self.dataset = dataset
        self.writer = writer
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.clock_us = clock_us
        self.delay_us = int(spec.watermark_delay.total_seconds() * 1_000_000)
        self.max_event_time = EMPTY_TIME
        self.state = WindowState(spec=spec) if spec.is_aggregated else None
        self.seed = Seed.load(dataset)
        """A backfill's cutover and its latest events, the history of the entities this partition sees."""
        self.cutover_us = EMPTY_TIME if self.seed is None else self.seed.cutover_us
        self.decoder = EventDecoder.for_view(spec, max_message_bytes=max_message_bytes)
        self.transform = EventTransform.for_view(spec)
        self.stored_on_demand = (
            StoredOnDemand(client=writer.client, spec=spec) if spec.stored_on_demand else None
        )
        self.vocabularies: dict[str, dict[str, int]] = {
            column: {} for column in spec.value_columns if spec.input_types[column] == "STRING"
        }
        self.replay_until = -1
        self.pending_files: list[BatchFile] = []
        self.applied_until = -1
        """The offset of the last record applied to the window state: a batch is not applied twice."""
        horizon = horizon_us(spec)
        self._checkpoint_spacing = max(horizon // 8, 1) if horizon is not None else None
        self._passed: list[Checkpoint] = []

    def start(self, *, first_offset: int, history: Iterable[KafkaRecord]) -> int:
        """Rebuild window state from ``history`` (the partition before ``first_offset``) and find the
        batches written after it. Returns how many history records it replayed."""
        replayed = 0
        chunk: list[KafkaRecord] = []
        for record in history:
            chunk.append(record)
            if len(chunk) == _REPLAY_CHUNK:
                replayed += self._replay(chunk)
                chunk = []
        replayed += self._replay(chunk)
        self.dataset.remove_temporary(partition=self.partition)
        uncommitted = [
            file
            for file in self.dataset.batch_files(partition=self.partition)
            if file.last_offset >= first_offset
        ]
        # Batches written but not committed are replayed, and their rows rewritten to Redis; one cut
        # short by a crash between its date files is deleted and computed again.
        written, broken = self.dataset.whole_batches(uncommitted)
        for file in broken:
            file.location.delete()
        if written:
            self.replay_until = max(file.last_offset for file in written)
            self.pending_files = written
        return replayed

    def restore(self, snapshot: PartitionSnapshot) -> None:
        """Take up where a snapshot left off, before ``start`` replays what follows it."""
        self.state = snapshot.state if self.spec.is_aggregated else None
        self.max_event_time = snapshot.max_event_time
        self.vocabularies = {
            column: dict(snapshot.vocabularies.get(column, {})) for column in self.vocabularies
        }
        self.applied_until = snapshot.offset

    def resume_at(self, checkpoint: Checkpoint) -> None:
        """Take up at a checkpoint (``streams.checkpoints``), before ``start`` replays what follows it: the
        records before it are older than anything the window state can still need."""
        self.max_event_time = checkpoint.newest_us
        self.applied_until = checkpoint.offset - 1

    def checkpoint(self) -> Checkpoint:
        """Where this processor stands: past ``applied_until``, with the newest event time accepted."""
        return Checkpoint(offset=self.applied_until + 1, newest_us=self.max_event_time)

    def take_checkpoints(self) -> list[Checkpoint]:
        """The checkpoints passed since the last call: inside the batches (each time the newest event
        time entered another eighth of the view's horizon, so that a batch of a long backlog still leaves
        some), then where the processor stands."""
        passed, self._passed = self._passed, []
        return [*passed, self.checkpoint()]

    def snapshot(self) -> bytes:
        """What this processor knows now, at ``applied_until``, as a snapshot's bytes."""
        return PartitionSnapshot(
            offset=self.applied_until,
            max_event_time=self.max_event_time,
            vocabularies=self.vocabularies,
            state=self.state,
        ).to_bytes(self.spec)

    def prepare(self, records: Sequence[KafkaRecord]) -> PreparedBatch:
        """Apply records of this partition, in offset order, to the window state, once: records already
        applied are skipped. Returns what ``write`` must put in the sinks."""
        fresh = [record for record in records if record.offset > self.applied_until]
        replay = [record for record in fresh if record.offset <= self.replay_until]
        live = [record for record in fresh if record.offset > self.replay_until]
        replayed = self._replay(replay)
        rewrite: tuple[BatchFile, ...] = ()
        if self.pending_files and records and records[-1].offset >= self.replay_until:
            rewrite, self.pending_files = tuple(self.pending_files), []
        return PreparedBatch(
            replayed=replayed, rewrite=rewrite, computed=self._compute(live) if live else None
        )

    def write(self, batch: PreparedBatch) -> BatchOutcome:
        """Write a prepared batch to the sinks; call again with the same batch after a sink failure."""
        online_rows = self._rewrite_online(batch.rewrite) if batch.rewrite else 0
        if batch.computed is None:
            return BatchOutcome(
                accepted=0, dead_letters=0, offline_rows=0, online_rows=online_rows, replayed=batch.replayed
            )
        outcome = self._write(batch.computed)
        return BatchOutcome(
            accepted=outcome.accepted,
            dead_letters=outcome.dead_letters,
            offline_rows=outcome.offline_rows,
            online_rows=outcome.online_rows + online_rows,
            replayed=batch.replayed,
        )

    # --- internals --------------------------------------------------------------------------------

    def _replay(self, records: Sequence[KafkaRecord]) -> int:
        if records:
            self._accept(records, emit=False)
        return len(records)

    def _accept(
        self, records: Sequence[KafkaRecord], *, emit: bool
    ) -> tuple[DecodedBatch, NDArray[np.bool_], NDArray[np.bool_], NDArray[np.int64], ChangeRows | None]:
        """Decode, mark late events, and update window state. Returns the batch, the on-time mask,
        the late mask, the accepted offsets, and (aggregated views, with ``emit``) the change-point
        rows. Events before a backfill's cutover are neither: the backfill holds them."""
        decoded = self.decoder.decode([record.value for record in records])
        if self.transform is not None:
            decoded = self.transform.apply(decoded, live=emit)
        offsets = np.asarray([record.offset for record in records], dtype=np.int64)[decoded.accepted]
        live = decoded.times >= self.cutover_us
        if emit and not live.all():
            self.metrics.before_cutover.labels(self.spec.name).inc(int((~live).sum()))
        # The watermark before each event: the newest event time seen before it, minus the delay.
        live_times = np.where(live, decoded.times, EMPTY_TIME)
        newest_before = np.maximum.accumulate(np.concatenate([[self.max_event_time], live_times]))[:-1]
        self._note_passed(offsets, newest_before)
        watermark = newest_before.copy()
        seen = newest_before != EMPTY_TIME
        watermark[seen] -= self.delay_us
        on_time = live & (decoded.times >= watermark)
        late = live & ~on_time
        if on_time.any():
            self.max_event_time = max(self.max_event_time, int(decoded.times[on_time].max()))
        changes = None
        if self.state is not None and on_time.any():
            keys = [decoded.keys[index] for index in np.flatnonzero(on_time)]
            if self.seed is not None:
                self._seed(keys)
            ids = self.state.ids_for(keys)
            values = {
                column: self._numeric(column, decoded.columns[column][on_time])
                for column in self.spec.value_columns
            }
            integers = {column: exact[on_time] for column, exact in decoded.integers.items()}
            changes = self.state.advance(
                ids, decoded.times[on_time], offsets[on_time], values, integers=integers, emit=emit
            )
        self.applied_until = max(self.applied_until, records[-1].offset)
        return decoded, on_time, late, offsets, changes

    def _note_passed(self, offsets: NDArray[np.int64], newest_before: NDArray[np.int64]) -> None:
        """Checkpoints at the events where the newest time before them entered another spacing."""
        if self._checkpoint_spacing is None or not len(offsets):
            return
        eighths = newest_before // self._checkpoint_spacing
        for position in (np.flatnonzero(np.diff(eighths)) + 1).tolist():
            self._passed.append(
                Checkpoint(offset=int(offsets[position]), newest_us=int(newest_before[position]))
            )

    def _seed(self, keys: list[Any]) -> None:
        """Load the backfill's history of the entities not seen before. Their rows from the cutover up
        to their first event here are the backfill's own (their history alone gives those values)."""
        assert self.state is not None and self.seed is not None
        known, history = self.state.entity_ids, self.seed.events
        fresh = [key for key in dict.fromkeys(keys) if key not in known and key in history]
        if not fresh:
            return
        parts = [history[key] for key in fresh]
        self.state.advance(
            self.state.ids_for([key for key, part in zip(fresh, parts, strict=True) for _ in part[0]]),
            np.concatenate([part[0] for part in parts]),
            np.concatenate([part[1] for part in parts]),
            {
                column: np.concatenate([part[2][column] for part in parts])
                for column in self.spec.value_columns
            },
            integers={column: np.concatenate([part[3][column] for part in parts]) for column in parts[0][3]},
            emit=False,
        )

    def _compute(self, records: Sequence[KafkaRecord]) -> _ComputedBatch:
        """Apply the records to the window state and compute the batch's dead letters and rows."""
        decoded, on_time, late, offsets, changes = self._accept(records, emit=True)
        letters = [
            DeadLetter(record=records[rejection.index], reason=rejection.reason, detail=rejection.detail)
            for rejection in decoded.rejections
        ]
        letters += [
            DeadLetter(
                record=records[int(decoded.accepted[index])],
                reason="late",
                detail=f"event time is over {self.spec.watermark_delay} behind the partition's newest event",
            )
            for index in np.flatnonzero(late)
        ]
        accepted = int(on_time.sum())
        if changes is not None:
            rows, newest = self._change_rows(changes, version=records[-1].offset)
        elif accepted and self.state is None:
            rows, newest = self._event_rows(decoded, on_time, offsets)
        else:
            rows, newest = self._no_rows(), np.empty(0, dtype=np.int64)
        return _ComputedBatch(
            first_offset=records[0].offset,
            last_offset=records[-1].offset,
            accepted=accepted,
            letters=letters,
            rows=rows,
            online=rows.take(newest),
        )

    def _write(self, batch: _ComputedBatch) -> BatchOutcome:
        """Dead letters first, then Parquet and Redis side by side; the batch is written when all returned."""
        started = time.perf_counter()
        view = self.spec.name
        with SinkFailed.naming("dead_letters"):
            self.dead_letters.send(batch.letters)
        online = 0
        rows = batch.rows
        if len(rows):
            # Both sinks release the GIL while they wait on I/O, so they run side by side.
            online_write = _SINKS.submit(self._write_online, batch.online)
            offline_error: Exception | None = None
            try:
                self.dataset.write_batch(
                    partition=self.partition,
                    first_offset=batch.first_offset,
                    last_offset=batch.last_offset,
                    keys=rows.keys,
                    event_times_us=np.asarray(rows.event_times_us, dtype=np.int64),
                    created_times_us=np.asarray(rows.created_times_us, dtype=np.int64),
                    offsets=np.asarray(rows.offsets, dtype=np.int64),
                    features=rows.features,
                )
            except Exception as error:  # wait for Redis first: the batch is written again, whole
                offline_error = error
            with SinkFailed.naming("online"):
                online = online_write.result()
            if offline_error is not None:
                raise SinkFailed("offline", offline_error) from offline_error
        for letter in batch.letters:
            self.metrics.dead_letters.labels(view, letter.reason).inc()
        self.metrics.events.labels(view).inc(batch.accepted)
        self.metrics.rows.labels(view, "offline").inc(len(rows))
        self.metrics.rows.labels(view, "online").inc(online)
        self.metrics.batch_seconds.labels(view).observe(time.perf_counter() - started)
        self.metrics.event_time_lag.labels(view).set(self.clock_us() / 1e6 - self.max_event_time / 1e6)
        if len(rows):
            self.metrics.written(view, self.partition, newest_us=int(self.max_event_time))
        return BatchOutcome(
            accepted=batch.accepted,
            dead_letters=len(batch.letters),
            offline_rows=len(rows),
            online_rows=online,
            replayed=0,
        )

    def _change_rows(self, changes: ChangeRows, *, version: int) -> tuple[FeatureRows, NDArray[np.int64]]:
        """An aggregated view's change-point rows, all with the batch's last offset as their version,
        and the position of each entity's newest row."""
        assert self.state is not None
        entity_keys = self.state.entity_keys
        # A sum past 2^63 is null: data, not an outage, so it is counted rather than retried.
        for feature, overflows in changes.overflows.items():
            self.metrics.overflows.labels(self.spec.name, feature).inc(overflows)
        features: dict[str, Any] = {}
        for aggregation in self.spec.aggregations:
            values = changes.features[aggregation.feature]
            vocabulary = self.vocabularies.get(aggregation.column)
            if vocabulary is not None and aggregation.function == "last":
                words = list(vocabulary)
                values = np.asarray([None if np.isnan(v) else words[int(v)] for v in values], dtype=object)
            features[aggregation.feature] = values
        rows = FeatureRows(
            keys=[entity_keys[entity] for entity in changes.entity_ids.tolist()],
            event_times_us=changes.times,
            created_times_us=np.full(len(changes), self.clock_us(), dtype=np.int64),
            offsets=np.full(len(changes), version, dtype=np.int64),
            features=features,
        )
        # Rows are sorted by time: an entity's last row is its newest.
        _, last_reversed = np.unique(changes.entity_ids[::-1], return_index=True)
        return rows, np.sort(len(changes) - 1 - last_reversed)

    def _event_rows(
        self, decoded: DecodedBatch, on_time: NDArray[np.bool_], offsets: NDArray[np.int64]
    ) -> tuple[FeatureRows, NDArray[np.int64]]:
        """A plain view's rows: one per on-time event, the later offset winning at one (entity, event
        time), each versioned by its own offset; and the position of each entity's newest row."""
        at_time: dict[tuple[Any, int], int] = {}
        for index, event_time in zip(
            np.flatnonzero(on_time).tolist(), decoded.times[on_time].tolist(), strict=True
        ):
            at_time[(decoded.keys[index], event_time)] = index  # offsets rise with the index
        indexes = np.fromiter(at_time.values(), dtype=np.int64, count=len(at_time))
        indexes.sort()
        times, row_offsets = decoded.times[indexes], offsets[indexes]
        newest: dict[Any, int] = {}
        for position in np.lexsort((row_offsets, times)).tolist():
            newest[decoded.keys[indexes[position]]] = position
        rows = FeatureRows(
            keys=[decoded.keys[index] for index in indexes.tolist()],
            event_times_us=times,
            created_times_us=np.full(len(indexes), self.clock_us(), dtype=np.int64),
            offsets=row_offsets,
            features={
                name: cast("Sequence[Any]", decoded.columns[name][indexes]) for name in self.spec.features
            },
        )
        return rows, np.sort(np.fromiter(newest.values(), dtype=np.int64, count=len(newest)))

    def _no_rows(self) -> FeatureRows:
        return FeatureRows(
            keys=[],
            event_times_us=np.empty(0, dtype=np.int64),
            created_times_us=np.empty(0, dtype=np.int64),
            offsets=np.empty(0, dtype=np.int64),
            features={name: [] for name in self.spec.features},
        )

    def _numeric(self, column: str, values: NDArray[Any]) -> NDArray[np.float64]:
        vocabulary = self.vocabularies.get(column)
        if vocabulary is None:
            return np.asarray(values, dtype=np.float64)
        codes = np.empty(len(values), dtype=np.float64)
        for position, value in enumerate(values):
            codes[position] = np.nan if value is None else vocabulary.setdefault(value, len(vocabulary))
        return codes

    def _rewrite_online(self, files: Sequence[BatchFile]) -> int:
        """Write the rows of batches that reached Parquet but were never committed to Redis again."""
        with SinkFailed.naming("online"):
            return self._write_online(feature_rows(self.spec, self.dataset.read(files)))

    def _write_online(self, rows: FeatureRows) -> int:
        """The view's rows to Redis, then the on-demand views it stores, computed from them."""
        applied = self.writer.write(rows)
        if self.stored_on_demand is not None:
            self.stored_on_demand.write(rows)
        return applied
