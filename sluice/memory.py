"""Give memory that a long-running process has freed back to the operating system.

glibc's malloc keeps what Python and NumPy free in its arenas (one per thread that allocates, up to
eight per core) and returns it to the system only from the top of each heap. A stream worker allocates
and frees each batch's arrays many times a second, from several threads, between blocks that live for
minutes (its raw-event buffer), so freed memory piles up in holes. In the 30-minute soak
(``benchmarks/soak.py``) the worker's heap in use rose and fell with its raw-event buffer (82 to 103 MiB,
every 10 minutes) while the free memory glibc held swung from 20 to 100 MiB on top of it, and the
resident size with it.

``release_every()``, which ``sluice worker`` and ``sluice monitor`` call at start-up, starts a daemon
thread that calls ``malloc_trim(0)`` every 30 s: it returns the free pages of every arena (a few
milliseconds, each arena locked in turn), the remedy Dask documents for its workers. Fixing glibc's mmap
threshold (``mallopt``) as well kept the soak's free heap lower still, but cost 10 to 20% of
``WindowState.advance``'s speed on 5,000-event batches (each large temporary its own ``mmap``), so it
is not done. Elsewhere than glibc (musl, macOS) this does nothing.

>>> release() in (True, False)
True
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from typing import Any

__all__ = ["AVAILABLE", "release", "release_every"]

log = logging.getLogger(__name__)


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()
AVAILABLE = _TRIM is not None
"""Whether this C library can return freed memory (glibc)."""


def release() -> bool:
    """Return the freed memory of every arena to the system now; whether any was returned."""
    return bool(_TRIM(0)) if _TRIM is not None else False


def release_every(seconds: float = 30.0) -> threading.Thread | None:
    """Call ``release`` every ``seconds`` on a daemon thread; None where this is not glibc."""
    if _TRIM is None:
        return None

    def run() -> None:
        while True:
            time.sleep(seconds)
            started = time.perf_counter()
            release()
            log.debug("freed memory returned to the system in %.1f ms", (time.perf_counter() - started) * 1e3)

    thread = threading.Thread(target=run, name="sluice-release-memory", daemon=True)
    thread.start()
    return thread
