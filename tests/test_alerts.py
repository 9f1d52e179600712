"""Alert rules, the SQLite alert store, and webhook delivery, against a real HTTP receiver."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.monitoring_config import WebhookConfig
from monitors.alerts.delivery import Deliverer, WebhookSink
from monitors.alerts.rules import AlertRules
from monitors.alerts.store import AlertStore
from monitors.database import open_store
from monitors.drift.detector import FeatureScore, WindowReport
from tests.receiver import Receiver
from tests.streaming import sluice

WINDOW = 5_000_000  # 5 s windows, in µs


def window(index: int, *, drifting: dict[str, bool], model: str = "fraud") -> WindowReport:
    """Window ``index`` of model ``model``: each named feature drifts (p = 0.001) or not (p = 0.4)."""
    scores = [
        FeatureScore(
            feature=name,
            metric="ks",
            against="reference",
            score=0.001 if drift else 0.4,
            threshold=0.05,
            drift=drift,
        )
        for name, drift in drifting.items()
    ]
    share = sum(drifting.values()) / len(drifting)
    return WindowReport(
        model=model,
        version="1",
        window_start_us=index * WINDOW,
        window_end_us=(index + 1) * WINDOW,
        events=500,
        scores=scores,
        drift_share=share,
        dataset_drift=share >= 0.5,
    )


def rules(*, consecutive: int = 2, cooldown_windows: int = 0) -> AlertRules:
    return AlertRules(
        consecutive_windows=consecutive,
        cooldown_us=cooldown_windows * WINDOW,
        critical_share=0.5,
        report_url=lambda report: f"file:///reports/{report.window_start_us}.html",
    )


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    return AlertStore(engine=open_store(f"sqlite:///{tmp_path / 'sluice.db'}"))


def run(store: AlertStore, alert_rules: AlertRules, pattern: str, feature: str = "amount") -> list[str]:
    """Feed one window per character ('D' drifts, '.' does not); returns what each window changed."""
    changes = []
    for index, mark in enumerate(pattern):
        report = window(index, drifting={feature: mark == "D", "count": False, "country": False})
        changed = store.apply(report, alert_rules, payloads=lambda alert: [], now=0.0)
        changes.append(",".join(alert.status for alert in changed) or "-")
    return changes


def test_an_alert_needs_n_drifting_windows_in_a_row_and_fires_once_per_incident(store: AlertStore) -> None:
    # D . D D D D . : the lone drifting window is not enough; the run of four fires once, then resolves.
    assert run(store, rules(consecutive=2), "D.DDDD.") == ["-", "-", "-", "firing", "-", "-", "resolved"]
    [alert] = store.alerts()
    assert (alert.status, alert.feature, alert.metric, alert.window_start_us) == (
        "resolved",
        "amount",
        "ks",
        3 * WINDOW,
    )
    assert alert.resolved_window_start_us == 6 * WINDOW
    assert alert.severity == "warning"  # one of three features drifted: under the critical share
    assert alert.value == 0.4 and alert.threshold == 0.05  # the value of the window that resolved it


def test_cooldown_keeps_a_resolved_alert_quiet_and_then_lets_it_fire_again(store: AlertStore) -> None:
    # Fires at 1, resolves at 2 (ends at 15 s); cooldown 3 windows: the drift at 3 and 4 stays quiet
    # (20 s and 25 s end within 15 s of it), the one at 5 (30 s end) fires a new incident.
    assert run(store, rules(consecutive=1, cooldown_windows=3), ".D.DDD") == [
        "-", "firing", "resolved", "-", "-", "firing",
    ]  # fmt: skip
    firing, resolved = store.alerts()
    assert firing.status == "firing" and firing.window_start_us == 5 * WINDOW
    assert resolved.status == "resolved" and resolved.id != firing.id
    assert firing.fingerprint == resolved.fingerprint  # same feature and metric: same fingerprint


def test_a_restart_continues_the_streak_and_a_replayed_window_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    first = AlertStore(engine=open_store(url))
    assert run(first, rules(consecutive=3), "DD") == ["-", "-"]
    second = AlertStore(engine=open_store(url))  # a new process on the same file
    report = window(1, drifting={"amount": True, "count": False})
    assert second.apply(report, rules(consecutive=3), payloads=lambda alert: [], now=0.0) == []  # a replay
    third = window(2, drifting={"amount": True, "count": False})
    [alert] = second.apply(third, rules(consecutive=3), payloads=lambda alert: [], now=0.0)
    assert alert.status == "firing" and alert.window_start_us == 2 * WINDOW


def test_a_window_without_values_neither_breaks_nor_extends_a_streak(store: AlertStore) -> None:
    alert_rules = rules(consecutive=2)
    store.apply(window(0, drifting={"amount": True}), alert_rules, payloads=lambda alert: [], now=0.0)
    empty = window(1, drifting={"amount": False})
    empty.scores[0].__dict__["score"] = float("nan")  # no values for the feature in this window
    assert store.apply(empty, alert_rules, payloads=lambda alert: [], now=0.0) == []
    [alert] = store.apply(
        window(2, drifting={"amount": True}), alert_rules, payloads=lambda alert: [], now=0.0
    )
    assert alert.status == "firing" and alert.severity == "critical"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def webhooks(receiver: Receiver) -> list[WebhookSink]:
    return [
        WebhookSink(WebhookConfig(kind="slack", url=f"{receiver.url}/slack")),
        WebhookSink(
            WebhookConfig(
                kind="alertmanager", url=f"{receiver.url}/am", headers={"Authorization": "Bearer s3cret"}
            )
        ),
        WebhookSink(WebhookConfig(kind="cloudevents", url=f"{receiver.url}/ce", name="events")),
    ]


def test_webhooks_receive_slack_alertmanager_and_cloudevents_payloads(
    store: AlertStore, receiver: Receiver
) -> None:
    deliverer = Deliverer(store=store, sinks=webhooks(receiver))
    alert_rules = rules(consecutive=1)
    for index, drift in enumerate([True, False]):  # fires, then resolves
        store.apply(
            window(index, drifting={"amount": drift}), alert_rules, payloads=deliverer.payloads, now=0.0
        )
    assert deliverer.deliver_due() == 3  # the firing changes; each resolved one waits for its firing
    assert deliverer.deliver_due() == 3
    by_path: dict[str, list[dict]] = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(request.json())

    firing, resolved = by_path["/slack"]
    assert firing["text"].startswith(":rotating_light: [FIRING] critical: fraud 1: feature amount drifts")
    assert resolved["text"].startswith(":white_check_mark: [RESOLVED]")
    assert firing["blocks"][0]["type"] == "section"

    firing, resolved = by_path["/am"]
    assert firing["version"] == "4" and firing["status"] == "firing" and resolved["status"] == "resolved"
    [item] = firing["alerts"]
    assert set(item) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert item["labels"] == {
        "alertname": "FeatureDrift", "model": "fraud", "version": "1", "feature": "amount", "metric": "ks",
        "severity": "critical",
    }  # fmt: skip
    assert item["startsAt"] == "1970-01-01T00:00:05.000000Z" and item["endsAt"] == "0001-01-01T00:00:00Z"
    assert resolved["alerts"][0]["endsAt"] == "1970-01-01T00:00:05.000000Z"
    assert item["fingerprint"] == resolved["alerts"][0]["fingerprint"]
    assert item["generatorURL"] == "file:///reports/0.html"
    am_headers = next(request.headers for request in receiver.requests if request.path == "/am")
    assert am_headers["Authorization"] == "Bearer s3cret"

    firing, resolved = by_path["/ce"]
    assert firing["specversion"] == "1.0" and firing["type"] == "io.sluice.alert.firing"
    assert resolved["type"] == "io.sluice.alert.resolved" and firing["id"] != resolved["id"]
    assert firing["data"]["feature"] == "amount" and firing["data"]["threshold"] == 0.05
    ce_headers = next(request.headers for request in receiver.requests if request.path == "/ce")
    assert ce_headers["Content-Type"] == "application/cloudevents+json"
    assert store.pending() == 0


def test_a_failed_webhook_is_retried_with_backoff_and_after_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    with socket.socket() as probe:  # a port nobody listens on yet: the receiver is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = WebhookConfig(kind="alertmanager", url=f"http://127.0.0.1:{port}/am", timeout_s=2)
    now = [1000.0]
    store = AlertStore(engine=open_store(url))
    deliverer = Deliverer(store=store, sinks=[WebhookSink(target)], retry_initial_s=10, clock=lambda: now[0])
    store.apply(
        window(0, drifting={"amount": True}), rules(consecutive=1), payloads=deliverer.payloads, now=now[0]
    )
    assert deliverer.deliver_due() == 0
    now[0] += 5
    assert deliverer.deliver_due() == 0 and len(store.attempts(1)) == 1  # not due again before 10 s
    now[0] += 10
    assert deliverer.deliver_due() == 0  # second failure; the next wait doubles to 20 s
    [pending] = store.deliveries()
    assert pending.state == "pending" and pending.attempts == 2
    assert pending.next_attempt_at == now[0] + 20

    # The monitor restarts; meanwhile the receiver came up, and refuses once more before accepting.
    receiver = Receiver(failures=1).start(port=port)
    try:
        restarted = AlertStore(engine=open_store(url))
        later = Deliverer(
            store=restarted, sinks=[WebhookSink(target)], retry_initial_s=10, clock=lambda: now[0]
        )
        now[0] += 20
        assert later.deliver_due() == 0  # 503
        now[0] += 40
        assert later.deliver_due() == 1
    finally:
        receiver.stop()
    [done] = restarted.deliveries()
    assert done.state == "delivered" and done.attempts == 4
    attempts = restarted.attempts(done.id)
    assert [attempt.ok for attempt in attempts] == [False, False, False, True]
    assert "ConnectionRefusedError" in attempts[0].detail or "URLError" in attempts[0].detail
    assert attempts[2].detail.startswith("HTTP 503") and attempts[3].detail == "HTTP 200"
    # The same bytes every time: rendered once when queued.
    assert receiver.requests[0].body == receiver.requests[1].body


def test_sluice_alerts_list_shows_alerts_and_why_a_delivery_is_pending(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = AlertStore(engine=open_store(f"sqlite:///{state / 'sluice.db'}"))
    down = WebhookSink(
        WebhookConfig(kind="slack", url="http://127.0.0.1:9/hook", name="team-slack", timeout_s=1)
    )
    deliverer = Deliverer(store=store, sinks=[down])
    store.apply(
        window(0, drifting={"amount": True}), rules(consecutive=1), payloads=deliverer.payloads, now=0.0
    )
    deliverer.deliver_due()
    listed = sluice(tmp_path, "alerts", "list", env={"SLUICE_STATE_DIR": str(state)})
    assert listed.returncode == 0, listed.stderr
    first, pending = listed.stdout.splitlines()
    assert first.startswith(
        "firing   critical fraud 1 amount ks=0.001 (threshold 0.05) window 1970-01-01 00:00:00"
    )
    assert first.endswith("deliveries 0/1 id " + store.alerts()[0].id)
    assert pending.startswith("    pending to team-slack after 1 attempts: URLError")
    assert sluice(
        tmp_path, "alerts", "list", "--status", "resolved", env={"SLUICE_STATE_DIR": str(state)}
    ).stdout == ("no alerts\n")


def test_resolved_waits_for_its_firing_and_a_redirect_or_garbled_reply_is_a_failed_attempt(
    store: AlertStore, receiver: Receiver
) -> None:
    import http.server
    import threading

    class Odd(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", f"{receiver.url}/elsewhere")
                self.end_headers()
            else:
                self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")  # a status line http.client cannot parse

        def log_message(self, *args: object) -> None:
            pass

    odd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=odd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{odd.server_address[1]}"
    moved = WebhookSink(
        WebhookConfig(kind="slack", url=f"{base}/moved", name="moved", headers={"X-Token": "t"})
    )
    garbled = WebhookSink(WebhookConfig(kind="slack", url=f"{base}/garbled", name="garbled"))
    now = [0.0]
    deliverer = Deliverer(store=store, sinks=[moved, garbled], retry_initial_s=100, clock=lambda: now[0])
    alert_rules = rules(consecutive=1)
    store.apply(window(0, drifting={"amount": True}), alert_rules, payloads=deliverer.payloads, now=0.0)
    now[0] = 50.0
    store.apply(window(1, drifting={"amount": False}), alert_rules, payloads=deliverer.payloads, now=50.0)
    try:
        assert deliverer.deliver_due() == 0
    finally:
        odd.shutdown()
        odd.server_close()
    details = {
        item.sink: store.attempts(item.id) for item in store.deliveries() if item.alert_status == "firing"
    }
    assert details["moved"][0].detail.startswith("HTTP 302")
    assert details["garbled"][0].detail.startswith("BadStatusLine")
    assert receiver.requests == []  # the redirect was not followed, so the token went nowhere else
    # The resolved changes are due (queued at 50 s), but wait behind their firing ones (next try at 100 s).
    assert [(item.sink, item.alert_status, item.attempts) for item in store.deliveries()] == [
        ("moved", "firing", 1), ("garbled", "firing", 1),
        ("moved", "resolved", 0), ("garbled", "resolved", 0),
    ]  # fmt: skip
    assert store.due(now=60.0) == []


def test_the_package_keeps_subscribe_a_function_after_its_module_is_imported() -> None:
    import importlib

    from monitors import alerts

    importlib.import_module("monitors.alerts.subscription")
    assert callable(alerts.subscribe) and callable(alerts.on_alert)
    assert alerts.subscribe.__module__ == "monitors.alerts.subscription"


def test_an_unusable_store_url_is_a_one_line_error_without_the_password(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sluice.yaml").write_text('alerts: {store_url: "postgresql://u:secret@127.0.0.1:1/db"}\n')
    for command in (("alerts", "list"), ("jobs", "list")):
        failed = sluice(repo, *command)
        assert failed.returncode == 1, failed.stdout
        assert "Traceback" not in failed.stderr and "secret" not in failed.stderr
        assert "postgresql://u:***@127.0.0.1:1/db" in failed.stderr
        # Without psycopg (not a dependency) the driver is missing; with it, nothing listens on port 1.
        assert "install the database driver" in failed.stderr or "cannot open the store" in failed.stderr


def test_a_webhook_that_accepts_and_never_answers_does_not_hold_up_the_other_sinks(
    store: AlertStore, receiver: Receiver
) -> None:
    # A receiver that accepts the connection, reads nothing and never answers: the webhook's attempt
    # waits its whole timeout (30 s here). The other sinks' lanes deliver meanwhile.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True)
    accepting.start()
    stuck = WebhookSink(
        WebhookConfig(kind="alertmanager", url=f"http://127.0.0.1:{silent.getsockname()[1]}/am", timeout_s=30)
    )
    deliverer = Deliverer(store=store, sinks=[stuck, *webhooks(receiver)])
    store.apply(
        window(0, drifting={"amount": True}), rules(consecutive=1), payloads=deliverer.payloads, now=0.0
    )
    started = time.monotonic()
    deliverer.start(interval_s=0.1)
    try:
        while {d.sink for d in store.deliveries() if d.state == "delivered"} != {
            s.name for s in webhooks(receiver)
        }:
            assert time.monotonic() - started < 10, store.deliveries()
            time.sleep(0.05)
        accepting.join(5)
        assert held, "the silent receiver was never called"
        # The three others are in; the silent one's first attempt is still waiting for an answer.
        [waiting] = [d for d in store.deliveries() if d.sink == stuck.name]
        assert waiting.state == "pending" and waiting.attempts == 0
        assert time.monotonic() - started < 10
    finally:
        for connection in held:
            connection.close()  # the attempt fails now, and its lane can stop
        silent.close()
        deliverer.stop(timeout_s=10)
    [failed] = [d for d in store.deliveries() if d.sink == stuck.name]
    assert failed.state == "pending" and failed.attempts == 1  # kept, to be tried again
