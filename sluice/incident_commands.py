"""``sluice alerts``, ``sluice jobs`` and ``sluice models``: look at alerts, follow them, manage retraining
jobs, and the model versions in MLflow's registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sluice.cli import _Context

__all__ = ["alerts", "jobs", "models"]


def _when(us: int | float | None, *, seconds: bool = False) -> str:
    if us is None:
        return "-"
    moment = datetime.fromtimestamp(us if seconds else us / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def alerts() -> None:
    """Drift alerts: what fired, what resolved, and where each was delivered."""


@alerts.command("list")
@click.option("--model", help="Only this model's alerts.")
@click.option("--status", type=click.Choice(["firing", "resolved"]), help="Only alerts in this state.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_obj
def alerts_list(context: _Context, model: str | None, status: str | None, limit: int) -> None:
    """The latest alerts, newest first, with their deliveries."""
    from monitors.alerts.store import AlertStore

    store = AlertStore(engine=_engine(context))
    found = store.alerts(model=model, status=status, limit=limit)
    if not found:
        click.echo("no alerts")
        return
    for alert in found:
        value = "n/a" if alert.value is None else f"{alert.value:.4g}"
        sent = store.deliveries(alert_id=alert.id)
        delivered = sum(1 for item in sent if item.state == "delivered")
        click.echo(
            f"{alert.status:<8} {alert.severity:<8} {alert.model} {alert.version} {alert.feature} "
            f"{alert.metric}={value} (threshold {alert.threshold:g}) window {_when(alert.window_start_us)} "
            f"deliveries {delivered}/{len(sent)} id {alert.id}"
        )
        for item in sent:
            if item.state != "delivered":
                attempts = store.attempts(item.id)
                last = attempts[-1].detail if attempts else "not tried yet"
                click.echo(f"    pending to {item.sink} after {item.attempts} attempts: {last}")


@alerts.command("tail")
@click.option("--model", help="Only this model's alerts.")
@click.option("--from-beginning", is_flag=True, help="Replay the alerts topic from its start.")
@click.option("--idle-timeout", type=float, help="Stop after this many seconds without an alert.")
@click.pass_obj
def alerts_tail(
    context: _Context, model: str | None, from_beginning: bool, idle_timeout: float | None
) -> None:
    """Print alerts as they are sent (from the Kafka alerts topic)."""
    from kafka.errors import KafkaError

    from monitors.alerts.subscription import subscribe

    try:
        subscription = subscribe(
            model=model, from_beginning=from_beginning, idle_timeout_s=idle_timeout, config=context.config
        )
    except KafkaError as error:
        where = context.config.kafka.bootstrap_servers
        raise click.ClickException(f"cannot reach Kafka at {where}: {error}") from None
    try:
        for alert in subscription:
            click.echo(f"{_when(alert.window_end_us)} {alert.status:<8} {alert.severity:<8} {alert.summary}")
    except KeyboardInterrupt:
        subscription.close()


@click.group()
def jobs() -> None:
    """Retraining jobs started by alerts."""


@jobs.command("list")
@click.option("--model", help="Only this model's jobs.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_obj
def jobs_list(context: _Context, model: str | None, limit: int) -> None:
    """Jobs, newest first, with their state as the backend reports it now."""
    from monitors.retraining.backends import job_backend
    from monitors.retraining.gate import promotion_gate
    from monitors.retraining.retrainer import refresh
    from monitors.retraining.store import JobStore

    store = JobStore(engine=_engine(context))
    found = store.jobs(model=model, limit=limit)
    if any(job.state in ("queued", "running") for job in found):
        backend = job_backend(context.config, context.repo_path)
        refresh(store, backend, found, gate=promotion_gate(context.config))
        found = store.jobs(model=model, limit=limit)
    if not found:
        click.echo("no jobs")
        return
    for job in found:
        duration = "-" if job.duration_s is None else f"{job.duration_s:.1f} s"
        click.echo(
            f"{job.job_id} {job.state:<9} {job.backend:<10} {job.model} {job.version} "
            f"created {_when(job.created_at, seconds=True)} took {duration} "
            f"alert {job.alert_id}: {job.detail}"
        )


@jobs.command("logs")
@click.argument("job_id")
@click.pass_obj
def jobs_logs(context: _Context, job_id: str) -> None:
    """Print a job's output, as its backend keeps it."""
    from monitors.retraining.backends import job_backend
    from monitors.retraining.jobs import JobError

    try:
        click.echo(job_backend(context.config, context.repo_path).logs(job_id), nl=False)
    except JobError as error:
        raise click.ClickException(str(error)) from None


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_obj
def jobs_cancel(context: _Context, job_id: str) -> None:
    """Stop a queued or running job."""
    from monitors.retraining.backends import job_backend
    from monitors.retraining.jobs import JobError
    from monitors.retraining.store import JobStore

    store = JobStore(engine=_engine(context))
    job = store.get(job_id)
    if job is not None and job.state not in ("queued", "running"):
        raise click.ClickException(f"job {job_id} is {job.state}: there is nothing to cancel")
    if job is None or job.submitted:
        try:
            job_backend(context.config, context.repo_path).cancel(job_id)
        except JobError as error:
            raise click.ClickException(str(error)) from None
    # A job still waiting for a slot is only in the store; some backends forget a job once it is
    # stopped (Kubernetes deletes it): either way the store remembers it was cancelled.
    store.update(job_id, state="cancelled", finished_at=time.time())
    click.echo(f"cancelled {job_id}")


@click.group()
def models() -> None:
    """Model versions in MLflow's registry: their aliases, runs and promotion decisions."""


@models.command("list")
@click.option("--model", required=True, help="The registered model.")
@click.pass_obj
def models_list(context: _Context, model: str) -> None:
    """Every version, oldest first, with its aliases, source and the gate's decision."""
    registry = _registry(context)
    from monitors.retraining.mlflow import MlflowError

    try:
        found = registry.versions(model)
    except MlflowError as error:
        raise click.ClickException(str(error)) from None
    if not found:
        click.echo(f"no versions of {model} in {registry.tracking_uri}")
        return
    for entry in found:
        aliases = ",".join(entry.aliases) or "-"
        gate = entry.tags.get("sluice.gate", "-")
        click.echo(f"{entry.version:>4}  {aliases:<20} {gate:<9} {entry.source}")
        if "sluice.gate.reason" in entry.tags:
            click.echo(f"      {entry.tags['sluice.gate.reason']}")


@models.command("promote")
@click.option("--model", required=True)
@click.option("--metric", default="log_loss", show_default=True, help="Compared on the held-out slice.")
@click.option("--margin", type=float, default=0.0, show_default=True, help="In the metric's units.")
@click.option("--higher-is-better/--lower-is-better", default=False, show_default=True)
@click.pass_obj
def models_promote(context: _Context, model: str, metric: str, margin: float, higher_is_better: bool) -> None:
    """Run the promotion gate on the model's challenger: it becomes the champion only if it is better."""
    from monitors.retraining.gate import promote
    from monitors.retraining.mlflow import MlflowError

    try:
        decision = promote(
            _registry(context), model, metric=metric, margin=margin, higher_is_better=higher_is_better
        )
    except (MlflowError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    verdict = "promoted to champion" if decision.promoted else "kept as challenger"
    click.echo(f"{model} version {decision.challenger} {verdict}: {decision.reason}")


@models.command("migrate")
@click.pass_obj
def models_migrate(context: _Context) -> None:
    """Move the versions of sluice's own registry table (before MLflow) into MLflow's registry, once."""
    from monitors.retraining.migrate import migrate
    from monitors.retraining.mlflow import MlflowError
    from monitors.retraining.store import LegacyRegistry

    try:
        moved = migrate(LegacyRegistry(engine=_engine(context)), _registry(context))
    except MlflowError as error:
        raise click.ClickException(str(error)) from None
    if not moved:
        click.echo("nothing to migrate")
    for item in moved:
        if item.problem:
            click.echo(f"{item.model} {item.old_version} not moved: {item.problem}", err=True)
            continue
        state = "moved" if item.moved else "already there"
        click.echo(f"{item.model} {item.old_version} -> MLflow version {item.version} ({state})")
    if any(item.problem for item in moved):
        raise SystemExit(1)


def _registry(context: _Context) -> Any:
    from monitors.retraining.mlflow import MlflowError, open_registry

    try:
        return open_registry(context.config)
    except MlflowError as error:
        raise click.ClickException(str(error)) from None


def _engine(context: _Context) -> Any:
    """The alert and job store, or a one-line error when its URL cannot be used."""
    from monitors.database import StoreError, open_store

    try:
        return open_store(context.config.store_url)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
