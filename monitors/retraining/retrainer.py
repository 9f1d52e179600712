"""From firing alerts to retraining jobs: the policy decides, the store remembers, the backend runs.

``on_alerts`` records one job per accepted incident (its id comes from the incident, so a duplicate
alert or a replay after a restart adds nothing) and ``pump`` moves jobs along: it submits waiting jobs
while fewer than ``max_running`` are queued or running at the backend, and copies the backend's state of
the others into the store. A job recorded but not yet submitted when the process stops is submitted
by the next ``pump``; one submitted twice is "already submitted" at the backend.

When a job has succeeded, ``gate`` (the promotion gate, ``monitors.retraining.gate.job_gate``) decides
on the version it registered before the job is recorded as succeeded, with the decision in its detail;
while the gate cannot run (the registry is away), the job stays running in the store and the next
``pump`` tries again, so no job's version skips the gate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from monitors.alerts.alert import Alert
from monitors.retraining.jobs import (
    FINISHED,
    JobBackend,
    JobError,
    JobNotFound,
    JobSpec,
    job_id,
)
from monitors.retraining.policy import RetrainPolicy
from monitors.retraining.store import Job, JobStore

__all__ = ["Retrainer", "refresh"]

log = logging.getLogger("sluice.retraining")


class Retrainer:
    def __init__(
        self,
        *,
        policy: RetrainPolicy,
        store: JobStore,
        backend: JobBackend,
        entrypoint: list[str],
        training_window_us: int,
        max_running: int = 1,
        gpus: int = 0,
        env: dict[str, str] | None = None,
        dry_run: bool = False,
        gate: Callable[[Job], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not entrypoint and not dry_run:
            raise ValueError("retraining needs an entrypoint: set retraining.entrypoint in sluice.yaml")
        self.policy = policy
        self.store = store
        self.backend = backend
        self.entrypoint = entrypoint
        self.training_window_us = training_window_us
        self.max_running = max_running
        self.gpus = gpus
        self.env = env or {}
        self.dry_run = dry_run
        self.gate = gate
        self._clock = clock

    def on_alerts(self, alerts: Iterable[Alert]) -> list[Job]:
        """Record a job for each alert the policy accepts; returns the jobs recorded now."""
        recorded = []
        for alert in alerts:
            decision = self.policy.decide(
                alert, last_job_window_end_us=self.store.last_window_end_us(alert.model)
            )
            if not decision.retrain:
                log.info("no retraining for alert %s: %s", alert.id, decision.reason)
                continue
            job = Job(
                job_id=job_id(
                    model=alert.model,
                    version=alert.version,
                    fingerprint=alert.fingerprint,
                    window_start_us=alert.window_start_us,
                ),
                alert_id=alert.id,
                model=alert.model,
                version=alert.version,
                backend=self.backend.name,
                state="dry-run" if self.dry_run else "queued",
                submitted=False,
                window_end_us=alert.window_end_us,
                train_start_us=alert.window_end_us - self.training_window_us,
                created_at=self._clock(),
                finished_at=None,
                detail=decision.reason,
            )
            if self.store.add(job):
                log.info("%s job %s for alert %s: %s", job.state, job.job_id, alert.id, decision.reason)
                recorded.append(job)
        self.pump()
        return recorded

    def pump(self) -> None:
        refresh(self.store, self.backend, self.store.active(), clock=self._clock, gate=self.gate)
        if self.dry_run:
            return
        active = self.store.active()
        # Jobs of another backend (before a change of retraining.backend) are not ours to count.
        running = sum(1 for job in active if job.submitted and job.backend == self.backend.name)
        for job in active:
            if not job.submitted and running < self.max_running:
                self._submit(job)
                running += 1

    def _submit(self, job: Job) -> None:
        spec = JobSpec(request=job.request(), entrypoint=self.entrypoint, gpus=self.gpus, env=self.env)
        try:
            submission = self.backend.submit(spec)
        except JobError as error:
            log.warning("submitting job %s failed, will retry: %s", job.job_id, error)
            return
        detail = job.detail if submission.created else f"{job.detail}; already submitted before"
        self.store.update(job.job_id, submitted=True, backend=self.backend.name, detail=detail)
        submitted = replace(job, submitted=True, backend=self.backend.name)
        refresh(self.store, self.backend, [submitted], clock=self._clock, gate=self.gate)


def refresh(
    store: JobStore,
    backend: JobBackend,
    jobs: Iterable[Job],
    *,
    clock: Callable[[], float] = time.time,
    gate: Callable[[Job], str] | None = None,
) -> None:
    """Copy the backend's state of each submitted, unfinished job into the store; a job that succeeded
    goes through ``gate`` first."""
    for job in jobs:
        if not job.submitted or job.state not in ("queued", "running") or job.backend != backend.name:
            continue
        detail = job.detail
        try:
            state = backend.status(job.job_id)
        except JobNotFound as error:
            # Deleted, expired or never started: it will not finish, and must not hold a slot.
            state, detail = "failed", f"{job.detail}; lost: {error}"
        except JobError as error:
            log.warning("status of job %s: %s", job.job_id, error)
            continue
        if state == "succeeded" and gate is not None and job.state != "succeeded":
            try:
                detail = f"{detail}; {gate(job)}"
            except Exception as error:  # the registry is away, or refused: try again at the next pump
                log.warning("promotion gate of job %s: %s; will try again", job.job_id, error)
                continue
        if state != job.state:
            finished = clock() if state in FINISHED else None
            # Only from the state we read: a concurrent `sluice jobs cancel` wins.
            store.update(job.job_id, when_state=job.state, state=state, finished_at=finished, detail=detail)
            log.info("job %s is %s", job.job_id, state)
