"""The Ray backend: each job is a Ray job, submitted to a cluster's Jobs API (the dashboard's address).

For teams that already train on a Ray cluster: the cluster schedules the job (on a node with GPUs when
the spec asks for them), keeps its status and logs, and outlives the process that submitted it. The job
id is Ray's ``submission_id``, so Ray itself refuses a second job of the same incident, and that refusal
is "already submitted". The entrypoint runs as a shell command line; the request reaches it as arguments
and as ``env_vars`` merged into the configured ``runtime_env``. Ray is an optional dependency: it is
imported on first use, and a missing install says how to add it.
"""

from __future__ import annotations

import shlex
from typing import Any

from monitors.retraining.jobs import JobError, JobNotFound, JobSpec, JobState, Submission

__all__ = ["RayBackend"]

_STATES: dict[str, JobState] = {
    "PENDING": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "cancelled",
}


class RayBackend:
    """Runs jobs on a Ray cluster through its Jobs API."""

    name = "ray"

    def __init__(self, *, address: str, runtime_env: dict[str, Any] | None = None) -> None:
        """``address`` is the Jobs API (``http://<head>:8265``); ``runtime_env`` is Ray's, for every job."""
        self.address = address
        self.runtime_env = dict(runtime_env or {})
        self._client: Any = None

    def submit(self, spec: JobSpec) -> Submission:
        client = self._connect()
        env_vars = {**self.runtime_env.get("env_vars", {}), **spec.environment()}
        try:
            client.submit_job(
                entrypoint=shlex.join(spec.command()),
                submission_id=spec.job_id,
                runtime_env={**self.runtime_env, "env_vars": env_vars},
                entrypoint_num_gpus=spec.gpus if spec.gpus > 0 else None,
            )
        except RuntimeError as error:
            # Ray 2.60 answers a duplicate submission_id with the job manager's ValueError in the body.
            if f"Job with submission_id {spec.job_id} already exists" in str(error):
                return Submission(spec.job_id, created=False)
            raise self._error("submit", spec.job_id, error) from error
        except OSError as error:
            raise self._error("submit", spec.job_id, error) from error
        return Submission(spec.job_id, created=True)

    def status(self, job_id: str) -> JobState:
        client = self._connect()
        try:
            status = str(client.get_job_status(job_id))
        except (RuntimeError, OSError) as error:
            raise self._error("get the status of", job_id, error) from error
        if status not in _STATES:
            raise JobError(f"Ray job {job_id!r} at {self.address} has an unknown status {status!r}")
        return _STATES[status]

    def logs(self, job_id: str) -> str:
        client = self._connect()
        try:
            return str(client.get_job_logs(job_id))
        except (RuntimeError, OSError) as error:
            raise self._error("get the logs of", job_id, error) from error

    def cancel(self, job_id: str) -> None:
        client = self._connect()
        try:
            client.stop_job(job_id)  # False when the job had finished already: nothing to stop
        except (RuntimeError, OSError) as error:
            raise self._error("stop", job_id, error) from error

    def _connect(self) -> Any:
        """The Jobs API client, created on first use (creating it checks that the cluster answers)."""
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as error:
                raise JobError(
                    f"the ray job backend needs Ray's job SDK: pip install 'ray[default]' ({error})"
                ) from error
            try:
                self._client = JobSubmissionClient(self.address)
            except (RuntimeError, OSError) as error:
                raise JobError(f"could not reach the Ray Jobs API at {self.address}: {error}") from error
        return self._client

    def _error(self, action: str, job_id: str, error: Exception) -> JobError:
        # Ray's Jobs API answers an unknown id with "Request failed with status code 404: ..."
        kind = JobNotFound if "status code 404" in str(error) else JobError
        return kind(f"could not {action} Ray job {job_id!r} at {self.address}: {error}")
