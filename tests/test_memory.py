"""Memory a process freed goes back to the system: its resident size falls by what it freed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sluice import memory


@pytest.mark.skipif(not memory.AVAILABLE, reason="malloc_trim is glibc's")
def test_memory_freed_between_blocks_in_use_leaves_the_resident_set() -> None:
    # In a fresh process: a thread (so a second arena) allocates 10,000 arrays of 24 KiB and frees every
    # other one. The freed 117 MiB lie between blocks in use, where glibc does not return memory by itself.
    script = textwrap.dedent(
        """
        import threading
        import numpy as np
        from sluice.memory import release

        def rss_mib():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        kept = []
        def allocate():
            arrays = [np.ones(3000) for _ in range(10_000)]
            kept.extend(arrays[1::2])
        thread = threading.Thread(target=allocate)
        thread.start()
        thread.join()
        before = rss_mib()
        released = release()
        print(before, rss_mib(), released, sum(a.nbytes for a in kept) / 2**20)
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    before, after, released, kept = output.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 0.8 * 117, output.stdout  # the freed arrays' pages are gone
    assert float(kept) == pytest.approx(5000 * 3000 * 8 / 2**20)  # and the ones in use are still there


@pytest.mark.skipif(not memory.AVAILABLE, reason="mallopt is glibc's")
def test_large_blocks_keep_their_own_mapping_after_one_is_freed() -> None:
    # glibc alone raises its mmap threshold when a 1 MiB block is freed, so the next ones come from the
    # heap; with release_every's fixed threshold each stays a mapping of its own, freed to the system.
    script = textwrap.dedent(
        """
        import ctypes, sys
        import numpy as np
        from sluice.memory import release_every

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                "fordblks", "keepcost")]
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        if sys.argv[1] == "fixed":
            release_every(3600)
        freed = np.ones(2**17)  # 1 MiB
        del freed
        before = libc.mallinfo2().hblks
        arrays = [np.ones(2**17) for _ in range(50)]
        print(libc.mallinfo2().hblks - before)
        """
    )
    root = Path(__file__).resolve().parents[1]
    mapped = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, cwd=root
            ).stdout
        )
        for mode in ("glibc", "fixed")
    }
    assert mapped["fixed"] == 50, mapped
    assert mapped["glibc"] < 50, mapped  # the behaviour the fixed threshold is there to stop
