"""The local stack's Redis Cluster: three primaries and three replicas of Debian's redis-server on loopback.

Each node is a ``Service`` like the single Redis (started when it does not answer, stopped by its pid
file). Once all six answer, ``form`` joins them with ``redis-cli --cluster create`` if they are not a
cluster yet, and waits until every slot is served. The cluster's first node is ``SLUICE_REDIS_CLUSTER_URL``
(default ``redis://127.0.0.1:7000/0``) and the others take the next five ports; ``none`` there starts
no cluster. When the online store itself is configured as a cluster on loopback, that is the one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from features.config import RedisConfig, SluiceConfig
from sluice.stack.services import DEPLOY_LOCAL, LOOPBACK_HOSTS, StackError

__all__ = ["CLUSTER_NODES", "ClusterNode", "cluster_config", "cluster_nodes", "form"]

CLUSTER_NODES = 6
"""Three primaries, each with one replica."""
DEFAULT_CLUSTER_URL = "redis://127.0.0.1:7000/0"


def cluster_config(config: SluiceConfig, environ: Mapping[str, str] | None = None) -> RedisConfig | None:
    """The local cluster's connection: the online store's when it is a cluster, else the stack's own;
    None when ``SLUICE_REDIS_CLUSTER_URL=none``."""
    if config.redis.redis_type == "redis_cluster":
        return config.redis
    url = (os.environ if environ is None else environ).get("SLUICE_REDIS_CLUSTER_URL", DEFAULT_CLUSTER_URL)
    if url.lower() == "none":
        return None
    return RedisConfig(redis_type="redis_cluster", url=url)


@dataclass(frozen=True, kw_only=True)
class ClusterNode:
    """One redis-server in cluster mode."""

    host: str
    port: int
    state_dir: Path
    password: str | None = None

    @property
    def name(self) -> str:
        return f"redis-{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def home(self) -> Path:
        return self.state_dir / "redis-cluster" / str(self.port)

    @property
    def markers(self) -> tuple[str, ...]:
        # Redis rewrites its process title to "redis-server 127.0.0.1:<port> [cluster]".
        return ("redis-server", str(self.port), "cluster")

    def check_prerequisites(self) -> None:
        missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
        if missing:
            raise StackError(
                f"the local Redis Cluster needs {' and '.join(missing)}, which is not on PATH. "
                "Install it with: apt-get install -y redis-server redis-tools "
                "(or set SLUICE_REDIS_CLUSTER_URL=none to start no cluster)"
            )

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            "redis-server",
            str(DEPLOY_LOCAL / "redis" / "cluster.conf"),
            "--port",
            str(self.port),
            "--dir",
            str(self.home),
        ]

    def answers(self) -> bool:
        return self.info() is not None

    def info(self) -> dict[str, str] | None:
        """``CLUSTER INFO`` as a dict, or None when the node does not answer."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py's default backoff makes each absent node cost seconds.
        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_connect_timeout=1,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            raw = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        # redis-py parses CLUSTER INFO into a dict of strings.
        return {str(key): str(value) for key, value in dict(raw).items()}


def cluster_nodes(config: SluiceConfig) -> list[ClusterNode]:
    """The six nodes of the local cluster (none when it is off, or is not on loopback)."""
    cluster = cluster_config(config)
    if cluster is None:
        return []
    host, port = cluster.startup_nodes()[0]
    if host not in LOOPBACK_HOSTS or not cluster.url.startswith("redis://"):
        return []
    return [
        ClusterNode(host=host, port=port + index, state_dir=config.state_dir, password=cluster.password)
        for index in range(CLUSTER_NODES)
    ]


def form(nodes: list[ClusterNode], *, timeout_s: float) -> None:
    """Join the nodes into one cluster unless they already are one, then wait until its slots are served."""
    if not nodes:
        return
    infos = [node.info() or {} for node in nodes]
    if all(info.get("cluster_known_nodes") == "1" for info in infos):
        _create(nodes)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        infos = [node.info() or {} for node in nodes]
        if all(info.get("cluster_state") == "ok" for info in infos):
            return
        time.sleep(0.2)
    states = ", ".join(
        f"{node.port}: {info.get('cluster_state', 'no answer')}"
        for node, info in zip(nodes, infos, strict=True)
    )
    raise StackError(f"the local Redis Cluster did not reach state ok within {timeout_s:.0f} s ({states})")


def _create(nodes: list[ClusterNode]) -> None:
    command = ["redis-cli"]
    if nodes[0].password:
        command += ["-a", nodes[0].password, "--no-auth-warning"]
    command += ["--cluster", "create", *(node.address for node in nodes)]
    command += ["--cluster-replicas", "1", "--cluster-yes"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise StackError(
            f"redis-cli --cluster create failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr)[-2000:]
        )
