"""Window parts: what the monitors that share a predictions topic tell each other, in the monitor's store.

Each monitor in consumer group ``sluice-monitor-<project>`` reads some of the topic's partitions. For
each (model version, window, partition) it builds a part (a ``ServingWindow`` and a skew sample of that
partition's events), and saves it once the partition's stream time has passed the window's end plus
the lateness: no later record of that partition can enter it. With the parts, it saves each of its
partitions' mark (``PartitionMark``): how far it has read, whether it has caught up, and which windows
are still open there. The monitor that reads partition 0 merges a window once the marks of every
partition have passed it, in partition order, so the report is the same, bit for bit, however many
monitors shared the work; it records the window as merged and drops its parts in the same transaction.

>>> from monitors.database import open_store
>>> parts = WindowParts(engine=open_store("sqlite://"), topic="predictions")
>>> parts.save(parts=[Part(model="m", version="1", start_us=0, partition=0, window=b"w", skew=None)],
...            marks={0: PartitionMark(stream_time_us=95, caught_up=False, latest={('m', '1'): 90}, open={})})
>>> parts.marks()[0].hold_us(("m", "1"), lateness_us=10)
80
>>> [(part.partition, part.window) for part in parts.parts(("m", "1"), 0)]
[(0, b'w')]
>>> parts.merge(("m", "1"), 0, window=b"merged")
>>> parts.parts(("m", "1"), 0), parts.merged_until(), parts.last_merged(("m", "1"))
([], {('m', '1'): 0}, (0, b'merged'))
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from sqlalchemy import ColumnElement, Engine, and_, delete, func, insert, select, update

from monitors.database import merged_windows, partition_marks, window_parts
from monitors.events.batch import Version

__all__ = ["Part", "PartitionMark", "WindowParts", "oldest_offsets"]

_NEVER = -(2**62)
_ALWAYS = 2**62


class _Opened(Protocol):
    @property
    def first_offset(self) -> int: ...


def oldest_offsets(open_parts: Mapping[tuple[Version, int, int], _Opened]) -> dict[int, int]:
    """Per partition, the smallest ``first_offset`` of the open parts, keyed ``(version, start,
    partition)``: the engine commits no further, so a restart reads every open part's records again.

    >>> from types import SimpleNamespace as Part
    >>> oldest_offsets({(("a", "1"), 0, 1): Part(first_offset=7), (("b", "1"), 5, 1): Part(first_offset=3)})
    {1: 3}
    """
    result: dict[int, int] = {}
    for (_, _, partition), part in open_parts.items():
        result[partition] = min(result.get(partition, part.first_offset), part.first_offset)
    return result


@dataclass(frozen=True, kw_only=True)
class Part:
    """One partition's share of one window of one model version, as bytes."""

    model: str
    version: str
    start_us: int
    partition: int
    window: bytes
    skew: bytes | None


@dataclass(frozen=True, kw_only=True)
class PartitionMark:
    """Where one partition stands, as the monitor reading it last saved it."""

    stream_time_us: int | None
    """The latest event time read from the partition, of any model; None before the first."""
    caught_up: bool
    """Whether every record of the partition was read (its end offset was reached)."""
    latest: Mapping[Version, int]
    """Per model version, the latest event time of it read from the partition."""
    open: Mapping[Version, int]
    """Per model version, the start of the partition's oldest window not saved yet."""

    def hold_us(self, version: Version, *, lateness_us: int) -> int:
        """The end up to which every window of ``version`` has its part from this partition saved, or
        will have none. Caught up: up to its oldest open window. Behind: up to the version's latest
        event time less the lateness (a later event of an older window is late); for a version not seen
        there yet, up to the partition's stream time less the lateness."""
        if self.caught_up:
            return self.open.get(version, _ALWAYS)
        latest = self.latest.get(version, self.stream_time_us)
        return _NEVER if latest is None else latest - lateness_us

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "stream_time_us": self.stream_time_us,
                "caught_up": self.caught_up,
                "latest": [[model, version, at] for (model, version), at in self.latest.items()],
                "open": [[model, version, start] for (model, version), start in self.open.items()],
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> PartitionMark:
        mark = orjson.loads(data)
        return cls(
            stream_time_us=mark["stream_time_us"],
            caught_up=mark["caught_up"],
            latest={(model, version): at for model, version, at in mark["latest"]},
            open={(model, version): start for model, version, start in mark["open"]},
        )


class WindowParts:
    """The parts, the partitions' marks and the merged windows of one topic, in the monitor's store."""

    def __init__(self, *, engine: Engine, topic: str) -> None:
        self.engine = engine
        self.topic = topic

    def save(self, *, parts: Sequence[Part], marks: Mapping[int, PartitionMark]) -> None:
        """Save parts (replacing the same part saved before a restart) and marks, in one transaction."""
        now = time.time()
        with self.engine.begin() as connection:
            for part in parts:
                connection.execute(
                    delete(window_parts).where(
                        self._of(part.model, part.version, part.start_us),
                        window_parts.c.partition == part.partition,
                    )
                )
            if parts:
                connection.execute(
                    insert(window_parts),
                    [
                        {
                            "topic": self.topic,
                            "model": part.model,
                            "version": part.version,
                            "window_start_us": part.start_us,
                            "partition": part.partition,
                            "window": part.window,
                            "skew": part.skew,
                        }
                        for part in parts
                    ],
                )
            if marks:
                connection.execute(
                    delete(partition_marks).where(
                        partition_marks.c.topic == self.topic, partition_marks.c.partition.in_(list(marks))
                    )
                )
                connection.execute(
                    insert(partition_marks),
                    [
                        {
                            "topic": self.topic,
                            "partition": partition,
                            "mark": mark.to_json().decode(),
                            "updated_at": now,
                        }
                        for partition, mark in marks.items()
                    ],
                )

    def marks(self) -> dict[int, PartitionMark]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(partition_marks.c.partition, partition_marks.c.mark).where(
                    partition_marks.c.topic == self.topic
                )
            ).all()
        return {partition: PartitionMark.from_json(mark) for partition, mark in rows}

    def pending(self) -> list[tuple[Version, int]]:
        """(model version, window start) of every window with parts, oldest first."""
        columns = window_parts.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(columns.model, columns.version, columns.window_start_us)
                .where(columns.topic == self.topic)
                .distinct()
                .order_by(columns.window_start_us, columns.model, columns.version)
            ).all()
        return [((model, version), start) for model, version, start in rows]

    def parts(self, version: Version, start_us: int) -> list[Part]:
        """A window's parts, in partition order."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(window_parts.c.partition, window_parts.c.window, window_parts.c.skew)
                .where(self._of(*version, start_us))
                .order_by(window_parts.c.partition)
            ).all()
        return [
            Part(
                model=version[0],
                version=version[1],
                start_us=start_us,
                partition=partition,
                window=window,
                skew=skew,
            )
            for partition, window, skew in rows
        ]

    def saved_until(self, partitions: Collection[int]) -> dict[tuple[Version, int], int]:
        """Per (model version, partition), the start of its newest saved part."""
        columns = window_parts.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(columns.model, columns.version, columns.partition, func.max(columns.window_start_us))
                .where(columns.topic == self.topic, columns.partition.in_(list(partitions)))
                .group_by(columns.model, columns.version, columns.partition)
            ).all()
        return {((model, version), partition): start for model, version, partition, start in rows}

    def merge(self, version: Version, start_us: int, *, window: bytes | None) -> None:
        """Record a window as merged, keeping its merged state (the next window is compared with it; none
        for a window that could not be scored), and drop its parts and the merged state of the version's
        older windows."""
        with self.engine.begin() as connection:
            connection.execute(delete(window_parts).where(self._of(*version, start_us)))
            connection.execute(
                update(merged_windows)
                .where(
                    merged_windows.c.topic == self.topic,
                    merged_windows.c.model == version[0],
                    merged_windows.c.version == version[1],
                )
                .values(window=None)
            )
            connection.execute(
                delete(merged_windows).where(
                    merged_windows.c.topic == self.topic,
                    merged_windows.c.model == version[0],
                    merged_windows.c.version == version[1],
                    merged_windows.c.window_start_us == start_us,
                )
            )
            connection.execute(
                insert(merged_windows).values(
                    topic=self.topic,
                    model=version[0],
                    version=version[1],
                    window_start_us=start_us,
                    window=window,
                    merged_at=time.time(),
                )
            )

    def merged_until(self) -> dict[Version, int]:
        """Per model version, the start of its newest merged window."""
        columns = merged_windows.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(columns.model, columns.version, func.max(columns.window_start_us))
                .where(columns.topic == self.topic)
                .group_by(columns.model, columns.version)
            ).all()
        return {(model, version): start for model, version, start in rows}

    def last_merged(self, version: Version) -> tuple[int, bytes] | None:
        """The start and merged state of the version's newest merged window, if it is kept."""
        columns = merged_windows.c
        with self.engine.connect() as connection:
            row = connection.execute(
                select(columns.window_start_us, columns.window)
                .where(
                    columns.topic == self.topic,
                    columns.model == version[0],
                    columns.version == version[1],
                    columns.window.is_not(None),
                )
                .order_by(columns.window_start_us.desc())
                .limit(1)
            ).first()
        return None if row is None else (row[0], row[1])

    def reset(self) -> None:
        """Forget the topic's parts, marks and merged windows: for a replay from the beginning of the
        topic (its group's offsets reset) that scores every window again."""
        with self.engine.begin() as connection:
            for table in (window_parts, partition_marks, merged_windows):
                connection.execute(delete(table).where(table.c.topic == self.topic))

    def _of(self, model: str, version: str, start_us: int) -> ColumnElement[bool]:
        columns = window_parts.c
        return and_(
            columns.topic == self.topic,
            columns.model == model,
            columns.version == version,
            columns.window_start_us == start_us,
        )
