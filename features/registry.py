"""Feast's registry: the repo config Feast needs, and the diff and apply behind ``sluice plan | apply``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from features.config import RedisConfig, SluiceConfig
from features.repo import FeatureRepo

__all__ = [
    "FEAST_CONFIG_FILE",
    "Change",
    "apply_changes",
    "feast_repo_config",
    "feature_store",
    "plan_changes",
    "write_feast_config",
]

FEAST_CONFIG_FILE = "feature_store.yaml"


@dataclass(frozen=True, kw_only=True)
class Change:
    """One registry object to create, update or delete."""

    action: Literal["create", "update", "delete"]
    kind: str
    name: str

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.action]
        return f"{sign} {self.kind} {self.name}"


def feast_repo_config(config: SluiceConfig, repo_path: Path) -> Any:
    """Feast's RepoConfig for this repo: Redis online store, file offline store, our registry."""
    from feast.repo_config import RepoConfig

    if config.registry.is_sql:
        registry: dict[str, Any] = {
            "registry_type": "sql",
            "path": config.registry.path,
            "cache_ttl_seconds": config.registry.cache_ttl_seconds,
        }
    else:
        registry_path = Path(config.registry.location(repo_path))
        registry_path.parent.mkdir(parents=True, exist_ok=True)
        registry = {
            "registry_type": "file",
            "path": str(registry_path),
            "cache_ttl_seconds": config.registry.cache_ttl_seconds,
        }
    return RepoConfig(
        project=config.project,
        provider="local",
        registry=registry,
        online_store=feast_online_store(config.redis),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=repo_path,
    )


def write_feast_config(repo: FeatureRepo) -> Path | None:
    """Write the ``feature_store.yaml`` Feast's SDK needs (``FeatureStore(repo_path=...)``), from the repo's
    config, when the repo has none; a user's file is never touched. Returns the path written, or None.

    No secret is written: a password is a ``${VAR}`` reference, Feast expands it from the environment,
    the one ``sluice.yaml`` names or ``SLUICE_REDIS_PASSWORD`` / ``SLUICE_REGISTRY_PASSWORD`` otherwise.
    """
    import yaml

    path = repo.path / FEAST_CONFIG_FILE
    if path.exists():
        return None
    config = repo.config
    raw = _raw_config(repo.path)
    has_password = bool(config.redis.password or urlsplit(config.redis.url).password)
    reference = _reference(raw, ("redis", "password"), "SLUICE_REDIS_PASSWORD") if has_password else None
    redis = config.redis.model_copy(
        update={"url": _without_password(config.redis.url), "password": reference}
    )
    connection = redis_connection_string(redis)
    registry_path = config.registry.path
    if config.registry.is_sql and urlsplit(registry_path).password:
        reference = _reference(raw, ("registry", "password"), "SLUICE_REGISTRY_PASSWORD")
        registry_path = _without_password(registry_path, replacement=reference)
    document = {
        "project": config.project,
        "provider": "local",
        "registry": {
            "registry_type": "sql" if config.registry.is_sql else "file",
            "path": registry_path,
            "cache_ttl_seconds": config.registry.cache_ttl_seconds,
        },
        "online_store": feast_online_store(redis, connection),
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    header = (
        "# Written by `sluice apply` from sluice.yaml, so that Feast's SDK works on this repo\n"
        "# (feast.FeatureStore(repo_path=...)). sluice never changes this file: edit it, or delete it\n"
        "# to have it written again. Secrets are ${VAR} references, read from the environment.\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _raw_config(repo_path: Path) -> dict[str, Any]:
    import yaml

    from features.config import CONFIG_FILE

    file = repo_path / CONFIG_FILE
    loaded = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else None
    return loaded if isinstance(loaded, dict) else {}


def _reference(raw: dict[str, Any], keys: tuple[str, str], default: str) -> str:
    """``${VAR}`` as ``sluice.yaml`` spells the value, when it is a reference; else ``${default}``."""
    section = raw.get(keys[0])
    value = section.get(keys[1]) if isinstance(section, dict) else None
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value
    return "${" + default + "}"


def _without_password(url: str, *, replacement: str = "") -> str:
    """``url`` with its password replaced (by nothing: then without the colon).

    >>> _without_password("postgresql://sluice:pw@db:5432/feast", replacement="${PW}")
    'postgresql://sluice:${PW}@db:5432/feast'
    >>> _without_password("redis://:pw@cache:6379/0")
    'redis://cache:6379/0'
    """
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    credentials = f"{user}:{replacement}@" if replacement else (f"{user}@" if user else "")
    return parts._replace(netloc=credentials + host).geturl()


def feast_online_store(redis: RedisConfig, connection: str | None = None) -> dict[str, str]:
    """Feast's ``online_store`` section for this Redis (``redis_type: redis_cluster`` for a cluster).

    >>> feast_online_store(RedisConfig(redis_type="redis_cluster", url="redis://n1:7000"))
    {'type': 'redis', 'redis_type': 'redis_cluster', 'connection_string': 'n1:7000'}
    """
    section = {"type": "redis"}
    if redis.redis_type == "redis_cluster":
        section["redis_type"] = "redis_cluster"
    section["connection_string"] = redis_connection_string(redis) if connection is None else connection
    return section


def redis_connection_string(redis: RedisConfig) -> str:
    """Feast's ``host:port,db=N,password=...,ssl=true`` form of a redis-py URL; a cluster's startup
    nodes come first, all of them.

    >>> redis_connection_string(RedisConfig(url="rediss://:pw@cache:6380/2"))
    'cache:6380,db=2,password=pw,ssl=true'
    >>> redis_connection_string(RedisConfig(url="rediss://sluice:pw@cache:6380/0", ssl_ca_certs="/ca.crt"))
    'cache:6380,username=sluice,password=pw,ssl=true,ssl_ca_certs=/ca.crt'
    >>> redis_connection_string(RedisConfig(redis_type="redis_cluster", cluster_nodes=["b:7001"]))
    '127.0.0.1:6379,b:7001'
    """
    parts = urlsplit(redis.url)
    options = [f"{host}:{port}" for host, port in redis.startup_nodes()]
    database = parts.path.lstrip("/")
    if database and database != "0":
        options.append(f"db={database}")
    if parts.username:  # a Redis ACL user; Feast passes unknown options on to redis-py
        options.append(f"username={unquote(parts.username)}")
    password = redis.password or parts.password
    if password:
        options.append(f"password={password}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
        if redis.ssl_ca_certs:
            options.append(f"ssl_ca_certs={redis.ssl_ca_certs}")
    return ",".join(options)


def feature_store(repo: FeatureRepo) -> Any:
    from feast import FeatureStore

    return FeatureStore(config=feast_repo_config(repo.config, repo.path))


def plan_changes(repo: FeatureRepo, store: Any) -> list[Change]:
    """What ``apply`` would change in the registry: compares each object's proto, ignoring metadata."""
    registered = _registered(store)
    _infer(store, repo.objects)
    desired = {(_kind(item), item.name): item for item in _with_nested_sources(repo.objects)}
    changes = []
    for (kind, name), item in desired.items():
        current = registered.get((kind, name))
        if current is None:
            changes.append(Change(action="create", kind=kind, name=name))
        elif _comparable(current) != _comparable(item):
            changes.append(Change(action="update", kind=kind, name=name))
    changes += [
        Change(action="delete", kind=kind, name=name)
        for kind, name in registered
        if (kind, name) not in desired
    ]
    return changes


def apply_changes(repo: FeatureRepo, store: Any, changes: list[Change]) -> None:
    """Write the repo's objects to Feast's registry and remove the deleted ones."""
    registered = _registered(store)
    to_delete = [registered[(change.kind, change.name)] for change in changes if change.action == "delete"]
    store.apply(list(repo.objects), objects_to_delete=to_delete, partial=False)


def _infer(store: Any, objects: tuple[Any, ...]) -> None:
    """Fill in what Feast's ``apply`` infers (a decorated view's entity columns, an on-demand view's
    features), so that a plan compares what ``apply`` would register, not what the file spells out."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, StreamFeatureView
    from feast.data_source import DataSource

    def of(kind: type, exclude: type | None = None) -> list[Any]:
        return [
            item for item in objects if isinstance(item, kind) and not (exclude and isinstance(item, exclude))
        ]

    # Feast's own step of apply; it has no public name.
    store._make_inferences(
        of(DataSource),
        of(Entity),
        of(FeatureView, StreamFeatureView),
        of(OnDemandFeatureView),
        of(StreamFeatureView),
        of(FeatureService),
    )


def _with_nested_sources(objects: tuple[Any, ...]) -> list[Any]:
    """The objects plus the batch sources nested in stream and push sources and in views (each streamed
    view's own), which Feast registers on their own."""
    from feast import FeatureView, PushSource

    result = list(objects)
    for item in objects:
        batch = getattr(item, "batch_source", None)
        if batch is not None and (
            getattr(item, "kafka_options", None) is not None or isinstance(item, FeatureView | PushSource)
        ):
            result.append(batch)
    return result


def _registered(store: Any) -> dict[tuple[str, str], Any]:
    project = store.project
    registry = store.registry
    found: list[Any] = []
    for listing in (
        registry.list_entities,
        registry.list_data_sources,
        registry.list_feature_views,
        registry.list_stream_feature_views,
        registry.list_on_demand_feature_views,
        registry.list_feature_services,
    ):
        found += listing(project, allow_cache=False)
    return {(_kind(item), item.name): item for item in found if item.name != "__dummy"}


def _kind(item: Any) -> str:
    from feast.data_source import DataSource

    return "DataSource" if isinstance(item, DataSource) else type(item).__name__


def _comparable(item: Any) -> Any:
    """An object's spec as plain data, without registry metadata, with name-keyed lists sorted.

    Feast stamps nested data sources with creation times and keeps some feature lists in set order,
    so raw protos of the same definition differ between runs.
    """
    from google.protobuf.json_format import MessageToDict

    proto = item.to_proto()
    return _normalized(MessageToDict(proto.spec if hasattr(proto, "spec") else proto))


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        # A function's dill bytes differ between processes; its source is its identity (as in Feast).
        dropped = {"meta", "body"} if "bodyText" in value else {"meta"}
        return {key: _normalized(item) for key, item in value.items() if key not in dropped}
    if isinstance(value, list):
        items = [_normalized(item) for item in value]
        if all(isinstance(item, dict) and "name" in item for item in items):
            items.sort(key=lambda item: str(item["name"]))
        return items
    return value
