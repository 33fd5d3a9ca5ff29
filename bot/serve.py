"""``npo-bot serve``: the ASGI app under uvicorn (httptools + uvloop when installed), in the foreground; and
:class:`ServerThread`, the same server on a background thread (tests, benchmarks, the demo).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from bot.app import build_bot
from bot.config import Settings

log = logging.getLogger(__name__)


def fast_impl() -> tuple[str, str]:
    """uvicorn's (loop, http) implementations: uvloop/httptools when importable, else asyncio/h11."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def uvicorn_config(
    app: ASGIApp, host: str, port: int, *, log_level: str = "info", loop: str | None = None
) -> uvicorn.Config:
    """uvicorn settings for NPO: the fastest loop/HTTP implementation available, lifespan on, no access log."""
    fast_loop, http = fast_impl()
    loop = loop or fast_loop
    return uvicorn.Config(
        app, host=host, port=port, loop=loop, http=http, log_level=log_level, lifespan="on", access_log=False
    )


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; the delivery worker stops with the server. Returns the exit status."""
    bot = build_bot(settings)
    log.info("npo-bot serving on http://%s:%d (settings: %s)", settings.host, settings.port, settings.redacted())
    try:
        uvicorn.Server(uvicorn_config(bot.asgi, settings.host, settings.port)).run()
    finally:
        bot.close()
    return 0


class ServerThread:
    """Serve ``app`` on 127.0.0.1 (an ephemeral port unless given) in a background thread.

    ``url`` is ``http://127.0.0.1:PORT``. ``stop()`` shuts the server down (lifespan included) and joins the thread;
    ``loop="asyncio"`` makes every socket go through Python's ``socket`` module (the tests' network guard sees
    uvloop's connections only that way). ``start()`` may be called again afterwards on the same port (an outage
    and its recovery).
    """

    def __init__(self, app: ASGIApp, *, port: int = 0, log_level: str = "warning", loop: str | None = None) -> None:
        self.app = app
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
            uvicorn_config(self.app, "127.0.0.1", self.port, log_level=self.log_level, loop=self.loop)
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
