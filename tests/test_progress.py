"""Long commands show progress on a terminal and stay quiet in a pipe: ``materialize`` and ``verify`` run
under a real pseudo-terminal, then with their output piped."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from features.repo import load_repo
from sluice.progress import Progress
from tests.streaming import make_repo
from tests.test_materialize import write_history


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_pipe_gets_nothing() -> None:
    screen, pipe = Terminal(), io.StringIO()
    for stream in (screen, pipe):
        with Progress("verifying card_stats", unit="entities", stream=stream) as progress:
            for done in range(0, 1001, 250):
                progress(done, 1000)
    assert "verifying card_stats" in screen.getvalue() and "100%" in screen.getvalue()
    assert "1.00k/1.00k" in screen.getvalue()
    assert pipe.getvalue() == ""


def in_a_terminal(repo: Path, *args: str) -> tuple[int, str]:
    """Run ``sluice ARGS`` with its standard output and error on a pseudo-terminal; what it drew."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a terminal's size
    process = subprocess.Popen(
        [sys.executable, "-m", "sluice", "--repo", str(repo), *args],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    return process.wait(timeout=120), drawn.decode(errors="replace")


@pytest.mark.stack
def test_materialize_and_verify_draw_progress_on_a_terminal_only(
    tmp_path: Path, project: str, topic: str
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    write_history(load_repo(repo).spec("card_stats"))
    code, drawn = in_a_terminal(repo, "materialize")
    assert code == 0, drawn
    assert "materializing card_stats" in drawn and "100%" in drawn and "110/110" in drawn
    assert "110 entities" in drawn  # the report itself
    code, drawn = in_a_terminal(repo, "verify")
    assert code == 0, drawn
    assert "verifying card_stats" in drawn and "110/110" in drawn
    piped = subprocess.run(
        [sys.executable, "-m", "sluice", "--repo", str(repo), "verify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "verifying" not in piped.stdout + piped.stderr and "\r" not in piped.stdout + piped.stderr
    assert "110 entities, 110 match online" in piped.stdout
