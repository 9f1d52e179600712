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
