"""Restart: from a worker's start to the first new row readable online, with a long retained history.

The ingest benchmark's view (count, sum and mean over 10 min tumbling and 1 h sliding windows) over
one partition holding ``--records`` retained events. One worker drains the partition and stops
cleanly (SIGTERM), then it is restarted three ways, each under the same ``--instance-id`` (static
membership), and one new event is produced at once:

- ``snapshots``: the default, a snapshot at the clean stop's commit; the restart replays nothing;
- ``snapshots_after_sigkill``: killed after a further backlog, so it replays what followed the last
  snapshot (taken every ``--snapshot-interval`` seconds);
- ``checkpoints``: ``--snapshot-interval 0``, the restart replays from the event-time checkpoint in the
  commit's metadata: the view's horizon (1 h window + 10 min slide), ``--step-us`` apart in event time;
- ``full_replay``: ``--snapshot-interval 0`` and the commit's metadata cleared (as an offset moved by hand
  leaves it), so the restart replays the whole retained partition, as every restart did before snapshots.

For each it reports the seconds from the process's start to the new row in Redis, and from the
partition's assignment (the worker's log) to it, and the records replayed. The competitor is sluice
itself with a full replay: Feast has no stream state to restore. 10M records (``--records 10000000``)
take about 10 minutes to produce and drain here: run it by hand, not in CI.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingest import BOOTSTRAP, REDIS_URL, committed_total, definitions, events, produce  # noqa: E402

from features.repo import load_repo  # noqa: E402
from online_store.layout import entity_key, timestamp_field  # noqa: E402

_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*assigned \[\(", re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--sigkill-backlog", type=int, default=200_000)
    parser.add_argument(
        "--step-us", type=int, default=1_000, help="event time between records (1,000: 1,000 events/s)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sluice-restart-"))
    topic = f"bench.restart.{uuid.uuid4().hex[:8]}"
    project = f"bench_restart_{uuid.uuid4().hex[:8]}"
    repo = work / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics: {{partitions: 1}}\n")
    (repo / "definitions.py").write_text(definitions(topic, "none"))
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic, 1, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    spec = load_repo(repo).spec("card_stats")
    client = redis.Redis.from_url(REDIS_URL)
    group = f"sluice-{project}"
    step_us = args.step_us
    start_us = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    produced_at = time.perf_counter()
    for first in range(0, args.records, 500_000):
        count = min(500_000, args.records - first)
        produce(
            topic,
            events(
                count,
                entities=args.entities,
                start_us=start_us + first * step_us,
                step_us=step_us,
                seed=first,
            ),
        )
    produce_s = time.perf_counter() - produced_at

    worker = _worker(repo, work / "drain.log", "--snapshot-interval", "60")
    drained_at = time.perf_counter()
    _wait(lambda: committed_total(admin, group, topic) >= args.records, worker, timeout_s=3600)
    drain_s = time.perf_counter() - drained_at
    _stop(worker)

    results: dict[str, dict[str, float]] = {}
    newest_us = start_us + args.records * step_us
    off = ("--snapshot-interval", "0")
    for case, extra in (("snapshots", ()), ("checkpoints", off), ("full_replay", off)):
        if case == "full_replay":
            _clear_metadata(admin, group, topic)
        newest_us += step_us
        results[case] = _restart(
            repo, work / f"{case}.log", extra, client, spec, topic, newest_us, card=10**9 + len(results)
        )
    # A kill after a further backlog: the restart replays what followed the last snapshot.
    produce(
        topic,
        events(
            args.sigkill_backlog,
            entities=args.entities,
            start_us=newest_us + step_us,
            step_us=step_us,
            seed=7,
        ),
    )
    newest_us += (args.sigkill_backlog + 1) * step_us
    total = args.records + 2 + args.sigkill_backlog
    worker = _worker(repo, work / "sigkill.log", "--snapshot-interval", "60")
    _wait(lambda: committed_total(admin, group, topic) >= total, worker, timeout_s=3600)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    newest_us += step_us
    results["snapshots_after_sigkill"] = _restart(
        repo, work / "after-kill.log", (), client, spec, topic, newest_us, card=10**9 + 9
    )

    admin.delete_topics([topic, f"{topic}.dlq"])
    admin.close()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), ""
    )
    print(
        json.dumps(
            {
                "benchmark": "restart",
                "cpu": model,
                "records_retained": args.records,
                "produce_s": round(produce_s, 1),
                "drain_s": round(drain_s, 1),
                **{
                    case: {key: round(value, 2) for key, value in figures.items()}
                    for case, figures in results.items()
                },
                "speedup_from_assignment": round(
                    results["full_replay"]["assignment_to_online_s"]
                    / results["snapshots"]["assignment_to_online_s"],
                    1,
                ),
                "checkpoint_speedup_from_assignment": round(
                    results["full_replay"]["assignment_to_online_s"]
                    / results["checkpoints"]["assignment_to_online_s"],
                    1,
                ),
            }
        )
    )


def _restart(
    repo: Path,
    log: Path,
    extra: tuple[str, ...],
    client: redis.Redis,
    spec: object,
    topic: str,
    ts_us: int,
    card: int,
) -> dict[str, float]:
    """Start the worker, produce one event of a new entity, and time its row's arrival in Redis."""
    key = entity_key({"card_id": card}, spec.join_keys, spec.project)  # type: ignore[attr-defined]
    field = timestamp_field(spec.name)  # type: ignore[attr-defined]
    started = time.time()
    worker = _worker(repo, log, *extra)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    producer.send(
        topic, key=str(card).encode(), value=orjson.dumps({"card_id": card, "amount": 1.0, "ts": ts_us / 1e6})
    )
    producer.flush()
    producer.close()
    _wait(lambda: client.hget(key, field) is not None, worker, timeout_s=3600, poll_s=0.01)
    online = time.time()
    _stop(worker)
    assigned = _LOG_TIME.search(log.read_text())
    assigned_at = (
        datetime.strptime(assigned[1], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
        if assigned
        else started
    )
    replays = re.findall(r"rebuilt window state from (\d+) records", log.read_text())
    return {
        "start_to_online_s": online - started,
        "assignment_to_online_s": online - assigned_at,
        "replayed_records": float(sum(map(int, replays))),
    }


def _clear_metadata(admin: KafkaAdminClient, group: str, topic: str) -> None:
    """Commit the group's offsets again without metadata, once the stopped static member has left (the
    broker refuses while the group has members: up to the session timeout)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError, NoError
    from kafka.structs import OffsetAndMetadata

    offsets = admin.list_group_offsets(group).get(group, {})
    bare = {
        TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(meta.offset, "", -1)
        for tp, meta in offsets.items()
        if tp.topic == topic
    }
    deadline = time.monotonic() + 60
    while True:
        try:
            # Per-partition errors come back in the result (a member still in the group), not raised.
            refused = [
                error for error in admin.alter_group_offsets(group, bare).values() if error is not NoError
            ]
            if not refused:
                return
        except KafkaError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"could not clear the commit metadata of {group}")
        time.sleep(1)


def _worker(repo: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), "worker", "--loglevel", "info",
             "--instance-id", "bench-restart", *extra],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait(
    condition: object, worker: subprocess.Popen[bytes], *, timeout_s: float, poll_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(poll_s)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


if __name__ == "__main__":
    main()
