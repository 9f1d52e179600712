"""The embedded job backend: each job is a subprocess on this machine, in ``<root>/<job id>/``.

The folder is the job: ``spec.json`` (what was asked), ``output.log`` (stdout and stderr), ``pid`` (the
entrypoint's) and ``runner_pid`` while it runs, and ``exit_code`` when it ends. Creating the folder is
the submission, so a second submit of the same id finds it and is "already submitted". A small runner
process (``python -m monitors.retraining.local <folder>``) starts the entrypoint and writes its exit
code, so the outcome is recorded even when the process that submitted it has gone. The job runs with
this Python's folder first on ``PATH``, so an entrypoint ``python train.py`` gets the interpreter (and
virtualenv) sluice runs in.
The training code decides itself whether to use the GPU; nothing here hides CUDA devices from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from monitors.retraining.jobs import JobNotFound, JobSpec, JobState, Submission

__all__ = ["LocalBackend"]

_START_GRACE_S = 60.0
"""How long a submitted job may go without its runner's pid before it counts as failed to start."""


class LocalBackend:
    """Runs jobs as local subprocesses."""

    name = "local"

    def __init__(self, *, root: Path, cwd: Path | None = None) -> None:
        """``root`` holds one folder per job; ``cwd`` is where the entrypoint runs (the repo)."""
        self.root = root
        self.cwd = cwd

    def submit(self, spec: JobSpec) -> Submission:
        folder = self.root / spec.job_id
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            return Submission(spec.job_id, created=False)
        (folder / "spec.json").write_text(
            json.dumps(
                {
                    "command": spec.command(),
                    "env": {"PATH": _path_with_this_python(), **spec.environment()},
                    "cwd": str(self.cwd) if self.cwd else None,
                }
            )
        )
        subprocess.Popen(
            [sys.executable, "-m", "monitors.retraining.local", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return Submission(spec.job_id, created=True)

    def status(self, job_id: str) -> JobState:
        folder = self._folder(job_id)
        finished = _finished(folder)
        if finished is not None:
            return finished
        pid = _read_pid(folder)
        if pid is None:
            # The runner has not written its pid yet; if it never will (a crash between submitting and
            # starting it), the job has failed.
            started = (folder / "spec.json").stat().st_mtime if (folder / "spec.json").exists() else 0.0
            return "queued" if time.time() - started < _START_GRACE_S else "failed"
        if _alive(pid):
            return "running"
        finished = _finished(folder)  # it may have ended since we looked
        if finished is None and _alive(_read_pid(folder, "runner_pid")):
            return "running"  # the entrypoint has exited and its runner is recording the exit code
        return finished or _finished(folder) or "failed"

    def logs(self, job_id: str) -> str:
        log = self._folder(job_id) / "output.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def cancel(self, job_id: str) -> None:
        folder = self._folder(job_id)
        if (folder / "exit_code").exists():
            return  # it has finished: nothing to stop, and its outcome stays what it was
        (folder / "cancelled").touch()
        pid = _read_pid(folder)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def _folder(self, job_id: str) -> Path:
        folder = self.root / job_id
        if not folder.is_dir():
            raise JobNotFound(f"no local job {job_id!r} under {self.root}")
        return folder


def _path_with_this_python() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def _finished(folder: Path) -> JobState | None:
    exit_code = folder / "exit_code"
    if not exit_code.exists():
        return None
    if (folder / "cancelled").exists():
        return "cancelled"
    return "succeeded" if exit_code.read_text().strip() == "0" else "failed"


def _read_pid(folder: Path, name: str = "pid") -> int | None:
    try:
        return int((folder / name).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    """Whether the process runs; an exited one not yet reaped (a zombie) does not."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: take the signal's word
    return state != "Z"


def _run(folder: Path) -> int:
    """The runner: start the entrypoint in its own process group, wait, record the exit code."""
    spec = json.loads((folder / "spec.json").read_text())
    _atomic_write(folder / "runner_pid", str(os.getpid()))
    if (folder / "cancelled").exists():  # cancelled before it started
        _atomic_write(folder / "exit_code", "-15")
        return -15
    with (folder / "output.log").open("ab") as log:
        try:
            process = subprocess.Popen(
                spec["command"],
                cwd=spec["cwd"],
                env={**os.environ, **spec["env"]},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            log.write(f"sluice: could not start {spec['command']!r}: {error}\n".encode())
            code = 127
        else:
            _atomic_write(folder / "pid", str(process.pid))
            code = process.wait()
    _atomic_write(folder / "exit_code", str(code))
    return code


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


if __name__ == "__main__":
    sys.exit(_run(Path(sys.argv[1])))
