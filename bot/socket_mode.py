"""``npo-bot socket``: the bot in Socket Mode, for workspaces that cannot give it a public request URL.

Slack's interactions, events and ``/npo`` arrive over a WebSocket the bot opens itself (``apps.connections.open``
with the app-level token ``SLACK_APP_TOKEN``, ``xapp-…``, scope ``connections:write``) instead of as signed HTTP
requests. They reach the *same* :class:`~slack_bolt.async_app.AsyncApp` that HTTP mode serves — every listener,
the event de-duplication and the store are shared — through Bolt's Socket Mode dispatch and slack-sdk's aiohttp
Socket Mode client. Bolt skips signature checks in Socket Mode (the WebSocket is authenticated by the token instead).

Everything else runs as in ``npo-bot serve``: the ASGI app on ``NPO_HOST:NPO_PORT`` (ingest API, health, metrics;
its lifespan starts the delivery worker and the poller), on the same event loop as the WebSocket. Ctrl-C or
SIGTERM stops both, also while the first connection is still being tried; the database stays consistent (every
answer was stored before it was acknowledged). Envelopes being handled at a stop are finished and acknowledged
before the WebSocket closes (at most 10 s; a second Ctrl-C does not wait), as HTTP mode finishes requests in flight.
An acknowledgement with no open connection to go on (the connection ended and is being reopened) waits for the new
one at most 3 s (``ACK_CONNECTION_WAIT_S``), not at all at a stop, then is given up in one warning line: Slack sends
the envelope again.

Connecting (:class:`SocketModeClient`, slack-sdk's client with its connecting replaced): every attempt opens a
*fresh* URL from ``apps.connections.open`` (a URL is good for one connection; a handshake not answered within
``NPO_SLACK_TIMEOUT_S`` is a failed attempt, as a refused one); a failed attempt is one warning line
and the next waits 1 s, 2 s, 4 s … up to 60 s (a 429's ``Retry-After`` when longer, at most 5 minutes), without
limit, until Slack answers; an app-level token Slack refuses (revoked, invalid, …), or an HTTP 404
(``SLACK_API_URL`` is not a Web API that offers Socket Mode), ends the service with exit status 2 instead, and so
does Slack's ``disconnect`` with reason ``link_disabled`` (Socket Mode was turned off for the app: no connection
would bring envelopes; those in hand are finished and acknowledged first, as at a stop). A drop
of the connection (a close frame or Slack's ``disconnect`` envelope: at once; a TCP connection that died: once the
ping finds it, within about half a minute) is followed by a reconnection: at once after a connection that lasted
10 s or more (``SHORT_LIVED_S``), else after a wait that grows as after failed attempts (with jitter: half to all of
1 s, 2 s, 4 s … up to 60 s), so that connections a proxy or Slack accepts and drops at once are not reopened
hundreds of times a second; a connection that lasts starts the waits over. Envelopes Slack sends again (not
acknowledged in time) are recorded once: clicks and submissions by their request id, events by ``event_id``. A
message that is not a well-formed envelope is logged in one line and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import uvicorn
from slack_bolt.adapter.socket_mode.async_internals import send_async_response
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient as SdkSocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import Bot
from bot.config import Settings, masked_url
from bot.delivery import RETRY_AFTER_CAP_S  # the same cap as posts: Slack's own waits are under a minute
from bot.http.slack_shape import shape_problem
from bot.serve import StopSignals, build_holding, claim_address, forced_stop_shuts_down, uvicorn_config
from bot.slack.log_redaction import redact_slack_logs
from bot.slack.payloads import ENVELOPE_ID_HEADER

log = logging.getLogger(__name__)

__all__ = ["SocketModeClient", "SocketModeError", "SocketModeService", "socket_mode"]

# apps.connections.open errors that no retry can fix: the service stops (exit status 2) instead of retrying. All are
# in the method's documented errors, or (team_disabled, user_removed_from_team) among those Slack's own Node Socket
# Mode client gives up on at start; those an administrator may lift or that pass (ekm_access_denied, access_denied,
# accesslimited, org_login_required, team_added_to_org, …) are retried like any other failure.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "account_inactive",
        "team_disabled",
        "user_removed_from_team",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "missing_args",  # no app-level token reached Slack
        "forbidden_team",  # the workspace cannot use Socket Mode
        "no_permission",
        "is_bot",
        "enterprise_is_restricted",
        "method_deprecated",
        "deprecated_endpoint",
    }
)
# Slack's ``disconnect`` reason when an app has more WebSocket connections open than it allows (10 per app): one
# process too many on the same app token, which an operator has to stop (a new connection still follows, backed off).
TOO_MANY_WEBSOCKETS = "too_many_websockets"
MAX_CONNECTIONS_PER_APP = 10
# Slack's ``disconnect`` reason when Socket Mode was turned off for the app: a new connection would bring nothing, so
# the service stops (exit status 2) as for a refused token, once the envelopes in hand are finished and acknowledged.
LINK_DISABLED = "link_disabled"
LINK_DISABLED_PROBLEM = (
    "Slack turned Socket Mode off for this app (disconnect: link_disabled), so no connection will bring its clicks, "
    "commands or events; turn Socket Mode on again in the app's settings (Socket Mode), or run `npo-bot serve` "
    "with a request URL Slack can reach"
)
FINISH_TIMEOUT_S = (
    10.0  # on a stop, the longest wait for envelopes being handled (deploy/npo-bot.service allows for it)
)
RATE_LIMITED_WAIT_S = 30.0  # a 429 without Retry-After (slack-sdk's own default for this method)
# A connection that ends sooner than this (Slack's last for hours) is reopened only after a wait, growing as after
# failed attempts: a proxy or Slack edge that accepts and drops every connection is not hammered.
SHORT_LIVED_S = 10.0
# An acknowledgement with no open connection to go on (the connection ended and is being reopened) waits this long for
# the new one: Slack's own limit for an answer; after it, Slack sends the envelope again (recorded once) anyway.
ACK_CONNECTION_WAIT_S = 3.0
# The longest wait for the WebSocket handshake (TCP, TLS, the upgrade's answer) when none is given; the service gives
# ``NPO_SLACK_TIMEOUT_S``. Without one, aiohttp's session default (5 minutes) applied to a proxy that never answers.
HANDSHAKE_TIMEOUT_S = 5.0


class SocketModeError(RuntimeError):
    """Socket Mode cannot run: Slack refused the app-level token, or ``SLACK_API_URL`` has no
    ``apps.connections.open`` (HTTP 404)."""


def _excerpt(text: object, limit: int = 200) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    """A failed call in one line: a network failure or timeout as such, anything else as an unreadable answer."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not isinstance(exc, aiohttp.ClientError | OSError):
        text = f"an answer that could not be read ({text})"
    return _excerpt(text)


def _api_failure(exc: SlackApiError) -> tuple[str, object, str, float | None]:
    """Slack's error code ("" if none), the HTTP status, a one-line description and the Retry-After seconds (None if
    not sent) of a failed Web API call. ``exc.response`` is a parsed response, or aiohttp's own for a body that is
    not JSON."""
    response: Any = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    data = getattr(response, "data", None)
    error = str(data.get("error") or "") if isinstance(data, dict) else ""
    headers = getattr(response, "headers", None)
    retry_after: float | None = None
    if headers is not None and headers.get("Retry-After") is not None:
        with contextlib.suppress(ValueError):
            retry_after = max(0.0, float(headers["Retry-After"]))
    detail = error or _excerpt(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return error, status, f"HTTP {status}: {detail}", retry_after


class SocketModeClient(SdkSocketModeClient):
    """slack-sdk's aiohttp Socket Mode client, with connecting made fit for a service that runs for weeks.

    What the SDK's own :meth:`connect` / :meth:`issue_new_wss_url` do, and what these do instead:

    * a failed WebSocket handshake was retried with the *same* URL forever (a used-up ticket: the bot stayed deaf
      until restarted); here each attempt asks ``apps.connections.open`` for a fresh one;
    * a refused app-level token (revoked, …) was retried every ``ping_interval`` forever, with errors logged and the
      process up; here it ends the service (``on_fatal``, then :attr:`fatal` is raised by
      :meth:`SocketModeService.run`);
    * other failures (Slack unreachable, 5xx, a body that is not JSON) were logged two or three times each, some
      with a traceback, and retried every ``ping_interval``; here each is one warning line and the retries back off
      (``retry_delays``: first and longest wait, in seconds); a 429 waits its ``Retry-After`` at least;
    * a message that is not a JSON object with an ``envelope_id`` and a ``payload`` object was dropped silently or
      logged with a traceback; here it is ignored with one warning line;
    * a ``disconnect`` with reason ``link_disabled`` (Socket Mode turned off for the app) started a reconnection like
      any other; here it ends the service as a refused token does;
    * a connection that ended was reopened at once however briefly it had lasted (one that is accepted and closed at
      once: hundreds of connections a second); here one that lasted under ``short_lived_s`` is reopened after a
      wait that grows as after failed attempts (half to all of it: jitter), until a connection lasts;
    * an acknowledgement with no open connection waited for the reconnection however long it took (minutes while
      Slack is unreachable; a stop waited out its whole time for it, then an error with a traceback); here it waits
      at most ``ack_wait_s``, not at all once the service stops, then fails (:meth:`send_message`);
    * a WebSocket handshake nobody answered (a proxy that accepts the TCP connection and holds the upgrade) was waited
      for 5 minutes (aiohttp's session default) without a word; here it fails after ``handshake_timeout_s`` as any
      failed attempt does (one warning line, a fresh URL after a wait).

    Reconnecting after a drop (a close frame, Slack's ``disconnect`` envelope, a connection the ping finds dead) is
    still started by the SDK, through these methods.
    """

    def __init__(
        self,
        app_token: str,
        *,
        web_client: AsyncWebClient,
        on_fatal: Callable[[SocketModeError], None],
        ping_interval: float = 10.0,
        retry_delays: tuple[float, float] = (1.0, 60.0),
        short_lived_s: float = SHORT_LIVED_S,
        ack_wait_s: float = ACK_CONNECTION_WAIT_S,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(
            app_token=app_token,
            logger=logger or logging.getLogger("bot.slack.socket_mode"),
            web_client=web_client,
            ping_interval=ping_interval,
        )
        # At DEBUG the SDK logs every message received whole: no envelope's token or response_url, no URL's ticket.
        redact_slack_logs(self.logger)
        self.on_fatal = on_fatal
        self.fatal: SocketModeError | None = None
        self.first_delay_s, self.max_delay_s = retry_delays
        self._delay_s = self.first_delay_s
        self._failures = 0  # failed attempts since the last open connection
        self._failing_since: float | None = None
        self.short_lived_s = short_lived_s
        self._opened_at: float | None = None  # when the current connection opened (monotonic)
        self._short_lived = 0  # connections in a row that lasted under short_lived_s
        self.ack_wait_s = ack_wait_s
        self.handshake_timeout_s = handshake_timeout_s
        self._stopping = False  # set by stop_dispatching: an acknowledgement no longer waits for a connection
        # Running message listeners (kept from the collector): True for an envelope, to be finished and acknowledged
        # at a stop; False for Slack's ``hello`` and ``disconnect`` (the reconnection it starts is not waited for).
        self._listeners: dict[asyncio.Future[None], bool] = {}

    # ---- waiting between attempts --------------------------------------------------------------------------
    def _next_wait(self, at_least: float = 0.0) -> float:
        """How long to wait after a failed attempt. Until a connection opens, this loop owns reconnecting: the SDK's
        session monitor stands by (it would only log, every ``ping_interval``, that it cannot take over)."""
        self.auto_reconnect_enabled = False
        wait = max(self._delay_s, at_least)
        self._delay_s = min(self._delay_s * 2, self.max_delay_s)
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        return wait

    def _reopen_wait(self) -> float:
        """How long to wait before reopening the connection that ended: nothing after one that lasted (the waits
        start over), else the next wait of the back-off, jittered (half to all of it)."""
        lived = 0.0 if self._opened_at is None else time.monotonic() - self._opened_at
        if self._opened_at is None or lived >= self.short_lived_s:
            self._delay_s, self._short_lived = self.first_delay_s, 0
            return 0.0
        self.auto_reconnect_enabled = False  # the session monitor stands by while this waits
        self._short_lived += 1
        wait = self._delay_s * random.uniform(0.5, 1.0)
        self._delay_s = min(self._delay_s * 2, self.max_delay_s)
        log.warning(
            "Socket Mode: the connection ended after %.1f s (%d in a row under %g s); reconnecting in %.1f s",
            lived,
            self._short_lived,
            self.short_lived_s,
            wait,
        )
        return wait

    def _fail(self, error: SocketModeError) -> SocketModeError:
        """The token was refused: no more reconnecting, and the service is told (once)."""
        if self.fatal is None:
            self.fatal = error
            self.auto_reconnect_enabled = self.default_auto_reconnect_enabled = False
            self.on_fatal(error)
        return self.fatal

    # ---- apps.connections.open -----------------------------------------------------------------------------
    async def issue_new_wss_url(self) -> str:
        """A fresh WebSocket URL: ``apps.connections.open``, asked again (backing off) until Slack gives one.
        Raises :class:`SocketModeError` when the token is refused."""
        while True:
            if self.fatal is not None:
                raise self.fatal
            if self.closed:  # closed while this waited (a reconnection started by a listener): nothing to report
                raise asyncio.CancelledError
            try:
                response = await self.web_client.apps_connections_open(app_token=self.app_token)
                url = response.get("url")
                if isinstance(url, str) and url:
                    return url
                problem, at_least = "the answer has no url", 0.0
            except SlackApiError as exc:
                error, status, problem, retry_after = _api_failure(exc)
                if error in PERMANENT_ERRORS:
                    raise self._fail(
                        SocketModeError(f"SLACK_APP_TOKEN was refused by apps.connections.open: {error}")
                    ) from None
                if status == 404:  # no such method at this base URL: a wrong setting, which no retry fixes
                    base = str(self.web_client.base_url)
                    url = masked_url(f"{base}{'' if base.endswith('/') else '/'}apps.connections.open")
                    raise self._fail(
                        SocketModeError(
                            f"SLACK_API_URL: {url} answered HTTP 404{f' ({error})' if error else ''}; set it to "
                            "the base URL of a Slack Web API that offers Socket Mode (https://slack.com/api/)"
                        )
                    ) from None
                at_least = 0.0
                if error == "ratelimited" or status == 429:
                    at_least = RATE_LIMITED_WAIT_S if retry_after is None else retry_after
                    if not at_least <= RETRY_AFTER_CAP_S:  # also "inf"
                        problem += f"; Retry-After {retry_after:g} s is longer than Slack's own limits ask"
                        at_least = RETRY_AFTER_CAP_S
            except Exception as exc:  # Slack unreachable, a timeout, an answer the SDK cannot read
                problem, at_least = _describe(exc), 0.0
            wait = self._next_wait(at_least)
            log.warning(
                "Socket Mode: apps.connections.open failed (%s); asking again in %.0f s (attempt %d failed)",
                problem,
                wait,
                self._failures,
            )
            await asyncio.sleep(wait)

    # ---- the WebSocket -------------------------------------------------------------------------------------
    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        """A reconnection (after a close frame, a ``disconnect``, a connection the ping finds dead), with a wait first
        when the connection lasted under ``short_lived_s`` (see :meth:`_reopen_wait`; the URL is asked for after it,
        and the connect lock is not held meanwhile, so an acknowledgement being sent is not held up by it). A stop
        ends the wait: the client's close cancels the task that waits, or no connection follows it. A refused token
        ends the reconnection quietly: the service was told (``on_fatal``) and stops with one error line; the SDK's
        callers would log it again (after a ``disconnect``, with a traceback)."""
        reopening = not self.closed and self.fatal is None and (force or not await self.is_connected())
        if reopening and (wait := self._reopen_wait()) > 0:
            await asyncio.sleep(wait)
        with contextlib.suppress(SocketModeError):
            await super().connect_to_new_endpoint(force)

    async def connect(self) -> None:
        """Open a WebSocket, each attempt on a URL of its own, until one opens or the client is closed."""
        while True:
            if self.fatal is not None:
                raise self.fatal
            if self.closed:
                return
            url, self.wss_uri = self.wss_uri, None  # a URL is used for one attempt only
            try:
                if url is None:
                    url = await self.issue_new_wss_url()
                await self._open(url)
            except SocketModeError:
                raise
            except Exception as exc:
                if self.closed:
                    return
                wait = self._next_wait()
                problem = (
                    f"no answer to the handshake in {self.handshake_timeout_s:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}"
                )
                log.warning(
                    "Socket Mode: the WebSocket did not open (%s); asking for a new URL in %.0f s (attempt %d failed)",
                    _excerpt(problem),
                    wait,
                    self._failures,
                )
                await asyncio.sleep(wait)
                continue
            if self._failing_since is not None:
                log.info(
                    "Socket Mode: connected after %d failed attempts (%.0f s)",
                    self._failures,
                    time.monotonic() - self._failing_since,
                )
            # The waits start over once this connection lasts (_reopen_wait): one that ends at once waits on.
            self._failures, self._failing_since = 0, None
            return

    async def _open(self, url: str) -> None:
        """One connection attempt on ``url``: as the SDK's ``connect`` does, without its retry loop."""
        self.auto_reconnect_enabled = False  # the old session's close must not start another reconnection
        old = self.current_session
        if old is not None and not old.closed:
            try:
                await old.close()
            except Exception as exc:  # a connection reset by the peer may fail to close
                log.info("Socket Mode: closing the old connection failed (%s)", _excerpt(exc))
        if self.aiohttp_client_session.closed:
            self.aiohttp_client_session = aiohttp.ClientSession()
        async with asyncio.timeout(self.handshake_timeout_s):  # TimeoutError: retried by connect()
            session = await self.aiohttp_client_session.ws_connect(
                url,
                autoping=False,
                heartbeat=self.ping_interval,
                proxy=self.proxy,
                ssl=self.web_client.ssl if self.web_client.ssl is not None else True,
            )
        self.current_session = session
        self._opened_at = time.monotonic()
        self.auto_reconnect_enabled = self.default_auto_reconnect_enabled
        self.stale = False
        self.logger.info("A new session (%s) has been established", self.build_session_id(session))
        await session.ping(f"sdk-ping-pong:{time.time()}".encode())
        if self.current_session_monitor is not None:
            self.current_session_monitor.cancel()
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        if self.message_receiver is not None:
            self.message_receiver.cancel()
        self.message_receiver = asyncio.ensure_future(self.receive_messages())

    # ---- messages ------------------------------------------------------------------------------------------
    async def process_message(self) -> None:
        raw = await self.message_queue.get()
        if isinstance(raw, str) and (message := self._envelope(raw)) is not None:
            if message.get("type") == "disconnect" and message.get("reason") == LINK_DISABLED:
                self._fail(SocketModeError(LINK_DISABLED_PROBLEM))  # no reconnection: none would bring envelopes
                return
            task = asyncio.ensure_future(self.run_message_listeners(message, raw))
            self._listeners[task] = "envelope_id" in message
            task.add_done_callback(self._forget)

    async def send_message(self, message: str) -> None:
        """Send ``message`` (an acknowledgement) on the open connection. With none (it ended and is being reopened),
        wait for the new one at most ``ack_wait_s`` (a refresh takes a moment), and not at all once the service is
        stopping; then :class:`ConnectionError`. slack-sdk's own waited for the reconnection to finish, however long
        it took."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("Sending a message: %s", message)
        deadline = time.monotonic() + self.ack_wait_s
        while True:
            session = self.current_session
            if session is not None and not session.closed:
                with contextlib.suppress(ConnectionError):  # the connection is ending: a new one may come
                    await session.send_str(message)
                    return
            if self.closed or self._stopping or time.monotonic() >= deadline:
                raise ConnectionError("no open Socket Mode connection")
            await asyncio.sleep(0.05)

    def stop_dispatching(self) -> set[asyncio.Future[None]]:
        """Dispatch no more messages (an envelope left unacknowledged is sent again by Slack); the envelopes still
        being handled. Their acknowledgements go on the open connection, if any: none waits for a new one."""
        self._stopping = True
        if self.message_processor is not None:
            self.message_processor.cancel()
        return {task for task, envelope in self._listeners.items() if envelope}

    def _forget(self, task: asyncio.Future[None]) -> None:
        self._listeners.pop(task, None)

    @staticmethod
    def _envelope(raw: str) -> dict[str, Any] | None:
        """The message as a dict when it is one Slack sends; None (and one warning line) otherwise."""
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            log.warning("Socket Mode: ignored a message that is not a JSON object: %s", _excerpt(raw))
            return None
        kind = message.get("type")
        if kind == "hello":
            return message
        if kind == "disconnect":
            reason = message.get("reason")
            if reason == TOO_MANY_WEBSOCKETS:
                log.warning(
                    "Socket Mode: Slack closed a connection because more than %d are open on this app token "
                    "(reason: %s): stop the other processes using SLACK_APP_TOKEN; reconnecting",
                    MAX_CONNECTIONS_PER_APP,
                    TOO_MANY_WEBSOCKETS,
                )
            elif reason != LINK_DISABLED:
                log.info("Socket Mode: Slack asked for a new connection (reason: %s)", _excerpt(reason))
            return message
        envelope_id = message.get("envelope_id")
        if not (isinstance(envelope_id, str) and envelope_id and isinstance(message.get("payload"), dict)):
            log.warning(
                "Socket Mode: ignored a message (type %s) without an envelope_id and a payload object: %s",
                _excerpt(kind, 40),
                _excerpt(raw),
            )
            return None
        return message


class SocketModeService:
    """The bot's HTTP service plus a Socket Mode connection, on one event loop.

    :meth:`run` serves until :meth:`stop` (or SIGINT/SIGTERM when run on the main thread); :meth:`start_thread`
    runs it on a background thread instead (tests). ``http_port`` is the bound HTTP port once started.
    ``ping_interval``, ``retry_delays`` and ``short_lived_s`` go to :class:`SocketModeClient`. On a stop, envelopes
    being handled get up to ``finish_timeout_s`` to be done and acknowledged before the WebSocket closes.
    """

    def __init__(
        self,
        bot: Bot,
        *,
        log_level: str = "info",
        ping_interval: float = 10.0,
        retry_delays: tuple[float, float] = (1.0, 60.0),
        short_lived_s: float = SHORT_LIVED_S,
        finish_timeout_s: float = FINISH_TIMEOUT_S,
    ) -> None:
        if not bot.settings.slack_app_token:
            raise ValueError("SLACK_APP_TOKEN (an xapp- app-level token) is required for Socket Mode")
        self.bot = bot
        self.settings = bot.settings
        self.log_level = log_level
        self.ping_interval = ping_interval
        self.retry_delays = retry_delays
        self.short_lived_s = short_lived_s
        self.finish_timeout_s = finish_timeout_s
        self.connected = threading.Event()
        self.http_port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.stops: StopSignals | None = None  # the process's stop-signal handling, told of the server it creates
        self.sockets: list[socket.socket] | None = None  # listening sockets claimed beforehand (else bound by uvicorn)

    def _web_client(self) -> AsyncWebClient:
        return AsyncWebClient(base_url=self.settings.slack_api_url, timeout=self.settings.web_api_timeout)

    def _client(self, server: uvicorn.Server) -> SocketModeClient:
        def on_fatal(_: SocketModeError) -> None:
            server.should_exit = True  # run() raises the error once the server has stopped

        client = SocketModeClient(
            self.settings.slack_app_token,
            web_client=self._web_client(),
            on_fatal=on_fatal,
            ping_interval=self.ping_interval,
            retry_delays=self.retry_delays,
            short_lived_s=self.short_lived_s,
            handshake_timeout_s=self.settings.slack_timeout_s,
        )
        client.socket_mode_request_listeners.append(self._dispatch)
        return client

    async def _dispatch(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        """One envelope through Bolt, acknowledged as Bolt's Socket Mode handler does; a payload HTTP mode would
        refuse with 400 (a field of a type Slack never sends) is logged and ignored instead (not acknowledged)."""
        started = time.time()
        payload = request.payload
        if isinstance(payload, dict) and (field := shape_problem(payload)) is not None:
            log.warning(
                "Socket Mode: ignored an envelope (type %s, id %s): its payload's %s is not what Slack sends",
                _excerpt(request.type, 40),
                _excerpt(request.envelope_id, 60),
                field,
            )
            return
        # As Bolt's own Socket Mode dispatch, plus the envelope id: an envelope sent again is recognised by it when
        # its payload has no id of its own (a slash command without a trigger id).
        headers: dict[str, Any] = dict(build_headers(request) or {})
        headers[ENVELOPE_ID_HEADER] = request.envelope_id
        bolt_request = AsyncBoltRequest(mode="socket_mode", body=request.payload, headers=headers)
        response = await self.bot.bolt.async_dispatch(bolt_request)
        try:
            await send_async_response(client, request, response, started)
        except ConnectionError as exc:  # no open connection to acknowledge on (see SocketModeClient.send_message)
            log.warning(
                "Socket Mode: handled an envelope (type %s, id %s) but it was not acknowledged (%s); Slack may send "
                "it again, and it is then acknowledged and not handled twice",
                _excerpt(request.type, 40),
                _excerpt(request.envelope_id, 60),
                _excerpt(exc),
            )

    async def _connect(self, client: SocketModeClient, server: uvicorn.Server) -> bool:
        """Open the first connection; False when told to stop (``server.should_exit``: a signal, :meth:`stop`)
        before it opened."""
        connecting = asyncio.ensure_future(client.connect())
        try:
            while not connecting.done():
                if server.should_exit:
                    return False
                await asyncio.wait({connecting}, timeout=0.05)
            connecting.result()  # SocketModeError: the token was refused
            return True
        finally:
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting

    async def run(self) -> None:
        """Open the WebSocket, then serve HTTP until told to stop; closes the WebSocket on the way out. Raises
        :class:`SocketModeError` when Slack refuses the app-level token (at start or later)."""
        app = forced_stop_shuts_down(self.bot.asgi, lambda: server.force_exit)  # a second Ctrl-C
        config = uvicorn_config(app, self.settings.host, self.settings.port, log_level=self.log_level)
        server = uvicorn.Server(config)
        self._server = server
        if self.stops is not None:
            self.stops.server = server
        client = self._client(server)
        try:
            if await self._connect(client, server):
                self.connected.set()
                log.info(
                    "Socket Mode connected (apps.connections.open via %s)", masked_url(self.settings.slack_api_url)
                )
                await self._serve(server)
                await self._finish(client, server)
            else:
                log.info("Socket Mode: stopped before the first connection opened")
        finally:
            self.connected.clear()
            await client.close()  # type: ignore[no-untyped-call]
        if client.fatal is not None:
            raise client.fatal

    async def _finish(self, client: SocketModeClient, server: uvicorn.Server) -> None:
        """The HTTP server has stopped: let the envelopes in hand finish (stored, acknowledged), as HTTP mode lets
        requests in flight finish — at most ``finish_timeout_s``, and no longer once the stop is forced (a second
        Ctrl-C) — then wait for the replies they started."""
        pending = client.stop_dispatching()
        deadline = time.monotonic() + self.finish_timeout_s
        while pending and not server.force_exit and time.monotonic() < deadline:
            _, pending = await asyncio.wait(pending, timeout=0.05)
        if pending:
            log.warning("Socket Mode: stopped with %d envelope(s) still being handled (not acknowledged)", len(pending))
        await self.bot.deps.drain()

    async def _serve(self, server: uvicorn.Server) -> None:
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=self.sockets))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started and server.servers:
            self.http_port = int(server.servers[0].sockets[0].getsockname()[1])
            log.info("HTTP (ingest, health, metrics) on http://%s:%d", self.settings.host, self.http_port)
        await serving

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
    """``npo-bot socket``: run until SIGINT/SIGTERM. Returns the exit status (2 when the app token is missing or
    Slack refuses it, at start or later, or when ``SLACK_API_URL`` answers HTTP 404). An address it cannot listen
    on (also one another process started at the same moment claimed) stops it before anything starts, as
    ``serve`` (:func:`bot.serve.claim_address`): no database, no connection to Slack, no scheduler or worker."""
    if not settings.slack_app_token:
        log.error("SLACK_APP_TOKEN: is required for Socket Mode (an app-level token starting with xapp-)")
        return 2
    sockets = claim_address(settings, "socket")
    if isinstance(sockets, int):
        return sockets
    bot = build_holding(settings, sockets)
    service = SocketModeService(bot)
    service.sockets = sockets
    with StopSignals() as stops:  # SIGTERM / Ctrl-C: the server stops, then the bot closes (as `serve` does)
        service.stops = stops
        try:
            asyncio.run(service.run())
        except SocketModeError as exc:
            log.error("%s; stopping", exc)
            return 2
        finally:
            stops.closing()
            for sock in sockets:
                sock.close()
            bot.close()
    names = sorted({signal.Signals(sig).name for sig in stops.received})
    log.info("npo-bot stopped%s", f" ({', '.join(names)})" if names else "")
    return 0
