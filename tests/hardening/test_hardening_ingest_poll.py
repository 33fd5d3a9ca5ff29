"""The predictions poller as ``serve`` runs it (``NPO_POLL_URL``), against a feed on loopback that keeps its answer
coming without ever finishing it: the poll gives up at its time limit, the bot keeps polling, and shutting the bot
down is not held up by the poll in progress."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from slack_testing import make_settings, prediction, wait_for

from bot.app import build_bot
from bot.serve import ServerThread
from bot.standin import StandIn


class _Feed(BaseHTTPRequestHandler):
    """Answers ``answer`` — or, while ``computing`` is set, an interim ``102 Processing`` five times a second and
    never the answer (a feed computing its predictions on request, behind a gateway that keeps the request
    alive)."""

    answer: bytes = b"[]"
    computing = threading.Event()
    closing = threading.Event()
    requests: list[float]

    def do_GET(self) -> None:
        type(self).requests.append(time.monotonic())
        if self.computing.is_set():
            with contextlib.suppress(OSError):
                while self.computing.is_set() and not self.closing.wait(0.2):
                    self.wfile.write(b"HTTP/1.1 102 Processing\r\n\r\n")
                    self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def feed() -> Iterator[tuple[str, type[_Feed]]]:
    handler: type[_Feed] = type(
        "Feed", (_Feed,), {"computing": threading.Event(), "closing": threading.Event(), "requests": []}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/predictions", handler
    finally:
        handler.closing.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_poll_whose_answer_never_ends_neither_stops_polling_nor_holds_up_shutdown(
    tmp_path: Path, standin: StandIn, feed: tuple[str, type[_Feed]]
) -> None:
    """Before, the poll's time limit (``NPO_SLACK_TIMEOUT_S``) was checked only while the body was read: a feed
    answering ``102 Processing`` for ever held the poller's only thread — no further poll, no log line — and
    shutting the bot down waited 10 s for it, then left the thread running."""
    url, handler = feed
    settings = make_settings(tmp_path, standin, poll_url=url, poll_interval_s=1.0, slack_timeout_s=1.0)
    handler.computing.set()
    built = build_bot(settings, seed=1)
    server = ServerThread(built.asgi, loop="asyncio").start()
    closed = False
    try:
        wait_for(lambda: len(handler.requests) >= 2)  # the first poll gave up at 1 s; polled again
        handler.answer = json.dumps([prediction("polled-1")]).encode()
        handler.computing.clear()
        wait_for(lambda: built.store.prediction("polled-1") is not None)  # the feed is back: decided
        handler.computing.set()
        polls = len(handler.requests)
        wait_for(lambda: len(handler.requests) > polls)  # a poll is in progress, held up by the feed
        started = time.monotonic()
        server.stop()
        built.close()
        closed = True
        assert time.monotonic() - started < 4, "shutting down waited for the poll in progress"
        assert not [t for t in threading.enumerate() if t.name == "npo-poller"]
    finally:
        if not closed:
            server.stop()
            built.close()
