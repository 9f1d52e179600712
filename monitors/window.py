"""One serving window of one model version: what the monitor keeps while events arrive.

Memory is O(features x (bins + sample size)), whatever the number of events: numeric features keep
a count per reference bin, a bounded uniform sample and their moments; categorical features keep a
count per vocabulary entry. Each value costs O(1) (a binary search over at most ``bins`` edges).

>>> import pandas as pd
>>> from monitors.profile import ReferenceProfile
>>> training = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0]})
>>> profile = ReferenceProfile.build(training, model="m", version="1", bins=2)
>>> window = ServingWindow(profile=profile, start_us=0, end_us=60_000_000)
>>> window.update({"amount": [0.5, 10.0, None]})
>>> window.counts("amount").tolist(), window.null_count("amount"), window.events
([1, 1], 1, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pyarrow as pa

from monitors import kernels
from monitors.profile import OTHER, ReferenceProfile, category_counts

__all__ = ["ServingWindow"]


class ServingWindow:
    """The running summary of the events of one model version in one event-time window."""

    def __init__(
        self, *, profile: ReferenceProfile, start_us: int, end_us: int, sample_size: int = 2000
    ) -> None:
        self.profile = profile
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
        self._reservoir = np.zeros((features, sample_size))
        self._seen = np.zeros(features, dtype=np.int64)
        self._moments = np.zeros((features, 4))
        self._moments[:, 2], self._moments[:, 3] = np.inf, -np.inf
        self._categories = {
            name: np.zeros(len(profile.features[name].vocabulary) + 1, dtype=np.int64)
            for name in self.categorical
        }
        self._category_nulls = dict.fromkeys(self.categorical, 0)

    def update(self, columns: Mapping[str, Sequence[Any] | NDArray[Any]]) -> None:
        """Add a batch of events, given as feature columns of equal length (None or NaN for missing)."""
        rows = len(next(iter(columns.values()), []))
        if self.numeric:
            values = np.full((rows, len(self.numeric)), np.nan)
            for position, name in enumerate(self.numeric):
                if name in columns:
                    values[:, position] = _floats(columns[name])
            kernels.window_update(
                values, self._edges, self._counts, self._nulls, self._reservoir, self._seen, self._moments
            )
        for name in self.categorical:
            column = list(columns.get(name, [None] * rows))
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
        row = self.numeric.index(name)
        return np.sort(self._reservoir[row, : min(int(self._seen[row]), self._reservoir.shape[1])])

    def null_count(self, name: str) -> int:
        if name in self._category_nulls:
            return self._category_nulls[name]
        return int(self._nulls[self.numeric.index(name)])

    def summary_table(self) -> pa.Table:
        """The window's sample and counts in long form: (feature, value, category, count) rows, one per
        sampled numeric value (count 1) and one per category. ``monitors.report`` reads it back."""
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


def _floats(column: Sequence[Any] | NDArray[Any]) -> NDArray[np.float64]:
    if isinstance(column, np.ndarray):
        return column.astype(np.float64, copy=False)
    return np.asarray([np.nan if value is None else value for value in column], dtype=np.float64)
