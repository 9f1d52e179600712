"""Packed commands to a Redis Cluster: one pipelined request per primary, sent to all of them before any
reply is read, so a read waits for the slowest node rather than for the sum of them.

Keys are routed by the client's slot map (redis-py's ``RedisCluster``). A reply that says the map is
stale (``MOVED``, ``ASK``, a refused connection while a replica takes over, a script's non-local key,
``READONLY`` from a demoted primary) makes the caller refresh the map and send again what failed;
``ASK`` is answered with ``ASKING`` on the node it names. Reads are safe to resend, and so are the
writer's scripts, whose rewrites of a row are no-ops.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from online_store.wire import Reply

__all__ = ["ClusterWire", "OnlineCluster", "Request", "TopologyError", "is_topology", "key_slots"]

log = logging.getLogger(__name__)

_ASKING = b"*1\r\n$6\r\nASKING\r\n"
RETRY_FOR_S = 30.0
"""How long a call keeps resending what failed: past a primary's failover (seconds with Redis's
default ``cluster-node-timeout`` of 15 s), not past an outage."""
_STALE_MAP = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.NoScriptError,
)


class TopologyError(redis.ConnectionError):
    """The cluster did not settle on who serves a slot within the retry time; the message says why."""


def key_slots(keys: Sequence[bytes]) -> list[int]:
    """Each key's hash slot, as Redis computes it (``{hash tags}`` too).

    >>> key_slots([b"foo", b"{user1}.a", b"{user1}.b"])
    [12182, 8106, 8106]
    """
    return list(map(key_slot, keys))


class OnlineCluster(RedisCluster):
    """redis-py's ``RedisCluster`` with the online store's write acknowledgement settings and its wire."""

    def __init__(self, *, replica_acks: int = 1, ack_timeout_ms: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wire = ClusterWire(cluster=self, replica_acks=replica_acks, ack_timeout_ms=ack_timeout_ms)


@dataclass(frozen=True, kw_only=True)
class Request:
    """Packed commands for one node, and how many replies they give."""

    node: ClusterNode
    payload: bytes
    count: int


class ClusterWire:
    """Sends packed commands to the primaries of a cluster and reads their replies."""

    def __init__(self, *, cluster: RedisCluster, replica_acks: int = 1, ack_timeout_ms: int = 1000) -> None:
        self.cluster = cluster
        self.replica_acks = replica_acks
        """The ``numreplicas`` of the writer's ``WAIT``, capped by each primary's live replicas."""
        self.ack_timeout_ms = ack_timeout_ms
        self._replicas: dict[str, int] = {}
        self._replicas_of: object = None

    @classmethod
    def of(cls, cluster: RedisCluster) -> ClusterWire:
        """The cluster's wire: an ``OnlineCluster``'s own, a default one for a plain ``RedisCluster``."""
        wire = getattr(cluster, "wire", None)
        return wire if isinstance(wire, ClusterWire) else cls(cluster=cluster)

    def primaries(self, slots: Sequence[int]) -> list[ClusterNode]:
        """The primary serving each slot, by the current slot map."""
        cache = self.cluster.nodes_manager.slots_cache
        try:
            return [cache[slot][0] for slot in slots]
        except (KeyError, IndexError):
            self.refresh()
            cache = self.cluster.nodes_manager.slots_cache
            missing = sorted({slot for slot in slots if not cache.get(slot)})
            if missing:
                raise TopologyError(f"slots {missing[:5]} are served by no node of the cluster") from None
            return [cache[slot][0] for slot in slots]

    def live_replicas(self, node: ClusterNode) -> int:
        """How many replicas the slot map lists for this primary (Redis leaves failed ones out)."""
        cache = self.cluster.nodes_manager.slots_cache
        if self._replicas_of is not cache:
            self._replicas = {nodes[0].name: len(nodes) - 1 for nodes in cache.values() if nodes}
            self._replicas_of = cache
        return self._replicas.get(node.name, 0)

    def refresh(self) -> None:
        """Reload the slot map from any node that answers."""
        # No node answered, or the map did not cover every slot yet: the next attempt tries again.
        with contextlib.suppress(redis.RedisError, redis.RedisClusterException, OSError):
            self.cluster.nodes_manager.initialize()

    def exchange(self, requests: Sequence[Request]) -> list[list[Reply | Exception]]:
        """Each request's replies, in order; a reply that is an error is its exception, and a node that
        could not be reached gives its connection error for each of its replies."""
        sent: list[tuple[Any, Any] | Exception] = []
        for request in requests:
            # redis-py's connection methods are untyped.
            pool: Any = self.cluster.get_redis_connection(request.node).connection_pool
            try:
                connection: Any = pool.get_connection()  # connects: a dead node fails here
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                sent.append(error)
                continue
            try:
                connection.send_packed_command([request.payload])
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                connection.disconnect()
                pool.release(connection)
                sent.append(error)
                continue
            sent.append((pool, connection))
        results: list[list[Reply | Exception]] = []
        for request, state in zip(requests, sent, strict=True):
            if isinstance(state, Exception):
                results.append([state] * request.count)
                continue
            pool, connection = state
            replies: list[Reply | Exception] = []
            try:
                for _ in range(request.count):
                    try:
                        replies.append(connection.read_response(disable_decoding=True))
                    except redis.ResponseError as error:  # read whole: the next reply follows it
                        replies.append(error)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                connection.disconnect()
                replies += [error] * (request.count - len(replies))
            finally:
                pool.release(connection)
            results.append(replies)
        return results

    def read(self, keys: Sequence[bytes], commands: Sequence[bytes]) -> list[Reply]:
        """Send ``commands[i]``, a command on ``keys[i]``, to the key's primary; their replies in order."""
        replies: list[Reply] = [None] * len(keys)
        targets: list[ClusterNode | None] = [None] * len(keys)
        """Where ``ASK`` sent a key, for its next attempt (None: its slot's primary)."""
        pending = list(range(len(keys)))
        slots = key_slots(keys)
        deadline = time.monotonic() + RETRY_FOR_S
        for attempt in itertools.count():
            primaries = self.primaries([slots[index] for index in pending])
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index, primary in zip(pending, primaries, strict=True):
                node = targets[index] or primary
                by_node.setdefault(node.name, (node, []))[1].append(index)
            requests = []
            for node, indexes in by_node.values():
                parts = [_ASKING + commands[i] if targets[i] else commands[i] for i in indexes]
                asking = sum(1 for i in indexes if targets[i])
                requests.append(Request(node=node, payload=b"".join(parts), count=len(indexes) + asking))
            failed: list[int] = []
            errors: list[Exception] = []
            for (_, indexes), results in zip(by_node.values(), self.exchange(requests), strict=True):
                position = 0
                for index in indexes:
                    if targets[index]:
                        position += 1  # ASKING's OK
                    reply = results[position]
                    position += 1
                    targets[index] = None
                    if isinstance(reply, Exception):
                        if not is_topology(reply):
                            raise reply
                        if _is_ask(reply):
                            targets[index] = self._node(reply.host, reply.port)  # type: ignore[attr-defined]
                        failed.append(index)
                        errors.append(reply)
                    else:
                        replies[index] = reply
            if not failed:
                return replies
            self.settle(attempt, errors, deadline)
            pending = failed
        raise AssertionError("unreachable")

    def settle(self, attempt: int, errors: Sequence[Exception], deadline: float) -> None:
        """After a failed attempt: give up past the deadline, else wait a little and reload the slot map
        (an ``ASK`` alone does not need it)."""
        if time.monotonic() > deadline:
            raise TopologyError(
                f"the cluster did not settle within {RETRY_FOR_S:.0f} s: {errors[0]!r}"
            ) from errors[0]
        if not all(map(_is_ask, errors)):
            if not attempt:
                log.warning(
                    "Redis Cluster: %d commands failed (%s: %s); reloading the slot map, sending them again",
                    len(errors),
                    type(errors[0]).__name__,
                    errors[0],
                )
            time.sleep(min(0.05 * 2**attempt, 0.5) if attempt else 0)
            self.refresh()

    def _node(self, host: str, port: int | str) -> ClusterNode:
        node = self.cluster.nodes_manager.get_node(host, int(port))
        if node is None:
            self.refresh()
            node = self.cluster.nodes_manager.get_node(host, int(port))
        if node is None:
            raise TopologyError(f"the cluster redirected to {host}:{port}, which it does not list")
        return node


def _is_ask(error: Exception) -> bool:
    """An ``ASK`` (the slot is moving: ask its next owner once), not a ``MOVED``, which redis-py
    derives from it (the slot has moved: reload the map)."""
    return isinstance(error, redis.exceptions.AskError) and not isinstance(error, redis.exceptions.MovedError)


def is_topology(error: Exception) -> bool:
    """Whether an error says the slot map is stale or a node is away, so that resending may succeed."""
    return isinstance(error, _STALE_MAP) or "non local key" in str(error)
