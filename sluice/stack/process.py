"""Start, find and stop the local stack's daemons by pid file, and only those."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ManagedProcess"]


@dataclass(frozen=True, kw_only=True)
class ManagedProcess:
    """A daemon that the local stack starts, remembered by a pid file.

    ``markers`` are strings that must all appear in the process's command line. They guard against
    a stale pid file whose pid now belongs to an unrelated process: that process is never signalled.
    """

    name: str
    pid_file: Path
    log_file: Path
    markers: tuple[str, ...]
    stop_signal: int = signal.SIGTERM
    """What asks the daemon to stop (PostgreSQL's fast shutdown is SIGINT; SIGTERM waits for clients)."""

    def recorded_pid(self) -> int | None:
        """The pid in the pid file, whether or not that process still runs."""
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running_pid(self) -> int | None:
        """The recorded pid if that process still runs and is ours (its command line has the markers)."""
        pid = self.recorded_pid()
        if pid is None or not _is_running(pid):
            return None
        command_line = _command_line(pid) or ""
        return pid if all(marker in command_line for marker in self.markers) else None
        return None

    def start(self, argv: list[str], *, cwd: Path) -> int:
        """Start ``argv`` detached from this process, logging to ``log_file``; returns its pid."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Signal our process to stop, SIGKILL it after ``timeout_s``; returns whether one was running.

        The pid file is removed either way, so a crash stops being reported once acknowledged.
        """
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _is_running(pid):
            time.sleep(0.1)
        if _is_running(pid):
            os.kill(pid, signal.SIGKILL)
            while _is_running(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemon's log, to show why it did not come up."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _command_line(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    if fields[0] == "Z":
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
