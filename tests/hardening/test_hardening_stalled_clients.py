"""Clients that stall: a request whose headers arrived but whose body stops coming — a ``Content-Length`` longer
than what is sent, a chunked body never finished, a client hung or gone quiet without closing. uvicorn has no
timeout once the headers are in, so before the fix such a request waited for its body for good: it held its
connection, and a graceful stop (SIGTERM, which waits for every request in flight) with it, until the client gave
up — or until the supervisor's SIGKILL, which skips closing the bot. Now ``NPO_BODY_TIMEOUT_S`` without any of the
body answers it 408 and closes the connection; nothing of it is stored.

The timeouts here are short so the tests are quick; nothing asserts how long anything took."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening_testing import INGEST_TOKEN, ROOT, free_port, serve_env
from slack_testing import BotUnderTest, make_settings, prediction, reaped_processes, serving

from bot.app import build_bot
from bot.standin import StandIn

BODY_TIMEOUT_S = 0.3


@pytest.fixture
def quick_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    built = build_bot(make_settings(tmp_path, standin, body_timeout_s=BODY_TIMEOUT_S), seed=1, run_worker=False)
    with serving(built, standin) as served:
        yield served


def _exchange(port: int, head: bytes, body: bytes, wait_s: float = 30.0) -> bytes:
    """Send ``head`` and part of a body, then nothing (the socket stays open); everything the server sends until
    it closes the connection (or ``wait_s`` passes: then what came, with ``<still open>``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(wait_s)
        sock.sendall(head + body)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received + b"<still open>"
        return received


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
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
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
