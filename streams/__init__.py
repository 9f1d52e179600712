"""Kafka I/O: clients, topics, and (with the stream worker) decoding, windows and the dead-letter queue."""

from streams.kafka_clients import admin_client, consumer, ensure_topics, producer

__all__ = ["admin_client", "consumer", "ensure_topics", "producer"]
