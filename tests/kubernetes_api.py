"""A Kubernetes API server on loopback that answers from recorded responses, in the shapes a real API
server and the Kubeflow controllers give (written by hand, not captured from a live cluster). It checks
every body POSTed to it against the schemas (``tests/kubernetes_schemas.py``)."""

from __future__ import annotations

import copy
import json
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import jsonschema

from tests.kubernetes_schemas import validate

_SERVER_FIELDS = {"uid": "6f1c2a8e-3b1d-4c55-9f0e-2d7c8b9a1e40", "resourceVersion": "48211", "generation": 1}
_CREATED_AT = "2025-06-02T10:00:00Z"


def status_answer(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """The API server's ``Status`` answer to a failed request."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


class Request(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    body: Any


class RecordedApi:
    """A Kubernetes API server that answers the way a real one does, from recorded bodies.

    A POST to a collection checks the body with ``validate`` (a real server answers ``422 Invalid`` to a
    body its schema rejects), then creates the object: ``201`` echoing it with the fields the server
    sets, or ``409 AlreadyExists`` when the name is taken. A GET answers the stored object with the
    recorded ``status`` of its name, a DELETE removes it, and either answers ``404 NotFound`` for a
    name it does not hold. Pods and their logs are recorded by name.
    """

    def __init__(self) -> None:
        self.host = ""
        self.requests: list[Request] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.pod_logs: dict[str, str] = {}
        self.rejected: list[str] = []
        self.outage: dict[str, Any] | None = None
        """A ``Status`` that answers every request instead."""

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append(Request(method, path, query, body))
        if self.outage is not None:
            return self.outage["code"], self.outage
        parts = path.strip("/").split("/")
        # /api/v1/namespaces/<ns>/<plural>[/<name>[/log]] or /apis/<group>/<version>/namespaces/...
        group = "" if parts[0] == "api" else parts[1]
        plural, *rest = parts[parts.index("namespaces") + 2 :]
        name = rest[0] if rest else ""
        resource = f"{plural}.{group}" if group else plural
        if plural == "pods":
            return self._pods(name, query)
        if method == "POST":
            return self._create(path, body, resource, group, plural)
        if path not in self.objects:
            return 404, status_answer(
                404, "NotFound", f'{resource} "{name}" not found', name=name, group=group, kind=plural
            )
        if method == "DELETE":
            found = self.objects.pop(path)
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": group, "kind": plural, "uid": found["metadata"]["uid"]},
            }
        found = copy.deepcopy(self.objects[path])
        if name in self.statuses:
            found["status"] = self.statuses[name]
        return 200, found

    def _create(self, path: str, body: Any, resource: str, group: str, plural: str) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        try:
            validate(body)
        except jsonschema.ValidationError as error:
            self.rejected.append(f"{name}: {error.message}")
            return 422, status_answer(
                422, "Invalid", f'{body["kind"]} "{name}" is invalid: {error.message}', name=name
            )
        if f"{path}/{name}" in self.objects:
            message = f'{resource} "{name}" already exists'
            return 409, status_answer(409, "AlreadyExists", message, name=name, group=group, kind=plural)
        created = copy.deepcopy(body)
        created["metadata"].update(_SERVER_FIELDS, creationTimestamp=_CREATED_AT)
        self.objects[f"{path}/{name}"] = created
        return 201, created

    def _pods(self, name: str, query: dict[str, str]) -> tuple[int, Any]:
        if name:  # .../pods/<name>/log
            return 200, self.pod_logs[name]
        key, _, value = query["labelSelector"].partition("=")
        items = [pod for pod in self.pods if pod["metadata"]["labels"].get(key) == value]
        return 200, {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "48230"},
            "items": items,
        }


class Handler(BaseHTTPRequestHandler):
    api: RecordedApi

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        code, answer = self.api.answer(self.command, url.path, dict(parse_qsl(url.query)), body)
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
