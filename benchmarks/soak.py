"""Soak: ingest, serving at 500 requests/s and the monitor together for a set time (20 minutes by default).

Not a race against a competitor: this one looks for what only time shows. One ``sluice worker`` takes
events at ``--events-per-second`` (the ingest benchmark's view: 3 aggregations over 2 windows), one
``sluice serve`` answers ``--rate`` requests/s from a load generator in its own process (open loop, as in
``http_serve.py``), and one ``sluice monitor`` scores ``--predictions-per-second`` prediction events in
10-second windows against a reference profile. Every 5 s the script samples each process's resident memory
(``/proc/<pid>/status``) and the worker's freshness gauge; the load generator keeps each minute's read
latencies.

Goals (issue 18): after warm-up, no process grows by more than 10% (the median RSS of the last minute
against the first minute after warm-up), and read p99 stays stable (no minute's p99 over twice the median
minute's). Prints a line per minute, then one JSON object on its last line.

Warm-up lasts until every bounded buffer has filled once, so that what grows after it is a leak, not a
buffer filling: at least 3 minutes; the monitor's label join (``--join-capacity`` predictions, 100,000 by
default, held for a label that the soak never sends: at 200 predictions/s, 8.3 minutes); and the worker's
raw events, kept from the watermark's pane on (the view's 10-minute slide plus its 30-second watermark
delay: 10.5 minutes). ``--warmup-minutes`` sets it by hand. ``--trace-memory`` logs where each process's
memory goes (``benchmarks/memtrace``).

    .venv/bin/python benchmarks/soak.py                  # 20 minutes
    .venv/bin/python benchmarks/soak.py --minutes 5      # a shorter look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from http_serve import free_port, wait_ready  # noqa: E402
from ingest import definitions  # noqa: E402

BOOTSTRAP = os.environ.get("SLUICE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
ENTITIES = 10_000
JOIN_CAPACITY = 100_000
"""``sluice monitor --join-capacity``'s default: predictions held for their label."""
RAW_EVENTS_MINUTES = 10.5
"""How long the worker keeps raw events: the ingest view's 10-minute slide plus its 30 s watermark delay."""
SAMPLE_EVERY_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--warmup-minutes", type=float, help="Default: until the bounded buffers are full.")
    parser.add_argument("--rate", type=float, default=500.0, help="Feature reads per second.")
    parser.add_argument("--events-per-second", type=float, default=1000.0)
    parser.add_argument("--predictions-per-second", type=float, default=200.0)
    parser.add_argument(
        "--trace-memory",
        type=int,
        metavar="FRAMES",
        help="Log where each process's memory goes (benchmarks/memtrace), tracing FRAMES frames "
        "with tracemalloc (0: the heap and object counts only, nearly free).",
    )
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)  # the load generator's mode: a port
    args = parser.parse_args()
    if args.load is not None:
        print(json.dumps(asyncio.run(load(args.load, args.rate, args.minutes * 60))))
        return
    if args.warmup_minutes is None:
        args.warmup_minutes = max(3.0, JOIN_CAPACITY / args.predictions_per_second / 60, RAW_EVENTS_MINUTES)
    if args.warmup_minutes + 1 >= args.minutes:
        parser.error(f"a soak of {args.minutes} min ends before its {args.warmup_minutes:.1f}-min warm-up")
    run(args)


def run(args: argparse.Namespace) -> None:
    seconds = args.minutes * 60
    tag = uuid.uuid4().hex[:8]
    project, topic = f"soak_{tag}", f"soak_{tag}"
    predictions = f"{topic}.predictions"
    work = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    os.environ["SLUICE_STATE_DIR"] = str(work / "state")  # every process's profiles, scores and alerts
    repo = work / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(f"project: {project}\ntopics:\n  partitions: 4\n")
    (repo / "definitions.py").write_text(definitions(topic, "none"))
    sluice(repo, "apply")
    training = work / "training.parquet"
    rng = np.random.default_rng(7)
    pd.DataFrame(
        {"amount": rng.lognormal(3, 1, 20_000), "country": rng.choice(["US", "FR", "DE", "IN"], 20_000)}
    ).to_parquet(training)
    sluice(repo, "profile", "--model", "soak", "--version", "1", "--training", str(training))
    from features.config import KafkaConfig
    from streams.kafka_clients import ensure_topics

    ensure_topics(KafkaConfig(bootstrap_servers=BOOTSTRAP), [predictions], partitions=4)

    worker_metrics, monitor_metrics, serve_port = free_port(), free_port(), free_port()
    processes = {
        "worker": start(repo, work, args.trace_memory, "worker", "--metrics-port", str(worker_metrics)),
        "serve": start(repo, work, args.trace_memory, "serve", "--port", str(serve_port)),
        "monitor": start(
            repo,
            work,
            args.trace_memory,
            "monitor",
            "--topic",
            predictions,
            "--window-seconds",
            "10",
            "--lateness-seconds",
            "2",
            "--metrics-port",
            str(monitor_metrics),
        ),
    }
    stop = threading.Event()
    try:
        wait_ready(serve_port, processes["serve"])
        producers = [
            threading.Thread(target=ingest, args=(topic, args.events_per_second, stop), daemon=True),
            threading.Thread(
                target=predict, args=(predictions, args.predictions_per_second, stop), daemon=True
            ),
        ]
        for thread in producers:
            thread.start()
        time.sleep(5)  # the first events reach Redis before the reads start
        loader = subprocess.Popen(
            [sys.executable, __file__, "--load", str(serve_port), "--rate", str(args.rate),
             "--minutes", str(args.minutes)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        samples = sample(processes, worker_metrics, seconds, loader)
        reads = json.loads((loader.communicate()[0] or "[]").strip().splitlines()[-1])
    finally:
        stop.set()
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)
    print_report(samples, reads, args, work)


def sluice(repo: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "sluice", "--repo", str(repo), *args], check=True, capture_output=True
    )


def start(repo: Path, work: Path, trace_frames: int | None, *args: str) -> subprocess.Popen[bytes]:
    """``sluice <args>``, logging to ``<work>/<command>.log`` (and its memory, when traced)."""
    env = dict(os.environ)
    if trace_frames is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "benchmarks" / "memtrace"), env.get("PYTHONPATH")])
        )
        env["SLUICE_MEMTRACE"] = str(work / f"{args[0]}.memtrace.jsonl")
        env["SLUICE_MEMTRACE_FRAMES"] = str(trace_frames)
    with (work / f"{args[0]}.log").open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(repo), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )


def ingest(topic: str, rate: float, stop: threading.Event) -> None:
    """Card payments at ``rate`` per second, timestamped now."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20)
    rng = random.Random(1)
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate) - sent
        for _ in range(due):
            card = rng.randrange(ENTITIES)
            event = {"card_id": card, "amount": round(rng.lognormvariate(3, 1), 2), "ts": time.time()}
            producer.send(topic, key=str(card).encode(), value=orjson.dumps(event))
        sent += due
        time.sleep(0.01)
    producer.close()


def predict(topic: str, rate: float, stop: threading.Event) -> None:
    """Prediction events at ``rate`` per second, drawn as the reference was."""
    from features.config import KafkaConfig
    from monitors import PredictionLogger

    logger = PredictionLogger(config=KafkaConfig(bootstrap_servers=BOOTSTRAP), topic=topic, source="soak")
    rng = random.Random(2)
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate) - sent
        for index in range(sent, sent + due):
            logger.log(
                model="soak", version="1", request_id=f"r{index}",
                features={
                    "amount": rng.lognormvariate(3, 1),
                    "country": rng.choice(["US", "FR", "DE", "IN"]),
                },
                outputs={"score": rng.random()},
            )  # fmt: skip
        sent += due
        time.sleep(0.01)
    logger.close()


def sample(
    processes: dict[str, subprocess.Popen[bytes]],
    worker_metrics: int,
    seconds: float,
    loader: subprocess.Popen[str],
) -> list[dict[str, Any]]:
    """Every 5 s: each process's RSS (MiB) and the worker's stalest freshness (s)."""
    samples = []
    started = time.monotonic()
    while time.monotonic() - started < seconds and loader.poll() is None:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} during the soak")
        samples.append(
            {
                "at_s": time.monotonic() - started,
                "rss_mib": {name: rss_mib(process.pid) for name, process in processes.items()},
                "freshness_s": freshness(worker_metrics),
            }
        )
        time.sleep(SAMPLE_EVERY_S)
    return samples


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def freshness(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:  # not serving yet
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sluice_feature_freshness_seconds{")
    ]
    return max(values) if values else None


async def load(port: int, rate: float, seconds: float) -> list[dict[str, float]]:
    """Open-loop reads at ``rate`` for ``seconds``: per minute, p50 and p99 (ms) and errors."""
    features = [f"card_stats:amount_{f}_{w}" for f in ("count", "sum", "mean") for w in ("10m", "1h")]
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    minutes: dict[int, list[float]] = {}
    errors: dict[int, int] = {}
    rng = random.Random(3)

    async def one(minute: int, due: float) -> None:
        body = orjson.dumps({"features": features, "entities": {"card_id": [rng.randrange(ENTITIES)]}})
        request = (
            b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        reader, writer = await pool.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[minute] = errors.get(minute, 0) + 1
            minutes.setdefault(minute, []).append((time.perf_counter() - due) * 1000)
        finally:
            pool.put_nowait((reader, writer))

    tasks = []
    start = time.perf_counter() + 0.05
    for index in range(int(rate * seconds)):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(int((due - start) // 60), due)))
        if len(tasks) > 5000:
            tasks = [task for task in tasks if not task.done()]
    await asyncio.gather(*tasks)
    return [
        {
            "minute": minute,
            "reads": len(values),
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
            "errors": errors.get(minute, 0),
        }
        for minute, values in sorted(minutes.items())
    ]


def print_report(
    samples: list[dict[str, Any]], reads: list[dict[str, float]], args: argparse.Namespace, work: Path
) -> None:
    warm = args.warmup_minutes * 60
    by_minute: dict[int, list[dict[str, Any]]] = {}
    for item in samples:
        by_minute.setdefault(int(item["at_s"] // 60), []).append(item)
    read_by_minute = {int(item["minute"]): item for item in reads}
    print(
        "minute  read p50 ms  read p99 ms  freshness p99 s  "
        + "  ".join(f"{n} MiB" for n in samples[0]["rss_mib"])
    )
    for minute, items in sorted(by_minute.items()):
        fresh = [item["freshness_s"] for item in items if item["freshness_s"] is not None]
        read = read_by_minute.get(minute, {})
        rss = "  ".join(
            f"{statistics.median(i['rss_mib'][n] for i in items):>8.1f}" for n in items[0]["rss_mib"]
        )
        p50, p99 = read.get("p50_ms", float("nan")), read.get("p99_ms", float("nan"))
        fresh_p99 = float(np.percentile(fresh, 99)) if fresh else float("nan")
        print(f"{minute:>6}  {p50:>11.2f}  {p99:>11.2f}  {fresh_p99:>15.2f}  {rss}")
    after = [item for item in samples if item["at_s"] >= warm]
    first = [item for item in after if item["at_s"] < warm + 60]
    last = [item for item in after if item["at_s"] >= after[-1]["at_s"] - 60] if after else []
    growth = (
        {
            name: (
                statistics.median(i["rss_mib"][name] for i in last)
                / statistics.median(i["rss_mib"][name] for i in first)
                - 1
            )
            * 100
            for name in samples[0]["rss_mib"]
        }
        if first and last
        else {}
    )
    steady_reads = [item["p99_ms"] for item in reads if item["minute"] * 60 >= warm]
    fresh_after = [item["freshness_s"] for item in after if item["freshness_s"] is not None]
    result = {
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "reads_per_second": args.rate,
        "events_per_second": args.events_per_second,
        "predictions_per_second": args.predictions_per_second,
        "rss_growth_pct_after_warmup": {name: round(value, 2) for name, value in growth.items()},
        "rss_mib_end": {name: round(value, 1) for name, value in last[-1]["rss_mib"].items()} if last else {},
        "read_p99_ms_by_minute": [round(item["p99_ms"], 2) for item in reads],
        "read_errors": sum(int(item["errors"]) for item in reads),
        "freshness_p99_s_after_warmup": round(float(np.percentile(fresh_after, 99)), 3)
        if fresh_after
        else None,
        "goal_memory_growth_under_10pct": bool(growth) and all(value <= 10 for value in growth.values()),
        "goal_read_p99_stable": bool(steady_reads)
        and max(steady_reads) <= 2 * statistics.median(steady_reads),
        "logs": str(work),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
