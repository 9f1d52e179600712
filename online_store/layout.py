"""Feast's Redis online store layout, byte for byte, without importing Feast.

One Redis hash per (entity key, project):

- key: Feast's ``serialize_entity_key`` (version 3) followed by the project name;
- one field per feature: ``murmur3_32("<feature_view>:<feature>")`` as 4 little-endian bytes,
  holding a serialized ``feast.types.Value`` protobuf;
- ``_ts:<feature_view>``: the row's event time as a serialized ``google.protobuf.Timestamp``.

The protobuf messages are small and fixed, so they are encoded here by hand; a test compares every
encoder with Feast's own classes.

>>> entity_key({"card_id": 1}, {"card_id": "INT64"}, "fraud").hex()
'010000000200000007000000636172645f6964040000000800000001000000000000006672617564'
>>> feature_field("card_stats", "amount").hex()
'34850ad5'
>>> decode_value(encode_value(2.5, "FLOAT64")), decode_value(encode_value(-3, "INT64"))
(2.5, -3)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import mmh3
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "decode_timestamp",
    "decode_timestamp_micros",
    "decode_value",
    "encode_timestamp",
    "encode_timestamp_micros",
    "encode_timestamps_micros",
    "encode_value",
    "entity_key",
    "entity_keys",
    "feature_field",
    "read_varint",
    "timestamp_field",
]

# Entity key value types in Feast's key encoding (ValueType enum numbers).
_KEY_TYPES = {"STRING": 2, "INT32": 3, "INT64": 4}

# Value proto: field number and wire type of each oneof member.
_DOUBLE, _FLOAT, _INT64, _INT32, _STRING, _BOOL, _UNIX_TIMESTAMP, _BYTES = 5, 6, 4, 3, 2, 7, 8, 1
_PACK_DOUBLE: Callable[..., bytes] = struct.Struct("<Bd").pack
_PACK_FLOAT: Callable[..., bytes] = struct.Struct("<Bf").pack
_UNPACK_DOUBLE = struct.Struct("<d").unpack_from
_UNPACK_FLOAT = struct.Struct("<f").unpack_from
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def entity_key(values: Mapping[str, Any], dtypes: Mapping[str, str], project: str) -> bytes:
    """The Redis key of one entity: Feast's serialized entity key (v3) plus the project name.

    Join keys are sorted by name when there are several, as Feast sorts them.
    """
    names = sorted(values) if len(values) > 1 else list(values)
    parts = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode()
        parts.append(struct.pack("<II", 2, len(encoded)))
        parts.append(encoded)
    for name in names:
        dtype = dtypes[name]
        value = values[name]
        if dtype in ("INT64", "INT32") and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer))
        ):
            raise TypeError(f"join key {name!r} is {dtype}, but got {value!r}")
        if dtype == "INT64":
            raw = struct.pack("<q", value)
        elif dtype == "INT32":
            raw = struct.pack("<i", value)
        elif dtype == "STRING":
            raw = str(value).encode()
        else:
            raise ValueError(
                f"join key {name!r} has type {dtype}; Redis keys support INT64, INT32 and STRING"
            )
        parts.append(struct.pack("<II", _KEY_TYPES[dtype], len(raw)))
        parts.append(raw)
    parts.append(project.encode())
    return b"".join(parts)


def entity_keys(keys: Sequence[Any], join_keys: Mapping[str, str], project: str) -> list[bytes]:
    """The Redis key of each entity; ``keys`` holds a value per entity, or a tuple in ``join_keys`` order.

    A single INT64 join key, the common case, takes a fast path that packs all keys at once.

    >>> dtypes = {"card_id": "INT64"}
    >>> entity_keys([1], dtypes, "fraud") == [entity_key({"card_id": 1}, dtypes, "fraud")]
    True
    """
    names = list(join_keys)
    if len(names) == 1 and join_keys[names[0]] == "INT64" and len(keys) >= 16:
        template = entity_key({names[0]: 0}, join_keys, project)
        suffix = project.encode()
        prefix = template[: -8 - len(suffix)]
        array = np.asarray(keys)
        if array.size and array.dtype.kind not in "iu":
            raise TypeError(f"join key {names[0]!r} is INT64, but got {array.dtype} values")
        packed = array.astype("<i8").tobytes()
        return [prefix + packed[offset : offset + 8] + suffix for offset in range(0, len(packed), 8)]
    if len(names) == 1:
        return [entity_key({names[0]: key}, join_keys, project) for key in keys]
    return [entity_key(dict(zip(names, key, strict=True)), join_keys, project) for key in keys]


def feature_field(feature_view: str, feature: str) -> bytes:
    """The hash field of one feature: murmur3 (x86, 32 bit, seed 0) of ``view:feature``, little-endian."""
    return bytes(struct.pack("<I", mmh3.hash(f"{feature_view}:{feature}", signed=False)))


def timestamp_field(feature_view: str) -> bytes:
    return b"_ts:" + feature_view.encode()


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_value(value: Any, dtype: str) -> bytes:
    """A serialized ``feast.types.Value``; None (and NaN) is the empty message, as Feast writes it."""
    if value is None or (isinstance(value, float) and value != value):
        return b""
    if dtype == "FLOAT64":
        return _PACK_DOUBLE(0x29, value)
    if dtype == "INT64":
        return b"\x20" + _varint(int(value))
    if dtype == "INT32":
        return b"\x18" + _varint(int(value))
    if dtype == "FLOAT32":
        return _PACK_FLOAT(0x35, value)
    if dtype == "STRING":
        raw = str(value).encode()
        return b"\x12" + _varint(len(raw)) + raw
    if dtype == "BOOL":
        return b"\x38\x01" if value else b"\x38\x00"
    if dtype == "UNIX_TIMESTAMP":
        seconds = int(value.timestamp()) if isinstance(value, datetime) else int(value)
        return b"\x40" + _varint(seconds)
    if dtype == "BYTES":
        raw = bytes(value)
        return b"\x0a" + _varint(len(raw)) + raw
    raise ValueError(f"cannot encode a value of type {dtype}")


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """A protobuf varint at ``offset``: its value and the offset after it."""
    result = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_value(data: bytes | None) -> object:
    """The Python value of a serialized ``feast.types.Value``; None for a missing or empty one."""
    if not data:
        return None
    tag = data[0]
    field = tag >> 3
    if field == _DOUBLE:
        return _UNPACK_DOUBLE(data, 1)[0]
    if field == _INT64:
        return _signed64(read_varint(data, 1)[0])
    if field == _INT32:
        value = _signed64(read_varint(data, 1)[0])
        return value - (1 << 32) if value >= 1 << 31 else value
    if field == _FLOAT:
        return _UNPACK_FLOAT(data, 1)[0]
    if field in (_STRING, _BYTES):
        length, offset = read_varint(data, 1)
        raw = data[offset : offset + length]
        return raw.decode() if field == _STRING else bytes(raw)
    if field == _BOOL:
        return data[1] != 0
    if field == _UNIX_TIMESTAMP:
        return _signed64(read_varint(data, 1)[0])
    raise ValueError(f"unsupported Value field {field} (list and map values are not read by sluice)")


def encode_timestamp(event_time: datetime) -> bytes:
    """A serialized ``google.protobuf.Timestamp``; a naive datetime is taken as UTC, like Feast does."""
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)
    micros = (event_time - _EPOCH) // _MICROSECOND
    return encode_timestamp_micros(micros)


def encode_timestamp_micros(micros: int) -> bytes:
    seconds, remainder = divmod(micros, 1_000_000)
    out = b"\x08" + _varint(seconds) if seconds else b""
    return out + (b"\x10" + _varint(remainder * 1000) if remainder else b"")


def encode_timestamps_micros(micros: NDArray[np.int64]) -> list[bytes]:
    """``encode_timestamp_micros`` of many times at once; vectorised from 1970 to 3058.

    >>> times = [0, 1, 1_700_000_000_000_000, 1_700_000_000_123_456]
    >>> encode_timestamps_micros(np.array(times)) == [encode_timestamp_micros(time) for time in times]
    True
    """
    micros = np.asarray(micros, dtype=np.int64)
    if not micros.size or micros.min() < 0 or micros.max() >= (1 << 35) * 1_000_000:
        return [encode_timestamp_micros(value) for value in micros.tolist()]
    seconds, remainder = np.divmod(micros, 1_000_000)
    seconds_raw, seconds_lengths = _tagged_varints(0x08, seconds)
    nanos_raw, nanos_lengths = _tagged_varints(0x10, remainder * 1000)
    return [
        seconds_raw[start : start + seconds_length] + nanos_raw[start : start + nanos_length]
        for start, seconds_length, nanos_length in zip(
            range(0, 6 * len(micros), 6), seconds_lengths.tolist(), nanos_lengths.tolist(), strict=True
        )
    ]


def _tagged_varints(tag: int, values: NDArray[np.int64]) -> tuple[bytes, NDArray[np.int64]]:
    """A tag byte and the varint of each value below 2**35, 6 bytes per value, and each one's length
    (0 for a zero value: proto3 leaves it out)."""
    groups = (values[:, None] >> np.arange(0, 35, 7)) & 0x7F
    sizes = 1 + (values[:, None] >= (1 << np.arange(7, 35, 7))).sum(axis=1)
    continued = np.arange(5) < (sizes[:, None] - 1)
    out = np.zeros((len(values), 6), dtype=np.uint8)
    out[:, 0] = tag
    out[:, 1:] = groups | (continued * 0x80)
    return out.tobytes(), np.where(values > 0, sizes + 1, 0)


def decode_timestamp_micros(data: bytes) -> int:
    """Microseconds since the epoch of a serialized ``google.protobuf.Timestamp``."""
    seconds = nanos = 0
    offset = 0
    while offset < len(data):
        tag = data[offset]
        value, offset = read_varint(data, offset + 1)
        if tag == 0x08:
            seconds = _signed64(value)
        elif tag == 0x10:
            nanos = value
    return seconds * 1_000_000 + nanos // 1000


def decode_timestamp(data: bytes | None) -> datetime | None:
    """The UTC datetime of a serialized ``google.protobuf.Timestamp``; None when absent."""
    if data is None:
        return None
    return _EPOCH + decode_timestamp_micros(data) * _MICROSECOND
