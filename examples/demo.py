"""`make demo`: the main job, end to end, against the running stack.

Today this is the stack smoke run: produce card transactions to Kafka and read them back, then
write the latest amount per card to Redis and read it back. Later issues grow it into the full
story: features, online reads, drift, alerts and retraining.
"""

from __future__ import annotations

import json
import random
import time
import uuid

from features import load_config
from online_store import connect
from streams import admin_client, consumer, ensure_topics, producer

EVENTS = 1_000
CARDS = 50


def main() -> None:
    config = load_config()
    run = uuid.uuid4().hex[:8]
    topic = f"demo.transactions.{run}"
    rng = random.Random(7)

    ensure_topics(config.kafka, [topic], partitions=3)
    started = time.perf_counter()
    sender = producer(config.kafka)
    for index in range(EVENTS):
        event = {"card_id": rng.randrange(CARDS), "amount": round(rng.lognormvariate(3, 1), 2), "seq": index}
        sender.send(topic, key=str(event["card_id"]).encode(), value=json.dumps(event).encode())
    sender.flush()
    sender.close()
    produced_s = time.perf_counter() - started
    print(f"produced {EVENTS} transactions for {CARDS} cards to {topic} (3 partitions) in {produced_s:.2f} s")

    reader = consumer(config.kafka, topic, group_id=f"demo-{run}", consumer_timeout_ms=10_000)
    latest: dict[int, dict[str, float]] = {}
    received = 0
    for record in reader:
        event = json.loads(record.value)
        received += 1
        if event["seq"] > latest.get(event["card_id"], {"seq": -1})["seq"]:
            latest[event["card_id"]] = event
        if received == EVENTS:
            break
    reader.commit()
    reader.close()
    print(f"consumed {received} of {EVENTS} back from Kafka and committed the group's offsets")

    redis = connect(config.redis)
    pipeline = redis.pipeline(transaction=False)
    for card_id, event in latest.items():
        pipeline.hset(f"demo:{run}:card:{card_id}", mapping={"last_amount": event["amount"]})
    pipeline.execute()
    card = next(iter(latest))
    stored = redis.hget(f"demo:{run}:card:{card}", "last_amount")
    keys = list(redis.scan_iter(match=f"demo:{run}:*"))
    print(f"wrote the last amount of {len(keys)} cards to Redis; card {card} reads back {stored!r}")
    redis.delete(*keys)
    redis.close()
    admin = admin_client(config.kafka)
    admin.delete_topics([topic])
    admin.close()
    print(f"cleaned up: deleted {topic} and the demo's Redis keys")
    if received != EVENTS or len(keys) != len(latest):
        raise SystemExit("the demo lost events: see the counts above")
    print("demo ok: Kafka and Redis both round-trip")


if __name__ == "__main__":
    main()
