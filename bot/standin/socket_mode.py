"""Socket Mode for the stand-in: ``apps.connections.open`` and the WebSocket that carries Slack's envelopes.

:func:`attach` starts a WebSocket server on 127.0.0.1 (aiohttp, in its own thread and event loop) and makes the
stand-in answer ``apps.connections.open`` (app-level ``xapp-`` token required) with a ``ws://127.0.0.1:…`` URL in
place of Slack's ``wss://wss-primary.slack.com/…``. Over that connection the stand-in sends ``hello`` and then
envelopes as Slack does — ``interactive`` (block_actions, view_submission), ``slash_commands`` and
``events_api`` (with ``retry_attempt`` / ``retry_reason``) — and collects the app's acknowledgements
``{"envelope_id", "payload"?}``. Payloads are built by :mod:`bot.standin.interactions` exactly as for HTTP mode,
minus the signature (Socket Mode has none).

A WebSocket URL is good for one connection (its ticket is used up by the handshake, as Slack's are). For tests of
what a long-running app meets, the stand-in can also end connections as Slack does (:meth:`~SocketModeStandIn.drop`:
a close frame, a ``disconnect`` envelope with its ``reason``, a connection that just dies, or one that goes silent:
no pong, nothing read or sent), cut an envelope's frame off halfway with the connection (``cut_off``), refuse the next
handshakes (:meth:`~SocketModeStandIn.refuse_handshakes`: the ticket is used up, the upgrade answered 408), leave
the next handshakes unanswered (:meth:`~SocketModeStandIn.hang_handshakes`: the TCP connection is accepted and the
upgrade request read, and no answer comes), close new connections right after their ``hello``
(:meth:`~SocketModeStandIn.close_new_connections`: a proxy or a Slack edge that accepts and then drops) and send any
text frame (:meth:`~SocketModeStandIn.send_text`). Failures of ``apps.connections.open`` itself are the Web API's
faults (``standin.faults``).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from bot.standin import interactions
from bot.standin.store import APP_ID, TEAM_ID
from bot.standin.webapi import Reply

if TYPE_CHECKING:
    from bot.standin.server import StandIn

__all__ = ["SocketModeStandIn", "attach"]

HOST = "127.0.0.1"


class SocketModeStandIn:
    """The WebSocket side of Socket Mode (see the module docstring). Use :func:`attach` to create one."""

    def __init__(self, standin: StandIn, app_token: str) -> None:
        if not app_token.startswith("xapp-"):
            raise ValueError("an app-level token starts with xapp-")
        self.standin = standin
        self.app_token = app_token
        self.port = 0
        self.opens = 0  # apps.connections.open calls answered ok
        self.accepted = 0  # WebSocket connections accepted (hello sent)
        self.refused = 0  # handshakes refused by refuse_handshakes()
        self._refuse: list[int] = []  # statuses for the next handshakes to refuse
        self._hang = 0  # how many of the next handshakes to leave unanswered
        self.hung = 0  # handshakes left unanswered by hang_handshakes()
        self._released: asyncio.Event | None = None  # set at stop: the unanswered handshakes end
        self._close_new = 0.0  # how many of the next connections to close right after hello (inf: all)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._muted: list[web.WebSocketResponse] = []  # connections drop("mute") silenced, ended at stop
        self._transports: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self._acks: dict[str, dict[str, Any]] = {}  # the latest acknowledgement of each envelope
        self._ack_counts: dict[str, int] = {}
        self._sent: dict[str, dict[str, Any]] = {}  # envelopes sent, by id (for resend)
        self._cond = threading.Condition()

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> SocketModeStandIn:
        ready = threading.Event()

        async def serve() -> None:
            self._released = asyncio.Event()
            app = web.Application()
            app.router.add_get("/link/", self._websocket)
            self._runner = web.AppRunner(app, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, HOST, 0)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="socket-mode-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Socket Mode stand-in did not start")
        return self

    def stop(self) -> None:
        """Close every connection and stop the server (idempotent)."""
        if self._thread is None:
            return

        async def shutdown() -> None:
            if self._released is not None:
                self._released.set()
            for ws in list(self._sockets):
                await ws.close()
            for ws in list(self._muted):
                transport = self._transports.get(ws)
                if transport is not None:
                    transport.abort()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop.close()

    # ---- apps.connections.open -----------------------------------------------------------------------------
    def connections_open(self, authorization: str | None) -> Reply:
        """Slack's answer to ``apps.connections.open``: a one-time WebSocket URL for the app-level token."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token:
            return Reply(200, {"ok": False, "error": "not_authed"})
        if token.startswith("xoxb-"):
            return Reply(200, {"ok": False, "error": "not_allowed_token_type"})
        if token != self.app_token:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        ticket = secrets.token_hex(8)
        with self._cond:
            self._tickets.add(ticket)
            self.opens += 1
        return Reply(200, {"ok": True, "url": f"ws://{HOST}:{self.port}/link/?ticket={ticket}"})

    # ---- the WebSocket -------------------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._cond:
            known = ticket in self._tickets
            self._tickets.discard(ticket)
        if not known:
            return web.Response(status=401, text="invalid ticket")
        with self._cond:
            hang = self._hang > 0
            if hang:
                self._hang -= 1
                self.hung += 1
                self._cond.notify_all()
        if hang and self._released is not None:
            await self._released.wait()  # until the stand-in stops: the client gives up first, or waits
            return web.Response(status=503, text="the WebSocket could not be opened")
        with self._cond:
            refuse = self._refuse.pop(0) if self._refuse else None
            if refuse is not None:
                self.refused += 1
        if refuse is not None:
            return web.Response(status=refuse, text="the WebSocket could not be opened")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._cond:
            self._sockets.append(ws)
            if request.transport is not None:
                self._transports[ws] = request.transport
            self.accepted += 1
            self._cond.notify_all()
        hello = {
            "type": "hello",
            "num_connections": len(self._sockets),
            "debug_info": {"host": "standin", "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        await ws.send_str(json.dumps(hello))
        with self._cond:
            close_now = self._close_new > 0
            self._close_new -= 1 if close_now else 0
        if close_now:
            await ws.close()
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                try:
                    ack = json.loads(message.data)
                except json.JSONDecodeError:
                    continue
                if isinstance(ack, dict) and isinstance(ack.get("envelope_id"), str):
                    with self._cond:
                        self._acks[ack["envelope_id"]] = ack
                        self._ack_counts[ack["envelope_id"]] = self._ack_counts.get(ack["envelope_id"], 0) + 1
                        self._cond.notify_all()
        finally:
            with self._cond:
                if ws in self._sockets:
                    self._sockets.remove(ws)
                if ws in self._muted:
                    self._muted.remove(ws)
                self._transports.pop(ws, None)
                self._cond.notify_all()
        return ws

    def connected(self) -> int:
        """How many app connections are open now."""
        with self._cond:
            return len(self._sockets)

    def wait_connected(self, timeout: float = 10.0, *, accepted: int = 1) -> None:
        """Block until the app holds a connection and ``accepted`` connections were accepted in all (TimeoutError
        otherwise); ``accepted=n + 1`` after a drop waits for the reconnection."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._sockets) and self.accepted >= accepted, timeout):
                raise TimeoutError("no Socket Mode connection")

    # ---- how connections end ------------------------------------------------------------------------------
    def drop(self, how: str = "close", *, reason: str = "refresh_requested") -> None:
        """End every open connection as Slack can: ``"close"`` (a close frame), ``"disconnect"`` (Slack's
        ``{"type": "disconnect", "reason": reason}`` envelope: ``refresh_requested`` or ``warning``, after which the
        app is expected to reconnect and close this one itself, or ``link_disabled``: Socket Mode was turned off for
        the app), ``"abort"`` (the TCP connection dies: no close frame) or ``"mute"`` (the TCP connection stays open
        and nothing more comes through it either way: no pong, no acknowledgement read, no envelope sent, as when a
        network in between silently drops everything; the app has to notice by its pings)."""
        if how not in ("close", "disconnect", "abort", "mute"):
            raise ValueError(f"unknown way to drop a connection: {how!r}")
        with self._cond:
            sockets = [(ws, self._transports.get(ws)) for ws in self._sockets]

        async def end() -> None:
            for ws, transport in sockets:
                if how == "close":
                    await ws.close()
                elif how == "disconnect":
                    envelope = {"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}}
                    await ws.send_str(json.dumps(envelope))
                elif how == "mute":
                    with self._cond:
                        self._sockets.remove(ws)  # no envelope is sent on it any more
                        self._muted.append(ws)
                    if transport is not None:
                        transport.pause_reading()
                elif transport is not None:
                    transport.abort()

        asyncio.run_coroutine_threadsafe(end(), self._loop).result(10)

    def refuse_handshakes(self, times: int = 1, *, status: int = 408) -> None:
        """Refuse the next ``times`` WebSocket handshakes with HTTP ``status``; each uses up its URL's ticket."""
        with self._cond:
            self._refuse.extend([status] * times)

    def hang_handshakes(self, times: int = 1) -> None:
        """Leave the next ``times`` WebSocket handshakes unanswered: the TCP connection is accepted and the upgrade
        request read, and no answer comes (a proxy or a load balancer that holds the request); each uses up its URL's
        ticket. :attr:`hung` counts them."""
        with self._cond:
            self._hang += times

    def close_new_connections(self, times: int | None = None) -> None:
        """Accept the next ``times`` connections (every one from now on when None; none when 0) and close each
        right after its ``hello``, as a proxy or a Slack edge that accepts and then drops does."""
        with self._cond:
            self._close_new = math.inf if times is None else float(times)

    def send_text(self, text: str) -> None:
        """Send one raw text frame on the newest connection (malformed envelopes, for instance)."""
        with self._cond:
            if not self._sockets:
                raise ConnectionError("no Socket Mode connection to send on")
            ws = self._sockets[-1]
        asyncio.run_coroutine_threadsafe(ws.send_str(text), self._loop).result(10)

    # ---- sending envelopes ---------------------------------------------------------------------------------
    def send(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool = True,
        cut_off: bool = False,
    ) -> str:
        """Send one envelope of ``kind`` (``interactive``, ``slash_commands``, ``events_api``); its envelope id.
        ``cut_off``: the TCP connection dies halfway through the envelope's frame (the app gets half of it, then the
        connection ends); :meth:`resend` sends it again whole, as Slack does on the next connection."""
        envelope_id = secrets.token_hex(16)
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope |= {"retry_attempt": retry_attempt, "retry_reason": retry_reason}
        self._send_envelope(envelope, cut_off=cut_off)
        return envelope_id

    def resend(self, envelope_id: str, *, retry_attempt: int | None = None, retry_reason: str = "") -> None:
        """Send an envelope sent before again, on the newest connection — Slack's re-delivery of one that was not
        acknowledged in time: the same ``envelope_id``, with ``retry_attempt`` / ``retry_reason`` when given."""
        with self._cond:
            envelope = dict(self._sent[envelope_id])
        if retry_attempt is not None:
            envelope |= {"retry_attempt": retry_attempt, "retry_reason": retry_reason}
        self._send_envelope(envelope)

    def _send_envelope(self, envelope: dict[str, Any], *, cut_off: bool = False) -> None:
        with self._cond:
            if not self._sockets:
                raise ConnectionError("no Socket Mode connection to send on")
            ws = self._sockets[-1]
            transport = self._transports.get(ws)
            self._sent[envelope["envelope_id"]] = envelope
        if not cut_off:
            asyncio.run_coroutine_threadsafe(ws.send_str(json.dumps(envelope)), self._loop).result(10)
            return
        if transport is None:
            raise ConnectionError("no transport to cut the envelope off on")
        data = json.dumps(envelope).encode()
        # An unmasked text frame (server to client, RFC 6455 section 5.2) whose length says all of it, half of it sent.
        header = bytes([0x81, 127]) + len(data).to_bytes(8, "big")

        def cut() -> None:
            transport.write(header + data[: len(data) // 2])
            transport.abort()

        self._loop.call_soon_threadsafe(cut)

    def wait_ack(self, envelope_id: str, timeout: float = 10.0, *, count: int = 1) -> dict[str, Any]:
        """The app's acknowledgement of an envelope, once it was acknowledged ``count`` times (a re-sent envelope is
        acknowledged again); TimeoutError when that does not happen in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._ack_counts.get(envelope_id, 0) >= count, timeout):
                raise TimeoutError(f"no ack for envelope {envelope_id}")
            return self._acks[envelope_id]

    def acked(self, envelope_id: str) -> int:
        """How many times the app acknowledged an envelope."""
        with self._cond:
            return self._ack_counts.get(envelope_id, 0)

    def click(
        self,
        *,
        user_id: str,
        action_id: str,
        message: tuple[str, str],
        trigger_id: str | None = None,
        action_ts: bool = True,
        cut_off: bool = False,
    ) -> str:
        """A button click (``interactive`` / ``block_actions``) on a stored message; its envelope id. ``action_ts``
        False: the action carries none, so only the envelope tells two clicks apart. ``cut_off``: as for
        :meth:`send`."""
        payload = interactions.block_actions_payload(
            self.standin.store,
            f"{self.standin.url}/response",
            user_id=user_id,
            action_id=action_id,
            value=None,
            message=message,
            view=None,
            trigger_id=trigger_id,
            force=False,
        )
        if not action_ts:
            del payload["actions"][0]["action_ts"]
        return self.send("interactive", payload, cut_off=cut_off)

    def submit_view(self, *, user_id: str, values: Mapping[str, Mapping[str, Any]], view_id: str | None = None) -> str:
        """A modal submission (``interactive`` / ``view_submission``); its envelope id."""
        payload = interactions.view_submission_payload(
            self.standin.store, user_id=user_id, view_id=view_id, values=values
        )
        return self.send("interactive", payload)

    def slash_command(self, command: str, text: str, user_id: str, channel_id: str) -> str:
        """A slash command (``slash_commands``); its envelope id."""
        fields = interactions.slash_command_fields(
            self.standin.store,
            f"{self.standin.url}/response",
            command=command,
            text=text,
            user_id=user_id,
            channel_id=channel_id,
        )
        return self.send("slash_commands", fields)

    def event(self, event: Mapping[str, Any], *, event_id: str, retry_attempt: int = 0, retry_reason: str = "") -> str:
        """An Events API delivery (``events_api``), a retry when ``retry_attempt`` > 0; its envelope id."""
        payload = interactions.event_callback_payload(event, event_id)
        payload["team_id"] = TEAM_ID
        return self.send("events_api", payload, retry_attempt=retry_attempt, retry_reason=retry_reason)


def attach(standin: StandIn, app_token: str) -> SocketModeStandIn:
    """Start Socket Mode on ``standin``: it answers ``apps.connections.open`` for ``app_token`` from now on."""
    server = SocketModeStandIn(standin, app_token).start()
    standin.socket_mode = server
    return server
