"""Check on-demand feature views: sluice computes them at read time, from the registry's source text.

An ``@on_demand_feature_view`` in python or pandas mode, over streamed views and request data, is
computed by ``OnlineClient``, ``sluice serve`` and ``get_historical_features`` as Feast computes it.
What sluice cannot run is refused here, one error per problem, each saying what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from features.spec import FeatureViewSpec, OnDemandSpec
from features.udf import UdfError, load_udf

__all__ = ["check_on_demand_views", "on_demand_spec"]

_MODES = ("python", "pandas")


def on_demand_spec(view: Any) -> OnDemandSpec:
    """An on-demand view as the rest of sluice sees it, from Feast's object."""
    from features.validation import type_name

    transformation: Any = view.feature_transformation  # python or pandas: checked below
    return OnDemandSpec(
        name=view.name,
        mode=str(view.mode),
        singleton=bool(view.singleton),
        features={field.name: type_name(field.dtype) for field in view.features},
        sources=tuple(
            (projection.name, tuple(feature.name for feature in projection.features))
            for projection in view.source_feature_view_projections.values()
        ),
        request_fields={
            field.name: type_name(field.dtype)
            for source in view.source_request_sources.values()
            for field in source.schema
        },
        udf_name=transformation.udf.__name__,
        udf_source=transformation.udf_string or "",
        write_to_online_store=bool(view.write_to_online_store),
    )


def check_on_demand_views(
    views: Sequence[Any], *, specs: Sequence[FeatureViewSpec], all_views: Sequence[Any]
) -> tuple[list[Any], dict[str, list[OnDemandSpec]]]:
    """One ``DefinitionError`` per problem of each on-demand view (``specs`` are the streamed views), and
    the views the worker stores, by their source view."""
    from features.validation import DefinitionError

    streamed = {spec.name: spec for spec in specs}
    declared = {view.name: view for view in all_views}
    errors: list[DefinitionError] = []
    stored: dict[str, list[OnDemandSpec]] = {}
    for view in views:

        def fail(field: str, message: str, name: str = view.name) -> None:
            errors.append(
                DefinitionError(kind="OnDemandFeatureView", name=name, field=field, message=message)
            )

        mode = str(view.mode)
        if mode not in _MODES:
            fail("mode", f"sluice runs python and pandas transformations, not {mode!r}; use mode='python'")
            continue
        if getattr(view, "aggregations", None):
            fail("aggregations", "sluice does not aggregate at read time; aggregate in a StreamFeatureView")
        for source in view.source_feature_view_projections.values():
            if source.name not in declared:
                fail("sources", f"source {source.name!r} is not defined in the repo; define it or remove it")
        if view.write_to_online_store:
            _check_stored(view, streamed, declared, fail)
        transformation = view.feature_transformation
        try:
            udf = load_udf(transformation.udf_string or "", name=transformation.udf.__name__)
            missing = _missing_outputs(udf, view, mode)
        except UdfError as error:
            fail("udf", f"{error}; import what the function uses inside its body")
        except NameError as error:
            fail(
                "udf",
                f"{error}: sluice, like Feast's feature server, runs the function from its source "
                "alone, so import what it uses inside its body",
            )
        except Exception as error:
            fail("udf", f"fails on Feast's sample input ({type(error).__name__}: {error})")
        else:
            if missing:
                fail("udf", f"returns no {', '.join(map(repr, missing))}; return every feature of the schema")
        if view.write_to_online_store and not any(error.name == view.name for error in errors):
            source = next(iter(view.source_feature_view_projections.values())).name
            stored.setdefault(source, []).append(on_demand_spec(view))
    return errors, stored


def _check_stored(
    view: Any, streamed: dict[str, FeatureViewSpec], declared: dict[str, Any], fail: Any
) -> None:
    """A stored view is computed by the worker from each row of its one stream view, as it writes it."""
    field = "write_to_online_store"
    if view.source_request_sources:
        fail(
            field,
            "the stream worker computes a stored view, and has no request data; remove the "
            "RequestSource or set write_to_online_store=False to compute it at read time",
        )
    projections = list(view.source_feature_view_projections.values())
    if len(projections) != 1:
        fail(
            field,
            f"the stream worker computes a stored view from the rows of one view, not {len(projections)}; "
            "set write_to_online_store=False to compute it at read time",
        )
        return
    source = streamed.get(projections[0].name)
    if source is None:
        fail(
            field,
            f"its source {projections[0].name!r} is not streamed by sluice, so no worker computes it; "
            "set write_to_online_store=False to compute it at read time",
        )
        return
    if set(view.entities) != set(declared[source.name].entities):
        fail(
            "entities",
            f"a stored view is keyed as its source {source.name!r} is "
            f"({', '.join(declared[source.name].entities)}); give it the same entities",
        )


def _missing_outputs(udf: Any, view: Any, mode: str) -> list[str]:
    """Call the function from its source as the read path will, on Feast's own sample input for the view,
    and name the declared features its output lacks."""
    sample = view._construct_random_input(singleton=view.singleton)
    if mode == "pandas":
        import pandas as pd

        output = udf(pd.DataFrame.from_dict(sample))
        columns = set(output.columns)
    else:
        output = udf(sample)
        columns = set(output)
    return [field.name for field in view.features if field.name not in columns]
