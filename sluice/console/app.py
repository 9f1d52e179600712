"""The console's routes: sign-in, four pages and their details, each window's Evidently report.

Pages are rendered on the server (Jinja2, autoescaped: dead letters and job logs are untrusted text)
with one stylesheet and no JavaScript; only a window's Evidently report, which is Evidently's own
self-contained page, runs scripts. Every answer carries a strict Content-Security-Policy. A request for
something the stores do not hold gets a 404 page that says what is there; a bad request, a 4xx with
its reason.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sluice.console import pages
from sluice.console.auth import COOKIE, SESSION_S, safe_next, session_cookie, signed_in
from sluice.console.pages import NotFound, Sources, Unavailable

__all__ = ["ConsoleSettings", "create_console"]

HERE = Path(__file__).parent
PAGE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
REPORT_POLICY = (  # Evidently's report is one page with its scripts, styles and fonts inline
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, kw_only=True)
class ConsoleSettings:
    token: str
    """Signs a user in (the login form) or a script (``Authorization: Bearer <token>``)."""
    secure_cookie: bool = False
    """Mark the session cookie Secure: set when the console serves TLS."""
    max_body_bytes: int = 4096
    """The login form is the only body the console takes."""
    sample_every_s: float = 10.0
    """How often committed offsets are sampled for the ingest rates."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_console(sources: Sources, settings: ConsoleSettings) -> Starlette:
    """The console's ASGI app over ``sources``; ``sluice ui`` runs it with uvicorn."""
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    templates.filters.update(
        duration=_duration,
        when=_when,
        ago=_ago,
        number=_number,
        quote=lambda value: quote(str(value), safe=""),
    )
    templates.tests["unavailable"] = lambda value: isinstance(value, Unavailable)
    css = (HERE / "static" / "console.css").read_bytes()

    def render(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        page = templates.get_template(name).render(
            project=sources.config.project, path=request.url.path, **context
        )
        return HTMLResponse(page, status_code=status)

    def page(
        handler: Callable[[Request], Awaitable[Response]], *, public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not public and not signed_in(
                settings.token,
                cookie=request.cookies.get(COOKIE),
                authorization=request.headers.get("authorization"),
                now_s=time.time(),
            ):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            try:
                response = await handler(request)
            except NotFound as error:
                response = render("error.html", request, 404, title="Not found", message=str(error))
            except _BadRequest as error:
                response = render(
                    "error.html", request, error.status, title="Bad request", message=str(error)
                )
            response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
            return response

        return endpoint

    async def login_form(request: Request) -> Response:
        return render("login.html", request, next=safe_next(request.query_params.get("next")), wrong=False)

    async def login(request: Request) -> Response:
        form = await _form(request, settings.max_body_bytes)
        target = safe_next(form.get("next"))
        given = form.get("token", "")
        if not secrets.compare_digest(given.encode(), settings.token.encode()):
            return render("login.html", request, 401, next=target, wrong=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session_cookie(settings.token, now_s=time.time()),
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie,
            path="/",
        )
        return response

    async def logout(_: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=settings.secure_cookie
        )
        return response

    async def overview(request: Request) -> Response:
        return render("overview.html", request, **await pages.overview(sources))

    async def views(request: Request) -> Response:
        return render("views.html", request, specs=sources.specs)

    async def view(request: Request) -> Response:
        lookup = {key: value[:200] for key, value in request.query_params.items()}
        context = await pages.view_page(sources, request.path_params["name"], lookup)
        return render("view.html", request, 400 if context["problem"] else 200, **context)

    async def models(request: Request) -> Response:
        return render("models.html", request, **await pages.models_page(sources))

    async def model(request: Request) -> Response:
        context = await pages.model_page(
            sources, request.path_params["model"], request.query_params.get("version") or None
        )
        return render("model.html", request, **context)

    async def report(request: Request) -> Response:
        start = request.path_params["start"]
        if not start.isdigit():
            raise _BadRequest(400, f"the window start is epoch microseconds, not {start!r}")
        html = await pages.report_html(
            sources, request.path_params["model"], request.path_params["version"], int(start)
        )
        return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_POLICY})

    async def alerts(request: Request) -> Response:
        filters = {
            key: request.query_params.get(key, "")[:200]
            for key in ("model", "status", "severity", "job_state")
        }
        for key, allowed in _CHOICES.items():
            if filters[key] and filters[key] not in allowed:
                raise _BadRequest(400, f"{key} is one of {', '.join(allowed)}, not {filters[key]!r}")
        return render("alerts.html", request, choices=_CHOICES, **await pages.alerts_page(sources, filters))

    async def alert(request: Request) -> Response:
        return render("alert.html", request, **await pages.alert_page(sources, request.path_params["id"]))

    async def job(request: Request) -> Response:
        return render("job.html", request, **await pages.job_page(sources, request.path_params["id"]))

    async def stylesheet(_: Request) -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def not_found(request: Request, _: Exception) -> Response:
        return render("error.html", request, 404, title="Not found", message=f"no page at {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        import asyncio

        async def sample() -> None:
            while True:
                with contextlib.suppress(Exception):  # the overview shows why Kafka does not answer
                    await asyncio.to_thread(sources.sample_offsets)
                await asyncio.sleep(settings.sample_every_s)

        sampler = asyncio.create_task(sample())
        try:
            yield
        finally:
            sampler.cancel()
            await asyncio.to_thread(sources.kafka.close)
            if sources.online is not None:
                await sources.online.close()

    routes = [
        Route("/login", page(login_form, public=True), methods=["GET"]),
        Route("/login", page(login, public=True), methods=["POST"]),
        Route("/logout", page(logout, public=True), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/static/console.css", stylesheet, methods=["GET"]),
        Route("/", page(overview), methods=["GET"]),
        Route("/views", page(views), methods=["GET"]),
        Route("/views/{name}", page(view), methods=["GET"]),
        Route("/models", page(models), methods=["GET"]),
        Route("/models/{model}", page(model), methods=["GET"]),
        Route("/models/{model}/{version}/report/{start}", page(report), methods=["GET"]),
        Route("/alerts", page(alerts), methods=["GET"]),
        Route("/alerts/{id}", page(alert), methods=["GET"]),
        Route("/jobs/{id}", page(job), methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})


_CHOICES = {
    "status": ("firing", "resolved"),
    "severity": ("warning", "critical"),
    "job_state": ("queued", "running", "succeeded", "failed", "cancelled"),
}


async def _form(request: Request, limit: int) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise _BadRequest(415, "send the login form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BadRequest(413, f"the login form is larger than {limit} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as error:
        raise _BadRequest(400, f"the login form is not readable: {error}") from None
    return {key: values[0] for key, values in fields.items()}


def _when(micros: int | float | None, *, seconds: bool = False) -> str:
    if micros is None:
        return "-"
    moment = datetime.fromtimestamp(micros if seconds else micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _duration(span: timedelta) -> str:
    """A window's length as people say it: ``10 min``, ``1 h``, ``1 d 12 h``."""
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts) or "0 s"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    if abs(seconds) < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"
