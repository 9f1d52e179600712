"""Every job backend passes the same conformance checks (``tests/job_backend_checks.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitors.retraining.local import LocalBackend
from tests.job_backend_checks import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_local_backend(check: Callable[..., None], tmp_path: Path) -> None:
    check(LocalBackend(root=tmp_path / "jobs"))
