"""The registry as the read path sees it: loaded once, then refreshed in the background.

Reads take whatever catalog is current and never wait for a refresh (Feast's online read refreshes
an expired registry inline, on the request that notices, which is Feast issue #6841). A refresh
that fails keeps the previous catalog, logs the error and counts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from online_store.catalog import Catalog

__all__ = ["CatalogCache"]

log = logging.getLogger(__name__)


class CatalogCache:
    """Holds the current catalog; a daemon thread reloads it every ``ttl_seconds`` (never if 0)."""

    def __init__(self, *, load: Callable[[], Catalog], ttl_seconds: float) -> None:
        self._load = load
        self._catalog = load()
        self.loaded_at = time.time()
        self.refresh_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if ttl_seconds > 0:
            self._thread = threading.Thread(
                target=self._refresh_every, args=(ttl_seconds,), name="sluice-registry-refresh", daemon=True
            )
            self._thread.start()

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def refresh(self) -> Catalog:
        """Reload now, in the caller's thread, and return the new catalog."""
        self._catalog = self._load()
        self.loaded_at = time.time()
        return self._catalog

    def close(self) -> None:
        self._stop.set()

    def _refresh_every(self, ttl_seconds: float) -> None:
        while not self._stop.wait(ttl_seconds):
            try:
                self.refresh()
            except Exception as error:  # a refresh must never take the reader down
                self.refresh_errors += 1
                log.warning(
                    "registry refresh failed, serving the catalog from %s: %s",
                    time.ctime(self.loaded_at),
                    error,
                )
