"""The Redis connection of the online store, with an error that says where it tried to connect."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from features.config import RedisConfig

__all__ = ["OnlineStoreUnavailable", "connect"]


class OnlineStoreUnavailable(ConnectionError):
    """Redis did not answer; the message names the address that was tried."""


def connect(config: RedisConfig) -> redis.Redis:
    """A client for the configured Redis, checked with PING.

    >>> connect(RedisConfig(url="redis://127.0.0.1:1/0", socket_timeout_s=0.5))
    Traceback (most recent call last):
    ...
    online_store.connection.OnlineStoreUnavailable: cannot reach Redis at 127.0.0.1:1 (db 0): ...
    """
    client = redis.Redis.from_url(config.url, **config.client_kwargs())
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        client.close()
        raise OnlineStoreUnavailable(f"cannot reach Redis at {describe(config.url)}: {error}") from error
    return client


def describe(url: str) -> str:
    """The address of a Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "0"
    scheme = " over TLS" if parts.scheme == "rediss" else ""
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379} (db {database}){scheme}"
