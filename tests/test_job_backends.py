"""Every job backend passes the same conformance checks (``tests/job_backend_checks.py``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from features.config import load_config
from monitors.retraining.local import LocalBackend
from monitors.retraining.pipelines.metaflow_backend import MetaflowBackend
from sluice.tools import tool_python
from tests.job_backend_checks import CHECKS, spec, wait_finished


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_local_backend(check: Callable[..., None], tmp_path: Path) -> None:
    check(LocalBackend(root=tmp_path / "jobs"))


@pytest.fixture(scope="module")
def metaflow_python() -> Path:
    """The Metaflow environment ``make pipeline-tools`` builds (``make test`` builds it first)."""
    python = tool_python(load_config().state_dir, "metaflow")
    if not python.is_file():
        pytest.fail(f"no Metaflow environment at {python}: run `make pipeline-tools`", pytrace=False)
    return python


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_metaflow_backend(check: Callable[..., None], metaflow_python: Path, tmp_path: Path) -> None:
    """Each job a real Metaflow run, through the Runner API, in Metaflow's own environment."""
    backend = MetaflowBackend(python=metaflow_python, root=tmp_path / "jobs", datastore_root=tmp_path / "mf")
    check(backend)


def test_a_metaflow_job_is_a_run_metaflows_client_finds_by_its_tag(
    metaflow_python: Path, tmp_path: Path
) -> None:
    backend = MetaflowBackend(python=metaflow_python, root=tmp_path / "jobs", datastore_root=tmp_path / "mf")
    job = spec(incident="found")
    backend.submit(job)
    assert wait_finished(backend, job.job_id) == "succeeded"
    # Metaflow's own client, in its environment, reads the run back from the datastore by its tag.
    script = (
        "import os, sys; from metaflow import Flow, namespace; namespace(None); "
        f"runs = list(Flow('SluiceRetrainFlow').runs('sluice_job:{job.job_id}')); "
        "print(len(runs), runs[0].successful, runs[0]['train'].task.stdout.strip())"
    )
    env = {**os.environ, "USERNAME": "sluice", "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf")}
    found = subprocess.run(
        [str(metaflow_python), "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert found.returncode == 0, found.stderr
    printed = found.stdout.split(maxsplit=2)
    assert printed[:2] == ["1", "True"] and "training fraud 1970-01-01T00:00:05+00:00" in printed[2]
    assert "Metaflow run SluiceRetrainFlow/" in backend.logs(job.job_id)
