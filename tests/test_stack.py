"""`sluice stack up | status | down` against a second, private stack on free ports.

The status must stay truthful through the life of the stack: after up, after the broker is
killed by hand, after a second up, and after down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluice.stack.process import ManagedProcess

SLUICE = [sys.executable, "-m", "sluice"]


def _free_port_pair() -> int:
    """A port p such that p and p + 1 are both free (the broker and its controller)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free pair of ports")


def _sluice(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLUICE, *args], env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.stack
def test_status_stays_truthful_through_up_kill_up_down(tmp_path: Path) -> None:
    kafka_port, redis_port, s3_port = _free_port_pair(), _free_port_pair(), _free_port_pair()
    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(tmp_path / "state"),
        "SLUICE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "SLUICE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SLUICE_S3_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "SLUICE_REDIS_CLUSTER_URL": "none",  # the cluster has its own test (test_redis_cluster.py)
    }
    try:
        before = _sluice(env, "stack", "status")
        assert before.returncode == 1
        assert f"kafka  127.0.0.1:{kafka_port}" in before.stdout and "down" in before.stdout

        started = _sluice(env, "stack", "up")
        assert started.returncode == 0, started.stderr
        assert started.stdout.count("running (pid") == 3

        again = _sluice(env, "stack", "up")
        assert again.returncode == 0
        assert again.stdout.splitlines()[:3] == started.stdout.splitlines()[:3], "a second up starts nothing"

        kafka_pid = int((tmp_path / "state" / "run" / "kafka.pid").read_text())
        os.kill(kafka_pid, signal.SIGKILL)
        _wait_for_exit(kafka_pid)
        after_kill = _sluice(env, "stack", "status")
        assert after_kill.returncode == 1
        assert f"down (pid {kafka_pid} from the last 'up' is gone)" in after_kill.stdout
        assert "redis" in after_kill.stdout and "running (pid" in after_kill.stdout

        restarted = _sluice(env, "stack", "up")
        assert restarted.returncode == 0, restarted.stderr
        assert _sluice(env, "stack", "status").returncode == 0
    finally:
        stopped = _sluice(env, "stack", "down")
    assert stopped.stdout.strip() == "stopped: kafka, redis, s3"
    after_down = _sluice(env, "stack", "status")
    assert after_down.returncode == 1
    assert after_down.stdout.count(" down") == 3
    assert _sluice(env, "stack", "down").stdout.startswith("nothing to stop")


def test_up_refuses_to_start_a_service_it_does_not_own(tmp_path: Path) -> None:
    # A list of brokers is a user's cluster, never the local stack's; nothing listens on port 1.
    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(tmp_path / "state"),
        "SLUICE_KAFKA_BOOTSTRAP": "127.0.0.1:1,127.0.0.1:2",
    }
    result = _sluice(env, "stack", "up", "--timeout", "5")
    assert result.returncode == 1
    assert "it is not the local stack's address, so sluice will not start it" in result.stderr


def test_a_stale_pid_file_never_signals_an_unrelated_process(tmp_path: Path) -> None:
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        process = ManagedProcess(
            name="kafka",
            pid_file=tmp_path / "kafka.pid",
            log_file=tmp_path / "kafka.log",
            markers=("kafka.Kafka", str(tmp_path)),
        )
        process.pid_file.write_text(f"{unrelated.pid}\n")
        assert process.recorded_pid() == unrelated.pid
        assert process.running_pid() is None
        assert process.stop() is False
        assert unrelated.poll() is None, "the unrelated process must still run"
        assert not process.pid_file.exists()
    finally:
        unrelated.kill()
        unrelated.wait()


def _wait_for_exit(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
