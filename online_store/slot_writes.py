"""The writer's scripts on a Redis Cluster: rows grouped by the primary of their key's slot, one pipelined
request per primary, all primaries at once, each request followed by ``WAIT`` for its replicas.

Redis replicates asynchronously: a primary that dies just after acknowledging a script takes the
rows with it unless a replica already had them, and its replica, promoted, would serve older rows
while the stream worker has committed their offsets. So each primary's request ends with
``WAIT n`` (n: ``replica_acks``, or fewer where the slot map lists fewer live replicas), and rows whose
primary failed, or whose ``WAIT`` saw fewer replicas, are sent again once the slot map is reloaded:
to the promoted replica after a failover. Rewriting a row is a no-op, so nothing is written twice,
and the call returns only when every row is on its primary and its replicas. ``WAIT`` was chosen over
keeping the batches since the last acknowledged one for rewriting later: it needs no state across
calls, ``sluice materialize`` and the worker get the same guarantee, and it costs one reply per
primary per batch (a loopback round trip each, overlapped).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Sequence

import redis
from redis.cluster import ClusterNode

from online_store.cluster import RETRY_FOR_S, ClusterWire, Request, is_topology, key_slots
from online_store.wire import bulk

__all__ = ["SlotWriter", "UnacknowledgedWrite"]

_ROWS_PER_CALL = 500


class UnacknowledgedWrite(redis.ConnectionError):
    """Fewer replicas than asked acknowledged a write within the timeout."""


class SlotWriter:
    """Runs the cluster variant of the writer's script (keys in ARGV, any slots of one node)."""

    def __init__(self, *, wire: ClusterWire, script: str) -> None:
        self.wire = wire
        self.script = script
        self._sha = bulk(hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest().encode())
        self._loaded: set[str] = set()
        """Nodes known to hold the script; a promoted replica does not until it is loaded there."""

    def write(self, keys: Sequence[bytes], packed: Sequence[bytes], width: int) -> int:
        """Write each key's packed row (``width`` arguments) on its primary; returns the rows applied."""
        wire = self.wire
        slots = key_slots(keys)
        pending = list(range(len(keys)))
        applied = 0
        deadline = time.monotonic() + RETRY_FOR_S
        for attempt in itertools.count():
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index, node in zip(pending, wire.primaries([slots[i] for i in pending]), strict=True):
                by_node.setdefault(node.name, (node, []))[1].append(index)
            for node, _ in by_node.values():
                if node.name not in self._loaded:
                    self._load(node)
            requests, plans = [], []
            for node, rows in by_node.values():
                chunks = [rows[at : at + _ROWS_PER_CALL] for at in range(0, len(rows), _ROWS_PER_CALL)]
                calls = [self._call(chunk, keys, packed, width) for chunk in chunks]
                replicas = min(wire.replica_acks, wire.live_replicas(node))
                if replicas:
                    wait = (bulk(b"%d" % replicas), bulk(b"%d" % wire.ack_timeout_ms))
                    calls.append(b"*3\r\n$4\r\nWAIT\r\n%s%s" % wait)
                requests.append(Request(node=node, payload=b"".join(calls), count=len(calls)))
                plans.append((node, rows, chunks, replicas))
            failed: list[int] = []
            errors: list[Exception] = []
            for (node, rows, chunks, replicas), replies in zip(plans, wire.exchange(requests), strict=True):
                lost = False
                for reply in replies[: len(chunks)]:
                    if isinstance(reply, Exception):
                        if not is_topology(reply):
                            raise reply
                        if isinstance(reply, redis.exceptions.NoScriptError):
                            self._loaded.discard(node.name)
                        errors.append(reply)
                        lost = True
                    else:
                        applied += int(reply)
                if replicas and not lost:
                    acknowledged = replies[-1]
                    if isinstance(acknowledged, Exception) or int(acknowledged) < replicas:
                        errors.append(
                            UnacknowledgedWrite(
                                f"{node.name}: {acknowledged!r} of {replicas} replicas acknowledged "
                                f"within {wire.ack_timeout_ms} ms"
                            )
                        )
                        lost = True
                if lost:
                    # The whole node's rows again: those written are no-ops, and WAIT covers them all.
                    failed += rows
            if not failed:
                return applied
            wire.settle(attempt, errors, deadline)
            pending = failed
        raise AssertionError("unreachable")

    def _call(self, rows: Sequence[int], keys: Sequence[bytes], packed: Sequence[bytes], width: int) -> bytes:
        count = len(rows)
        return b"*%d\r\n$7\r\nEVALSHA\r\n%s$1\r\n0\r\n%s%s%s%s" % (
            5 + count * (1 + width),
            self._sha,
            bulk(b"%d" % width),
            bulk(b"%d" % count),
            b"".join(bulk(keys[row]) for row in rows),
            b"".join(packed[row] for row in rows),
        )

    def _load(self, node: ClusterNode) -> None:
        try:
            self.wire.cluster.get_redis_connection(node).script_load(self.script)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return  # the write to it fails too, and is retried after the slot map is reloaded
        self._loaded.add(node.name)
