"""online_store.layout encodes exactly what Feast's own code encodes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from online_store.layout import (
    decode_timestamp,
    decode_value,
    encode_timestamp,
    encode_value,
    entity_key,
    feature_field,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
FLOAT64 = st.floats(allow_nan=False)
FLOAT32 = st.floats(allow_nan=False, width=32)
TEXT = st.text(max_size=40)


def _feast_key(values: dict[str, object], dtypes: dict[str, str], project: str) -> bytes:
    names = sorted(values)
    proto_values = []
    for name in names:
        field = {"INT64": "int64_val", "INT32": "int32_val", "STRING": "string_val"}[dtypes[name]]
        proto_values.append(Value(**{field: values[name]}))
    key = EntityKey(join_keys=names, entity_values=proto_values)
    return serialize_entity_key(key, entity_key_serialization_version=3) + project.encode()


@given(card=INT64, merchant=TEXT, region=INT32, project=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_entity_keys_match_feast(card: int, merchant: str, region: int, project: str) -> None:
    single = {"card_id": card}
    assert entity_key(single, {"card_id": "INT64"}, project) == _feast_key(
        single, {"card_id": "INT64"}, project
    )
    several = {"merchant": merchant, "card_id": card, "region": region}
    dtypes = {"merchant": "STRING", "card_id": "INT64", "region": "INT32"}
    assert entity_key(several, dtypes, project) == _feast_key(several, dtypes, project)


@given(view=st.from_regex(r"[a-z_]{1,20}", fullmatch=True), feature=TEXT)
def test_feature_fields_match_feast(view: str, feature: str) -> None:
    assert feature_field(view, feature) == _mmh3(f"{view}:{feature}")


@given(
    value=st.one_of(
        FLOAT64.map(lambda v: ("FLOAT64", "double_val", v)),
        FLOAT32.map(lambda v: ("FLOAT32", "float_val", v)),
        INT64.map(lambda v: ("INT64", "int64_val", v)),
        INT32.map(lambda v: ("INT32", "int32_val", v)),
        TEXT.map(lambda v: ("STRING", "string_val", v)),
        st.booleans().map(lambda v: ("BOOL", "bool_val", v)),
        st.binary(max_size=20).map(lambda v: ("BYTES", "bytes_val", v)),
    )
)
def test_values_match_feast_both_ways(value: tuple[str, str, object]) -> None:
    dtype, field, raw = value
    feast_bytes = Value(**{field: raw}).SerializeToString()
    assert encode_value(raw, dtype) == feast_bytes
    decoded = decode_value(feast_bytes)
    if dtype == "FLOAT32":
        assert decoded == Value.FromString(feast_bytes).float_val
    else:
        assert decoded == raw


def test_missing_values_are_the_empty_message() -> None:
    assert encode_value(None, "FLOAT64") == Value().SerializeToString() == b""
    assert encode_value(math.nan, "FLOAT64") == b""
    assert decode_value(b"") is None and decode_value(None) is None


@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    )
)
def test_timestamps_match_feast_both_ways(moment: datetime) -> None:
    proto = Timestamp()
    proto.FromDatetime(moment)
    assert encode_timestamp(moment) == proto.SerializeToString()
    assert decode_timestamp(proto.SerializeToString()) == moment


def test_naive_datetimes_are_utc_and_absent_timestamps_are_none() -> None:
    assert encode_timestamp(datetime(2024, 1, 1, 0, 0, 0, 123456)) == encode_timestamp(
        datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    )
    assert decode_timestamp(encode_timestamp(datetime(2024, 1, 1) + timedelta(0))) == datetime(
        2024, 1, 1, tzinfo=UTC
    )
    assert decode_timestamp(None) is None
