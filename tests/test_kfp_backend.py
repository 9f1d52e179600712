"""The ``kfp`` job backend: the pipeline it compiles is valid by kfp's own schemas, and its client, run
from the kfp environment, submits, reads, cancels and refuses as the job backend contract says,
against a recorded KFP API on loopback (``tests/kfp_api.py``)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from features.config import load_config
from features.monitoring_config import KfpJobConfig, RetrainingConfig
from monitors.retraining import backends
from monitors.retraining.jobs import JobError, JobNotFound
from monitors.retraining.pipelines.kfp_backend import KfpBackend
from sluice.tools import tool_python
from tests import job_backend_checks as checks
from tests.kfp_api import CHECK, RecordedKfp, serving


@pytest.fixture(scope="module")
def kfp_python() -> Path:
    """The kfp environment ``make pipeline-tools`` builds (``make test`` builds it first)."""
    python = tool_python(load_config().state_dir, "kfp")
    if not python.is_file():
        pytest.fail(f"no kfp environment at {python}: run `make pipeline-tools`", pytrace=False)
    return python


@pytest.fixture
def api(kfp_python: Path) -> Iterator[RecordedKfp]:
    with serving(RecordedKfp(kfp_python=kfp_python)) as recorded:
        yield recorded
    assert recorded.rejected == []  # every run the backend sent passed kfp's schemas


def backend(api: RecordedKfp, kfp_python: Path, **config: Any) -> KfpBackend:
    return KfpBackend(config=KfpJobConfig(host=api.host, **config), python=kfp_python)


def check_schema(kfp_python: Path, *args: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    checked = subprocess.run(
        [str(kfp_python), str(CHECK), *args],
        input=json.dumps(body) if body is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    found: dict[str, Any] = json.loads(checked.stdout)
    return found


# -- The compiled pipeline ----------------------------------------------------------------------------
@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_the_compiled_pipeline_is_valid_and_runs_the_job_as_asked(
    gpus: int, kfp_python: Path, tmp_path: Path
) -> None:
    job = replace(
        checks.spec(incident=f"compiled-{gpus}"),
        gpus=gpus,
        env={"REPO": "/srv/repo", "QUOTED": 'it\'s "quoted" and {braced}', "EMPTY": ""},
    )
    config = KfpJobConfig(image="registry.example/trainer:3", cpu="500m", memory="12Gi")
    path = KfpBackend(config=config, python=kfp_python).compile(job, tmp_path / "pipeline.yaml")
    found = check_schema(kfp_python, "pipeline", str(path))
    assert found["name"] == "sluice-retrain"
    assert found["tasks"] == {
        "train": {"component": "comp-train", "display_name": job.job_id, "cache": False}
    }
    [container] = found["executors"].values()
    assert container["image"] == "registry.example/trainer:3"
    assert [*container["command"], *container["args"]] == job.command()
    assert {pair["name"]: pair.get("value", "") for pair in container["env"]} == job.environment()
    resources = container["resources"]
    assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("500m", "12Gi")
    if gpus:
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == str(gpus)
    else:
        assert "accelerator" not in resources


@pytest.mark.parametrize(
    "spoil",
    [
        lambda spec: spec["root"]["dag"]["tasks"]["train"].update(retries=3),  # no such field
        lambda spec: spec["deploymentSpec"]["executors"].clear(),  # the component's executor is gone
        lambda spec: spec["root"]["dag"]["tasks"]["train"]["componentRef"].update(name="comp-nothing"),
    ],
    ids=["unknown-field", "missing-executor", "missing-component"],
)
def test_the_schema_check_refuses_a_spoiled_pipeline(
    spoil: Callable[[dict[str, Any]], None], kfp_python: Path, tmp_path: Path
) -> None:
    """The check the tests rely on is not vacuous: a spec that kfp could not run fails it."""
    path = KfpBackend(config=KfpJobConfig(), python=kfp_python).compile(
        checks.spec(incident="spoiled"), tmp_path / "pipeline.yaml"
    )
    spec = yaml.safe_load(path.read_text())
    spoil(spec)
    path.write_text(yaml.safe_dump(spec))
    checked = subprocess.run(
        [str(kfp_python), str(CHECK), "pipeline", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 1 and checked.stderr.strip()


# -- The client against the recorded API --------------------------------------------------------------
def test_submit_makes_the_experiment_once_and_one_run_per_job(
    api: RecordedKfp, kfp_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFP_TOKEN", "s3cret")
    api.token = "s3cret"
    jobs = backend(api, kfp_python, namespace="team-a", service_account="trainer", experiment="retrain")
    first, second = checks.spec(incident="one"), checks.spec(incident="two")
    assert jobs.submit(first).created
    assert not jobs.submit(first).created  # found by its name: no second run
    assert jobs.submit(second).created
    assert [e["display_name"] for e in api.experiments.values()] == ["retrain"]
    assert {e["namespace"] for e in api.experiments.values()} == {"team-a"}
    runs = sorted(api.runs.values(), key=lambda run: run["display_name"])
    assert [run["display_name"] for run in runs] == sorted([first.job_id, second.job_id])
    posted = [
        request.body for request in api.requests if request.path == "/apis/v2beta1/runs" and request.body
    ]
    assert len(posted) == 2
    for body in posted:
        found = check_schema(kfp_python, "run", body=body)
        assert found["service_account"] == "trainer"
        assert body["experiment_id"] in api.experiments
    assert {request.authorization for request in api.requests} == {"Bearer s3cret"}


def test_the_token_comes_from_the_environment_and_a_refusal_says_so(
    api: RecordedKfp, kfp_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.token = "s3cret"
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with pytest.raises(JobError, match=r"answered 401.*no valid bearer token"):
        backend(api, kfp_python).submit(checks.spec(incident="refused"))
    assert api.runs == {}


@pytest.mark.parametrize(
    ("kfp_state", "state"),
    [
        ("PENDING", "queued"),
        ("RUNTIME_STATE_UNSPECIFIED", "queued"),
        ("PAUSED", "queued"),
        ("RUNNING", "running"),
        ("CANCELING", "running"),
        ("SUCCEEDED", "succeeded"),
        ("SKIPPED", "succeeded"),
        ("FAILED", "failed"),
        ("CANCELED", "cancelled"),
    ],
)
def test_each_kfp_state_is_a_job_state(
    api: RecordedKfp, kfp_python: Path, kfp_state: str, state: str
) -> None:
    jobs = backend(api, kfp_python)
    job = checks.spec(incident=kfp_state)
    jobs.submit(job)
    api.outcomes[job.job_id] = [kfp_state]
    assert jobs.status(job.job_id) == state


def test_logs_name_the_run_its_state_link_and_error(api: RecordedKfp, kfp_python: Path) -> None:
    jobs = backend(api, kfp_python)
    job = checks.spec(incident="broken", code=3)
    jobs.submit(job)
    api.outcomes[job.job_id] = ["FAILED"]
    api.errors[job.job_id] = "task 'train' exited with code 3"
    assert jobs.status(job.job_id) == "failed"
    [run_id] = api.runs
    assert jobs.logs(job.job_id).splitlines() == [
        f"Kubeflow Pipelines run {run_id}: FAILED",
        f"{api.host}/#/runs/details/{run_id}",
        "task 'train' exited with code 3",
    ]


def test_cancel_terminates_the_run(api: RecordedKfp, kfp_python: Path) -> None:
    jobs = backend(api, kfp_python)
    job = checks.spec(incident="stopped", sleep_s=60)
    jobs.submit(job)
    assert jobs.status(job.job_id) == "running"
    jobs.cancel(job.job_id)
    [run_id] = api.runs
    assert [r.path for r in api.requests if r.method == "POST"][
        -1
    ] == f"/apis/v2beta1/runs/{run_id}:terminate"
    assert jobs.status(job.job_id) == "cancelled"


def test_a_job_kfp_does_not_know_is_not_found(api: RecordedKfp, kfp_python: Path) -> None:
    jobs = backend(api, kfp_python)
    for call in (jobs.status, jobs.logs, jobs.cancel):
        with pytest.raises(JobNotFound, match="no Kubeflow Pipelines run named 'sluice-nothing'"):
            call("sluice-nothing")


def test_an_unreachable_api_is_a_job_error(kfp_python: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    jobs = KfpBackend(config=KfpJobConfig(host=f"http://127.0.0.1:{port}"), python=kfp_python)
    with pytest.raises(
        JobError, match=f"kfp status of 'sluice-x' at http://127.0.0.1:{port}: .*Connection refused"
    ):
        jobs.status("sluice-x")


def test_without_the_kfp_environment_the_error_says_how_to_make_it(tmp_path: Path) -> None:
    jobs = KfpBackend(config=KfpJobConfig(), python=tmp_path / "missing" / "python")
    with pytest.raises(JobError, match="make pipeline-tools"):
        jobs.submit(checks.spec(incident="nowhere"))


def test_the_registry_builds_it_with_the_kfp_environment(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={"SLUICE_STATE_DIR": str(tmp_path / "state")})
    config = config.model_copy(
        update={"retraining": RetrainingConfig(backend="kfp", kfp=KfpJobConfig(host="https://kfp.example"))}
    )
    built = backends.job_backend(config, tmp_path)
    assert isinstance(built, KfpBackend)
    assert built.python == tmp_path / "state" / "tools" / "kfp" / "bin" / "python"
    assert built.config.host == "https://kfp.example"


@pytest.mark.parametrize(
    "check",
    [checks.check_duplicate_is_already_submitted, checks.check_failure_is_failed, checks.check_cancel],
    ids=lambda check: check.__name__,
)
def test_conformance_against_the_recorded_api(
    api: RecordedKfp, kfp_python: Path, check: Callable[[KfpBackend], None]
) -> None:
    # The checks poll until their job finishes: record how each one's run goes.
    for incident, states in [
        ("duplicate", ["PENDING", "RUNNING", "SUCCEEDED"]),
        ("fails", ["RUNNING", "FAILED"]),
    ]:
        api.outcomes[checks.spec(incident=incident).job_id] = states
    check(backend(api, kfp_python))
