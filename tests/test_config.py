"""Configuration: file, environment overrides, secrets from the environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.config import ConfigError, load_config


def _write(repo: Path, text: str) -> Path:
    (repo / "sluice.yaml").write_text(text)
    return repo


def test_defaults_point_at_the_local_stack(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.state_dir == tmp_path / ".sluice"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "kafka:\n  bootstrap_servers: file:9092\nredis:\n  url: redis://file:6379/0\n")
    config = load_config(
        tmp_path,
        environ={
            "SLUICE_KAFKA_BOOTSTRAP": "env-1:9092,env-2:9092",
            "SLUICE_REDIS_URL": "rediss://env:6380/1",
            "SLUICE_STATE_DIR": "/var/lib/sluice",
        },
    )
    assert config.kafka.bootstrap_servers == "env-1:9092,env-2:9092"
    assert config.redis.url == "rediss://env:6380/1"
    assert config.state_dir == Path("/var/lib/sluice")


def test_security_settings_reach_the_clients_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    _write(
        tmp_path,
        """
kafka:
  bootstrap_servers: broker:9093
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: sluice
  sasl_password: ${KAFKA_PASSWORD}
  ssl_cafile: /etc/ssl/kafka-ca.pem
redis:
  url: rediss://redis.internal:6380/0
  password: ${REDIS_PASSWORD}
  ssl_ca_certs: /etc/ssl/redis-ca.pem
""",
    )
    config = load_config(tmp_path, environ={"KAFKA_PASSWORD": "k-secret", "REDIS_PASSWORD": "r-secret"})
    assert config.kafka.client_kwargs() == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sluice",
        "sasl_plain_password": "k-secret",
        "ssl_cafile": "/etc/ssl/kafka-ca.pem",
    }
    assert config.redis.client_kwargs() == {
        "socket_timeout": 5.0,
        "password": "r-secret",
        "ssl_ca_certs": "/etc/ssl/redis-ca.pem",
    }
    assert "k-secret" not in repr(config) and "r-secret" not in repr(config)


def test_a_missing_secret_variable_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "redis:\n  password: ${REDIS_PASSWORD}\n")
    with pytest.raises(ConfigError, match=r"REDIS_PASSWORD is not set"):
        load_config(tmp_path, environ={})


def test_a_bad_value_names_the_field_and_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "kafka:\n  security_protocol: TLS\n  bootstrap: oops\n")
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path, environ={})
    message = str(raised.value)
    assert str(tmp_path / "sluice.yaml") in message
    assert (
        "kafka.security_protocol: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"
        in message
    )
    assert "kafka.bootstrap: Extra inputs are not permitted" in message


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, found list"):
        load_config(tmp_path, environ={})


def test_security_settings_come_from_the_environment_too(tmp_path: Path) -> None:
    env = {
        "SLUICE_KAFKA_BOOTSTRAP": "127.0.0.1:9094",
        "SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SLUICE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SLUICE_KAFKA_SASL_USERNAME": "sluice",
        "SLUICE_KAFKA_SASL_PASSWORD": "s3cret",
        "SLUICE_KAFKA_SSL_CAFILE": "/etc/ca.crt",
        "SLUICE_REDIS_URL": "rediss://sluice:pw@127.0.0.1:6390/0",
        "SLUICE_REDIS_SSL_CA_CERTS": "/etc/ca.crt",
    }
    config = load_config(tmp_path, environ=env)
    assert config.kafka.client_kwargs() == {
        "bootstrap_servers": "127.0.0.1:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sluice",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.crt",
    }
    assert config.redis.client_kwargs()["ssl_ca_certs"] == "/etc/ca.crt"
    with pytest.raises(ConfigError, match="security_protocol"):
        load_config(tmp_path, environ={"SLUICE_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_tls_settings_are_not_passed_to_a_plain_redis_connection(tmp_path: Path) -> None:
    # One environment for several commands may name a CA while a URL is plain: redis-py refuses TLS
    # arguments on a plain connection, so they are left out rather than failing every command.
    env = {"SLUICE_REDIS_URL": "redis://127.0.0.1:6379/0", "SLUICE_REDIS_SSL_CA_CERTS": "/etc/ca.crt"}
    assert "ssl_ca_certs" not in load_config(tmp_path, environ=env).redis.client_kwargs()
