"""Check on-demand feature views: sluice computes them at read time, from the registry's source text.

An ``@on_demand_feature_view`` in python or pandas mode, over streamed views and request data, is
computed by ``OnlineClient``, ``sluice serve`` and ``get_historical_features`` as Feast computes it.
What sluice cannot run is refused here, one error per problem, each saying what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from features.spec import FeatureViewSpec
from features.udf import UdfError, load_udf

__all__ = ["check_on_demand_views"]

_MODES = ("python", "pandas")


def check_on_demand_views(
    views: Sequence[Any], *, specs: Sequence[FeatureViewSpec], all_views: Sequence[Any]
) -> list[Any]:
    """One ``DefinitionError`` per problem of each on-demand view; ``specs`` are the streamed views."""
    from features.validation import DefinitionError

    streamed = {spec.name for spec in specs}
    declared = {view.name: type(view).__name__ for view in all_views}
    errors: list[DefinitionError] = []
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
            if source.name not in streamed:
                kind = declared.get(source.name)
                reason = (
                    "is not defined in the repo"
                    if kind is None
                    else f"is a {kind} sluice does not stream, so it has no online values"
                )
                fail("sources", f"source {source.name!r} {reason}; use a view fed by a KafkaSource")
        if view.write_to_online_store:
            fail(
                "write_to_online_store",
                "sluice computes on-demand views at read time and does not store them yet; "
                "remove write_to_online_store=True",
            )
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
    return errors


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
