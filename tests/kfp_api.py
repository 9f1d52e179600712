"""A Kubeflow Pipelines API (v2beta1, as the ``kfp`` 2 client calls it) on loopback, answering in the
shapes the KFP API server gives (written by hand from its API reference, not captured from a live
cluster). Every run POSTed to it is checked against kfp's own schemas (``tests/kfp_schema_check.py``,
in the kfp environment): a body they reject gets the ``400 InvalidArgument`` a real server gives.

Runs move through recorded states: ``outcomes[display_name]`` lists the states successive reads of the
run see (the last one stays); ``:terminate`` moves a run to ``CANCELING``, then ``CANCELED``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

CHECK = Path(__file__).with_name("kfp_schema_check.py")
CREATED_AT = "2025-06-02T10:00:00Z"
NEVER = "1970-01-01T00:00:00Z"

# The codes of google.rpc.Code that KFP's gRPC gateway puts in its error bodies.
INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED = 3, 5, 16


class Request(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


def error_answer(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    """The gateway's error body: ``error`` and ``message`` both carry the text."""
    return status, {"error": message, "code": code, "message": message, "details": []}


class RecordedKfp:
    def __init__(self, *, kfp_python: Path, token: str | None = None) -> None:
        """``kfp_python`` checks the POSTed runs; with ``token``, a request without ``Bearer <token>``
        is refused as a multi-user install refuses it."""
        self.kfp_python = kfp_python
        self.token = token
        self.host = ""
        self.requests: list[Request] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}
        """A failed run's error message, by display name."""
        self.rejected: list[str] = []
        self.lock = threading.Lock()

    def answer(self, request: Request) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(request)
            if request.path == "/apis/v2beta1/healthz":  # the client asks first when it has no namespace
                return 200, {
                    "commit_sha": "0f8b1e2",
                    "tag_name": "2.5.0",
                    "multi_user": self.token is not None,
                }
            if self.token is not None and request.authorization != f"Bearer {self.token}":
                return error_answer(401, UNAUTHENTICATED, "Unauthenticated: no valid bearer token")
            if request.path == "/apis/v2beta1/experiments":
                if request.method == "GET":
                    return 200, self._listed(self.experiments.values(), request.query, "experiments")
                if request.method == "POST":
                    return self._create_experiment(request.body)
            if request.path == "/apis/v2beta1/runs":
                if request.method == "GET":
                    return 200, self._listed(self._advance_all(), request.query, "runs")
                if request.method == "POST":
                    return self._create_run(request.body)
            if request.path.startswith("/apis/v2beta1/runs/") and request.method == "POST":
                run_id, _, action = request.path.removeprefix("/apis/v2beta1/runs/").partition(":")
                if action == "terminate" and run_id in self.runs:
                    self._set_state(self.runs[run_id], "CANCELING")
                    self.outcomes[self.runs[run_id]["display_name"]] = ["CANCELED"]
                    return 200, {}
                return error_answer(404, NOT_FOUND, f"Run {run_id} not found")
            return error_answer(404, NOT_FOUND, f"Not Found: {request.method} {request.path}")

    def _listed(self, items: Any, query: dict[str, str], key: str) -> dict[str, Any]:
        """A list answer: the items the filter's ``EQUALS`` predicates keep, in the namespace asked for.
        An empty list is ``{}``, as protobuf's JSON leaves empty fields out."""
        predicates = json.loads(query.get("filter") or "{}").get("predicates", [])
        namespace = query.get("namespace") or ""
        kept = [
            item
            for item in items
            if all(
                item.get(p["key"]) == p.get("stringValue", p.get("string_value"))
                for p in predicates
                if p.get("operation") in ("EQUALS", 1)
            )
            and (not namespace or self._namespace_of(item) == namespace)
        ]
        page = kept[: int(query.get("page_size") or 20)]
        return {key: page, "total_size": len(kept)} if page else {}

    def _namespace_of(self, item: dict[str, Any]) -> str:
        experiment = self.experiments.get(item.get("experiment_id", ""), item)
        return str(experiment.get("namespace", ""))

    def _create_experiment(self, body: dict[str, Any]) -> tuple[int, Any]:
        if not body.get("display_name"):
            return error_answer(400, INVALID_ARGUMENT, "Invalid input error: Experiment name is empty")
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "created_at": CREATED_AT,
            "last_run_created_at": NEVER,
            "namespace": body.get("namespace", ""),
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment

    def _create_run(self, body: dict[str, Any]) -> tuple[int, Any]:
        checked = subprocess.run(
            [str(self.kfp_python), str(CHECK), "run"],
            input=json.dumps(body),
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            self.rejected.append(checked.stderr.strip())
            return error_answer(400, INVALID_ARGUMENT, f"Invalid input error: {checked.stderr.strip()}")
        if body.get("experiment_id") not in self.experiments:
            return error_answer(404, NOT_FOUND, f"Experiment {body.get('experiment_id')} not found")
        run = {
            **body,
            "run_id": str(uuid.uuid4()),
            "storage_state": "AVAILABLE",
            "service_account": body.get("service_account") or "pipeline-runner",
            "created_at": CREATED_AT,
            "scheduled_at": CREATED_AT,
            "finished_at": NEVER,
            "state_history": [],
        }
        self._set_state(run, "PENDING")
        self.runs[run["run_id"]] = run
        return 200, run

    def _advance_all(self) -> list[dict[str, Any]]:
        """Each read of a run moves it to its next recorded state."""
        for run in self.runs.values():
            states = self.outcomes.setdefault(run["display_name"], ["RUNNING"])
            state = states.pop(0) if len(states) > 1 else states[0]
            if state != run["state"]:
                self._set_state(run, state)
        return list(self.runs.values())

    def _set_state(self, run: dict[str, Any], state: str) -> None:
        run["state"] = state
        run["state_history"].append({"update_time": CREATED_AT, "state": state})
        if state == "FAILED":
            message = self.errors.get(run["display_name"], "task train failed")
            run["error"] = {"code": 2, "message": message, "details": []}
        if state in ("SUCCEEDED", "FAILED", "CANCELED"):
            run["finished_at"] = "2025-06-02T10:04:12Z"


class _Handler(BaseHTTPRequestHandler):
    api: RecordedKfp

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        request = Request(
            self.command,
            unquote(parts.path),
            dict(parse_qsl(parts.query)),
            body,
            self.headers["Authorization"],
        )
        status, answer = self.api.answer(request)
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(api: RecordedKfp) -> Iterator[RecordedKfp]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"api": api}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    api.host = f"http://127.0.0.1:{server.server_port}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
