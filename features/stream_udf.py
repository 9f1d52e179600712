"""A stream feature view's ``udf``: how the worker calls it on decoded events, and the checks at ``plan``.

The function gets a batch of events, one row per event: each declared message field (join keys and
the event time included) as a column. In pandas mode that is a DataFrame (the event time as
``datetime64[us, UTC]``, an integer column with a null as float64 NaNs, as Arrow makes it); in python
mode a dict of lists (None for a null, the event time as an aware datetime). It returns the same
rows, in the same order, with the columns the view reads: its aggregations' inputs (a plain view:
its features), which may be new columns or replace message fields.

It must be **row-wise and deterministic**: a row's output depends on that row alone, and the same
row always gives the same output. Replays after a restart and results that do not depend on how
events were batched rest on it, so ``plan`` runs the function on sample events whole, row by row
and twice, and refuses it when the outputs differ.

>>> udf = StreamUdf(spec=TransformSpec(mode="python", name="cents", output_types={"cents": "INT64"},
...     source="def cents(rows):\\n    return {'cents': [round(a * 100) for a in rows['amount']]}\\n"))
>>> outputs, failures = udf.apply({"amount": np.array([1.5, 2.25])}, rows=2)
>>> outputs.floats["cents"].tolist(), outputs.integers["cents"].tolist(), failures
([150.0, 225.0], [150, 225], [])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from features.spec import TransformSpec
from features.udf import UdfError, load_udf

__all__ = ["StreamUdf", "UdfOutputs", "check_stream_udf", "sample_columns"]

_INTEGERS = ("INT64", "INT32")
_FLOATS = ("FLOAT64", "FLOAT32")
_MODES = ("python", "pandas")
_SAMPLE_ROWS = 8


@dataclass(frozen=True, kw_only=True)
class UdfOutputs:
    """The function's output columns for the rows that succeeded, as the decoder types its columns:
    float64 with NaN for a null (numbers and booleans), objects for strings, and the exact int64 of
    each integer column (0 for a null)."""

    rows: NDArray[np.int64]
    """Positions of the rows that succeeded, in the input batch."""
    floats: dict[str, NDArray[Any]]
    integers: dict[str, NDArray[np.int64]]


class StreamUdf:
    """A view's udf, loaded from its registered source, ready to run on batches of events."""

    def __init__(self, *, spec: TransformSpec, function: Callable[..., Any] | None = None) -> None:
        """``function`` is the one ``spec.source`` defines, when the caller has loaded it already."""
        self.spec = spec
        self.function = function or load_udf(spec.source, name=spec.name)

    def apply(
        self, columns: Mapping[str, NDArray[Any]], *, rows: int
    ) -> tuple[UdfOutputs, list[tuple[int, str]]]:
        """The outputs of every row it succeeds on, and (row, error) for each it fails on. When the
        batch fails as a whole it is retried row by row, so one bad event fails alone."""
        try:
            return self._outputs(self._call(columns), rows, np.arange(rows, dtype=np.int64)), []
        except Exception:  # noqa: S110 - each event is tried on its own next, and its error kept
            pass
        failures: list[tuple[int, str]] = []
        parts: list[UdfOutputs] = []
        for row in range(rows):
            single = {name: values[row : row + 1] for name, values in columns.items()}
            try:
                parts.append(self._outputs(self._call(single), 1, np.array([row], dtype=np.int64)))
            except Exception as error:
                failures.append((row, f"{type(error).__name__}: {error}"))
        return _concatenate(parts, self.spec.output_types), failures

    def _call(self, columns: Mapping[str, NDArray[Any]]) -> Any:
        if self.spec.mode == "pandas":
            import pandas as pd

            frame = pd.DataFrame(
                {
                    name: pd.to_datetime(values, utc=True) if values.dtype.kind == "M" else values
                    for name, values in columns.items()
                },
                copy=False,
            )
            output = self.function(frame)
            return {name: output[name].to_numpy() for name in output.columns}
        return self.function({name: _python_values(values) for name, values in columns.items()})

    def _outputs(self, output: Any, rows: int, positions: NDArray[np.int64]) -> UdfOutputs:
        if not isinstance(output, Mapping):
            raise TypeError(f"the udf returned {type(output).__name__}, not a dict of columns")
        floats: dict[str, NDArray[Any]] = {}
        integers: dict[str, NDArray[np.int64]] = {}
        for name, dtype in self.spec.output_types.items():
            if name not in output:
                raise KeyError(f"the udf's output has no column {name!r}")
            values = np.asarray(output[name], dtype=object if dtype == "STRING" else None)
            if values.shape != (rows,):
                raise ValueError(
                    f"the udf returned {values.shape[0] if values.ndim else 0} values of {name!r} "
                    f"for {rows} events"
                )
            floats[name], exact = _typed(name, values, dtype)
            if exact is not None:
                integers[name] = exact
        return UdfOutputs(rows=positions, floats=floats, integers=integers)


def _typed(name: str, values: NDArray[Any], dtype: str) -> tuple[NDArray[Any], NDArray[np.int64] | None]:
    """A column in the decoder's form, or an error naming what the udf returned."""
    if dtype == "STRING":
        bad = [value for value in values if value is not None and not isinstance(value, str)]
        if bad:
            raise TypeError(f"{name!r} must be strings; the udf returned {bad[0]!r}")
        return values, None
    if values.dtype == object:
        nulls = np.array([value is None or value != value for value in values], dtype=bool)
        filled = np.where(nulls, 0, values)
    else:
        nulls = np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), dtype=bool)
        filled = np.where(nulls, 0, values)
    if dtype in _INTEGERS:
        exact = np.asarray(filled.tolist(), dtype=np.int64)  # raises on a non-integer value
        if (exact != np.asarray(filled, dtype=np.float64)).any() and values.dtype.kind == "f":
            raise ValueError(f"{name!r} is {dtype}, but the udf returned a fraction")
        return np.where(nulls, np.nan, exact.astype(np.float64)), exact
    floats = np.asarray(filled, dtype=np.float64)
    floats[nulls] = np.nan
    return floats, None


def _python_values(values: NDArray[Any]) -> list[Any]:
    if values.dtype.kind == "M":
        # Whole seconds, then the microseconds: a float of seconds can miss the last microsecond.
        return [
            datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
            for micros in values.astype("datetime64[us]").astype(np.int64).tolist()
        ]
    if values.dtype.kind == "f":
        return [None if value != value else value for value in values.tolist()]
    return list(values.tolist())


def _concatenate(parts: list[UdfOutputs], types: Mapping[str, str]) -> UdfOutputs:
    if not parts:
        return UdfOutputs(
            rows=np.empty(0, dtype=np.int64),
            floats={
                name: np.empty(0, dtype=object if dtype == "STRING" else np.float64)
                for name, dtype in types.items()
            },
            integers={
                name: np.empty(0, dtype=np.int64) for name, dtype in types.items() if dtype in _INTEGERS
            },
        )
    return UdfOutputs(
        rows=np.concatenate([part.rows for part in parts]),
        floats={name: np.concatenate([part.floats[name] for part in parts]) for name in parts[0].floats},
        integers={
            name: np.concatenate([part.integers[name] for part in parts]) for name in parts[0].integers
        },
    )


# --- checks at plan -------------------------------------------------------------------------------------


def sample_columns(schema: Mapping[str, str], *, rows: int, seed: int = 0) -> dict[str, NDArray[Any]]:
    """Random events of a message schema, in the form the worker gives the udf."""
    rng = np.random.default_rng(seed)
    columns: dict[str, NDArray[Any]] = {}
    for name, dtype in schema.items():
        if dtype in _INTEGERS:
            columns[name] = rng.integers(1, 1000, rows).astype(np.int64)
        elif dtype in _FLOATS:
            columns[name] = np.round(rng.uniform(1, 1000, rows), 2)
        elif dtype == "BOOL":
            columns[name] = rng.integers(0, 2, rows).astype(bool)
        elif dtype == "UNIX_TIMESTAMP":
            columns[name] = (1_767_225_600_000_000 + rng.integers(0, 86_400, rows) * 1_000_000).astype(
                "datetime64[us]"
            )
        else:
            columns[name] = np.asarray(
                [f"{name}-{value}" for value in rng.integers(0, 5, rows)], dtype=object
            )
    return columns


def check_stream_udf(
    view: Any, *, message_schema: Mapping[str, str], needed: Mapping[str, str | None]
) -> tuple[TransformSpec | None, list[str]]:
    """The view's transform, or what is wrong with it (``field: message`` lines). ``needed`` names the
    columns the view reads, each with its type, or None to take the type the function returns. The
    function may fail on some sample events (as on bad data), not on all."""
    mode = str(view.mode)
    if mode not in _MODES:
        return None, [
            f"mode: sluice runs a python or pandas udf in its worker, not {mode!r}; use mode='pandas'"
        ]
    name, source = getattr(getattr(view, "udf", None), "__name__", ""), view.udf_string or ""
    try:
        function = load_udf(source, name=name)
    except UdfError as problem:
        return None, [f"udf: {problem}"]
    probe = StreamUdf(
        spec=TransformSpec(mode=mode, name=name, source=source, output_types={}), function=function
    )
    sample = sample_columns(message_schema, rows=_SAMPLE_ROWS)
    succeeded, error = _succeeding_rows(probe, sample)
    if not len(succeeded):
        if isinstance(error, NameError):
            return None, [
                f"udf: {error}: sluice runs the function from its source alone, "
                "so import what it uses inside its body"
            ]
        return None, [f"udf: fails on every sample event ({type(error).__name__}: {error})"]
    sample = {column: values[succeeded] for column, values in sample.items()}
    rows = len(succeeded)
    try:
        whole = probe._call(sample)
    except Exception as failure:
        return None, [
            f"udf: is not row-wise: it fails on events together that it takes one by one ({failure})"
        ]
    missing = [column for column in needed if column not in whole]
    if missing:
        return None, [
            f"udf: its output has no column {', '.join(map(repr, missing))}, which the view reads; return it"
        ]
    output_types = {
        column: dtype or _inferred_type(column, whole[column], message_schema)
        for column, dtype in needed.items()
    }
    checked = StreamUdf(
        spec=TransformSpec(mode=mode, name=name, source=source, output_types=output_types), function=function
    )
    positions = np.arange(rows, dtype=np.int64)
    try:
        first = checked._outputs(whole, rows, positions)
        again = checked._outputs(checked._call(sample), rows, positions)
        one_by_one = [
            checked._outputs(
                checked._call({key: values[row : row + 1] for key, values in sample.items()}),
                1,
                positions[row : row + 1],
            )
            for row in range(rows)
        ]
    except Exception as failure:
        return None, [f"udf: returns what the view cannot read ({type(failure).__name__}: {failure})"]
    if not _equal(first, again):
        return None, [
            "udf: is not deterministic (two calls on the same events differ); results could not be replayed"
        ]
    if not _equal(first, _concatenate(one_by_one, output_types)):
        return None, [
            "udf: is not row-wise (an event's output depends on the other events of its batch); "
            "results would depend on how events are batched, so compute each event's output from it alone"
        ]
    return checked.spec, []


def _succeeding_rows(
    udf: StreamUdf, sample: Mapping[str, NDArray[Any]]
) -> tuple[NDArray[np.int64], Exception | None]:
    """The sample rows the function does not fail on, and its first error."""
    rows = len(next(iter(sample.values())))
    try:
        udf._call(sample)
        return np.arange(rows, dtype=np.int64), None
    except Exception as error:
        first: Exception = error
    succeeded = []
    for row in range(rows):
        try:
            udf._call({key: values[row : row + 1] for key, values in sample.items()})
            succeeded.append(row)
        except Exception:  # noqa: S112 - the rows it fails on are left out; the first error is kept
            continue
    return np.asarray(succeeded, dtype=np.int64), first


def _inferred_type(column: str, values: Any, message_schema: Mapping[str, str]) -> str:
    array = np.asarray(values)
    declared = message_schema.get(column)
    if array.dtype.kind in "iu":
        return declared if declared in _INTEGERS else "INT64"
    if array.dtype.kind == "f":
        return declared if declared in _FLOATS else "FLOAT64"
    if array.dtype.kind == "b":
        return "BOOL"
    kinds = {type(value) for value in array.tolist() if value is not None}
    if kinds <= {int}:
        return declared if declared in _INTEGERS else "INT64"
    if kinds <= {int, float}:
        return declared if declared in _FLOATS else "FLOAT64"
    if kinds <= {bool}:
        return "BOOL"
    return "STRING"


def _equal(left: UdfOutputs, right: UdfOutputs) -> bool:
    for name, values in left.floats.items():
        other = right.floats[name]
        if values.dtype == object:
            if values.tolist() != other.tolist():
                return False
        elif not np.array_equal(values, other, equal_nan=True):
            return False
    return all(np.array_equal(values, right.integers[name]) for name, values in left.integers.items())
