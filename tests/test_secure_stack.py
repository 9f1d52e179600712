"""The whole path on the secured stack (``sluice stack up --secure``): Kafka over SASL_SSL with SCRAM-SHA-512
and ACLs, Redis over TLS only with an ACL user limited to the project's keys and sluice's commands, and
``sluice serve`` over HTTPS. Every sluice process runs as the ``sluice`` user from ``sluice.env``'s settings;
the test reads back with the same user, and with ``admin`` only to empty Redis for ``materialize``.

Then the three ways access fails (wrong credentials, a certificate the client does not trust, a denied ACL),
for Kafka and for Redis: each is one line that names the setting or grant to fix, and exits at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import redis
from kafka import KafkaConsumer
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.config import SluiceConfig
from monitors.events.logger import PredictionLogger
from sluice import stack
from sluice.stack.secure import SecureStack
from tests.streaming import (
    delete_topics,
    free_port,
    make_repo,
    produce,
    sluice,
    stop,
    stream_times,
    wait_until_committed,
)
from tests.test_monitor import FEATURES, WINDOW_S
from tests.test_monitor import produce as predictions_for
from tests.test_stream_worker import assert_same, online_rows, reference, transactions

pytestmark = pytest.mark.stack

TOKEN = "secured-token"


@pytest.fixture
def secured(stack_config: SluiceConfig, project: str) -> SecureStack:
    """The secured broker and Redis, up, with the sluice user's Redis ACL narrowed to this test's project."""
    stack.up(stack_config.model_copy(update={"project": project}), secure=True, timeout_s=120)
    return SecureStack(state_dir=stack_config.state_dir, project=project)


def _redis(secured: SecureStack, user: str) -> redis.Redis:
    config = secured.redis(user)
    return redis.Redis.from_url(config.url, **config.client_kwargs())


def _start(repo: Path, log: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), *args],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _https_up(url: str, ca: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", verify=str(ca), timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


def _alerts(secured: SecureStack, topic: str, timeout_s: float = 120) -> list[dict[str, object]]:
    """The firing alerts on the alerts topic, read as the sluice user, once there is at least one."""
    consumer = KafkaConsumer(
        topic, **secured.kafka().client_kwargs(), auto_offset_reset="earliest", consumer_timeout_ms=1000
    )
    found: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not found and time.monotonic() < deadline:
            for record in consumer:
                headers = dict(record.headers)
                if headers.get("ce_type") == b"io.sluice.alert.firing":
                    found.append(orjson.loads(record.value))
    finally:
        consumer.close()
    return found


@pytest.fixture
def secured_repo(tmp_path: Path, project: str, topic: str, secured: SecureStack) -> Iterator[Path]:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    definitions = repo / "definitions.py"  # events from January 2026 stay servable: a ttl of ten years
    definitions.write_text(definitions.read_text().replace("ttl=timedelta(days=1)", "ttl=timedelta(3650)"))
    with (repo / "sluice.yaml").open("a") as config:
        config.write(f"alerts:\n  topic: {topic}.alerts\n  consecutive_windows: 1\n")
    yield repo
    predictions = f"{topic}-predictions"
    delete_topics(
        topic, f"{topic}.dlq", f"{topic}.alerts",
        *(f"{predictions}{end}" for end in ("", ".scores", ".dlq", ".labelled")),
        kafka=secured.kafka("admin"),
    )  # fmt: skip


def test_the_whole_path_runs_on_the_secured_stack_as_the_sluice_user(
    secured_repo: Path,
    secured: SecureStack,
    project: str,
    topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, kafka, env = secured_repo, secured.kafka(), secured.client_env()
    env["SLUICE_STATE_DIR"] = str(repo / ".sluice")  # profiles, window scores and alerts of this test only
    applied = sluice(repo, "apply", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    events = transactions(20_000, cards=500, seed=8)
    produce(topic, events, kafka=kafka)

    worker_log, serve_log, monitor_log = (tmp_path / f"{name}.log" for name in ("worker", "serve", "monitor"))
    worker = _start(repo, worker_log, env, "worker", "--loglevel", "info")
    tls, port = secured.tls, free_port()
    server = _start(
        repo, serve_log, {**env, "SLUICE_SERVE_TOKEN": TOKEN}, "serve", "--port", str(port),
        "--certfile", str(tls.certificate), "--keyfile", str(tls.key),
    )  # fmt: skip
    predictions = f"{topic}-predictions"
    rng = np.random.default_rng(0)
    training = tmp_path / "training.parquet"
    pd.DataFrame({name: rng.normal(0, 1, 20_000) for name in FEATURES}).to_parquet(training)
    profile = ("profile", "--model", "drifting", "--version", "1", "--training", str(training))
    profiled = sluice(repo, *profile, env=env)
    assert profiled.returncode == 0, profiled.stderr
    monitor = _start(
        repo, monitor_log, env, "monitor", "--topic", predictions, "--window-seconds", str(WINDOW_S),
        "--lateness-seconds", "0", "--loglevel", "info",
    )  # fmt: skip
    logger = PredictionLogger(config=kafka, topic=predictions, source="secured")
    try:
        wait_until_committed(f"sluice-{project}", topic, workers=[worker], kafka=kafka, timeout_s=180)
        caught_up = stream_times(topic, kafka=kafka)
        cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
        expected = reference(events, repo, caught_up)
        assert_same(online_rows(_redis(secured, "sluice"), repo, cards), expected)

        # Served over HTTPS from the TLS-only Redis, as the sluice user.
        url = f"https://127.0.0.1:{port}"
        _https_up(url, tls.ca, server, serve_log)
        answer = httpx.post(
            f"{url}/get-online-features",
            json={"features": ["card_stats:amount_sum_30s"], "entities": {"card_id": cards[:50]}},
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=str(tls.ca),
        )
        assert answer.status_code == 200, answer.text
        served = answer.json()["results"][1]["values"]
        np.testing.assert_allclose(
            np.array(served, dtype=float), expected["amount_sum_30s"].to_numpy(float)[:50], rtol=1e-9
        )
        # And Feast's own SDK reads the same values through the feature_store.yaml that apply wrote (its
        # password a ${SLUICE_REDIS_PASSWORD} reference; the ACL user and CA in the connection string).
        from feast import FeatureStore

        monkeypatch.setenv("SLUICE_REDIS_PASSWORD", secured.passwords["sluice"])
        feast = FeatureStore(repo_path=str(repo)).get_online_features(
            features=["card_stats:amount_sum_30s"], entity_rows=[{"card_id": card} for card in cards[:50]]
        )
        assert feast.to_dict()["amount_sum_30s"] == pytest.approx(served, rel=1e-9)

        # Drift in f7 from the third window: the monitor alerts on the secured alerts topic.
        predictions_for(logger, "drifting", windows=6, per_window=300, shift_from=2, seed=3)
        assert logger.flush(60)
        fired = _alerts(secured, f"{topic}.alerts")
        assert fired and {alert["model"] for alert in fired} == {"drifting"}, monitor_log.read_text()[-3000:]
        assert any(alert["feature"] == "f7" for alert in fired)
    finally:
        logger.close()
        for process in (worker, server, monitor):
            stop(process)

    # Redis emptied (as admin: the sluice user may not delete), then rebuilt from Parquet by materialize.
    admin = _redis(secured, "admin")
    keys = list(admin.scan_iter(match=f"*{project}", count=1000))
    assert keys and admin.delete(*keys) == len(keys)
    materialized = sluice(repo, "materialize", env=env)
    assert materialized.returncode == 0, materialized.stdout + materialized.stderr
    verified = sluice(repo, "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout
    assert_same(online_rows(_redis(secured, "sluice"), repo, cards), expected)
    for log in (worker_log, serve_log, monitor_log):
        assert "NOPERM" not in log.read_text() and "AuthorizationFailed" not in log.read_text(), log


def test_the_sluice_redis_user_may_touch_only_its_project_and_its_commands(secured: SecureStack) -> None:
    client = _redis(secured, "sluice")
    assert client.hmget(f"anything{secured.project}", ["a"]) == [None]
    with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
        client.hmget("another-project", ["a"])
    for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("DEL", f"x{secured.project}")):
        with pytest.raises(redis.exceptions.NoPermissionError, match="command"):
            client.execute_command(*command)
    with pytest.raises(redis.ConnectionError):  # no plain-text port, and the TLS port wants TLS
        redis.Redis(port=6390, socket_timeout=2, retry=Retry(NoBackoff(), 0)).ping()


SECURED_REDIS = "rediss://{user}:{password}@127.0.0.1:6390/0"
REFUSALS = {
    # what is changed in the sluice user's settings: what the one line must say
    "kafka-password": ({"SLUICE_KAFKA_SASL_PASSWORD": "wrong"}, "refused the SCRAM-SHA-512 credentials of"),
    "kafka-untrusted": ({"SLUICE_KAFKA_SSL_CAFILE": "{other_ca}"}, "the broker's certificate is not trusted"),
    "kafka-acl": (
        {"SLUICE_KAFKA_SASL_USERNAME": "intruder"},
        "Kafka denied user 'intruder' access to a topic",
    ),
    "redis-password": (
        {"SLUICE_REDIS_URL": SECURED_REDIS.format(user="sluice", password="wrong")},
        "refused the password of user 'sluice'",
    ),
    "redis-untrusted": (
        {"SLUICE_REDIS_SSL_CA_CERTS": "{other_ca}"},
        "the server's certificate is not trusted",
    ),
    "redis-acl": (
        {"SLUICE_REDIS_URL": SECURED_REDIS.format(user="intruder", password="{intruder}")},
        "Redis denied user 'intruder'",
    ),
    "redis-other-project": ({"project": "other"}, "grant it the key pattern ~*other"),
}


@pytest.mark.parametrize(("change", "says"), list(REFUSALS.values()), ids=list(REFUSALS))
def test_refused_access_is_one_line_that_says_what_to_fix(
    secured: SecureStack, tmp_path: Path, topic: str, change: dict[str, str], says: str
) -> None:
    from sluice.stack.tls import make_certificates

    other_ca = make_certificates(tmp_path / "other-ca").ca  # a CA that signed nothing the servers show
    values = {"other_ca": str(other_ca), **secured.passwords}
    env = secured.client_env() | {name: value.format(**values) for name, value in change.items()}
    if env.get("SLUICE_KAFKA_SASL_USERNAME") == "intruder":
        env["SLUICE_KAFKA_SASL_PASSWORD"] = secured.passwords["intruder"]
    project = env.pop("project", secured.project)
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    command = "apply" if "KAFKA" in " ".join(change) else "verify"
    if command == "verify":
        assert sluice(repo, "apply", env=secured.client_env()).returncode == 0
    started = time.monotonic()
    refused = sluice(repo, command, env=env, timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert time.monotonic() - started < 30, "refused access must not wait for a client's retries to run out"
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    delete_topics(topic, f"{topic}.dlq", kafka=secured.kafka("admin"))
