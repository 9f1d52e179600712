"""Fixtures shared by every test.

Tests marked ``stack`` talk to the real local stack (Apache Kafka and Redis on loopback); the
``stack_config`` session fixture makes sure it is up. Every test gets its own topic names, Feast
project and Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import redis
from hypothesis import settings

from features.config import SluiceConfig, load_config
from sluice import stack
from tests.s3 import CREDENTIALS, ENDPOINT
from tests.streaming import delete_topics, make_repo, sluice

# Numba compiles a kernel on its first call; a per-example deadline would flag that as flaky.
settings.register_profile("sluice", deadline=None)
settings.load_profile("sluice")


@pytest.fixture(scope="session")
def stack_config() -> SluiceConfig:
    """The configuration of the running stack; starts the local stack if it is not up."""
    config = load_config()
    try:
        stack.up(config)
    except stack.StackError as error:
        pytest.fail(f"the local stack is not available: {error}", pytrace=False)
    return config


@dataclass(frozen=True)
class DemoRun:
    """What `make demo` printed, and the state folder it left behind."""

    state: Path
    returncode: int
    stdout: str
    output: str
    """stdout and stderr."""


DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


@pytest.fixture(scope="session")
def demo_run(stack_config: SluiceConfig, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`make demo`, shortened (``SLUICE_DEMO_QUICK``), run once per session: its own test checks what it
    printed, and the console's tests look at what it left in Kafka, Redis and the state folder."""
    state = tmp_path_factory.mktemp("demo") / "state"
    env = {**os.environ, "SLUICE_DEMO_QUICK": "1", "SLUICE_STATE_DIR": str(state)}
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    return DemoRun(state, result.returncode, result.stdout, result.stdout + result.stderr)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: the test's name plus a random suffix, safe for topics and keys."""
    base = "".join(char if char.isalnum() else "-" for char in request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(unique_name: str) -> str:
    """A Kafka topic name private to this test."""
    return f"t.{unique_name}"


@pytest.fixture
def project(unique_name: str) -> str:
    """A Feast project name private to this test (Feast's Redis keys end with the project name)."""
    return "p_" + unique_name.replace("-", "_")


@pytest.fixture
def redis_client(stack_config: SluiceConfig, unique_name: str) -> Iterator[redis.Redis]:
    """A Redis client; keys under ``redis_prefix`` and the test's project are deleted afterwards."""
    client = redis.Redis.from_url(stack_config.redis.url, **stack_config.redis.client_kwargs())
    yield client
    for pattern in (f"{unique_name}:*", f"*p_{unique_name.replace('-', '_')}"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture
def postgres_store(stack_config: SluiceConfig, unique_name: str) -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the local stack's PostgreSQL and returns their store URLs; drops them
    afterwards."""
    import psycopg

    from sluice.stack.services import LOCAL_POSTGRES_URL

    made: list[str] = []

    def admin() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host="127.0.0.1", port=5432, user="sluice", dbname="postgres", autocommit=True)

    def new() -> str:
        name = f"t_{unique_name.replace('-', '_')[:40]}_{len(made)}".lower()
        with admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return LOCAL_POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"

    yield new
    with admin() as connection:
        for name in made:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def bucket(stack_config: SluiceConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket of this test's own on the stack's S3 server; the worker and the CLI reach it through
    ``SLUICE_S3_ENDPOINT`` and the AWS variables."""
    for name, value in {**CREDENTIALS, "SLUICE_S3_ENDPOINT": ENDPOINT}.items():
        monkeypatch.setenv(name, value)
    name = f"sluice-{uuid.uuid4().hex[:12]}"
    admin = pafs.S3FileSystem(
        endpoint_override=ENDPOINT.split("://")[1],
        scheme="http",
        allow_bucket_creation=True,
        region="us-east-1",
    )
    admin.create_dir(name)
    yield name


@pytest.fixture
def redis_prefix(unique_name: str) -> str:
    """A Redis key prefix private to this test."""
    return f"{unique_name}:"


@pytest.fixture
def stream_repo(tmp_path: Path, project: str, topic: str) -> Iterator[Path]:
    """The streaming test repo (``tests.streaming.make_repo``) over this test's topic, applied: its registry
    written and its topics created; the topics are deleted afterwards."""
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    yield repo
    delete_topics(topic, f"{topic}.dlq")
