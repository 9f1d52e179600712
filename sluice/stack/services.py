"""The two daemons of the local stack: an Apache Kafka broker (KRaft) and Redis.

Each service knows how to check its prerequisites, prepare its state folder, build its command
line and tell whether it answers. The broker's jars come from Maven Central through
``deploy/local/kafka/pom.xml``; Redis is Debian's ``redis-server``.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from features.config import KafkaConfig, RedisConfig

__all__ = ["DEPLOY_LOCAL", "KafkaBroker", "RedisServer", "Service", "StackError"]

DEPLOY_LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"


class StackError(RuntimeError):
    """The local stack cannot start; the message says what to install or look at."""


LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


class Service(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def markers(self) -> tuple[str, ...]: ...
    @property
    def is_local(self) -> bool:
        """Whether the address is one loopback host:port that the local stack may start a process on."""
        ...

    def check_prerequisites(self) -> None: ...
    def prepare(self) -> None: ...
    def command(self) -> list[str]: ...
    def answers(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class KafkaBroker:
    """Apache Kafka 4.x, one node in KRaft combined mode; its controller listens on the next port."""

    config: KafkaConfig
    state_dir: Path
    name: str = "kafka"
    heap: str = "512m"

    @property
    def address(self) -> str:
        return self.config.bootstrap_servers

    @property
    def is_local(self) -> bool:
        host, _, port = self.address.partition(":")
        return "," not in self.address and host in LOOPBACK_HOSTS and port.isdigit()

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def home(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def markers(self) -> tuple[str, ...]:
        # The broker's command line names its properties file, which lives in our state folder.
        return ("kafka.Kafka", str(self.home / "server.properties"))

    def check_prerequisites(self) -> None:
        missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
        if missing:
            raise StackError(
                f"the local Kafka broker needs {' and '.join(missing)}, which is not on PATH. "
                "Install them with: apt-get install -y openjdk-17-jre-headless maven "
                "(or set SLUICE_KAFKA_BOOTSTRAP to use a broker you already run)"
            )

    def prepare(self) -> None:
        self._install_jars()
        self._write_properties()
        self._format_storage()

    def command(self) -> list[str]:
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'kafka' / 'log4j2.properties'}",
            "-cp",
            f"{self.home / 'libs'}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]

    def answers(self) -> bool:
        """Whether the cluster answers a metadata request (with the configured security settings)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                **self.config.client_kwargs(), request_timeout_ms=2000, bootstrap_timeout_ms=2000
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            return bool(admin.describe_cluster()["brokers"])
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def _install_jars(self) -> None:
        pom = DEPLOY_LOCAL / "kafka" / "pom.xml"
        libs = self.home / "libs"
        stamp = libs / ".pom.sha256"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text() == digest:
            return
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                "could not fetch the Kafka broker's jars from Maven Central "
                f"(mvn exited {result.returncode}):\n{(result.stdout + result.stderr)[-2000:]}"
            )
        (staging / ".pom.sha256").write_text(digest)
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)

    def _write_properties(self) -> None:
        template = (DEPLOY_LOCAL / "kafka" / "server.properties").read_text()
        rendered = (
            template.replace("@LOG_DIRS@", str(self.home / "data"))
            .replace("@CONTROLLER_PORT@", str(self.port + 1))
            .replace("@PORT@", str(self.port))
        )
        (self.home / "server.properties").write_text(rendered)

    def _format_storage(self) -> None:
        """Format the KRaft log directory once; later starts reuse it and keep their topics."""
        if (self.home / "data" / "meta.properties").is_file():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):
            # Like Kafka's own Uuid.randomUuid: an id starting with "-" would read as an option (1 in 64).
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                "java",
                f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'kafka' / 'log4j2.properties'}",
                "-cp",
                f"{self.home / 'libs'}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.home / "server.properties"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting the Kafka log directory failed:\n{result.stdout}{result.stderr}")


@dataclass(frozen=True, kw_only=True)
class RedisServer:
    """Debian's redis-server, at the port of the configured URL."""

    config: RedisConfig
    state_dir: Path
    name: str = "redis"

    @property
    def address(self) -> str:
        parts = urlsplit(self.config.url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"

    @property
    def is_local(self) -> bool:
        return self.config.url.startswith("redis://") and self.address.split(":")[0] in LOOPBACK_HOSTS

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def home(self) -> Path:
        return self.state_dir / "redis"

    @property
    def markers(self) -> tuple[str, ...]:
        # Redis rewrites its process title to "redis-server 127.0.0.1:<port>" once it runs.
        return ("redis-server", str(self.port))

    def check_prerequisites(self) -> None:
        if shutil.which("redis-server") is None:
            raise StackError(
                "the local stack needs redis-server, which is not on PATH. "
                "Install it with: apt-get install -y redis-server "
                "(or set SLUICE_REDIS_URL to use a Redis you already run)"
            )

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            "redis-server",
            str(DEPLOY_LOCAL / "redis" / "redis.conf"),
            "--port",
            str(self.port),
            "--dir",
            str(self.home),
        ]

    def answers(self) -> bool:
        """Whether Redis answers PING (with the configured password and TLS settings)."""
        import redis

        client = redis.Redis.from_url(
            self.config.url, **self.config.client_kwargs(), socket_connect_timeout=1
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
