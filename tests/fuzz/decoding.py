"""What the event-decoding fuzz target checks, importable without atheris: ``fuzz_decoding.py`` runs it under
the fuzzer, and ``tests/test_fuzz_regressions.py`` runs it on every saved input (the seed corpus and each
crash the fuzzer found), so a crash, once fixed, stays fixed.

The first byte picks the decoder; the rest is its input:

- 0: stream events (``streams.decoding.EventDecoder``), one message per line, through an aggregated view's
  decoder and a plain view's. Nothing may raise: every message is accepted or rejected with one of
  ``REASONS``, exactly once. When pyarrow's bulk path takes a batch, it must give what the per-message path
  gives (the two are meant to be the same function).
- 1: a CloudEvent in binary mode: the next byte picks ``ce_type``, the rest is the record's value.
  ``decode`` either gives an event or raises ``EventError`` with a reason.
- 2: two KServe logger halves (request, then response) split at the first newline, joined by
  ``KServeJoiner``: only ``EventError``, and every instance becomes one prediction. (The fuzzer's first find:
  a bare number among a request's instances crashed the joiner, and with it the monitor, on every restart.)
"""

from __future__ import annotations

import math
from typing import Any

from monitors.events.cloudevents import (
    KSERVE_REQUEST,
    KSERVE_RESPONSE,
    LABEL_TYPE,
    PREDICTION_TYPE,
    EventError,
    KServeJoiner,
    KServePart,
    decode,
)
from streams.decoding import REASONS, DecodedBatch, EventDecoder

__all__ = ["check"]

SCHEMA = {
    "card_id": "INT64",
    "amount": "FLOAT64",
    "small": "INT32",
    "ratio": "FLOAT32",
    "merchant": "STRING",
    "flag": "BOOL",
    "scores": "DOUBLE_LIST",
    "tags": "STRING_LIST",
    "raw": "BYTES",
    "seen": "UNIX_TIMESTAMP",
    "ts": "UNIX_TIMESTAMP",
}
AGGREGATED = EventDecoder(
    join_keys={"card_id": "INT64"},
    timestamp_field="ts",
    schema=SCHEMA,
    columns=("amount", "small", "ratio", "flag"),
    max_message_bytes=4096,
)
PLAIN = EventDecoder(
    join_keys={"card_id": "INT64", "merchant": "STRING"},
    timestamp_field="ts",
    schema=SCHEMA,
    columns=("amount", "small", "ratio", "flag", "scores", "tags", "raw", "seen"),
    raw_columns=True,
    max_message_bytes=4096,
)
TYPES = [PREDICTION_TYPE, LABEL_TYPE, KSERVE_REQUEST, KSERVE_RESPONSE, "com.example.other"]


def check(data: bytes) -> None:
    if not data:
        return
    target, payload = data[0] % 3, data[1:]
    if target == 0:
        _stream(payload.split(b"\n")[:100])
    elif target == 1 and payload:
        _cloudevent(TYPES[payload[0] % len(TYPES)], payload[1:])
    else:
        request, _, response = payload.partition(b"\n")
        _kserve(request, response)


def _stream(messages: list[bytes]) -> None:
    for decoder in (AGGREGATED, PLAIN):
        batch = decoder.decode(messages)
        _accounted(batch, len(messages))
        # A batch of one valid message repeated: pyarrow's bulk path and the per-message one must agree.
        repeated = [messages[0]] * 64
        bulk = None if decoder.raw_columns else decoder._decode_bulk(repeated)
        if bulk is not None:
            _same(bulk, decoder._decode_each(repeated))


def _accounted(batch: DecodedBatch, count: int) -> None:
    rejected = [rejection.index for rejection in batch.rejections]
    assert sorted([*batch.accepted.tolist(), *rejected]) == list(range(count)), (batch, count)
    assert all(rejection.reason in REASONS and rejection.detail for rejection in batch.rejections)
    assert len(batch.keys) == len(batch.accepted) == len(batch.times)


def _same(bulk: DecodedBatch, each: DecodedBatch) -> None:
    assert bulk.keys == each.keys and bulk.times.tolist() == each.times.tolist()
    assert not bulk.rejections and not each.rejections
    assert set(bulk.columns) == set(each.columns)
    for name, column in bulk.columns.items():
        assert [_comparable(v) for v in column.tolist()] == [
            _comparable(v) for v in each.columns[name].tolist()
        ], name
    assert {name: v.tolist() for name, v in bulk.integers.items()} == {
        name: v.tolist() for name, v in each.integers.items()
    }


def _comparable(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _headers(kind: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_type", kind.encode()),
        ("ce_id", b"fuzz-1"),
        ("ce_source", b"fuzz"),
        ("ce_inferenceservicename", b"fraud"),
        ("ce_time", b"2026-01-01T00:00:00Z"),
    ]


def _cloudevent(kind: str, value: bytes) -> None:
    try:
        decode(_headers(kind), value)
    except EventError as error:
        assert error.args and str(error), repr(error)


def _kserve(request: bytes, response: bytes) -> None:
    joiner = KServeJoiner(feature_names=["amount", "country"])
    parts: list[KServePart] = []
    for kind, value in ((KSERVE_REQUEST, request), (KSERVE_RESPONSE, response)):
        try:
            part = decode(_headers(kind), value)
        except EventError:
            return
        assert isinstance(part, KServePart)
        parts.append(part)
    assert joiner.add(parts[0]) == []
    try:
        events = joiner.add(parts[1])
    except EventError as error:
        assert str(error), repr(error)
        return
    assert len(events) == len(parts[0].rows)
