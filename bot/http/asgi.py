"""The ASGI application: routes, a latency-recording middleware, health and metrics.

Routes: ``POST /slack/events`` (Bolt), ``POST /api/v1/predictions``, ``POST /api/v1/alertmanager``,
``POST /api/v1/outcomes``, ``POST /api/v1/policy/reload``, ``GET /healthz`` (database reachable), ``GET /livez``
(process up, no I/O), ``GET /metrics``. Anything else is 404 (405 for a known path with the wrong method) and
changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio.to_thread
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.http.ingest_routes import IngestApi
from bot.http.policy_route import PolicyHolder
from bot.http.slack_route import make_slack_endpoint
from bot.metrics import Metrics
from bot.service import NpoService

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


class LatencyMiddleware:
    """Records each HTTP request's duration (until the response start) per route and status class."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
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
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    policy_file: Path | None = None,
) -> ASGIApp:
    """The whole HTTP surface as one ASGI app (wrap nothing else around it). ``policy_file``: the file
    ``POST /api/v1/policy/reload`` re-reads (``NPO_POLICY_FILE``; None: the built-in policy, nothing to reload)."""
    ingest = IngestApi(
        service, token=ingest_token, max_body_bytes=max_body_bytes, policy=PolicyHolder(service, policy_file)
    )

    async def healthz(request: Request) -> Response:
        counts = await anyio.to_thread.run_sync(service.store.counts)
        return JSONResponse({"status": "ok", "outbox_pending": counts.get("outbox_pending", 0)})

    async def metrics_endpoint(request: Request) -> Response:
        dashboard = await anyio.to_thread.run_sync(service.dashboard)
        return PlainTextResponse(metrics.render(dashboard), media_type="text/plain; version=0.0.4")

    async def livez(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/slack/events", make_slack_endpoint(bolt, max_body_bytes), methods=["GET", "POST"]),
        Route("/api/v1/predictions", ingest.predictions, methods=["POST"]),
        Route("/api/v1/alertmanager", ingest.alertmanager, methods=["POST"]),
        Route("/api/v1/outcomes", ingest.outcomes, methods=["POST"]),
        Route("/api/v1/policy/reload", ingest.reload_policy, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return LatencyMiddleware(Starlette(routes=routes, lifespan=lifespan), metrics)
