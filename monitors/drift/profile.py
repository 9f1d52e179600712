"""Reference profiles: what a model's training data looked like, feature by feature, saved per model version.

A numeric feature keeps its quantile bin edges and counts, summary statistics, its null count and a
bounded uniform sample, sorted, for KS and Wasserstein. A categorical feature keeps its vocabulary
(the most frequent values; the rest share one "other" bucket) and the counts.

The sample bounds the cost of a sample test whatever the size of the training set. A uniform sample
of ``k`` values has an ECDF within ``sqrt(ln(2/alpha) / (2k))`` of the full data's everywhere with
probability ``1 - alpha`` (the DKW inequality): 0.0136 at k = 10,000 and alpha = 0.05, so a KS
statistic computed from it is off by at most that much.

>>> import pandas as pd
>>> profile = ReferenceProfile.build(
...     pd.DataFrame({"amount": [1.0, 2.0, 3.0, None], "country": ["DE", "FR", "DE", "NL"]}),
...     model="fraud", version="1", bins=2,
... )
>>> profile.features["amount"].null_count, profile.features["country"].vocabulary
(1, ('DE', 'FR', 'NL'))
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from features.config import OfflineStoreConfig
from monitors.drift.metrics import bin_counts, quantile_edges
from offline_store.storage import Location

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["FeatureProfile", "ProfileError", "ReferenceProfile", "category_counts", "saved_profiles"]

OTHER = "__other__"
_PREDICTIONS, _LABELS = "__predictions__", "__labels__"
"""The reference outcomes' names in ``samples.npz`` (a feature's name cannot start with two underscores
there: Feast refuses such names)."""


class ProfileError(ValueError):
    """A training set that cannot be profiled, or a profile that cannot be found; the message says why."""


@dataclass(frozen=True, kw_only=True)
class FeatureProfile:
    """One feature of the reference."""

    name: str
    kind: Literal["numeric", "categorical"]
    count: int
    """Non-null values."""
    null_count: int
    counts: NDArray[np.int64]
    """Per bin (numeric: ``len(edges) + 1`` bins) or per category (vocabulary order, then "other")."""
    edges: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    vocabulary: tuple[str, ...] = ()
    sample: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    """A uniform sample of the non-null values, sorted (numeric only)."""
    mean: float = float("nan")
    std: float = float("nan")
    minimum: float = float("nan")
    maximum: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "null_count": self.null_count,
            "counts": self.counts.tolist(),
            "edges": self.edges.tolist(),
            "vocabulary": list(self.vocabulary),
            "mean": self.mean,
            "std": self.std,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }


@dataclass(frozen=True, kw_only=True)
class ReferenceProfile:
    """The reference of one model version: a profile per feature."""

    model: str
    version: str
    features: dict[str, FeatureProfile]
    rows: int
    predictions: NDArray[np.float64] | None = None
    """The model's outputs on its validation set (for a binary classifier, the probability of the
    positive class), at most ``sample_size`` of them: the reference of its performance
    (``monitors.performance``) and of the estimate before labels come. None when not given."""
    labels: NDArray[np.float64] | None = None
    """The true values of the same rows."""

    def padded_samples(self, names: list[str]) -> NDArray[np.float64]:
        """The samples of these numeric features as rows ending with +inf (built once, then cached)."""
        key = tuple(names)
        cached = self._padded.get(key)
        if cached is None:
            samples = [self.features[name].sample for name in names]
            cached = np.full((len(samples), len(samples[0]) + 1), np.inf)
            for row, sample in enumerate(samples):
                cached[row, :-1] = sample
            self._padded[key] = cached
        return cached

    @property
    def _padded(self) -> dict[tuple[str, ...], NDArray[np.float64]]:
        cache: dict[tuple[str, ...], NDArray[np.float64]] = self.__dict__.setdefault("_padded_cache", {})
        return cache

    @classmethod
    def build(
        cls,
        training: pd.DataFrame | pa.Table | str | Path,
        *,
        model: str,
        version: str,
        features: list[str] | None = None,
        bins: int = 20,
        sample_size: int = 10_000,
        vocabulary_size: int = 50,
        seed: int = 0,
        prediction_column: str | None = None,
        label_column: str | None = None,
    ) -> ReferenceProfile:
        """Profile a training set: a DataFrame, an Arrow table (``get_historical_features(...).to_arrow()``)
        or a Parquet path. ``features`` defaults to every numeric, boolean and string column but the
        prediction and label columns. With ``prediction_column`` and ``label_column`` (a validation set's
        outputs and true values), the profile also keeps the model's reference performance."""
        table = _as_arrow(training)
        rng = np.random.default_rng(seed)
        outcome = [name for name in (prediction_column, label_column) if name is not None]
        for name in outcome:
            if name not in table.column_names:
                raise ProfileError(
                    f"the training set has no column {name!r}; it has {', '.join(table.column_names)}"
                )
        if (prediction_column is None) != (label_column is None):
            raise ProfileError("give both the prediction column and the label column, or neither")
        names = features or [
            name
            for name in table.column_names
            if _kind(table.schema.field(name).type) and name not in outcome
        ]
        profiles = {}
        for name in names:
            if name not in table.column_names:
                raise ProfileError(
                    f"the training set has no column {name!r}; it has {', '.join(table.column_names)}"
                )
            kind = _kind(table.schema.field(name).type)
            if kind is None:
                raise ProfileError(
                    f"column {name!r} is {table.schema.field(name).type}: neither numeric nor categorical"
                )
            column = table.column(name)
            if kind == "numeric":
                profiles[name] = _numeric(name, column, bins=bins, sample_size=sample_size, rng=rng)
            else:
                profiles[name] = _categorical(name, column, vocabulary_size=vocabulary_size)
        predictions = labels = None
        if prediction_column is not None and label_column is not None:
            predictions, labels = _outcomes(
                table.column(prediction_column), table.column(label_column), sample_size=sample_size, rng=rng
            )
        return cls(
            model=model,
            version=version,
            features=profiles,
            rows=table.num_rows,
            predictions=predictions,
            labels=labels,
        )

    def save(self, root: Path | str, *, storage: OfflineStoreConfig | None = None) -> str:
        """Write ``<root>/<model>/<version>/`` (profile.json and samples.npz), on a local disk or at an
        object-storage URI; returns the folder."""
        folder = Location.parse(str(root), storage).child(self.model, self.version)
        document = {
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "features": [profile.to_json() for profile in self.features.values()],
        }
        samples = {
            name: profile.sample for name, profile in self.features.items() if profile.kind == "numeric"
        }
        if self.predictions is not None and self.labels is not None:
            samples |= {_PREDICTIONS: self.predictions, _LABELS: self.labels}
        archive = io.BytesIO()
        np.savez(archive, **samples)  # type: ignore[arg-type]
        # The samples first: a profile.json is only ever next to its samples.
        folder.child("samples.npz").write_bytes(archive.getvalue())
        folder.child("profile.json").write_bytes(json.dumps(document, indent=1).encode())
        return folder.uri

    @classmethod
    def load(
        cls, root: Path | str, *, model: str, version: str, storage: OfflineStoreConfig | None = None
    ) -> ReferenceProfile:
        base = Location.parse(str(root), storage)
        folder = base.child(model, version)
        try:
            document = json.loads(folder.child("profile.json").read_bytes())
        except FileNotFoundError:
            models = base.child(model)
            known = sorted({file.path[len(models.path) + 1 :].split("/")[0] for file in models.files()})
            raise ProfileError(
                f"no reference profile for model {model!r} version {version!r} under {base.uri}"
                + (
                    f"; versions there: {', '.join(known)}"
                    if known
                    else "; build one with ReferenceProfile.build"
                )
            ) from None
        samples = np.load(io.BytesIO(folder.child("samples.npz").read_bytes()), allow_pickle=False)
        features = {}
        for item in document["features"]:
            features[item["name"]] = FeatureProfile(
                name=item["name"],
                kind=item["kind"],
                count=item["count"],
                null_count=item["null_count"],
                counts=np.asarray(item["counts"], dtype=np.int64),
                edges=np.asarray(item["edges"], dtype=np.float64),
                vocabulary=tuple(item["vocabulary"]),
                sample=samples[item["name"]] if item["kind"] == "numeric" else np.empty(0),
                mean=item["mean"],
                std=item["std"],
                minimum=item["minimum"],
                maximum=item["maximum"],
            )
        outcomes = _PREDICTIONS in samples.files and _LABELS in samples.files
        return cls(
            model=document["model"],
            version=document["version"],
            features=features,
            rows=document["rows"],
            predictions=samples[_PREDICTIONS] if outcomes else None,
            labels=samples[_LABELS] if outcomes else None,
        )


def saved_profiles(root: Path | str, *, storage: OfflineStoreConfig | None = None) -> list[tuple[str, str]]:
    """(model, version) of every profile saved under ``root``."""
    base = Location.parse(str(root), storage)
    found = set()
    for file in base.files():
        parts = file.path[len(base.path) + 1 :].split("/")
        if len(parts) == 3 and parts[2] == "profile.json":
            found.add((parts[0], parts[1]))
    return sorted(found)


def category_counts(values: list[Any], vocabulary: tuple[str, ...]) -> NDArray[np.int64]:
    """Counts per vocabulary entry, then the "other" bucket; None is not counted."""
    index = {value: position for position, value in enumerate(vocabulary)}
    counts = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    other = len(vocabulary)
    for value in values:
        if value is not None:
            counts[index.get(str(value), other)] += 1
    return counts


def _as_arrow(training: Any) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(training, (str, Path)):
        try:
            return pq.read_table(training)
        except (pa.ArrowInvalid, OSError) as error:
            raise ProfileError(f"cannot read the training set {training} as Parquet: {error}") from None
    if isinstance(training, pa.Table):
        return training
    if hasattr(training, "to_arrow"):
        return training.to_arrow()
    return pa.Table.from_pandas(training, preserve_index=False)


def _outcomes(
    predictions: Any, labels: Any, *, sample_size: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The validation rows' outputs and true values as numbers (booleans and 0/1 classes alike), the rows
    where either is missing left out, at most ``sample_size`` of them."""
    try:
        outputs = np.asarray(predictions.to_numpy(zero_copy_only=False), dtype=np.float64)
        truth = np.asarray(labels.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ProfileError(f"the prediction and label columns must be numbers or booleans: {error}") from None
    present = ~np.isnan(outputs) & ~np.isnan(truth)
    outputs, truth = outputs[present], truth[present]
    if len(outputs) > sample_size:
        chosen = np.sort(rng.choice(len(outputs), sample_size, replace=False))
        outputs, truth = outputs[chosen], truth[chosen]
    return outputs, truth


def _kind(dtype: Any) -> Literal["numeric", "categorical"] | None:
    import pyarrow as pa

    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        return "numeric"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_boolean(dtype):
        return "categorical"
    if pa.types.is_dictionary(dtype):
        return "categorical"
    return None


def _numeric(
    name: str, column: Any, *, bins: int, sample_size: int, rng: np.random.Generator
) -> FeatureProfile:
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    present = values[~np.isnan(values)]
    edges = quantile_edges(present, bins)
    sample = present if len(present) <= sample_size else rng.choice(present, sample_size, replace=False)
    return FeatureProfile(
        name=name,
        kind="numeric",
        count=len(present),
        null_count=len(values) - len(present),
        counts=bin_counts(present, edges),
        edges=edges,
        sample=np.sort(sample),
        mean=float(present.mean()) if len(present) else float("nan"),
        std=float(present.std()) if len(present) else float("nan"),
        minimum=float(present.min()) if len(present) else float("nan"),
        maximum=float(present.max()) if len(present) else float("nan"),
    )


def _categorical(name: str, column: Any, *, vocabulary_size: int) -> FeatureProfile:
    values = [None if value is None else str(value) for value in column.to_pylist()]
    frequencies: dict[str, int] = {}
    for value in values:
        if value is not None:
            frequencies[value] = frequencies.get(value, 0) + 1
    ranked = sorted(frequencies, key=lambda value: (-frequencies[value], value))[:vocabulary_size]
    vocabulary = tuple(sorted(ranked))
    present = sum(frequencies.values())
    return FeatureProfile(
        name=name,
        kind="categorical",
        count=present,
        null_count=len(values) - present,
        counts=category_counts(values, vocabulary),
        vocabulary=vocabulary,
    )
