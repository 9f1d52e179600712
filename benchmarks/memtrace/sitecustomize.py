"""Where a sluice process's memory goes, for ``benchmarks/soak.py --trace-memory``.

Benchmark-only: a process gets it by having this folder on ``PYTHONPATH`` (Python imports
``sitecustomize`` at start-up) and ``SLUICE_MEMTRACE`` naming a file. Every ``SLUICE_MEMTRACE_EVERY_S``
seconds (default 30) a thread appends one JSON line to that file: the resident set, glibc's heap
(``mallinfo2``: bytes in use, bytes free but held), Arrow's pool, Python's allocated blocks, the most
numerous object types, and, while ``tracemalloc`` traces (``SLUICE_MEMTRACE_FRAMES`` > 0), the 25
source lines holding the most traced memory. The heap tells a leak (bytes in use grow) from
fragmentation (bytes free but held grow); the rest says what grows.
"""

from __future__ import annotations

import os

_PATH = os.environ.get("SLUICE_MEMTRACE")

if _PATH:
    import ctypes
    import gc
    import json
    import sys
    import threading
    import time
    import tracemalloc
    from collections import Counter
    from pathlib import Path

    _FRAMES = int(os.environ.get("SLUICE_MEMTRACE_FRAMES", "0"))
    _EVERY_S = float(os.environ.get("SLUICE_MEMTRACE_EVERY_S", "30"))
    if _FRAMES:
        tracemalloc.start(_FRAMES)

    class _MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                         "uordblks", "fordblks", "keepcost")
        ]  # fmt: skip

    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallinfo2.restype = _MallInfo2

    def _rss_mib() -> float:
        with Path("/proc/self/status").open() as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _sample(started: float) -> dict[str, object]:
        info = _libc.mallinfo2()
        types = Counter(type(item).__name__ for item in gc.get_objects())
        line: dict[str, object] = {
            "at_s": round(time.monotonic() - started, 1),
            "rss_mib": round(_rss_mib(), 1),
            "heap_in_use_mib": round((info.uordblks + info.hblkhd) / 2**20, 1),
            "heap_free_held_mib": round(info.fordblks / 2**20, 1),
            "heap_arena_mib": round(info.arena / 2**20, 1),
            "mmapped_mib": round(info.hblkhd / 2**20, 1),
            "python_blocks": sys.getallocatedblocks(),
            "threads": threading.active_count(),
            "gc_objects": sum(types.values()),
            "top_types": types.most_common(20),
        }
        if "pyarrow" in sys.modules:  # Arrow's own allocator (jemalloc or mimalloc), outside glibc's heap
            pool = sys.modules["pyarrow"].default_memory_pool()
            line["arrow_backend"] = pool.backend_name
            line["arrow_allocated_mib"] = round(pool.bytes_allocated() / 2**20, 1)
            line["arrow_max_mib"] = round(pool.max_memory() / 2**20, 1)
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot()
            line["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
            line["top_lines"] = [
                [str(stat.traceback[0]), round(stat.size / 2**10, 1), stat.count]
                for stat in snapshot.statistics("lineno")[:25]
            ]
        return line

    def _run() -> None:
        started = time.monotonic()
        while True:
            time.sleep(_EVERY_S)
            line = _sample(started)
            with Path(_PATH).open("a") as out:
                out.write(json.dumps(line) + "\n")

    threading.Thread(target=_run, name="memtrace", daemon=True).start()
