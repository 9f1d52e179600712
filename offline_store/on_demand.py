"""On-demand feature views in training sets: the serving path's functions over point-in-time inputs.

A training set that names an on-demand view first joins the view's sources as of each entity row,
then runs the same ``Transform`` the online read runs, over the whole set at once: the request data
are entity_df columns, as in Feast's ``get_historical_features``. So a model trains on the values
serving computes from the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from offline_store.dataset import ARROW_TYPES
from online_store.catalog import OnDemandView
from online_store.on_demand import Transform

__all__ = ["on_demand_views", "with_on_demand"]


def on_demand_views(objects: Sequence[Any]) -> dict[str, OnDemandView]:
    """The repo's on-demand views as the read path sees them, from Feast's objects."""
    from feast import OnDemandFeatureView

    from features.on_demand import on_demand_spec

    return {view.name: on_demand_spec(view) for view in objects if isinstance(view, OnDemandFeatureView)}


def with_on_demand(
    *,
    features: Sequence[str],
    views: dict[str, OnDemandView],
    full_feature_names: bool,
    retrieve: Callable[[list[str]], pa.Table],
    error: Callable[[str], Exception],
) -> pa.Table:
    """The training set of ``features``, some of them on-demand; ``retrieve`` joins plain features
    (full-named) to the entity rows, and ``error`` makes the exception a bad request raises."""
    outputs: list[tuple[str, str, str]] = []
    wanted: dict[str, list[str]] = {}
    fetch: list[str] = []
    for reference in features:
        view_name, _, feature = reference.partition(":")
        outputs.append((view_name, feature, f"{view_name}__{feature}" if full_feature_names else feature))
        view = views.get(view_name)
        if view is None:
            fetch.append(reference)
            continue
        if feature not in view.features:
            known = ", ".join(view.features)
            raise error(f"on-demand view {view_name!r} has no feature {feature!r} (it has: {known})")
        names = wanted.setdefault(view_name, [])
        if feature not in names:
            names.append(feature)
    for view_name in wanted:
        fetch += [f"{source}:{name}" for source, names in views[view_name].sources for name in names]
    fetched_names = {reference.replace(":", "__", 1) for reference in fetch}
    base = retrieve(list(dict.fromkeys(fetch)))
    entity_columns = [name for name in base.column_names if name not in fetched_names]

    computed: dict[str, pa.Array] = {}
    for view_name, names in wanted.items():
        view = views[view_name]
        missing = [field for field in view.request_fields if field not in entity_columns]
        if missing:
            raise error(
                f"entity_df has no column {missing[0]!r}, request data of on-demand view {view_name!r}; "
                "add it to the entity rows"
            )
        inputs = {name: base[name] for name in entity_columns}
        for source, source_names in view.sources:
            for name in source_names:
                inputs[name] = inputs[f"{source}__{name}"] = base[f"{source}__{name}"]
        columns = Transform(view=view).run_table(pa.table(inputs), names)
        for name, values in columns.items():
            computed[f"{view_name}__{name}"] = pa.array(values, type=ARROW_TYPES.get(view.features[name]))

    names = [output for *_, output in outputs]
    clashes = sorted({name for name in names if names.count(name) > 1 or name in entity_columns})
    if clashes:
        raise error(
            f"feature {clashes[0]!r} clashes with an entity_df column or another view's feature; "
            "pass full_feature_names=True or rename the column"
        )
    table = base.select(entity_columns)
    for view_name, feature, output in outputs:
        full = f"{view_name}__{feature}"
        table = table.append_column(output, computed[full] if full in computed else base[full])
    return table
