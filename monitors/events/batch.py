"""One partition's prediction events of a poll, as columns: what the monitor puts in its windows.

The monitor's hot path builds no object per event: each event is its checked JSON data
(``events.decode_record``), with its event time in µs, its offset and its record (for the dead-letter
topic), and the positions of each model version's events.

>>> from datetime import UTC, datetime
>>> from monitors.events.cloudevents import PredictionEvent
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> batches = PredictionBatch.of_events([
...     (PredictionEvent(model="m", version="1", request_id="a", features={"x": 1.0}, event_time=at), 0, 7),
...     (PredictionEvent(model="m", version="2", request_id="b", features={"x": 2.0}, event_time=at), 0, 8),
... ])
>>> batch = batches[0]
>>> len(batch), batch.offsets, batch.versions, batch.records
(2, [7, 8], {('m', '1'): [0], ('m', '2'): [1]}, [0, 1])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monitors.events.cloudevents import PredictionEvent

__all__ = ["PredictionBatch", "Version"]

Version = tuple[str, str]
"""(model, version)."""


class PredictionBatch:
    """Prediction events of one partition, in offset order."""

    def __init__(self, *, partition: int) -> None:
        self.partition = partition
        self.data: list[dict[str, Any]] = []
        """Each event's data: model, version and request id as text, ``features``, and the rest as sent."""
        self.times: list[int] = []
        """Each event's time, µs since the epoch."""
        self.offsets: list[int] = []
        self.records: list[Any] = []
        """What each event came from, handed back with a rejection (the Kafka record)."""
        self.versions: dict[Version, list[int]] = {}
        """Per model version, the positions of its events."""

    def __len__(self) -> int:
        return len(self.data)

    def append(self, data: dict[str, Any], *, event_us: int, offset: int, record: Any) -> None:
        self.versions.setdefault((data["model"], data["version"]), []).append(len(self.data))
        self.data.append(data)
        self.times.append(event_us)
        self.offsets.append(offset)
        self.records.append(record)

    @classmethod
    def of_events(cls, events: Iterable[tuple[PredictionEvent, int, int]]) -> dict[int, PredictionBatch]:
        """Batches per partition of (event, partition, offset) triples; each event's record is its
        position among them."""
        batches: dict[int, PredictionBatch] = {}
        for index, (event, partition, offset) in enumerate(events):
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = cls(partition=partition)
            data = event.data()
            data.update(model=str(event.model), version=str(event.version), request_id=str(event.request_id))
            batch.append(
                data,
                event_us=int(event.event_time.timestamp() * 1_000_000),
                offset=offset,
                record=index,
            )
        return batches
