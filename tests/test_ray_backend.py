"""The Ray backend against a real single-node Ray cluster started for this module.

The cluster gets free ports (never Redis' 6379 or Ray's fixed defaults, so a leftover or a second
cluster does not collide) and a short temp dir (Ray's unix sockets live there, and their paths are
limited to about 107 bytes). ``ray start`` runs in a session of its own; teardown kills that session's
processes and their descendants, rather than ``ray stop``, which ends every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitors.retraining.jobs import JobError
from monitors.retraining.ray_jobs import RayBackend
from tests.job_backend_checks import CHECKS

job_submission = pytest.importorskip("ray.job_submission", reason="needs pip install 'ray[default]'")

READY_TIMEOUT_S = 90


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on loopback a moment ago."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _session_processes(session: int) -> set[int]:
    """The processes of ``session`` and all their descendants (a Ray job's entrypoint starts a session)."""
    parents: dict[int, int] = {}
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp session ...": comm may hold spaces, so split after its ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
        if int(fields[3]) == session:
            members.add(int(entry.name))
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in members} - members
        members |= children
        grew = bool(children)
    return members


def _kill_session(session: int, timeout_s: float = 10) -> None:
    """SIGKILL, as ``ray stop --force`` does: on SIGTERM the GCS and raylet linger for over 10 s."""
    deadline = time.monotonic() + timeout_s
    while (processes := _session_processes(session)) and time.monotonic() < deadline:
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The Jobs API address of a single-node Ray cluster that lives as long as this module's tests."""
    gcs_port, dashboard_port, client_port, agent_port, *metric_ports = _free_ports(6)
    temp_dir = tempfile.mkdtemp(prefix="sluice-ray-", dir="/tmp")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    # Ray's metrics endpoints have fixed default ports too (44217, 44227); only the environment sets them.
    env["AUTOSCALER_METRIC_PORT"], env["DASHBOARD_METRIC_PORT"] = map(str, metric_ports)
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port),
        "--dashboard-port", str(dashboard_port),
        "--ray-client-server-port", str(client_port),
        "--dashboard-agent-listen-port", str(agent_port),
        "--num-cpus", "2",
        "--include-dashboard=true",
        "--disable-usage-stats",
        "--temp-dir", temp_dir,
    ]  # fmt: skip
    log = Path(temp_dir) / "ray-start.log"  # a file, not a pipe: the daemons it starts would hold a pipe open
    with log.open("w") as output:
        starter = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # every Ray process of this cluster stays in this session
        )
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        if starter.wait(timeout=READY_TIMEOUT_S) != 0:
            pytest.fail(f"ray start failed ({starter.returncode}):\n{log.read_text()}", pytrace=False)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                job_submission.JobSubmissionClient(address).list_jobs()
                break
            except (RuntimeError, OSError) as error:
                if time.monotonic() > deadline:
                    pytest.fail(f"the Ray Jobs API at {address} did not answer: {error}", pytrace=False)
                time.sleep(0.5)
        yield address
    finally:
        if starter.poll() is None:
            starter.kill()
        _kill_session(starter.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.stack
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_ray_backend(check: Callable[..., None], ray_address: str) -> None:
    check(RayBackend(address=ray_address))


@pytest.mark.stack
def test_unknown_job_is_an_error(ray_address: str) -> None:
    backend = RayBackend(address=ray_address)
    with pytest.raises(JobError, match="does not exist"):
        backend.status("sluice-no-such-job")


def test_unreachable_cluster_is_an_error() -> None:
    (port,) = _free_ports(1)
    with pytest.raises(JobError, match=f"127.0.0.1:{port}"):
        RayBackend(address=f"http://127.0.0.1:{port}").status("sluice-any-job")


def test_missing_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # the import fails as if not installed
    with pytest.raises(JobError, match=r"pip install 'ray\[default\]'"):
        RayBackend(address="http://127.0.0.1:8265").status("sluice-any-job")
