"""Clients that stall: a request whose headers arrived but whose body stops coming — a ``Content-Length`` longer
than what is sent, a chunked body never finished, a client hung or gone quiet without closing. uvicorn has no
timeout once the headers are in, so before the fix such a request waited for its body for good: it held its
connection, and a graceful stop (SIGTERM, which waits for every request in flight) with it, until the client gave
up — or until the supervisor's SIGKILL, which skips closing the bot. Now ``NPO_BODY_TIMEOUT_S`` without any of the
body answers it 408 and closes the connection; nothing of it is stored. And a connection that never finishes a
request head (nothing sent, half a request line, headers a byte at a time) was held open for good as well; it is now
closed :data:`bot.serve.HEADER_TIMEOUT_S` after it was opened or last answered.

The timeouts here are short so the tests are quick; nothing asserts how long anything took."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hardening_testing import INGEST_TOKEN, ROOT, free_port, serve_env
from slack_testing import BotUnderTest, make_settings, prediction, reaped_processes, serving

from bot.app import build_bot
from bot.serve import ServerThread
from bot.standin import StandIn

BODY_TIMEOUT_S = 0.3


@pytest.fixture
def quick_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    built = build_bot(make_settings(tmp_path, standin, body_timeout_s=BODY_TIMEOUT_S), seed=1, run_worker=False)
    with serving(built, standin) as served:
        yield served


def _closed_by_server(sock: socket.socket, wait_s: float = 30.0) -> bytes:
    """What the server sent before closing ``sock`` (``<still open>`` when it had not closed it within ``wait_s``)."""
    sock.settimeout(wait_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received + b"<still open>"
    except ConnectionResetError:  # closed while bytes sent to it were unread
        pass
    return received


def _exchange(port: int, head: bytes, body: bytes, wait_s: float = 30.0) -> bytes:
    """Send ``head`` and part of a body, then nothing (the socket stays open); everything the server sends until
    it closes the connection (or ``wait_s`` passes: then what came, with ``<still open>``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        return _closed_by_server(sock, wait_s)


def _head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else {}, head.lower()


PARTIAL = json.dumps(prediction("stalled-1")).encode()[:20]
AUTH = "Authorization: Bearer ingest-token-0123456789"  # make_settings' ingest token


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/api/v1/predictions", (AUTH, "Content-Type: application/json", "Content-Length: 500"), PARTIAL),
        ("/api/v1/alertmanager", (AUTH, "Transfer-Encoding: chunked"), b"14\r\n" + PARTIAL + b"\r\n"),
        ("/api/v1/outcomes", (AUTH, "Content-Length: 10"), b""),
        ("/slack/events", ("Content-Type: application/json", "Content-Length: 500"), PARTIAL),
    ],
    ids=["longer-content-length", "chunked-unfinished", "no-body-at-all", "slack"],
)
def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed(
    quick_bot: BotUnderTest, path: str, headers: tuple[str, ...], body: bytes
) -> None:
    before = quick_bot.counts()
    raw = _exchange(quick_bot.server.port, _head(path, *headers), body)
    assert not raw.endswith(b"<still open>"), f"the server still waits for the body: {raw!r}"
    status, answer, head = _status_and_body(raw)
    assert status == 408, raw
    assert answer["field"] == "(body)" and f"{BODY_TIMEOUT_S:g} s" in str(answer["error"]), answer
    assert b"connection: close" in head
    assert quick_bot.counts() == before
    assert quick_bot.ingest(prediction("after-stall")).status_code == 200  # the server serves on


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    yield from reaped_processes()


@pytest.mark.slow
def test_sigterm_with_a_stalled_body_in_flight_stops_the_server(
    tmp_path: Path, standin: StandIn, stopped: list[subprocess.Popen[bytes]]
) -> None:
    """A real ``npo-bot serve``: a client sends a request's headers and part of its body, then nothing, and keeps
    the connection open; SIGTERM. The stalled request is answered 408 (nothing stored) and the server stops and
    closes the bot (exit 0, "npo-bot stopped (SIGTERM)"). Before the fix it waited for the body for as long as the
    client kept the connection open."""
    port = free_port()
    env = serve_env(tmp_path / "npo.db", standin.api_url, port, NPO_BODY_TIMEOUT_S="1")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--env-file", os.devnull],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stopped.append(proc)
    deadline = time.monotonic() + 30
    while True:  # serving: the port is held before the server starts, so a connection alone does not say so
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    auth = f"Authorization: Bearer {INGEST_TOKEN}"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head("/api/v1/predictions", auth, "Content-Length: 500") + PARTIAL)
        time.sleep(0.2)  # the request is in flight (its headers read)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not stop the server while a client held a request body open")
        sock.settimeout(5)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert _status_and_body(raw)[0] == 408, raw
    output = log.read_text()
    assert code == 0 and "npo-bot stopped (SIGTERM)" in output and "Traceback" not in output, output[-2000:]
    with sqlite3.connect(tmp_path / "npo.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0


# -- a request head that never completes -----------------------------------------------------------------------------
HEAD_TIMEOUT_S = 0.3


@pytest.fixture
def head_timeout_server(tmp_path: Path, standin: StandIn) -> Iterator[ServerThread]:
    built = build_bot(make_settings(tmp_path, standin), seed=1, run_worker=False)
    server = ServerThread(built.asgi, loop="asyncio", header_timeout_s=HEAD_TIMEOUT_S).start()
    try:
        yield server
    finally:
        server.stop()
        built.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /api/v1/predictions HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"],
    ids=["nothing", "request-line-only", "headers-unfinished"],
)
def test_a_connection_that_never_finishes_a_request_head_is_closed(
    head_timeout_server: ServerThread, sent: bytes
) -> None:
    """Before the fix uvicorn held such a connection open for good (its keep-alive timeout starts only after an
    answer): 3,000 of them stayed open indefinitely, one file descriptor each."""
    with socket.create_connection(("127.0.0.1", head_timeout_server.port)) as sock:
        sock.sendall(sent)
        assert _closed_by_server(sock) == b""


def test_a_head_sent_a_byte_at_a_time_does_not_keep_the_connection(head_timeout_server: ServerThread) -> None:
    """Each byte arriving (slowloris) cancels uvicorn's own keep-alive timeout; the head's timeout is not reset by
    it. The bytes keep coming until the server closes the connection (or a byte is refused)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 300
    with socket.create_connection(("127.0.0.1", head_timeout_server.port)) as sock:
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed the connection: a reset
                break
            readable, _, _ = select.select([sock], [], [], HEAD_TIMEOUT_S / 3)
            if readable:
                assert _closed_by_server(sock) == b""
                break
        else:
            pytest.fail("the server kept a connection sending a never-ending request head")


def test_requests_on_a_kept_alive_connection_are_served_and_a_slow_body_is_not_cut_by_the_head_timeout(
    head_timeout_server: ServerThread,
) -> None:
    """The head timeout concerns the head only: a request whose head is in is not closed under it while its body
    (or its answer) takes longer than the head timeout."""
    auth = "Authorization: Bearer ingest-token-0123456789"
    body = json.dumps(prediction("slow-body")).encode()
    with socket.create_connection(("127.0.0.1", head_timeout_server.port)) as sock:
        sock.settimeout(30)
        for _ in range(2):  # two requests on one connection
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _one_answer(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(_head("/api/v1/predictions", auth, f"Content-Length: {len(body)}") + body[:10])
        time.sleep(HEAD_TIMEOUT_S * 3)  # past the head timeout, well within the body's (30 s)
        sock.sendall(body[10:])
        answer = _one_answer(sock)
    assert _status_and_body(answer)[0] == 200, answer


def _one_answer(sock: socket.socket) -> bytes:
    """One HTTP answer read off ``sock`` (its head and a body of its ``Content-Length``)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, f"the connection was closed: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection was closed: {answer!r}"
        body += chunk
    return head + b"\r\n\r\n" + body
