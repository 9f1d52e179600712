"""Run a stream feature view's udf on decoded batches, between decoding and aggregation.

The decoded events become the udf's input columns (``features.stream_udf`` says their form); its
output replaces the batch's value columns. Events the udf fails on leave the batch as dead letters
with reason ``transform`` and the error, found by retrying the failed batch event by event. A udf
that fails on every event of several live batches in a row is broken, not fed bad data: the worker
stops (``TransformBroken``) before it writes or commits the batch, instead of emptying the stream
into the dead-letter topic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from features.spec import FeatureViewSpec
from features.stream_udf import StreamUdf, UdfOutputs
from streams.decoding import DecodedBatch, Rejection

__all__ = ["EventTransform", "TransformBroken"]

GIVE_UP_AFTER = 3
"""Live batches in a row whose every event the udf fails on, before the worker stops."""


class TransformBroken(RuntimeError):
    """The udf failed on every event of several batches in a row; nothing of the last one was written."""


class EventTransform:
    """One view's udf over the decoded batches of one partition."""

    def __init__(self, *, spec: FeatureViewSpec, give_up_after: int = GIVE_UP_AFTER) -> None:
        assert spec.transform is not None
        self.spec = spec
        self.udf = StreamUdf(spec=spec.transform)
        self.give_up_after = give_up_after
        self.failed_batches = 0
        """Live batches in a row whose every event failed."""

    @classmethod
    def for_view(cls, spec: FeatureViewSpec) -> EventTransform | None:
        return cls(spec=spec) if spec.transform is not None else None

    def apply(self, decoded: DecodedBatch, *, live: bool) -> DecodedBatch:
        """The batch with the udf's columns; the events it failed on become ``transform`` rejections."""
        rows = len(decoded.keys)
        if not rows:
            return self._batch(decoded, self.udf.apply({}, rows=0)[0], [])
        outputs, failures = self.udf.apply(self._inputs(decoded), rows=rows)
        if live:
            self.failed_batches = self.failed_batches + 1 if len(failures) == rows else 0
            if self.failed_batches >= self.give_up_after:
                raise TransformBroken(
                    f"the udf of feature view {self.spec.name!r} failed on every event of "
                    f"{self.failed_batches} batches in a row (last: {failures[0][1]}); fix it and start "
                    "the worker again: the last batch was neither written nor committed"
                )
        return self._batch(decoded, outputs, failures)

    def _inputs(self, decoded: DecodedBatch) -> dict[str, NDArray[Any]]:
        """The udf's input: each message field as a column, typed as ``features.stream_udf`` says."""
        spec = self.spec
        columns: dict[str, NDArray[Any]] = {}
        names = list(spec.join_keys)
        keys = [decoded.keys] if len(names) == 1 else [list(part) for part in zip(*decoded.keys, strict=True)]
        for name, key_values in zip(names, keys, strict=True):
            dtype = object if spec.join_keys[name] == "STRING" else np.int64
            columns[name] = np.asarray(key_values, dtype=dtype)
        for name, field_type in spec.message_schema.items():
            if name == spec.timestamp_field:
                columns[name] = decoded.times.astype("datetime64[us]")
            elif name in decoded.columns:
                columns[name] = _input_column(decoded, name, field_type)
        return columns

    def _batch(
        self, decoded: DecodedBatch, outputs: UdfOutputs, failures: list[tuple[int, str]]
    ) -> DecodedBatch:
        rows = outputs.rows
        rejections = decoded.rejections + [
            Rejection(index=int(decoded.accepted[row]), reason="transform", detail=f"udf failed: {error}")
            for row, error in failures
        ]
        columns: dict[str, NDArray[Any]] = dict(outputs.floats)
        if not self.spec.is_aggregated:
            types = self.udf.spec.output_types
            columns = {name: _plain(name, outputs, types[name]) for name in columns}
        return DecodedBatch(
            accepted=decoded.accepted[rows],
            keys=[decoded.keys[row] for row in rows.tolist()],
            times=decoded.times[rows],
            columns=columns,
            rejections=sorted(rejections, key=lambda rejection: rejection.index),
            integers=dict(outputs.integers),
        )


def _input_column(decoded: DecodedBatch, name: str, dtype: str) -> NDArray[Any]:
    """A decoded column as the udf gets it: exact integers (float64 NaNs if it has a null), booleans."""
    values = decoded.columns[name]
    if dtype in ("INT64", "INT32") and not np.isnan(values).any():
        return decoded.integers[name]
    if dtype == "BOOL":
        nulls = np.isnan(values)
        if not nulls.any():
            return values.astype(bool)
        return np.asarray(
            [None if null else bool(value) for value, null in zip(values, nulls, strict=True)], dtype=object
        )
    return values


def _plain(name: str, outputs: UdfOutputs, dtype: str) -> NDArray[Any]:
    """A plain view's column as the decoder's raw form has it: Python values, None for a null."""
    values = outputs.floats[name]
    if dtype == "STRING":
        return values
    if dtype in ("INT64", "INT32"):
        exact = outputs.integers[name].tolist()
        return np.asarray(
            [None if null else value for value, null in zip(exact, np.isnan(values), strict=True)],
            dtype=object,
        )
    if dtype == "BOOL":
        return np.asarray(
            [None if value != value else bool(value) for value in values.tolist()], dtype=object
        )
    return np.asarray([None if value != value else value for value in values.tolist()], dtype=object)
