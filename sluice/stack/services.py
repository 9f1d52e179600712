"""The daemons of the local stack: an Apache Kafka broker (KRaft), Redis, and an S3 server.

Each service knows how to check its prerequisites, prepare its state folder, build its command
line and tell whether it answers. The broker's jars come from Maven Central through
``deploy/local/kafka/pom.xml``; Redis is Debian's ``redis-server``; the S3 server is moto's, from
PyPI through ``deploy/local/moto/requirements.txt``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from features.config import KafkaConfig, OfflineStoreConfig, RedisConfig
from sluice.tools import DEPLOY_LOCAL, ToolError, ensure_venv

__all__ = [
    "DEFAULT_S3_ENDPOINT",
    "DEPLOY_LOCAL",
    "LOCAL_POSTGRES_URL",
    "KafkaBroker",
    "MlflowServer",
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "Service",
    "StackError",
    "format_kafka_storage",
    "install_kafka_jars",
    "kafka_answers",
    "kafka_command",
    "redis_answers",
]


class StackError(RuntimeError):
    """The local stack cannot start; the message says what to install or look at."""


LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:5000"
"""Where the local stack's S3 server listens when ``offline_store.endpoint_url`` names none."""
LOCAL_POSTGRES_URL = "postgresql+psycopg://sluice@127.0.0.1:5432/sluice"
"""Where the local stack's MLflow tracking server listens when ``mlflow.tracking_uri`` names none."""
"""The local stack's PostgreSQL, as a ``store_url``: the store that monitors on several hosts share."""


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
        return kafka_command(self.home / "libs", self.home / "server.properties", heap=self.heap)

    def answers(self) -> bool:
        """Whether the cluster answers a metadata request (with the configured security settings)."""
        return kafka_answers(self.config)

    def _install_jars(self) -> None:
        install_kafka_jars(self.home / "libs")

    def _write_properties(self) -> None:
        template = (DEPLOY_LOCAL / "kafka" / "server.properties").read_text()
        rendered = (
            template.replace("@LOG_DIRS@", str(self.home / "data"))
            .replace("@CONTROLLER_PORT@", str(self.port + 1))
            .replace("@PORT@", str(self.port))
        )
        (self.home / "server.properties").write_text(rendered)

    def _format_storage(self) -> None:
        format_kafka_storage(self.home / "libs", self.home / "server.properties", data=self.home / "data")


def kafka_command(libs: Path, properties: Path, *, heap: str) -> list[str]:
    """The command line of a broker run from the jars in ``libs`` with ``properties``."""
    return [
        "java",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'kafka' / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(properties),
    ]


def kafka_answers(config: KafkaConfig) -> bool:
    """Whether the cluster answers a metadata request with ``config``'s address and security settings."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(**config.client_kwargs(), request_timeout_ms=2000, bootstrap_timeout_ms=2000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        return bool(admin.describe_cluster()["brokers"])
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def install_kafka_jars(libs: Path) -> None:
    """The broker's jars from Maven Central (``deploy/local/kafka/pom.xml``) into ``libs``, once per pom."""
    pom = DEPLOY_LOCAL / "kafka" / "pom.xml"
    stamp = libs / ".pom.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    staging = libs.with_name("libs.partial")
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


def format_kafka_storage(libs: Path, properties: Path, *, data: Path, extra: tuple[str, ...] = ()) -> None:
    """Format a KRaft log directory once (``extra``: more ``StorageTool format`` arguments, such as SCRAM
    users); later starts reuse it and keep their topics."""
    if (data / "meta.properties").is_file():
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
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(properties),
            *extra,
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
        return redis_answers(self.config)


def redis_answers(config: RedisConfig) -> bool:
    """Whether one Redis answers PING with ``config``'s URL, password and TLS settings."""
    import redis

    client = redis.Redis.from_url(config.url, **config.client_kwargs(), socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@dataclass(frozen=True, kw_only=True)
class S3Server:
    """An S3-compatible server for offline data at ``s3://``: moto's server mode, from PyPI, in a
    virtual environment of its own (its pinned botocore needs an older python-dateutil than ours).

    It keeps objects in memory, so a restart empties it: a server for tests and trials, not for data
    that must last (for that, point ``offline_store.endpoint_url`` at a real one)."""

    config: OfflineStoreConfig
    state_dir: Path
    name: str = "s3"

    @property
    def address(self) -> str:
        return urlsplit(self.config.endpoint_url or DEFAULT_S3_ENDPOINT).netloc

    @property
    def is_local(self) -> bool:
        host, _, port = self.address.partition(":")
        return host in LOOPBACK_HOSTS and port.isdigit()

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def venv(self) -> Path:
        return self.state_dir / "tools" / "moto"

    @property
    def markers(self) -> tuple[str, ...]:
        return ("moto_server", str(self.port))

    def check_prerequisites(self) -> None:
        """moto comes from PyPI; the venv module of this Python builds its environment."""

    def prepare(self) -> None:
        try:
            ensure_venv(self.venv, DEPLOY_LOCAL / "moto" / "requirements.txt", what="moto's S3 server")
        except ToolError as error:
            raise StackError(str(error)) from None

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def answers(self) -> bool:
        """Whether the server answers an HTTP request (S3 answers any request, if only with an error)."""
        import http.client

        connection = http.client.HTTPConnection(self.address, timeout=1)
        try:
            connection.request("HEAD", "/")
            connection.getresponse()
            return True
        except OSError:
            return False
        finally:
            connection.close()


@dataclass(frozen=True, kw_only=True)
class PostgresServer:
    """Debian's PostgreSQL: one cluster on loopback, database ``sluice``, user ``sluice``, trusting
    local connections. A store for monitors and alerts on several hosts to try and test with
    (``LOCAL_POSTGRES_URL``); point ``alerts.store_url`` at a real one for data that must last.

    PostgreSQL never runs as root: as root, the stack runs it as Debian's ``postgres`` user, with its
    data under that user's home (a clone in a private folder is out of its reach)."""

    state_dir: Path
    port: int = 5432
    name: str = "postgres"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_local(self) -> bool:
        return True

    @property
    def markers(self) -> tuple[str, ...]:
        return ("postgres", str(self.home / "data"))

    @property
    def home(self) -> Path:
        if _is_root():
            digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
            return Path("/var/lib/postgresql/sluice") / digest
        return self.state_dir / "postgres"

    @property
    def binaries(self) -> Path | None:
        """The newest installed PostgreSQL's bin folder (Debian keeps them per major version)."""
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parts[-3])
        )
        return found[-1].parent if found else None

    def check_prerequisites(self) -> None:
        if self.binaries is None:
            raise StackError(
                "the local stack needs PostgreSQL, which is not installed. "
                "Install it with: apt-get install -y postgresql"
            )
        if _is_root() and shutil.which("setpriv") is None:
            raise StackError(
                "as root, the local stack runs PostgreSQL as 'postgres' with setpriv (util-linux)"
            )

    def prepare(self) -> None:
        binaries = self.binaries
        assert binaries is not None
        data = self.home / "data"
        if (data / "PG_VERSION").is_file():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if _is_root():
            shutil.chown(self.home, "postgres", "postgres")
        result = subprocess.run(
            [*self._as_owner(), str(binaries / "initdb"), "-D", str(data), "-U", "sluice",
             "--auth=trust", "--encoding=UTF8", "--no-instructions"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(
                f"initdb failed ({result.returncode}):\n{(result.stdout + result.stderr)[-2000:]}"
            )

    def command(self) -> list[str]:
        binaries = self.binaries
        assert binaries is not None
        return [
            *self._as_owner(), str(binaries / "postgres"), "-D", str(self.home / "data"),
            "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.home),
        ]  # fmt: skip

    def answers(self) -> bool:
        """Whether PostgreSQL accepts a connection to its maintenance database."""
        try:
            import psycopg
        except ModuleNotFoundError:
            return False
        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="sluice", dbname="postgres", connect_timeout=1
            ):
                return True
        except psycopg.Error:
            return False

    def ensure_database(self) -> None:
        """Create the ``sluice`` database once the server answers."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="sluice", dbname="postgres", autocommit=True
        ) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = 'sluice'").fetchone()
            if exists is None:
                connection.execute("CREATE DATABASE sluice")

    def _as_owner(self) -> list[str]:
        if not _is_root():
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True, kw_only=True)
class MlflowServer:
    """MLflow's tracking server and UI, in a virtual environment of its own (the server pins pyarrow below
    what sluice runs), on the embedded store's SQLite database in the state folder, so the runs and
    versions that sluice writes without a server are seen in its UI, and clients may use either. It
    serves model files from ``<state>/mlflow/artifacts`` too (``mlflow-artifacts:``)."""

    server: str
    """Its URL, ``mlflow.server``."""
    state_dir: Path
    name: str = "mlflow"

    @property
    def address(self) -> str:
        return urlsplit(self.server).netloc

    @property
    def is_local(self) -> bool:
        host, _, port = self.address.partition(":")
        return self.server.startswith("http://") and host in LOOPBACK_HOSTS and port.isdigit()

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def venv(self) -> Path:
        return self.state_dir / "tools" / "mlflow"

    @property
    def home(self) -> Path:
        return self.state_dir / "mlflow"

    @property
    def markers(self) -> tuple[str, ...]:
        return ("mlflow", "server", str(self.port))

    def check_prerequisites(self) -> None:
        """MLflow comes from PyPI; the venv module of this Python builds its environment."""

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            requirements = DEPLOY_LOCAL / "mlflow" / "requirements.txt"
            ensure_venv(self.venv, requirements, what="MLflow's tracking server")
        except ToolError as error:
            raise StackError(str(error)) from None

    def command(self) -> list[str]:
        # No job runner: sluice runs no MLflow jobs, and it would be two more processes.
        return [
            "env", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false",
            str(self.venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{(self.home / 'mlflow.db').resolve()}",
            "--artifacts-destination", str((self.home / "artifacts").resolve()), "--workers", "1",
        ]  # fmt: skip

    def answers(self) -> bool:
        """Whether the server answers its health check."""
        import http.client

        connection = http.client.HTTPConnection(self.address, timeout=1)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()
