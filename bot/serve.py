"""``npo-bot serve``: the ASGI app under uvicorn (httptools + uvloop when installed), in the foreground; and
:class:`ServerThread`, the same server on a background thread (tests, benchmarks, the demo).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from bot.app import Bot, build_bot
from bot.config import Settings

log = logging.getLogger(__name__)


def fast_impl() -> tuple[str, str]:
    """uvicorn's (loop, http) implementations: uvloop/httptools when importable, else asyncio/h11."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


HEADER_TIMEOUT_S = 30.0  # a connection's next request must have all its headers in this long after the last answer


def with_header_timeout(base: type[asyncio.Protocol], timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ``base`` (httptools or h11) closing a connection that has not sent a whole request
    head ``timeout_s`` after it was opened or after its last answer. uvicorn times a connection out only while it
    is idle after an answer (keep-alive, 5 s) and cancels that on the first byte it gets: a connection that sends
    nothing at all, or part of a request line or headers (a byte now and then), would be held open for good, a file
    descriptor each, until the process has none left to accept ``/healthz`` with. A request whose head is in is
    not concerned (its body has ``NPO_BODY_TIMEOUT_S``)."""

    class HeaderTimeout(base):  # type: ignore[misc,valid-type]
        _head_due: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm_head_timeout()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timeout()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_due is not None:
                self._head_due.cancel()
                self._head_due = None
            super().connection_lost(exc)

        def _arm_head_timeout(self) -> None:
            if self._head_due is not None:
                self._head_due.cancel()
            self._head_due = None if self.transport.is_closing() else self.loop.call_later(timeout_s, self._head_late)

        def _head_late(self) -> None:
            self._head_due = None
            waiting_for_head = self.cycle is None or self.cycle.response_complete  # no request under way
            if waiting_for_head and not self.transport.is_closing():
                self.transport.close()

    HeaderTimeout.__name__ = HeaderTimeout.__qualname__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeout


def uvicorn_config(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    loop: str | None = None,
    header_timeout_s: float = HEADER_TIMEOUT_S,
) -> uvicorn.Config:
    """uvicorn settings for NPO: the fastest loop/HTTP implementation available (with a timeout on a request's
    head: :func:`with_header_timeout`), lifespan on, no access log.

    Without a stdout (started with ``>&-``) colours are off: uvicorn would otherwise ask the missing stdout whether
    it is a terminal and fail to start."""
    fast_loop, http = fast_impl()
    loop = loop or fast_loop
    protocol = with_header_timeout(import_from_string(HTTP_PROTOCOLS[http]), header_timeout_s)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=protocol,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        use_colors=False if sys.stdout is None else None,
    )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT/SIGTERM handling around a uvicorn server *and* the clean-up after it (a context manager).

    uvicorn's ``Server.serve()`` installs its own SIGINT/SIGTERM handlers, shuts down gracefully on a signal, then
    restores the handlers it found and re-raises the signal so that the *previous* handler sees it. Left at the
    defaults, that re-raise kills the process (SIGTERM: exit 143 before anything after ``run()`` happens; SIGINT: a
    ``KeyboardInterrupt`` traceback). Inside this block the previous handler is this one instead:

    * while ``server`` runs (before uvicorn's handlers are in and for the re-raise after they are out) a signal asks
      it to stop, as uvicorn would (``should_exit``; a SIGINT after another signal sets ``force_exit`` — the
      re-raise of the one signal uvicorn stopped on is not a second one);
    * after :meth:`closing` (the server has stopped, the bot is being closed) SIGTERM is ignored and a further
      SIGINT ends the process at once (``os._exit(130)``): SQLite's WAL keeps the database consistent, the next
      open recovers it.

    Only on the main thread (elsewhere signals cannot be handled and nothing is installed). ``server`` may be set
    after entering (a server created inside the event loop); a signal received before that stops it at once.
    """

    def __init__(self, server: uvicorn.Server | None = None) -> None:
        self._server: uvicorn.Server | None = None
        self.received: list[int] = []
        self._closing = False
        self._previous: dict[int, object] = {}
        self.server = server

    @property
    def server(self) -> uvicorn.Server | None:
        return self._server

    @server.setter
    def server(self, server: uvicorn.Server | None) -> None:
        self._server = server
        if server is not None and self.received:
            server.should_exit = True  # a signal came before the server existed

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}

    def closing(self) -> None:
        """The server has stopped: from now on a signal no longer concerns it (see the class docstring)."""
        self._closing = True

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)
        if self._closing:
            if sig == signal.SIGINT:
                os.write(2, b"npo-bot: interrupted while closing; exiting without waiting\n")
                os._exit(130)
            return
        server = self._server
        if server is None:
            return  # recorded: the server stops as soon as it is set
        # A SIGINT forces the stop only after another signal: uvicorn hands the one it stopped on back to this
        # handler once it is done, and that one Ctrl-C must not make a stop that waits (Socket Mode's envelopes in
        # hand) one that does not.
        if server.should_exit and sig == signal.SIGINT and len(self.received) > 1:
            server.force_exit = True
        else:
            server.should_exit = True


def forced_stop_shuts_down(asgi: ASGIApp, forced: Callable[[], bool]) -> ASGIApp:
    """``asgi`` whose lifespan still shuts down (worker, scheduler, poller stopped) when the stop is forced: a second
    Ctrl-C (uvicorn's ``force_exit``, ``forced()``) skips the shutdown event, then ``asyncio.run`` cancels the
    lifespan task, which uvicorn would log as a failed lifespan with its traceback."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await asgi(scope, receive, send)
            return

        async def receive_lifespan() -> Message:
            try:
                return await receive()
            except asyncio.CancelledError:
                if not forced():
                    raise
                log.warning("forced stop: requests in flight were not waited for")
                return {"type": "lifespan.shutdown"}

        await asgi(scope, receive_lifespan, send)

    return app


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address ``host:port`` names and listening, as uvicorn binds them (``SO_REUSEADDR``;
    IPv6 only for an IPv6 socket), to hand to it: held from before anything starts, so of two processes started
    together on one port the second is refused at once, not after it built its bot. Raises ``OSError`` (a port in
    use, not allowed, a host name that does not resolve), with none of them left open."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in addresses:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this system lacks: uvicorn's event loop skips it too
                continue
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            # Listening at once claims the port: on Linux two sockets with SO_REUSEADDR may both bind one port as
            # long as neither listens.
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


LISTEN_BACKLOG = 2048  # uvicorn's default backlog


def claim_address(settings: Settings, command: str) -> list[socket.socket] | int:
    """The listening sockets of ``NPO_HOST:NPO_PORT`` (:func:`listen_sockets`), or the exit status of ``npo-bot
    COMMAND`` when it cannot listen there, after one line on standard error naming the settings: 2 when it is not
    allowed to (a port below 1024 without the privilege: a restart would only repeat it), 1 otherwise (the port in
    use — by another ``serve`` or ``socket`` —, a host name that does not resolve: that may pass). Claimed before
    anything starts."""
    try:
        return listen_sockets(settings.host, settings.port)
    except OSError as refused:
        print(
            f"npo-bot {command}: cannot listen on {settings.host}:{settings.port} (NPO_HOST, NPO_PORT): "
            f"{refused.strerror or refused}",
            file=sys.stderr,
        )
        return 2 if refused.errno == errno.EACCES else 1


def build_holding(settings: Settings, sockets: list[socket.socket]) -> Bot:
    """``build_bot(settings)`` while holding the claimed ``sockets``, which are closed if it fails."""
    try:
        return build_bot(settings)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM: uvicorn stops gracefully (requests in flight finish), then the bot closes (worker,
    scheduler, poller, the SQLite store: its WAL is checkpointed). Returns the exit status (0 after a signal).

    The address is claimed before anything starts: one it cannot listen on (in use, also by a process started at
    the same moment) stops it with exit status 2 or 1 and no scheduler, worker or poller run, see
    :func:`claim_address`."""
    sockets = claim_address(settings, "serve")
    if isinstance(sockets, int):
        return sockets
    bot = build_holding(settings, sockets)
    log.info("npo-bot serving on http://%s:%d (settings: %s)", settings.host, settings.port, settings.redacted())
    server = uvicorn.Server(
        uvicorn_config(forced_stop_shuts_down(bot.asgi, lambda: server.force_exit), settings.host, settings.port)
    )
    with StopSignals(server) as stops:
        try:
            server.run(sockets=sockets)
        finally:
            stops.closing()
            for sock in sockets:
                sock.close()
            bot.close()
    names = sorted({signal.Signals(sig).name for sig in stops.received})
    log.info("npo-bot stopped%s", f" ({', '.join(names)})" if names else "")
    return 0


class ServerThread:
    """Serve ``app`` on 127.0.0.1 (an ephemeral port unless given) in a background thread.

    ``url`` is ``http://127.0.0.1:PORT``. ``stop()`` shuts the server down (lifespan included) and joins the thread;
    ``header_timeout_s``: see :func:`with_header_timeout`;
    ``loop="asyncio"`` makes every socket go through Python's ``socket`` module (the tests' network guard sees
    uvloop's connections only that way). ``start()`` may be called again afterwards on the same port (an outage
    and its recovery).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int = 0,
        log_level: str = "warning",
        loop: str | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.header_timeout_s = header_timeout_s
        self.loop = loop
        self.port = port
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets: no Nagle wait
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn_config(
                self.app,
                "127.0.0.1",
                self.port,
                log_level=self.log_level,
                loop=self.loop,
                header_timeout_s=self.header_timeout_s,
            )
        )
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
