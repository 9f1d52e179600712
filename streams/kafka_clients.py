"""Kafka clients built from one ``KafkaConfig``, so security settings reach every connection."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError

from features.config import KafkaConfig

__all__ = [
    "admin_client",
    "aiokafka_kwargs",
    "committed_metadata",
    "consumer",
    "ensure_topics",
    "producer",
    "ssl_context",
]


def ssl_context(config: KafkaConfig) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols (aiokafka and faust take a context, not files)."""
    if config.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=config.ssl_cafile)
    if config.ssl_certfile:
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    return context


def aiokafka_kwargs(config: KafkaConfig) -> dict[str, Any]:
    """Connection and security keyword arguments for aiokafka clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=config.sasl_mechanism or "PLAIN",
            sasl_plain_username=config.sasl_username,
            sasl_plain_password=config.sasl_password,
        )
    context = ssl_context(config)
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs


def admin_client(config: KafkaConfig) -> KafkaAdminClient:
    return KafkaAdminClient(**config.client_kwargs())


def committed_metadata(
    config: KafkaConfig, group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, str]]:
    """The group's committed offsets of ``(topic, partition)`` pairs, with each commit's metadata; a
    partition the group never committed is left out."""
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not wanted:
        return {}
    admin = admin_client(config)
    try:
        offsets = admin.list_group_offsets({group: wanted}).get(group, {})
    finally:
        admin.close()
    return {
        (tp.topic, tp.partition): (committed.offset, committed.metadata or "")
        for tp, committed in offsets.items()
        if committed.offset is not None and committed.offset >= 0
    }


def producer(config: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and retries without reordering."""
    settings: dict[str, Any] = {"acks": "all", "linger_ms": 5, **overrides}
    return KafkaProducer(**config.client_kwargs(), **settings)


def consumer(config: KafkaConfig, *topics: str, **overrides: Any) -> KafkaConsumer:
    """A consumer that commits only when told to."""
    settings: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest", **overrides}
    return KafkaConsumer(*topics, **config.client_kwargs(), **settings)


def ensure_topics(
    config: KafkaConfig, names: Iterable[str], *, partitions: int = 1, replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet, and wait until every partition has a leader.

    Returns the names it created. A topic another client created meanwhile counts as existing.
    """
    admin = admin_client(config)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        created = []
        for name in missing:
            try:
                admin.create_topics(
                    {name: {"num_partitions": partitions, "replication_factor": replication_factor}},
                    wait_for_metadata=True,
                )
            except TopicAlreadyExistsError:
                continue
            created.append(name)
        return created
    finally:
        admin.close()
