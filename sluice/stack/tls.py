"""Certificates for a local stack that speaks TLS: a private CA and a server certificate it signs, made with
``openssl`` (Debian's, on every machine that runs the stack).

The server certificate names ``127.0.0.1`` and ``localhost`` (subject alternative names), so clients that
verify hostnames accept it when they trust the CA, and refuse it otherwise. Keys are written readable by
their owner only. Nothing here is for production: a real deployment's certificates come from its own PKI.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsError", "TlsFiles", "make_certificates"]


class TlsError(RuntimeError):
    """openssl is missing or refused: the message says what to install or fix."""


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    ca: Path
    """The CA's certificate: what clients trust."""
    certificate: Path
    key: Path


def make_certificates(
    folder: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30
) -> TlsFiles:
    """A CA and a server certificate for ``hosts`` under ``folder``, made once and then reused."""
    files = TlsFiles(ca=folder / "ca.crt", certificate=folder / "server.crt", key=folder / "server.key")
    if files.ca.exists() and files.certificate.exists() and files.key.exists():
        return files
    if shutil.which("openssl") is None:
        raise TlsError("making certificates needs openssl: apt-get install -y openssl")
    folder.mkdir(parents=True, exist_ok=True)
    names = ",".join(f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}" for host in hosts)
    ca_key = folder / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(files.ca),
        "-days", str(days), "-subj", "/CN=sluice local CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    request = folder / "server.csr"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files.key), "-out", str(request),
        "-subj", f"/CN={hosts[0]}",
    )  # fmt: skip
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(files.ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(files.certificate), "-days", str(days), "-extfile", str(extensions),
    )  # fmt: skip
    for key in (ca_key, files.key):
        key.chmod(0o600)
    return files


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
