"""Feature definitions are checked before anything runs, and every problem says what to change.

Most tests start from one valid definition, the hourly sum of a card's transaction amounts read
from a Kafka topic, change one thing, and assert the exact message a user would read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from features import (
    Aggregation,
    Entity,
    FeatureView,
    Field,
    FileSource,
    Float64,
    Int64,
    JsonFormat,
    KafkaSource,
    StreamFeatureView,
    String,
    ValueType,
)
from features.spec import AggregationSpec, FeatureViewSpec
from features.validation import InvalidDefinitions, validate

pytestmark = pytest.mark.filterwarnings("ignore:Stream feature views are experimental:RuntimeWarning")

TEN_MINUTES = timedelta(minutes=10)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MESSAGE_SCHEMA = "card_id BIGINT, amount DOUBLE, merchant STRING, event_time TIMESTAMP"

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)


def transactions(
    *, timestamp_field: str = "event_time", history_path: str = "data/card_stats"
) -> KafkaSource:
    """Card transactions as JSON on the ``transactions`` topic, archived under ``history_path``."""
    return KafkaSource(
        name="transactions",
        topic="transactions",
        timestamp_field=timestamp_field,
        message_format=JsonFormat(schema_json=MESSAGE_SCHEMA),
        watermark_delay_threshold=timedelta(seconds=30),
        batch_source=FileSource(
            name="transactions_history", path=history_path, timestamp_field="event_timestamp"
        ),
    )


def card_stats(
    *,
    source: KafkaSource | None = None,
    entities: Sequence[Entity] = (card,),
    also_aggregate: Sequence[Aggregation] = (),
    also_declare: Sequence[Field] = (),
) -> StreamFeatureView:
    """The hourly sum of a card's amounts, plus whatever aggregations and fields a test adds."""
    return StreamFeatureView(
        name="card_stats",
        source=source or transactions(),
        entities=list(entities),
        ttl=timedelta(days=2),
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="amount_sum_1h", dtype=Float64),
            *also_declare,
        ],
        aggregations=[Aggregation(column="amount", function="sum", time_window=HOUR), *also_aggregate],
        timestamp_field="event_time",
    )


def problems(*objects: Any) -> list[str]:
    """What ``validate`` reports for these definitions, one message per problem, in order."""
    with pytest.raises(InvalidDefinitions) as raised:
        validate(objects, project="p")
    messages = [str(error) for error in raised.value.errors]
    assert str(raised.value) == "\n".join(messages)
    return messages


def test_the_baseline_definition_is_valid() -> None:
    assert [spec.name for spec in validate([card, card_stats()], project="p")] == ["card_stats"]


# --- aggregations ---------------------------------------------------------------------------------


def test_an_unknown_aggregation_function_lists_the_valid_ones() -> None:
    median = Aggregation(column="amount", function="median", time_window=HOUR)

    assert problems(card, card_stats(also_aggregate=[median])) == [
        "StreamFeatureView 'card_stats': aggregations[1].function: unknown aggregation function 'median'; "
        "valid functions: count, last, max, mean, min, stddev, sum"
    ]


def test_a_window_must_be_a_multiple_of_its_slide() -> None:
    # 60 minutes do not split into 7-minute slides.
    hourly_max_every_7m = Aggregation(
        column="amount", function="max", time_window=HOUR, slide_interval=timedelta(minutes=7)
    )

    assert problems(card, card_stats(also_aggregate=[hourly_max_every_7m])) == [
        "StreamFeatureView 'card_stats': aggregations[1].slide_interval: the window 1h is not a multiple of "
        "the slide 7m; choose a slide that divides the window evenly"
    ]


def test_a_function_rejects_a_column_type_it_cannot_aggregate() -> None:
    merchant_mean = Aggregation(column="merchant", function="mean", time_window=HOUR)

    assert problems(card, card_stats(also_aggregate=[merchant_mean])) == [
        "StreamFeatureView 'card_stats': aggregations[1].function: mean cannot aggregate 'merchant' "
        "of type String; it takes Float32, Float64, Int32, Int64"
    ]


def test_a_sum_over_a_double_column_must_be_declared_float64() -> None:
    daily_sum = Aggregation(column="amount", function="sum", time_window=DAY)
    declared_as_integer = Field(name="amount_sum_1d", dtype=Int64)

    assert problems(card, card_stats(also_aggregate=[daily_sum], also_declare=[declared_as_integer])) == [
        "StreamFeatureView 'card_stats': schema['amount_sum_1d']: is declared Int64, "
        "but sum over Float64 produces Float64; declare dtype=Float64"
    ]


def test_a_count_must_be_declared_int64() -> None:
    hourly_count = Aggregation(column="amount", function="count", time_window=HOUR, name="txn_count_1h")
    declared_as_float = Field(name="txn_count_1h", dtype=Float64)

    assert problems(card, card_stats(also_aggregate=[hourly_count], also_declare=[declared_as_float])) == [
        "StreamFeatureView 'card_stats': schema['txn_count_1h']: is declared Float64, "
        "but count over Float64 produces Int64; declare dtype=Int64"
    ]


def test_an_aggregation_output_missing_from_the_schema_names_the_field_to_add() -> None:
    undeclared_max = Aggregation(column="amount", function="max", time_window=HOUR)

    assert problems(card, card_stats(also_aggregate=[undeclared_max])) == [
        "StreamFeatureView 'card_stats': schema: the aggregations[1] output 'amount_max_1h' is missing; "
        "add Field(name='amount_max_1h', dtype=Float64)"
    ]


def test_a_schema_field_that_no_aggregation_produces() -> None:
    unproduced_min = Field(name="amount_min_1h", dtype=Float64)

    assert problems(card, card_stats(also_declare=[unproduced_min])) == [
        "StreamFeatureView 'card_stats': schema['amount_min_1h']: no aggregation produces this feature; "
        "remove the field or add an Aggregation with name='amount_min_1h'"
    ]


@pytest.mark.parametrize(
    ("aggregation", "declared", "problem"),
    [
        pytest.param(
            Aggregation(column="amount", function="median", time_window=HOUR),
            Field(name="amount_median_1h", dtype=Float64),
            "aggregations[1].function: unknown aggregation function 'median'; "
            "valid functions: count, last, max, mean, min, stddev, sum",
            id="unknown function",
        ),
        pytest.param(
            Aggregation(column="amount", function="sum", time_window=DAY),
            Field(name="amount_sum_1d", dtype=Int64),
            "schema['amount_sum_1d']: is declared Int64, but sum over Float64 produces Float64; "
            "declare dtype=Float64",
            id="wrong dtype",
        ),
    ],
)
def test_a_rejected_aggregation_with_its_output_declared_gets_one_problem(
    aggregation: Aggregation, declared: Field, problem: str
) -> None:
    assert problems(card, card_stats(also_aggregate=[aggregation], also_declare=[declared])) == [
        f"StreamFeatureView 'card_stats': {problem}"
    ]


def test_a_view_whose_only_aggregation_is_rejected_gets_one_problem() -> None:
    only_median = StreamFeatureView(
        name="card_stats",
        source=transactions(),
        entities=[card],
        schema=[Field(name="card_id", dtype=Int64), Field(name="amount_median_1h", dtype=Float64)],
        aggregations=[Aggregation(column="amount", function="median", time_window=HOUR)],
        timestamp_field="event_time",
    )

    assert problems(card, only_median) == [
        "StreamFeatureView 'card_stats': aggregations[0].function: unknown aggregation function 'median'; "
        "valid functions: count, last, max, mean, min, stddev, sum"
    ]


# --- sources and entities -------------------------------------------------------------------------


def test_the_timestamp_field_must_be_in_the_message_schema() -> None:
    source = transactions(timestamp_field="ts")

    assert problems(card, card_stats(source=source)) == [
        "KafkaSource 'transactions': timestamp_field: 'ts' is not in the message schema "
        "(card_id, amount, merchant, event_time); add it to schema_json or name an existing field"
    ]


def test_an_entity_join_key_must_be_in_the_message_schema() -> None:
    # Messages carry a card_id but no account_id.
    account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)

    assert problems(card, account, card_stats(entities=[card, account])) == [
        "Entity 'account': join_keys: join key 'account_id' is not in the message schema of KafkaSource "
        "'transactions' (card_id, amount, merchant, event_time); add it to schema_json"
    ]


def test_a_missing_join_key_declared_in_the_schema_gets_one_problem() -> None:
    account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
    account_column = Field(name="account_id", dtype=Int64)

    assert problems(card, account, card_stats(entities=[card, account], also_declare=[account_column])) == [
        "Entity 'account': join_keys: join key 'account_id' is not in the message schema of KafkaSource "
        "'transactions' (card_id, amount, merchant, event_time); add it to schema_json"
    ]


def test_a_kafka_source_needs_a_batch_source() -> None:
    # Feast itself refuses a stream source without one; the repo loader reports this with file and line.
    without_history = KafkaSource(
        name="transactions",
        topic="transactions",
        timestamp_field="event_time",
        message_format=JsonFormat(schema_json=MESSAGE_SCHEMA),
    )

    with pytest.raises(ValueError, match="A batch_source needs to be specified for stream source"):
        card_stats(source=without_history)


def test_the_batch_source_must_point_at_the_offline_store() -> None:
    source = transactions(history_path="")

    assert problems(card, card_stats(source=source)) == [
        "KafkaSource 'transactions': batch_source: sluice writes the offline store where the batch source "
        "points; set batch_source=FileSource(path=..., timestamp_field=...)"
    ]


# --- the repo as a whole --------------------------------------------------------------------------


def test_two_entities_with_one_name() -> None:
    another_card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)

    assert problems(card, another_card, card_stats()) == [
        "Entity 'card': name: 2 definitions share this name; names must be unique, so rename all but one"
    ]


def test_two_feature_views_with_one_name() -> None:
    source = transactions()

    assert problems(card, source, card_stats(source=source), card_stats(source=source)) == [
        "StreamFeatureView 'card_stats': name: 2 definitions share this name; names must be unique, "
        "so rename all but one"
    ]


def test_every_problem_is_reported_at_once() -> None:
    another_card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
    median = Aggregation(column="amount", function="median", time_window=HOUR)
    hourly_max_every_7m = Aggregation(
        column="amount", function="max", time_window=HOUR, slide_interval=timedelta(minutes=7)
    )
    view = card_stats(source=transactions(timestamp_field="ts"), also_aggregate=[median, hourly_max_every_7m])

    with pytest.raises(InvalidDefinitions) as raised:
        validate([card, another_card, view], project="p")

    assert [(error.kind, error.name, error.field) for error in raised.value.errors] == [
        ("Entity", "card", "name"),
        ("KafkaSource", "transactions", "timestamp_field"),
        ("StreamFeatureView", "card_stats", "aggregations[1].function"),
        ("StreamFeatureView", "card_stats", "aggregations[2].slide_interval"),
    ]


def test_a_view_fed_by_a_file_source_is_not_streamed() -> None:
    history = FeatureView(
        name="card_history",
        source=FileSource(name="card_history_source", path="data/history", timestamp_field="event_time"),
        entities=[card],
        schema=[Field(name="card_id", dtype=Int64), Field(name="amount", dtype=Float64)],
    )

    assert validate([card, history], project="p") == []


# --- compiled specs -------------------------------------------------------------------------------


def test_a_stream_feature_view_compiles_into_its_spec() -> None:
    view = StreamFeatureView(
        name="card_stats",
        source=transactions(),
        entities=[card],
        ttl=timedelta(days=2),
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="txn_count_10m", dtype=Int64),
            Field(name="amount_sum_1h", dtype=Float64),
            Field(name="amount_max_1h", dtype=Float64),
            Field(name="merchant_last_1d", dtype=String),
        ],
        aggregations=[
            Aggregation(column="amount", function="count", time_window=TEN_MINUTES, name="txn_count_10m"),
            Aggregation(column="amount", function="sum", time_window=HOUR),
            Aggregation(column="amount", function="max", time_window=HOUR, slide_interval=TEN_MINUTES),
            Aggregation(column="merchant", function="last", time_window=DAY),
        ],
        timestamp_field="event_time",
        tags={"team": "risk"},
    )

    [spec] = validate([card, view], project="p")

    assert spec == FeatureViewSpec(
        name="card_stats",
        project="p",
        topic="transactions",
        join_keys={"card_id": "INT64"},
        timestamp_field="event_time",
        message_schema={
            "card_id": "INT64",
            "amount": "FLOAT64",
            "merchant": "STRING",
            "event_time": "UNIX_TIMESTAMP",
        },
        features={
            "txn_count_10m": "INT64",
            "amount_sum_1h": "FLOAT64",
            "amount_max_1h": "FLOAT64",
            "merchant_last_1d": "STRING",
        },
        aggregations=(
            AggregationSpec(
                feature="txn_count_10m",
                column="amount",
                function="count",
                window=TEN_MINUTES,
                slide=TEN_MINUTES,
                dtype="INT64",
            ),
            AggregationSpec(
                feature="amount_sum_1h",
                column="amount",
                function="sum",
                window=HOUR,
                slide=HOUR,
                dtype="FLOAT64",
            ),
            AggregationSpec(
                feature="amount_max_1h",
                column="amount",
                function="max",
                window=HOUR,
                slide=TEN_MINUTES,
                dtype="FLOAT64",
            ),
            AggregationSpec(
                feature="merchant_last_1d",
                column="merchant",
                function="last",
                window=DAY,
                slide=DAY,
                dtype="STRING",
            ),
        ),
        watermark_delay=timedelta(seconds=30),
        ttl=timedelta(days=2),
        offline_path="data/card_stats/card_stats",
        tags={"team": "risk"},
    )
    assert spec.dlq_topic == "transactions.dlq"
    assert spec.is_aggregated
    assert [aggregation.is_tumbling for aggregation in spec.aggregations] == [True, True, False, True]


def test_a_plain_feature_view_serves_message_fields_as_they_are() -> None:
    last_transaction = FeatureView(
        name="card_last_transaction",
        source=transactions(),
        entities=[card],
        ttl=DAY,
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="amount", dtype=Float64),
            Field(name="merchant", dtype=String),
        ],
    )

    [spec] = validate([card, last_transaction], project="p")

    assert not spec.is_aggregated
    assert spec.aggregations == ()
    assert spec.features == {"amount": "FLOAT64", "merchant": "STRING"}
    assert spec.join_keys == {"card_id": "INT64"}
    assert (spec.topic, spec.dlq_topic, spec.ttl) == ("transactions", "transactions.dlq", DAY)


def test_a_plain_feature_view_field_must_be_in_the_message() -> None:
    last_transaction = FeatureView(
        name="card_last_transaction",
        source=transactions(),
        entities=[card],
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="amount", dtype=Float64),
            Field(name="country", dtype=String),
        ],
    )

    assert problems(card, last_transaction) == [
        "FeatureView 'card_last_transaction': schema['country']: is not in the message schema of KafkaSource "
        "'transactions' (card_id, amount, merchant, event_time); add it to schema_json or remove the field"
    ]


def test_a_plain_feature_view_field_must_match_the_message_type() -> None:
    last_transaction = FeatureView(
        name="card_last_transaction",
        source=transactions(),
        entities=[card],
        schema=[Field(name="card_id", dtype=Int64), Field(name="amount", dtype=Int64)],
    )

    assert problems(card, last_transaction) == [
        "FeatureView 'card_last_transaction': schema['amount']: is declared Int64 "
        "but the message field is Float64; make them agree"
    ]
