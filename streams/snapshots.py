"""Window state to bytes and back: what a restart loads instead of replaying a partition's history.

A snapshot holds every array of a ``WindowState`` (each entity's rings of panes, its newest event
time, the raw events kept for late ones, the stream time) for the entities seen, as a NumPy ``.npz``
archive read with ``allow_pickle=False``: no payload is ever unpickled. Entity keys are stored as
JSON. Each snapshot carries the fingerprint of the view definition and of this format; a snapshot
whose fingerprint differs is refused, since its state would not be the state of the view as now
defined (another window, another udf, another layout of the arrays).

>>> from datetime import timedelta
>>> from features.spec import AggregationSpec, FeatureViewSpec
>>> import numpy as np
>>> spec = FeatureViewSpec(name="v", project="p", topic="t", join_keys={"k": "INT64"}, timestamp_field="ts",
...     message_schema={"k": "INT64", "x": "FLOAT64", "ts": "UNIX_TIMESTAMP"}, features={"x_sum": "FLOAT64"},
...     aggregations=(AggregationSpec(feature="x_sum", column="x", function="sum",
...                   window=timedelta(seconds=10), slide=timedelta(seconds=10), dtype="FLOAT64"),))
>>> state = WindowState(spec=spec)
>>> _ = state.advance(state.ids_for([7, 8]), np.array([1, 2]), np.array([0, 1]), {"x": np.array([1.5, 2.0])})
>>> again = load_state(spec, dump_state(state))
>>> again.entity_keys, again.stream_time
([7, 8], 2)
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from features.spec import FeatureViewSpec
from offline_store.storage import Location
from streams.windows import WindowState

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "PartitionSnapshot",
    "SnapshotError",
    "SnapshotStore",
    "dump_state",
    "load_state",
    "state_fingerprint",
]

FORMAT = 1
"""The layout of the arrays in a snapshot; a change to ``WindowState``'s arrays raises it."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:
        return "unknown"


_SLUICE_VERSION = _version()
"""Part of every fingerprint: another release may compute windows or late events differently."""


class SnapshotError(ValueError):
    """A snapshot that cannot be used for this view: another definition, format, or a damaged file."""


def state_fingerprint(spec: FeatureViewSpec) -> str:
    """The identity of the state a view's definition makes: any change to the definition changes it
    (conservatively: a change that would keep the state valid also does, and costs one replay)."""
    return hashlib.sha256(f"{FORMAT}\n{_SLUICE_VERSION}\n{spec!r}".encode()).hexdigest()


def dump_state(state: WindowState) -> bytes:
    """The state as an ``.npz`` archive of its arrays, with a JSON header: format, fingerprint,
    stream time and entity keys."""
    return _dump(state.spec, state, {})


def load_state(spec: FeatureViewSpec, data: bytes) -> WindowState:
    """The state a snapshot holds, for this view; ``SnapshotError`` when it is not this view's."""
    state, _ = _load(spec, data)
    if state is None:
        raise SnapshotError(f"the snapshot holds no window state of feature view {spec.name!r}")
    return state


@dataclass(frozen=True, kw_only=True)
class PartitionSnapshot:
    """What a partition's processor knows after applying every record up to ``offset``: its window state
    (None for a view without aggregations), its newest event time (the watermark's base), and the codes
    it gave string values."""

    offset: int
    max_event_time: int
    vocabularies: dict[str, dict[str, int]] = field(default_factory=dict)
    state: WindowState | None = None

    def to_bytes(self, spec: FeatureViewSpec) -> bytes:
        extra = {
            "offset": self.offset,
            "max_event_time": self.max_event_time,
            "vocabularies": self.vocabularies,
        }
        return _dump(spec, self.state, extra)

    @classmethod
    def from_bytes(cls, spec: FeatureViewSpec, data: bytes) -> PartitionSnapshot:
        state, header = _load(spec, data)
        try:
            return cls(
                offset=int(header["offset"]),
                max_event_time=int(header["max_event_time"]),
                vocabularies={column: dict(codes) for column, codes in header["vocabularies"].items()},
                state=state,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SnapshotError(f"snapshot has no partition header: {error}") from None


class SnapshotStore:
    """A view's snapshots, beside its offline data: ``<root>/_snapshots/<topic>-<partition>-<offset>.npz``.

    A snapshot is written after its offset is committed, whole or not at all (``Location``), under a
    name from that offset, so a crash mid-write leaves at most an older snapshot to use. The newest
    two per partition are kept: if the newest turns out unusable, the one before it still saves the
    replay of the whole retention."""

    KEEP = 2

    def __init__(self, *, spec: FeatureViewSpec, root: Location) -> None:
        self.spec = spec
        self.folder = root.child("_snapshots")
        self._name = re.compile(rf"^{re.escape(spec.topic)}-(\d{{5}})-(\d{{20}})\.npz$")

    def save(self, partition: int, data: bytes, *, offset: int) -> None:
        self.folder.child(f"{self.spec.topic}-{partition:05d}-{offset:020d}.npz").write_bytes(data)
        # Only older ones go: after a group reset below them, later snapshots stay valid (a log's
        # records do not change), and the new one must not be the one deleted.
        older = [location for other, location in self._snapshots(partition) if other < offset]
        for location in older[self.KEEP - 1 :]:
            location.delete()

    def newest(self, partition: int, *, before: int) -> PartitionSnapshot | None:
        """The newest usable snapshot of the partition at an offset before ``before`` (the committed
        offset), or None. One made by another definition, udf or sluice version is skipped, and said."""
        temporary = f".{self.spec.topic}-{partition:05d}-"
        for location in self.folder.files(recursive=False):
            if location.name.startswith(temporary) and location.name.endswith(".tmp"):
                location.delete()  # a write a crash cut short
        for offset, location in self._snapshots(partition):
            if offset >= before:
                continue  # past the committed offset (the group was rewound): not this history
            try:
                return PartitionSnapshot.from_bytes(self.spec, location.read_bytes())
            except (SnapshotError, FileNotFoundError) as error:
                log.warning(
                    "%s partition %d: not using snapshot %s: %s",
                    self.spec.name,
                    partition,
                    location.uri,
                    error,
                )
        return None

    def _snapshots(self, partition: int) -> list[tuple[int, Location]]:
        """(offset, location) of the partition's snapshots, newest first."""
        found = []
        for location in self.folder.files(recursive=False):
            match = self._name.match(location.name)
            if match is not None and int(match[1]) == partition:
                found.append((int(match[2]), location))
        return sorted(found, key=lambda item: item[0], reverse=True)


def _dump(spec: FeatureViewSpec, state: WindowState | None, extra: dict[str, Any]) -> bytes:
    header = {
        "format": FORMAT,
        "fingerprint": state_fingerprint(spec),
        "stream_time": None if state is None else state.stream_time,
        "keys": None if state is None else state.entity_keys,
        **extra,
    }
    encoded = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    arrays = {} if state is None else state.to_arrays()
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, header=np.frombuffer(encoded, dtype=np.uint8), **arrays)
    return out.getvalue()


def _load(spec: FeatureViewSpec, data: bytes) -> tuple[WindowState | None, dict[str, Any]]:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        stored = {name: archive[name] for name in archive.files}
        header = orjson.loads(stored.pop("header").tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise SnapshotError(f"unreadable snapshot: {error}") from None
    if header.get("format") != FORMAT:
        raise SnapshotError(f"snapshot format {header.get('format')} is not this sluice's ({FORMAT})")
    if header.get("fingerprint") != state_fingerprint(spec):
        raise SnapshotError(f"snapshot was made by another definition of feature view {spec.name!r}")
    if header.get("keys") is None:
        return None, header
    keys = [tuple(key) if isinstance(key, list) else key for key in header["keys"]]
    try:
        state = WindowState.from_arrays(
            spec=spec, keys=keys, stream_time=int(header["stream_time"]), arrays=stored
        )
    except (KeyError, ValueError) as error:
        raise SnapshotError(f"snapshot does not match feature view {spec.name!r}: {error}") from None
    return state, header
