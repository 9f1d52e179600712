"""The monitor end to end: prediction events/s through ``sluice monitor``, from Kafka to window reports.

A recorded stream: ``--events`` prediction events (CloudEvents 1.0 in Kafka's binary mode, built with
``monitors.events.cloudevents.encode``) of one model version with 20 numeric features, spread evenly in
event time over ``--windows`` windows of ``--window`` seconds, round-robin over the ``--partitions``
partitions of a fresh topic (so event times increase within each partition); f7 shifts by ``--shift``
(0.5) standard deviations in the second half of the windows, which fires an alert: the monitor then
renders the window's Evidently HTML report as well, once (a few seconds), which the timing includes. Then
one event per partition a day later, so that every window closes. All of it is produced before any
monitor starts, and timed apart (``produce_s``).

Then ``--processes`` ``sluice monitor`` processes (the default aiokafka engine, default settings but the
window) start in one consumer group on the topic, with the reference profile (10,000 training rows,
``ReferenceProfile.build`` and ``save``) where the monitor looks for it. They start one after the other,
each once the one before has logged that it is consuming: started together, two monitors on one state
folder race to create the alert store's SQLite tables and one exits ("table sluice_alerts already
exists"). So with several, the first reads alone for a second or so, then the group rebalances. Timed:

- ``consume_s``: from the first "monitoring ... as group" line in the monitors' logs (aiokafka logs its
  first assignment just before it) to the timestamp of the last window report in ``<topic>.scores``;
- ``from_assignment_s``: from the first partition assignment in the logs to the same;
- ``from_process_start_s``: from the processes' start (imports, profile load, topics) to the same.

``events_per_s`` is ``--events`` / ``consume_s``. The run ends when every expected window has its report,
when the group has committed up to the day-later events on every partition (all that can be reported
has been), when nothing moved for ``--stall`` seconds, when every monitor has exited, or after
``--timeout`` seconds (``ended`` says which; ``monitor_exits`` lists the monitors that exited on their
own, with the error they printed). ``complete`` says
whether each window's report (the latest per key) counts exactly the events produced in it.

Competitors, in the same run, on the same events as pandas DataFrames (so without Kafka or decoding,
which the sluice figure includes): Evidently's ``DataDriftPreset`` against the 10,000 training rows, on
the first ``--evidently-windows`` windows only (it runs at a steady rate per event; its figure is the
median over those windows), and a loop of scipy's ``ks_2samp`` per feature on every window. What
reading the topic with kafka-python and decoding into a DataFrame costs an Evidently pipeline is
measured apart (``read_decode_events_per_s``, over as many events as the Evidently windows hold). And
the floor under any Python monitor on this machine: aiokafka reading the topic doing nothing else, and
``orjson.loads`` of the events' data (``floor_*``).

``--py-spy DIR`` runs each monitor under ``py-spy record`` (raw, collapsed stacks) and writes its profile
there; the figures of such a run are slowed by the sampling. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# As in drift.py: OpenBLAS's busy-waiting threads would take a core from whatever runs next.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import orjson
import pandas as pd
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitors.drift.profile import ReferenceProfile  # noqa: E402
from monitors.events.cloudevents import PredictionEvent, decode, encode  # noqa: E402

BOOTSTRAP = os.environ.get("SLUICE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
FEATURES = [f"f{index}" for index in range(20)]
MODEL, VERSION = "bench", "1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHIFTED = 7

_LOG_TIME = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[(\d+)\]"
_MONITORING = re.compile(_LOG_TIME + r".*monitoring \S+ as group", re.MULTILINE)
_ASSIGNED = re.compile(_LOG_TIME + r".*(?:[Ss]etting newly assigned partitions|assigned partitions)", re.M)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1, help="monitors in the one consumer group")
    parser.add_argument("--window", type=float, default=60.0, help="the monitor's window, seconds")
    parser.add_argument("--windows", type=int, default=10, help="windows the events span")
    parser.add_argument(
        "--shift", type=float, default=0.5, help="f7's shift in the second half of the windows (0: none)"
    )
    parser.add_argument("--reference-rows", type=int, default=10_000)
    parser.add_argument("--evidently-windows", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds, from the monitors' start")
    parser.add_argument("--stall", type=float, default=60.0, help="give up after this long without progress")
    parser.add_argument("--py-spy", type=Path, help="profile each monitor with py-spy into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and the topics")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sluice-monitor-bench-"))
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.monitor.{suffix}"
    project = f"bench_monitor_{suffix}"
    topics = [topic, f"{topic}.scores", f"{topic}.dlq", f"{topic}.labelled", f"{topic}.alerts"]
    repo, state = work / "repo", work / "state"
    repo.mkdir()
    (repo / "sluice.yaml").write_text(
        f"project: {project}\ntopics: {{partitions: {args.partitions}}}\nalerts: {{topic: {topic}.alerts}}\n"
    )
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic, args.partitions, 1), *(NewTopic(name, 1, 1) for name in topics[1:])])
    monitors: list[subprocess.Popen[bytes]] = []
    logs = [work / f"monitor-{index}.log" for index in range(args.processes)]
    try:
        rng = np.random.default_rng(0)
        reference = pd.DataFrame({name: rng.normal(0, 1, args.reference_rows) for name in FEATURES})
        profile = ReferenceProfile.build(reference, model=MODEL, version=VERSION)
        profile.save(state / "profiles")
        _warm_numba(profile)

        values = rng.normal(0, 1, (args.events, len(FEATURES)))
        window_us = int(args.window * 1_000_000)
        span_us = window_us * args.windows
        offsets_us = np.arange(args.events, dtype=np.int64) * span_us // args.events
        window_of = offsets_us // window_us
        values[window_of >= args.windows // 2, SHIFTED] += args.shift
        produced_at = time.perf_counter()
        expected = produce(topic, values, offsets_us, args.partitions, window_us)
        produce_s = time.perf_counter() - produced_at

        started = time.time()
        env = {
            **os.environ,
            "SLUICE_STATE_DIR": str(state),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
        for index, log in enumerate(logs):
            command = [
                sys.executable, "-m", "sluice", "--repo", str(repo), "monitor", "--topic", topic,
                "--window-seconds", str(args.window), "--loglevel", "info",
            ]  # fmt: skip
            if args.py_spy:
                target = (args.py_spy / f"monitor-{index}.txt").resolve()
                command = [_py_spy(), "record", "--format", "raw", "--rate", "50", "-o", str(target),
                           "--", *command]  # fmt: skip
            with log.open("wb") as output:
                monitors.append(
                    subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                )
            if index < len(logs) - 1:
                _wait_consuming(log, monitors[-1])
        outcome = wait_for_reports(
            topic,
            group=f"sluice-monitor-{project}",
            expected=expected,
            monitors=monitors,
            logs=logs,
            timeout_s=args.timeout,
            stall_s=args.stall,
        )
        cpu_s = [
            _cpu_seconds(_monitor_pid(log, process)) for log, process in zip(logs, monitors, strict=True)
        ]
        exit_codes = [process.poll() for process in monitors]  # before the benchmark stops them
        _stop(monitors, logs)
        texts = [log.read_text(errors="replace") for log in logs]
        consuming = [_log_time(match) for text in texts for match in _MONITORING.finditer(text)]
        assigned = [_log_time(match) for text in texts for match in _ASSIGNED.finditer(text)]

        reports = outcome["reports"]
        last_report = max((report["at"] for report in reports), default=None)
        latest: dict[int, dict[str, Any]] = {}
        for report in reports:
            latest[report["window_start_us"]] = report
        counted = {start: report["events"] for start, report in latest.items()}
        wanted = {
            int(T0.timestamp() * 1_000_000) + window * window_us: count for window, count in expected.items()
        }
        complete = counted == wanted
        drifted = sum(f"f{SHIFTED}" in report["drifted"] for report in latest.values())

        competitors = compare(
            reference,
            values,
            window_of,
            topic,
            windows=args.windows,
            evidently_windows=args.evidently_windows,
        )
        figures: dict[str, Any] = {
            "benchmark": "monitor",
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "events": args.events,
            "partitions": args.partitions,
            "processes": args.processes,
            "window_s": args.window,
            "windows": args.windows,
            "features": len(FEATURES),
            "reference_rows": args.reference_rows,
            "produce_s": round(produce_s, 2),
            "produce_events_per_s": round(args.events / produce_s),
            "complete": complete,
            "ended": outcome["ended"],
            "window_reports": len(reports),
            "windows_reported": len(latest),
            "windows_expected": len(wanted),
            "events_in_latest_reports": sum(counted.values()),
            "events_in_all_reports": sum(report["events"] for report in reports),
            "windows_flagging_shifted_feature": drifted,
            "windows_with_shift": args.windows - args.windows // 2 if args.shift else 0,
            "alerts_fired": sum(text.count("alert firing") for text in texts),
            "monitor_cpu_s": [round(value, 1) for value in cpu_s if value is not None],
            "py_spy": bool(args.py_spy),
        }
        if last_report is not None and consuming:
            consume_s = last_report - min(consuming)
            figures |= {
                "consume_s": round(consume_s, 2),
                "events_per_s": round(args.events / consume_s),
                "from_process_start_s": round(last_report - started, 2),
                "events_per_s_from_process_start": round(args.events / (last_report - started)),
                "start_to_consuming_s": round(min(consuming) - started, 2),
                "start_to_all_consuming_s": round(max(consuming) - started, 2),
            }
            if assigned:
                figures["from_assignment_s"] = round(last_report - min(assigned), 2)
                figures["events_per_s_from_assignment"] = round(args.events / (last_report - min(assigned)))
        figures["monitor_exits"] = [
            {"monitor": index, "code": code, "error": _last_error(text)}
            for index, (code, text) in enumerate(zip(exit_codes, texts, strict=True))
            if code is not None
        ]
        figures |= competitors
        if "events_per_s" in figures:
            figures["speedup_vs_evidently"] = round(
                figures["events_per_s"] / figures["evidently_events_per_s"], 1
            )
            figures["speedup_vs_evidently_with_decode"] = round(
                figures["events_per_s"] / figures["evidently_with_decode_events_per_s"], 1
            )
        figures["blas_threads"] = os.environ["OPENBLAS_NUM_THREADS"]
        if args.keep:
            figures["work_dir"] = str(work)
        print(json.dumps(figures))
    finally:
        _stop(monitors, logs)
        if not args.keep:
            try:
                admin.delete_topics(topics)
            except Exception as error:  # cleaning up: say so and go on
                print(f"could not delete the topics: {error}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
        admin.close()


def produce(
    topic: str, values: np.ndarray, offsets_us: np.ndarray, partitions: int, window_us: int
) -> dict[int, int]:
    """Every event, round-robin over the partitions; then one per partition a day later. Returns the
    events per window (index from T0) as the monitor will count them."""
    producer = KafkaProducer(
        bootstrap_servers=BOOTSTRAP, linger_ms=20, batch_size=1 << 18, max_request_size=4 << 20
    )
    t0_us = int(T0.timestamp() * 1_000_000)
    expected: dict[int, int] = {}
    for index in range(len(values)):
        event_time = T0 + timedelta(microseconds=int(offsets_us[index]))
        event = PredictionEvent(
            model=MODEL,
            version=VERSION,
            request_id=f"r-{index}",
            features=dict(zip(FEATURES, values[index].tolist(), strict=True)),
            outputs={"score": 0.5},
            event_time=event_time,
        )
        key, value, headers = encode(event, source="bench")
        producer.send(topic, key=key, value=value, headers=headers, partition=index % partitions)
        # The window as the monitor computes it from the decoded time.
        window = (int(event_time.timestamp() * 1_000_000) - t0_us) // window_us
        expected[window] = expected.get(window, 0) + 1
    for partition in range(partitions):
        tick = PredictionEvent(
            model=MODEL,
            version=VERSION,
            request_id=f"tick-{partition}",
            features=dict.fromkeys(FEATURES, 0.0),
            event_time=T0 + timedelta(days=1),
        )
        key, value, headers = encode(tick, source="bench")
        producer.send(topic, key=key, value=value, headers=headers, partition=partition)
    producer.flush()
    producer.close()
    return expected


def wait_for_reports(
    topic: str,
    *,
    group: str,
    expected: dict[int, int],
    monitors: list[subprocess.Popen[bytes]],
    logs: list[Path],
    timeout_s: float,
    stall_s: float,
) -> dict[str, Any]:
    """Read ``<topic>.scores`` until the run ends (see the module's doc); every report with the time its
    record was written (the producer's timestamp)."""
    reader = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    scores = TopicPartition(f"{topic}.scores", 0)
    reader.assign([scores])
    reader.seek_to_beginning(scores)
    probe = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    partitions = [TopicPartition(topic, number) for number in sorted(probe.partitions_for_topic(topic) or ())]
    ends = probe.end_offsets(partitions)
    probe.close()
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    reports: list[dict[str, Any]] = []
    windows = len(expected)
    total = sum(expected.values())
    deadline = time.monotonic() + timeout_s
    moved_at, last_seen, next_check = time.monotonic(), None, 0.0
    ended = "timeout"
    try:
        while time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=200).values():
                reports += [_short(record) for record in records]
                moved_at = time.monotonic()
            latest = {report["window_start_us"]: report["events"] for report in reports}
            if len(latest) == windows and sum(latest.values()) == total:
                ended = "all_windows_reported"
                break
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                if all(process.poll() is not None for process in monitors):
                    ended = "every_monitor_exited"
                    break
                done = _committed(admin, group, topic)
                if done != last_seen:
                    last_seen, moved_at = done, time.monotonic()
                if done and all(done.get(tp.partition, 0) >= ends[tp] - 1 for tp in partitions):
                    # Reports are written before the commit that passes them: read what is left.
                    for records in reader.poll(timeout_ms=2000).values():
                        reports += [_short(record) for record in records]
                    ended = "group_committed_everything"
                    break
                if time.monotonic() - moved_at > stall_s:
                    ended = "stalled"
                    break
    finally:
        reader.close()
        admin.close()
    return {"reports": reports, "ended": ended}


def _short(record: Any) -> dict[str, Any]:
    report = orjson.loads(record.value)
    return {
        "window_start_us": report["window_start_us"],
        "events": report["events"],
        "drifted": [s["feature"] for s in report["scores"] if s["against"] == "reference" and s["drift"]],
        "at": record.timestamp / 1000,
    }


def compare(
    reference: pd.DataFrame,
    values: np.ndarray,
    window_of: np.ndarray,
    topic: str,
    *,
    windows: int,
    evidently_windows: int,
) -> dict[str, Any]:
    """Evidently and a scipy KS loop on the same windows' events, as DataFrames; and what reading and
    decoding those events from the topic costs."""
    from evidently import Report
    from evidently.presets import DataDriftPreset
    from scipy.stats import ks_2samp

    bounds = np.searchsorted(window_of, np.arange(windows + 1))
    frames = [
        pd.DataFrame(values[bounds[window] : bounds[window + 1]], columns=FEATURES)
        for window in range(windows)
    ]
    evidently_rates = []
    for frame in frames[:evidently_windows]:
        started = time.perf_counter()
        Report([DataDriftPreset()]).run(current_data=frame, reference_data=reference)
        evidently_rates.append(len(frame) / (time.perf_counter() - started))
    ks_rates = []
    for frame in frames:
        started = time.perf_counter()
        for name in FEATURES:
            ks_2samp(reference[name].to_numpy(), frame[name].to_numpy())
        ks_rates.append(len(frame) / (time.perf_counter() - started))
    decode_rate = _read_and_decode(topic, sum(len(frame) for frame in frames[:evidently_windows]))
    fetch_rate, parse_us = _floor(topic, len(values))
    evidently = statistics.median(evidently_rates)
    return {
        "evidently_version": _version("evidently"),
        "evidently_windows": len(evidently_rates),
        "evidently_events_per_window": [len(frame) for frame in frames[:evidently_windows]],
        "evidently_events_per_s": round(evidently),
        "evidently_events_per_s_each": [round(rate) for rate in evidently_rates],
        "scipy_ks_windows": len(ks_rates),
        "scipy_ks_events_per_s": round(statistics.median(ks_rates)),
        "read_decode_events_per_s": round(decode_rate),
        "evidently_with_decode_events_per_s": round(1 / (1 / evidently + 1 / decode_rate)),
        "floor_aiokafka_fetch_events_per_s": round(fetch_rate),
        "floor_json_parse_us_per_event": round(parse_us, 2),
        "floor_fetch_and_parse_events_per_s": round(1 / (1 / fetch_rate + parse_us / 1e6)),
    }


def _floor(topic: str, count: int) -> tuple[float, float]:
    """What no monitor in Python gets under, on this machine: records/s that aiokafka's ``getmany`` reads
    from the topic doing nothing else, and µs per event that ``orjson.loads`` takes on the events' data."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    values: list[bytes] = []

    async def fetch() -> float:
        reader = AIOKafkaConsumer(
            topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", enable_auto_commit=False,
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
        )  # fmt: skip
        await reader.start()
        read, started = 0, None
        try:
            while read < count:
                batches = await reader.getmany(timeout_ms=1000, max_records=20_000)
                if started is None and batches:
                    started = time.perf_counter()
                for records in batches.values():
                    read += len(records)
                    if len(values) < 50_000:
                        values.extend(record.value for record in records[: 50_000 - len(values)])
            return read / (time.perf_counter() - (started or time.perf_counter()))
        finally:
            await reader.stop()

    rate = asyncio.run(fetch())
    started = time.perf_counter()
    for value in values:
        orjson.loads(value)
    return rate, (time.perf_counter() - started) / len(values) * 1e6


def _read_and_decode(topic: str, count: int) -> float:
    """Events/s to read ``count`` records from the topic with kafka-python, decode them as CloudEvents
    and make a DataFrame of their features: what an Evidently pipeline pays before its report."""
    reader = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, max_poll_records=20_000)
    partitions = [
        TopicPartition(topic, number) for number in sorted(reader.partitions_for_topic(topic) or ())
    ]
    reader.assign(partitions)
    for partition in partitions:
        reader.seek_to_beginning(partition)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    while len(rows) < count:
        for records in reader.poll(timeout_ms=1000).values():
            rows += [decode(record.headers, record.value).features for record in records]  # type: ignore[union-attr]
    frame = pd.DataFrame.from_records(rows[:count], columns=FEATURES)
    elapsed = time.perf_counter() - started
    reader.close()
    assert len(frame) == count
    return count / elapsed


def _warm_numba(profile: ReferenceProfile) -> None:
    """Compile the window and metric kernels into Numba's on-disk cache, as a monitor that ran before
    would have: the timed monitors load them instead of compiling."""
    from monitors.drift.detector import DriftDetector
    from monitors.drift.window import ServingWindow

    window = ServingWindow(profile=profile, start_us=0, end_us=1)
    window.update({name: np.random.default_rng(1).normal(size=5000) for name in FEATURES})
    detector = DriftDetector(profile=profile)
    detector.evaluate(window, previous=window)


def _wait_consuming(log: Path, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait for the monitor's "monitoring ... as group" line (or its exit)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if _MONITORING.search(log.read_text(errors="replace")):
            return
        time.sleep(0.05)


def _committed(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    from kafka.errors import KafkaError

    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return {}
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def _monitor_pid(log: Path, process: subprocess.Popen[bytes]) -> int:
    """The monitor's own pid (its log says it; under py-spy the Popen is py-spy's)."""
    found = _MONITORING.search(log.read_text(errors="replace"))
    return int(found[2]) if found else process.pid


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(monitors: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """SIGTERM each monitor (under py-spy, the monitor itself, so that py-spy writes its profile)."""
    for index, process in enumerate(monitors):
        if process.poll() is None:
            pid = _monitor_pid(logs[index], process)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for process in monitors:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _last_error(text: str) -> str:
    return next((line for line in reversed(text.splitlines()) if line.startswith("Error:")), "")


def _log_time(match: re.Match[str]) -> float:
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()


def _py_spy() -> str:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else "py-spy"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _cpu_model() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), ""
    )


if __name__ == "__main__":
    main()
