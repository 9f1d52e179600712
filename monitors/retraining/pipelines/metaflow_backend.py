"""The ``metaflow`` job backend: each retraining job is a run of ``SluiceRetrainFlow`` through Metaflow's
Runner API, so Metaflow records it (its steps, logs, artifacts and the tag ``sluice_job:<id>``) and can
send the training step to Kubernetes or AWS Batch (``retraining.metaflow.decorators``) with its GPUs.

Metaflow runs from its own virtual environment (``retraining.metaflow.python``, by default
``<state_dir>/tools/metaflow/bin/python``, which ``make pipeline-tools`` builds). The job itself is the
local backend's: a folder per job, a runner that survives the monitor and records the exit code of
``metaflow_run.py`` (0 when the Metaflow run succeeded), and cancel by process group. So a job submitted
twice is "already submitted", and a crash of the monitor loses no outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monitors.retraining.jobs import JobError, JobSpec, JobState, Submission
from monitors.retraining.local import LocalBackend

__all__ = ["MetaflowBackend"]

RUN = Path(__file__).with_name("metaflow_run.py")


class MetaflowBackend:
    name = "metaflow"

    def __init__(
        self,
        *,
        python: Path,
        root: Path,
        datastore_root: Path,
        cwd: Path | None = None,
        decorators: Sequence[str] = (),
    ) -> None:
        """``python`` is the Metaflow environment's interpreter; ``root`` holds one folder per job;
        ``datastore_root`` is Metaflow's local datastore and metadata (``METAFLOW_DATASTORE_SYSROOT_LOCAL``);
        ``decorators`` are added to every step (``kubernetes``, ``batch``)."""
        self.python = python
        self.datastore_root = datastore_root
        self.decorators = list(decorators)
        self.local = LocalBackend(root=root, cwd=cwd)

    def submit(self, spec: JobSpec) -> Submission:
        if not self.python.is_file():
            raise JobError(
                f"no Metaflow environment at {self.python}: run `make pipeline-tools` (or set "
                "retraining.metaflow.python to a Python with metaflow installed)"
            )
        options = [f"--with={decorator}" for decorator in self.decorators]
        wrapped = JobSpec(
            request=spec.request,
            entrypoint=[
                str(self.python),
                str(RUN),
                "--job-id",
                spec.job_id,
                *options,
                "--",
                *spec.entrypoint,
            ],
            gpus=spec.gpus,
            env={
                **spec.env,
                "METAFLOW_DEFAULT_DATASTORE": "local",
                "METAFLOW_DEFAULT_METADATA": "local",
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(self.datastore_root),
                "SLUICE_JOB_GPUS": str(spec.gpus),
            },
        )
        return self.local.submit(wrapped)

    def status(self, job_id: str) -> JobState:
        return self.local.status(job_id)

    def logs(self, job_id: str) -> str:
        return self.local.logs(job_id)

    def cancel(self, job_id: str) -> None:
        self.local.cancel(job_id)
