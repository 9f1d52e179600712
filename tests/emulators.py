"""Google Cloud Storage and Azure Blob Storage on loopback, for the tests of ``gs://`` and ``abfs://``.

fake-gcs-server (a Go module, built once with ``go install`` from the module proxy) serves GCS's JSON
API; Azurite (npm) serves Azure's Blob API. Both are installed under the state folder's ``tools/`` the
first time a test needs them, and run for that test only, in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

FAKE_GCS = "github.com/fsouza/fake-gcs-server@v1.56.1"
AZURITE = "azurite@3.37.0"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account and key (public, in Azure's documentation)."""


class EmulatorUnavailable(RuntimeError):
    """The emulator could not be installed or started here; the message says why."""


def tools(state_dir: Path) -> Path:
    folder = state_dir / "tools"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fake_gcs_binary(state_dir: Path) -> Path:
    """fake-gcs-server, built once into ``<state>/tools/bin``."""
    binary = tools(state_dir) / "bin" / "fake-gcs-server"
    if binary.is_file():
        return binary
    if shutil.which("go") is None:
        raise EmulatorUnavailable("building fake-gcs-server needs Go on PATH")
    built = subprocess.run(
        ["go", "install", FAKE_GCS],
        env={**os.environ, "GOBIN": str(binary.parent), "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if built.returncode != 0:
        raise EmulatorUnavailable(f"go install {FAKE_GCS} failed: {built.stderr[-2000:]}")
    return binary


def azurite_script(state_dir: Path) -> Path:
    """Azurite's blob server, installed once into ``<state>/tools/azurite``."""
    prefix = tools(state_dir) / "azurite"
    script = prefix / "node_modules" / ".bin" / "azurite-blob"
    if script.exists():
        return script
    if shutil.which("npm") is None:
        raise EmulatorUnavailable("installing Azurite needs npm on PATH")
    installed = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(prefix), AZURITE],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if installed.returncode != 0 or not script.exists():
        raise EmulatorUnavailable(f"npm install {AZURITE} failed: {installed.stderr[-2000:]}")
    return script


@contextlib.contextmanager
def fake_gcs(state_dir: Path, work: Path) -> Iterator[str]:
    """A fake-gcs-server in memory; yields its endpoint URL."""
    port = _free_port()
    with _running(
        [str(fake_gcs_binary(state_dir)), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
         "-backend", "memory", "-public-host", f"127.0.0.1:{port}"],
        port, work / "fake-gcs.log",
    ):  # fmt: skip
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def azurite(state_dir: Path, work: Path) -> Iterator[str]:
    """Azurite's blob server, in memory; yields its endpoint URL."""
    port = _free_port()
    with _running(
        [str(azurite_script(state_dir)), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent"],
        port, work / "azurite.log",
    ):  # fmt: skip
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def _running(command: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise EmulatorUnavailable(f"{command[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield
    finally:  # in memory: nothing to flush, and Azurite takes its time over SIGTERM
        process.kill()
        process.wait()


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
