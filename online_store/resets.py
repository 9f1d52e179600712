"""Noticing that Redis came back empty, and refilling it from the offline store.

A Redis that restarts without its data (no persistence, a lost volume, a failover to an empty replica)
answers as if nothing happened, and readers get NOT_FOUND for every entity until each is written again.
The stream worker watches for it: Redis's ``run_id`` (``INFO server``) changes on every restart, and sluice
keeps a marker key of its own; a new run id without the marker means the data is gone. One worker (the one
that takes the rebuild's lock for that run id) then writes each view's latest offline rows back, as
``sluice materialize`` does. The online writer only replaces a row with a newer one, so the rebuild and the
stream can run side by side, and a second rebuild changes nothing.

Only a single Redis is watched: a cluster's nodes restart one by one, each with a run id of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResetWatch", "marker_key"]

log = logging.getLogger("sluice.online")


def marker_key(project: str) -> str:
    """The key whose absence after a restart means Redis lost its data. Feast's keys end with the project
    name, and so does this one: an ACL of ``~*<project>`` covers it.

    >>> marker_key("fraud")
    'sluice:online-marker:fraud'
    """
    return f"sluice:online-marker:{project}"


CHECK_EVERY_S = 5.0


@dataclass(kw_only=True)
class ResetWatch:
    """Tells when the single Redis behind ``client`` has restarted empty (``emptied``)."""

    client: Any
    """A ``redis.Redis`` (not a cluster client)."""
    project: str
    every_s: float = CHECK_EVERY_S
    clock: Callable[[], float] = time.monotonic
    _run_id: str | None = field(default=None, init=False)
    _checked: float = field(default=float("-inf"), init=False)

    @property
    def marker(self) -> str:
        return marker_key(self.project)

    def emptied(self) -> str | None:
        """The new run id when Redis restarted without sluice's marker since the last check (at most one
        check per ``every_s``); None otherwise. The first check only takes note."""
        now = self.clock()
        if now - self._checked < self.every_s:
            return None
        self._checked = now
        run_id = str(self.client.info("server")["run_id"])
        if run_id == self._run_id:
            return None
        present = bool(self.client.exists(self.marker))
        self.client.set(self.marker, run_id)
        first, self._run_id = self._run_id is None, run_id
        return None if first or present else run_id

    def claim_rebuild(self, run_id: str) -> bool:
        """Whether this worker rebuilds after the restart ``run_id`` (one worker in the group does)."""
        key = f"sluice:online-rebuild:{run_id}:{self.project}"
        return bool(self.client.set(key, "1", nx=True, ex=24 * 3600))
