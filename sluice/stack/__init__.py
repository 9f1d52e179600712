"""The local stack: one Apache Kafka broker, one Redis, one S3 server, one PostgreSQL and a Redis Cluster
of six nodes (``sluice.stack.cluster``), as plain processes, for hosts without Docker.

``up`` and ``down`` are idempotent. ``up`` starts only what does not already answer and waits until
the broker answers a metadata request and Redis answers PING. ``down`` stops only the processes
that ``up`` started, found by their pid files. When ``SLUICE_KAFKA_BOOTSTRAP`` or
``SLUICE_REDIS_URL`` point at another host (or at several brokers, or at ``rediss://``), that
service is the user's: it is checked, never started.

``up(secure=True)`` also starts the secured broker and Redis of ``sluice.stack.secure`` beside them;
``status`` and ``down`` include those once they have been made.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from features.config import SluiceConfig
from sluice.stack.cluster import cluster_nodes, form
from sluice.stack.process import ManagedProcess
from sluice.stack.secure import SecureStack
from sluice.stack.services import (
    KafkaBroker,
    MlflowServer,
    PostgresServer,
    RedisServer,
    S3Server,
    Service,
    StackError,
)

__all__ = ["ServiceStatus", "StackError", "down", "status", "up"]

State = Literal["running", "starting", "stopped", "crashed"]


@dataclass(frozen=True, kw_only=True)
class ServiceStatus:
    """What is true about one service right now."""

    name: str
    address: str
    state: State
    pid: int | None
    managed: bool
    """True when the local stack started (and so may stop) the process."""

    def describe(self) -> str:
        if self.state == "running":
            owner = f"pid {self.pid}, started by sluice" if self.pid else "not started by sluice"
            return f"{self.name:<6} {self.address:<16} running ({owner})"
        if self.state == "starting":
            return f"{self.name:<6} {self.address:<16} starting (pid {self.pid}, not answering yet)"
        if self.state == "crashed":
            return f"{self.name:<6} {self.address:<16} down (pid {self.pid} from the last 'up' is gone)"
        return f"{self.name:<6} {self.address:<16} down"


def _services(config: SluiceConfig, *, secure: bool | None = None) -> list[Service]:
    """The plain stack's services, then the secured ones: when asked for, or (``None``) when made before."""
    services: list[Service] = [KafkaBroker(config=config.kafka, state_dir=config.state_dir)]
    if config.redis.redis_type == "redis":
        services.append(RedisServer(config=config.redis, state_dir=config.state_dir))
    services.append(S3Server(config=config.offline_store, state_dir=config.state_dir))
    services.append(PostgresServer(state_dir=config.state_dir))
    services.append(MlflowServer(server=config.mlflow.server, state_dir=config.state_dir))
    services += cluster_nodes(config)
    secured = SecureStack(state_dir=config.state_dir, project=config.project)
    if secure or (secure is None and secured.home.is_dir()):
        services += secured.services()
    return services


def _process(service: Service, config: SluiceConfig) -> ManagedProcess:
    run_dir = config.state_dir / "run"
    return ManagedProcess(
        name=service.name,
        pid_file=run_dir / f"{service.name}.pid",
        log_file=config.state_dir / "logs" / f"{service.name}.log",
        markers=service.markers,
        stop_signal=signal.SIGINT if isinstance(service, PostgresServer) else signal.SIGTERM,
    )


def status(config: SluiceConfig) -> list[ServiceStatus]:
    """The truthful state of each service: whether it answers, and which process is ours."""
    result = []
    for service in _services(config):
        process = _process(service, config)
        running_pid = process.running_pid()
        if service.answers():
            state: State = "running"
        elif running_pid is not None:
            state = "starting"
        elif process.recorded_pid() is not None:
            state = "crashed"
        else:
            state = "stopped"
        result.append(
            ServiceStatus(
                name=service.name,
                address=service.address,
                state=state,
                pid=running_pid if running_pid is not None else process.recorded_pid(),
                managed=running_pid is not None,
            )
        )
    return result


def up(config: SluiceConfig, *, timeout_s: float = 90.0, secure: bool = False) -> list[ServiceStatus]:
    """Start whatever does not answer yet, and wait until everything answers. With ``secure``, also the
    secured broker and Redis (``sluice.stack.secure``), with the sluice user's grants for the project."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "run").mkdir(exist_ok=True)
    started: list[tuple[Service, ManagedProcess]] = []
    for service in _services(config, secure=secure):
        if service.answers():
            continue
        if not service.is_local:
            raise StackError(
                f"{service.name} at {service.address} does not answer, and it is not the local stack's "
                "address, so sluice will not start it: check the address and that the service is up"
            )
        process = _process(service, config)
        if process.running_pid() is not None:
            # Ours and still starting up (or hung): wait for it below instead of starting a twin.
            started.append((service, process))
            continue
        service.check_prerequisites()
        service.prepare()
        process.start(service.command(), cwd=config.state_dir)
        started.append((service, process))
    for service, process in started:
        _wait_until_answers(service, process, timeout_s=timeout_s)
    for service in _services(config):
        if isinstance(service, PostgresServer):
            service.ensure_database()
    form(cluster_nodes(config), timeout_s=timeout_s)
    if secure:
        secured = SecureStack(state_dir=config.state_dir, project=config.project)
        secured.grant()
        secured.write_env_file()
    return status(config)


def down(config: SluiceConfig, *, only: Collection[str] | None = None) -> list[str]:
    """Stop the processes that ``up`` started (only those named in ``only``, when given: a failure drill
    stops one service and lets ``up`` bring it back); returns the names of those it stopped."""
    services = _services(config)
    unknown = sorted(set(only or ()) - {service.name for service in services})
    if unknown:
        names = ", ".join(service.name for service in services)
        raise StackError(f"the local stack has no service {unknown[0]!r}; it has: {names}")
    stopped = []
    for service in services:
        if only is not None and service.name not in only:
            continue
        if _process(service, config).stop():
            stopped.append(service.name)
    return stopped


def _wait_until_answers(service: Service, process: ManagedProcess, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.answers():
            return
        if process.running_pid() is None:
            raise StackError(
                f"{service.name} exited while starting; the end of {process.log_file}:\n{process.log_tail()}"
            )
        time.sleep(0.5)
    raise StackError(
        f"{service.name} did not answer at {service.address} within {timeout_s:.0f} s; "
        f"the end of {process.log_file}:\n{process.log_tail()}"
    )
