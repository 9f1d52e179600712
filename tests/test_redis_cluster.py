"""The online store on the local stack's Redis Cluster (three primaries, three replicas on loopback).

Feast's SDK, configured with ``redis_type: redis_cluster``, reads what sluice writes, sluice reads what
``feast materialize`` writes, the stream worker's output passes ``sluice verify``, and a primary killed
mid-stream loses nothing: its replica takes over and the worker's rewrites land there.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from features.config import RedisConfig, SluiceConfig
from features.repo import load_repo
from features.spec import FeatureViewSpec
from online_store import AsyncOnlineClient, OnlineClient
from online_store.connection import connect
from online_store.layout import entity_key
from online_store.writer import FeatureRows, OnlineWriter
from sluice import stack
from sluice.stack.cluster import ClusterNode, cluster_config, cluster_nodes
from sluice.stack.process import ManagedProcess
from tests.served import ServedRepo, entity_rows, feast_materialized_repo, now_utc
from tests.streaming import (
    delete_topics,
    make_repo,
    produce,
    sluice,
    start_worker,
    stop,
    stream_times,
    wait_until_committed,
)
from tests.test_online_client import same
from tests.test_stream_worker import assert_same, reference, transactions

pytestmark = pytest.mark.stack

SECOND = 1_000_000


@pytest.fixture
def cluster(stack_config: SluiceConfig, monkeypatch: pytest.MonkeyPatch) -> RedisConfig:
    """The local cluster's connection; the repos below name it in their sluice.yaml."""
    for name in ("SLUICE_REDIS_URL", "SLUICE_REDIS_TYPE"):
        monkeypatch.delenv(name, raising=False)
    config = cluster_config(stack_config)
    if config is None:
        pytest.fail("the local Redis Cluster is off (SLUICE_REDIS_CLUSTER_URL=none)", pytrace=False)
    return config


@pytest.fixture
def cluster_client(cluster: RedisConfig, project: str) -> Iterator[RedisCluster]:
    """A cluster client; the test project's keys are deleted from every primary afterwards."""
    client = connect(cluster)
    assert isinstance(client, RedisCluster)
    yield client
    for key in list(client.scan_iter(match=f"*{project}", count=1000)):
        client.delete(key)
    client.close()


def redis_section(cluster: RedisConfig) -> str:
    """The cluster in sluice.yaml: its first node, and the other five to start from when that one is down."""
    host, port = cluster.startup_nodes()[0]
    others = "".join(f"\n    - {host}:{port + index}" for index in range(1, 6))
    return f"redis:\n  redis_type: redis_cluster\n  url: {cluster.url}\n  cluster_nodes:{others}\n"


@pytest.fixture
def served(tmp_path: Path, project: str, cluster: RedisConfig, cluster_client: RedisCluster) -> ServedRepo:
    """Feast's own repo, materialized by Feast into the cluster."""
    return feast_materialized_repo(
        tmp_path / "repo", project=project, now=now_utc(), config=redis_section(cluster)
    )


def primaries_holding(client: RedisCluster, keys: list[bytes]) -> set[str]:
    return {client.get_node_from_key(key).name for key in keys}


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_sluice_reads_what_feast_materialize_wrote_to_the_cluster(
    served: ServedRepo, cluster_client: RedisCluster, stack_config: SluiceConfig, flavour: str
) -> None:
    rows = entity_rows()
    config = served.store.config.online_store
    assert config.redis_type == "redis_cluster"
    assert config.connection_string == ",".join(f"127.0.0.1:{port}" for port in range(7000, 7006))
    keys = [
        entity_key({"card_id": row["card_id"]}, {"card_id": "INT64"}, served.project) for row in rows[:-1]
    ]
    # Feast spread the cards over all three primaries, and wrote nothing to the single Redis.
    assert len(primaries_holding(cluster_client, keys)) == 3
    assert all(cluster_client.exists(key) for key in keys)
    single = redis.Redis.from_url(stack_config.redis.url)
    assert single.exists(*keys) == 0
    single.close()

    expected = served.store.get_online_features(features=served.all_features, entity_rows=rows).to_dict(
        include_event_timestamps=True
    )
    if flavour == "sync":
        with OnlineClient(repo_path=served.path) as client:
            ours = client.get_online_features(
                features=served.all_features, entity_rows=rows, include_event_timestamps=True
            )
    else:
        import asyncio

        async def read() -> dict[str, list[object]]:
            async with AsyncOnlineClient(repo_path=served.path) as client:
                return await client.get_online_features(
                    features=served.all_features, entity_rows=rows, include_event_timestamps=True
                )

        ours = asyncio.run(read())
    same(ours, expected)
    assert ours["amount_avg"][0] is None and ours["amount_avg"][-1] is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cards=st.lists(st.integers(0, 40), min_size=1, max_size=100))
def test_any_entity_list_reads_in_its_own_order_like_feast(served: ServedRepo, cards: list[int]) -> None:
    # Repeats and unknown cards (30 and up) included: replies come back from three nodes, in request order.
    rows = [{"card_id": card, "merchant_id": f"m-{card % 4}"} for card in cards]
    expected = served.store.get_online_features(features=served.all_features, entity_rows=rows).to_dict()
    with OnlineClient(repo_path=served.path) as client:
        same(client.get_online_features(features=served.all_features, entity_rows=rows), expected)


CARD_PROFILE = {"amount_avg": "FLOAT64", "txn_count": "INT64", "country": "STRING"}

# (card, seconds before now, amount): many cards, so that writes go to every primary, and repeated
# event times, so that ties happen.
WRITES = st.lists(
    st.tuples(st.integers(0, 5000), st.sampled_from([600, 300, 60, 1]), st.floats(-1e6, 1e6)),
    min_size=1,
    max_size=300,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=WRITES, batch=st.integers(1, 300))
def test_feast_reads_the_newest_row_sluice_wrote_to_the_cluster(
    served: ServedRepo, cluster_client: RedisCluster, writes: list[tuple[int, int, float]], batch: int
) -> None:
    spec = FeatureViewSpec(
        name="card_profile",
        project=served.project,
        topic="unused",
        join_keys={"card_id": "INT64"},
        timestamp_field="event_timestamp",
        message_schema={},
        features=CARD_PROFILE,
    )
    cards = sorted({card + 100 for card, _, _ in writes})  # above Feast's cards
    for card in cards:
        cluster_client.delete(entity_key({"card_id": card}, spec.join_keys, spec.project))
    now_us = time.time_ns() // 1000
    writer = OnlineWriter(client=cluster_client, spec=spec)
    applied = 0
    # Brute force: per card, the newest event time wins; at an equal one, the later write.
    newest: dict[int, tuple[int, int, float]] = {}
    for position, (card, seconds, amount) in enumerate(writes):
        event = now_us - seconds * SECOND
        if card + 100 not in newest or event >= newest[card + 100][0]:
            newest[card + 100] = (event, position, amount)
    for start in range(0, len(writes), batch):
        chunk = writes[start : start + batch]
        applied += writer.write(
            FeatureRows(
                keys=[card + 100 for card, _, _ in chunk],
                event_times_us=np.array(
                    [now_us - seconds * SECOND for _, seconds, _ in chunk], dtype=np.int64
                ),
                created_times_us=np.array([now_us + start + i for i in range(len(chunk))], dtype=np.int64),
                features={
                    "amount_avg": [amount for _, _, amount in chunk],
                    "txn_count": [card for card, _, _ in chunk],
                    "country": [f"c{seconds}" for _, seconds, _ in chunk],
                },
            )
        )
    assert applied >= len(cards)
    features = [f"card_profile:{name}" for name in CARD_PROFILE]
    rows = [{"card_id": card} for card in cards]
    expected = {
        "card_id": cards,
        "amount_avg": [newest[card][2] for card in cards],
        "txn_count": [card - 100 for card in cards],
        "country": [f"c{(now_us - newest[card][0]) // SECOND}" for card in cards],
    }
    assert served.store.get_online_features(features=features, entity_rows=rows).to_dict() == expected
    with OnlineClient(repo_path=served.path) as client:
        assert client.get_online_features(features=features, entity_rows=rows) == expected


def cluster_repo(root: Path, *, project: str, topic: str, cluster: RedisConfig) -> Path:
    repo = make_repo(root, project=project, topic=topic)
    with (repo / "sluice.yaml").open("a") as file:
        file.write(redis_section(cluster))
    applied = sluice(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    return repo


@pytest.fixture
def streamed_repo(
    tmp_path: Path, project: str, topic: str, cluster: RedisConfig, cluster_client: RedisCluster
) -> Iterator[Path]:
    yield cluster_repo(tmp_path / "repo", project=project, topic=topic, cluster=cluster)
    delete_topics(topic, f"{topic}.dlq")


def online_on_cluster(client: RedisCluster, repo: Path, cards: list[int]) -> object:
    from tests.test_stream_worker import online_rows

    return online_rows(client, repo, cards)  # type: ignore[arg-type]


def test_the_worker_streams_into_the_cluster_and_verify_is_clean(
    streamed_repo: Path, topic: str, project: str, cluster_client: RedisCluster, tmp_path: Path
) -> None:
    events = transactions(4000, cards=300, seed=3)
    produce(topic, events)
    worker = start_worker(streamed_repo, tmp_path / "worker.log")
    try:
        wait_until_committed(f"sluice-{project}", topic, workers=[worker])
    finally:
        stop(worker)
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    spec = load_repo(streamed_repo).spec("card_stats")
    keys = [entity_key({"card_id": card}, spec.join_keys, spec.project) for card in cards]
    assert len(primaries_holding(cluster_client, keys)) == 3
    assert_same(
        online_on_cluster(cluster_client, streamed_repo, cards),
        reference(events, streamed_repo, stream_times(topic)),
    )  # type: ignore[arg-type]
    verified = sluice(streamed_repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(cards)} entities, {len(cards)} match online, 0 missing online, 0 differ" in verified.stdout


def _role(node: ClusterNode) -> str | None:
    client = redis.Redis(host=node.host, port=node.port, socket_timeout=1)
    try:
        return str(client.execute_command("ROLE")[0].decode())
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _wait(condition: object, what: str, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def test_a_primary_killed_mid_stream_loses_nothing(
    streamed_repo: Path,
    topic: str,
    project: str,
    cluster_client: RedisCluster,
    stack_config: SluiceConfig,
    tmp_path: Path,
) -> None:
    events = transactions(12_000, cards=400, seed=11)
    spec = load_repo(streamed_repo).spec("card_stats")
    # The victim: the primary that holds card 0 (every primary holds some of the 400 cards).
    victim_name = cluster_client.get_node_from_key(
        entity_key({"card_id": 0}, spec.join_keys, spec.project)
    ).name
    nodes = {node.address: node for node in cluster_nodes(stack_config)}
    victim = nodes[victim_name]
    process = ManagedProcess(
        name=victim.name,
        pid_file=stack_config.state_dir / "run" / f"{victim.name}.pid",
        log_file=stack_config.state_dir / "logs" / f"{victim.name}.log",
        markers=victim.markers,
    )
    pid = process.running_pid()
    if pid is None:
        pytest.fail(
            f"{victim.name} was not started by `sluice stack up`, so the drill cannot kill it", pytrace=False
        )
    replica = next(
        node
        for node in nodes.values()
        if node is not victim and (victim.info() or {}) and _replica_of(node, victim)
    )
    produce(topic, events[:4000])
    worker = start_worker(streamed_repo, tmp_path / "worker.log")
    try:
        # Mid-stream: the worker has committed part of the topic, and more keeps coming.
        _wait(lambda: _committed(project, topic) > 1000, "a first commit", 60)
        rng = random.Random(5)
        for start in range(4000, len(events), 1000):
            produce(topic, events[start : start + 1000])
            if start == 6000:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
            time.sleep(rng.uniform(0.05, 0.3))
        _wait(lambda: _role(replica) == "master", f"{replica.name} taking over", 30)
        took_over = time.monotonic() - killed_at
        wait_until_committed(f"sluice-{project}", topic, workers=[worker], timeout_s=120)
        caught_up = time.monotonic() - killed_at
    finally:
        stop(worker)
        # The killed node comes back as its old replica's replica; the cluster is whole again.
        stack.up(stack_config)
    print(f"failover: {replica.name} took over {took_over:.1f} s after the kill; caught up {caught_up:.1f} s")
    assert _role(victim) == "slave"
    # The kill hit the worker mid-write: it resent what the dead primary had not acknowledged.
    assert "Redis Cluster: " in (tmp_path / "worker.log").read_text()
    cards = sorted({int(event["card_id"]) for event in events})  # type: ignore[call-overload]
    fresh = connect(RedisConfig(redis_type="redis_cluster", url=f"redis://{replica.address}/0"))
    assert isinstance(fresh, RedisCluster)
    try:
        assert_same(
            online_on_cluster(fresh, streamed_repo, cards),
            reference(events, streamed_repo, stream_times(topic)),
        )  # type: ignore[arg-type]
    finally:
        fresh.close()
    verified = sluice(streamed_repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(cards)} entities, {len(cards)} match online, 0 missing online, 0 differ" in verified.stdout


def _replica_of(node: ClusterNode, primary: ClusterNode) -> bool:
    client = redis.Redis(host=node.host, port=node.port, socket_timeout=1)
    try:
        role = client.execute_command("ROLE")
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    return role[0] == b"slave" and int(role[2]) == primary.port


def _committed(project: str, topic: str) -> int:
    from tests.streaming import committed

    return sum(committed(f"sluice-{project}", topic).values())


def _node_id(client: RedisCluster, name: str) -> str:
    return str(client.get_node(node_name=name).redis_connection.execute_command("CLUSTER MYID").decode())  # type: ignore[union-attr]


def _owners(client: RedisCluster, slot: int) -> set[int]:
    """The port of the slot's primary, as each node of the cluster sees it."""
    seen = set()
    for node in client.get_nodes():
        for start, end, primary, *_ in node.redis_connection.execute_command("CLUSTER SLOTS"):  # type: ignore[union-attr]
            if start <= slot <= end:
                seen.add(int(primary[1]))
    return seen


def _agreed_owner(client: RedisCluster, slot: int) -> str:
    """Wait until every node names the same primary for the slot (a previous move may still be
    gossiping), then reload the client's map; returns that primary's name."""
    _wait(lambda: len(_owners(client, slot)) == 1, f"the nodes agreeing on slot {slot}", 15)
    client.nodes_manager.initialize()
    return str(client.nodes_manager.slots_cache[slot][0].name)


def _keys_in_slot(node: redis.Redis, slot: int) -> list[bytes]:
    """``CLUSTER GETKEYSINSLOT`` as bytes: redis-py decodes its reply to text, which mangles Feast's
    binary keys."""
    pool = node.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        return list(connection.read_response(disable_decoding=True))
    finally:
        pool.release(connection)


def _move_slot(client: RedisCluster, slot: int, source: str, target: str, *, finish: bool = True) -> None:
    """Migrate a slot the way ``redis-cli --cluster reshard`` does: mark it, move its keys, then (with
    ``finish``) hand it to the target on every primary."""
    source_node, target_node = client.get_node(node_name=source), client.get_node(node_name=target)
    source_redis, target_redis = source_node.redis_connection, target_node.redis_connection  # type: ignore[union-attr]
    source_id, target_id = _node_id(client, source), _node_id(client, target)
    target_redis.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    source_redis.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    while keys := _keys_in_slot(source_redis, slot):
        for key in keys:
            source_redis.execute_command("MIGRATE", target_node.host, target_node.port, key, 0, 5000)  # type: ignore[union-attr]
    if finish:
        for primary in client.get_primaries():
            primary.redis_connection.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


def test_reads_follow_ask_and_moved_and_writes_follow_a_moved_slot(
    served: ServedRepo, cluster_client: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    from redis.crc import key_slot

    card = 5
    key = entity_key({"card_id": card}, {"card_id": "INT64"}, served.project)
    slot = key_slot(key)
    source = _agreed_owner(cluster_client, slot)
    target = next(node.name for node in cluster_client.get_primaries() if node.name != source)
    features = [f"card_profile:{name}" for name in ("amount_avg", "txn_count", "country")]
    rows = [{"card_id": card}, {"card_id": card + 1}, {"card_id": card + 2}]
    expected = served.store.get_online_features(features=features, entity_rows=rows).to_dict()
    spec = FeatureViewSpec(
        name="card_profile",
        project=served.project,
        topic="unused",
        join_keys={"card_id": "INT64"},
        timestamp_field="event_timestamp",
        message_schema={},
        features=CARD_PROFILE,
    )
    # Both clients load their slot map now, before the slot moves.
    stale_writer = connect(RedisConfig(redis_type="redis_cluster", url="redis://127.0.0.1:7000/0"))
    with OnlineClient(repo_path=served.path) as reader:
        try:
            _move_slot(cluster_client, slot, source, target, finish=False)
            # Mid-migration: the source answers ASK for the key it no longer has.
            source_redis = cluster_client.get_node(node_name=source).redis_connection  # type: ignore[union-attr]
            with pytest.raises(redis.exceptions.AskError):
                source_redis.execute_command("HMGET", key, "x")
            assert reader.get_online_features(features=features, entity_rows=rows) == expected
            for primary in cluster_client.get_primaries():
                primary.redis_connection.execute_command(  # type: ignore[union-attr]
                    "CLUSTER SETSLOT", slot, "NODE", _node_id(cluster_client, target)
                )
            # Done: the source answers MOVED; the reader reloads its map.
            with pytest.raises(redis.exceptions.MovedError):
                source_redis.execute_command("HMGET", key, "x")
            caplog.clear()
            assert reader.get_online_features(features=features, entity_rows=rows) == expected
            assert "MovedError" in caplog.text
            # The stale writer's script meets a key its node no longer serves, and is resent.
            now_us = time.time_ns() // 1000
            applied = OnlineWriter(client=stale_writer, spec=spec).write(
                FeatureRows(
                    keys=[card],
                    event_times_us=np.array([now_us], dtype=np.int64),
                    created_times_us=np.array([now_us], dtype=np.int64),
                    features={"amount_avg": [12.5], "txn_count": [3], "country": ["IS"]},
                )
            )
            assert applied == 1
            assert "non local key" in caplog.text
            newer = reader.get_online_features(features=features, entity_rows=rows[:1])
            assert newer == {"card_id": [card], "amount_avg": [12.5], "txn_count": [3], "country": ["IS"]}
            assert (
                served.store.get_online_features(features=features, entity_rows=rows[:1]).to_dict() == newer
            )
        finally:
            stale_writer.close()
            cluster_client.nodes_manager.initialize()
            if cluster_client.get_node_from_key(key).name != source:
                _agreed_owner(cluster_client, slot)
                _move_slot(cluster_client, slot, target, source)
                _agreed_owner(cluster_client, slot)
            else:  # interrupted mid-migration: settle the slot where its keys are
                for primary in cluster_client.get_primaries():
                    primary.redis_connection.execute_command("CLUSTER SETSLOT", slot, "STABLE")  # type: ignore[union-attr]


def _free_ports(count: int) -> int:
    """A port p such that p .. p + count - 1 are free."""
    import socket

    for base in range(17100, 30000, 97):
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free consecutive ports")


def test_stack_up_forms_a_fresh_cluster_and_down_stops_it(tmp_path: Path, stack_config: SluiceConfig) -> None:
    base = _free_ports(6)
    env = {
        "SLUICE_STATE_DIR": str(tmp_path / "state"),
        "SLUICE_KAFKA_BOOTSTRAP": stack_config.kafka.bootstrap_servers,
        "SLUICE_REDIS_URL": stack_config.redis.url,
        "SLUICE_REDIS_CLUSTER_URL": f"redis://127.0.0.1:{base}/0",
    }
    try:
        started = sluice(tmp_path, "stack", "up", env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.count("running (pid") == 6  # the six nodes; Kafka and Redis were up
        roles = [redis.Redis(port=port).execute_command("ROLE")[0] for port in range(base, base + 6)]
        assert sorted(roles) == [b"master"] * 3 + [b"slave"] * 3
        info = redis.Redis(port=base).execute_command("CLUSTER INFO")
        assert (info["cluster_state"], info["cluster_known_nodes"]) == ("ok", "6")
        again = sluice(tmp_path, "stack", "up", env=env)
        assert again.stdout == started.stdout, "a second up starts nothing"
    finally:
        stopped = sluice(tmp_path, "stack", "down", env=env)
    assert stopped.stdout.strip() == "stopped: " + ", ".join(
        f"redis-{port}" for port in range(base, base + 6)
    )
    after = sluice(tmp_path, "stack", "status", env=env)
    assert after.returncode == 1
    assert after.stdout.count(" down") == 6
