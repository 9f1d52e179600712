"""The bulk (pyarrow) decoding path gives exactly what decoding message by message gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.decoding import EventDecoder

SCHEMA = {
    "card_id": "INT64",
    "amount": "FLOAT64",
    "count": "INT32",
    "ok": "BOOL",
    "merchant": "STRING",
    "score": "FLOAT32",
    "ts": "UNIX_TIMESTAMP",
}


def decoder() -> EventDecoder:
    return EventDecoder(
        join_keys={"card_id": "INT64"}, timestamp_field="ts", schema=SCHEMA, columns=("amount", "count", "ok")
    )


numeric_time = st.floats(0, 4e9, allow_nan=False) | st.integers(0, 4_000_000_000)
iso_time = st.datetimes().map(lambda moment: moment.isoformat())
valid_event = st.fixed_dictionaries(
    {
        "card_id": st.integers(-(2**63), 2**63 - 1),
        "amount": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**15), 10**15),
        "count": st.integers(-(2**31), 2**31 - 1),
        "ok": st.booleans(),
        "merchant": st.text(max_size=8),
        "score": st.floats(-3e38, 3e38),
    },
    optional={"extra": st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)},
)
poison = st.sampled_from(
    [
        b"{nope",
        b"[1, 2]",
        b'{"card_id": 1.5, "amount": 1, "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": true, "amount": 1, "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": 1, "amount": "1", "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": 1, "amount": NaN, "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": 1, "amount": 1, "count": 4294967296, "ok": true, "ts": 1}',
        b'{"card_id": 9223372036854775808, "amount": 1, "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": 1, "amount": 1, "count": 1, "ok": true, "score": 1e39, "ts": 1}',
        b'{"card_id": 1, "amount": 1, "count": 1, "ok": true, "ts": 1e13}',
        b'{"card_id": 1, "amount": 1, "count": 1, "ok": true, "ts": "10000-01-01T00:00:00"}',
        b'{"card_id": 1, "amount": null, "count": 1, "ok": true, "ts": 1}',
        b'{"amount": 1, "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": 1, "card_id": 2, "amount": 1, "count": 1, "ok": true, "ts": 1}',
        b'{"card_id": 1, "amount": 1, "count": 1, "ok": true, "ts": "not a time"}',
        b'{"card_id": 1, "amount": 1, "count": 1, "ok": true, "ts": 1}{"card_id": 2}',
        b"",
    ]
)


def same(first: Any, second: Any) -> None:
    assert first.accepted.tolist() == second.accepted.tolist()
    assert first.keys == second.keys
    assert first.times.tolist() == second.times.tolist()
    for name in first.columns:
        assert np.array_equal(first.columns[name], second.columns[name], equal_nan=True), name
    assert first.integers.keys() == second.integers.keys()
    for name in first.integers:
        assert first.integers[name].tolist() == second.integers[name].tolist(), name
    assert [(r.index, r.reason) for r in first.rejections] == [(r.index, r.reason) for r in second.rejections]


@settings(max_examples=150)
@given(
    events=st.lists(valid_event, min_size=64, max_size=120),
    times=st.data(),
    bad=st.lists(st.tuples(st.integers(0, 119), poison), max_size=2),
)
def test_bulk_decoding_equals_decoding_each_message(
    events: list[dict[str, Any]], times: st.DataObject, bad: list[tuple[int, bytes]]
) -> None:
    kind = times.draw(st.sampled_from([numeric_time, iso_time]))
    messages: list[bytes | None] = [orjson.dumps({**event, "ts": times.draw(kind)}) for event in events]
    for position, message in bad:
        messages[position % len(messages)] = message
    ours = decoder()
    same(ours.decode(messages), ours._decode_each(messages))


@settings(max_examples=60)
@given(
    units=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=64, max_size=100)
    | st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=64, max_size=100)
)
def test_integer_columns_keep_their_exact_values_on_both_paths(units: list[int | None]) -> None:
    # float64 rounds past 2^53 (2^63 - 1 becomes 2^63, which no INT64 holds): the exact values travel apart.
    schema = {"sku": "INT64", "units": "INT64", "ts": "UNIX_TIMESTAMP"}
    ours = EventDecoder(join_keys={"sku": "INT64"}, timestamp_field="ts", schema=schema, columns=("units",))
    messages = [orjson.dumps({"sku": 1, "units": value, "ts": 1.7e9}) for value in units]
    expected = [0 if value is None else value for value in units]
    bulk = ours._decode_bulk(messages)
    assert (bulk is None) == (None in units)  # a null in a column sends the batch message by message
    if bulk is not None:
        assert bulk.integers["units"].tolist() == expected
    assert ours._decode_each(messages).integers["units"].tolist() == expected


def test_a_clean_batch_takes_the_bulk_path() -> None:
    messages = [
        orjson.dumps(
            {"card_id": card, "amount": card / 3, "count": card, "ok": card % 2 == 0, "ts": 1.7e9 + card}
        )
        for card in range(100)
    ]
    assert decoder()._decode_bulk(messages) is not None
    assert decoder()._decode_bulk([*messages, None]) is None


def test_an_event_time_declared_as_an_integer_refuses_fractions_on_both_paths() -> None:
    strict = EventDecoder(
        join_keys={"card_id": "INT64"},
        timestamp_field="ts",
        schema={"card_id": "INT64", "amount": "FLOAT64", "ts": "INT64"},
        columns=("amount",),
    )
    messages = [
        orjson.dumps({"card_id": card, "amount": 1.0, "ts": 1_700_000_000 + card}) for card in range(80)
    ]
    messages[5] = orjson.dumps({"card_id": 5, "amount": 1.0, "ts": 1_700_000_000.5})
    same(strict.decode(messages), strict._decode_each(messages))
    assert [(r.index, r.reason) for r in strict.decode(messages).rejections] == [(5, "type")]
    clean = [message for index, message in enumerate(messages) if index != 5]
    assert strict._decode_bulk(clean) is not None
    same(strict.decode(clean), strict._decode_each(clean))


def test_a_value_its_declared_type_cannot_hold_is_out_of_range_on_both_paths() -> None:
    # Each decodes as JSON of the right kind, but no store can hold it in the declared type.
    bad = {
        3: {"card_id": 2**63, "amount": 1.0, "count": 1, "ok": True, "ts": 1.7e9},  # past INT64
        7: {"card_id": 7, "amount": 1.0, "count": -(2**31) - 1, "ok": True, "ts": 1.7e9},  # past INT32
        11: {"card_id": 11, "amount": 1.0, "count": 1, "ok": True, "score": -1e39, "ts": 1.7e9},  # FLOAT32
        13: {"card_id": 13, "amount": 1.0, "count": 1, "ok": True, "ts": 1e13},  # the year 318857
    }
    messages = [
        orjson.dumps(bad.get(card, {"card_id": card, "amount": 1.0, "count": card, "ok": True, "ts": 1.7e9}))
        for card in range(80)
    ]
    ours = decoder()
    for decoded in (ours.decode(messages), ours._decode_each(messages)):
        assert [(r.index, r.reason) for r in decoded.rejections] == [(i, "out_of_range") for i in sorted(bad)]
        assert len(decoded.keys) == 80 - len(bad)
