"""The real local stack answers: Kafka through kafka-python and aiokafka, Redis through redis-py."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from features.config import SluiceConfig
from online_store import OnlineStoreUnavailable, connect
from streams import consumer, ensure_topics, producer

pytestmark = pytest.mark.stack


def test_kafka_python_round_trip(stack_config: SluiceConfig, topic: str) -> None:
    assert ensure_topics(stack_config.kafka, [topic, topic], partitions=3) == [topic]
    assert ensure_topics(stack_config.kafka, [topic]) == []
    sender = producer(stack_config.kafka)
    sent = [{"card_id": card, "amount": card * 1.5} for card in range(30)]
    for event in sent:
        sender.send(topic, key=str(event["card_id"]).encode(), value=json.dumps(event).encode())
    sender.flush()
    sender.close()

    reader = consumer(stack_config.kafka, topic, consumer_timeout_ms=10_000)
    received = []
    for record in reader:
        received.append(json.loads(record.value))
        if len(received) == len(sent):
            break
    assert {partition.partition for partition in reader.assignment()} == {0, 1, 2}
    reader.close()

    # Three partitions: order holds per key, not globally.
    assert sorted(received, key=lambda event: event["card_id"]) == sent


def test_aiokafka_round_trip(stack_config: SluiceConfig, topic: str) -> None:
    """faust-streaming talks to Kafka through aiokafka, so aiokafka must work with this broker."""
    ensure_topics(stack_config.kafka, [topic])

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(**stack_config.kafka.client_kwargs(), acks="all")
        await producer.start()
        try:
            for index in range(10):
                await producer.send_and_wait(topic, value=f"event-{index}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **stack_config.kafka.client_kwargs(), auto_offset_reset="earliest", group_id=f"g.{topic}"
        )
        await consumer.start()
        try:
            values: list[bytes] = []
            while len(values) < 10:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=20)
                values.extend(record.value for records in batch.values() for record in records)
            await consumer.commit()
            committed = await consumer.committed(next(iter(consumer.assignment())))
        finally:
            await consumer.stop()
        assert committed == 10
        return values

    assert asyncio.run(round_trip()) == [f"event-{index}".encode() for index in range(10)]


def test_redis_hash_round_trip(redis_client: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}card:42"
    redis_client.hset(key, mapping={"amount_sum": b"12.5", "count": b"3", "bytes": b"\x00\xff"})
    assert redis_client.hgetall(key) == {b"amount_sum": b"12.5", b"count": b"3", b"bytes": b"\x00\xff"}
    assert redis_client.hmget(key, ["count", "missing"]) == [b"3", None]


def test_online_store_connects_and_names_the_address_it_tried(stack_config: SluiceConfig) -> None:
    assert connect(stack_config.redis).ping() is True
    unreachable = stack_config.redis.model_copy(update={"url": "redis://:secret@127.0.0.1:1/3"})
    with pytest.raises(OnlineStoreUnavailable) as raised:
        connect(unreachable)
    assert str(raised.value).startswith("cannot reach Redis at 127.0.0.1:1 (db 3)")
    assert "secret" not in str(raised.value)
