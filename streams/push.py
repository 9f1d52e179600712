"""Push rows to a ``PushSource``, as Feast's ``FeatureStore.push`` does, through the stream worker::

    pusher = Pusher(repo=load_repo(Path("my_repo")))
    pusher.push("card_updates", frame)  # a PushReceipt: the topic, the rows, their last offsets

The rows are checked against every view the source feeds (join keys, the event time, each feature's
type) before anything is sent, so a bad row is refused with its reason and nothing of the push is
written. They are then produced, keyed by entity, to the source's topic and acknowledged by every
in-sync replica; the stream worker writes them to Parquet and Redis with its two-sink protocol, so
each pushed row lands in both stores exactly once. ``wait_s`` waits until the worker has committed
them, so a read right after sees them.

Feast's ``to`` (online, offline, or both) is accepted and always means both: the stores stay equal,
so a training set holds what was served. (A push to the offline store alone, for history, does not
replace a newer online value: Redis keeps the newest row.)
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson

from features.push_sources import push_topic
from features.repo import FeatureRepo
from features.spec import FeatureViewSpec
from streams.decoding import EventDecoder

__all__ = ["PushError", "PushReceipt", "Pusher"]

_MODES = ("online", "offline", "online_and_offline")


class PushError(ValueError):
    """A push that cannot be written: an unknown source, a bad mode, or a row the views would refuse."""


@dataclass(frozen=True, kw_only=True)
class PushReceipt:
    source: str
    topic: str
    rows: int
    last_offsets: dict[int, int]
    """Per partition, the offset of the last row pushed there."""


class Pusher:
    """Pushes rows to the push sources of one repo; one Kafka producer, made on first use."""

    def __init__(self, *, repo: FeatureRepo, producer: Any = None) -> None:
        self.repo = repo
        self._producer = producer
        project = repo.config.project
        names = [item.name for item in repo.objects if type(item).__name__ == "PushSource"]
        self.views: dict[str, list[FeatureViewSpec]] = {
            name: [spec for spec in repo.specs if spec.topic == push_topic(project, name)] for name in names
        }
        self._decoders = {
            spec.name: EventDecoder.for_view(spec) for specs in self.views.values() for spec in specs
        }

    def push(
        self,
        push_source_name: str,
        df: Any,
        *,
        to: str = "online_and_offline",
        wait_s: float | None = None,
    ) -> PushReceipt:
        """Push the rows of ``df`` (a DataFrame, a list of row dicts, or a dict of columns)."""
        specs = self.views.get(push_source_name)
        if not specs:
            known = ", ".join(sorted(name for name, views in self.views.items() if views)) or "none"
            raise PushError(f"no push source named {push_source_name!r} feeds a view; known: {known}")
        mode = str(getattr(to, "name", to)).lower()
        if mode not in _MODES:
            raise PushError(f"to must be one of {', '.join(_MODES)}, not {to!r}")
        rows = _rows(df)
        if not rows:
            raise PushError("no rows to push")
        messages = [
            orjson.dumps(row, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY) for row in rows
        ]
        for spec in specs:
            self._check(spec, messages)
        topic = specs[0].topic
        join_keys = list(specs[0].join_keys)
        producer = self._get_producer()
        sent = [
            producer.send(topic, key=_key(row, join_keys), value=message)
            for row, message in zip(rows, messages, strict=True)
        ]
        producer.flush()
        last: dict[int, int] = {}
        for future in sent:
            metadata = future.get(timeout=30)
            last[metadata.partition] = max(last.get(metadata.partition, -1), metadata.offset)
        receipt = PushReceipt(source=push_source_name, topic=topic, rows=len(rows), last_offsets=last)
        if wait_s:
            self.wait(receipt, timeout_s=wait_s)
        return receipt

    def wait(self, receipt: PushReceipt, *, timeout_s: float) -> None:
        """Return once the stream worker has committed every row of the push; raise TimeoutError if not."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        from streams import admin_client

        group = f"sluice-{self.repo.config.project}"
        admin = admin_client(self.repo.config.kafka)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    offsets = admin.list_group_offsets(group).get(group, {})
                except KafkaError as error:
                    if not getattr(error, "retriable", False):
                        raise
                    offsets = {}  # the group's coordinator is still being elected
                done = all(
                    (committed := offsets.get(TopicPartition(receipt.topic, partition))) is not None
                    and committed.offset > last
                    for partition, last in receipt.last_offsets.items()
                )
                if done:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the stream worker has not written the push to {receipt.topic} "
                        f"within {timeout_s} s; "
                        "is `sluice worker` running?"
                    )
                time.sleep(0.05)
        finally:
            admin.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()

    def _get_producer(self) -> Any:
        if self._producer is None:
            from streams import producer

            self._producer = producer(self.repo.config.kafka)
        return self._producer

    def _check(self, spec: FeatureViewSpec, messages: list[bytes]) -> None:
        decoded = self._decoders[spec.name].decode(messages)
        if decoded.rejections:
            first = decoded.rejections[0]
            raise PushError(
                f"row {first.index} cannot be written to feature view {spec.name!r} ({first.reason}): "
                f"{first.detail}; nothing was pushed"
            )


def _rows(df: Any) -> list[dict[str, Any]]:
    if hasattr(df, "to_dict") and hasattr(df, "columns"):
        return list(df.to_dict("records"))
    if isinstance(df, Mapping):
        columns = {name: list(values) for name, values in df.items()}
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise PushError(
                f"the columns differ in length: { {name: len(v) for name, v in columns.items()} }"
            )
        count = lengths.pop() if lengths else 0
        return [{name: values[index] for name, values in columns.items()} for index in range(count)]
    if isinstance(df, Sequence) and all(isinstance(row, Mapping) for row in df):
        return [dict(row) for row in df]
    raise PushError("push a pandas DataFrame, a list of row dicts, or a dict of columns")


def _key(row: Mapping[str, Any], join_keys: list[str]) -> bytes:
    """The message key: the entity, so all its rows land in one partition, in order."""
    return "|".join(str(row.get(name)) for name in join_keys).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date) or hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "tolist"):
        return value.tolist()
    if value is None or value != value:
        return None
    raise TypeError(f"cannot push a value of type {type(value).__name__}")
