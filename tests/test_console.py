"""`sluice ui` in a real browser (Debian's Chromium, driven by Playwright) over what `make demo` left in the
stores: each page is checked against an independent read of the same store (Kafka with its own consumer,
Feast's SDK on Redis, SQL on the alert store, pyarrow on the scores, MLflow's client on the registry).

Screenshots go to ``$SLUICE_CONSOLE_SCREENSHOTS`` when it is set (``docs/console/`` is made that way), and
to the test's temporary folder otherwise.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from features.config import SluiceConfig, load_config
from streams.dead_letters import DeadLetter, DeadLetterSink, SourceRecord
from tests.conftest import DemoRun
from tests.streaming import free_port, get_when_up

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[1] / "examples" / "fraud"
VIEW = "card_transaction_stats"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = [
    "/",
    "/views",
    f"/views/{VIEW}?card_id=7",
    "/models",
    "/models/fraud?version=1",
    "/alerts",
]
SCRIPT = b'<script>alert("dead letter")</script><img src=x onerror=alert(1)>'


@dataclass(frozen=True)
class Console:
    url: str
    token: str
    state: Path
    config: SluiceConfig
    shots: Path


@pytest.fixture(scope="module")
def console(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    assert demo_run.returncode == 0, demo_run.output[-4000:]
    env = {**os.environ, "SLUICE_STATE_DIR": str(demo_run.state)}
    config = load_config(REPO, environ=env)
    # A dead letter whose value is markup, as the worker's sink writes it: the console shows it as text.
    sender = KafkaProducer(**config.kafka.client_kwargs())
    DeadLetterSink(producer=sender, topic="transactions.dlq", feature_view=VIEW).send(
        [
            DeadLetter(
                record=SourceRecord(topic="transactions", partition=0, offset=10**9, key=b"7", value=SCRIPT),
                reason="malformed_json",
                detail="<b>not</b> JSON",
            )
        ]
    )
    sender.close()
    port, token = free_port(), secrets.token_urlsafe(16)
    log = tmp_path_factory.mktemp("console") / "ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice", "--repo", str(REPO), "ui", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "SLUICE_UI_TOKEN": token},
        )
    shots = Path(os.environ.get("SLUICE_CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        get_when_up(f"http://127.0.0.1:{port}/health", process, log)
        yield Console(f"http://127.0.0.1:{port}", token, demo_run.state, config, shots)
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: deploy/local/install-system-deps.sh installs it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright's own browser download cannot reach its host here: Debian's Chromium instead.
        # With background networking on, Chromium keeps dialling Google's hosts, which this closed
        # network refuses.
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


def _signed_in(browser: Any, console: Console, width: int = 1280, height: int = 800) -> Any:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(console.url + "/login")
    page.fill("#token", console.token)
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "/")
    return page


def _rows(page: Any, table: str) -> list[dict[str, str]]:
    """Each row of a table as its data-* attributes and its cells' text by column label."""
    return page.eval_on_selector_all(
        f"#{table} tbody tr",
        """rows => rows.map(row => Object.assign({}, row.dataset,
             Object.fromEntries([...row.querySelectorAll('td[data-label]')]
               .map(cell => ['cell:' + cell.dataset.label, cell.innerText.trim()]))))""",
    )


def _read_topic(config: SluiceConfig, topic: str) -> list[Any]:
    """Every record of a topic, with a consumer of its own (no group)."""
    reader = KafkaConsumer(**config.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
    reader.assign(partitions)
    reader.seek_to_beginning()
    end = reader.end_offsets(partitions)
    records: list[Any] = []
    while any(reader.position(tp) < end[tp] for tp in partitions):
        for batch in reader.poll(timeout_ms=500).values():
            records.extend(batch)
    reader.close()
    return records


def _alerts(console: Console) -> list[dict[str, Any]]:
    with sqlite3.connect(console.state / "sluice.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM sluice_alerts")]


def test_signing_in_sets_an_http_only_strict_cookie_and_a_wrong_token_is_refused(
    browser: Any, console: Console
) -> None:
    page = browser.new_page()
    page.goto(console.url + "/models")
    assert page.url == console.url + "/login?next=%2Fmodels"
    page.fill("#token", "not-the-token")
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.click("button[type=submit]")
    assert posted.value.status == 401
    assert "not this console's token" in page.inner_text("main")
    assert page.context.cookies() == []
    page.fill("#token", console.token)
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "/models")  # back where the user was going
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and console.token not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # no script can read the session
    page.click(".logout button")
    page.goto(console.url + "/alerts")
    assert page.url.startswith(console.url + "/login")
    page.close()


def test_the_overview_shows_freshness_lag_dead_letters_and_alerts_as_the_stores_hold_them(
    browser: Any, console: Console
) -> None:
    page = _signed_in(browser, console)
    health = page.eval_on_selector_all(".health li", "items => items.map(i => [i.dataset.part, i.className])")
    assert health == [["Kafka", "up"], ["Redis", "up"], ["Alert and job store", "up"]]

    # Freshness: per partition, the newest event time of the events the worker accepted, recomputed from
    # the topic (the two bad messages are not events of the view).
    newest: dict[int, int] = {}
    for record in _read_topic(console.config, "transactions"):
        try:
            event = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event.get("card_id"), int):
            continue
        micros = int(datetime.fromisoformat(event["event_time"]).timestamp() * 1_000_000)
        newest[record.partition] = max(newest.get(record.partition, micros), micros)
    worker_rows = [row for row in _rows(page, "lag") if row["group"] == "sluice-fraud"]
    assert {int(row["partition"]): int(row["newestUs"]) for row in worker_rows} == newest
    # Lag: the end of each partition minus what the group committed, read by a consumer in that group.
    for group in ("sluice-fraud", "sluice-monitor-fraud"):
        rows = [row for row in _rows(page, "lag") if row["group"] == group]
        assert rows, group
        probe = KafkaConsumer(
            **console.config.kafka.client_kwargs(), group_id=group, enable_auto_commit=False
        )
        partitions = [TopicPartition(row["topic"], int(row["partition"])) for row in rows]
        end = probe.end_offsets(partitions)
        expected = {(tp.topic, tp.partition): end[tp] - (probe.committed(tp) or 0) for tp in partitions}
        probe.close()
        assert {(row["topic"], int(row["partition"])): int(row["cell:Lag"]) for row in rows} == expected
    freshness = page.inner_text(f'#freshness tr[data-view="{VIEW}"] .freshness')
    assert re.fullmatch(r"[\d.]+ (s|min|h|d)", freshness), freshness

    # Dead letters by reason, against every letter of the topic read whole.
    reasons: Counter[str] = Counter()
    for record in _read_topic(console.config, "transactions.dlq"):
        reasons[dict(record.headers)["sluice.reason"].decode()] += 1
    shown = page.eval_on_selector_all(
        '#dead-letters tr[data-topic="transactions.dlq"] .reason',
        "items => items.map(i => [i.dataset.reason, Number(i.querySelector('strong').innerText)])",
    )
    assert dict(shown) == dict(reasons) and sum(reasons.values()) >= 3  # the demo's two, and the markup
    total = page.inner_text('#dead-letters tr[data-topic="transactions.dlq"] .total')
    assert int(total) == sum(reasons.values())

    firing = page.eval_on_selector_all("#firing li", "items => items.map(i => i.dataset.alert)")
    assert sorted(firing) == sorted(a["id"] for a in _alerts(console) if a["status"] == "firing")
    assert firing  # the demo's drift alerts
    page.screenshot(path=str(console.shots / "overview.png"), full_page=True)
    page.close()


def test_a_feature_view_shows_its_definition_its_dead_letters_and_the_values_feast_reads(
    browser: Any, console: Console
) -> None:
    from features.registry import feature_store
    from features.repo import load_repo

    store = feature_store(load_repo(REPO, config=console.config))
    view = store.get_stream_feature_view(VIEW)
    page = _signed_in(browser, console)
    page.click(f'#freshness a:text("{VIEW}")')
    assert page.inner_text('#definition [data-field="topic"]') == view.stream_source.kafka_options.topic
    entity = store.get_entity("card")
    assert page.inner_text('#definition [data-field="entities"]') == f"card_id ({entity.value_type.name})"
    assert page.inner_text('#definition [data-field="offline_path"]').endswith(view.batch_source.path)
    shown_features = [row["feature"] for row in _rows(page, "schema")]
    # Feast lists the entity's column among the features; the console, with the entities.
    assert sorted(shown_features) == sorted(f.name for f in view.features if f.name not in view.join_keys)

    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    cards = [1, 7, 123, 499]
    for card in cards:
        page.fill("#key-card_id", str(card))
        page.click("#lookup button")
        page.wait_for_url(re.compile(rf".*card_id={card}$"))
        shown = {row["feature"]: row for row in _rows(page, "values")}
        theirs = store.get_online_features(
            features=[f"{VIEW}:{name}" for name in shown_features], entity_rows=[{"card_id": card}]
        ).to_dict(include_event_timestamps=True)
        for name in shown_features:
            value = theirs[name][0]
            assert shown[name]["cell:Value"] == ("null" if value is None else str(value)), (card, name)
            when = datetime.fromtimestamp(theirs[f"{name}__ts"][0], UTC)  # Feast gives epoch seconds
            assert shown[name]["cell:Event time"] == when.strftime("%Y-%m-%d %H:%M:%S"), (card, name)
    page.screenshot(path=str(console.shots / "feature-view.png"), full_page=True)

    # The markup in a dead letter is shown as text, and runs nothing.
    letters = _rows(page, "letters")
    assert any(
        SCRIPT.decode() in row["cell:Value"] and row["cell:Detail"] == "<b>not</b> JSON" for row in letters
    )
    assert page.evaluate("document.scripts.length") == 0 and dialogs == []
    expected = [
        record
        for record in _read_topic(console.config, "transactions.dlq")
        if dict(record.headers).get("sluice.feature_view", b"").decode() == VIEW
    ]
    assert sorted(int(row["offset"]) for row in letters) == sorted(record.offset for record in expected)

    response = page.goto(f"{console.url}/views/{VIEW}?card_id=seven")
    assert (
        response.status == 400
        and "card_id is an integer key; 'seven' is not an integer" in page.inner_text("main")
    )
    page.close()


def test_the_model_page_charts_every_score_with_its_threshold_and_alerts_and_links_the_reports(
    browser: Any, console: Console
) -> None:
    from mlflow import MlflowClient

    registry = MlflowClient(tracking_uri=console.config.mlflow_tracking_uri)
    versions = registry.search_model_versions("name='fraud'")
    page = _signed_in(browser, console)
    page.goto(console.url + "/models")
    page.click('[data-model="fraud"] h2 a')
    rows = {row["version"]: row for row in _rows(page, "registry")}
    assert set(rows) == {str(version.version) for version in versions}
    held = registry.get_registered_model("fraud").aliases
    for version in versions:
        aliases = sorted(alias for alias, number in held.items() if str(number) == str(version.version))
        assert rows[str(version.version)]["cell:Aliases"] == (", ".join(aliases) or "-"), version.version
    assert "champion" in rows["2"]["cell:Aliases"]

    page.goto(console.url + "/models/fraud?version=1")
    # The reference profile, against the profile's own file.
    saved = json.loads((console.state / "profiles" / "fraud" / "1" / "profile.json").read_text())
    shown = {
        row["feature"]: (row["kind"], int(row["count"]), int(row["nulls"])) for row in _rows(page, "profile")
    }
    assert shown == {f["name"]: (f["kind"], f["count"], f["null_count"]) for f in saved["features"]}
    folder = console.state / "monitor" / "scores" / "model=fraud" / "version=1"
    scored = [
        row
        for file in sorted(folder.glob("window-*.parquet"))
        if not file.name.endswith((".summary.parquet", ".performance-provisional.parquet"))
        for row in pq.read_table(file).to_pylist()
    ]
    expected_charts = {(r["kind"], r["feature"], r["metric"], r["against"]) for r in scored}
    charts = page.eval_on_selector_all(
        ".chart-card",
        """cards => cards.map(c => [c.dataset.kind, c.dataset.feature, c.dataset.metric, c.dataset.against,
              c.querySelectorAll('circle.crossed').length, c.querySelectorAll('circle.alert').length,
              c.querySelectorAll('line.threshold').length])""",
    )
    assert {tuple(chart[:4]) for chart in charts} == expected_charts and len(charts) == len(expected_charts)
    crossed = Counter(
        (r["kind"], r["feature"], r["metric"], r["against"])
        for r in scored
        if r["drift"] and r["score"] is not None
    )
    assert {tuple(c[:4]): c[4] for c in charts if c[4]} == dict(crossed)
    # One ring per alert of version 1, on the series the alert rules read (against the reference).
    alerts = [a for a in _alerts(console) if a["version"] == "1"]
    rings = Counter((c[1], c[2]) for c in charts for _ in range(c[5]) if c[3] == "reference")
    assert rings == Counter((a["feature"], a["metric"]) for a in alerts) and alerts
    with_threshold = {
        (r["kind"], r["feature"], r["metric"], r["against"])
        for r in scored
        if r["threshold"] is not None and r["threshold"] == r["threshold"]  # NaN: no threshold
    }
    assert {tuple(c[:4]) for c in charts if c[6]} == with_threshold
    page.screenshot(path=str(console.shots / "model.png"), full_page=True)

    # The alert's window links to its Evidently report.
    window = alerts[0]["window_start_us"]
    with page.expect_navigation():
        page.click(f'#windows tr[data-window="{window}"] a')
    assert page.url.endswith(f"/models/fraud/1/report/{window}")
    page.wait_for_selector("text=Data Drift Summary")  # Evidently's page rendered, under the report's CSP
    page.close()


def test_alerts_and_jobs_show_the_store_with_filters_deliveries_and_logs(
    browser: Any, console: Console
) -> None:
    page = _signed_in(browser, console)
    page.goto(console.url + "/alerts")
    alerts = _alerts(console)
    with sqlite3.connect(console.state / "sluice.db") as db:
        deliveries = Counter(
            (alert_id, state)
            for alert_id, state in db.execute("SELECT alert_id, state FROM sluice_deliveries")
        )
        attempts = dict(
            db.execute(
                "SELECT d.alert_id || '|' || d.sink, COUNT(a.id) FROM sluice_deliveries d "
                "LEFT JOIN sluice_delivery_attempts a ON a.delivery_id = d.id GROUP BY d.id"
            ).fetchall()
        )
        jobs = {row[0]: row[1] for row in db.execute("SELECT job_id, state FROM sluice_jobs")}
    shown = {row["alert"]: row for row in _rows(page, "alerts")}
    assert set(shown) == {alert["id"] for alert in alerts}
    for alert in alerts:
        sent = sum(count for (alert_id, _), count in deliveries.items() if alert_id == alert["id"])
        delivered = deliveries[(alert["id"], "delivered")]
        assert shown[alert["id"]]["cell:Deliveries"] == f"{delivered}/{sent} delivered"
    assert {row["job"]: row["cell:State"] for row in _rows(page, "jobs")} == jobs and jobs
    page.screenshot(path=str(console.shots / "alerts.png"), full_page=True)

    page.select_option("#f-severity", "critical")
    page.click("#filters button")
    page.wait_for_url(re.compile(r".*severity=critical.*"))
    assert {row["alert"] for row in _rows(page, "alerts")} == {
        a["id"] for a in alerts if a["severity"] == "critical"
    }

    alert = alerts[0]
    page.goto(f"{console.url}/alerts/{alert['id']}")
    sinks = page.eval_on_selector_all(
        ".delivery", "items => items.map(i => [i.dataset.sink, i.querySelectorAll('li').length])"
    )
    assert {f"{alert['id']}|{sink}": count for sink, count in sinks} == {
        key: count for key, count in attempts.items() if key.startswith(alert["id"] + "|")
    }

    (job_id,) = jobs
    page.goto(f"{console.url}/jobs/{job_id}")
    log = (console.state / "jobs" / job_id / "output.log").read_text(errors="replace")
    assert page.inner_text("#logs").strip() == log.strip() and log.strip()
    page.close()


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_every_page_fits_the_screen_without_scrolling_sideways(
    browser: Any, console: Console, width: int, height: int
) -> None:
    page = _signed_in(browser, console, width, height)
    for path in PAGES:
        response = page.goto(console.url + path)
        assert response.status == 200, path
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
        assert page.evaluate("document.scripts.length") == 0, path  # no JavaScript in the console's pages
    if width < 1000:
        page.goto(console.url + "/")
        page.screenshot(path=str(console.shots / f"overview-{width}.png"), full_page=True)
    page.close()


def test_bad_requests_get_a_4xx_with_a_reason(console: Console) -> None:
    def get(path: str, **headers: str) -> tuple[int, str, Any]:
        """Status, body and headers, after redirects."""
        request = urllib.request.Request(
            console.url + path, headers={"Authorization": f"Bearer {console.token}", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers

    status, body, headers = get("/views/no_such_view")
    assert (
        status == 404
        and "no streamed feature view named &#39;no_such_view&#39;; the repo has: card_transaction_stats"
        in body
    )
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert get("/models/no_such_model")[0] == 404
    assert get("/models/fraud/1/report/yesterday")[0] == 400
    assert get("/models/fraud/1/report/12")[0] == 404
    assert get("/alerts?status=burning")[0] == 400
    assert get("/jobs/nope")[0] == 404
    status, body, _ = get("/alerts", Authorization="Bearer wrong")
    assert status == 200 and 'action="/login"' in body  # sent to the login page
    too_big = urllib.request.Request(
        console.url + "/login",
        data=b"token=" + b"x" * 10_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(too_big, timeout=30)
    assert refused.value.code == 413 and "larger than 4096 bytes" in refused.value.read().decode()
    json_login = urllib.request.Request(
        console.url + "/login", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(json_login, timeout=30)
    assert refused.value.code == 415
