"""Run a transformation from the source text Feast's registry keeps, the way Feast's feature server does.

``feast apply`` stores each user-defined function twice: as dill bytes and as its source. Feast
serves from the source first (dill cannot move between Python versions), and so does sluice, with
no dill at all: the function runs from the registered text, the leading decorators stripped, in a
namespace holding only ``pd``/``pandas`` and ``np``/``numpy``. So a function must import what
else it uses inside its body; ``sluice plan`` runs each one this way and refuses any that cannot.

>>> source = '''
... @on_demand_feature_view(sources=[stats], schema=[Field(name="double", dtype=Float64)])
... def doubled(inputs):
...     return {"double": [2 * value for value in inputs["amount"]]}
... '''
>>> load_udf(source, name="doubled")({"amount": [1.5]})
{'double': [3.0]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["UdfError", "load_udf"]


class UdfError(ValueError):
    """A registered function whose source cannot be run on its own; the message says why."""


def load_udf(source: str, *, name: str) -> Callable[..., Any]:
    """The function ``name`` defined by ``source``, run in a namespace with pandas and numpy."""
    if not source.strip():
        raise UdfError(f"the registry holds no source for {name!r}; run `sluice apply` again")
    import numpy as np
    import pandas as pd

    namespace: dict[str, Any] = {"__name__": "sluice_udf", "pd": pd, "pandas": pd, "np": np, "numpy": np}
    code = _without_decorators(source)
    try:
        exec(compile(code, f"<udf {name}>", "exec"), namespace)  # noqa: S102 - the registry's own source
    except Exception as error:
        raise UdfError(f"its source does not run on its own ({type(error).__name__}: {error})") from None
    function = namespace.get(name)
    if not callable(function):
        raise UdfError(f"its source defines no function named {name!r}")
    return function  # type: ignore[no-any-return]


def _without_decorators(source: str) -> str:
    """The source from its first ``def`` line on, dedented: the decorators need Feast, the body does not.

    >>> _without_decorators("    @deco(a=[1,\\n        2])\\n    def f(x):\\n        return x\\n")
    'def f(x):\\n    return x\\n'
    """
    import textwrap

    lines = textwrap.dedent(source).splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith(("def ", "async def ")):
            return "".join(lines[index:])
    return "".join(lines)
