"""The Kubeflow Pipelines side of the ``kfp`` job backend, run in the kfp environment (it imports kfp and
the standard library only): compile a retraining job into a one-step pipeline, and submit, find, stop
runs with ``kfp.Client``.

    <kfp venv>/bin/python kfp_client.py OPERATION REQUEST.json

The request is a JSON object (``KfpBackend`` writes it); the answer is one JSON object on stdout, or an
error on stderr and exit code 1. Operations: ``compile`` (writes ``request["path"]``), ``submit``,
``status``, ``cancel``.
"""

import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

Request = dict[str, Any]

STATES = {
    "RUNTIME_STATE_UNSPECIFIED": "queued",
    "PENDING": "queued",
    "PAUSED": "queued",
    "RUNNING": "running",
    "CANCELING": "running",
    "SUCCEEDED": "succeeded",
    "SKIPPED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "cancelled",
}
"""KFP's run states (``V2beta1RuntimeState``) as sluice's job states."""


def compile_pipeline(request: Request, path: str) -> None:
    """One container step: the training command in ``image``, with the job's environment, CPU, memory
    and GPUs (``nvidia.com/gpu``), no caching (a retraining job must run)."""
    from kfp import compiler, dsl

    command = request["command"]

    @dsl.container_component
    def train() -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image=request["image"], command=command[:1], args=command[1:])

    @dsl.pipeline(name="sluice-retrain", description=f"sluice retraining job {request['job_id']}")
    def retrain() -> None:
        task = train()
        task.set_display_name(request["job_id"])
        task.set_caching_options(False)
        for name, value in sorted(request["env"].items()):
            task.set_env_variable(name, value)
        task.set_cpu_limit(request["cpu"])
        task.set_memory_limit(request["memory"])
        if request["gpus"]:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(request["gpus"])

    compiler.Compiler().compile(retrain, path)


def client(request: Request) -> Any:
    import kfp

    class Client(kfp.Client):  # type: ignore[misc]
        def get_kfp_healthz(self, sleep_duration: int = 1) -> Any:
            """Without a namespace, kfp asks the API whether it is multi-user first: five tries a
            second apart, not five seconds, so a refusal is known in seconds."""
            return super().get_kfp_healthz(sleep_duration=sleep_duration)

    return Client(
        host=request["host"],
        namespace=request.get("namespace") or "kubeflow",
        existing_token=os.environ.get("KFP_TOKEN") or None,
        ssl_ca_cert=request.get("ssl_ca_cert") or None,
    )


def find(kfp_client: Any, request: Request) -> Any:
    """The run named after the job, or None."""
    name_filter = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": request["job_id"]}]}
    )
    found = kfp_client.list_runs(namespace=request.get("namespace") or None, filter=name_filter, page_size=2)
    runs = found.runs or []
    return runs[0] if runs else None


def submit(request: Request) -> Request:
    kfp_client = client(request)
    existing = find(kfp_client, request)
    if existing is not None:
        return {"run_id": existing.run_id, "created": False}
    experiment = kfp_client.create_experiment(
        request["experiment"], namespace=request.get("namespace") or None
    )
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "pipeline.yaml")
        compile_pipeline(request, path)
        run = kfp_client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=request["job_id"],
            pipeline_package_path=path,
            enable_caching=False,
            service_account=request.get("service_account") or None,
        )
    return {"run_id": run.run_id, "created": True}


def status(request: Request) -> Request:
    run = find(client(request), request)
    if run is None:
        return {"state": None}
    return {
        "state": STATES.get(str(run.state), "running"),
        "kfp_state": str(run.state),
        "run_id": run.run_id,
        "error": _error(run),
        "link": f"{request['host'].rstrip('/')}/#/runs/details/{run.run_id}",
    }


def cancel(request: Request) -> Request:
    kfp_client = client(request)
    run = find(kfp_client, request)
    if run is None:
        return {"state": None}
    kfp_client.terminate_run(run.run_id)
    return {"run_id": run.run_id}


def _error(run: Any) -> str:
    error = getattr(run, "error", None)
    return str(getattr(error, "message", "") or "") if error is not None else ""


def describe(error: Exception) -> str:
    """One line: the API's status and message for its answers, else the error's first line."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        try:
            body = json.loads(getattr(error, "body", None) or "")
            message = body.get("message") or body.get("error") or ""
        except (ValueError, AttributeError):
            message = ""
        return f"the KFP API answered {status} {getattr(error, 'reason', '') or ''}: {message}".strip()
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def main() -> int:
    operation, path = sys.argv[1], sys.argv[2]
    request = json.loads(Path(path).read_text())
    # The answer is the one line on stdout: what kfp prints (run links) goes to stderr, and its
    # warning about older KFP servers is not news.
    warnings.simplefilter("ignore", FutureWarning)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if operation == "compile":
                compile_pipeline(request, request["path"])
                answer: Request = {"path": request["path"]}
            else:
                answer = {"submit": submit, "status": status, "cancel": cancel}[operation](request)
    except Exception as error:  # one line for the backend's JobError, not a traceback
        print(describe(error), file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
