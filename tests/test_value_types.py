"""Every value type sluice writes is encoded byte for byte as Feast's SDK writes it to Redis, and
decodes to what Feast's SDK reads back.

Feast's side is built independently, with ``python_values_to_proto_values`` (what Feast's own Redis
writer calls) and ``feast_value_type_to_python_type`` (what its reader calls).
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from feast import types
from feast.protos.feast.types.Value_pb2 import FloatList, Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType

from features.schema import parse_schema
from online_store.catalog import _VALUE_TYPES
from online_store.layout import decode_value, encode_value

SEEDS = range(200)
NULL_TIMESTAMP = -(2**63)
# sluice spells two scalar types as feast.types does; every other name is Feast's ValueType name.
FEAST_VALUE_TYPES = {"FLOAT64": "DOUBLE", "FLOAT32": "FLOAT"}
LIST_TYPES = [
    "BYTES_LIST",
    "STRING_LIST",
    "INT32_LIST",
    "INT64_LIST",
    "DOUBLE_LIST",
    "FLOAT_LIST",
    "BOOL_LIST",
    "UNIX_TIMESTAMP_LIST",
]


def feast_column(values: list[Any], dtype: str) -> list[bytes]:
    """What Feast's SDK writes to Redis for a column of ``values`` in a feature of type ``dtype``."""
    value_type = ValueType[FEAST_VALUE_TYPES.get(dtype, dtype)]
    return [proto.SerializeToString() for proto in python_values_to_proto_values(values, value_type)]


def feast_bytes(value: Any, dtype: str) -> bytes:
    return feast_column([value], dtype)[0]


def feast_reads(data: bytes) -> Any:
    """What Feast's SDK reads back, with timestamps as whole seconds (sluice's form) and Feast's
    missing timestamp as its null value."""
    value = feast_value_type_to_python_type(Value.FromString(data))
    if Value.FromString(data).WhichOneof("val") in ("unix_timestamp_val", "unix_timestamp_list_val"):
        return _seconds(value)
    return value


def _seconds(value: Any) -> Any:
    if isinstance(value, list):
        return [_seconds(item) for item in value]
    return NULL_TIMESTAMP if value is None else int(value.timestamp())


def same(left: Any, right: Any) -> bool:
    """Equal values of equal types, NaN equal to NaN; lists element by element."""
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


# Random values of each element type, edge cases often.


def random_int(rng: random.Random, bits: int) -> int:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    edges = [0, 1, -1, 127, 128, -128, 300, low, high, low + 1, high - 1]
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(edges)
    if pick < 0.6:
        return rng.randint(-1000, 1000)
    return rng.randint(low, high)


def random_double(rng: random.Random) -> float:
    pick = rng.random()
    if pick < 0.25:
        return rng.choice(
            [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
        )
    if pick < 0.5:
        return rng.uniform(-1e6, 1e6)
    # Any bit pattern: subnormals, huge values, NaNs with payloads.
    return float(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])


def random_float(rng: random.Random, *, scalar: bool = False) -> float:
    """A double for a FLOAT feature: float32 values, values to round, and (in a list) values past
    float32's range; sluice's scalar FLOAT32 packs with struct, which refuses those."""
    pick = rng.random()
    if pick < 0.3:
        return float(struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0])
    if pick < 0.45 and not scalar:
        return 3.4028234663852886e38 * rng.choice([1.0, -1.0]) * (1 + rng.uniform(-1e-7, 1e-7))
    return random_double(rng) if not scalar else rng.uniform(-1e30, 1e30)


def random_text(rng: random.Random) -> str:
    alphabet = ["a", "Z", " ", "é", "ß", "中", "🙂", "\x00", "\n"]
    characters = []
    for _ in range(rng.randint(0, 8)):
        code = rng.randint(0, 0x10FFFF)
        characters.append(
            rng.choice(alphabet) if rng.random() < 0.5 or 0xD800 <= code < 0xE000 else chr(code)
        )
    return "".join(characters)


def random_datetime(rng: random.Random) -> datetime:
    """A datetime from year 1 to 9999; naive (UTC to Feast) or in some fixed offset."""
    moment = datetime(1, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randint(0, 315_537_897_599_999_999))
    pick = rng.random()
    if pick < 0.3:
        return moment.replace(tzinfo=None)
    if pick < 0.6 and datetime(2, 1, 1, tzinfo=UTC) < moment < datetime(9998, 1, 1, tzinfo=UTC):
        return moment.astimezone(timezone(timedelta(minutes=rng.randint(-14 * 60, 14 * 60))))
    return moment


def random_timestamp(rng: random.Random) -> Any:
    """An event time as Feast takes one: seconds, a datetime or a numpy datetime64."""
    pick = rng.random()
    if pick < 0.3:
        return rng.choice([0, -1, 1, 1_700_000_000, -62_135_596_800, 253_402_300_799])
    if pick < 0.5:
        return rng.randint(-62_135_596_800, 253_402_300_799)
    if pick < 0.8:
        return random_datetime(rng)
    # Within what Feast can read back: years 1 to 9999, and 1678 to 2262 in nanoseconds.
    unit, per_second = rng.choice([("s", 1), ("ms", 1000), ("us", 10**6), ("ns", 10**9)])
    seconds = (
        rng.randint(-9 * 10**9, 9 * 10**9) if unit == "ns" else rng.randint(-62_135_596_800, 253_402_300_799)
    )
    return np.datetime64(seconds * per_second + rng.randint(0, per_second - 1), unit)


SCALARS: dict[str, Callable[[random.Random], Any]] = {
    "BYTES": lambda rng: rng.randbytes(rng.randint(0, 8)),
    "STRING": random_text,
    "INT32": lambda rng: random_int(rng, 32),
    "INT64": lambda rng: random_int(rng, 64),
    "FLOAT64": random_double,
    "FLOAT32": lambda rng: random_float(rng, scalar=True),
    "BOOL": lambda rng: rng.random() < 0.5,
    "UNIX_TIMESTAMP": random_timestamp,
}
ELEMENTS: dict[str, Callable[[random.Random], Any]] = {
    "BYTES_LIST": SCALARS["BYTES"],
    "STRING_LIST": random_text,
    "INT32_LIST": SCALARS["INT32"],
    "INT64_LIST": SCALARS["INT64"],
    "DOUBLE_LIST": random_double,
    "FLOAT_LIST": random_float,
    "BOOL_LIST": SCALARS["BOOL"],
    "UNIX_TIMESTAMP_LIST": random_timestamp,
}


def random_list(rng: random.Random, dtype: str) -> list[Any]:
    """Empty a tenth of the time, long (past sluice's numpy cut-offs) a fifth; now and then a None,
    which Feast writes as the type's default."""
    if rng.random() < 0.1:
        return []
    length = rng.randint(1, 12) if rng.random() < 0.8 else rng.randint(13, 60)
    return [None if rng.random() < 0.05 else ELEMENTS[dtype](rng) for _ in range(length)]


def cases(dtypes: list[str], make: Callable[[random.Random, str], Any]) -> list[Any]:
    """A column of random values per type, one value per seed."""
    return [
        pytest.param(dtype, [make(random.Random(seed), dtype) for seed in SEEDS], id=dtype)
        for dtype in dtypes
    ]


@pytest.mark.parametrize(("dtype", "values"), cases(list(SCALARS), lambda rng, dtype: SCALARS[dtype](rng)))
def test_scalars_match_feast_both_ways(dtype: str, values: list[Any]) -> None:
    # Feast writes a column at a time, and what it writes for one value can depend on the others.
    for value, expected in zip(values, feast_column(values, dtype), strict=True):
        assert encode_value(value, dtype) == expected, value
        assert same(decode_value(expected), feast_reads(expected)), value


@pytest.mark.parametrize(("dtype", "values"), cases(LIST_TYPES, random_list))
def test_lists_match_feast_both_ways(dtype: str, values: list[list[Any]]) -> None:
    for value, expected in zip(values, feast_column(values, dtype), strict=True):
        assert encode_value(value, dtype) == expected, value
        assert encode_value(value, dtype) == feast_bytes(value, dtype), value
        assert same(decode_value(expected), feast_reads(expected)), value


@pytest.mark.parametrize("seed", SEEDS)
def test_float_lists_read_back_rounded_to_float32(seed: int) -> None:
    rng = random.Random(seed)
    embedding = [random_float(rng) for _ in range(rng.randint(0, 16))]
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.array(embedding, dtype=np.float32).tolist()
    assert same(decode_value(encode_value(embedding, "FLOAT_LIST")), rounded)


@pytest.mark.parametrize("dtype", LIST_TYPES)
def test_empty_lists_are_an_empty_list_message_and_none_is_no_value(dtype: str) -> None:
    # Feast sets the list field even when it holds nothing: its tag and a zero length.
    assert (
        encode_value([], dtype) == feast_bytes([], dtype) == Value(**{_field(dtype): {}}).SerializeToString()
    )
    assert encode_value([], dtype).endswith(b"\x00") and decode_value(encode_value([], dtype)) == []
    assert encode_value(None, dtype) == feast_bytes(None, dtype) == b""
    assert decode_value(b"") is None


def _field(dtype: str) -> str:
    return dtype.lower() + "_val"


def test_a_lone_empty_bytes_value_is_missing_to_feast() -> None:
    # Feast infers that a column holds nothing when all its values are empty; beside other values,
    # empty bytes are written as such. sluice writes each value as it is.
    assert feast_bytes(b"", "BYTES") == b""
    assert encode_value(b"", "BYTES") == feast_column([b"", b"x"], "BYTES")[0] == b"\x0a\x00"
    assert decode_value(encode_value(b"", "BYTES")) == b""


def test_negative_ints_in_packed_lists_take_ten_bytes() -> None:
    # Protobuf writes an int32 as the varint of its 64-bit two's complement, so -1 is 10 bytes.
    assert encode_value([-1], "INT32_LIST").hex() == "6a0c0a0affffffffffffffffff01"
    assert encode_value([-1], "INT64_LIST") == b"\x72" + encode_value([-1], "INT32_LIST")[1:]
    assert decode_value(encode_value([-(2**31), -1], "INT32_LIST")) == [-(2**31), -1]


NUMPY_ARRAYS = [
    ("FLOAT_LIST", np.array([0.1, -2.5, np.nan, np.inf], dtype=np.float32)),
    ("FLOAT_LIST", np.array([0.1, 1e40, -1e-50], dtype=np.float64)),
    ("DOUBLE_LIST", np.array([0.1, -0.0, np.nan], dtype=np.float64)),
    ("DOUBLE_LIST", np.array([0.1, 3.5], dtype=np.float32)),
    ("INT64_LIST", np.array([-(2**63), 2**63 - 1, 0, -1], dtype=np.int64)),
    ("INT64_LIST", np.array([0, 2**63 - 1], dtype=np.uint64)),
    ("INT32_LIST", np.array([-(2**31), 2**31 - 1, -1], dtype=np.int32)),
    ("INT32_LIST", np.array([5, -7], dtype=np.int16)),
    ("BOOL_LIST", np.array([True, False, True])),
    ("STRING_LIST", np.array(["a", "", "é🙂"])),
    ("BYTES_LIST", np.array([b"a", b"", b"\xff"])),
    ("STRING_LIST", np.array(["a", None], dtype=object)),
    ("DOUBLE_LIST", np.array([1.5, None], dtype=object)),
    ("UNIX_TIMESTAMP_LIST", np.array(["2024-01-01T00:00:00", "1969-12-31T23:59:59"], dtype="datetime64[s]")),
    ("UNIX_TIMESTAMP_LIST", np.array(["2024-01-01T00:00:00.5", "NaT"], dtype="datetime64[us]")),
    ("UNIX_TIMESTAMP_LIST", np.array([1_700_000_000, -5], dtype=np.int64)),
]


@pytest.mark.parametrize(
    ("dtype", "array"), NUMPY_ARRAYS, ids=[f"{dtype}-{array.dtype}" for dtype, array in NUMPY_ARRAYS]
)
def test_numpy_arrays_match_feast(dtype: str, array: np.ndarray) -> None:
    assert encode_value(array, dtype) == feast_bytes(array, dtype)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_float32_embedding_array_round_trips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal(int(rng.integers(0, 300))).astype(np.float32)
    encoded = encode_value(embedding, "FLOAT_LIST")
    assert encoded == Value(float_list_val=FloatList(val=embedding.tolist())).SerializeToString()
    assert decode_value(encoded) == embedding.tolist()
    assert encode_value(embedding.astype(np.float64), "DOUBLE_LIST") == feast_bytes(embedding, "DOUBLE_LIST")


@pytest.mark.parametrize("seed", SEEDS)
def test_int_arrays_match_feast(seed: int) -> None:
    rng = random.Random(seed)
    numbers = [random_int(rng, 64) for _ in range(rng.randint(0, 40))]
    array = np.array(numbers, dtype=np.int64)
    assert encode_value(array, "INT64_LIST") == encode_value(numbers, "INT64_LIST")
    assert encode_value(array, "INT64_LIST") == feast_bytes(array, "INT64_LIST")
    assert decode_value(encode_value(array, "INT64_LIST")) == numbers


def test_datetime64_arrays_are_whole_seconds_in_any_unit() -> None:
    # Feast turns a datetime64[ns] array into Python ints of nanoseconds and writes those as seconds;
    # sluice writes seconds whatever the unit.
    nanos = np.array(["2024-01-01T00:00:00.5"], dtype="datetime64[ns]")
    assert decode_value(encode_value(nanos, "UNIX_TIMESTAMP_LIST")) == [1_704_067_200]
    assert decode_value(feast_bytes(nanos, "UNIX_TIMESTAMP_LIST")) == [1_704_067_200_500_000_000]


def test_naive_datetimes_are_utc_whatever_the_machine_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = datetime(2024, 1, 1, 12, 30)
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        assert encode_value(naive, "UNIX_TIMESTAMP") == feast_bytes(naive, "UNIX_TIMESTAMP")
        assert encode_value([naive], "UNIX_TIMESTAMP_LIST") == feast_bytes([naive], "UNIX_TIMESTAMP_LIST")
        assert decode_value(encode_value(naive, "UNIX_TIMESTAMP")) == 1_704_112_200
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("tag", "body"),
    [
        (b"\x72", b"\x08\x01\x08" + b"\xff" * 9 + b"\x01"),
        (b"\x7a", b"\x09" + struct.pack("<d", 1.5) + b"\x09" + struct.pack("<d", -2.0)),
        (b"\x82\x01", b"\x0d" + struct.pack("<f", 0.1)),
        (b"\x8a\x01", b"\x08\x01\x08\x00"),
        (b"\x6a", b"\x08\x05\x0a\x02\x07\x7f"),
    ],
    ids=["int64", "double", "float", "bool", "int32 unpacked then packed"],
)
def test_unpacked_numbers_are_read_too(tag: bytes, body: bytes) -> None:
    # Proto3 writers pack numbers, but a reader must also accept them one field each.
    raw = tag + bytes([len(body)]) + body
    assert same(decode_value(raw), feast_reads(raw))


def test_values_sluice_does_not_read_say_so() -> None:
    # json_val is field 32, whose two-byte tag starts like float_list_val's (16).
    for value in [Value(json_val="{}"), Value(int64_set_val={"val": [1]}), Value(struct_val={})]:
        with pytest.raises(ValueError, match="sluice reads scalars and lists"):
            decode_value(value.SerializeToString())


@pytest.mark.parametrize(
    ("value", "dtype", "error"),
    [
        # A short list and a long one (which numpy checks) of each.
        ([2**31], "INT32_LIST", ValueError),
        ([*range(20), 2**31], "INT32_LIST", ValueError),
        ([2**63], "INT64_LIST", ValueError),
        ([*range(20), 2**63], "INT64_LIST", ValueError),
        ([*range(20), 2**64], "INT64_LIST", ValueError),
        ([1.5], "INT64_LIST", TypeError),
        ([True], "INT64_LIST", TypeError),
        ([1.5] * 20, "INT64_LIST", TypeError),
        (np.array([1.5]), "INT32_LIST", TypeError),
        (["abc"], "BYTES_LIST", TypeError),
        (np.array([["a"]]), "STRING_LIST", TypeError),
        (np.array([[True]]), "BOOL_LIST", TypeError),
        (["1.5"], "DOUBLE_LIST", TypeError),
        ("abc", "STRING_LIST", TypeError),
        (7, "FLOAT_LIST", TypeError),
        (np.zeros((2, 2)), "FLOAT_LIST", TypeError),
        ([1], "MAP", ValueError),
    ],
)
def test_values_that_do_not_fit_their_type_are_refused(
    value: Any, dtype: str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=dtype):
        encode_value(value, dtype)


FEAST_ELEMENT_TYPES = [
    types.Bytes,
    types.String,
    types.Int32,
    types.Int64,
    types.Float64,
    types.Float32,
    types.Bool,
    types.UnixTimestamp,
]


@pytest.mark.parametrize("element", FEAST_ELEMENT_TYPES, ids=str)
def test_list_type_names_are_feasts_everywhere(element: types.PrimitiveFeastType) -> None:
    value_type = types.Array(element).to_value_type()
    assert parse_schema(f"column Array({element})") == {"column": value_type.name}
    assert _VALUE_TYPES[value_type.value] == value_type.name
    assert value_type.name in LIST_TYPES
    assert decode_value(encode_value([], value_type.name)) == []


def test_spark_array_types_are_feast_list_types() -> None:
    schema = parse_schema(
        "a ARRAY<DOUBLE>, b array<float>, c ARRAY<BIGINT>, d ARRAY<INT>, e ARRAY<STRING>, "
        "f ARRAY<BOOLEAN>, g ARRAY<TIMESTAMP>, h ARRAY<BINARY>, i BINARY, j bytes"
    )
    assert list(schema.values()) == [
        "DOUBLE_LIST",
        "FLOAT_LIST",
        "INT64_LIST",
        "INT32_LIST",
        "STRING_LIST",
        "BOOL_LIST",
        "UNIX_TIMESTAMP_LIST",
        "BYTES_LIST",
        "BYTES",
        "BYTES",
    ]
