"""The Redis connection of the online store, with an error that says where it tried to connect."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from features.config import RedisConfig
from online_store.cluster import OnlineCluster

__all__ = ["OnlineRedis", "OnlineStoreUnavailable", "client", "connect"]

OnlineRedis = redis.Redis | RedisCluster
"""What the online store talks to: one Redis, or a Redis Cluster (``redis_type: redis_cluster``)."""


class OnlineStoreUnavailable(ConnectionError):
    """Redis did not answer; the message names the address that was tried."""


def connect(config: RedisConfig) -> OnlineRedis:
    """A client for the configured Redis, checked with PING (a cluster's slot map is loaded too).

    >>> connect(RedisConfig(url="redis://127.0.0.1:1/0", socket_timeout_s=0.5))
    Traceback (most recent call last):
    ...
    online_store.connection.OnlineStoreUnavailable: cannot reach Redis at 127.0.0.1:1 (db 0): ...
    """
    try:
        made = client(config)
    except (redis.RedisError, OSError) as error:
        raise OnlineStoreUnavailable(f"cannot reach Redis at {describe_config(config)}: {error}") from error
    try:
        made.ping()
    except (redis.RedisError, OSError) as error:
        made.close()
        raise OnlineStoreUnavailable(f"cannot reach Redis at {describe_config(config)}: {error}") from error
    return made


def client(config: RedisConfig) -> OnlineRedis:
    """A client for the configured Redis, unchecked: one server's connects on its first command, a
    cluster's loads its slot map now (and raises when no startup node answers)."""
    if config.redis_type == "redis":
        return redis.Redis.from_url(config.url, **config.client_kwargs())
    parts = urlsplit(config.url)
    kwargs: dict[str, Any] = config.client_kwargs()
    if parts.password and "password" not in kwargs:
        kwargs["password"] = unquote(parts.password)
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.scheme == "rediss":
        kwargs["ssl"] = True
    return OnlineCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in config.startup_nodes()],  # type: ignore[no-untyped-call]
        replica_acks=config.replica_acks,
        ack_timeout_ms=config.replica_ack_timeout_ms,
        **kwargs,
    )


def describe_config(config: RedisConfig) -> str:
    """``describe`` of the URL, and of a cluster's other startup nodes."""
    if config.redis_type == "redis":
        return describe(config.url)
    nodes = ", ".join(f"{host}:{port}" for host, port in config.startup_nodes())
    return f"Redis Cluster nodes {nodes}"


def describe(url: str) -> str:
    """The address of a Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "0"
    scheme = " over TLS" if parts.scheme == "rediss" else ""
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379} (db {database}){scheme}"
