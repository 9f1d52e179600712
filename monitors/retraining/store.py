"""Retraining jobs, in the alert store's database; and the model versions of the release before MLflow.

A job's row is created once, keyed by its job id: a duplicate alert or a restart finds the row and
starts nothing. Its state follows the backend's (queued, running, succeeded, failed, cancelled), or is
``dry-run`` when the policy only records what it would have done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from monitors.database import jobs, model_versions
from monitors.retraining.jobs import TrainingRequest

__all__ = ["Job", "JobStore", "LegacyRegistry", "ModelVersion"]

ACTIVE = ("queued", "running")


@dataclass(frozen=True, kw_only=True)
class Job:
    job_id: str
    alert_id: str
    model: str
    version: str
    backend: str
    state: str
    submitted: bool
    window_end_us: int
    train_start_us: int
    created_at: float
    finished_at: float | None
    detail: str

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.created_at

    def request(self) -> TrainingRequest:
        """What the job's entrypoint is told: it trains up to the end of the alert's window."""
        return TrainingRequest(
            job_id=self.job_id,
            model=self.model,
            version=self.version,
            alert_id=self.alert_id,
            train_start_us=self.train_start_us,
            train_end_us=self.window_end_us,
        )


class JobStore:
    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine

    def add(self, job: Job) -> bool:
        """Insert the job; False when a job of that id exists already."""
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(jobs).values(**_fields(job)))
        except IntegrityError:
            return False
        return True

    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        return Job(**row._mapping) if row else None

    def jobs(self, *, model: str | None = None, limit: int = 100) -> list[Job]:
        query = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if model is not None:
            query = query.where(jobs.c.model == model)
        with self.engine.connect() as connection:
            return [Job(**row._mapping) for row in connection.execute(query)]

    def last_window_end_us(self, model: str) -> int | None:
        """The latest alert window of any job of ``model``, dry runs included."""
        with self.engine.connect() as connection:
            query = (
                select(jobs.c.window_end_us)
                .where(jobs.c.model == model)
                .order_by(jobs.c.window_end_us.desc())
            )
            return connection.execute(query.limit(1)).scalar()

    def active(self) -> list[Job]:
        """Jobs waiting for a slot or queued or running at the backend, oldest first."""
        query = select(jobs).where(jobs.c.state.in_(ACTIVE)).order_by(jobs.c.created_at, jobs.c.job_id)
        with self.engine.connect() as connection:
            return [Job(**row._mapping) for row in connection.execute(query)]

    def update(self, job_id: str, *, when_state: str | None = None, **values: Any) -> bool:
        """Change a job's columns, only while it is in ``when_state`` if given; False if nothing changed."""
        query = update(jobs).where(jobs.c.job_id == job_id)
        if when_state is not None:
            query = query.where(jobs.c.state == when_state)
        with self.engine.begin() as connection:
            return connection.execute(query.values(**values)).rowcount > 0


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    model: str
    version: str
    uri: str
    job_id: str | None
    metrics: dict[str, float]
    created_at: float


class LegacyRegistry:
    """The model versions that sluice kept in its own table before MLflow became the registry
    (``sluice_model_versions``): read by ``monitors.retraining.migrate``, which moves them to MLflow."""

    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine

    def models(self) -> list[str]:
        with self.engine.connect() as connection:
            return sorted(row[0] for row in connection.execute(select(model_versions.c.model).distinct()))

    def versions(self, model: str) -> list[ModelVersion]:
        query = (
            select(model_versions)
            .where(model_versions.c.model == model)
            .order_by(model_versions.c.created_at)
        )
        with self.engine.connect() as connection:
            return [
                ModelVersion(**{**row._mapping, "metrics": json.loads(row.metrics)})
                for row in connection.execute(query)
            ]

    def add(self, entry: ModelVersion) -> None:
        """A row as the release before MLflow wrote it (for the migration's tests)."""
        with self.engine.begin() as connection:
            connection.execute(
                insert(model_versions).values(**{**entry.__dict__, "metrics": json.dumps(entry.metrics)})
            )


def _fields(job: Job) -> dict[str, Any]:
    return dict(job.__dict__)
