"""Feature skew: the value a model was served against the offline store's point-in-time value.

For a sample of each window's prediction events, the offline store is asked what each feature was for
the event's entity at the event's time (``get_historical_features``), and the served value is compared
with it. The mismatch rate per feature is the skew: a training set built from the offline store would
have shown the model different inputs than it saw in production. Some skew is expected from freshness
alone (a value the stream had not yet written online when the request came); a rate above the threshold
is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from features.spec import FeatureViewSpec
from monitors.drift.detector import FeatureScore
from monitors.events.cloudevents import PredictionEvent, prediction_from_data

__all__ = ["SkewSample", "SkewSettings", "skew_scores"]


@dataclass(frozen=True, kw_only=True)
class SkewSettings:
    views: tuple[FeatureViewSpec, ...]
    """The feature views whose features are compared, by name, with the served ones."""
    sample_size: int = 200
    """Events per window whose served values are checked against the offline store."""
    threshold: float = 0.01
    """A mismatch rate above this is skew."""
    relative_tolerance: float = 1e-9


@dataclass
class SkewSample:
    """The ``capacity`` events of a window with the smallest sampling keys (``event_keys`` of their
    request ids): a uniform sample that does not depend on the order of the events, so that the samples
    of a window's partitions merge into the one of the whole window (``merged``)."""

    capacity: int
    items: list[tuple[int, bytes]] = field(default_factory=list)
    """(key, the event as JSON), the smallest first once ``events`` or ``merged`` has sorted them."""

    def add(self, events: list[dict[str, Any]], keys: NDArray[np.uint64]) -> None:
        """Add events, as their JSON data, with their sampling keys; only those that can be among the
        ``capacity`` smallest keys are kept."""
        if len(self.items) >= self.capacity:
            self._trim()
            bound = self.items[-1][0]
            chosen = np.flatnonzero(keys <= bound).tolist()
        else:
            chosen = list(range(len(events)))
        if len(chosen) > self.capacity:  # ties at the cut stay: the event's bytes break them, in _trim
            cut = np.partition(keys[chosen], self.capacity - 1)[self.capacity - 1]
            chosen = [index for index in chosen if keys[index] <= cut]
        self.items += [(int(keys[index]), orjson.dumps(events[index])) for index in chosen]
        if len(self.items) > 2 * self.capacity:
            self._trim()

    @property
    def events(self) -> list[PredictionEvent]:
        self._trim()
        return [prediction_from_data(orjson.loads(data)) for _, data in self.items]

    @classmethod
    def merged(cls, parts: list[SkewSample]) -> SkewSample:
        sample = cls(capacity=parts[0].capacity, items=[item for part in parts for item in part.items])
        sample._trim()
        return sample

    def to_bytes(self) -> bytes:
        self._trim()
        return orjson.dumps([[str(key), data.decode()] for key, data in self.items])

    @classmethod
    def from_bytes(cls, data: bytes, *, capacity: int) -> SkewSample:
        return cls(capacity=capacity, items=[(int(key), text.encode()) for key, text in orjson.loads(data)])

    def _trim(self) -> None:
        self.items = sorted(self.items)[: self.capacity]


def skew_scores(sample: list[PredictionEvent], settings: SkewSettings) -> list[FeatureScore]:
    """One score per compared feature: the share of sampled events whose served value differs offline."""
    import pandas as pd

    from offline_store import get_historical_features

    scores = []
    for spec in settings.views:
        names = [name for name in spec.features if any(name in event.features for event in sample)]
        keys = list(spec.join_keys)
        rows = [event for event in sample if all(key in event.entities for key in keys)]
        if not names or not rows:
            continue
        entity_df = pd.DataFrame(
            {
                **{key: [event.entities[key] for event in rows] for key in keys},
                "event_timestamp": [event.event_time.astimezone(UTC) for event in rows],
            }
        )
        offline = get_historical_features(
            entity_df=entity_df,
            features=[f"{spec.name}:{name}" for name in names],
            repo=[spec],
            full_feature_names=True,
        ).to_arrow()
        for name in names:
            stored = offline.column(f"{spec.name}__{name}").to_pylist()
            compared = [
                (event.features[name], value)
                for event, value in zip(rows, stored, strict=True)
                if name in event.features
            ]
            mismatches = sum(
                not _same(served, value, settings.relative_tolerance) for served, value in compared
            )
            rate = mismatches / len(compared) if compared else math.nan
            scores.append(
                FeatureScore(
                    feature=name,
                    metric="skew_mismatch_rate",
                    against="offline",
                    score=rate,
                    threshold=settings.threshold,
                    drift=not math.isnan(rate) and rate > settings.threshold,
                )
            )
    return scores


def _same(served: Any, stored: Any, tolerance: float) -> bool:
    missing = [
        value is None or (isinstance(value, float) and math.isnan(value)) for value in (served, stored)
    ]
    if any(missing):
        return all(missing)
    if isinstance(served, (int, float)) and isinstance(stored, (int, float)):
        return math.isclose(float(served), float(stored), rel_tol=tolerance, abs_tol=1e-12)
    return bool(served == stored)
