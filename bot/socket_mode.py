"""``npo-bot socket``: the bot in Socket Mode, for workspaces that cannot give it a public request URL.

Slack's interactions, events and ``/npo`` arrive over a WebSocket the bot opens itself (``apps.connections.open``
with the app-level token ``SLACK_APP_TOKEN``, ``xapp-…``, scope ``connections:write``) instead of as signed HTTP
requests. They reach the *same* :class:`~slack_bolt.async_app.AsyncApp` that HTTP mode serves — every listener,
the event de-duplication and the store are shared — through slack-bolt's aiohttp Socket Mode handler. Bolt skips
signature checks in Socket Mode (the WebSocket is authenticated by the token instead).

Everything else runs as in ``npo-bot serve``: the ASGI app on ``NPO_HOST:NPO_PORT`` (ingest API, health, metrics;
its lifespan starts the delivery worker and the poller), on the same event loop as the WebSocket. Ctrl-C or
SIGTERM stops both; the database stays consistent (every answer was stored before it was acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import uvicorn
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import Bot, build_bot
from bot.config import Settings
from bot.serve import StopSignals, uvicorn_config

log = logging.getLogger(__name__)

__all__ = ["SocketModeError", "SocketModeService", "socket_mode"]

# apps.connections.open errors that no retry can fix (the SDK's client would retry them forever).
PERMANENT_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "account_inactive", "token_revoked", "token_expired"}
)


class SocketModeError(RuntimeError):
    """Socket Mode cannot start (the app-level token was refused)."""


class SocketModeService:
    """The bot's HTTP service plus a Socket Mode connection, on one event loop.

    :meth:`run` serves until :meth:`stop` (or SIGINT/SIGTERM when run on the main thread); :meth:`start_thread`
    runs it on a background thread instead (tests). ``http_port`` is the bound HTTP port once started.
    """

    def __init__(self, bot: Bot, *, log_level: str = "info", ping_interval: float = 10.0) -> None:
        if not bot.settings.slack_app_token:
            raise ValueError("SLACK_APP_TOKEN (an xapp- app-level token) is required for Socket Mode")
        self.bot = bot
        self.settings = bot.settings
        self.log_level = log_level
        self.ping_interval = ping_interval
        self.connected = threading.Event()
        self.http_port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.stops: StopSignals | None = None  # the process's stop-signal handling, told of the server it creates

    def _web_client(self) -> AsyncWebClient:
        return AsyncWebClient(base_url=self.settings.slack_api_url, timeout=int(max(1, self.settings.slack_timeout_s)))

    async def check_app_token(self) -> None:
        """Ask ``apps.connections.open`` once: a refused token raises :class:`SocketModeError` at once instead of
        the SDK's endless reconnecting. Other failures (Slack unreachable) are left to the SDK's retries."""
        try:
            await self._web_client().apps_connections_open(app_token=self.settings.slack_app_token)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in PERMANENT_ERRORS:
                raise SocketModeError(f"SLACK_APP_TOKEN was refused by apps.connections.open: {error}") from None

    def _handler(self) -> AsyncSocketModeHandler:
        web_client = self._web_client()
        return AsyncSocketModeHandler(
            self.bot.bolt,
            self.settings.slack_app_token,
            logger=logging.getLogger("bot.slack.socket_mode"),
            web_client=web_client,
            ping_interval=self.ping_interval,
        )

    async def run(self) -> None:
        """Open the WebSocket, then serve HTTP until told to stop; closes the WebSocket on the way out."""
        config = uvicorn_config(self.bot.asgi, self.settings.host, self.settings.port, log_level=self.log_level)
        server = uvicorn.Server(config)
        self._server = server
        if self.stops is not None:
            self.stops.server = server
        await self.check_app_token()
        handler = self._handler()
        await handler.connect_async()
        self.connected.set()
        log.info("Socket Mode connected (apps.connections.open via %s)", self.settings.slack_api_url)
        serving = asyncio.get_running_loop().create_task(server.serve())
        try:
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if server.started and server.servers:
                self.http_port = int(server.servers[0].sockets[0].getsockname()[1])
                log.info("HTTP (ingest, health, metrics) on http://%s:%d", self.settings.host, self.http_port)
            await serving
        finally:
            self.connected.clear()
            await handler.close_async()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe); with :meth:`start_thread`, also wait for it."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    def start_thread(self, timeout: float = 15.0) -> SocketModeService:
        """Run on a background thread; returns once the WebSocket is open and HTTP is listening."""

        def target() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:  # reported by start_thread's wait below
                self._error = exc
                log.exception("Socket Mode service failed")

        self._thread = threading.Thread(target=target, name="npo-socket-mode", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self.connected.is_set() and self.http_port is not None):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"Socket Mode service did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("Socket Mode service did not start in time")
            time.sleep(0.01)
        return self


def socket_mode(settings: Settings) -> int:
    """``npo-bot socket``: run until SIGINT/SIGTERM. Returns the exit status (2 when the app token is missing)."""
    if not settings.slack_app_token:
        log.error("SLACK_APP_TOKEN: is required for Socket Mode (an app-level token starting with xapp-)")
        return 2
    bot = build_bot(settings)
    service = SocketModeService(bot)
    with StopSignals() as stops:  # SIGTERM / Ctrl-C: the server stops, then the bot closes (as `serve` does)
        service.stops = stops
        try:
            asyncio.run(service.run())
        except SocketModeError as exc:
            log.error("%s", exc)
            return 2
        finally:
            stops.closing()
            bot.close()
    names = sorted({signal.Signals(sig).name for sig in stops.received})
    log.info("npo-bot stopped%s", f" ({', '.join(names)})" if names else "")
    return 0
