"""Join ground-truth labels to the predictions they judge, by request id.

Labels usually arrive after their prediction (minutes to weeks), sometimes before it. The joiner keeps
the latest ``capacity`` predictions and the latest ``capacity`` unmatched labels; the oldest go first,
and are counted. A joined pair carries the prediction's model, version, time, entities, served features
and outputs, and the label with its time: enough to compute a model's performance per window, and to
build a retraining set (the entities and the prediction time are the keys of a point-in-time join).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from monitors.events.cloudevents import LabelEvent, PredictionEvent, prediction_from_data

__all__ = ["LabelJoiner", "LabelledPrediction"]


@dataclass(frozen=True, kw_only=True)
class LabelledPrediction:
    prediction: PredictionEvent
    label: LabelEvent

    def to_record(self) -> dict[str, Any]:
        return {
            "model": self.prediction.model,
            "version": self.prediction.version,
            "request_id": self.prediction.request_id,
            "prediction_time": self.prediction.event_time.isoformat(),
            "label_time": self.label.event_time.isoformat(),
            "entities": self.prediction.entities,
            "features": self.prediction.features,
            "outputs": self.prediction.outputs,
            "label": self.label.label,
        }


class LabelJoiner:
    """Pairs predictions and labels with the same (model, request id), whichever comes first.

    >>> from datetime import UTC, datetime
    >>> joiner = LabelJoiner(capacity=2)
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> joiner.add_label(LabelEvent(model="m", request_id="r1", label=1, event_time=now))
    []
    >>> [pair.label.label for pair in joiner.add_prediction(
    ...     PredictionEvent(model="m", version="2", request_id="r1", features={}, event_time=now))]
    [1]
    """

    def __init__(self, *, capacity: int = 100_000, on_forget: Callable[[str], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"the join capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.on_forget = on_forget
        """Called with ``prediction`` or ``label`` for each one dropped unjoined at capacity."""
        self.forgotten_predictions = 0
        self.forgotten_labels = 0
        self._predictions: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        """Unmatched predictions, as JSON data: bytes, which the garbage collector never walks."""
        self._labels: OrderedDict[tuple[str, str], LabelEvent] = OrderedDict()

    @property
    def held_predictions(self) -> int:
        """Predictions waiting for their label."""
        return len(self._predictions)

    @property
    def held_labels(self) -> int:
        """Labels waiting for their prediction."""
        return len(self._labels)

    def add_prediction(self, event: PredictionEvent) -> list[LabelledPrediction]:
        return self.add_prediction_json(event.model, event.request_id, orjson.dumps(event.data()))

    def add_prediction_json(self, model: str, request_id: str, data: bytes) -> list[LabelledPrediction]:
        """``add_prediction`` for a prediction as its JSON data (the record's value, checked by
        ``events.decode_record``): the monitor's path, which parses it again only when its label comes."""
        key = (model, request_id)
        label = self._labels.pop(key, None)
        if label is not None:
            return [LabelledPrediction(prediction=prediction_from_data(orjson.loads(data)), label=label)]
        predictions = self._predictions
        if key in predictions:
            predictions.move_to_end(key)
        predictions[key] = data
        if len(predictions) > self.capacity:
            predictions.popitem(last=False)
            self.forgotten_predictions += 1
            if self.on_forget is not None:
                self.on_forget("prediction")
        return []

    def add_label(self, event: LabelEvent) -> list[LabelledPrediction]:
        key = (event.model, event.request_id)
        prediction = self._predictions.get(key)
        if prediction is not None:
            return [
                LabelledPrediction(prediction=prediction_from_data(orjson.loads(prediction)), label=event)
            ]
        self._labels[key] = event
        if len(self._labels) > self.capacity:
            self._labels.popitem(last=False)
            self.forgotten_labels += 1
            if self.on_forget is not None:
                self.on_forget("label")
        return []
