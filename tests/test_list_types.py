"""Every value type Feast serves beyond the numeric scalars: a list of each primitive type (a 128-dim
float32 embedding among them), bytes and timestamps, both ways between sluice and Feast's SDK.

- Feast's SDK writes random values (``write_to_online_store``); sluice's client and HTTP server read
  what Feast's SDK reads and what Feast's feature server prints.
- sluice's stream processor ingests JSON events of a plain view; Feast's SDK and sluice's client read
  the events' values back, the Parquet rows hold them (to the microsecond), and ``sluice verify``
  finds Redis equal to them.
- Bad list events are dead-lettered, with the field and what was expected.
"""

from __future__ import annotations

import base64
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import redis
from feast import types

from features.config import SluiceConfig, load_config
from features.registry import feast_repo_config, feature_store
from features.repo import load_repo
from offline_store import get_historical_features
from offline_store.dataset import OfflineDataset
from online_store.client import AsyncOnlineClient, OnlineClient
from streams.dead_letters import SourceRecord
from streams.decoding import EventDecoder
from streams.metrics import WorkerMetrics
from tests.streaming import dead_letters, delete_topics, partition_processor, sluice

pytestmark = pytest.mark.stack

# Feature name: (sluice's type name, Feast's type, the message schema's DDL type).
FIELDS: dict[str, tuple[str, Any, str]] = {
    "i32s": ("INT32_LIST", types.Array(types.Int32), "ARRAY<INT>"),
    "i64s": ("INT64_LIST", types.Array(types.Int64), "ARRAY<BIGINT>"),
    "doubles": ("DOUBLE_LIST", types.Array(types.Float64), "ARRAY<DOUBLE>"),
    "embedding": ("FLOAT_LIST", types.Array(types.Float32), "ARRAY<FLOAT>"),
    "tags": ("STRING_LIST", types.Array(types.String), "ARRAY<STRING>"),
    "flags": ("BOOL_LIST", types.Array(types.Bool), "ARRAY<BOOLEAN>"),
    "blobs": ("BYTES_LIST", types.Array(types.Bytes), "ARRAY<BINARY>"),
    "times": ("UNIX_TIMESTAMP_LIST", types.Array(types.UnixTimestamp), "ARRAY<TIMESTAMP>"),
    "photo": ("BYTES", types.Bytes, "BINARY"),
    "seen_at": ("UNIX_TIMESTAMP", types.UnixTimestamp, "TIMESTAMP"),
}
FEATURES = [f"profile:{name}" for name in FIELDS]
EMBEDDING = 128
CARDS = 40
INT32, INT64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)


def same(left: Any, right: Any) -> bool:
    """Equal values of equal types, NaN equal to NaN; lists element by element."""
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


def assert_same(ours: dict[str, list[Any]], theirs: dict[str, list[Any]], names: list[str]) -> None:
    for name in names:
        for row, (mine, value) in enumerate(zip(ours[name], theirs[name], strict=True)):
            assert same(mine, value), f"{name} of row {row}: {mine!r:.200} != {value!r:.200}"


def random_moment(rng: random.Random) -> datetime:
    """A time from the year 1 to 9999, to the microsecond."""
    return datetime(1, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(315_537_897_600_000_000))


def a_list(rng: random.Random, make: Any) -> list[Any]:
    return [make() for _ in range(rng.choice([0, 1, 2, 5, 9]))]


def random_values(rng: random.Random) -> dict[str, Any]:
    """A value of every field, as Python values: extremes, empty lists, NaN and non-ASCII included."""
    return {
        "i32s": a_list(rng, lambda: rng.choice([*INT32, 0, rng.randint(*INT32)])),
        "i64s": a_list(rng, lambda: rng.choice([*INT64, -1, rng.randint(*INT64)])),
        "doubles": a_list(rng, lambda: rng.choice([math.nan, -0.0, 1e300, rng.gauss(0, 1e6)])),
        "embedding": np.float32(np.random.default_rng(rng.randrange(1 << 30)).standard_normal(EMBEDDING)),
        "tags": a_list(rng, lambda: rng.choice(["", "DE", "Zürich", "🚀", "x" * 300])),
        "flags": a_list(rng, lambda: rng.random() < 0.5),
        "blobs": a_list(rng, lambda: rng.randbytes(rng.choice([0, 1, 16, 200]))),
        "times": a_list(rng, lambda: random_moment(rng).replace(microsecond=0)),
        "photo": rng.randbytes(rng.choice([0, 3, 1000])),
        "seen_at": random_moment(rng).replace(microsecond=0),
    }


def test_sluice_reads_every_type_as_feasts_sdk_reads_what_feast_wrote(
    tmp_path: Path, project: str, redis_client: redis.Redis
) -> None:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.feature_server import convert_response_to_dict
    from starlette.testclient import TestClient

    from online_store.server import create_app

    root = tmp_path / "repo"
    root.mkdir()
    (root / "sluice.yaml").write_text(f"project: {project}\n")
    rng = random.Random(11)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [random_values(rng) for _ in range(CARDS)]
    rows[0] = dict.fromkeys(FIELDS)  # every value missing
    rows[1]["times"] = [now, None]  # Feast writes its null time for a missing one, and reads None
    frame = pd.DataFrame(rows)
    frame.insert(0, "card_id", range(CARDS))
    frame.insert(1, "event_timestamp", now)
    frame.to_parquet(root / "profiles.parquet")

    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
    profile = FeatureView(
        name="profile",
        entities=[card],
        ttl=timedelta(days=1),
        schema=[Field(name="card_id", dtype=types.Int64)]
        + [Field(name=name, dtype=dtype) for name, (_, dtype, _) in FIELDS.items()],
        source=FileSource(path=str(root / "profiles.parquet"), timestamp_field="event_timestamp"),
    )
    store = feature_store_of(root)
    store.apply([card, profile])
    store.write_to_online_store("profile", frame)

    entity_rows = [{"card_id": card_id} for card_id in [*range(CARDS), 10_000]]
    theirs = store.get_online_features(features=FEATURES, entity_rows=entity_rows)
    expected = theirs.to_dict()
    # What Feast read is what it was given: the embedding in float32, times to the second.
    assert same(expected["embedding"][5], np.float32(rows[5]["embedding"]).tolist())
    assert expected["times"][1] == [now, None] and expected["photo"][0] is None

    with OnlineClient(repo_path=root) as client:
        ours = client.get_online_features(features=FEATURES, entity_rows=entity_rows)
    assert_same(ours, expected, ["card_id", *FIELDS])

    # The feature server's JSON, value for value as Feast's feature server prints it: lists as arrays,
    # bytes in base64, times in epoch seconds, NaN in a float list as "NaN".
    served = convert_response_to_dict(theirs.proto)
    with TestClient(create_app(AsyncOnlineClient(repo_path=root))) as http:
        response = http.post(
            "/get-online-features",
            json={"features": FEATURES, "entities": {"card_id": [row["card_id"] for row in entity_rows]}},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    mine = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    feast_json = orjson.loads(orjson.dumps(served))
    for name, result in zip(feast_json["metadata"]["feature_names"], feast_json["results"], strict=True):
        values = result["values"]
        if name == "seen_at":
            # The one difference: a missing timestamp Feast's SDK wrote (its null time) is null here,
            # NULL_VALUE, where Feast's server prints the raw sentinel (its SDK reads None).
            assert values[0] == -(2**63) and mine[name]["values"][0] is None
            assert mine[name]["statuses"][0] == "NULL_VALUE"
            values = [None, *values[1:]]
        assert mine[name]["values"] == values, name
        assert mine[name]["event_timestamps"] == result["event_timestamps"], name
    assert mine["times"]["values"][1] == [int(now.timestamp()), -(2**63)]


def feature_store_of(root: Path) -> Any:
    from feast import FeatureStore

    return FeatureStore(config=feast_repo_config(load_config(root), root))


STREAM_DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, KafkaSource, ValueType
from feast.data_format import JsonFormat
from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)

profiles = KafkaSource(
    name="profiles",
    topic="{topic}",
    timestamp_field="ts",
    message_format=JsonFormat(schema_json="card_id BIGINT, {schema}, ts TIMESTAMP"),
    watermark_delay_threshold=timedelta(minutes=1),
    batch_source=FileSource(name="profiles_history", path="offline", timestamp_field="event_timestamp"),
)

profile = FeatureView(
    name="profile",
    source=profiles,
    entities=[card],
    schema=[
        Field(name="card_id", dtype=Int64),
        Field(name="i32s", dtype=Array(Int32)),
        Field(name="i64s", dtype=Array(Int64)),
        Field(name="doubles", dtype=Array(Float64)),
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="tags", dtype=Array(String)),
        Field(name="flags", dtype=Array(Bool)),
        Field(name="blobs", dtype=Array(Bytes)),
        Field(name="times", dtype=Array(UnixTimestamp)),
        Field(name="photo", dtype=Bytes),
        Field(name="seen_at", dtype=UnixTimestamp),
    ],
)
"""


def json_time(rng: random.Random, moment: datetime) -> str | float:
    """A time as a message may carry it: an ISO-8601 string (with an offset, or naive: UTC), or epoch
    seconds (exact to the microsecond only near the epoch, so those stay near it)."""
    choice = rng.random()
    if choice < 0.4:
        return moment.isoformat()
    if choice < 0.7:
        return (
            moment.astimezone(timezone(timedelta(hours=-5))).isoformat()
            if moment.year > 1
            else moment.isoformat()
        )
    if choice < 0.85:
        return moment.replace(tzinfo=None).isoformat()
    near = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(-(10**15), 10**15))
    return (near - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1) / 1e6


def event(rng: random.Random, card_id: int, ts: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JSON event of every field, and the values it stands for (bytes, UTC datetimes)."""
    values = random_values(rng)
    values["embedding"] = [rng.gauss(0, 1) for _ in range(EMBEDDING)]  # float64 in JSON
    values["doubles"] = [value for value in values["doubles"] if not math.isnan(value)] + [3]
    times = [random_moment(rng) for _ in values["times"]]
    message = {
        "card_id": card_id,
        "ts": ts.isoformat(),
        **{name: values[name] for name in ("i32s", "i64s", "doubles", "embedding", "tags", "flags")},
        "blobs": [base64.b64encode(blob).decode() for blob in values["blobs"]],
        "times": [json_time(rng, moment) for moment in times],
        "photo": base64.b64encode(values["photo"]).decode(),
        "seen_at": json_time(rng, random_moment(rng)),
    }
    values["times"] = [parse_time(text) for text in message["times"]]
    values["seen_at"] = parse_time(message["seen_at"])
    for name in ("i32s", "tags", "blobs", "photo"):
        if rng.random() < 0.1:
            message[name] = values[name] = None  # a null value
    return message, values


def parse_time(value: str | float) -> datetime:
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(value * 1e6))


def online(values: dict[str, Any]) -> dict[str, Any]:
    """What Feast's online store holds of an event's values: float32 embeddings, whole seconds."""
    result = dict(values)
    if values["embedding"] is not None:
        result["embedding"] = np.float32(values["embedding"]).tolist()
    result["doubles"] = [float(value) for value in values["doubles"]]
    result["times"] = [seconds(moment) for moment in values["times"]]
    result["seen_at"] = seconds(values["seen_at"])
    return result


def seconds(moment: datetime) -> datetime:
    """Feast's whole seconds of a datetime (``int(moment.timestamp())``), read back as Feast reads them."""
    return datetime.fromtimestamp(int(moment.timestamp()), UTC)


BAD_EVENTS: list[tuple[str, Any, str, str]] = [
    # (field, value, reason, a part of the detail)
    ("i32s", [1, "2"], "type", "field 'i32s' element 1 should be a 32-bit integer (INT32), got str"),
    ("i32s", [2**31], "out_of_range", "field 'i32s' element 0 is int 2147483648, outside the range of INT32"),
    ("i64s", [True], "type", "field 'i64s' element 0 should be an integer (INT64), got bool"),
    ("i64s", 7, "type", "field 'i64s' should be a JSON array of integers (INT64_LIST), got int 7"),
    ("doubles", [1.5, None], "type", "field 'doubles' element 1 is null"),
    ("embedding", [0.5, 1e39], "out_of_range", "field 'embedding' element 1 is float 1e+39, outside"),
    ("tags", ["a", 1], "type", "field 'tags' element 1 should be a string (STRING), got int"),
    ("flags", [0], "type", "field 'flags' element 0 should be true or false (BOOL), got int"),
    ("blobs", ["AAE=", "not base64!"], "type", "field 'blobs' element 1 is str \"not base64!\", not base64"),
    ("blobs", ["AAE"], "type", "not base64 (RFC 4648, padded) for BYTES"),
    ("photo", "@@@@", "type", "field 'photo' is str \"@@@@\", not base64"),
    ("photo", 12, "type", "field 'photo' should be a base64 string (BYTES), got int"),
    ("times", ["2024-02-30T00:00:00"], "type", "field 'times' element 0 '2024-02-30T00:00:00' is not an ISO"),
    (
        "times",
        [1e13],
        "out_of_range",
        "field 'times' element 0 10000000000000.0 is outside the years 1 to 9999",
    ),
    ("seen_at", "soon", "type", "field 'seen_at' 'soon' is not an ISO-8601 timestamp"),
]


def test_a_plain_view_streams_every_type_into_both_stores_and_feasts_sdk_reads_it(
    tmp_path: Path, stack_config: SluiceConfig, project: str, topic: str, redis_client: redis.Redis
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 1\n")
    schema = ", ".join(f"{name} {ddl}" for name, (_, _, ddl) in FIELDS.items())
    (repo / "definitions.py").write_text(STREAM_DEFINITIONS.format(topic=topic, schema=schema))
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    try:
        loaded = load_repo(repo)
        spec = loaded.spec("profile")
        assert spec.features == {name: dtype for name, (dtype, _, _) in FIELDS.items()}

        # Three events per card, one second apart, shuffled; the bad events in between.
        rng = random.Random(5)
        start = datetime(2026, 5, 1, tzinfo=UTC)
        events = [
            event(rng, card_id, start + timedelta(seconds=step))
            for step in range(3)
            for card_id in range(CARDS)
        ]
        rng.shuffle(events)
        good = next(message for message, _ in events)
        bad = [{**good, name: value} for name, value, _, _ in BAD_EVENTS]
        messages = [message for message, _ in events]
        for position, message in zip(rng.sample(range(len(messages)), len(bad)), bad, strict=True):
            messages.insert(position, message)
        records = [
            SourceRecord(topic=topic, partition=0, offset=offset, key=None, value=orjson.dumps(message))
            for offset, message in enumerate(messages)
        ]
        processor = partition_processor(spec, redis_client, stack_config, WorkerMetrics())
        processor.start(first_offset=0, history=[])
        dead = 0
        for first in range(0, len(records), 37):
            dead += processor.write(processor.prepare(records[first : first + 37])).dead_letters
        assert dead == len(bad)
        letters = dead_letters(topic)
    finally:
        delete_topics(topic, f"{topic}.dlq")

    # (c) Each bad event is dead-lettered, unchanged, saying which field and what it should be.
    by_message = dict(letters)
    for (name, value, reason, detail), message in zip(BAD_EVENTS, bad, strict=True):
        headers = by_message[orjson.dumps(message)]
        assert headers["sluice.reason"].decode() == reason, (name, value)
        assert detail in headers["sluice.detail"].decode(), headers["sluice.detail"]

    # Each card's newest event, as Feast's SDK reads it, and as sluice's client does.
    newest = {
        message["card_id"]: values for message, values in sorted(events, key=lambda pair: pair[0]["ts"])
    }
    expected = {name: [online(newest[card_id])[name] for card_id in range(CARDS)] for name in FIELDS}
    entity_rows = [{"card_id": card_id} for card_id in range(CARDS)]
    theirs = feature_store(loaded).get_online_features(features=FEATURES, entity_rows=entity_rows).to_dict()
    assert_same(theirs, expected, list(FIELDS))
    with OnlineClient(repo_path=repo) as client:
        ours = client.get_online_features(features=FEATURES, entity_rows=entity_rows)
    assert_same(ours, expected, list(FIELDS))

    # The Parquet rows hold every event, to the microsecond, the embedding in float32.
    table = OfflineDataset(spec=spec).read()
    assert table.num_rows == len(events)
    assert str(table.schema.field("embedding").type) == "list<item: float>"
    assert str(table.schema.field("times").type) == "list<item: timestamp[us, tz=UTC]>"
    offline = {(row["card_id"], row["event_timestamp"]): row for row in table.to_pylist()}
    for message, values in events:
        row = offline[(message["card_id"], parse_time(message["ts"]))]
        for name in FIELDS:
            want = values[name]
            if name == "embedding":
                want = np.float32(want).tolist()
            elif name == "doubles":
                want = [float(value) for value in want]
            assert same(row[name], want), (name, row[name], want)

    # sluice's training set (DuckDB over the same files) returns the lists as they were.
    labels = pd.DataFrame({"card_id": list(range(CARDS)), "event_timestamp": start + timedelta(seconds=10)})
    training = (
        get_historical_features(entity_df=labels, features=FEATURES, repo=loaded).to_arrow().to_pylist()
    )
    for row in training:
        want = newest[row["card_id"]]
        assert same(row["tags"], want["tags"]) and same(row["blobs"], want["blobs"])
        assert same(row["times"], want["times"]) and same(
            row["embedding"], np.float32(want["embedding"]).tolist()
        )

    # Feast's own training set, from the view's folder (registered as its batch source), too.
    feast_training = (
        feature_store(loaded).get_historical_features(entity_df=labels, features=FEATURES).to_df()
    )
    for row in feast_training.to_dict("records"):
        want = newest[row["card_id"]]
        for name in ("tags", "blobs", "i64s", "flags"):
            assert same(None if row[name] is None else np.asarray(row[name]).tolist(), want[name]), name
        moments = [pd.Timestamp(moment).tz_localize(UTC).to_pydatetime() for moment in row["times"]]
        assert same(moments, want["times"])

    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 missing online, 0 differ, 0 duplicate offline rows" in verified.stdout

    # Redis lost: `sluice materialize` rebuilds it from Parquet, to the same values.
    redis_client.delete(*redis_client.scan_iter(match=f"*{project}", count=1000))
    materialized = sluice(repo, "materialize")
    assert materialized.returncode == 0, materialized.stdout + materialized.stderr
    assert f"{CARDS} entities, {CARDS} written" in materialized.stdout
    again = feature_store(loaded).get_online_features(features=FEATURES, entity_rows=entity_rows).to_dict()
    assert_same(again, expected, list(FIELDS))
    verified = sluice(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_bulk_decoding_of_list_fields_equals_decoding_each_message() -> None:
    """An aggregated view's messages may carry list fields it does not aggregate: the bulk path checks
    them as each message's decoding does, and agrees with it on every message."""
    schema = {"card_id": "INT64", "amount": "FLOAT64", "ts": "UNIX_TIMESTAMP"}
    schema |= {name: dtype for name, (dtype, _, _) in FIELDS.items()}

    def decoder(columns: tuple[str, ...] = ("amount",)) -> EventDecoder:
        return EventDecoder(
            join_keys={"card_id": "INT64"}, timestamp_field="ts", schema=schema, columns=columns
        )

    rng = random.Random(3)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    clean = []
    for index in range(200):
        message, _ = event(rng, index % 7, start + timedelta(seconds=index))
        message["times"] = [parse_time(value).isoformat() for value in message["times"]]  # strings only
        message["seen_at"] = parse_time(message["seen_at"]).isoformat()
        clean.append({**message, "amount": rng.random()})
    batch = [orjson.dumps(message) for message in clean]
    bulk = decoder()._decode_bulk(batch)
    assert bulk is not None, "a clean batch with list fields takes the bulk path"
    each = decoder()._decode_each(batch)
    assert bulk.columns["amount"].tolist() == each.columns["amount"].tolist()
    assert bulk.times.tolist() == each.times.tolist() and not each.rejections
    # Asked for every field (as a view with a udf asks), both paths give the same values.
    every = ("amount", *FIELDS)
    present = [value for value, message in zip(batch, clean, strict=True) if None not in message.values()]
    bulk, each = decoder(every)._decode_bulk(present), decoder(every)._decode_each(present)
    assert bulk is not None and len(present) > 64
    for name in FIELDS:
        assert same(bulk.columns[name].tolist(), each.columns[name].tolist()), name
    assert isinstance(each.columns["photo"][0], bytes) and isinstance(each.columns["seen_at"][0], datetime)

    for name, value, reason, _ in BAD_EVENTS:
        poisoned = [*batch[:100], orjson.dumps({**clean[100], name: value}), *batch[100:]]
        assert decoder()._decode_bulk(poisoned) is None, (name, value)
        decoded = decoder().decode(poisoned)
        assert [(rejection.index, rejection.reason) for rejection in decoded.rejections] == [(100, reason)]
        assert len(decoded.accepted) == len(batch)
