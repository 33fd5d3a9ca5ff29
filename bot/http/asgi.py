"""The ASGI application: routes, a latency-recording middleware, health and metrics.

Routes: ``POST /slack/events`` (Bolt), ``POST /api/v1/predictions``, ``POST /api/v1/alertmanager`` (``PUT`` the
same: a Grafana contact point may be set to it),
``POST /api/v1/outcomes``, ``POST /api/v1/policy/reload``, ``GET /healthz`` (the database file is still there, may
be written by this process and answers a read: 200 ``{"status": "ok", "outbox_pending"}``, else 503
``{"status": "error", "error"}``), ``GET /livez`` (process up, no I/O), ``GET /metrics`` (``npo_database_up 0`` and
only the process's own figures when the database cannot be read). The three probes are never cached
(``Cache-Control: no-store``) and read on threads of their own. Anything else is 404 (405 for a known path with
the wrong method) and changes nothing; no path is redirected.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio.to_thread
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.http.body import error
from bot.http.ingest_routes import IngestApi
from bot.http.policy_route import PolicyHolder
from bot.http.slack_route import make_slack_endpoint
from bot.metrics import Metrics
from bot.service import NpoService
from bot.slack.blocks import Dashboard
from storage import StorageError

log = logging.getLogger(__name__)
PROBE_THREADS = 4  # concurrent /healthz and /metrics reads (kubelet probes, Prometheus replicas)
NO_STORE = {"Cache-Control": "no-store"}  # a probe's answer is only true now: no proxy may keep it
EXPOSITION_TYPE = "text/plain; version=0.0.4"  # Starlette adds "; charset=utf-8"
KNOWN_ROUTES = frozenset(
    {
        "/slack/events",
        "/api/v1/predictions",
        "/api/v1/alertmanager",
        "/api/v1/outcomes",
        "/api/v1/policy/reload",
        "/healthz",
        "/livez",
        "/metrics",
    }
)


INGEST_ROUTES = frozenset(path for path in KNOWN_ROUTES if path.startswith("/api/"))
SLASH_SERVED = INGEST_ROUTES | {"/slack/events"}  # served with a trailing slash too (LatencyMiddleware)


async def http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as every other error: JSON ``{"error", "field"}`` (405 keeps its ``Allow`` header)."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = ", ".join(sorted(filter(None, headers.get("Allow", "").split(", "))))  # Starlette's: a set's order
        headers["Allow"] = allowed
        response = error(405, f"method {request.method} not allowed here (allowed: {allowed})", "(method)")
    elif exc.status_code == 404:
        response = error(404, f"no such route: {request.url.path}", "(path)")
    else:
        response = error(exc.status_code, str(exc.detail), "(request)")
    response.headers.update(headers)
    return response


class LatencyMiddleware:
    """Records each HTTP request's duration (until the response start) per route and status class.

    An ingest route's or ``/slack/events``'s path with a trailing slash (``/api/v1/predictions/``, a common slip in
    a webhook URL or in Slack's Request URL) is served as the route itself: Starlette would answer 307, which
    stores nothing, which ``curl`` without ``-L`` takes for success, and whose ``Location`` is built from the Host
    header and the scheme uvicorn sees (its redirects are off: any other path with a slash is 404)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        if path.endswith("/") and path[:-1] in SLASH_SERVED:
            path = path[:-1]
            scope = {**scope, "path": path}
        route = path if path in KNOWN_ROUTES else "other"

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.observe_request(route, int(message["status"]), time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, timed_send)


def build_asgi_app(
    *,
    service: NpoService,
    bolt: AsyncApp,
    metrics: Metrics,
    ingest_token: str,
    max_body_bytes: int,
    body_timeout_s: float = 30.0,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    policy_file: Path | None = None,
) -> ASGIApp:
    """The whole HTTP surface as one ASGI app (wrap nothing else around it). ``policy_file``: the file
    ``POST /api/v1/policy/reload`` re-reads (``NPO_POLICY_FILE``; None: the built-in policy, nothing to reload);
    ``body_timeout_s``: how long a request body may send nothing before it is answered 408."""
    ingest = IngestApi(
        service,
        token=ingest_token,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        policy=PolicyHolder(service, policy_file),
    )

    # The probes' own worker threads: on the default pool (40 threads) they would wait behind ingest requests
    # that wait for another connection's write lock, though a read never waits for a writer (WAL).
    probe_threads = anyio.CapacityLimiter(PROBE_THREADS)

    async def healthz(request: Request) -> Response:
        try:
            pending = await anyio.to_thread.run_sync(service.store.health, limiter=probe_threads)
        except (sqlite3.Error, StorageError) as exc:
            log.error("/healthz: the database is not usable: %s", exc)
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503, headers=NO_STORE)
        return JSONResponse({"status": "ok", "outbox_pending": pending}, headers=NO_STORE)

    def read_dashboard() -> Dashboard | None:
        try:
            service.store.health(writable=False)  # a database that can be read but not written: figures true
            return service.dashboard()
        except (sqlite3.Error, StorageError) as exc:
            log.error("/metrics: the database is not usable (npo_database_up 0): %s", exc)
            return None

    async def metrics_endpoint(request: Request) -> Response:
        dashboard = await anyio.to_thread.run_sync(read_dashboard, limiter=probe_threads)
        return PlainTextResponse(metrics.render(dashboard), media_type=EXPOSITION_TYPE, headers=NO_STORE)

    async def livez(request: Request) -> Response:
        return PlainTextResponse("ok", headers=NO_STORE)

    routes = [
        Route("/slack/events", make_slack_endpoint(bolt, max_body_bytes, body_timeout_s), methods=["POST"]),
        Route("/api/v1/predictions", ingest.predictions, methods=["POST"]),
        # PUT as well: Grafana's webhook contact point may be set to send the same notification with it.
        Route("/api/v1/alertmanager", ingest.alertmanager, methods=["POST", "PUT"]),
        Route("/api/v1/outcomes", ingest.outcomes, methods=["POST"]),
        Route("/api/v1/policy/reload", ingest.reload_policy, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.router.redirect_slashes = False  # a 307 to a Location built from the Host header: 404 instead
    return LatencyMiddleware(app, metrics)
