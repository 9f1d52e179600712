"""The Prometheus alert rules in ``deploy/prometheus/`` and the Grafana dashboard in ``deploy/grafana/``:
promtool checks the rules, runs their unit tests and parses every dashboard query, and every metric either
names is one that a running worker, monitor and feature server really export."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.streaming import delete_topics, get_when_up, make_repo, sluice, start_worker, stop

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "sluice.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: deploy/local/install-system-deps.sh installs Debian's prometheus")
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=RULES, check=False)


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout


def test_the_rules_fire_when_they_should_and_stay_quiet_otherwise() -> None:
    tested = promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a unit test that expects it to fire.
    alerts = {rule["alert"] for group in rules()["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((RULES / "rules_test.yml").read_text())["tests"]
    fired = {
        check["alertname"] for case in cases for check in case["alert_rule_test"] if check.get("exp_alerts")
    }
    assert fired == alerts


def test_a_rule_with_the_wrong_threshold_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a stale-view threshold ten times too high fails them."""
    shutil.copy(RULES / "rules_test.yml", tmp_path)
    (tmp_path / "rules.yml").write_text((RULES / "rules.yml").read_text().replace("> 600", "> 6000"))
    tested = subprocess.run(
        [shutil.which("promtool") or "promtool", "test", "rules", "rules_test.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert tested.returncode != 0 and "SluiceFeatureViewStale" in tested.stdout + tested.stderr


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query becomes a recording rule, which promtool parses as PromQL."""
    queries = dashboard_queries()
    assert len(queries) >= 20
    recording = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(recording))
    checked = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "rules", str(tmp_path / "queries.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def rules() -> dict[str, list[dict[str, list[dict[str, str]]]]]:
    loaded: dict[str, list[dict[str, list[dict[str, str]]]]] = yaml.safe_load(
        (RULES / "rules.yml").read_text()
    )
    return loaded


def named_metrics(expressions: list[str]) -> set[str]:
    """The sluice series an expression selects (``up`` is Prometheus' own)."""
    return {name for expression in expressions for name in re.findall(r"\b(sluice_[a-z_]+)\b", expression)}


def exported(text: str) -> set[str]:
    """The series names a /metrics page offers: each family's, and a histogram's bucket, sum and count."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.stack
def test_every_metric_the_rules_and_the_dashboard_name_is_exported_by_the_running_processes(
    tmp_path: Path, project: str, topic: str
) -> None:
    repo = make_repo(tmp_path / "repo", project=project, topic=topic)
    assert sluice(repo, "apply").returncode == 0
    ports = {role: free_port() for role in ("worker", "monitor", "serve")}
    logs = {role: tmp_path / f"{role}.log" for role in ports}
    processes = {"worker": start_worker(repo, logs["worker"], "--metrics-port", str(ports["worker"]))}
    for role, command in (
        ("monitor", ["monitor", "--topic", f"{topic}.predictions", "--metrics-port", str(ports["monitor"])]),
        ("serve", ["serve", "--port", str(ports["serve"])]),
    ):
        with logs[role].open("wb") as output:
            processes[role] = subprocess.Popen(
                [sys.executable, "-m", "sluice", "--repo", str(repo), *command],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
    try:
        pages = {
            role: get_when_up(f"http://127.0.0.1:{port}/metrics", processes[role], logs[role])
            for role, port in ports.items()
        }
    finally:
        for process in processes.values():
            stop(process)
        delete_topics(topic, f"{topic}.dlq", f"{topic}.predictions", *(
            f"{topic}.predictions.{suffix}" for suffix in ("scores", "dlq", "labelled")
        ))  # fmt: skip
    offered = set().union(*(exported(page) for page in pages.values()))
    expressions = [rule["expr"] for group in rules()["groups"] for rule in group["rules"]]
    named = named_metrics(expressions)
    assert len(named) >= 10
    assert named <= offered, sorted(named - offered)
    on_the_dashboard = named_metrics(dashboard_queries())
    assert len(on_the_dashboard) >= 20
    assert on_the_dashboard <= offered, sorted(on_the_dashboard - offered)
