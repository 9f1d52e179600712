"""Decode Kafka messages into typed columns, and say exactly why a message was rejected.

Messages are JSON objects whose fields the source's schema declares. Nothing is ever unpickled or
evaluated. A rejected message is never raised: it comes back with its reason, for the dead-letter
topic.

A batch is first parsed whole by pyarrow's JSON reader against the declared schema, in C++. That
path only succeeds when every message is a valid event (the reader fails on a malformed message,
a wrong type or a repeated field, and a missing or null field is checked after); then the result is
the same as message by message. Otherwise, and for plain views' raw columns, every message is parsed
on its own with orjson, which finds each rejected message and its reason.

A list field (``FLOAT_LIST``, ...) is a JSON array of its element type, checked element by element as
a scalar field is (a wrong type is ``type``, a value its type cannot hold ``out_of_range``). A null
element is refused with ``type``: Feast would store a default in its place (0, "", false or its null
time), which is not what was sent. A null list is a null value, and ``[]`` an empty list; the numbers
of a ``DOUBLE_LIST`` or ``FLOAT_LIST`` come out as floats. ``BYTES`` and ``BYTES_LIST``
values are standard base64 strings (RFC 4648, as Feast's feature server prints bytes) and decode to
bytes; ``UNIX_TIMESTAMP`` values other than the event time, and ``UNIX_TIMESTAMP_LIST`` elements, are
ISO-8601 strings or epoch seconds and decode to UTC datetimes, kept to the microsecond offline; Feast's
online layout keeps whole seconds.

>>> from datetime import timedelta
>>> decoder = EventDecoder(
...     join_keys={"card_id": "INT64"}, timestamp_field="ts",
...     schema={"card_id": "INT64", "amount": "FLOAT64", "ts": "UNIX_TIMESTAMP"}, columns=("amount",),
... )
>>> good = b'{"card_id": 7, "amount": 12, "ts": "2024-05-01T10:00:00Z"}'
>>> batch = decoder.decode([good, b'{"card_id": "x"}'])
>>> batch.keys, batch.columns["amount"].tolist(), [(r.index, r.reason) for r in batch.rejections]
([7], [12.0], [(1, 'schema')])
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from features.schema import LIST_ELEMENTS

if TYPE_CHECKING:
    from features.spec import FeatureViewSpec

__all__ = ["REASONS", "DecodedBatch", "EventDecoder", "Rejection"]

REASONS = ("oversized", "malformed_json", "schema", "type", "out_of_range", "transform", "late")
"""Every reason a message can be sent to the dead-letter topic."""

# Below this many messages, one pyarrow read costs more than parsing them one by one.
_BULK_MINIMUM = 64
_INT_RANGE = {"INT64": (-(2**63), 2**63 - 1), "INT32": (-(2**31), 2**31 - 1)}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Event times that every store can hold: Feast's protobuf Timestamp and Parquet, years 1 to 9999.
_EARLIEST_US = -62_135_596_800 * 1_000_000
_LATEST_US = 253_402_300_799 * 1_000_000 + 999_999
_JSON_TYPE = {
    "INT64": "an integer",
    "INT32": "a 32-bit integer",
    "FLOAT64": "a number",
    "FLOAT32": "a number",
    "STRING": "a string",
    "BOOL": "true or false",
    "UNIX_TIMESTAMP": "an ISO-8601 string or epoch seconds",
    "BYTES": "a base64 string",
}
_JSON_ELEMENTS = {
    "INT64": "integers",
    "INT32": "32-bit integers",
    "FLOAT64": "numbers",
    "FLOAT32": "numbers",
    "STRING": "strings",
    "BOOL": "booleans",
    "BYTES": "base64 strings",
    "UNIX_TIMESTAMP": "ISO-8601 strings or epoch seconds",
}
# The Python types (from orjson) of elements that are valid as they are; bool is not an int here.
_ELEMENT_TYPES: dict[str, frozenset[type]] = {
    "INT64": frozenset({int}),
    "INT32": frozenset({int}),
    "FLOAT64": frozenset({int, float}),
    "FLOAT32": frozenset({int, float}),
    "STRING": frozenset({str}),
    "BOOL": frozenset({bool}),
    "BYTES": frozenset(),
    "UNIX_TIMESTAMP": frozenset(),
}
# Types whose JSON form is not the value the stores take: each value is decoded on its own.
_CONVERTED = frozenset({"BYTES", "UNIX_TIMESTAMP", "BYTES_LIST", "UNIX_TIMESTAMP_LIST"})
# Columns decoded to float64 (NaN for null) when not raw; the others stay Python objects.
_NUMERIC = frozenset({"INT64", "INT32", "FLOAT64", "FLOAT32", "BOOL"})


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """Why the message at ``index`` of the batch was not accepted."""

    index: int
    reason: str
    detail: str


@dataclass(frozen=True, kw_only=True)
class DecodedBatch:
    """The accepted messages of a batch, as columns, and the rejected ones with their reasons."""

    accepted: NDArray[np.int64]
    """Positions of the accepted messages in the input batch."""
    keys: list[Any]
    """Entity key per accepted message: the join key's value, or a tuple for several join keys."""
    times: NDArray[np.int64]
    """Event time in microseconds since the epoch (UTC)."""
    columns: dict[str, NDArray[Any]]
    """Requested columns: float64 (NaN for null) for numbers and booleans, object otherwise;
    object (the JSON values, None for null) for all columns with ``raw_columns``. Either way a list
    is a Python list, bytes are bytes and a timestamp other than the event time a UTC datetime."""
    rejections: list[Rejection] = field(default_factory=list)
    integers: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    """The exact values of requested INT32 and INT64 columns (0 for null), which float64 rounds
    past 2^53; not kept with ``raw_columns``."""


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class EventDecoder:
    """Decodes the messages of one source for one feature view."""

    def __init__(
        self,
        *,
        join_keys: Mapping[str, str],
        timestamp_field: str,
        schema: Mapping[str, str],
        columns: Sequence[str],
        raw_columns: bool = False,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        self.join_keys = dict(join_keys)
        self.timestamp_field = timestamp_field
        self.schema = dict(schema)
        self.columns = tuple(columns)
        self.raw_columns = raw_columns
        self.max_message_bytes = max_message_bytes
        self._required = (*self.join_keys, timestamp_field, *self.columns)

    @classmethod
    def for_view(cls, spec: FeatureViewSpec, *, max_message_bytes: int = 1 << 20) -> EventDecoder:
        """The decoder of a feature view's source: its value columns as float64, or raw for a plain view;
        every message field, typed, for a view with a udf (the udf makes the view's columns)."""
        if spec.transform is not None:
            keys = {*spec.join_keys, spec.timestamp_field}
            columns: tuple[str, ...] = tuple(name for name in spec.message_schema if name not in keys)
        else:
            columns = spec.value_columns
        return cls(
            join_keys=spec.join_keys,
            timestamp_field=spec.timestamp_field,
            schema=spec.message_schema,
            columns=columns,
            raw_columns=not spec.is_aggregated and spec.transform is None,
            max_message_bytes=max_message_bytes,
        )

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """The batch's accepted events as columns, and its rejected messages with their reasons."""
        bulk = self._decode_bulk(values) if not self.raw_columns and len(values) >= _BULK_MINIMUM else None
        return bulk if bulk is not None else self._decode_each(values)

    def _decode_bulk(self, values: Sequence[bytes | None]) -> DecodedBatch | None:
        """The whole batch in one pyarrow read, or None when any message needs the per-message path."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pa_json

        limit = self.max_message_bytes
        if any(value is None or len(value) > limit for value in values):
            return None
        try:
            first = orjson.loads(values[0])  # type: ignore[arg-type]
            numeric_time = isinstance(first.get(self.timestamp_field), int | float)
        except (orjson.JSONDecodeError, AttributeError):
            return None
        schema = self._arrow_schema(pa, numeric_time=numeric_time)
        data = b"\n".join(values)  # type: ignore[arg-type]
        if b"NaN" in data or b"Infinity" in data:
            return None  # pyarrow reads these non-JSON literals; orjson, rightly, refuses them
        try:
            table = pa_json.read_json(
                pa.py_buffer(data),
                read_options=pa_json.ReadOptions(block_size=max(1 << 20, 2 * limit)),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore"
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        # A message holding two objects, or none, shows up as a different number of rows.
        if table.num_rows != len(values) or any(table.column(name).null_count for name in self._required):
            return None
        converted: dict[str, list[Any]] = {}
        for name, dtype in self.schema.items():
            column = table.column(name)
            if dtype in LIST_ELEMENTS:
                column = pc.list_flatten(column)
                if column.null_count:
                    return None  # a null element, which the message's own decoding names
            if dtype in ("FLOAT32", "FLOAT_LIST") and len(column):
                magnitude = np.abs(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
                if np.nanmax(magnitude, initial=0.0) > _FLOAT32_MAX:
                    return None
            if dtype in _CONVERTED and name != self.timestamp_field:
                try:
                    converted[name] = [
                        None if value is None else _checked(name, value, dtype)
                        for value in table.column(name).to_pylist()
                    ]
                except _Rejected:
                    return None
        if numeric_time:
            seconds = np.asarray(table.column(self.timestamp_field).to_numpy(), dtype=np.float64)
            micros = seconds * 1_000_000
            if micros.min() < _EARLIEST_US or micros.max() > _LATEST_US:
                return None
            times = np.round(micros).astype(np.int64)
        else:
            try:
                times = np.asarray(
                    [self._event_time(value) for value in table.column(self.timestamp_field).to_pylist()],
                    dtype=np.int64,
                )
            except _Rejected:
                return None
        if len(self.join_keys) == 1:
            keys: list[Any] = table.column(next(iter(self.join_keys))).to_pylist()
        else:
            keys = list(zip(*(table.column(name).to_pylist() for name in self.join_keys), strict=True))
        columns = {}
        integers = {}
        for name in self.columns:
            if name in converted:
                columns[name] = _objects(converted[name])
            elif self.schema[name] not in _NUMERIC:
                columns[name] = _objects(table.column(name).to_pylist())
            else:
                columns[name] = np.asarray(
                    table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64
                )
            if self.schema[name] in _INT_RANGE:
                integers[name] = np.asarray(table.column(name).fill_null(0).to_numpy(), dtype=np.int64)
        return DecodedBatch(
            accepted=np.arange(len(values), dtype=np.int64),
            keys=keys,
            times=times,
            columns=columns,
            integers=integers,
        )

    def _arrow_schema(self, pa: Any, *, numeric_time: bool) -> Any:
        """Every declared field, so that a wrong type anywhere fails the bulk read as it fails an event."""
        types = {
            "INT64": pa.int64(),
            "INT32": pa.int32(),
            "FLOAT64": pa.float64(),
            "FLOAT32": pa.float64(),
            "STRING": pa.string(),
            "BOOL": pa.bool_(),
            # Read as their JSON strings and decoded value by value; an epoch number fails the read.
            "UNIX_TIMESTAMP": pa.string(),
            "BYTES": pa.string(),
        }
        fields = []
        for name, dtype in self.schema.items():
            if name == self.timestamp_field and dtype == "UNIX_TIMESTAMP":
                fields.append(pa.field(name, pa.float64() if numeric_time else pa.string()))
            elif dtype in LIST_ELEMENTS:
                fields.append(pa.field(name, pa.list_(types[LIST_ELEMENTS[dtype]])))
            else:
                fields.append(pa.field(name, types.get(dtype, pa.null())))
        return pa.schema(fields)

    def _decode_each(self, values: Sequence[bytes | None]) -> DecodedBatch:
        accepted: list[int] = []
        keys: list[Any] = []
        times: list[int] = []
        columns: dict[str, list[Any]] = {name: [] for name in self.columns}
        rejections: list[Rejection] = []
        single_key = next(iter(self.join_keys)) if len(self.join_keys) == 1 else None
        for index, raw in enumerate(values):
            try:
                event = self._parse(raw)
                key = event[single_key] if single_key else tuple(event[name] for name in self.join_keys)
                time = self._event_time(event[self.timestamp_field])
            except _Rejected as rejected:
                rejections.append(Rejection(index=index, reason=rejected.reason, detail=rejected.detail))
                continue
            accepted.append(index)
            keys.append(key)
            times.append(time)
            for name in self.columns:
                columns[name].append(event[name])
        return DecodedBatch(
            accepted=np.asarray(accepted, dtype=np.int64),
            keys=keys,
            times=np.asarray(times, dtype=np.int64),
            columns={name: self._column(name, column) for name, column in columns.items()},
            rejections=rejections,
            integers={
                name: np.asarray([0 if value is None else value for value in column], dtype=np.int64)
                for name, column in columns.items()
                if not self.raw_columns and self.schema[name] in _INT_RANGE
            },
        )

    def _parse(self, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            raise _Rejected("malformed_json", "the message has no value (a tombstone)")
        if len(raw) > self.max_message_bytes:
            raise _Rejected("oversized", f"{len(raw)} bytes is over the limit of {self.max_message_bytes}")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise _Rejected("malformed_json", str(error)) from None
        if not isinstance(event, dict):
            raise _Rejected("schema", f"expected a JSON object, got {type(event).__name__}")
        for name in self._required:
            if name not in event:
                raise _Rejected("schema", f"missing field {name!r}")
        for name, value in event.items():
            dtype = self.schema.get(name)
            if dtype is None:
                continue
            if value is None:
                if name in self.join_keys or name == self.timestamp_field:
                    raise _Rejected(
                        "schema", f"field {name!r} is null; join keys and the event time are required"
                    )
                continue
            if name == self.timestamp_field and dtype == "UNIX_TIMESTAMP":
                if not _has_type(value, dtype):
                    raise _wrong_type(f"field {name!r}", value, dtype)
                continue  # parsed by _event_time
            if dtype in _CONVERTED or dtype in LIST_ELEMENTS:
                event[name] = _checked(name, value, dtype)
            elif not _has_type(value, dtype):
                raise _wrong_type(f"field {name!r}", value, dtype)
            elif not _in_range(value, dtype):
                raise _Rejected(
                    "out_of_range", f"field {name!r} is {_describe(value)}, outside the range of {dtype}"
                )
        return event

    def _event_time(self, value: Any) -> int:
        return _micros(value, "event time")

    def _column(self, name: str, values: list[Any]) -> NDArray[Any]:
        if self.raw_columns or self.schema[name] not in _NUMERIC:
            return _objects(values)
        return np.asarray([np.nan if value is None else float(value) for value in values], dtype=np.float64)


def _objects(values: list[Any]) -> NDArray[Any]:
    """A 1-d object array of the values; ``np.asarray`` would make lists of one length a 2-d array."""
    return np.fromiter(values, dtype=object, count=len(values))


def _micros(value: Any, what: str) -> int:
    """Microseconds since the epoch of an ISO-8601 string (naive is UTC) or of epoch seconds."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Rejected("type", f"{what} {value!r} is not an ISO-8601 timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        micros = (moment - _EPOCH) // _MICROSECOND
    else:
        micros = round(float(value) * 1_000_000)
    if not _EARLIEST_US <= micros <= _LATEST_US:
        raise _Rejected("out_of_range", f"{what} {value!r} is outside the years 1 to 9999")
    return micros


def _checked(name: str, value: Any, dtype: str) -> Any:
    """A declared field's non-null JSON value as the stores take it, or ``_Rejected`` saying why not."""
    element = LIST_ELEMENTS.get(dtype)
    if element is None:
        return _scalar(value, dtype, f"field {name!r}")
    if not isinstance(value, list):
        raise _Rejected(
            "type",
            f"field {name!r} should be a JSON array of {_JSON_ELEMENTS[element]} ({dtype}), "
            f"got {_describe(value)}",
        )
    types = set(map(type, value))
    if _plain_elements(value, types, element):
        if int in types and element in ("FLOAT64", "FLOAT32"):
            return [float(item) for item in value]  # as the bulk read, and Feast's SDK, give them
        return value
    items = []
    for index, item in enumerate(value):
        what = f"field {name!r} element {index}"
        if item is None:
            raise _Rejected(
                "type",
                f"{what} is null; {dtype} elements cannot be null (Feast would store a default in its place)",
            )
        items.append(_scalar(item, element, what))
    return items


def _plain_elements(values: list[Any], types: set[type], element: str) -> bool:
    """Whether a list's elements, of these ``types``, are valid values of ``element`` as they are: the
    common case, checked in C (``set(map(type, ...))``, ``min``, ``max``) rather than element by element."""
    if not values or not types <= _ELEMENT_TYPES[element]:
        return not values
    if element in _INT_RANGE:
        low, high = _INT_RANGE[element]
        return bool(low <= min(values) and max(values) <= high)
    if element == "FLOAT32":
        return bool(min(values) >= -_FLOAT32_MAX and max(values) <= _FLOAT32_MAX)
    return True


def _scalar(value: Any, dtype: str, what: str) -> Any:
    if not _has_type(value, dtype):
        raise _wrong_type(what, value, dtype)
    if not _in_range(value, dtype):
        raise _Rejected("out_of_range", f"{what} is {_describe(value)}, outside the range of {dtype}")
    if dtype == "BYTES":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Rejected(
                "type", f"{what} is {_describe(value)}, not base64 (RFC 4648, padded) for {dtype}"
            ) from None
    if dtype == "UNIX_TIMESTAMP":
        return _EPOCH + _micros(value, what) * _MICROSECOND
    return value


def _wrong_type(what: str, value: Any, dtype: str) -> _Rejected:
    return _Rejected("type", f"{what} should be {_JSON_TYPE[dtype]} ({dtype}), got {_describe(value)}")


def _has_type(value: Any, dtype: str) -> bool:
    if dtype in _INT_RANGE:
        return isinstance(value, int) and not isinstance(value, bool)
    if dtype in ("FLOAT64", "FLOAT32"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if dtype == "STRING":
        return isinstance(value, str)
    if dtype == "BOOL":
        return isinstance(value, bool)
    if dtype == "UNIX_TIMESTAMP":
        return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))
    if dtype == "BYTES":
        return isinstance(value, str)
    return True


def _in_range(value: Any, dtype: str) -> bool:
    """Whether a value of the right JSON type fits its declared type, so that both stores can hold it."""
    if dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        return bool(low <= value <= high)
    if dtype == "FLOAT32":
        return bool(abs(value) <= _FLOAT32_MAX)
    return True


def _describe(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return f"{type(value).__name__} {text[:40]}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
