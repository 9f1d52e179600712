"""Whether this process may reach Kafka and Redis with its settings, said in one line when it may not.

A wrong password, a certificate the client does not trust and a denied ACL are settings to fix, not
outages to wait out: kafka-python and aiokafka retry a failed handshake until their bootstrap times out and
then say only that they could not bootstrap. So the commands that talk to a server check first
(``check_kafka``, ``check_redis``), and an authorization error raised later, when a command touches a topic,
group or key it was not granted, is explained by ``explain``. Each message names the setting or grant to
change. A server that does not answer at all is left to the commands, which wait for it as before.

>>> from features.config import KafkaConfig
>>> explain(ValueError("not ours"), kafka=KafkaConfig(), redis=None) is None
True
"""

from __future__ import annotations

import asyncio
import ssl

import redis

from features.config import KafkaConfig, RedisConfig
from online_store.connection import client as redis_client
from online_store.connection import describe_config
from online_store.resets import marker_key

__all__ = ["AccessDenied", "check_kafka", "check_redis", "explain"]

GUIDE = "docs/operations.md, 'Running sluice securely'"


_KAFKA_RESOURCES = {
    "Topic": "a topic",
    "Group": "a consumer group",
    "Cluster": "the cluster",
    "TransactionalId": "a transactional id",
}


class AccessDenied(RuntimeError):
    """The server refused this process's settings: the message says which setting or grant to change."""


def check_kafka(config: KafkaConfig, *, timeout_s: float = 10.0) -> None:
    """Connect to the first bootstrap broker that answers, with TLS and SASL as configured; raise
    ``AccessDenied`` when the handshake or the credentials are refused."""
    for server in config.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        problem = asyncio.run(_kafka_handshake(config, host, int(port), timeout_s=timeout_s))
        if problem is None:
            return
        if problem:
            raise AccessDenied(problem)


async def _kafka_handshake(config: KafkaConfig, host: str, port: int, *, timeout_s: float) -> str | None:
    """None when the handshake succeeded, a message when it was refused, "" when nothing answered."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import AuthenticationFailedError, KafkaConnectionError, SaslAuthenticationFailed

    from streams.kafka_clients import ssl_context

    where = f"Kafka at {host}:{port}"
    try:
        connection = await create_conn(
            host,
            port,
            client_id="sluice-access-check",
            request_timeout_ms=int(timeout_s * 1000),
            ssl_context=ssl_context(config),
            security_protocol=config.security_protocol,
            sasl_mechanism=config.sasl_mechanism or "PLAIN",
            sasl_plain_username=config.sasl_username,
            sasl_plain_password=config.sasl_password,
        )
    except ssl.SSLCertVerificationError as error:
        return (
            f"{where}: the broker's certificate is not trusted ({error.verify_message}): set "
            "kafka.ssl_cafile (SLUICE_KAFKA_SSL_CAFILE) to the CA that signed it"
        )
    except ssl.SSLError as error:
        return (
            f"{where}: the TLS handshake failed ({error.reason or error}): check that "
            f"kafka.security_protocol ({config.security_protocol}) is what this listener speaks"
        )
    except (SaslAuthenticationFailed, AuthenticationFailedError):
        return (
            f"{where} refused the {config.sasl_mechanism} credentials of user {config.sasl_username!r}: "
            "check kafka.sasl_username and kafka.sasl_password (SLUICE_KAFKA_SASL_USERNAME and "
            "SLUICE_KAFKA_SASL_PASSWORD)"
        )
    except (OSError, TimeoutError):
        return ""  # refused or timed out: nothing answered, and the command waits for it as before
    except KafkaConnectionError:
        if config.security_protocol == "PLAINTEXT":
            return (
                f"{where} closed the connection during the handshake: if its listener speaks TLS or SASL, "
                "set kafka.security_protocol (SLUICE_KAFKA_SECURITY_PROTOCOL) and the settings it needs"
            )
        return ""
    connection.close()
    return None


def check_redis(config: RedisConfig, *, project: str) -> None:
    """PING, and one read of a key of the project's (the marker key of ``online_store.resets``), with the
    configured user; raise ``AccessDenied`` when the credentials, the certificate or the ACL are refused."""
    where = f"Redis at {describe_config(config)}"
    try:
        client = redis_client(config)
    except Exception as error:  # a cluster's slot map is loaded here; its errors are not all RedisErrors
        problem = _redis_problem(error, config, project, where)
        if problem:
            raise AccessDenied(problem) from None
        return
    try:
        client.ping()
        client.exists(marker_key(project))
    except Exception as error:
        problem = _redis_problem(error, config, project, where)
        if problem:
            raise AccessDenied(problem) from None
    finally:
        client.close()


def _redis_problem(error: Exception, config: RedisConfig, project: str, where: str) -> str | None:
    if isinstance(error, redis.AuthenticationError):
        return (
            f"{where} refused the password of user {_redis_user(config)!r}: check the user:password in "
            "redis.url (SLUICE_REDIS_URL), or redis.password"
        )
    if isinstance(error, redis.exceptions.NoPermissionError):
        return _redis_denied(error, config, project)
    if "CERTIFICATE_VERIFY_FAILED" in str(error):
        detail = str(error).split("certificate verify failed:", 1)[-1].split("(_ssl")[0].strip()
        return (
            f"{where}: the server's certificate is not trusted ({detail}): set redis.ssl_ca_certs "
            "(SLUICE_REDIS_SSL_CA_CERTS) to the CA that signed it"
        )
    if isinstance(error, redis.ConnectionError) and "SSL" in str(error):
        return f"{where}: the TLS handshake failed ({error}): check the URL's scheme (rediss:// for TLS)"
    plain = not config.url.startswith("rediss://")
    if isinstance(error, redis.ConnectionError) and "reset by peer" in str(error) and plain:
        return f"{where} closed the connection at once: if it speaks only TLS, use a rediss:// URL"
    return None


def _redis_denied(error: BaseException, config: RedisConfig, project: str) -> str:
    return (
        f"Redis denied user {_redis_user(config)!r}: {str(error).rstrip('.')}; grant it the key pattern "
        f"~*{project} and the commands sluice needs ({GUIDE})"
    )


def _redis_user(config: RedisConfig) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(config.url).username or "") or "default"


def explain(
    error: BaseException, *, kafka: KafkaConfig, redis: RedisConfig | None, project: str = ""
) -> str | None:
    """One line for an authorization error that a command raised: a topic, group or key the user was not
    granted. None for any other error."""
    from aiokafka import errors as aiokafka_errors
    from kafka import errors as kafka_errors
    from redis.exceptions import NoPermissionError

    user = kafka.sasl_username or "ANONYMOUS"
    kafka_denials = (
        kafka_errors.AuthorizationError,
        aiokafka_errors.TopicAuthorizationFailedError,
        aiokafka_errors.GroupAuthorizationFailedError,
        aiokafka_errors.ClusterAuthorizationFailedError,
        aiokafka_errors.TransactionalIdAuthorizationFailed,
    )
    if isinstance(error, kafka_denials):
        name = type(error).__name__
        what = next((words for prefix, words in _KAFKA_RESOURCES.items() if name.startswith(prefix)), "it")
        detail = str(error).split(":", 1)[-1].strip()
        named = f" ({detail})" if detail and len(detail) < 100 and "Request" not in detail else ""
        return (
            f"Kafka denied user {user!r} access to {what}{named}: grant it with an ACL "
            f"(kafka-acls.sh --add --allow-principal User:{user} ...; {GUIDE})"
        )
    if isinstance(error, NoPermissionError) and redis is not None:
        return _redis_denied(error, redis, project)
    return None
