"""The aggregation functions a stream feature view may declare, with their metadata.

The registry is a plain dict: adding a function means adding a row here and an aggregator in
``streams/aggregators.py`` (a test keeps the two in step). Types are named as Feast's primitive
types name themselves (``INT64``, ``FLOAT64``, ...).

>>> AGGREGATIONS["mean"].output_dtype("INT64")
'FLOAT64'
>>> get_aggregation("median")
Traceback (most recent call last):
...
features.aggregations.UnknownAggregation: unknown aggregation function 'median'; valid functions: count, ...
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AGGREGATIONS", "NUMERIC_DTYPES", "AggregationFunction", "UnknownAggregation", "get_aggregation"]

NUMERIC_DTYPES = frozenset({"INT32", "INT64", "FLOAT32", "FLOAT64"})
_INTEGER_DTYPES = frozenset({"INT32", "INT64"})
_ANY_SCALAR = frozenset({"INT32", "INT64", "FLOAT32", "FLOAT64", "STRING", "BOOL"})


class UnknownAggregation(ValueError):
    """An aggregation function name that sluice does not know; the message lists the valid ones."""


@dataclass(frozen=True, kw_only=True)
class AggregationFunction:
    """One aggregation function: what it accepts and what it produces."""

    name: str
    description: str
    input_dtypes: frozenset[str]
    """Source column types the function accepts."""
    output: str
    """The output type: a type name, or ``"input"`` for the input's type, or ``"widened"`` for
    INT64 from integers and FLOAT64 from floats."""

    def output_dtype(self, input_dtype: str) -> str:
        """The feature type this function produces from a column of ``input_dtype``."""
        if self.output == "input":
            return input_dtype
        if self.output == "widened":
            return "INT64" if input_dtype in _INTEGER_DTYPES else "FLOAT64"
        return self.output


AGGREGATIONS: dict[str, AggregationFunction] = {
    function.name: function
    for function in (
        AggregationFunction(
            name="count", description="number of events", input_dtypes=_ANY_SCALAR, output="INT64"
        ),
        AggregationFunction(
            name="sum", description="sum of values", input_dtypes=NUMERIC_DTYPES, output="widened"
        ),
        AggregationFunction(
            name="mean", description="arithmetic mean", input_dtypes=NUMERIC_DTYPES, output="FLOAT64"
        ),
        AggregationFunction(
            name="min", description="smallest value", input_dtypes=NUMERIC_DTYPES, output="input"
        ),
        AggregationFunction(
            name="max", description="largest value", input_dtypes=NUMERIC_DTYPES, output="input"
        ),
        AggregationFunction(
            name="last",
            description="value of the event with the latest event time (the later offset on ties)",
            input_dtypes=_ANY_SCALAR,
            output="input",
        ),
        AggregationFunction(
            name="stddev",
            description="sample standard deviation (ddof=1); null below two values",
            input_dtypes=NUMERIC_DTYPES,
            output="FLOAT64",
        ),
    )
}


def get_aggregation(name: str) -> AggregationFunction:
    try:
        return AGGREGATIONS[name]
    except KeyError:
        valid = ", ".join(sorted(AGGREGATIONS))
        raise UnknownAggregation(f"unknown aggregation function {name!r}; valid functions: {valid}") from None
