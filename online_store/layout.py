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
_SCALAR_TYPES = ("BYTES", "STRING", "INT32", "INT64", "FLOAT64", "FLOAT32", "BOOL", "UNIX_TIMESTAMP")

# Value proto: field number and wire type of each oneof member.
_DOUBLE, _FLOAT, _INT64, _INT32, _STRING, _BOOL, _UNIX_TIMESTAMP, _BYTES = 5, 6, 4, 3, 2, 7, 8, 1
_PACK_DOUBLE: Callable[..., bytes] = struct.Struct("<Bd").pack
_PACK_FLOAT: Callable[..., bytes] = struct.Struct("<Bf").pack
_UNPACK_DOUBLE = struct.Struct("<d").unpack_from
_UNPACK_FLOAT = struct.Struct("<f").unpack_from
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Value proto: field number of each list member (Feast's ValueType names); each is a message whose
# ``repeated val = 1`` is packed for numbers, as proto3 writes it.
_LIST_FIELDS = {
    "BYTES_LIST": 11,
    "STRING_LIST": 12,
    "INT32_LIST": 13,
    "INT64_LIST": 14,
    "DOUBLE_LIST": 15,
    "FLOAT_LIST": 16,
    "BOOL_LIST": 17,
    "UNIX_TIMESTAMP_LIST": 18,
}
# Feast's NULL_TIMESTAMP_INT_VALUE: what it writes for a missing time in a timestamp list.
_NULL_TIMESTAMP = -(1 << 63)
_INT32_RANGE, _INT64_RANGE = (-(1 << 31), (1 << 31) - 1), (-(1 << 63), (1 << 63) - 1)


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
    """A serialized ``feast.types.Value``; None (and NaN) is the empty message, as Feast writes it.

    A list type (``FLOAT_LIST``, ...) takes a list or a 1-d numpy array. An empty list is an empty
    list message, not the empty one; a None inside a list is written as Feast writes it (0, "",
    False, or its null timestamp).

    >>> encode_value([1.5, -2.0], "DOUBLE_LIST").hex()
    '7a120a10000000000000f83f00000000000000c0'
    >>> encode_value([], "INT64_LIST").hex(), encode_value(None, "INT64_LIST").hex()
    ('7200', '')
    """
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
        return b"\x40" + _varint(_timestamp_seconds(value))
    if dtype == "BYTES":
        raw = bytes(value)
        return b"\x0a" + _varint(len(raw)) + raw
    if dtype in _LIST_FIELDS:
        return _encode_list(value, dtype)
    valid = ", ".join([*_SCALAR_TYPES, *_LIST_FIELDS])
    raise ValueError(f"cannot encode a value of type {dtype}; use one of {valid}")


def _timestamp_seconds(value: Any) -> int:
    """Whole seconds since the epoch, as Feast counts them: a naive datetime is UTC, and a
    datetime64 is floored to the second."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp())
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[s]").astype(np.int64))
    return int(value)


def _encode_list(values: Any, dtype: str) -> bytes:
    if (
        isinstance(values, (str, bytes))
        or not hasattr(values, "__len__")
        or (isinstance(values, np.ndarray) and values.ndim != 1)
    ):
        raise TypeError(f"{dtype} takes a list or a 1-d array, got {values!r:.80}")
    body = _LIST_ENCODERS[dtype](values, dtype)
    return _varint(_LIST_FIELDS[dtype] << 3 | 2) + _varint(len(body)) + body


def _items(values: Any, default: object) -> list[Any]:
    """The elements of a list or array, with None (as Feast writes it) replaced by ``default``."""
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return [default if item is None else item for item in items]


def _number_array(values: Any, dtype: str, kinds: str, default: object) -> NDArray[Any]:
    """A numeric array as is, anything else as an array of its elements; checks it holds numbers."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        array = values
    else:
        array = np.asarray(_items(values, default))
    if array.ndim != 1 or (array.size and array.dtype.kind not in kinds):
        what = "integers" if kinds == "iu" else "numbers"
        raise TypeError(
            f"{dtype} takes a flat list of {what}, got {array.dtype} values of shape {array.shape}"
        )
    return array


def _int_varints(values: Any, dtype: str, bounds: tuple[int, int]) -> bytes:
    """Packed varints of integers within ``bounds``; a short list skips numpy, whose set-up would
    cost it more than the loop."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        array = _number_array(values, dtype, "iu", 0)
        if array.size:
            _check_range(int(array.min()), int(array.max()), dtype, bounds)
        return _varints(array.astype(np.int64))
    items = _items(values, 0)
    if not all(isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in items):
        raise TypeError(f"{dtype} takes a flat list of integers, got {values!r:.80}")
    if items:
        _check_range(min(items), max(items), dtype, bounds)
    if len(items) > 16:
        return _varints(np.array(items, dtype=np.int64))
    return b"".join([_varint(int(item)) for item in items])


def _check_range(low: int, high: int, dtype: str, bounds: tuple[int, int]) -> None:
    if low < bounds[0] or high > bounds[1]:
        raise ValueError(f"{dtype} holds integers from {bounds[0]} to {bounds[1]}; got {low} to {high}")


def _packed(payload: bytes) -> bytes:
    """The ``val = 1`` field of a list message holding packed numbers; left out when there are none."""
    return b"\x0a" + _varint(len(payload)) + payload if payload else b""


def _varints(values: NDArray[np.int64]) -> bytes:
    """Protobuf varints back to back, vectorised; a negative one is its 64-bit two's complement
    (10 bytes), as protobuf writes an int32 too.

    >>> _varints(np.array([0, 1, 300, -1])) == b"".join(_varint(value) for value in [0, 1, 300, -1])
    True
    """
    unsigned = values.astype(np.int64).view(np.uint64)[:, None]
    shifts = np.arange(0, 64, 7, dtype=np.uint64)
    sizes = 1 + (unsigned >> shifts[1:] != 0).sum(axis=1)
    groups = ((unsigned >> shifts) & 0x7F).astype(np.uint8)
    groups[np.arange(10) < sizes[:, None] - 1] |= 0x80
    return bytes(groups[np.arange(10) < sizes[:, None]].tobytes())


def _length_delimited(items: list[bytes]) -> bytes:
    """Repeated ``val = 1`` of strings or bytes: each one tagged, with its length."""
    return b"".join([b"\x0a" + _varint(len(raw)) + raw for raw in items])


def _double_list(values: Any, dtype: str) -> bytes:
    return _packed(_number_array(values, dtype, "fiu", 0.0).astype("<f8").tobytes())


def _float_list(values: Any, dtype: str) -> bytes:
    # Past float32's range is infinity and a signalling NaN turns quiet, as protobuf's cast gives.
    with np.errstate(over="ignore", invalid="ignore"):
        return _packed(_number_array(values, dtype, "fiu", 0.0).astype("<f4").tobytes())


def _int32_list(values: Any, dtype: str) -> bytes:
    return _packed(_int_varints(values, dtype, _INT32_RANGE))


def _int64_list(values: Any, dtype: str) -> bytes:
    return _packed(_int_varints(values, dtype, _INT64_RANGE))


def _timestamp_list(values: Any, dtype: str) -> bytes:
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return _packed(_varints(values.astype("datetime64[s]").astype(np.int64)))
    seconds = [_timestamp_seconds(item) for item in _items(values, _NULL_TIMESTAMP)]
    return _packed(_int_varints(seconds, dtype, _INT64_RANGE))


def _bool_list(values: Any, dtype: str) -> bytes:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return _packed(_number_array(values, dtype, "biuf", False).astype(bool).astype(np.uint8).tobytes())
    return _packed(bytes([bool(item) for item in _items(values, False)]))


def _string_list(values: Any, dtype: str) -> bytes:
    return _length_delimited([str(item).encode() for item in _items(values, "")])


def _bytes_list(values: Any, dtype: str) -> bytes:
    items = _items(values, b"")
    if not all(isinstance(item, (bytes, bytearray, memoryview)) for item in items):
        raise TypeError(f"{dtype} takes a list of bytes, got {values!r:.80}")
    return _length_delimited([bytes(item) for item in items])


# The body of each list message from a list or array of its values.
_LIST_ENCODERS: dict[str, Callable[[Any, str], bytes]] = {
    "BYTES_LIST": _bytes_list,
    "STRING_LIST": _string_list,
    "INT32_LIST": _int32_list,
    "INT64_LIST": _int64_list,
    "DOUBLE_LIST": _double_list,
    "FLOAT_LIST": _float_list,
    "BOOL_LIST": _bool_list,
    "UNIX_TIMESTAMP_LIST": _timestamp_list,
}


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
    """The Python value of a serialized ``feast.types.Value``; None for a missing or empty one.

    A list comes back as a Python list; timestamps, in a list or not, as whole seconds.

    >>> decode_value(encode_value(np.array([0.1, 2.0], dtype=np.float32), "FLOAT_LIST"))
    [0.10000000149011612, 2.0]
    >>> decode_value(encode_value([-1, 2], "INT32_LIST")), decode_value(encode_value([], "STRING_LIST"))
    ([-1, 2], [])
    """
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
    tag, offset = read_varint(data, 0)
    reader = _LIST_READERS.get(tag >> 3)
    if reader is None or tag & 7 != 2:
        raise ValueError(
            f"unsupported Value field {tag >> 3} (sluice reads scalars and lists, not maps, sets or JSON)"
        )
    length, offset = read_varint(data, offset)
    return _read_list(data[offset : offset + length], reader)


def _read_list(message: bytes, reader: Callable[[bytes], list[Any]]) -> list[Any]:
    """The values of a list message; numbers may be packed (as proto3 writes them) or not."""
    values: list[Any] = []
    offset = 0
    while offset < len(message):
        tag, offset = read_varint(message, offset)
        wire_type = tag & 7
        if wire_type == 2:
            size, offset = read_varint(message, offset)
        elif wire_type == 0:
            size = read_varint(message, offset)[1] - offset
        else:
            size = 8 if wire_type == 1 else 4
        values.extend(reader(message[offset : offset + size]))
        offset += size
    return values


def _read_varints(chunk: bytes) -> list[int]:
    """Signed 64-bit values of packed varints; a long run is read vectorised.

    >>> _read_varints(_varints(np.arange(-40, 40))) == list(range(-40, 40))
    True
    """
    if len(chunk) > 64 and chunk[-1] < 0x80:
        data = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero(data < 0x80)
        starts = np.concatenate(([0], ends[:-1] + 1))
        shifts = 7 * (np.arange(len(data)) - np.repeat(starts, ends - starts + 1))
        groups = (data & 0x7F).astype(np.uint64) << shifts.astype(np.uint64)
        return list(np.bitwise_or.reduceat(groups, starts).view(np.int64).tolist())
    values = []
    offset = 0
    while offset < len(chunk):
        value, offset = read_varint(chunk, offset)
        values.append(_signed64(value))
    return values


def _read_int32s(chunk: bytes) -> list[int]:
    # Only the low 32 bits count, as protobuf reads an int32.
    low = [value & 0xFFFFFFFF for value in _read_varints(chunk)]
    return [value - (1 << 32) if value >= 1 << 31 else value for value in low]


# Each list field's values from one element, or from a packed run of numbers.
_LIST_READERS: dict[int, Callable[[bytes], list[Any]]] = {
    11: lambda chunk: [bytes(chunk)],
    12: lambda chunk: [chunk.decode()],
    13: _read_int32s,
    14: _read_varints,
    15: lambda chunk: np.frombuffer(chunk, "<f8").tolist(),
    16: lambda chunk: np.frombuffer(chunk, "<f4").tolist(),
    17: lambda chunk: [value != 0 for value in _read_varints(chunk)],
    18: _read_varints,
}


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
