"""The ``sluice`` command: parse arguments, load config, call into the packages, print the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from features.config import ConfigError, SluiceConfig, load_config

__all__ = ["main"]


@dataclass(frozen=True, kw_only=True)
class _Context:
    repo_path: Path
    config: SluiceConfig


class _Commands(click.Group):
    """The command group, which turns an authorization error (a topic, group or key the configured user
    was not granted, met when a command first touches it) into one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            from sluice.access import explain

            context = ctx.obj
            if not isinstance(context, _Context):
                raise
            config = context.config
            line = explain(error, kafka=config.kafka, redis=config.redis, project=config.project)
            if line is None:
                raise
            raise click.ClickException(line) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Feature repo folder (holds sluice.yaml and the definition files).",
)
@click.pass_context
def cli(ctx: click.Context, repo: Path) -> None:
    """sluice: streaming features from Kafka into Redis and Parquet, with drift monitoring."""
    try:
        ctx.obj = _Context(repo_path=repo.resolve(), config=load_config(repo.resolve()))
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


# --- the local stack ------------------------------------------------------------------------------


@cli.group()
def stack() -> None:
    """The local stack: a Kafka broker, Redis, a Redis Cluster and an S3 server, as plain processes."""


@stack.command("up")
@click.option(
    "--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for each service."
)
@click.option(
    "--secure",
    is_flag=True,
    help="Also a Kafka broker with SASL_SSL and ACLs and a TLS-only Redis with an ACL user for the project; "
    "writes <state_dir>/secure/sluice.env to source.",
)
@click.pass_obj
def stack_up(context: _Context, timeout: float, secure: bool) -> None:
    """Start Kafka, Redis, the Redis Cluster and an S3 server unless they answer, and wait until they do."""
    from sluice import stack as local_stack
    from sluice.stack.secure import SecureStack
    from sluice.stack.services import DEFAULT_S3_ENDPOINT
    from sluice.stack.tls import TlsError

    config = context.config
    try:
        statuses = local_stack.up(config, timeout_s=timeout, secure=secure)
    except (local_stack.StackError, TlsError) as error:
        raise click.ClickException(str(error)) from None
    for service in statuses:
        click.echo(service.describe())
    if secure:
        secured = SecureStack(state_dir=config.state_dir, project=config.project)
        click.echo(f"secured: source {secured.env_file} to run sluice as 'sluice' (TLS, SCRAM, ACLs)")
        return
    click.echo(f"SLUICE_KAFKA_BOOTSTRAP={config.kafka.bootstrap_servers}")
    click.echo(f"SLUICE_REDIS_URL={config.redis.url}")
    click.echo(f"SLUICE_S3_ENDPOINT={config.offline_store.endpoint_url or DEFAULT_S3_ENDPOINT}")


@stack.command("down")
@click.option(
    "--service",
    "services",
    multiple=True,
    help="Stop only this service (repeatable), e.g. kafka for a failure drill; 'stack up' restarts it.",
)
@click.pass_obj
def stack_down(context: _Context, services: tuple[str, ...]) -> None:
    """Stop the processes that 'sluice stack up' started, and nothing else."""
    from sluice import stack as local_stack

    try:
        stopped = local_stack.down(context.config, only=services or None)
    except local_stack.StackError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop: no process started by sluice runs"
    )


@stack.command("status")
@click.pass_obj
def stack_status(context: _Context) -> None:
    """Show whether each service answers; exit 1 unless all do."""
    from sluice import stack as local_stack

    statuses = local_stack.status(context.config)
    for service in statuses:
        click.echo(service.describe())
    if any(service.state != "running" for service in statuses):
        raise SystemExit(1)


# --- feature definitions --------------------------------------------------------------------------


def _metrics_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-port`` and ``--metrics-host``, which the worker and the monitor share."""
    command = click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="The address /metrics listens on: 0.0.0.0 in a pod, for Prometheus to scrape.",
    )(command)
    return click.option(
        "--metrics-port",
        type=int,
        default=0,
        help="Serve Prometheus /metrics on --metrics-host:PORT (0: off).",
    )(command)


def _tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--certfile`` and ``--keyfile``, which the feature server and the console share."""
    command = click.option(
        "--keyfile", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key."
    )(command)
    return click.option(
        "--certfile",
        type=click.Path(exists=True, dir_okay=False),
        help="Serve HTTPS with this certificate (PEM; with --keyfile).",
    )(command)


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together: give both, or neither")


def _serve_http(app: Any, *, host: str, port: int, certfile: str | None, keyfile: str | None) -> None:
    """Run an ASGI app with uvicorn, over TLS when given a certificate (the server and the console)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )


@cli.command("plan")
@click.pass_obj
def plan(context: _Context) -> None:
    """Show what 'sluice apply' would change, without changing it."""
    from features.registry import FEAST_CONFIG_FILE, feature_store, plan_changes

    repo = _load_repo(context)
    changes = plan_changes(repo, feature_store(repo))
    feast_config = not (repo.path / FEAST_CONFIG_FILE).exists()
    _print_plan(changes, _missing_topics(repo), repo.config, feast_config=feast_config)


@cli.command("apply")
@click.pass_obj
def apply(context: _Context) -> None:
    """Validate the repo, write Feast's registry, and create the source and dead-letter topics."""
    from features.registry import apply_changes, feature_store, plan_changes, write_feast_config
    from streams import ensure_topics

    repo = _load_repo(context)
    _check_access(context, kafka=True)
    written = write_feast_config(repo)
    store = feature_store(repo)
    changes = plan_changes(repo, store)
    missing = _missing_topics(repo)
    if changes:
        apply_changes(repo, store, changes)
    ensure_topics(
        repo.config.kafka,
        missing,
        partitions=repo.config.topics.partitions,
        replication_factor=repo.config.topics.replication_factor,
    )
    _print_plan(changes, missing, repo.config, feast_config=written is not None)


# --- streaming ------------------------------------------------------------------------------------


@cli.command("worker")
@click.option(
    "--view", "views", multiple=True, help="Only this feature view (repeatable); default: all streamed views."
)
@click.option(
    "--engine",
    type=click.Choice(["kafka", "faust"]),
    default="kafka",
    show_default=True,
    help="kafka: an aiokafka consumer group (fast); faust: a faust-streaming app, one agent per view.",
)
@click.option(
    "--batch-size", type=int, default=20_000, show_default=True, help="The most records in one poll."
)
@click.option(
    "--batch-window-ms", type=int, default=50, show_default=True, help="How long an empty poll waits."
)
@click.option(
    "--max-message-bytes",
    type=int,
    default=1 << 20,
    show_default=True,
    help="Larger messages go to the dead-letter topic as oversized.",
)
@_metrics_options
@click.option(
    "--snapshot-interval",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds between state snapshots of each partition, beside the offline data (0: off; the "
    "kafka engine writes them, both engines read them).",
)
@click.option(
    "--instance-id",
    envvar="SLUICE_WORKER_INSTANCE_ID",
    help="Static group membership (Kafka's group.instance.id): a worker restarted under the same id gets "
    "its partitions back without a rebalance. Unique per worker, for example the pod's name.",
)
@click.option(
    "--loglevel",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="warn",
    show_default=True,
    help="Log level.",
)
@click.pass_obj
def worker(
    context: _Context,
    views: tuple[str, ...],
    engine: str,
    batch_size: int,
    batch_window_ms: int,
    max_message_bytes: int,
    metrics_port: int,
    metrics_host: str,
    snapshot_interval: float,
    instance_id: str | None,
    loglevel: str,
) -> None:
    """Run a stream worker: Kafka into Redis and Parquet. Start several to share the partitions."""
    from prometheus_client import start_http_server

    from streams.metrics import WorkerMetrics
    from streams.transform import TransformBroken
    from streams.worker import WorkerSettings

    repo = _load_repo(context)
    settings = WorkerSettings(
        batch_size=batch_size,
        batch_window_s=batch_window_ms / 1000,
        max_message_bytes=max_message_bytes,
        views=views,
        snapshot_interval_s=snapshot_interval,
        instance_id=instance_id or None,
    )
    _check_access(context, kafka=True, redis=True)
    metrics = WorkerMetrics()
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
    from sluice.memory import release_every

    release_every()  # a long-running process: what it frees goes back to the system
    try:
        if engine == "faust":
            import faust

            from streams.faust_worker import build_app

            app = build_app(repo, settings, metrics=metrics)
            faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
        else:
            import asyncio

            from streams import kafka_worker

            _log_at(loglevel)
            asyncio.run(kafka_worker.run(repo, settings, metrics))
    except (ValueError, TransformBroken) as error:
        raise click.ClickException(str(error)) from None


@cli.command("verify")
@click.option("--view", "views", multiple=True, help="Only this feature view (repeatable).")
@click.pass_obj
def verify(context: _Context, views: tuple[str, ...]) -> None:
    """Check that Redis holds the latest Parquet row of every entity; exit 1 on any difference."""
    from offline_store.verify import verify as verify_view
    from online_store import OnlineStoreUnavailable, connect
    from sluice.progress import Progress

    repo = _load_repo(context)
    _check_access(context, redis=True)
    try:
        client = connect(repo.config.redis)
    except OnlineStoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    reports = []
    for spec in repo.specs:
        if not views or spec.name in views:
            with Progress(f"verifying {spec.name}", unit="entities") as progress:
                reports.append(verify_view(spec, client, progress=progress))
    for report in reports:
        click.echo(report.describe())
    if not all(report.ok for report in reports):
        raise SystemExit(1)


@cli.command("rebuild")
@click.option("--view", "views", multiple=True, required=True, help="The feature view (repeatable).")
@click.pass_obj
def rebuild(context: _Context, views: tuple[str, ...]) -> None:
    """Recompute views' offline rows from their topics (data an older sluice wrote, or a changed
    definition): sets their datasets aside and rewinds the worker group; stop the workers first."""
    from streams.rebuild import RebuildError
    from streams.rebuild import rebuild as rebuild_views

    repo = _load_repo(context)
    known = {spec.name for spec in repo.specs}
    unknown = [name for name in views if name not in known]
    if unknown:
        raise click.ClickException(
            f"no feature view named {', '.join(unknown)}; the views are {', '.join(sorted(known))}"
        )
    specs = [spec for spec in repo.specs if spec.name in views]
    _check_access(context, kafka=True)
    try:
        report = rebuild_views(specs, kafka=repo.config.kafka, group=f"sluice-{repo.config.project}")
    except RebuildError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.describe())


@cli.command("backfill")
@click.option("--view", required=True, help="The feature view.")
@click.option(
    "--events",
    help="Parquet file (a path or an s3://, gs://, abfs:// URI) of raw events: the source's join keys, "
    "timestamp field and value columns.",
)
@click.option("--topic", help="Or a topic of raw events in the source's format (an archive), read whole.")
@click.option(
    "--cutover",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d"]),
    required=True,
    help="UTC: the file's events before it are history, the topic's events from it are live.",
)
@click.pass_obj
def backfill(context: _Context, view: str, events: str | None, topic: str | None, cutover: datetime) -> None:
    """Load a view's history from raw events (a Parquet file or a topic), joined to its stream at a
    cutover; stop the workers first. Sets the view's stream rows aside and rewinds the worker group."""
    from offline_store.dataset import OfflineDataset
    from online_store import OnlineStoreUnavailable, connect
    from online_store.writer import OnlineWriter
    from sluice.progress import Progress
    from streams.backfill import BackfillError, file_messages, plan_backfill, topic_messages
    from streams.rebuild import RebuildError, rebuild

    repo = _load_repo(context)
    names = sorted(spec.name for spec in repo.specs)
    if view not in names:
        raise click.ClickException(f"no feature view named {view}; the views are {', '.join(names)}")
    spec = repo.spec(view)
    if (events is None) == (topic is None):
        raise click.ClickException("give the history as one of --events FILE.parquet or --topic TOPIC")
    _check_access(context, kafka=True, redis=True)
    try:
        with Progress(f"backfilling {view}", unit="steps") as progress:
            messages = (
                file_messages(events, spec)
                if events is not None
                else topic_messages(repo.config.kafka, str(topic))
            )
            plan = plan_backfill(spec, messages, cutover=cutover.replace(tzinfo=UTC))
            progress(1, 4)  # read and computed
            client = connect(repo.config.redis)
            rebuilt = rebuild([spec], kafka=repo.config.kafka, group=f"sluice-{repo.config.project}")
            progress(2, 4)  # the stream's rows set aside, the group rewound
            online = plan.write(OfflineDataset(spec=spec))
            progress(3, 4)  # offline
            written = OnlineWriter(client=client, spec=spec).write(online)
            progress(4, 4)  # online
    except (BackfillError, RebuildError, OnlineStoreUnavailable) as error:
        raise click.ClickException(str(error)) from None
    click.echo(plan.report.describe())
    click.echo(f"  {written} online rows written")
    click.echo(rebuilt.describe())


@cli.command("materialize")
@click.option("--start", type=click.DateTime(), help="Only rows with event time at or after this (UTC).")
@click.option("--end", type=click.DateTime(), help="Only rows with event time before this (UTC).")
@click.option("--view", "views", multiple=True, help="Only this feature view (repeatable).")
@click.pass_obj
def materialize(
    context: _Context, start: datetime | None, end: datetime | None, views: tuple[str, ...]
) -> None:
    """Rebuild Redis from the Parquet datasets; never overwrites a newer online value."""
    from offline_store.materialize import materialize as materialize_view
    from online_store import OnlineStoreUnavailable, connect
    from sluice.progress import Progress

    repo = _load_repo(context)
    _check_access(context, redis=True)
    try:
        client = connect(repo.config.redis)
    except OnlineStoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    bounds = [moment.replace(tzinfo=UTC) if moment is not None else None for moment in (start, end)]
    for spec in repo.specs:
        if not views or spec.name in views:
            with Progress(f"materializing {spec.name}", unit="entities") as progress:
                report = materialize_view(spec, client, start=bounds[0], end=bounds[1], progress=progress)
            click.echo(report.describe())


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=6566, show_default=True, help="Feast's feature server port.")
@click.option(
    "--token", envvar="SLUICE_SERVE_TOKEN", help="Require this bearer token (or set SLUICE_SERVE_TOKEN)."
)
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True)
@click.option("--max-rows", type=int, default=1000, show_default=True, help="Entity rows per request.")
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to answer a request (its body included) before answering 503.",
)
@_tls_options
@click.pass_obj
def serve(
    context: _Context,
    host: str,
    port: int,
    token: str | None,
    max_body_bytes: int,
    max_rows: int,
    request_timeout: float,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Serve POST /get-online-features and POST /push (Feast's JSON), GET /health and GET /metrics."""
    from online_store import AsyncOnlineClient
    from online_store.catalog import CatalogError
    from online_store.server import ServerSettings, create_app

    _check_tls(certfile, keyfile)
    _check_access(context, redis=True)
    try:
        client = AsyncOnlineClient(repo_path=context.repo_path, config=context.config)
    except CatalogError as error:
        raise click.ClickException(str(error)) from None
    settings = ServerSettings(
        token=token, max_body_bytes=max_body_bytes, max_rows=max_rows, request_timeout_s=request_timeout
    )

    def pusher() -> Any:
        from features.repo import load_repo
        from streams.push import Pusher

        return Pusher(repo=load_repo(context.repo_path, config=context.config))

    app = create_app(client, settings, pusher=pusher)
    scheme = "https" if certfile else "http"
    click.echo(f"serving {len(client.catalog.views)} feature views on {scheme}://{host}:{port}")
    _serve_http(app, host=host, port=port, certfile=certfile, keyfile=keyfile)


@cli.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8790, show_default=True)
@click.option(
    "--token",
    envvar="SLUICE_UI_TOKEN",
    help="Sign-in token (or set SLUICE_UI_TOKEN); default: a new one, printed at start.",
)
@_tls_options
@click.pass_obj
def ui(
    context: _Context, host: str, port: int, token: str | None, certfile: str | None, keyfile: str | None
) -> None:
    """Serve the read-only web console: freshness, lag, dead letters, drift, alerts and jobs."""
    import secrets

    from monitors.database import StoreError
    from sluice.console import ConsoleSettings, create_console, open_sources

    _check_tls(certfile, keyfile)
    repo = _load_repo(context)
    try:
        sources = open_sources(repo)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    generated = token is None
    token = token or secrets.token_urlsafe(24)
    app = create_console(sources, ConsoleSettings(token=token, secure_cookie=certfile is not None))
    scheme = "https" if certfile else "http"
    click.echo(f"console for {len(sources.specs)} feature views on {scheme}://{host}:{port}")
    if generated:
        click.echo(f"sign in with the token {token}")
    _serve_http(app, host=host, port=port, certfile=certfile, keyfile=keyfile)


@cli.command("profile")
@click.option("--model", required=True, help="Model name.")
@click.option("--version", "model_version", required=True, help="Model version.")
@click.option(
    "--training", type=click.Path(exists=True, path_type=Path), required=True, help="Training set (Parquet)."
)
@click.option("--feature", "features", multiple=True, help="Only this column (repeatable); default: all.")
@click.option("--bins", type=int, default=20, show_default=True)
@click.option("--sample-size", type=int, default=10_000, show_default=True)
@click.option(
    "--prediction-column",
    help="The model's output on these rows (a validation set), for its reference performance.",
)
@click.option("--label-column", help="The true values of these rows. With --prediction-column.")
@click.pass_obj
def profile(
    context: _Context,
    model: str,
    model_version: str,
    training: Path,
    features: tuple[str, ...],
    bins: int,
    sample_size: int,
    prediction_column: str | None,
    label_column: str | None,
) -> None:
    """Build and save the reference profile of a model version from its training set."""
    from monitors.drift.profile import ProfileError, ReferenceProfile
    from sluice.progress import Progress

    try:
        with Progress(f"profiling {model} {model_version}", unit="steps") as progress:
            built = ReferenceProfile.build(
                training,
                model=model,
                version=model_version,
                features=list(features) or None,
                bins=bins,
                sample_size=sample_size,
                prediction_column=prediction_column,
                label_column=label_column,
            )
            progress(1, 2)  # read and profiled
            folder = built.save(context.config.profiles_location, storage=context.config.offline_store)
            progress(2, 2)  # saved
    except ProfileError as error:
        raise click.ClickException(str(error)) from None
    kinds = [feature.kind for feature in built.features.values()]
    click.echo(
        f"profiled {built.rows} rows of {model} {model_version}: {kinds.count('numeric')} numeric and "
        f"{kinds.count('categorical')} categorical features"
        + (f", {len(built.predictions)} reference outcomes" if built.predictions is not None else "")
        + f" -> {folder}"
    )


@cli.command("monitor")
@click.option("--topic", default="predictions", show_default=True, help="The prediction events topic.")
@click.option("--window-seconds", type=float, default=60.0, show_default=True)
@click.option("--lateness-seconds", type=float, default=10.0, show_default=True)
@click.option("--metric", "metrics", multiple=True, help="FEATURE=METRIC, e.g. amount=ks (repeatable).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Level of the p-value tests.")
@click.option(
    "--quality-alpha",
    type=float,
    default=0.01,
    show_default=True,
    help="Chance of a false data-quality flag in a window like the reference (0: no quality checks).",
)
@click.option(
    "--kserve-feature", "kserve_features", multiple=True, help="Names of KServe list inputs, in order."
)
@click.option(
    "--performance",
    "performance",
    multiple=True,
    help="MODEL=binary:OUTPUT or MODEL=regression:OUTPUT: judge that output against the labels (repeatable).",
)
@click.option("--performance-window-seconds", type=float, default=3600.0, show_default=True)
@click.option(
    "--label-delay-seconds",
    type=float,
    default=3600.0,
    show_default=True,
    help="How long after a performance window's end its labels may come; it is final then.",
)
@click.option(
    "--performance-tolerance",
    type=float,
    default=0.1,
    show_default=True,
    help="How much worse than the reference (relative) a metric may be before it alerts.",
)
@click.option("--min-labels", type=int, default=100, show_default=True, help="Fewer labels alert nothing.")
@click.option(
    "--performance-alpha",
    type=float,
    default=0.01,
    show_default=True,
    help="A metric alerts only when its labels show it worse than the tolerance allows at this level.",
)
@click.option(
    "--join-capacity",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Predictions held in memory for their label (<topic>.labelled), and as many early labels; "
    "about 0.3 KiB plus the event each.",
)
@click.option(
    "--engine",
    type=click.Choice(["kafka", "faust"]),
    default="kafka",
    show_default=True,
    help="kafka: an aiokafka consumer (fast); faust: a faust-streaming agent.",
)
@click.option(
    "--skew-view", "skew_views", multiple=True, help="Check served values against this feature view offline."
)
@click.option(
    "--skew-threshold", type=float, default=0.01, show_default=True, help="Mismatch rate that is skew."
)
@_metrics_options
@click.option(
    "--loglevel",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="warn",
    show_default=True,
)
@click.pass_obj
def monitor(
    context: _Context,
    topic: str,
    window_seconds: float,
    lateness_seconds: float,
    metrics: tuple[str, ...],
    alpha: float,
    quality_alpha: float,
    performance: tuple[str, ...],
    performance_window_seconds: float,
    label_delay_seconds: float,
    performance_tolerance: float,
    min_labels: int,
    performance_alpha: float,
    join_capacity: int,
    kserve_features: tuple[str, ...],
    engine: str,
    skew_views: tuple[str, ...],
    skew_threshold: float,
    metrics_port: int,
    metrics_host: str,
    loglevel: str,
) -> None:
    """Score prediction events for drift, window by window, against each model version's reference profile."""
    import asyncio
    from datetime import timedelta

    from monitors.drift.metrics import UnknownMetricError, metric
    from monitors.runtime.monitor import MonitorSettings
    from monitors.runtime.performance import PerformanceSettings
    from streams import ensure_topics

    chosen = {}
    for item in metrics:
        feature, separator, name = item.partition("=")
        if not separator:
            raise click.BadParameter(f"{item!r} is not FEATURE=METRIC", param_hint="--metric")
        try:
            chosen[feature] = metric(name).name
        except UnknownMetricError as error:
            raise click.BadParameter(str(error), param_hint="--metric") from None
    skew = None
    if skew_views:
        from monitors.drift.skew import SkewSettings

        repo = _load_repo(context)
        try:
            views = tuple(repo.spec(name) for name in skew_views)
        except KeyError as error:
            raise click.BadParameter(str(error.args[0]), param_hint="--skew-view") from None
        skew = SkewSettings(views=views, threshold=skew_threshold)
    _check_metrics(context.config, chosen)
    tasks = _performance_tasks(performance)
    try:
        settings = MonitorSettings(
            window=timedelta(seconds=window_seconds),
            lateness=timedelta(seconds=lateness_seconds),
            profiles=context.config.profiles_location,
            storage=context.config.offline_store,
            metrics=chosen,
            alpha=alpha,
            quality_alpha=quality_alpha,
            skew=skew,
            join_capacity=join_capacity,
            performance=PerformanceSettings(
                tasks=tasks,
                window=timedelta(seconds=performance_window_seconds),
                label_delay=timedelta(seconds=label_delay_seconds),
                tolerance=performance_tolerance,
                min_labels=min_labels,
                alpha=performance_alpha,
            )
            if tasks
            else None,
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    config = context.config
    from aiokafka.errors import KafkaError as AIOKafkaError
    from kafka.errors import KafkaError

    _check_access(context, kafka=True)
    try:
        ensure_topics(config.kafka, [topic], partitions=config.topics.partitions)
    except KafkaError as error:
        from sluice.access import explain

        denied = explain(error, kafka=config.kafka, redis=None)
        if denied is not None:
            raise click.ClickException(denied) from None
        raise click.ClickException(
            f"cannot reach Kafka at {config.kafka.bootstrap_servers}: {error}"
        ) from None
    from monitors.database import StoreError
    from monitors.runtime.prometheus import MonitorMetrics

    counters = MonitorMetrics()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host, registry=counters.registry)
    from monitors.runtime.pipeline import MonitorPipeline

    try:
        pipeline = MonitorPipeline.open(
            config,
            topic=topic,
            settings=settings,
            kserve_features=list(kserve_features),
            repo_path=context.repo_path,
            metrics=counters,
        )
        from sluice.memory import release_every

        release_every()  # a long-running process: what it frees goes back to the system
        if engine == "faust":
            from monitors.runtime import faust_engine

            faust_engine.run(config, pipeline, loglevel=loglevel)
        else:
            from monitors.runtime import kafka_engine

            _log_at(loglevel)
            asyncio.run(kafka_engine.run(config, pipeline))
    except (KafkaError, AIOKafkaError) as error:
        raise click.ClickException(f"Kafka at {config.kafka.bootstrap_servers} failed: {error}") from None
    except StoreError as error:
        raise click.ClickException(str(error)) from None


def _performance_tasks(flags: tuple[str, ...]) -> dict[str, Any]:
    """``--performance MODEL=TASK:OUTPUT`` flags as tasks, each checked."""
    from monitors.runtime.performance import PerformanceTask

    tasks = {}
    for flag in flags:
        model, equals, rest = flag.partition("=")
        task, colon, output = rest.partition(":")
        if not equals or not colon or not model or not output or task not in ("binary", "regression"):
            raise click.BadParameter(
                f"{flag!r} is not MODEL=binary:OUTPUT or MODEL=regression:OUTPUT (for example "
                "fraud=binary:score, where score is the output that holds the positive class's probability)",
                param_hint="--performance",
            )
        tasks[model] = PerformanceTask(task=task, output=output)  # type: ignore[arg-type]
    return tasks


def _check_metrics(config: SluiceConfig, chosen: dict[str, str]) -> None:
    """``--metric FEATURE=METRIC`` against the profiles saved so far: a feature no model has, or a metric
    for another type of feature, is a mistake to say now, not when a window closes. A model profiled
    later is checked when it is loaded; what does not fit is logged, counted and left out for it."""
    if not chosen:
        return
    from monitors.drift.detector import DriftDetector
    from monitors.drift.profile import ProfileError, ReferenceProfile, saved_profiles
    from offline_store.storage import StorageError

    root, storage = config.profiles_location, config.offline_store
    try:
        versions = saved_profiles(root, storage=storage)
        profiles = [ReferenceProfile.load(root, model=m, version=v, storage=storage) for m, v in versions]
    except (ProfileError, StorageError, OSError) as error:
        click.echo(f"warning: cannot read the reference profiles to check --metric: {error}", err=True)
        return
    if not profiles:
        click.echo(
            f"warning: no reference profiles under {root} yet: --metric is checked as they load", err=True
        )
        return
    known = {name for profile in profiles for name in profile.features}
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise click.BadParameter(
            f"no model's reference profile has feature {', '.join(map(repr, unknown))}; "
            f"the profiles under {root} have: {', '.join(sorted(known))}",
            param_hint="--metric",
        )
    for profile in profiles:
        _, problems = DriftDetector.applicable(profile, chosen)
        if problems:
            raise click.BadParameter(
                f"model {profile.model} version {profile.version}: {problems[0]}", param_hint="--metric"
            )


@cli.command("report")
@click.option("--model", required=True)
@click.option("--version", "model_version", required=True)
@click.option(
    "--window-start", type=int, help="The window's start in epoch microseconds; default: the latest."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("drift-report.html"),
    show_default=True,
)
@click.pass_obj
def report(context: _Context, model: str, model_version: str, window_start: int | None, out: Path) -> None:
    """Write Evidently's HTML drift report for a closed window against the reference profile."""
    from monitors.drift.profile import ProfileError, ReferenceProfile
    from monitors.drift.report import ReportError, drift_report_html, read_summary, window_summary_path
    from offline_store.storage import Location, StorageError

    config = context.config
    try:
        reference = ReferenceProfile.load(
            context.config.profiles_location,
            model=model,
            version=model_version,
            storage=context.config.offline_store,
        )
        path = window_summary_path(
            Location.parse(config.scores_location, config.offline_store),
            model=model,
            version=model_version,
            window_start_us=window_start,
        )
    except (ProfileError, ReportError, StorageError) as error:
        raise click.ClickException(str(error)) from None
    out.write_text(drift_report_html(reference, read_summary(path)), encoding="utf-8")
    click.echo(f"wrote {out} for {path.name.split('.')[0]} of {model} {model_version}")


def _load_repo(context: _Context) -> Any:
    """The validated repo, or a clean error listing every problem (never a traceback)."""
    from features.repo import RepoLoadError, load_repo
    from features.validation import InvalidDefinitions

    try:
        repo = load_repo(context.repo_path, config=context.config)
    except InvalidDefinitions as error:
        count = len(error.errors)
        raise click.ClickException(
            f"{count} problem{'s' * (count > 1)} in the feature repo:\n{error}"
        ) from None
    except RepoLoadError as error:
        raise click.ClickException(str(error)) from None
    finally:
        _quiet_third_party_warnings()  # again: importing Feast resets the filters
    return repo


def _check_access(context: _Context, *, kafka: bool = False, redis: bool = False) -> None:
    """Fail in one line when a server refuses this process's certificate trust, credentials or grants,
    before a client library turns that into a retry loop (``sluice.access``)."""
    from sluice.access import AccessDenied, check_kafka, check_redis

    try:
        if kafka:
            check_kafka(context.config.kafka)
        if redis:
            check_redis(context.config.redis, project=context.config.project)
    except AccessDenied as error:
        raise click.ClickException(str(error)) from None


def _missing_topics(repo: Any) -> list[str]:
    from streams import admin_client

    needed = dict.fromkeys(name for spec in repo.specs for name in (spec.topic, spec.dlq_topic))
    admin = admin_client(repo.config.kafka)
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    return [name for name in needed if name not in existing]


def _print_plan(
    changes: list[Any], missing_topics: list[str], config: SluiceConfig, *, feast_config: bool
) -> None:
    for change in changes:
        click.echo(str(change))
    partitions = config.topics.partitions
    for topic in missing_topics:
        click.echo(f"+ Topic {topic} ({partitions} partition{'s' * (partitions > 1)})")
    if feast_config:
        click.echo("+ File feature_store.yaml (for Feast's SDK: FeatureStore(repo_path=...))")
    if not changes and not missing_topics and not feast_config:
        click.echo("no changes: the registry and the topics match the repo")


def _log_at(loglevel: str) -> None:
    """Log to stderr at one of the CLI's (faust's) level names: crit, error, warn, info, debug."""
    import logging

    level = {"crit": "CRITICAL", "warn": "WARNING"}.get(loglevel, loglevel.upper())
    logging.basicConfig(level=level, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")


def _quiet_third_party_warnings() -> None:
    """Feast flags stream and on-demand feature views as alpha, and kafka-python calls a deprecated
    importlib API: none of it is actionable for a sluice user."""
    import warnings

    warnings.filterwarnings("ignore", message="Stream feature views are experimental")
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _add_incident_commands() -> None:
    from sluice.incident_commands import alerts, jobs, models

    cli.add_command(alerts)
    cli.add_command(jobs)
    cli.add_command(models)


_add_incident_commands()


def main() -> None:
    _quiet_third_party_warnings()
    cli(prog_name="sluice")
