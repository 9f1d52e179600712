"""The container image, checked statically (there is no Docker engine here to build it): it runs as a
numeric non-root user, installs exactly the pinned set CI tests, carries no secret, and starts every role
through the entrypoint the Kubernetes manifests name."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    steps = instructions()
    last_from = max(index for index, (keyword, _) in enumerate(steps) if keyword == "FROM")
    users = [rest for keyword, rest in steps[last_from:] if keyword == "USER"]
    assert users, "the final stage never leaves root"
    user = users[-1].split(":")[0]
    # Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, user
    # Nothing runs as root after the switch, and the user exists in the image.
    after = steps[[rest for _, rest in steps].index(users[-1]) :]
    assert all(keyword != "RUN" for keyword, _ in after), after
    assert any(keyword == "RUN" and f"--uid {user}" in rest for keyword, rest in steps)


def test_the_image_installs_the_pinned_set_and_starts_through_the_entrypoint() -> None:
    steps = instructions()
    installs = [rest for keyword, rest in steps if keyword == "RUN" and "pip install" in rest]
    assert installs and all("-c deploy/constraints.txt" in rest for rest in installs)
    entrypoint = [rest for keyword, rest in steps if keyword == "ENTRYPOINT"][-1]
    assert entrypoint == '["sluice-entrypoint"]'
    copied = [shlex.split(rest) for keyword, rest in steps if keyword == "COPY"]
    assert ["deploy/docker/entrypoint.sh", "/usr/local/bin/sluice-entrypoint"] in copied
    manifests = (ROOT / "deploy" / "kubernetes").glob("*.yaml")
    assert all("command:" not in path.read_text() for path in manifests)  # so every role goes through it


@pytest.mark.parametrize("word", ["PASSWORD", "TOKEN", "SECRET", "KEY"])
def test_no_secret_is_baked_into_the_image(word: str) -> None:
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            assert word not in rest.upper(), f"{keyword} {rest}"
