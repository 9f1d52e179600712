"""The ``kfp`` job backend: each retraining job is a run of a one-step Kubeflow Pipelines pipeline, the
training command in the configured image with the job's environment, CPU, memory and GPUs
(``nvidia.com/gpu``), named after the job so that a second submission finds it.

kfp pins protobuf and kubernetes versions sluice's set cannot take, so the client runs from its own
virtual environment (``retraining.kfp.python``, by default ``<state_dir>/tools/kfp/bin/python``, which
``make pipeline-tools`` builds): this module writes each request as JSON and runs ``kfp_client.py``
there, one process per call, reading its one-line JSON answer. The API's bearer token is passed from
``$KFP_TOKEN`` through the environment, never written to the request file.

KFP keeps no logs of its own (they are the pods'), so ``logs`` gives the run's state, its error, and its
link in the KFP UI.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitors.retraining.jobs import JobError, JobNotFound, JobSpec, JobState, Submission

if TYPE_CHECKING:
    from features.monitoring_config import KfpJobConfig

__all__ = ["KfpBackend"]

CLIENT = Path(__file__).with_name("kfp_client.py")


class KfpBackend:
    name = "kfp"

    def __init__(self, *, config: KfpJobConfig, python: Path) -> None:
        """``config`` says where the KFP API is and what each run asks for; ``python`` is the kfp
        environment's interpreter."""
        self.config = config
        self.python = python

    def submit(self, spec: JobSpec) -> Submission:
        answer = self._call("submit", self.request(spec))
        return Submission(spec.job_id, created=bool(answer["created"]))

    def status(self, job_id: str) -> JobState:
        state: JobState = self._found("status", job_id)["state"]
        return state

    def logs(self, job_id: str) -> str:
        found = self._found("status", job_id)
        lines = [f"Kubeflow Pipelines run {found['run_id']}: {found['kfp_state']}", found["link"]]
        return "\n".join(lines + ([found["error"]] if found["error"] else []))

    def cancel(self, job_id: str) -> None:
        self._found("cancel", job_id)

    def compile(self, spec: JobSpec, path: Path) -> Path:
        """Write the pipeline a job would run as KFP's YAML (``kfp dsl compile`` output), to read or
        to submit by hand."""
        self._call("compile", {**self.request(spec), "path": str(path)})
        return path

    def request(self, spec: JobSpec) -> dict[str, Any]:
        """What ``kfp_client.py`` is asked to run: the job and where it goes."""
        return {
            **self._where(spec.job_id),
            "experiment": self.config.experiment,
            "image": self.config.image,
            "command": spec.command(),
            "env": spec.environment(),
            "cpu": self.config.cpu,
            "memory": self.config.memory,
            "gpus": spec.gpus,
            "service_account": self.config.service_account,
        }

    def _where(self, job_id: str) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "host": self.config.host,
            "namespace": self.config.namespace,
            "ssl_ca_cert": self.config.ssl_ca_cert,
        }

    def _found(self, operation: str, job_id: str) -> dict[str, Any]:
        answer = self._call(operation, self._where(job_id))
        if answer.get("state", "") is None:
            raise JobNotFound(f"no Kubeflow Pipelines run named {job_id!r} at {self.config.host}")
        return answer

    def _call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if not self.python.is_file():
            raise JobError(
                f"no kfp environment at {self.python}: run `make pipeline-tools` (or set "
                "retraining.kfp.python to a Python with kfp installed)"
            )
        with tempfile.TemporaryDirectory(prefix="sluice-kfp-") as folder:
            path = Path(folder) / "request.json"
            path.write_text(json.dumps(request))
            try:
                done = subprocess.run(
                    [str(self.python), str(CLIENT), operation, str(path)],
                    capture_output=True,
                    text=True,
                    timeout=self.config.timeout_seconds,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise JobError(
                    f"kfp {operation} of {request['job_id']!r} took more than "
                    f"{self.config.timeout_seconds:.0f} s; is the KFP API at {self.config.host} up?"
                ) from error
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            raise JobError(f"kfp {operation} of {request['job_id']!r} at {self.config.host}: {last[0]}")
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer
