"""``sluice serve``: the HTTP feature server, speaking Feast's ``/get-online-features`` JSON.

Request, as Feast's feature server takes it::

    {"features": ["card_transaction_stats:txn_count_1h"], "entities": {"card_id": [1, 2]},
     "full_feature_names": false}

(``"feature_service": "fraud_model_v1"`` may replace ``features``). An on-demand view's request data
goes in ``entities`` beside the join keys, as with Feast, or in ``"request_data": {"field": [...]}``.
The response is Feast's: ``metadata.feature_names`` and one ``results`` entry per column with
values, statuses and event timestamps. ``POST /push`` takes Feast's push request
(``{"push_source_name": ..., "df": {column: [values]}, "to": ...}``) and hands the rows to the
stream worker (``streams.push``). ``/health`` answers 200 when Redis and the registry do, and
``/metrics`` serves Prometheus metrics, and ``/openapi.json`` describes it all (``online_store.openapi``).
An optional bearer token guards every route but ``/health`` and ``/openapi.json``; bodies and rows per
request are capped, and a request that takes longer than the timeout (a slow client's body, a stalled
store) gets 503 with the reason. Any bad request gets a 4xx whose JSON body says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from online_store.client import AsyncOnlineClient
from online_store.connection import OnlineStoreUnavailable
from online_store.on_demand import OnDemandError
from online_store.openapi import openapi
from online_store.reads import EntityRowError, UnknownFeatureError

__all__ = ["ServerSettings", "create_app"]


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Limits and access control of the feature server."""

    token: str | None = None
    """When set, requests must carry ``Authorization: Bearer <token>``."""
    max_body_bytes: int = 1 << 20
    """Larger request bodies get 413."""
    max_rows: int = 1000
    """Requests with more entity rows get 413."""
    request_timeout_s: float = 10.0
    """A request not answered within this (reading its body included) gets 503. A push answered so
    may still have reached Kafka: pushes are at least once, like every retried write."""


_PUBLIC = frozenset({"/health", "/openapi.json"})
"""Routes the bearer token does not guard: probes, and the API's description."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sluice_http_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sluice_http_request_seconds",
            "Time to answer /get-online-features.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.rows = Counter("sluice_http_entity_rows", "Entity rows read.", registry=self.registry)


def create_app(
    client: AsyncOnlineClient,
    settings: ServerSettings | None = None,
    *,
    pusher: Callable[[], Any] | None = None,
) -> Starlette:
    """The ASGI app; run it with ``uvicorn`` (``sluice serve`` does). ``pusher`` makes the
    ``streams.push.Pusher`` behind ``POST /push``, on the first push (it loads the repo, with Feast)."""
    settings = settings or ServerSettings()
    pushing: dict[str, Any] = {}
    push_lock = asyncio.Lock()
    metrics = _Metrics()
    expected = f"Bearer {settings.token}".encode() if settings.token else None

    def guarded(
        route: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if expected is not None and route not in _PUBLIC:
                    given = request.headers.get("authorization", "").encode()
                    if not hmac.compare_digest(given, expected):
                        raise _BadRequest(401, "missing or wrong bearer token in the Authorization header")
                response: Response = await asyncio.wait_for(handler(request), settings.request_timeout_s)
            except TimeoutError:
                response = _json(
                    {
                        "error": f"the request was not answered within {settings.request_timeout_s:g} s "
                        "(its body arrived too slowly, or a store stalled); try again"
                    },
                    status=503,
                )
            except _BadRequest as error:
                response = _json({"error": str(error)}, status=error.status)
                if error.status == 401:
                    response.headers["WWW-Authenticate"] = "Bearer"
            except OnlineStoreUnavailable as error:
                response = _json({"error": str(error)}, status=503)
            metrics.requests.labels(route, str(response.status_code)).inc()
            return response

        return endpoint

    async def get_online_features(request: Request) -> Response:
        started = time.perf_counter()
        body = _json_body(await _read_body(request, settings.max_body_bytes))
        features, feature_service, entities, full_names, request_data = _parse(body)
        rows = len(next(iter(entities.values()), []))
        if rows > settings.max_rows:
            raise _BadRequest(
                413, f"{rows} entity rows; this server takes at most {settings.max_rows} per request"
            )
        try:
            vectors = await client.read(
                entity_rows=entities,
                features=features,
                feature_service=feature_service,
                full_feature_names=full_names,
                request_data=request_data,
            )
        except (UnknownFeatureError, EntityRowError) as error:
            raise _BadRequest(400, str(error)) from None
        except OnDemandError as error:
            raise _BadRequest(422, str(error)) from None
        response = Response(orjson.dumps(vectors.to_feast_json()), media_type="application/json")
        metrics.rows.inc(rows)
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def push(request: Request) -> Response:
        from streams.push import PushError

        body = _json_body(await _read_body(request, settings.max_body_bytes))
        name, columns, to = _parse_push(body)
        rows = len(next(iter(columns.values()), []))
        if rows > settings.max_rows:
            raise _BadRequest(413, f"{rows} rows; this server takes at most {settings.max_rows} per push")
        if pusher is None:
            raise _BadRequest(404, "this server takes no pushes; `sluice serve` in a feature repo does")
        async with push_lock:
            if "pusher" not in pushing:
                try:
                    pushing["pusher"] = await asyncio.to_thread(pusher)
                except ValueError as error:  # the repo's definitions or config
                    raise OnlineStoreUnavailable(
                        f"cannot load the feature repo for pushes: {error}"
                    ) from None
        try:
            receipt = await asyncio.to_thread(pushing["pusher"].push, name, columns, to=to)
        except PushError as error:
            raise _BadRequest(400, str(error)) from None
        except Exception as error:  # Kafka: the rows were not acknowledged
            raise OnlineStoreUnavailable(f"the push was not written to Kafka: {error}") from None
        return _json(
            {
                "push_source_name": name,
                "rows": receipt.rows,
                "topic": receipt.topic,
                "last_offsets": {
                    str(partition): offset for partition, offset in receipt.last_offsets.items()
                },
            }
        )

    async def health(_: Request) -> Response:
        await client.ping()
        return _json({"status": "ok", "feature_views": len(client.catalog.views)})

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    description = orjson.dumps(openapi())

    async def openapi_json(_: Request) -> Response:
        return Response(description, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.close()
        if "pusher" in pushing:
            pushing["pusher"].close()

    routes = [
        Route("/get-online-features", guarded("/get-online-features", get_online_features), methods=["POST"]),
        Route("/push", guarded("/push", push), methods=["POST"]),
        Route("/health", guarded("/health", health), methods=["GET"]),
        Route("/metrics", guarded("/metrics", prometheus), methods=["GET"]),
        Route("/openapi.json", guarded("/openapi.json", openapi_json), methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BadRequest(413, f"request body of {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BadRequest(413, f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise _BadRequest(400, "empty body; send a JSON object with entities and features")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise _BadRequest(400, f"body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise _BadRequest(400, "body must be a JSON object with entities and features")
    return body


def _parse(
    body: dict[str, Any],
) -> tuple[list[str] | None, str | None, dict[str, list[Any]], bool, dict[str, list[Any]] | None]:
    fields = {"features", "feature_service", "entities", "full_feature_names", "request_data"}
    unknown = sorted(set(body) - fields)
    if unknown:
        raise _BadRequest(
            400, f"unknown field {unknown[0]!r}; expected features or feature_service, entities"
        )
    entities = body.get("entities")
    if not isinstance(entities, dict) or not entities:
        raise _BadRequest(
            400, 'entities must be an object of join key to list of values, e.g. {"card_id": [1]}'
        )
    for name, values in entities.items():
        if not isinstance(values, list):
            raise _BadRequest(400, f"entities.{name} must be a list of values")
    features = body.get("features")
    feature_service = body.get("feature_service")
    if features is not None and feature_service is not None and features:
        raise _BadRequest(400, "give features or feature_service, not both")
    if feature_service is not None:
        if not isinstance(feature_service, str):
            raise _BadRequest(400, "feature_service must be a string")
        features = None
    elif (
        not isinstance(features, list) or not features or not all(isinstance(item, str) for item in features)
    ):
        raise _BadRequest(400, 'features must be a non-empty list of "feature_view:feature" strings')
    full_names = body.get("full_feature_names", False)
    if not isinstance(full_names, bool):
        raise _BadRequest(400, "full_feature_names must be true or false")
    request_data = body.get("request_data")
    if request_data is not None and (
        not isinstance(request_data, dict)
        or not all(isinstance(values, list) for values in request_data.values())
    ):
        raise _BadRequest(400, 'request_data must be an object of field to list of values, e.g. {"x": [1]}')
    return features, feature_service, entities, full_names, request_data


def _json(content: dict[str, Any], *, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _parse_push(body: dict[str, Any]) -> tuple[str, dict[str, list[Any]], str]:
    """Feast's ``PushFeaturesRequest``: the source, the rows as a dict of columns, and ``to``."""
    unknown = sorted(
        set(body) - {"push_source_name", "df", "to", "allow_registry_cache", "transform_on_write"}
    )
    if unknown:
        raise _BadRequest(400, f"unknown field {unknown[0]!r}; expected push_source_name, df and to")
    name = body.get("push_source_name")
    if not isinstance(name, str) or not name:
        raise _BadRequest(400, "push_source_name must be the name of a PushSource")
    columns = body.get("df")
    if not isinstance(columns, dict) or not columns or not all(isinstance(v, list) for v in columns.values()):
        raise _BadRequest(400, 'df must be an object of column to list of values, e.g. {"card_id": [1]}')
    if len({len(values) for values in columns.values()}) > 1:
        raise _BadRequest(400, "the columns of df differ in length")
    to = body.get("to", "online")
    if not isinstance(to, str):
        raise _BadRequest(400, "to must be online, offline or online_and_offline")
    return name, columns, to
