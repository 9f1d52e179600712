"""deploy/docker-compose.yml (which cannot run here) stays consistent with the local stack."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _server_properties() -> dict[str, str]:
    lines = (DEPLOY / "local" / "kafka" / "server.properties").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {key: value for key, value in pairs if "@" not in value}


def test_compose_broker_has_the_local_brokers_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    environment = compose["services"]["kafka"]["environment"]
    listener_settings = {
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "inter.broker.listener.name",
    }
    for key, value in _server_properties().items():
        if key in listener_settings:
            continue  # compose adds an INTERNAL listener for containers; checked below
        assert str(environment["KAFKA_" + key.upper().replace(".", "_")]) == value, key
    assert "PLAINTEXT://127.0.0.1:9092" in environment["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_publishes_the_local_stack_ports_on_loopback_only() -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert services["kafka"]["ports"] == ["127.0.0.1:9092:9092"]
    assert services["redis"]["ports"] == ["127.0.0.1:6379:6379"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
