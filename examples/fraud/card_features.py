"""Card-transaction features for fraud scoring: how much and how often a card spends.

Producers send one JSON message per card transaction to the ``transactions`` topic, keyed by
``card_id``. The stream worker keeps, per card, the count and the sum, mean and max of the
amount over 10 minutes, 1 hour and 1 day, in Redis for scoring and in Parquet for training.
"""

from datetime import timedelta

from features import (
    Aggregation,
    Entity,
    FeatureService,
    Field,
    FileSource,
    Float64,
    Int64,
    JsonFormat,
    KafkaSource,
    StreamFeatureView,
    ValueType,
)

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64, description="A payment card.")

transactions = KafkaSource(
    name="transactions",
    topic="transactions",
    timestamp_field="event_time",
    message_format=JsonFormat(
        schema_json="card_id BIGINT, amount DOUBLE, merchant STRING, country STRING, event_time TIMESTAMP"
    ),
    watermark_delay_threshold=timedelta(seconds=30),
    batch_source=FileSource(
        name="transactions_history",
        path="data/card_transaction_stats",
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    ),
)

WINDOWS = {"10m": timedelta(minutes=10), "1h": timedelta(hours=1), "1d": timedelta(days=1)}

card_transaction_stats = StreamFeatureView(
    name="card_transaction_stats",
    source=transactions,
    entities=[card],
    ttl=timedelta(days=2),
    schema=[Field(name="card_id", dtype=Int64)]
    + [Field(name=f"txn_count_{label}", dtype=Int64) for label in WINDOWS]
    + [
        Field(name=f"amount_{fn}_{label}", dtype=Float64)
        for fn in ("sum", "mean", "max")
        for label in WINDOWS
    ],
    aggregations=[
        # The 10-minute count slides every 5 seconds, so that it moves smoothly as payments come and
        # go (a tumbling window would reset to zero every 10 minutes); the others tumble.
        Aggregation(
            column="amount",
            function="count",
            time_window=window,
            slide_interval=timedelta(seconds=5) if label == "10m" else window,
            name=f"txn_count_{label}",
        )
        for label, window in WINDOWS.items()
    ]
    + [
        Aggregation(column="amount", function=fn, time_window=window)
        for fn in ("sum", "mean", "max")
        for label, window in WINDOWS.items()
    ],
    timestamp_field="event_time",
    online=True,
    tags={"team": "risk"},
)

fraud_model_v1 = FeatureService(name="fraud_model_v1", features=[card_transaction_stats])

__all__ = ["card", "card_transaction_stats", "fraud_model_v1", "transactions"]
