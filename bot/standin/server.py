"""The stand-in's HTTP side: a threaded server on 127.0.0.1 and :class:`StandIn`, the object tests and the demo use.

Routes (all on loopback):

- ``POST /api/<method>``: the Web API (JSON or form bodies; query-string parameters are merged in).
- ``POST /upload/<file_id>``: the raw upload behind ``files.getUploadURLExternal``'s ``upload_url``.
- ``POST /response/<id>``: response URLs handed out with clicks and slash commands.
- ``GET /``: the web page; ``GET /files/<file_id>``: an uploaded file; ``POST /ui/click``: a click from the page.
- ``/ui/…``: the live page and its JSON routes (:mod:`bot.standin.live`).
- ``POST /api/apps.connections.open``: Socket Mode's WebSocket URL, once :mod:`bot.standin.socket_mode` is attached.

Every route refuses (403) a ``Host`` that is not a loopback name (:mod:`bot.loopback`: ``127.0.0.1``, ``localhost``,
``[::1]``, any port:
a port forwarded to another local one still works) and an ``Origin`` other than the page's own (``http://`` and the
``Host``): another web site open in the browser can neither post clicks for the page to sign nor, by DNS
rebinding, read it. A ``POST`` whose ``Sec-Fetch-Site`` (when the browser sends one) is not ``same-origin`` or
``none`` is refused too, and the live page's JSON routes take only ``Content-Type: application/json`` (415 else),
which no other site's page can send without a CORS preflight, never granted. No response may be shown in a frame
(``Content-Security-Policy: frame-ancestors 'none'``, ``X-Frame-Options: DENY``), so no site can lay the page
under a button of its own (clickjacking).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from bot.loopback import loopback_name
from bot.standin import interactions
from bot.standin.faults import FaultInjector, FaultKind
from bot.standin.live import LiveUi
from bot.standin.page import render_page
from bot.standin.store import TEAM_ID, Call, Message, ResponseUrl, Store, StoredFile
from bot.standin.webapi import Reply, WebApi

__all__ = ["StandIn", "running_standin"]

log = logging.getLogger(__name__)
_RESPONSE_ID = re.compile(r"(/response/)[^\s/?]+")

HOST = "127.0.0.1"
UPLOAD = "upload"
# The methods the stand-in answers on GET too (their arguments in the query string), as Slack does: the ones it
# implements that slack-sdk's clients send as GET (the async client's responder look-ups, in Socket Mode).
GET_METHODS = frozenset(
    (
        "conversations.members",
        "usergroups.users.list",
        "users.info",
        "conversations.info",
        "conversations.history",
        "conversations.replies",
    )
)
RESPONSE_URL = "response_url"
JSON_UI_ROUTES = frozenset({"/ui/act", "/ui/submit", "/ui/close"})  # the live page's fetch() calls
# No page of the stand-in may be shown in a frame, by any site (clickjacking: another site framing the page under a
# button of its own turns the person's click on that site into a signed click on Like or Override, sent by the page
# itself with its own Origin). The CSP directive for current browsers, X-Frame-Options for older ones.
NOT_FRAMED = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"}


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # SO_REUSEADDR: restart on the same port right after stop()
    daemon_threads = True
    request_queue_size = 128  # listen backlog: bursts of concurrent clients must not be reset

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def _parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        parsed = json.loads(raw.decode("utf-8"))
        return parsed if isinstance(parsed, dict) else {"_": parsed}
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()}


class _Handler(BaseHTTPRequestHandler):
    standin: ClassVar[StandIn]
    server_version = "NPOStandIn/1"

    def log_message(self, format: str, *args: Any) -> None:
        # A response URL is a secret (anyone holding it may post to the channel): its id is not logged.
        shown = tuple(_RESPONSE_ID.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args)
        log.debug("%s " + format, self.address_string(), *shown)

    # ---- plumbing ------------------------------------------------------------------------------------------
    def _send(self, reply: Reply, extra_headers: Mapping[str, str] | None = None) -> None:
        if isinstance(reply.body, dict):
            data, ctype = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
        else:
            data, ctype = reply.body.encode(), "text/plain; charset=utf-8"
        self._raw(reply.status, data, ctype, {**reply.headers, **(extra_headers or {})})

    def _raw(self, status: int, data: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in NOT_FRAMED.items():
            self.send_header(key, value)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout during a delay)
            log.debug("client went away before the answer to %s", self.path)

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _from_another_site(self) -> bool:
        """Refuse (403) a request a web page of another site may have sent: a ``Host`` that is not this server's
        address (a name of the site's own resolved to 127.0.0.1: DNS rebinding, which would let that site read the
        page) or an ``Origin`` other than the page's (a cross-site POST, which a ``no-cors`` fetch or a form sends
        without asking: the page signs clicks for whoever posts to it). Clients that send no ``Origin`` (the bot, a
        test, curl) are not browsers on another site's page; a POST whose ``Sec-Fetch-Site`` names another site
        (``cross-site``, or ``same-site``: another port of loopback) is refused as well. True when refused."""
        host = self.headers.get("Host")
        origin = self.headers.get("Origin")
        field = None
        if host is not None and not loopback_name(f"//{host.strip()}"):
            field = "Host"
        elif origin is not None and (
            origin.strip().lower() != f"http://{host.strip().lower()}"  # the page's own origin: its Host's
            if host is not None
            else not loopback_name(origin.strip(), scheme="http")
        ):
            field = "Origin"
        elif self.command == "POST" and self.headers.get("Sec-Fetch-Site", "same-origin").strip().lower() not in (
            "same-origin",
            "none",
        ):
            field = "Sec-Fetch-Site"  # the browser says another site (or another port of loopback) sent it
        if field is None:
            return False
        message = (
            f"{field} is not this page's: a request from another site is refused (open the page at the address"
            " it was started with, http://127.0.0.1:PORT/ or http://localhost:PORT/, also through a forwarded port)"
        )
        self._raw(403, json.dumps({"error": message, "field": field}).encode(), "application/json; charset=utf-8")
        return True

    # ---- GET -----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        s = self.standin
        if self._from_another_site():
            return
        parts = urlsplit(self.path)
        if parts.path == "/":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            page = render_page(
                s.store,
                acting_user=query.get("as") or s.default_page_user(),
                clickable=s.bot_url is not None and s.signing_secret is not None,
                notice=query.get("notice", ""),
            )
            self._raw(200, page.encode(), "text/html; charset=utf-8")
        elif parts.path.startswith("/ui/") or parts.path == "/ui":
            self._raw(*s.live.get(parts.path, parts.query))
        elif parts.path.startswith("/files/"):
            stored = s.store.files.get(parts.path.removeprefix("/files/"))
            if stored is None or stored.data is None:
                self._raw(404, b"not_found", "text/plain")
            else:
                ctype = "image/png" if stored.filename.lower().endswith(".png") else "application/octet-stream"
                self._raw(200, stored.data, ctype)
        elif parts.path.startswith("/api/") and parts.path.removeprefix("/api/") in GET_METHODS:
            arrived = (s.store.clock(), time.monotonic())
            self._api(parts.path.removeprefix("/api/"), parts.path, {}, b"", parts.query, arrived)
        elif parts.path.startswith("/api/"):
            self._send(Reply(405, {"ok": False, "error": "method_not_allowed"}), {"Allow": "POST"})
        else:
            self._raw(404, b"not_found", "text/plain")

    # ---- POST ----------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        s = self.standin
        arrived, arrived_mono = s.store.clock(), time.monotonic()
        parts = urlsplit(self.path)
        raw = self._read()
        if self._from_another_site():
            return
        path = parts.path
        if path in JSON_UI_ROUTES and not self.headers.get("Content-Type", "").lower().startswith("application/json"):
            # Only JSON: a body another site's page may send without asking (a form, a no-cors fetch's text/plain)
            # is not one of the page's; a cross-site JSON POST needs a CORS preflight, which is never granted.
            message = "expected Content-Type: application/json (the page's own requests)"
            self._raw(415, json.dumps({"error": message, "field": "Content-Type"}).encode(), "application/json")
            return
        if path == "/ui/click":
            self._ui_click(raw)
            return
        if path.startswith("/ui/"):
            self._raw(*s.live.post(path, raw))
            return
        if path.startswith("/api/"):
            method = path.removeprefix("/api/")
        elif path.startswith("/upload/"):
            method = UPLOAD
        elif path.startswith("/response/"):
            method = RESPONSE_URL
        else:
            self._raw(404, b"not_found", "text/plain")
            return
        ctype = self.headers.get("Content-Type", "")
        query = parts.query if path.startswith("/api/") else ""
        try:
            body = {} if method == UPLOAD else _parse_body(ctype, raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            refused = Reply(400, {"ok": False, "error": "invalid_json"})
            self._api(method, path, {}, raw, query, (arrived, arrived_mono), refused)
        else:
            self._api(method, path, body, raw, query, (arrived, arrived_mono))

    def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        raw: bytes,
        query: str,
        arrived: tuple[float, float],
        reply: Reply | None = None,
    ) -> None:
        """Answer one Web API call (its arguments: the query string's, then the body's), record it, send the reply.
        ``arrived``: when the request arrived (the stand-in's clock, and monotonic)."""
        s = self.standin
        from_query = {k: v[0] for k, v in parse_qs(query).items()}
        arguments = body = from_query | body
        if "token" in body and self.headers.get("Content-Type", "").startswith("application/json"):
            # Slack reads no token from a JSON body: "To make use of sending JSON on write operations, you must
            # provide your token value using an Authorization HTTP header" (changelog 2017-10, "Keeping up with the
            # JSONs"); the call is answered as if it carried none (not_authed without the header).
            arguments = {k: v for k, v in body.items() if k != "token"} | (
                {"token": from_query["token"]} if "token" in from_query else {}
            )
        if reply is None:
            try:
                reply = self._fault_or_answer(method, path, arguments, raw)
            except Exception:  # a malformed request must not kill the handler thread silently
                log.exception("stand-in failed on %s", path)
                reply = Reply(500, {"ok": False, "error": "fatal_error"})
        headers = dict(self.headers.items())
        status, answer = (0, None) if reply is None else (reply.status, reply.body)
        s.store.record(Call(method, path, headers, body, raw, *arrived, status, answer))
        if reply is None:
            self.close_connection = True  # injected disconnect, lost answer or outage during a delay: no answer
            return
        self._send(reply)

    def _fault_or_answer(self, method: str, path: str, body: dict[str, Any], raw: bytes) -> Reply | None:
        s = self.standin
        channel = body.get("channel")
        fault = s.faults.take(method, channel if isinstance(channel, str) else None)
        if fault is not None:
            if fault.kind is FaultKind.DELAY:
                if s.stopping.wait(fault.seconds):
                    return None
            elif fault.kind is FaultKind.DISCONNECT:
                return None
            elif fault.kind is FaultKind.RATE_LIMIT:
                return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(fault.retry_after)})
            elif fault.kind is FaultKind.SERVER_ERROR:
                return Reply(fault.status, {"ok": False, "error": "internal_error"})
            elif fault.kind is FaultKind.ERROR:
                return Reply(200, {"ok": False, "error": fault.error})
            elif fault.kind is FaultKind.MALFORMED:
                return Reply(200, '{"ok": true, "channel": "C0')
            elif fault.kind is FaultKind.LOSE_ANSWER:
                self._answer(method, path, body, raw)
                return None
        return self._answer(method, path, body, raw)

    def _answer(self, method: str, path: str, body: dict[str, Any], raw: bytes) -> Reply:
        s = self.standin
        if method == UPLOAD:
            return s.api.upload(path.removeprefix("/upload/"), raw)
        if method == RESPONSE_URL:
            return s.api.response_url(path.removeprefix("/response/"), body)
        if method == "apps.connections.open" and s.socket_mode is not None:
            answer: Reply = s.socket_mode.connections_open(self.headers.get("Authorization"))
            return answer
        return s.api.call(method, body, self.headers.get("Authorization"))

    def _ui_click(self, raw: bytes) -> None:
        s = self.standin
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        user = form.get("user", "")
        notice = ""
        if s.bot_url is None or s.signing_secret is None:
            notice = "clicking needs --bot-url and --secret"
        else:
            try:
                response = s.click(
                    s.bot_url,
                    s.signing_secret,
                    user_id=user,
                    action_id=form.get("action_id", ""),
                    message=(form.get("channel", ""), form.get("ts", "")),
                )
                notice = f"clicked {form.get('action_id', '')}: bot answered {response.status_code}"
            except (LookupError, httpx.HTTPError) as exc:
                notice = f"click failed: {exc}"
        self._raw(303, b"", "text/plain", {"Location": "/?" + urlencode({"as": user, "notice": notice})})


class StandIn:
    """A local Slack stand-in on 127.0.0.1 (see the module docstring for routes).

    ``token`` is the only bot token accepted. ``channels`` (ids, or ``{id: name}``), when given, is the full list
    of channels: others answer ``channel_not_found``. ``enforce_channel_rate`` answers a second chat.postMessage
    to one channel within 1 s with 429. ``clock`` (Unix seconds) drives ts values, trigger-id expiry (3 s) and
    response_url expiry (30 min), so tests can move time. ``bot_url``/``signing_secret`` make the web page's
    buttons clickable. Use as a context manager, or call :meth:`start` / :meth:`stop`. Requests to the bot
    (:meth:`click`, :meth:`submit_view`, :meth:`send_event`, :meth:`slash_command`) wait 3 s for its answer, as
    Slack does, and raise ``httpx.ReadTimeout`` after that.
    """

    def __init__(
        self,
        *,
        token: str = "xoxb-standin",
        port: int = 0,
        channels: Iterable[str] | Mapping[str, str] | None = None,
        enforce_channel_rate: bool = False,
        clock: Callable[[], float] = time.time,
        bot_url: str | None = None,
        signing_secret: str | None = None,
    ) -> None:
        self.token = token
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        self.store = Store(clock)
        self.faults = FaultInjector()
        self.api = WebApi(self.store, token, lambda: self.url, enforce_channel_rate=enforce_channel_rate)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self._lifecycle = threading.Lock()
        self.live = LiveUi(self)  # the live page (/ui/)
        self.socket_mode: Any = None  # a bot.standin.socket_mode.SocketModeStandIn once attached
        if channels is not None:
            named = channels if isinstance(channels, Mapping) else {c: c.lower() for c in channels}
            for channel_id, name in named.items():
                self.store.add_channel(channel_id, name)

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> StandIn:
        """Listen on 127.0.0.1 (the port chosen at first start is reused on restart). Idempotent."""
        with self._lifecycle:
            if self._server is not None:
                return self
            handler = type("StandInHandler", (_Handler,), {"standin": self})
            self._server = _Server((HOST, self._port), handler)
            self._port = self._server.server_address[1]
            self.stopping.clear()
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="slack-standin", daemon=True
            )
            self._thread.start()
            return self

    def stop(self) -> None:
        """Stop listening (connections are refused until :meth:`start`); state is kept. Idempotent."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            self.stopping.set()
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("the stand-in has not been started")
        return self._port

    @property
    def bound_address(self) -> tuple[str, int] | None:
        """The (host, port) the listening socket is bound to, or None while stopped."""
        server = self._server
        if server is None:
            return None
        host, port = server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``slack_sdk.WebClient``: ``http://127.0.0.1:PORT/api/``."""
        return f"{self.url}/api/"

    # ---- workspace set-up ----------------------------------------------------------------------------------
    def add_channel(self, channel_id: str, name: str | None = None) -> None:
        """Add a channel; once any channel is added, unknown channels answer ``channel_not_found``."""
        self.store.add_channel(channel_id, name)

    def add_user(self, user_id: str, *, name: str | None = None, real_name: str | None = None, **extra: Any) -> None:
        """Add a user returned by ``users.info`` (extra fields are merged into the user object)."""
        name = name or user_id.lower()
        user = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "real_name": real_name or name,
            "deleted": False,
            "is_bot": False,
            "tz": "Europe/Berlin",
            "profile": {"real_name": real_name or name, "display_name": name},
        }
        with self.store.lock:
            self.store.users[user_id] = user | extra

    def add_usergroup(self, usergroup_id: str, user_ids: Iterable[str]) -> None:
        with self.store.lock:
            self.store.usergroups[usergroup_id] = list(user_ids)

    def set_channel_members(self, channel_id: str, user_ids: Iterable[str]) -> None:
        with self.store.lock:
            self.store.members[channel_id] = list(user_ids)

    def post_user_message(self, channel: str, text: str, *, user_id: str) -> str:
        """Put a message from a person into a channel (the bot cannot chat.update it); returns its ts."""
        ts = self.store.next_ts()
        self.store.add_message(Message(channel, ts, text, [], user=user_id, bot_id=None))
        return ts

    def issue_trigger_id(self) -> str:
        """A fresh trigger_id, valid for views.open for 3 s."""
        return self.store.issue_trigger()

    # ---- reading state -------------------------------------------------------------------------------------
    def calls(self, method: str | None = None) -> list[Call]:
        """Every request received (API methods, ``upload``, ``response_url``), in arrival order."""
        return sorted(self.store.calls(method), key=lambda c: c.monotonic)

    def messages(self, channel: str, *, include_ephemeral: bool = False) -> list[Message]:
        """Copies of a channel's messages, oldest first (edits applied in place)."""
        return self.store.messages(channel, include_ephemeral=include_ephemeral)

    def message(self, channel: str, ts: str) -> Message:
        """A copy of one message; KeyError if there is none with that ts in that channel."""
        with self.store.lock:
            found = self.store.find_message(channel, ts)
            if found is None:
                raise KeyError((channel, ts))
            return copy.deepcopy(found)

    def channels(self) -> list[str]:
        with self.store.lock:
            return sorted(set(self.store.history) | set(self.store.channel_names))

    def files(self) -> list[StoredFile]:
        """Copies of all files announced with files.getUploadURLExternal, with the bytes uploaded so far."""
        with self.store.lock:
            return copy.deepcopy(list(self.store.files.values()))

    def file(self, file_id: str) -> StoredFile:
        """A copy of one file; KeyError if unknown."""
        with self.store.lock:
            return copy.deepcopy(self.store.files[file_id])

    def views(self) -> list[dict[str, Any]]:
        """Modals opened with views.open (as last updated), oldest first."""
        with self.store.lock:
            return [copy.deepcopy(self.store.views[v]) for v in self.store.view_order]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """The App Home view last published for a user, if any."""
        with self.store.lock:
            view = self.store.home_views.get(user_id)
            return copy.deepcopy(view)

    def response_urls(self) -> list[ResponseUrl]:
        """Response URLs handed out, each with what was posted to it."""
        with self.store.lock:
            return copy.deepcopy(list(self.store.response_urls.values()))

    def default_page_user(self) -> str | None:
        with self.store.lock:
            return min(self.store.users) if self.store.users else None

    # ---- acting as Slack towards the bot -------------------------------------------------------------------
    @property
    def _response_base(self) -> str:
        return f"{self.url}/response"

    def click(
        self,
        request_url: str,
        signing_secret: str,
        *,
        user_id: str,
        action_id: str,
        value: str | None = None,
        message: tuple[str, str] | None = None,
        view: str | None = None,
        trigger_id: str | None = None,
        force: bool = False,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Click a button: send a signed ``block_actions`` request to the bot's request URL.

        ``message`` is the ``(channel, ts)`` of a stored message (or ``view`` an opened view id); the button is
        looked up by ``action_id`` and LookupError is raised if it is not shown (``force=True`` clicks anyway).
        ``value`` defaults to the button's value. A fresh trigger_id and response_url are issued.
        ``timestamp`` overrides the signature timestamp (Unix seconds) to test the replay window.
        """
        payload = interactions.block_actions_payload(
            self.store,
            self._response_base,
            user_id=user_id,
            action_id=action_id,
            value=value,
            message=message,
            view=view,
            trigger_id=trigger_id,
            force=force,
        )
        body = interactions.form_body(payload)
        return interactions.post_signed(request_url, signing_secret, body, interactions.FORM, timestamp=timestamp)

    def submit_view(
        self,
        request_url: str,
        signing_secret: str,
        *,
        user_id: str,
        view_id: str | None = None,
        values: Mapping[str, Mapping[str, Any]] | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Submit a modal (default: the last one the bot opened) with ``values = {block_id: {action_id: value}}``.

        The payload carries the view's callback_id and private_metadata. If the bot answers
        ``response_action: update``, the stored view is replaced by the one in the answer.
        """
        payload = interactions.view_submission_payload(
            self.store, user_id=user_id, view_id=view_id, values=values or {}
        )
        body = interactions.form_body(payload)
        response = interactions.post_signed(request_url, signing_secret, body, interactions.FORM, timestamp=timestamp)
        self._apply_view_answer(payload["view"]["id"], response)
        return response

    def _apply_view_answer(self, view_id: str, response: httpx.Response) -> None:
        if response.status_code != 200 or not response.content:
            return
        try:
            answer = response.json()
        except ValueError:
            return
        if (
            isinstance(answer, dict)
            and answer.get("response_action") == "update"
            and isinstance(answer.get("view"), dict)
        ):
            with self.store.lock:
                current = self.store.views.get(view_id)
                if current is not None:
                    self.store.views[view_id] = current | answer["view"]

    def send_event(
        self,
        request_url: str,
        signing_secret: str,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Deliver an Events API ``event_callback`` (JSON); with ``retry_num``, as Slack's retry of a delivery."""
        payload = interactions.event_callback_payload(event, event_id or self.store.next_id("Ev"))
        extra = {} if retry_num is None else {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return interactions.post_signed(
            request_url,
            signing_secret,
            json.dumps(payload),
            interactions.JSON,
            timestamp=timestamp,
            extra_headers=extra,
        )

    def slash_command(
        self,
        request_url: str,
        signing_secret: str,
        command: str,
        text: str,
        user_id: str,
        channel_id: str,
        *,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Invoke a slash command (form-encoded, signed), with a fresh trigger_id and response_url."""
        fields = interactions.slash_command_fields(
            self.store, self._response_base, command=command, text=text, user_id=user_id, channel_id=channel_id
        )
        return interactions.post_signed(
            request_url, signing_secret, urlencode(fields), interactions.FORM, timestamp=timestamp
        )


def running_standin(**kwargs: Any) -> Iterator[StandIn]:
    """For pytest fixtures: ``yield from running_standin(token=...)`` starts a stand-in and stops it afterwards."""
    with StandIn(**kwargs) as standin:
        yield standin
