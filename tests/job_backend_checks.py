"""The conformance checks every job backend passes (local, Ray, Kubernetes): one contract, one suite.

``tests/test_job_backends.py`` runs them over each backend. A backend's fixture gives the backend and
a way to build a spec whose entrypoint prints its training window and exits with the given code.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from monitors.retraining.jobs import JobBackend, JobSpec, JobState, TrainingRequest, job_id

PRINT_WINDOW = "import os; print('training', os.environ['SLUICE_MODEL'], os.environ['SLUICE_TRAIN_END'])"


def spec(*, incident: str, code: int = 0, sleep_s: float = 0.0) -> JobSpec:
    """A job for the incident ``incident`` that prints its request, sleeps, and exits with ``code``."""
    request = TrainingRequest(
        job_id=job_id(model="fraud", version="1", fingerprint=incident, window_start_us=0),
        model="fraud",
        version="1",
        alert_id=f"{incident}-0",
        train_start_us=0,
        train_end_us=5_000_000,
    )
    script = f"{PRINT_WINDOW}; import time, sys; time.sleep({sleep_s}); sys.exit({code})"
    return JobSpec(request=request, entrypoint=[sys.executable, "-c", script])


def wait_finished(backend: JobBackend, job: str, timeout_s: float = 120) -> JobState:
    deadline = time.monotonic() + timeout_s
    while True:
        state = backend.status(job)
        if state in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def check_runs_and_logs(backend: JobBackend, make: Callable[..., JobSpec] = spec) -> None:
    job = make(incident="runs")
    assert backend.submit(job).created
    assert wait_finished(backend, job.job_id) == "succeeded"
    # The request reached the entrypoint: model and the end of the training window.
    assert "training fraud 1970-01-01T00:00:05+00:00" in backend.logs(job.job_id)


def check_duplicate_is_already_submitted(backend: JobBackend, make: Callable[..., JobSpec] = spec) -> None:
    job = make(incident="duplicate")
    assert backend.submit(job).created
    assert not backend.submit(job).created  # same incident, same id: no second job
    wait_finished(backend, job.job_id)


def check_failure_is_failed(backend: JobBackend, make: Callable[..., JobSpec] = spec) -> None:
    job = make(incident="fails", code=3)
    backend.submit(job)
    assert wait_finished(backend, job.job_id) == "failed"


def check_cancel(backend: JobBackend, make: Callable[..., JobSpec] = spec) -> None:
    job = make(incident="cancelled", sleep_s=60)
    backend.submit(job)
    deadline = time.monotonic() + 60
    while backend.status(job.job_id) == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    backend.cancel(job.job_id)
    assert wait_finished(backend, job.job_id, timeout_s=60) in ("cancelled", "failed")


CHECKS = [check_runs_and_logs, check_duplicate_is_already_submitted, check_failure_is_failed, check_cancel]
