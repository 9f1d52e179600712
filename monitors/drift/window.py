"""One serving window of one model version: what the monitor keeps while events arrive.

Memory is O(features x (bins + sample size)), whatever the number of events: numeric features keep
a count per reference bin, a bounded uniform sample and their moments; categorical features keep a
count per vocabulary entry. Each value costs O(1) (a binary search over at most ``bins`` edges, and
O(log k) for the few that enter the sample).

Windows merge exactly. The sample is the bottom-k of the values by a 64-bit hash of each event's
request id (``event_keys``), so it depends on which events a window holds, not on their order or on
how they were split: the windows of the partitions of a topic merge (``ServingWindow.merged``) into
the window one reader of every partition would have built, bit for bit when merged in partition order.

>>> import pandas as pd
>>> from monitors.drift.profile import ReferenceProfile
>>> training = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0]})
>>> profile = ReferenceProfile.build(training, model="m", version="1", bins=2)
>>> window = ServingWindow(profile=profile, start_us=0, end_us=60_000_000)
>>> window.update({"amount": [0.5, 10.0, None]})
>>> window.counts("amount").tolist(), window.null_count("amount"), window.events
([1, 1], 1, 3)
>>> first = ServingWindow(profile=profile, start_us=0, end_us=60_000_000)
>>> first.update({"amount": [0.5]}, keys=event_keys(["a"]))
>>> second = ServingWindow(profile=profile, start_us=0, end_us=60_000_000)
>>> second.update({"amount": [10.0, None]}, keys=event_keys(["b", "c"]))
>>> merged = ServingWindow.merged([first, ServingWindow.from_bytes(second.to_bytes(), profile=profile)])
>>> merged.counts("amount").tolist(), merged.null_count("amount"), merged.sample("amount").tolist()
([1, 1], 1, [0.5, 10.0])
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pyarrow as pa

from monitors.drift import kernels
from monitors.drift.profile import OTHER, ReferenceProfile, category_counts

__all__ = ["ServingWindow", "event_keys"]


class ServingWindow:
    """The running summary of the events of one model version in one event-time window."""

    def __init__(
        self, *, profile: ReferenceProfile, start_us: int, end_us: int, sample_size: int = 2000
    ) -> None:
        if sample_size < 1:
            raise ValueError(f"a window's sample needs room for at least one value, not {sample_size}")
        self.profile = profile
        self.sample_size = sample_size
        self.start_us = start_us
        self.end_us = end_us
        self.events = 0
        self.numeric = [name for name, feature in profile.features.items() if feature.kind == "numeric"]
        self.categorical = [
            name for name, feature in profile.features.items() if feature.kind == "categorical"
        ]
        widths = [len(profile.features[name].edges) for name in self.numeric]
        width = max(widths, default=0)
        features = len(self.numeric)
        self._edges = np.full((features, width), np.inf)
        for row, name in enumerate(self.numeric):
            edges = profile.features[name].edges
            self._edges[row, : len(edges)] = edges
        self._bins = [count + 1 for count in widths]
        self._counts = np.zeros((features, width + 1), dtype=np.int64)
        self._nulls = np.zeros(features, dtype=np.int64)
        # The bottom-k sample's buffer (kernels.window_update): twice the sample, the first |filled| in use.
        self._sample_keys = np.zeros((features, 2 * sample_size), dtype=np.uint64)
        self._sample = np.zeros((features, 2 * sample_size))
        self._filled = np.zeros(features, dtype=np.int64)
        self._bound_keys = np.zeros(features, dtype=np.uint64)
        self._bound_values = np.zeros(features)
        self._seen = np.zeros(features, dtype=np.int64)
        self._moments = np.zeros((features, 4))
        self._moments[:, 2], self._moments[:, 3] = np.inf, -np.inf
        # Data quality: the reference's range (none where it had no values), what fell below and above
        # it, and the values that were there but not numbers.
        self._ranges = np.array(
            [_range(profile.features[name].minimum, profile.features[name].maximum) for name in self.numeric],
            dtype=np.float64,
        ).reshape(features, 2)
        self._outside = np.zeros((features, 2), dtype=np.int64)
        self._type_errors = np.zeros(features, dtype=np.int64)
        self._category_type_errors = dict.fromkeys(self.categorical, 0)
        self._categories = {
            name: np.zeros(len(profile.features[name].vocabulary) + 1, dtype=np.int64)
            for name in self.categorical
        }
        self._category_nulls = dict.fromkeys(self.categorical, 0)

    def update(
        self, columns: Mapping[str, Sequence[Any] | NDArray[Any]], *, keys: NDArray[np.uint64] | None = None
    ) -> None:
        """Add a batch of events, given as feature columns of equal length (None or NaN for missing).

        ``keys`` are the events' sampling keys (``event_keys`` of their request ids); by default, those of
        their positions in the window, which makes the sample depend on the order of the events."""
        rows = len(next(iter(columns.values()), []))
        values = np.full((rows, len(self.numeric)), np.nan)
        errors = np.zeros(len(self.numeric), dtype=np.int64)
        for position, name in enumerate(self.numeric):
            if name in columns:
                values[:, position], errors[position] = _floats(columns[name])
        categories = {name: list(columns.get(name, [None] * rows)) for name in self.categorical}
        self._add(values, errors, categories, keys)

    def update_rows(
        self, rows: Sequence[Mapping[str, Any]], *, keys: NDArray[np.uint64] | None = None
    ) -> None:
        """``update`` with the events given as rows: each event's features by name, as served (a
        missing name is missing). The monitor's path: no column is built per feature in Python.

        >>> import pandas as pd
        >>> from monitors.drift.profile import ReferenceProfile
        >>> profile = ReferenceProfile.build(pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0]}), model="m",
        ...                                  version="1", bins=2)
        >>> window = ServingWindow(profile=profile, start_us=0, end_us=60_000_000)
        >>> window.update_rows([{"amount": 0.5}, {"amount": 10.0}, {}, {"amount": "n/a"}])
        >>> window.counts("amount").tolist(), window.null_count("amount"), window.type_errors("amount")
        ([1, 1], 1, 1)
        >>> window.outside("amount")  # below 1.0 and above 4.0, the reference's range
        (1, 1)
        """
        values, errors = _matrix(rows, self.numeric)
        categories = {name: [row.get(name) for row in rows] for name in self.categorical}
        self._add(values, errors, categories, keys)

    def _add(
        self,
        values: NDArray[np.float64],
        type_errors: NDArray[np.int64],
        categories: Mapping[str, list[Any]],
        keys: NDArray[np.uint64] | None,
    ) -> None:
        """``values`` has NaN where a value was missing or not a number, ``type_errors`` counts the latter
        per column (the kernel counts both as nulls at first)."""
        rows = len(values)
        if keys is None:
            keys = event_keys([str(position) for position in range(self.events, self.events + rows)])
        if self.numeric:
            kernels.window_update(
                values,
                keys,
                self._edges,
                self._counts,
                self._nulls,
                self._sample_keys,
                self._sample,
                self._filled,
                self._bound_keys,
                self._bound_values,
                self._seen,
                self._moments,
                self.sample_size,
                self._ranges,
                self._outside,
            )
            self._nulls -= type_errors
            self._type_errors += type_errors
        for name, column in categories.items():
            wrong = [value for value in column if isinstance(value, (dict, list))]
            if wrong:
                self._category_type_errors[name] += len(wrong)
                column = [None if isinstance(value, (dict, list)) else value for value in column]
                self._category_nulls[name] -= len(wrong)
            self._categories[name] += category_counts(column, self.profile.features[name].vocabulary)
            self._category_nulls[name] += sum(1 for value in column if value is None)
        self.events += rows

    def counts(self, name: str) -> NDArray[np.int64]:
        """Counts over the reference's bins (numeric) or vocabulary plus "other" (categorical)."""
        if name in self._categories:
            return self._categories[name].copy()
        row = self.numeric.index(name)
        return self._counts[row, : self._bins[row]].copy()

    def sample(self, name: str) -> NDArray[np.float64]:
        """The window's uniform sample of a numeric feature, sorted."""
        _, values = self._bottom_k(self.numeric.index(name))
        return np.sort(values)

    def _bottom_k(self, row: int) -> tuple[NDArray[np.uint64], NDArray[np.float64]]:
        """A numeric feature's sample as (keys, values), sorted by key then value: its buffer cut back."""
        kept = kernels.bottom_k(
            self._sample_keys[row], self._sample[row], abs(int(self._filled[row])), self.sample_size
        )
        self._bound(row, kept)
        return self._sample_keys[row, :kept], self._sample[row, :kept]

    def _bound(self, row: int, kept: int) -> None:
        """Note that the buffer's first ``kept`` pairs are its sample, sorted: a full one bounds the rest."""
        if kept == self.sample_size:
            self._filled[row] = -kept
            self._bound_keys[row] = self._sample_keys[row, kept - 1]
            self._bound_values[row] = self._sample[row, kept - 1]
        else:
            self._filled[row] = kept

    def null_count(self, name: str) -> int:
        """Events without a value for the feature (missing or null)."""
        if name in self._category_nulls:
            return self._category_nulls[name]
        return int(self._nulls[self.numeric.index(name)])

    def type_errors(self, name: str) -> int:
        """Events whose value was there but not of the feature's type (not a number; an object or list
        for a category): counted here, and neither as null nor in the bins."""
        if name in self._category_type_errors:
            return self._category_type_errors[name]
        return int(self._type_errors[self.numeric.index(name)])

    def outside(self, name: str) -> tuple[int, int]:
        """A numeric feature's values below and above the reference's minimum and maximum."""
        below, above = self._outside[self.numeric.index(name)]
        return int(below), int(above)

    def summary_table(self) -> pa.Table:
        """The window's sample and counts in long form: (feature, value, category, count) rows, one per
        sampled numeric value (count 1) and one per category. ``monitors.drift.report`` reads it back."""
        import pyarrow as pa

        features: list[str] = []
        values: list[float | None] = []
        categories: list[str | None] = []
        counts: list[int] = []
        for name in self.numeric:
            sample = self.sample(name).tolist()
            features += [name] * len(sample)
            values += sample
            categories += [None] * len(sample)
            counts += [1] * len(sample)
        for name in self.categorical:
            labels = [*self.profile.features[name].vocabulary, OTHER]
            features += [name] * len(labels)
            values += [None] * len(labels)
            categories += labels
            counts += self._categories[name].tolist()
        return pa.table(
            {
                "feature": pa.array(features, pa.string()),
                "value": pa.array(values, pa.float64()),
                "category": pa.array(categories, pa.string()),
                "count": pa.array(counts, pa.int64()),
            }
        )

    def mean(self, name: str) -> float:
        row = self.numeric.index(name)
        return float(self._moments[row, 0] / self._seen[row]) if self._seen[row] else float("nan")

    @classmethod
    def merged(cls, parts: Sequence[ServingWindow]) -> ServingWindow:
        """One window of the events of ``parts`` (windows of one profile and time span, and of disjoint
        events): counts add up, and the sample is the bottom-k of the union. Sums are added in the order
        of ``parts``, so the same parts in the same order give the same window, bit for bit."""
        first = parts[0]
        window = cls(
            profile=first.profile,
            start_us=first.start_us,
            end_us=first.end_us,
            sample_size=first.sample_size,
        )
        capacity = window.sample_size
        for part in parts:
            window.events += part.events
            window._counts += part._counts
            window._nulls += part._nulls
            window._outside += part._outside
            window._type_errors += part._type_errors
            window._seen += part._seen
            window._moments[:, :2] += part._moments[:, :2]
            window._moments[:, 2] = np.minimum(window._moments[:, 2], part._moments[:, 2])
            window._moments[:, 3] = np.maximum(window._moments[:, 3], part._moments[:, 3])
            for name in window.categorical:
                window._categories[name] += part._categories[name]
                window._category_nulls[name] += part._category_nulls[name]
                window._category_type_errors[name] += part._category_type_errors[name]
        for row in range(len(window.numeric)):
            samples = [part._bottom_k(row) for part in parts]
            keys = np.concatenate([keys for keys, _ in samples])
            values = np.concatenate([values for _, values in samples])
            order = np.lexsort((values, keys))[:capacity]
            window._sample_keys[row, : order.size] = keys[order]
            window._sample[row, : order.size] = values[order]
            window._bound(row, order.size)
        return window

    def to_bytes(self) -> bytes:
        """The window's state as an npz file (read back with ``from_bytes`` and the same profile); the
        same events give the same bytes, however they were batched."""
        buffer = io.BytesIO()
        categories: dict[str, Any] = {f"category:{name}": counts for name, counts in self._categories.items()}
        for row in range(len(self.numeric)):
            self._bottom_k(row)
        np.savez(
            buffer,
            header=np.array([self.start_us, self.end_us, self.events], dtype=np.int64),
            counts=self._counts,
            nulls=self._nulls,
            sample_keys=self._sample_keys[:, : self.sample_size],
            sample=self._sample[:, : self.sample_size],
            filled=np.abs(self._filled),
            seen=self._seen,
            moments=self._moments,
            category_nulls=np.array([self._category_nulls[name] for name in self.categorical], np.int64),
            outside=self._outside,
            type_errors=self._type_errors,
            category_type_errors=np.array(
                [self._category_type_errors[name] for name in self.categorical], np.int64
            ),
            **categories,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, profile: ReferenceProfile) -> ServingWindow:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            start_us, end_us, events = (int(value) for value in stored["header"])
            sample_keys, sample = stored["sample_keys"], stored["sample"]
            size = sample.shape[1]
            window = cls(profile=profile, start_us=start_us, end_us=end_us, sample_size=size)
            window.events = events
            window._counts = stored["counts"]
            window._nulls = stored["nulls"]
            window._sample_keys[:, :size] = sample_keys
            window._sample[:, :size] = sample
            window._seen = stored["seen"]
            # Parts saved before the buffer kept a heap of min(seen, size) pairs: a sample all the same.
            filled = stored["filled"] if "filled" in stored.files else np.minimum(window._seen, size)
            window._filled = np.asarray(filled, dtype=np.int64).copy()
            window._moments = stored["moments"]
            if "outside" in stored.files:  # parts saved before data quality have none: zeros
                window._outside = stored["outside"]
                window._type_errors = stored["type_errors"]
            for position, name in enumerate(window.categorical):
                window._categories[name] = stored[f"category:{name}"]
                window._category_nulls[name] = int(stored["category_nulls"][position])
                if "category_type_errors" in stored.files:
                    window._category_type_errors[name] = int(stored["category_type_errors"][position])
        return window


def event_keys(request_ids: Sequence[str]) -> NDArray[np.uint64]:
    """64-bit sampling keys of events: SipHash of their request ids with pandas' fixed key, so the same
    id has the same key in every process and release.

    >>> event_keys(["a", "a", "b"]).tolist() == [*event_keys(["a"]).tolist() * 2, *event_keys(["b"]).tolist()]
    True
    """
    from pandas.util import hash_array

    keys: NDArray[np.uint64] = hash_array(np.asarray(request_ids, dtype=object), categorize=False)
    return keys


def _floats(column: Sequence[Any] | NDArray[Any]) -> tuple[NDArray[np.float64], int]:
    """A column as floats (NaN where missing or not a number), and how many were not a number."""
    if isinstance(column, np.ndarray):
        return column.astype(np.float64, copy=False), 0
    try:
        return np.asarray([np.nan if value is None else value for value in column], dtype=np.float64), 0
    except (TypeError, ValueError):
        floats = np.asarray([_float(value) for value in column], dtype=np.float64)
        return floats, int(np.isnan(floats).sum()) - sum(_missing(value) for value in column)


def _matrix(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The rows' values of ``names`` as a (rows, names) float matrix, NaN where missing, None or not a
    number, and per name how many were not a number. One C-level pick and conversion per row while every
    row has every name and only numbers; else per value."""
    none = np.zeros(len(names), dtype=np.int64)
    if not names:
        return np.empty((len(rows), 0)), none
    pick = itemgetter(*names)
    try:
        picked = [pick(row) for row in rows]
        matrix = np.array(picked if len(names) > 1 else [(value,) for value in picked], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raw = [[row.get(name) for name in names] for row in rows]
        matrix = np.array([[_float(value) for value in values] for values in raw], dtype=np.float64)
        missing = np.array([[_missing(value) for value in values] for values in raw], dtype=bool)
        errors = np.isnan(matrix).sum(axis=0) - missing.reshape(len(rows), len(names)).sum(axis=0)
        return matrix.reshape(len(rows), len(names)), errors.astype(np.int64)
    return matrix.reshape(len(rows), len(names)), none


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _range(minimum: float, maximum: float) -> tuple[float, float]:
    """The reference's range, or none at all (every value inside) where it had no values."""
    if math.isnan(minimum) or math.isnan(maximum):
        return -math.inf, math.inf
    return minimum, maximum


def _float(value: Any) -> float:
    """A served value as a number: None, and anything that is not a number, is missing (NaN)."""
    if value is None or isinstance(value, (dict, list)):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan
