"""The inference read path stays lean: importing the online client loads no Feast, pandas or Evidently."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["feast", "pandas", "evidently", "duckdb", "pyarrow", "sqlalchemy", "starlette", "scipy", "numba"]


def test_importing_the_online_client_pulls_in_nothing_heavy() -> None:
    probe = (
        "import sys; from online_store import OnlineClient, AsyncOnlineClient; "
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
