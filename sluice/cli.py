"""The ``sluice`` command: parse arguments, load config, call into the packages, print the result."""

from __future__ import annotations

from pathlib import Path

import click

from features.config import ConfigError, SluiceConfig, load_config

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Feature repo folder (holds sluice.yaml).",
)
@click.pass_context
def cli(ctx: click.Context, repo: Path) -> None:
    """sluice: streaming features from Kafka into Redis and Parquet, with drift monitoring."""
    try:
        ctx.obj = load_config(repo.resolve())
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@cli.group()
def stack() -> None:
    """The local stack: an Apache Kafka broker and Redis, as plain processes."""


@stack.command("up")
@click.option(
    "--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for each service."
)
@click.pass_obj
def stack_up(config: SluiceConfig, timeout: float) -> None:
    """Start Kafka and Redis unless they already answer, and wait until they do."""
    from sluice import stack as local_stack

    try:
        statuses = local_stack.up(config, timeout_s=timeout)
    except local_stack.StackError as error:
        raise click.ClickException(str(error)) from None
    for service in statuses:
        click.echo(service.describe())
    click.echo(f"SLUICE_KAFKA_BOOTSTRAP={config.kafka.bootstrap_servers}")
    click.echo(f"SLUICE_REDIS_URL={config.redis.url}")


@stack.command("down")
@click.pass_obj
def stack_down(config: SluiceConfig) -> None:
    """Stop the processes that 'sluice stack up' started, and nothing else."""
    from sluice import stack as local_stack

    stopped = local_stack.down(config)
    click.echo(
        f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop: no process started by sluice runs"
    )


@stack.command("status")
@click.pass_obj
def stack_status(config: SluiceConfig) -> None:
    """Show whether each service answers; exit 1 unless all do."""
    from sluice import stack as local_stack

    statuses = local_stack.status(config)
    for service in statuses:
        click.echo(service.describe())
    if any(service.state != "running" for service in statuses):
        raise SystemExit(1)


def main() -> None:
    cli(prog_name="sluice")
