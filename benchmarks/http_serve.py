"""HTTP feature server: ``sluice serve`` against Feast's feature server, at a fixed request rate.

Workload (issue #4): the three-view data of ``online_read.py`` (Feast writes it into Redis). Each
server runs alone in its own process, one after the other; a load generator in a third process
sends POST /get-online-features for 1 entity x 10 features at a fixed rate (500 requests/s by
default) over keep-alive connections, open loop: a request's latency counts from the moment it was
due, so a stalled server cannot hide its queue (no coordinated omission). Both servers answer in
Feast's JSON. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FEATURES = [f"view0:f0_{index}" for index in range(10)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


async def drive(port: int, rate: float, seconds: float, connections: int) -> tuple[list[float], int, int]:
    """Send requests at ``rate`` per second for ``seconds``; return latencies, errors and sent count."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    bodies = [
        orjson.dumps({"features": FEATURES, "entities": {"driver_id": [card]}}) for card in range(0, 1000, 7)
    ]
    requests = [
        b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in bodies
    ]
    latencies: list[float] = []
    errors = 0

    async def one(request: bytes, due: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append(time.perf_counter() - due)
        finally:
            pool.put_nowait((reader, writer))

    tasks = []
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[index % len(requests)], due)))
    await asyncio.gather(*tasks)
    return latencies, errors, total


def measure(port: int, rate: float, seconds: float, connections: int) -> dict[str, float]:
    """Run the load generator in its own process (this script with --load) and read its figures."""
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            str(port),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def serve_feast(repo: Path, port: int) -> None:
    import uvicorn
    from feast import FeatureStore
    from feast.feature_server import get_app

    from features.config import load_config
    from features.registry import feast_repo_config

    store = FeatureStore(config=feast_repo_config(load_config(repo), repo))
    uvicorn.run(get_app(store), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_server(
    command: list[str], port: int, rate: float, seconds: float, connections: int
) -> dict[str, float]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, process)
        measure(port, rate, 2, connections)  # warm-up: connections, registry, caches
        return measure(port, rate, seconds, connections)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-feast", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default=os.environ.get("SLUICE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()

    if args.serve_feast:
        serve_feast(Path(args.serve_feast[0]), int(args.serve_feast[1]))
        return
    if args.load:
        import uvloop

        latencies, errors, sent = uvloop.run(drive(args.load, args.rate, args.seconds, args.connections))
        ordered = sorted(latencies)
        print(
            json.dumps(
                {
                    "p50_ms": statistics.median(ordered) * 1e3,
                    "p90_ms": ordered[int(len(ordered) * 0.90)] * 1e3,
                    "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
                    "max_ms": ordered[-1] * 1e3,
                    "errors": errors,
                    "sent": sent,
                }
            )
        )
        return

    from online_read import build

    root = Path(tempfile.mkdtemp(prefix="sluice-http-serve-"))
    project = "bench_" + uuid.uuid4().hex[:8]
    try:
        build(root, project)
        results: dict[str, object] = {
            "rate": args.rate,
            "seconds": args.seconds,
            "connections": args.connections,
        }
        port = free_port()
        sluice = run_server(
            [sys.executable, "-m", "sluice", "--repo", str(root), "serve", "--port", str(port)],
            port,
            args.rate,
            args.seconds,
            args.connections,
        )
        port = free_port()
        feast = run_server(
            [sys.executable, __file__, "--serve-feast", str(root), str(port)],
            port,
            args.rate,
            args.seconds,
            args.connections,
        )
        for name, figures in (("sluice", sluice), ("feast", feast)):
            for key, value in figures.items():
                results[f"{name}_{key}"] = round(value, 3) if isinstance(value, float) else value
            print(f"{name}: {figures}", file=sys.stderr)
        print(json.dumps(results))
    finally:
        client = redis.Redis.from_url(args.redis_url)
        for key in client.scan_iter(match=f"*{project}".encode(), count=1000):
            client.delete(key)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
