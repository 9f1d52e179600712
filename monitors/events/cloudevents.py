"""Prediction and label events as CloudEvents 1.0 records in Kafka's binary mode.

The record's headers carry the CloudEvents attributes (``ce_specversion``, ``ce_id``, ``ce_source``,
``ce_type``, ``ce_time``) and ``content-type``; the key is the request id; the value is JSON data:

    {"model": "fraud", "version": "3", "request_id": "r-1", "entities": {"card_id": 7},
     "features": {"amount_sum_1h": 42.5}, "outputs": {"score": 0.91}, "event_time": "2026-...Z"}

``model`` may name a model of MLflow's registry instead, ``models:/fraud@champion`` or
``models:/fraud/3``, and ``version`` may then be left out: the monitor resolves the reference to the
version it points at when it reads the event (``monitors.retraining.mlflow``); a version sent with it
wins, as the scorer knew which version it used.

A label event (``io.sluice.label``) carries ``model``, ``request_id``, ``label`` and ``event_time``.
Payloads are parsed as JSON only (never pickle or eval); anything else raises ``EventError`` with a
reason, which the monitor sends to its dead-letter topic.

KServe's inference logger is accepted as well: a ``org.kubeflow.serving.inference.request`` and a
``...response`` with the same ``ce_id`` make one prediction (see ``KServeJoiner``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson

__all__ = [
    "LABEL_TYPE",
    "PREDICTION_TYPE",
    "EventError",
    "KServeJoiner",
    "LabelEvent",
    "PredictionEvent",
    "decode",
    "decode_record",
    "encode",
    "prediction_from_data",
]

PREDICTION_TYPE = "io.sluice.prediction"
LABEL_TYPE = "io.sluice.label"
KSERVE_REQUEST = "org.kubeflow.serving.inference.request"
KSERVE_RESPONSE = "org.kubeflow.serving.inference.response"

Headers = Sequence[tuple[str, bytes]]


class EventError(ValueError):
    """A record that is not a valid event; ``reason`` is a short label for metrics and the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class PredictionEvent:
    model: str
    version: str
    request_id: str
    features: dict[str, Any]
    """The feature values actually served, by name."""
    event_time: datetime
    entities: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
            "entities": self.entities,
            "features": self.features,
            "outputs": self.outputs,
            "event_time": _iso(self.event_time),
        }


@dataclass(frozen=True, kw_only=True)
class LabelEvent:
    model: str
    request_id: str
    label: Any
    event_time: datetime

    def data(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "request_id": self.request_id,
            "label": self.label,
            "event_time": _iso(self.event_time),
        }


def encode(
    event: PredictionEvent | LabelEvent, *, source: str
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the Kafka record for an event."""
    kind = PREDICTION_TYPE if isinstance(event, PredictionEvent) else LABEL_TYPE
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", uuid.uuid4().hex.encode()),
        ("ce_source", source.encode()),
        ("ce_type", kind.encode()),
        ("ce_time", _iso(event.event_time).encode()),
        ("content-type", b"application/json"),
    ]
    return event.request_id.encode(), orjson.dumps(event.data()), headers


def decode(headers: Headers, value: bytes | None) -> PredictionEvent | LabelEvent | KServePart:
    """The event in a record; raises ``EventError`` for anything that is not a valid one."""
    kind, payload, _ = decode_record(headers, value)
    if kind == PREDICTION_TYPE:
        return prediction_from_data(payload)
    return cast("LabelEvent | KServePart", payload)


def decode_record(headers: Headers, value: bytes | None) -> tuple[str, Any, int]:
    """``(ce_type, payload, event time in µs)`` of a record, checked as ``decode`` checks it, without
    building an object per prediction: the monitor's hot path. A prediction's payload is its JSON data,
    with model, version and request id as text; a label's is a ``LabelEvent``, a KServe half's a
    ``KServePart``. Raises ``EventError`` for anything that is not a valid event.

    >>> event = PredictionEvent(model="m", version=2, request_id="r", features={"x": 1.5},
    ...                         event_time=datetime(2026, 1, 1, tzinfo=UTC))
    >>> key, value, headers = encode(event, source="doc")
    >>> kind, data, event_us = decode_record(headers, value)
    >>> kind, data["version"], data["features"], event_us
    ('io.sluice.prediction', '2', {'x': 1.5}, 1767225600000000)
    """
    specversion, kind_bytes = _cloudevent_type(headers)
    if specversion != b"1.0":
        raise EventError("not_cloudevent", "missing header ce_specversion: 1.0 (CloudEvents binary mode)")
    kind = kind_bytes.decode(errors="replace")
    if value is None:
        raise EventError("malformed_json", "the record has no value")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise EventError("malformed_json", f"data is not JSON: {error}") from None
    if kind in (KSERVE_REQUEST, KSERVE_RESPONSE):
        part = _kserve(kind, _attributes(headers), data)
        return kind, part, _micros(part.event_time)
    if not isinstance(data, dict):
        raise EventError("schema", "data must be a JSON object")
    if kind == PREDICTION_TYPE:
        return kind, *_checked_prediction(data)
    if kind == LABEL_TYPE:
        if "label" not in data:
            raise EventError("schema", "a label event needs a 'label'")
        label = LabelEvent(
            model=_text(data, "model"),
            request_id=_text(data, "request_id"),
            label=data["label"],
            event_time=_time(data.get("event_time")),
        )
        return kind, label, _micros(label.event_time)
    raise EventError(
        "unknown_type", f"ce_type {kind!r} is neither {PREDICTION_TYPE}, {LABEL_TYPE} nor KServe's"
    )


def _cloudevent_type(headers: Headers) -> tuple[bytes | None, bytes]:
    """The ``ce_specversion`` and ``ce_type`` headers: looked up by their exact names first (what every
    CloudEvents Kafka binding writes), else with names folded to lower case and ``-`` to ``_``."""
    specversion = kind = None
    for name, raw in headers:
        if name == "ce_specversion":
            specversion = raw
        elif name == "ce_type":
            kind = raw
    if specversion is None or kind is None:
        attributes = _attributes(headers)
        specversion, kind = attributes.get("ce_specversion"), attributes.get("ce_type", b"")
    return specversion, kind


def _attributes(headers: Headers) -> dict[str, bytes]:
    return {name.lower().replace("-", "_"): raw for name, raw in headers}


def _checked_prediction(data: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A prediction's data as ``prediction_from_data`` checks it, with its identifying fields as text
    (a copy only where one was not), and its event time in µs."""
    model, version, request_id = data.get("model"), data.get("version"), data.get("request_id")
    entities, outputs = data.get("entities"), data.get("outputs")
    usual = (
        type(model) is str
        and type(version) is str
        and type(request_id) is str
        and model
        and version
        and request_id
        and type(data.get("features")) is dict
        and (entities is None or type(entities) is dict)
        and (outputs is None or type(outputs) is dict)
    )
    if not usual:  # numbers as names, or something to refuse: the checks that say what is wrong
        names = ("model", "version", "request_id")
        reference = type(model) is str and model.startswith("models:/") and version in (None, "")
        texts = ["" if reference and name == "version" else _text(data, name) for name in names]
        _object(data, "features")
        _object(data, "entities", required=False)
        _object(data, "outputs", required=False)
        data = {**data, **dict(zip(names, texts, strict=True))}
    return data, _micros(_time(data.get("event_time")))


def _micros(moment: datetime) -> int:
    """An event time in µs since the epoch, as every part of the monitor computes it."""
    return int(moment.timestamp() * 1_000_000)


@dataclass(frozen=True, kw_only=True)
class KServePart:
    """Half of a KServe inference: the request's inputs or the response's outputs, by ``ce_id``."""

    kind: str
    inference_id: str
    model: str
    rows: list[Any]
    event_time: datetime


class KServeJoiner:
    """Pairs KServe request and response events by ``ce_id`` into predictions, one per instance.

    Instances that are JSON objects give their keys as feature names; instances that are lists take
    the names in ``feature_names``. The model is ``ce_inferenceservicename`` (else ``ce_source``); KServe
    does not send a model version, so it is ``version``. At most ``capacity`` halves wait for their other
    half; the oldest are dropped first and counted in ``dropped``. A pair whose request holds an instance
    of neither form raises ``EventError`` when it completes.
    """

    def __init__(
        self, *, feature_names: Sequence[str] = (), version: str = "0", capacity: int = 10_000
    ) -> None:
        self.feature_names = list(feature_names)
        self.version = version
        self.capacity = capacity
        self.dropped = 0
        self._waiting: OrderedDict[tuple[str, str], KServePart] = OrderedDict()

    def add(self, part: KServePart) -> list[PredictionEvent]:
        other_kind = KSERVE_RESPONSE if part.kind == KSERVE_REQUEST else KSERVE_REQUEST
        other = self._waiting.pop((other_kind, part.inference_id), None)
        if other is None:
            self._waiting[(part.kind, part.inference_id)] = part
            while len(self._waiting) > self.capacity:
                self._waiting.popitem(last=False)
                self.dropped += 1
            return []
        request, response = (part, other) if part.kind == KSERVE_REQUEST else (other, part)
        events = []
        for index, instance in enumerate(request.rows):
            features = self._features(instance, index)
            output = response.rows[index] if index < len(response.rows) else None
            events.append(
                PredictionEvent(
                    model=request.model,
                    version=self.version,
                    request_id=f"{request.inference_id}-{index}",
                    features=features,
                    outputs={"prediction": output},
                    event_time=request.event_time,
                )
            )
        return events

    def _features(self, instance: Any, index: int) -> dict[str, Any]:
        """An instance's features: an object's keys, a list's values in ``feature_names`` order, or a
        bare value when the model has one feature; anything else is refused, never guessed."""
        if isinstance(instance, Mapping):
            return dict(instance)
        if isinstance(instance, list):
            return dict(zip(self.feature_names, instance, strict=False))
        if len(self.feature_names) == 1:
            return {self.feature_names[0]: instance}
        raise EventError(
            "schema",
            f"KServe instance {index} is a bare value ({instance!r}); send each instance as an object of "
            "feature name to value, or as a list in the order of the monitor's --kserve-features",
        )


def prediction_from_data(data: Mapping[str, Any]) -> PredictionEvent:
    """The prediction event of a CloudEvent's data (``PredictionEvent.data``); raises ``EventError``."""
    return PredictionEvent(
        model=_text(data, "model"),
        version=_text(data, "version"),
        request_id=_text(data, "request_id"),
        features=_object(data, "features"),
        entities=_object(data, "entities", required=False),
        outputs=_object(data, "outputs", required=False),
        event_time=_time(data.get("event_time")),
    )


def _kserve(kind: str, attributes: Mapping[str, bytes], data: Any) -> KServePart:
    inference_id = attributes.get("ce_id", b"").decode()
    if not inference_id:
        raise EventError("schema", "a KServe event needs a ce_id")
    model = (attributes.get("ce_inferenceservicename") or attributes.get("ce_source") or b"").decode()
    if not isinstance(data, dict):
        raise EventError("schema", "KServe data must be a JSON object")
    # v1: {"instances": [...]} / {"predictions": [...]}; v2: {"inputs": [...]} / {"outputs": [...]}.
    rows = data.get("instances") or data.get("predictions") or data.get("inputs") or data.get("outputs")
    if not isinstance(rows, list):
        raise EventError("schema", "KServe data needs instances, predictions, inputs or outputs as a list")
    raw_time = attributes.get("ce_time")
    return KServePart(
        kind=kind,
        inference_id=inference_id,
        model=model,
        rows=rows,
        event_time=_time(raw_time.decode()) if raw_time else datetime.now(UTC),
    )


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
        raise EventError("schema", f"'{name}' must be a non-empty string")
    return str(value)


def _object(data: Mapping[str, Any], name: str, *, required: bool = True) -> dict[str, Any]:
    value = data.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise EventError("schema", f"'{name}' must be a JSON object")
    return value


def _time(value: Any) -> datetime:
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise EventError("type", f"event_time must be an ISO 8601 time or epoch seconds, not {value!r}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
