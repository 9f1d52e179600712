"""On-demand feature views at read time: fetch their inputs in the same round trip, then run them.

A read that names an on-demand view fetches the features of the view's sources with the rest of the
read (one Redis round trip still), takes its request data from the entity rows, and calls the
registered function, as Feast's ``get_online_features`` does:

- its input holds the join keys, the request data, and each source feature under its own name and
  as ``<feature_view>__<feature>``; a python-mode function gets a dict of lists (one value per input
  with ``singleton=True``), a pandas-mode one a DataFrame typed as Feast's is;
- its outputs are cast to the declared types; a null or NaN comes back as None.

Reads that name no on-demand view never come here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from online_store.catalog import Catalog, OnDemandView
from online_store.reads import (
    NULL_VALUE,
    PRESENT,
    FeatureVectors,
    ReadPlan,
    UnknownFeatureError,
    close_matches,
    feature_references,
)

__all__ = ["OnDemandError", "OnDemandPlan", "StoredOnDemand", "Transform", "names_on_demand"]


def names_on_demand(catalog: Catalog, features: Sequence[str] | None, feature_service: str | None) -> bool:
    """Whether a read names any on-demand view (decided once per plan, not per read)."""
    if not catalog.on_demand:
        return False
    references = feature_references(catalog, features, feature_service)
    return any(reference.partition(":")[0] in catalog.on_demand for reference in references)


class Transform:
    """One on-demand view's function, ready to run on a read's columns."""

    def __init__(self, *, view: OnDemandView) -> None:
        from features.udf import load_udf

        self.view = view
        self.function: Callable[..., Any] = load_udf(view.udf_source, name=view.udf_name)
        self._casts = {name: _cast(dtype) for name, dtype in view.features.items()}

    def inputs(
        self, columns: Mapping[str, list[Any]], fetched: Mapping[str, list[Any]]
    ) -> dict[str, list[Any]]:
        """The function's input columns: join keys and request data, then source features twice named."""
        inputs = dict(columns)
        for view_name, names in self.view.sources:
            for name in names:
                values = fetched[f"{view_name}__{name}"]
                inputs[name] = values
                inputs[f"{view_name}__{name}"] = values
        return inputs

    def run(self, inputs: dict[str, list[Any]], rows: int, wanted: Sequence[str]) -> dict[str, list[Any]]:
        """The wanted output columns, cast to their declared types."""
        if self.view.mode == "pandas":
            frame = frame_like_arrow(inputs)
            if frame is None:
                import pyarrow as pa

                table = pa.table({name: pa.array(values) for name, values in inputs.items()})
                return self.run_table(table, wanted)
            return self._finish(lambda: self._frame(frame), rows, wanted)
        return self._finish(lambda: self._python(inputs, rows, wanted), rows, wanted)

    def run_table(self, table: Any, wanted: Sequence[str]) -> dict[str, list[Any]]:
        """``run`` over an Arrow table of inputs (a training set's)."""
        rows = table.num_rows
        if self.view.mode == "pandas":
            return self._finish(lambda: self._frame(table.to_pandas()), rows, wanted)
        return self._finish(lambda: self._python(table.to_pydict(), rows, wanted), rows, wanted)

    def _frame(self, frame: Any) -> dict[str, Any]:
        output = self.function(frame)
        return {name: output[name] for name in output.columns}

    def _python(self, inputs: dict[str, list[Any]], rows: int, wanted: Sequence[str]) -> Any:
        if not self.view.singleton:
            return self.function(inputs)
        output: dict[str, list[Any]] = {name: [] for name in wanted}
        for row in range(rows):
            result = self.function({name: values[row] for name, values in inputs.items()})
            for name in wanted:
                output[name].append(result[name])
        return output

    def _finish(self, call: Callable[[], Any], rows: int, wanted: Sequence[str]) -> dict[str, list[Any]]:
        try:
            output = call()
        except Exception as error:
            raise OnDemandError(
                f"on-demand view {self.view.name!r} failed on this read: {type(error).__name__}: {error}"
            ) from error
        columns = {}
        for name in wanted:
            if name not in output:
                raise OnDemandError(f"on-demand view {self.view.name!r} returned no feature {name!r}")
            values = output[name]
            values = values.tolist() if hasattr(values, "tolist") else list(values)
            if len(values) != rows:
                raise OnDemandError(
                    f"on-demand view {self.view.name!r} returned {len(values)} values of {name!r} "
                    f"for {rows} rows"
                )
            columns[name] = [self._casts[name](value) for value in values]
        return columns


class OnDemandError(ValueError):
    """An on-demand view's function failed on a read's input, or returned other than its features."""


class OnDemandPlan:
    """A read plan for features that include on-demand views: their sources are fetched full-named."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
    ) -> None:
        references = feature_references(catalog, features, feature_service)
        wanted: dict[str, list[str]] = {}
        fetch: list[str] = []
        self.outputs: list[tuple[str, str, str]] = []
        """(view, feature, output name) in request order."""
        for reference in references:
            view_name, _, feature = reference.partition(":")
            output = f"{view_name}__{feature}" if full_feature_names else feature
            self.outputs.append((view_name, feature, output))
            view = catalog.on_demand.get(view_name)
            if view is None:
                fetch.append(reference)
                continue
            if feature not in view.features:
                raise UnknownFeatureError(
                    f"on-demand view {view_name!r} has no feature {feature!r}"
                    f"{close_matches(feature, view.features)}"
                )
            wanted.setdefault(view_name, [])
            if feature not in wanted[view_name]:
                wanted[view_name].append(feature)
        for view_name in wanted:
            for source, names in catalog.on_demand[view_name].sources:
                fetch += [f"{source}:{name}" for name in names]
        duplicates = sorted(
            {name for *_, name in self.outputs if [o[2] for o in self.outputs].count(name) > 1}
        )
        if duplicates:
            raise UnknownFeatureError(
                f"features {', '.join(duplicates)} come from more than one feature view; "
                "ask for full_feature_names=True to name them <feature_view>__<feature>"
            )
        self._fetch = ReadPlan(catalog=catalog, features=list(dict.fromkeys(fetch)), full_feature_names=True)
        self._transforms = [
            (Transform(view=catalog.on_demand[name]), names) for name, names in wanted.items()
        ]
        self.request_fields = tuple(
            dict.fromkeys(
                field for transform, _ in self._transforms for field in transform.view.request_fields
            )
        )
        self.join_keys = self._fetch.join_keys
        self.feature_names = tuple(output for *_, output in self.outputs)

    def request(self, columns: Mapping[str, Sequence[Any]]) -> tuple[bytes, int]:
        return self._fetch.request(columns)

    def cluster_request(self, columns: Mapping[str, Sequence[Any]]) -> tuple[list[bytes], list[bytes]]:
        return self._fetch.cluster_request(columns)

    def decode(
        self, columns: Mapping[str, list[Any]], replies: Sequence[Sequence[bytes | None]], *, now_us: int
    ) -> FeatureVectors:
        fetched = self._fetch.decode(columns, replies, now_us=now_us)
        by_name = {name: index for index, name in enumerate(fetched.names)}
        values = {name: fetched.values[by_name[name]] for name in fetched.names}
        rows = len(columns[next(iter(columns))]) if columns else 0
        computed: dict[str, list[Any]] = {}
        for transform, names in self._transforms:
            inputs = transform.inputs(columns, values)
            for name, column in transform.run(inputs, rows, names).items():
                computed[f"{transform.view.name}__{name}"] = column
        out_values, out_statuses, out_times = [], [], []
        for view_name, feature, _ in self.outputs:
            full = f"{view_name}__{feature}"
            if full in computed:
                column = computed[full]
                out_values.append(column)
                out_statuses.append([NULL_VALUE if value is None else PRESENT for value in column])
                out_times.append([0] * rows)
            else:
                index = by_name[full]
                out_values.append(fetched.values[index])
                out_statuses.append(fetched.statuses[index])
                out_times.append(fetched.event_times_us[index])
        keys = fetched.join_key_count
        return FeatureVectors(
            names=list(self.join_keys) + list(self.feature_names),
            values=fetched.values[:keys] + out_values,
            statuses=fetched.statuses[:keys] + out_statuses,
            event_times_us=fetched.event_times_us[:keys] + out_times,
            join_key_count=keys,
        )


_NONE = type(None)


def frame_like_arrow(inputs: dict[str, list[Any]]) -> Any:
    """The DataFrame Feast makes of a read's columns, through Arrow (integers with a null become float64
    NaNs, booleans with one become objects), built from one numpy array per column in a fifth of
    Arrow's time. None when a column holds other than numbers, booleans and strings.

    >>> frame_like_arrow({"a": [1, None], "b": [2, 3], "c": ["x", None], "d": [True, False]}).dtypes.to_dict()
    {'a': dtype('float64'), 'b': dtype('int64'), 'c': dtype('O'), 'd': dtype('bool')}
    """
    import numpy as np
    import pandas as pd

    arrays = []
    for values in inputs.values():
        kinds = set(map(type, values))
        if kinds <= {float, int, _NONE} and kinds & {float, _NONE} and kinds - {_NONE}:
            dtype: Any = np.float64
        elif kinds == {int}:
            dtype = np.int64
        elif kinds == {bool}:
            dtype = np.bool_
        elif kinds <= {str, bool, _NONE}:
            dtype = object
        else:
            return None
        arrays.append(np.array(values, dtype=dtype))
    index = pd.RangeIndex(len(arrays[0]) if arrays else 0)
    # pandas' own constructor from column arrays, which skips consolidating them into blocks.
    return pd.DataFrame._from_arrays(arrays, columns=list(inputs), index=index, verify_integrity=False)


class StoredOnDemand:
    """The on-demand views a stream view stores (``write_to_online_store=True``): each is computed from
    the view's rows as they are written to Redis, and written beside them with the same event time and
    version, so Redis holds the function of the view's newest row, and a replay rewrites the same."""

    def __init__(self, *, client: Any, spec: Any) -> None:
        from features.spec import FeatureViewSpec
        from online_store.writer import OnlineWriter

        self.spec = spec
        self.parts = []
        for view in spec.stored_on_demand:
            stored = FeatureViewSpec(
                name=view.name,
                project=spec.project,
                topic=spec.topic,
                join_keys=spec.join_keys,
                timestamp_field=spec.timestamp_field,
                message_schema={},
                features=view.features,
            )
            self.parts.append((Transform(view=view), OnlineWriter(client=client, spec=stored)))

    def write(self, rows: Any) -> int:
        """Compute and write the stored views of these rows of the view; returns the rows applied."""
        if not self.parts or not len(rows):
            return 0
        import numpy as np

        from online_store.writer import FeatureRows

        names = list(self.spec.join_keys)
        keys = list(rows.keys)
        columns: dict[str, list[Any]] = (
            {names[0]: keys}
            if len(names) == 1
            else {name: [key[i] for key in keys] for i, name in enumerate(names)}
        )
        fetched = {
            f"{self.spec.name}__{name}": _python_column(values) for name, values in rows.features.items()
        }
        applied = 0
        for transform, writer in self.parts:
            inputs = transform.inputs(columns, fetched)
            outputs: dict[str, Sequence[Any]] = dict(_outputs_or_nulls(transform, inputs, len(keys)))
            applied += writer.write(
                FeatureRows(
                    keys=keys,
                    event_times_us=np.asarray(rows.event_times_us, dtype=np.int64),
                    created_times_us=np.asarray(rows.created_times_us, dtype=np.int64),
                    offsets=np.asarray(rows.offsets, dtype=np.int64),
                    features=dict(outputs.items()),
                )
            )
        return applied


def _outputs_or_nulls(transform: Transform, inputs: dict[str, list[Any]], rows: int) -> dict[str, list[Any]]:
    """The function's outputs for every row; a row it fails on gets nulls, and is logged. A function that
    fails on a row is a fact about that row, not an outage: the write goes on, and is not retried."""
    wanted = list(transform.view.features)
    try:
        return transform.run(inputs, rows, wanted)
    except OnDemandError:
        pass
    columns: dict[str, list[Any]] = {name: [] for name in wanted}
    failed, last = 0, None
    for row in range(rows):
        single = {name: values[row : row + 1] for name, values in inputs.items()}
        try:
            result = transform.run(single, 1, wanted)
        except OnDemandError as error:
            failed += 1
            last = error
            result = {name: [None] for name in wanted}
        for name in wanted:
            columns[name] += result[name]
    if failed:
        logging.getLogger(__name__).warning(
            "stored on-demand view %r failed on %d of %d rows, stored as nulls; last: %s",
            transform.view.name, failed, rows, last,
        )  # fmt: skip
    return columns


def _python_column(values: Any) -> list[Any]:
    """A stored column as a read returns it: Python values, None for a null (a NaN, a masked value)."""
    listed = values.tolist() if hasattr(values, "tolist") else list(values)
    return [
        None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        for value in listed
    ]


def _cast(dtype: str) -> Callable[[Any], Any]:
    """A converter to a declared type's Python value; None, NaN and pandas' NA become None."""

    def none_or(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def cast(value: Any) -> Any:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return None
            try:
                return convert(value)
            except (TypeError, ValueError):
                return None  # pandas.NA and NaT

        return cast

    if dtype == "FLOAT32":
        import numpy as np

        return none_or(lambda value: float(np.float32(value)))
    return none_or(
        {"FLOAT64": float, "INT64": int, "INT32": int, "BOOL": bool, "STRING": str}.get(
            dtype, lambda value: value
        )
    )
