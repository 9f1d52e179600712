"""Send commands packed here in one write and read the replies, on redis-py's own connections.

redis-py's pipeline builds and parses every command on its own, which costs more than the read
itself at a hundred entities, and more than Redis's own work for the writer's scripts. The reads
and the writer pack their commands' RESP themselves, with the parts that never change made once.
The connection, its pool, TLS, password and timeouts are redis-py's, as configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

__all__ = ["bulk", "fetch", "fetch_async", "hmget_parts", "pack_hmgets"]

Reply = Any
"""A reply as redis-py parses it: a list of bytes or None for HMGET, an int for the write script."""


def bulk(data: bytes) -> bytes:
    """``data`` as a RESP bulk string.

    >>> bulk(b"ab")
    b'$2\\r\\nab\\r\\n'
    """
    return b"$%d\r\n%s\r\n" % (len(data), data)


def hmget_parts(fields: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The RESP bytes before and after the key of ``HMGET key *fields``.

    >>> head, tail = hmget_parts([b"a"])
    >>> pack_hmgets([b"k"], head, tail)
    b'*3\\r\\n$5\\r\\nHMGET\\r\\n$1\\r\\nk\\r\\n$1\\r\\na\\r\\n'
    """
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
    tail = b"".join(map(bulk, fields))
    return head, tail


def pack_hmgets(keys: Sequence[bytes], head: bytes, tail: bytes) -> bytes:
    parts: list[bytes] = []
    for key in keys:
        parts += (head, bulk(key), tail)
    return b"".join(parts)


def fetch(client: redis.Redis, payload: bytes, count: int) -> list[Reply]:
    """Send ``count`` packed commands and read their replies; a dropped connection is retried once."""
    pool = client.connection_pool
    for attempt in range(2):
        # redis-py's connection methods are untyped.
        connection: Any = pool.get_connection()
        try:
            connection.send_packed_command([payload])
            return [connection.read_response(disable_decoding=True) for _ in range(count)]
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            if attempt:
                raise
        except redis.ResponseError:
            connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(connection)
    raise AssertionError("unreachable")


async def fetch_async(client: redis.asyncio.Redis, payload: bytes, count: int) -> list[Reply]:
    """``fetch`` for ``redis.asyncio``."""
    pool = client.connection_pool
    for attempt in range(2):
        connection: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(payload)
            return [await connection.read_response(disable_decoding=True) for _ in range(count)]
        except (redis.ConnectionError, redis.TimeoutError):
            await connection.disconnect()
            if attempt:
                raise
        except redis.ResponseError:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
    raise AssertionError("unreachable")
