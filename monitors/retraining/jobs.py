"""What a retraining job is, and the small interface every job backend implements.

A job is named by its incident: ``job_id(model, version, fingerprint, window_start_us)`` is the same
for a duplicate alert and after a restart, and every backend uses it as the job's name (the local
folder, Ray's ``submission_id``, the Kubernetes object's name). Submitting a name that already exists
is "already submitted", never a second job.

The training entrypoint receives its request twice, as arguments and as environment variables, so a
script can read whichever it likes:

>>> request = TrainingRequest(
...     job_id="sluice-fraud-0123456789ab", model="fraud", version="1", alert_id="fraud/1/amount/ks@5",
...     train_start_us=0, train_end_us=5_000_000)
>>> request.args()[:6]
['--model', 'fraud', '--version', '1', '--alert-id', 'fraud/1/amount/ks@5']
>>> request.args()[-2:]
['--train-end', '1970-01-01T00:00:05+00:00']
>>> request.env()["SLUICE_TRAIN_END"]
'1970-01-01T00:00:05+00:00'
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

__all__ = [
    "JobBackend",
    "JobError",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "Submission",
    "TrainingRequest",
    "job_id",
]

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobError(RuntimeError):
    """A backend could not do what was asked; the message says what to check."""


class JobNotFound(JobError):
    """The backend does not know the job (any more): never submitted, deleted, or expired."""


def job_id(*, model: str, version: str, fingerprint: str, window_start_us: int) -> str:
    """A name for the job of one incident, valid as a DNS-1123 label (Kubernetes) and a Ray id.

    >>> job_id(model="Fraud_Model", version="3", fingerprint="abc", window_start_us=5)
    'sluice-fraud-model-3-223df433d92c'
    """
    digest = hashlib.sha256(f"{model}\0{version}\0{fingerprint}\0{window_start_us}".encode()).hexdigest()
    readable = re.sub(r"[^a-z0-9]+", "-", f"{model}-{version}".lower()).strip("-")[:36].strip("-")
    return f"sluice-{readable}-{digest[:12]}"


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()


@dataclass(frozen=True, kw_only=True)
class TrainingRequest:
    """What the training entrypoint is told: which model, which alert, and which time range to train on."""

    job_id: str
    model: str
    version: str
    """The model version whose alert started the job."""
    alert_id: str
    train_start_us: int
    train_end_us: int

    def args(self) -> list[str]:
        return [
            "--model", self.model,
            "--version", self.version,
            "--alert-id", self.alert_id,
            "--job-id", self.job_id,
            "--train-start", _iso(self.train_start_us),
            "--train-end", _iso(self.train_end_us),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            "SLUICE_JOB_ID": self.job_id,
            "SLUICE_MODEL": self.model,
            "SLUICE_MODEL_VERSION": self.version,
            "SLUICE_ALERT_ID": self.alert_id,
            "SLUICE_TRAIN_START": _iso(self.train_start_us),
            "SLUICE_TRAIN_END": _iso(self.train_end_us),
        }


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A job to run: the request, the command that trains, and what it needs."""

    request: TrainingRequest
    entrypoint: list[str]
    """The training command as an argument list; the request's arguments are appended to it."""
    gpus: int = 0
    """GPUs the job asks for (Ray's ``entrypoint_num_gpus``, Kubernetes' ``nvidia.com/gpu`` limit)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the job, from config (for example the repo path)."""

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def command(self) -> list[str]:
        return [*self.entrypoint, *self.request.args()]

    def environment(self) -> dict[str, str]:
        return {**self.env, **self.request.env()}


@dataclass(frozen=True)
class Submission:
    job_id: str
    created: bool
    """False when a job of that id existed already: a duplicate alert or a restart."""


class JobBackend(Protocol):
    """Runs training jobs somewhere: a local subprocess, a Ray cluster, Kubernetes."""

    name: str

    def submit(self, spec: JobSpec) -> Submission: ...

    def status(self, job_id: str) -> JobState: ...

    def logs(self, job_id: str) -> str: ...

    def cancel(self, job_id: str) -> None: ...
