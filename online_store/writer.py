"""Write feature rows to Redis in Feast's layout: pipelined, atomic per entity, newer event time wins.

Rows go in ``EVALSHA`` calls of a small Lua script, a few hundred rows a call, so the
compare-and-set of the event time is atomic in Redis (Feast reads the stored time, then writes,
in two round trips) and the client packs few commands. A row is written
when its event time is newer than the stored one; at an equal event time, only when its created
time is newer, which lets a late event's correction replace the row it corrects. Rewriting the
same row is a no-op, so replays are idempotent. The created time sits in an extra
``_cts:<feature_view>`` field that Feast ignores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import redis
from numpy.typing import NDArray

from features.spec import FeatureViewSpec
from online_store.layout import encode_value, entity_keys, feature_field, timestamp_field

__all__ = ["FeatureRows", "OnlineWriter"]

# KEYS: the entities' hashes. ARGV: the _ts field, the _cts field, the number of features, the feature
# fields, then per row: event µs, created µs and one value per feature. Returns how many rows it applied.
_WRITE_IF_NEWER = """
local ts_field, cts_field, width = ARGV[1], ARGV[2], tonumber(ARGV[3])
local char = string.char
local function varint(n)
  -- Appending to a string: a table and table.concat per call cost Redis a quarter more per row.
  local out = ''
  repeat
    local byte = n % 128
    n = (n - byte) / 128
    if n > 0 then byte = byte + 128 end
    out = out .. char(byte)
  until n == 0
  return out
end
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
local base = 3 + width
for row = 1, #KEYS do
  local event_us = tonumber(ARGV[base + 1])
  local created_us = tonumber(ARGV[base + 2])
  local stored = redis.call('HMGET', KEYS[row], ts_field, cts_field)
  local newer = true
  if stored[1] then
    local stored_us = micros(stored[1])
    newer = event_us > stored_us or (event_us == stored_us and created_us > tonumber(stored[2] or '0'))
  end
  if newer then
    local seconds = math.floor(event_us / 1000000)
    local nanos = (event_us - seconds * 1000000) * 1000
    local ts = ''
    if seconds > 0 then ts = '\\8' .. varint(seconds) end
    if nanos > 0 then ts = ts .. '\\16' .. varint(nanos) end
    local pairs = {ts_field, ts, cts_field, ARGV[base + 2]}
    for f = 1, width do
      pairs[#pairs + 1] = ARGV[3 + f]
      pairs[#pairs + 1] = ARGV[base + 2 + f]
    end
    redis.call('HSET', KEYS[row], unpack(pairs))
    applied = applied + 1
  end
  base = base + 2 + width
end
return applied
"""
_ROWS_PER_CALL = 500


@dataclass(frozen=True, kw_only=True)
class FeatureRows:
    """Feature rows of one feature view, as columns: one entry per row in each list."""

    keys: Sequence[Any]
    """Entity key per row: the join key's value, or a tuple in the view's join key order."""
    event_times_us: Sequence[int] | NDArray[np.int64]
    created_times_us: Sequence[int] | NDArray[np.int64]
    features: dict[str, Sequence[Any]]
    """Feature name to values (None or NaN for null)."""

    def __len__(self) -> int:
        return len(self.keys)


class OnlineWriter:
    """Writes one feature view's rows to Redis."""

    def __init__(self, *, client: redis.Redis, spec: FeatureViewSpec) -> None:
        self.client = client
        self.spec = spec
        self._sha = client.script_load(_WRITE_IF_NEWER)
        self._ts_field = timestamp_field(spec.name)
        self._cts_field = b"_cts:" + spec.name.encode()
        self._fields = {name: feature_field(spec.name, name) for name in spec.features}

    def write(self, rows: FeatureRows) -> int:
        """Write the rows in one pipelined round trip; returns how many were newer and applied."""
        if not len(rows):
            return 0
        try:
            return self._write(rows)
        except redis.exceptions.NoScriptError:
            # Redis restarted (or flushed its scripts) since we loaded the script: load it again once.
            self._sha = self.client.script_load(_WRITE_IF_NEWER)
            return self._write(rows)

    def _write(self, rows: FeatureRows) -> int:
        spec = self.spec
        keys = entity_keys(rows.keys, spec.join_keys, spec.project)
        fields = [self._fields[name] for name in rows.features]
        columns = [encode_column(values, spec.features[name]) for name, values in rows.features.items()]
        event_us = np.asarray(rows.event_times_us, dtype=np.int64).tolist()
        created_us = np.asarray(rows.created_times_us, dtype=np.int64).tolist()
        header = [self._ts_field, self._cts_field, len(fields), *fields]
        # Per row: event µs, created µs, then its values; flattened once, sliced per call.
        flat = list(chain.from_iterable(zip(event_us, created_us, *columns, strict=True)))
        width = 2 + len(columns)
        pipeline = self.client.pipeline(transaction=False)
        for start in range(0, len(keys), _ROWS_PER_CALL):
            stop = min(start + _ROWS_PER_CALL, len(keys))
            pipeline.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA",
                self._sha,
                stop - start,
                *keys[start:stop],
                *header,
                *flat[start * width : stop * width],
            )
        return sum(int(applied) for applied in pipeline.execute())


_SMALL_INT64 = [encode_value(number, "INT64") for number in range(1 << 14)]


def encode_column(values: Sequence[Any], dtype: str) -> list[bytes]:
    """Serialized ``Value`` protos of a column; FLOAT64 and small INT64 counts take fast paths."""
    if dtype == "INT64" and isinstance(values, np.ndarray) and values.dtype.kind == "f":
        present = ~np.isnan(values)
        numbers = np.where(present, values, 0).astype(np.int64)
        if numbers.size and numbers.min() >= 0 and numbers.max() < len(_SMALL_INT64):
            table = _SMALL_INT64
            return [
                table[number] if keep else b""
                for number, keep in zip(numbers.tolist(), present.tolist(), strict=True)
            ]
    if dtype == "FLOAT64" and isinstance(values, np.ndarray):
        array = np.asarray(values, dtype=np.float64)
        record = np.empty(len(array), dtype=[("tag", "u1"), ("value", "<f8")])
        record["tag"] = 0x29
        record["value"] = array
        encoded: list[bytes] = np.frombuffer(record.tobytes(), dtype="V9").tolist()
        for row in np.flatnonzero(np.isnan(array)).tolist():
            encoded[row] = b""
        return encoded
    return [encode_value(value, dtype) for value in values]
