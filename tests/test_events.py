"""Prediction events as CloudEvents, KServe's logger events, and a logger that never raises."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from features.config import KafkaConfig
from monitors.events.cloudevents import (
    EventError,
    KServeJoiner,
    KServePart,
    LabelEvent,
    PredictionEvent,
    decode,
    encode,
)
from monitors.events.logger import PredictionLogger

NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def prediction() -> PredictionEvent:
    return PredictionEvent(
        model="fraud",
        version="3",
        request_id="r-1",
        entities={"card_id": 7},
        features={"amount_sum_1h": 42.5, "country": "DE"},
        outputs={"score": 0.91},
        event_time=NOW,
    )


def test_a_prediction_is_a_binary_mode_cloudevent_keyed_by_request_id() -> None:
    key, value, headers = encode(prediction(), source="checkout-api")
    names = dict(headers)
    assert key == b"r-1"
    assert names["ce_specversion"] == b"1.0" and names["ce_type"] == b"io.sluice.prediction"
    assert names["ce_source"] == b"checkout-api" and names["content-type"] == b"application/json"
    assert len(names["ce_id"]) == 32
    assert orjson.loads(value)["event_time"] == "2026-03-01T12:00:00.250000Z"
    assert decode(headers, value) == prediction()


def test_a_label_round_trips() -> None:
    label = LabelEvent(model="fraud", request_id="r-1", label=1, event_time=NOW)
    key, value, headers = encode(label, source="labels")
    assert key == b"r-1" and decode(headers, value) == label


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([], b"{}", "not_cloudevent"),
        ([("ce_specversion", b"1.0"), ("ce_type", b"io.sluice.prediction")], b"{nope", "malformed_json"),
        ([("ce_specversion", b"1.0"), ("ce_type", b"io.sluice.prediction")], None, "malformed_json"),
        ([("ce_specversion", b"1.0"), ("ce_type", b"io.sluice.prediction")], b"[1]", "schema"),
        (
            [("ce_specversion", b"1.0"), ("ce_type", b"io.sluice.prediction")],
            b'{"model": "m", "version": "1", "request_id": "r", "features": {}, "event_time": "soon"}',
            "type",
        ),
        (
            [("ce_specversion", b"1.0"), ("ce_type", b"io.sluice.prediction")],
            b'{"model": "m", "version": "1", "request_id": "r", "features": [1], "event_time": 1}',
            "schema",
        ),
        ([("ce_specversion", b"1.0"), ("ce_type", b"com.example.other")], b"{}", "unknown_type"),
    ],
)
def test_anything_else_is_refused_with_a_reason(
    headers: list[tuple[str, bytes]], value: bytes | None, reason: str
) -> None:
    with pytest.raises(EventError) as refused:
        decode(headers, value)
    assert refused.value.reason == reason


def kserve(kind: str, inference_id: str, data: object) -> KServePart:
    part = decode(
        [
            ("ce-specversion", b"1.0"),
            ("ce-type", f"org.kubeflow.serving.inference.{kind}".encode()),
            ("ce-id", inference_id.encode()),
            ("ce-inferenceservicename", b"fraud-isvc"),
            ("ce-time", b"2026-03-01T12:00:00Z"),
        ],
        orjson.dumps(data),
    )
    assert isinstance(part, KServePart)
    return part


def test_kserve_request_and_response_with_one_ce_id_make_predictions() -> None:
    joiner = KServeJoiner(feature_names=["amount", "age"], version="7")
    # The response may arrive first; nothing comes out until both halves are there.
    assert joiner.add(kserve("response", "abc", {"predictions": [0.2, 0.9]})) == []
    events = joiner.add(kserve("request", "abc", {"instances": [[10.0, 31], [99.5, 22]]}))
    assert [(e.model, e.version, e.request_id) for e in events] == [
        ("fraud-isvc", "7", "abc-0"),
        ("fraud-isvc", "7", "abc-1"),
    ]
    assert events[1].features == {"amount": 99.5, "age": 22} and events[1].outputs == {"prediction": 0.9}
    # Instances given as objects name their own features.
    joiner.add(kserve("request", "def", {"instances": [{"amount": 1.0}]}))
    [event] = joiner.add(kserve("response", "def", {"predictions": [0.1]}))
    assert event.features == {"amount": 1.0}


def test_a_bare_kserve_instance_is_one_features_value_or_refused_with_a_reason() -> None:
    # Found by the fuzzer (tests/fuzz/crashes/): a bare number among the instances crashed the joiner.
    single = KServeJoiner(feature_names=["amount"])
    single.add(kserve("request", "a", {"instances": [3.5, [4.5]]}))
    events = single.add(kserve("response", "a", {"predictions": [0, 1]}))
    assert [event.features for event in events] == [{"amount": 3.5}, {"amount": 4.5}]
    several = KServeJoiner(feature_names=["amount", "age"])
    several.add(kserve("request", "b", {"instances": [{"amount": 1.0}, 2]}))
    with pytest.raises(EventError, match="KServe instance 1 is a bare value") as refused:
        several.add(kserve("response", "b", {"predictions": [0, 1]}))
    assert refused.value.reason == "schema"


def test_the_kserve_joiner_is_bounded() -> None:
    joiner = KServeJoiner(capacity=2)
    for inference in ("a", "b", "c"):
        joiner.add(kserve("request", inference, {"instances": [[1.0]]}))
    assert joiner.dropped == 1
    assert joiner.add(kserve("response", "a", {"predictions": [1]})) == []  # "a" was dropped


def test_the_logger_never_raises_into_the_caller_and_counts_what_it_could_not_send() -> None:
    logger = PredictionLogger(
        config=KafkaConfig(bootstrap_servers="127.0.0.1:1"), topic="predictions", max_queue=2
    )
    for index in range(5):
        logger.log(model="fraud", version="1", request_id=str(index), features={"amount": object()})
    logger.log(model="fraud", version="1", request_id="x", features=None)  # type: ignore[arg-type]
    # Every call returned. Each valid event was queued or, once the queue of 2 was full, dropped and counted;
    # features=None is not an event, and is counted as failed.
    assert logger.stats.queued + logger.stats.dropped == 5
    assert logger.stats.failed >= 1
    assert logger.stats.delivered == 0
