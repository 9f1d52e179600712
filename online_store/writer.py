"""Write feature rows to Redis in Feast's layout: pipelined, atomic per entity, newer event time wins.

Rows go in ``EVALSHA`` calls of a small Lua script, a few hundred rows a call, so the
compare-and-set of the event time is atomic in Redis (Feast reads the stored time, then writes,
in two round trips). A row is written when its version is newer than the stored one: its event
time, then at an equal event time its source offset, then its created time; so a late event's
correction replaces the row it corrects. Rewriting the same row is a no-op, so replays are idempotent.

Beside Feast's fields, each row has a ``_ver:<feature_view>`` field that Feast ignores: the event time,
the source offset and the created time as 20-digit numbers, then the ``_ts`` bytes written with them.
At one event time the later offset wins (ties are the log's, not a clock's), then the later created
time. Redis compares two versions as strings, instead of decoding the stored protobuf timestamp in
Lua, which halved its time per row. A row whose ``_ts`` is not the one its version was written with
(Feast wrote it) is compared by its decoded ``_ts``. The commands are packed into RESP here
(``online_store.wire``); redis-py's packing of their many arguments cost the worker more than the
rest of the write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import redis
from numpy.typing import NDArray
from redis.cluster import RedisCluster

from features.spec import FeatureViewSpec
from online_store.cluster import ClusterWire
from online_store.layout import (
    encode_timestamps_micros,
    encode_value,
    entity_keys,
    feature_field,
    timestamp_field,
)
from online_store.slot_writes import SlotWriter
from online_store.wire import bulk, fetch

__all__ = ["FeatureRows", "OnlineWriter", "value_segments"]

# KEYS: the entities' hashes. ARGV[1]: the number of arguments per row. Then per row, its HSET arguments:
# the _ts field and value, the _ver field and value, and a field and value per feature.
# Returns how many rows it applied.
_SINGLE_HEAD = """
local keys, i = KEYS, 2
"""
# On a cluster the hashes are in ARGV (ARGV[2] of them after the width), so that one call may write keys
# of every slot its node serves: Redis refuses declared KEYS of more than one slot, and one call per
# slot would be a call per few rows. Redis checks each key the script touches is served by the node.
_CLUSTER_HEAD = """#!lua flags=allow-cross-slot-keys
local count = tonumber(ARGV[2])
local keys, i = {unpack(ARGV, 3, 2 + count)}, 3 + count
"""
_WRITE_IF_NEWER = """
local width = tonumber(ARGV[1])
local sub = string.sub
local function micros(raw)
  local seconds, nanos, i = 0, 0, 1
  while i <= #raw do
    local tag = string.byte(raw, i)
    i = i + 1
    local value, scale = 0, 1
    repeat
      local byte = string.byte(raw, i)
      i = i + 1
      value = value + (byte % 128) * scale
      scale = scale * 128
    until byte < 128
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds * 1000000 + math.floor(nanos / 1000)
end
local applied = 0
for row = 1, #keys do
  local stored = redis.call('HMGET', keys[row], ARGV[i], ARGV[i + 2])
  local newer = true
  if stored[1] then
    local version, stored_version = ARGV[i + 3], stored[2]
    if stored_version and sub(stored_version, 61) == stored[1] then
      newer = sub(version, 1, 60) > sub(stored_version, 1, 60)
    else
      newer = micros(ARGV[i + 1]) > micros(stored[1])
    end
  end
  if newer then
    redis.call('HSET', keys[row], unpack(ARGV, i, i + width - 1))
    applied = applied + 1
  end
  i = i + width
end
return applied
"""
_ROWS_PER_CALL = 500
_BIAS = 1 << 63
"""Added to times in a version, so that 20 digits order every int64 time as strings."""


@dataclass(frozen=True, kw_only=True)
class FeatureRows:
    """Feature rows of one feature view, as columns: one entry per row in each list."""

    keys: Sequence[Any]
    """Entity key per row: the join key's value, or a tuple in the view's join key order."""
    event_times_us: Sequence[int] | NDArray[np.int64]
    created_times_us: Sequence[int] | NDArray[np.int64]
    features: dict[str, Sequence[Any]]
    """Feature name to values (None or NaN for null); a list type's value is a list or a 1-d array, a
    timestamp's a datetime (in a list too) or whole epoch seconds, bytes are bytes."""
    offsets: Sequence[int] | NDArray[np.int64] | None = None
    """The row's place in its source's log (a Kafka offset): at one event time the higher one wins.
    None where rows have no place in a log; then the created time decides."""

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, positions: NDArray[np.int64]) -> FeatureRows:
        """The rows at these positions, in their order."""
        index = positions.tolist()
        return FeatureRows(
            keys=[self.keys[position] for position in index],
            event_times_us=np.asarray(self.event_times_us, dtype=np.int64)[positions],
            created_times_us=np.asarray(self.created_times_us, dtype=np.int64)[positions],
            offsets=None if self.offsets is None else np.asarray(self.offsets, dtype=np.int64)[positions],
            features={
                name: values[positions] if isinstance(values, np.ndarray) else [values[i] for i in index]
                for name, values in self.features.items()
            },
        )


class OnlineWriter:
    """Writes one feature view's rows to Redis, or to a Redis Cluster (``online_store.slot_writes``)."""

    def __init__(self, *, client: redis.Redis | RedisCluster, spec: FeatureViewSpec) -> None:
        self.client = client
        self.spec = spec
        self._sha: bytes | None = None
        """Loaded on the first write, so that a worker starts while Redis is away and retries its writes."""
        self._cluster = (
            SlotWriter(wire=ClusterWire.of(client), script=_CLUSTER_HEAD + _WRITE_IF_NEWER)
            if isinstance(client, RedisCluster)
            else None
        )
        self._ts_field = bulk(timestamp_field(spec.name))
        self._version_field = bulk(b"_ver:" + spec.name.encode())
        self._fields = {name: bulk(feature_field(spec.name, name)) for name in spec.features}

    def write(self, rows: FeatureRows) -> int:
        """Write the rows in one pipelined round trip (one per primary of a cluster, all at once);
        returns how many were newer and applied."""
        if not len(rows):
            return 0
        if self._cluster is not None:
            keys, packed, width = self._pack(rows)
            return self._cluster.write(keys, packed, width)
        if self._sha is None:
            self._sha = self._load_script()
        try:
            return self._write(rows)
        except redis.exceptions.NoScriptError:
            # Redis restarted (or flushed its scripts) since we loaded the script: load it again once.
            self._sha = self._load_script()
            return self._write(rows)

    def _load_script(self) -> bytes:
        """Load the script; returns its SHA as a RESP bulk string."""
        return bulk(str(self.client.script_load(_SINGLE_HEAD + _WRITE_IF_NEWER)).encode())

    def _write(self, rows: FeatureRows) -> int:
        raw_keys, packed, width = self._pack(rows)
        keys = [bulk(key) for key in raw_keys]
        calls = []
        for start in range(0, len(keys), _ROWS_PER_CALL):
            count = min(_ROWS_PER_CALL, len(keys) - start)
            calls.append(
                b"*%d\r\n$7\r\nEVALSHA\r\n%s%s%s%s%s"
                % (
                    4 + count * (1 + width),
                    self._sha,
                    bulk(b"%d" % count),
                    b"".join(keys[start : start + count]),
                    bulk(b"%d" % width),
                    b"".join(packed[start : start + count]),
                )
            )
        assert isinstance(self.client, redis.Redis)
        return sum(int(applied) for applied in fetch(self.client, b"".join(calls), len(calls)))

    def _pack(self, rows: FeatureRows) -> tuple[list[bytes], list[bytes], int]:
        """The rows' Redis keys, each row's HSET arguments packed, and how many arguments a row has."""
        spec = self.spec
        keys = entity_keys(rows.keys, spec.join_keys, spec.project)
        event_us = np.asarray(rows.event_times_us, dtype=np.int64)
        created_us = np.asarray(rows.created_times_us, dtype=np.int64)
        offsets = (
            np.full(len(event_us), -1, dtype=np.int64)
            if rows.offsets is None
            else np.asarray(rows.offsets, dtype=np.int64)
        )
        heads = [
            b"%s$%d\r\n%s\r\n%s$%d\r\n%020d%020d%020d%s\r\n"
            % (
                self._ts_field,
                len(ts),
                ts,
                self._version_field,
                60 + len(ts),
                event + _BIAS,
                offset + _BIAS,
                created + _BIAS,
                ts,
            )
            for ts, event, offset, created in zip(
                encode_timestamps_micros(event_us),
                event_us.tolist(),
                offsets.tolist(),
                created_us.tolist(),
                strict=True,
            )
        ]
        # Per feature, its field then its value, in every row.
        columns = chain.from_iterable(
            ([self._fields[name]] * len(heads), value_segments(values, spec.features[name]))
            for name, values in rows.features.items()
        )
        packed = list(map(b"".join, zip(heads, *columns, strict=True)))
        return keys, packed, 4 + 2 * len(rows.features)


_SMALL_INT64 = [bulk(encode_value(number, "INT64")) for number in range(1 << 14)]
_NULL = bulk(b"")


def value_segments(values: Sequence[Any], dtype: str) -> list[bytes]:
    """Serialized ``Value`` protos of a column, each as a RESP bulk string; FLOAT64 and small INT64
    counts take vectorised paths.

    >>> value_segments([2.5, None], "FLOAT64") == [bulk(encode_value(2.5, "FLOAT64")), b"$0\\r\\n\\r\\n"]
    True
    """
    if isinstance(values, np.ma.MaskedArray):
        # Exact integers (int64 masked where null): as Python ints, which every integer type encodes.
        nulls = np.ma.getmaskarray(values).tolist()
        values = [None if null else number for number, null in zip(values.data.tolist(), nulls, strict=True)]
    if dtype == "INT64" and isinstance(values, np.ndarray) and values.dtype.kind == "f":
        present = ~np.isnan(values)
        numbers = np.where(present, values, 0).astype(np.int64)
        if numbers.size and numbers.min() >= 0 and numbers.max() < len(_SMALL_INT64):
            table = _SMALL_INT64
            return [
                table[number] if keep else _NULL
                for number, keep in zip(numbers.tolist(), present.tolist(), strict=True)
            ]
    if dtype == "FLOAT64" and isinstance(values, np.ndarray):
        array = np.asarray(values, dtype=np.float64)
        record = np.empty(len(array), dtype=[("head", "S4"), ("tag", "u1"), ("value", "<f8"), ("tail", "S2")])
        record["head"] = b"$9\r\n"
        record["tag"] = 0x29
        record["value"] = array
        record["tail"] = b"\r\n"
        segments: list[bytes] = np.frombuffer(record.tobytes(), dtype="V15").tolist()
        for row in np.flatnonzero(np.isnan(array)).tolist():
            segments[row] = _NULL
        return segments
    return [bulk(encode_value(value, dtype)) for value in values]
