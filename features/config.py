"""Configuration: where Kafka and Redis are, how to reach them securely, where local state lives.

One small model per backend, each field documented. Values come from ``sluice.yaml`` when a repo
has one, and the environment overrides the addresses, so that a user can point the same repo at
their own cluster:

- ``SLUICE_KAFKA_BOOTSTRAP``: Kafka bootstrap servers, for example ``broker-1:9092,broker-2:9092``.
- ``SLUICE_REDIS_URL``: a redis-py URL, for example ``rediss://:secret@redis.internal:6380/0``.
- ``SLUICE_REDIS_TYPE``: ``redis`` (one server) or ``redis_cluster`` (the URL names one of its nodes).
- ``SLUICE_STATE_DIR``: the folder for local state (broker data, pid files, alert store).
- ``SLUICE_S3_ENDPOINT``: an S3-compatible server for offline data at ``s3://``, for example
  ``http://minio.internal:9000``.
- ``MLFLOW_TRACKING_URI``: the MLflow tracking store (a server's URL or a database URI), as MLflow reads it.
- ``SLUICE_KAFKA_SECURITY_PROTOCOL``, ``SLUICE_KAFKA_SASL_MECHANISM``, ``SLUICE_KAFKA_SASL_USERNAME``,
  ``SLUICE_KAFKA_SASL_PASSWORD`` and ``SLUICE_KAFKA_SSL_CAFILE``: the ``kafka`` section's security settings;
  ``SLUICE_REDIS_SSL_CA_CERTS``: the CA for ``rediss://``. ``sluice stack up --secure`` writes them all to
  one file to source.

>>> config = SluiceConfig.model_validate({"kafka": {"bootstrap_servers": "k1:9092"}})
>>> config.kafka.client_kwargs()["bootstrap_servers"]
'k1:9092'
>>> config.redis.url
'redis://127.0.0.1:6379/0'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.monitoring_config import AlertsConfig, RetrainingConfig

__all__ = [
    "CONFIG_FILE",
    "OBJECT_STORE_SCHEMES",
    "ConfigError",
    "KafkaConfig",
    "MlflowConfig",
    "OfflineStoreConfig",
    "RedisConfig",
    "RegistryConfig",
    "SluiceConfig",
    "TopicsConfig",
    "load_config",
]

CONFIG_FILE = "sluice.yaml"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A configuration file or variable the user has to fix; the message says what and where."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Model):
    """How every sluice process reaches the Kafka cluster."""

    bootstrap_servers: str = DEFAULT_KAFKA_BOOTSTRAP
    """Comma-separated ``host:port`` list of brokers to bootstrap from."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka's ``security.protocol``."""

    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """Kafka's ``sasl.mechanism``; required with the SASL protocols."""

    sasl_username: str | None = None
    """SASL user name."""

    sasl_password: str | None = Field(default=None, repr=False)
    """SASL password. Prefer ``${ENV_VAR}`` in ``sluice.yaml`` to a literal secret."""

    ssl_cafile: str | None = None
    """CA bundle that signed the brokers' certificates."""

    ssl_certfile: str | None = None
    """Client certificate, for mutual TLS."""

    ssl_keyfile: str | None = None
    """Client private key, for mutual TLS."""

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python and aiokafka clients (both take these names)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        kwargs.update({key: value for key, value in optional.items() if value is not None})
        return kwargs


class RedisConfig(_Model):
    """How the online store reaches Redis.

    >>> cluster = RedisConfig(
    ...     redis_type="redis_cluster", url="redis://10.0.0.1:7000", cluster_nodes=["10.0.0.2:7000"]
    ... )
    >>> cluster.startup_nodes()
    [('10.0.0.1', 7000), ('10.0.0.2', 7000)]
    """

    redis_type: Literal["redis", "redis_cluster"] = "redis"
    """``redis`` for one server (or a managed primary), ``redis_cluster`` for a Redis Cluster: writes are
    grouped by hash slot and reads go to each key's primary. The names are Feast's."""

    url: str = DEFAULT_REDIS_URL
    """A redis-py URL: ``redis://`` or ``rediss://`` (TLS), with optional ``user:password@`` and db.
    For a cluster, any one of its nodes (the rest are discovered), and db 0."""

    cluster_nodes: tuple[str, ...] = ()
    """More ``host:port`` nodes to discover a cluster from, when the URL's node is down."""

    replica_acks: int = Field(default=1, ge=0)
    """Cluster only: a write batch counts as written once this many replicas of each primary it went
    to hold it (Redis ``WAIT``), or all of the primary's live replicas if it has fewer. So a primary's
    failover loses no write the stream worker has committed. 0 does not wait."""

    replica_ack_timeout_ms: int = Field(default=1000, ge=1)
    """Cluster only: how long a write waits for its replicas before it is sent again."""

    password: str | None = Field(default=None, repr=False)
    """Password, when it is not in the URL. Prefer ``${ENV_VAR}`` in ``sluice.yaml``."""

    ssl_ca_certs: str | None = None
    """CA bundle for ``rediss://`` connections."""

    ssl_certfile: str | None = None
    """Client certificate for ``rediss://`` connections."""

    ssl_keyfile: str | None = None
    """Client private key for ``rediss://`` connections."""

    socket_timeout_s: float = 5.0
    """Seconds to wait on a Redis reply before failing the call."""

    @model_validator(mode="after")
    def _cluster_has_one_database(self) -> RedisConfig:
        database = urlsplit(self.url).path.lstrip("/")
        if self.redis_type == "redis_cluster" and database not in ("", "0"):
            raise ValueError(f"a Redis Cluster has only database 0, but the url asks for db {database}")
        if self.cluster_nodes and self.redis_type != "redis_cluster":
            raise ValueError("cluster_nodes needs redis_type: redis_cluster")
        for node in self.cluster_nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"cluster node {node!r} is not of the form host:port")
        return self

    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of the URL's node, then of ``cluster_nodes``."""
        parts = urlsplit(self.url)
        nodes = [(parts.hostname or "127.0.0.1", parts.port or 6379)]
        for node in self.cluster_nodes:
            host, _, port = node.rpartition(":")
            nodes.append((host, int(port)))
        return nodes

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(url, **kwargs)``."""
        kwargs: dict[str, Any] = {"socket_timeout": self.socket_timeout_s}
        tls = self.url.startswith("rediss://")  # redis-py refuses TLS settings on a plain connection
        optional = {
            "password": self.password,
            "ssl_ca_certs": self.ssl_ca_certs if tls else None,
            "ssl_certfile": self.ssl_certfile if tls else None,
            "ssl_keyfile": self.ssl_keyfile if tls else None,
        }
        kwargs.update({key: value for key, value in optional.items() if value is not None})
        return kwargs


OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az")
"""The object-storage URI schemes offline data may live at, besides local paths (and ``file://``)."""


class OfflineStoreConfig(_Model):
    """How sluice reaches the object storage that an ``s3://``, ``gs://`` or ``abfs://`` batch source path
    names. Credentials are never here: they come from the environment (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME`` and
    ``AZURE_STORAGE_ACCOUNT_KEY``) or the machine's role, as each cloud's SDK finds them."""

    endpoint_url: str | None = None
    """An S3-compatible server (MinIO, SeaweedFS, moto), for example ``http://127.0.0.1:5000``; unset for
    AWS itself (then ``AWS_ENDPOINT_URL`` is used if set). A Feast ``FileSource``'s
    ``s3_endpoint_override`` takes precedence for its own path."""

    region: str | None = None
    """The bucket's region; ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) when unset, else ``us-east-1``."""

    def for_source(self, endpoint_override: str | None) -> OfflineStoreConfig:
        """These settings, with a batch source's own endpoint (Feast's ``s3_endpoint_override``) first."""
        return self.model_copy(update={"endpoint_url": endpoint_override}) if endpoint_override else self


class TopicsConfig(_Model):
    """How ``sluice apply`` creates the source topics and their dead-letter topics."""

    partitions: int = Field(default=1, ge=1)
    """Partitions per topic: the most stream workers that can share one source."""

    replication_factor: int = Field(default=1, ge=1)
    """Copies of each partition; 3 is usual on a production cluster."""


class RegistryConfig(_Model):
    """Where Feast's registry lives."""

    path: str = ".sluice/registry.db"
    """A file path (relative to the repo) for a file registry, or an SQLAlchemy URL
    (``sqlite:///...``, ``postgresql://...``) for Feast's SQL registry."""

    cache_ttl_seconds: int = 60
    """How long readers may use a cached copy of the registry."""

    @property
    def is_sql(self) -> bool:
        return "://" in self.path

    def location(self, repo_path: Path) -> str:
        """The SQL URL, or the registry file's absolute path with a relative one taken from the repo.

        >>> RegistryConfig(path="data/registry.db").location(Path("/repo"))
        '/repo/data/registry.db'
        """
        if self.is_sql or Path(self.path).is_absolute():
            return self.path
        return str(repo_path / self.path)


class MlflowConfig(_Model):
    """MLflow, the model registry: versions, their runs, and the ``champion`` and ``challenger`` aliases."""

    tracking_uri: str = ""
    """Where runs and model versions are kept: empty for the embedded store, SQLite in the state folder
    (``sqlite:///<state_dir>/mlflow/mlflow.db``, no server needed), or the URL of a tracking server
    (``http://mlflow.internal:5000``); ``MLFLOW_TRACKING_URI`` overrides it. Credentials for a server
    come from ``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``,
    as MLflow's own clients read them."""
    experiment: str = "sluice-retraining"
    """The experiment that retraining runs are logged in."""
    server: str = "http://127.0.0.1:5001"
    """Where ``sluice stack up`` runs MLflow's tracking server and UI, on the embedded store's database:
    the runs and versions of the embedded store are seen there, and a client may use either."""


class SluiceConfig(_Model):
    """Everything a sluice process needs to know about its surroundings."""

    project: str = "sluice"
    """Feast project name; it is part of every Redis key."""

    kafka: KafkaConfig = KafkaConfig()
    """The Kafka cluster."""

    redis: RedisConfig = RedisConfig()
    """The Redis online store."""

    state_dir: Path = Path(".sluice")
    """Local state: the local stack's broker data and pid files, the embedded alert store."""

    topics: TopicsConfig = TopicsConfig()
    """Partitions and replication of the topics ``sluice apply`` creates."""

    registry: RegistryConfig = RegistryConfig()
    """Feast's registry."""

    offline_store: OfflineStoreConfig = OfflineStoreConfig()
    """Object storage for offline data (the Parquet datasets, state snapshots, profiles) at a URI."""

    profiles: str = ""
    """Where reference profiles are kept, ``<profiles>/<model>/<version>/``: a folder or an object-storage
    URI (``s3://bucket/profiles``); ``<state_dir>/profiles`` when empty."""

    scores: str = ""
    """Where the monitor writes each closed window's scores and summary as Parquet,
    ``<scores>/model=<m>/version=<v>/window-<start>.parquet``: a folder or an object-storage URI, so
    that every host reads what the merging monitor wrote; ``<state_dir>/monitor/scores`` when empty."""

    alerts: AlertsConfig = AlertsConfig()
    """Alert rules, the alert store and where alerts are delivered."""

    mlflow: MlflowConfig = MlflowConfig()
    """The MLflow tracking server whose model registry holds the model versions."""

    retraining: RetrainingConfig = RetrainingConfig()
    """Which alerts start a retraining job, and where it runs."""

    @property
    def profiles_location(self) -> str:
        """``profiles``, or the ``profiles`` folder under the state folder."""
        return self.profiles or str(self.state_dir / "profiles")

    @property
    def mlflow_tracking_uri(self) -> str:
        """``mlflow.tracking_uri``, or the embedded store's SQLite database under the state folder."""
        return self.mlflow.tracking_uri or f"sqlite:///{(self.state_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def scores_location(self) -> str:
        """``scores``, or the ``monitor/scores`` folder under the state folder."""
        return self.scores or str(self.state_dir / "monitor" / "scores")

    @property
    def store_url(self) -> str:
        """The alert and job store: ``alerts.store_url``, or SQLite under the state folder."""
        return self.alerts.store_url or f"sqlite:///{self.state_dir / 'sluice.db'}"


def load_config(repo_path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> SluiceConfig:
    """Read ``<repo_path>/sluice.yaml`` if there is one, then apply the ``SLUICE_*`` variables.

    ``${NAME}`` in a string value is replaced by the environment variable ``NAME``, so secrets
    stay out of the file.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = (repo_path or Path.cwd()) / CONFIG_FILE
    if path.is_file():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, found {type(loaded).__name__}")
        raw = _expand_env(loaded or {}, env, where=str(path))
    _override(raw, ("kafka", "bootstrap_servers"), env.get("SLUICE_KAFKA_BOOTSTRAP"))
    _override(raw, ("redis", "url"), env.get("SLUICE_REDIS_URL"))
    _override(raw, ("redis", "redis_type"), env.get("SLUICE_REDIS_TYPE"))
    _override(raw, ("state_dir",), env.get("SLUICE_STATE_DIR"))
    _override(raw, ("offline_store", "endpoint_url"), env.get("SLUICE_S3_ENDPOINT"))
    _override(raw, ("mlflow", "tracking_uri"), env.get("MLFLOW_TRACKING_URI"))
    for field in ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile"):
        _override(raw, ("kafka", field), env.get(f"SLUICE_KAFKA_{field.upper()}"))
    _override(raw, ("redis", "ssl_ca_certs"), env.get("SLUICE_REDIS_SSL_CA_CERTS"))
    try:
        config = SluiceConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source=str(path) if path.is_file() else "environment")) from None
    if not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": (repo_path or Path.cwd()) / config.state_dir})
    return config


def _override(raw: dict[str, Any], keys: tuple[str, ...], value: str | None) -> None:
    if not value:
        return
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _expand_env(value: Any, env: Mapping[str, str], *, where: str) -> Any:
    if isinstance(value, dict):
        return {key: _expand_env(item, env, where=where) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, env, where=where) for item in value]
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        name = value[2:-1]
        if name not in env:
            raise ConfigError(
                f"{where}: the environment variable {name} is not set, but the config uses ${{{name}}}"
            )
        return env[name]
    return value


def _describe(error: ValidationError, *, source: str) -> str:
    lines = [f"invalid sluice configuration ({source}):"]
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        lines.append(f"  {field}: {problem['msg']}")
    return "\n".join(lines)
