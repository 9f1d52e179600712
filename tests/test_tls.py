"""``sluice serve`` and ``sluice ui`` over HTTPS with a certificate from a private CA (``sluice.stack.tls``):
clients that trust the CA get answers, clients that do not are refused by their own TLS check, plain HTTP
gets nothing, and the console's session cookie is marked Secure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sluice.stack.tls import TlsFiles, make_certificates
from tests.served import ServedRepo, feast_materialized_repo, now_utc
from tests.streaming import free_port

pytestmark = pytest.mark.stack

TOKEN = "tls-token"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def served(tmp_path: Path, project: str) -> ServedRepo:
    return feast_materialized_repo(tmp_path / "repo", project=project, now=now_utc())


def _https(repo: Path, log: Path, tls: TlsFiles, *args: str) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), *args, "--port", str(port),
             "--certfile", str(tls.certificate), "--keyfile", str(tls.key)],
            env={**os.environ, "SLUICE_SERVE_TOKEN": TOKEN, "SLUICE_UI_TOKEN": TOKEN},
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", verify=str(tls.ca), timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_feature_server_answers_over_tls_only_to_clients_that_trust_its_ca(
    served: ServedRepo, tmp_path: Path, tls: TlsFiles
) -> None:
    for url in _https(served.path, tmp_path / "serve.log", tls, "serve"):
        body = {"features": ["card_profile:txn_count"], "entities": {"card_id": [1]}}
        answer = httpx.post(
            f"{url}/get-online-features", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
            verify=str(tls.ca),
        )  # fmt: skip
        assert answer.status_code == 200 and answer.json()["metadata"]["feature_names"] == [
            "card_id",
            "txn_count",
        ]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/health")  # the system's CAs do not know ours
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/health", timeout=5)


def test_the_console_over_tls_marks_its_session_cookie_secure(
    served: ServedRepo, tmp_path: Path, tls: TlsFiles
) -> None:
    for url in _https(served.path, tmp_path / "ui.log", tls, "ui"):
        signed_in = httpx.post(f"{url}/login", data={"token": TOKEN, "next": "/"}, verify=str(tls.ca))
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie, cookie


def test_certfile_without_keyfile_is_refused_with_what_to_give(served: ServedRepo, tls: TlsFiles) -> None:
    command = [sys.executable, "-m", "sluice", "--repo", str(served.path), "serve"]
    refused = subprocess.run(
        [*command, "--certfile", str(tls.certificate)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "--certfile and --keyfile go together" in refused.stderr
