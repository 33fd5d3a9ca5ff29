"""Socket Mode as a bot running for weeks meets it: connections that end, Slack re-delivering envelopes,
``apps.connections.open`` failing, a token revoked while running, a stop signal while Slack is unreachable, and
messages that are not envelopes — through the real client, the stand-in's WebSocket and, where the exit status and
the signals matter, the real ``npo-bot socket`` process."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from slack_testing import ALICE, BOB, INCIDENT, make_settings, prediction, reaped_processes, wait_for
from socket_testing import APP_TOKEN, SocketBot, start_socket_cli

from bot.app import build_bot
from bot.socket_mode import RETRY_AFTER_CAP_S, SocketModeService
from bot.standin import StandIn
from bot.standin.socket_mode import SocketModeStandIn

OPEN = "apps.connections.open"


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records with a traceback, and errors: what a failure handled as designed must not produce."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.exc_info or (r.levelno >= logging.ERROR and r.name.startswith(("bot", "slack")))
    ]


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.socket_mode" and text in r.getMessage()]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed afterwards should the test fail before they exit."""
    yield from reaped_processes()


# ---- the connection ends: the bot reconnects and every click counts once ----------------------------------------
@pytest.mark.parametrize(
    ("how", "reason"),
    [("close", ""), ("disconnect", "refresh_requested"), ("disconnect", "warning"), ("abort", "")],
    ids=["close-frame", "disconnect-refresh_requested", "disconnect-warning", "tcp-dies"],
)
def test_the_bot_reconnects_when_the_connection_ends(
    make_socket_bot: Callable[..., SocketBot], how: str, reason: str
) -> None:
    bot = make_socket_bot(ping_interval=0.5)  # a dead TCP connection is found by the ping
    message = bot.surface("p1")
    opened = len(bot.standin.calls(OPEN))
    bot.socket.drop(how, reason=reason or "refresh_requested")
    bot.socket.wait_connected(accepted=2)
    wait_for(lambda: bot.socket.connected() == 1)  # after a `disconnect`, the bot closed the old one itself
    assert len(bot.standin.calls(OPEN)) == opened + 1  # a fresh URL for the new connection
    envelope = bot.socket.click(user_id=ALICE, action_id="npo_like", message=message)
    bot.socket.wait_ack(envelope)
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("disconnect", "warning"),
        ("disconnect", "refresh_requested"),
        ("disconnect", "too_many_websockets"),
        ("close", ""),
        ("abort", ""),
    ],
    ids=["disconnect-warning", "disconnect-refresh_requested", "disconnect-too_many_websockets", "close", "tcp-dies"],
)
def test_an_envelope_in_hand_when_the_connection_ends_is_acknowledged_on_the_new_one_and_handled_once(
    make_socket_bot: Callable[..., SocketBot], how: str, reason: str
) -> None:
    """An Override click is being handled (``views.open`` held) when Slack ends the connection or asks for a new one:
    its acknowledgement goes on the new connection, and Slack's re-delivery of it opens no second form."""
    bot = make_socket_bot(ping_interval=0.5)
    message = bot.surface("p1")
    bot.standin.faults.delay("views.open", 1.0, times=1)
    envelope = bot.socket.click(user_id=BOB, action_id="npo_override", message=message)
    wait_for(lambda: not bot.standin.faults.pending("views.open"))  # views.open is being answered
    bot.socket.drop(how, reason=reason or "refresh_requested")
    bot.socket.wait_connected(accepted=2)
    bot.socket.wait_ack(envelope)
    bot.socket.resend(envelope, retry_attempt=1, retry_reason="timeout")
    bot.socket.wait_ack(envelope, count=2)
    assert [view["callback_id"] for view in bot.standin.views()] == ["npo_override_modal"]


def test_a_connection_that_goes_silent_is_found_by_the_ping_and_replaced(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """The TCP connection stays open but nothing comes through it any more (no pong, no acknowledgement read): the
    ping finds it, the bot reconnects, and the envelope whose acknowledgement was lost is sent again by Slack and
    acknowledged, its work not done twice."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(ping_interval=0.5)
    message = bot.surface("p1")
    bot.standin.faults.delay("views.open", 1.0, times=1)
    envelope = bot.socket.click(user_id=BOB, action_id="npo_override", message=message)
    wait_for(lambda: not bot.standin.faults.pending("views.open"))
    bot.socket.drop("mute")
    bot.socket.wait_connected(accepted=2, timeout=20)
    bot.socket.resend(envelope, retry_attempt=1, retry_reason="timeout")
    bot.socket.wait_ack(envelope)
    assert [view["callback_id"] for view in bot.standin.views()] == ["npo_override_modal"]
    bot.socket.wait_ack(bot.socket.click(user_id=ALICE, action_id="npo_like", message=message))
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]
    assert not _problems(caplog)


def test_a_connection_that_dies_halfway_through_an_envelope_is_replaced_and_the_envelope_counts_once(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """The TCP connection dies with half of a click's frame received: nothing is recorded from the half, the bot
    reconnects, and Slack's re-deliveries of the click (whole) are recorded once and acknowledged each time."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(ping_interval=0.5)
    message = bot.surface("p1")
    envelope = bot.socket.click(user_id=ALICE, action_id="npo_like", message=message, cut_off=True)
    bot.socket.wait_connected(accepted=2, timeout=20)
    assert bot.socket.acked(envelope) == 0
    assert bot.rows("SELECT operator, kind FROM feedback") == []
    bot.socket.resend(envelope)
    bot.socket.resend(envelope, retry_attempt=1, retry_reason="timeout")
    bot.socket.wait_ack(envelope, count=2)
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]
    assert not _problems(caplog)


def test_too_many_connections_on_the_app_token_is_a_warning_naming_what_to_fix(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """Slack allows an app 10 Socket Mode connections and closes the extra one with ``too_many_websockets``: a process
    too many runs on the app token. That was logged at INFO as a routine refresh; it is now one warning saying what to
    stop, and the bot still reconnects."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot()
    bot.socket.drop("disconnect", reason="too_many_websockets")
    bot.socket.wait_connected(accepted=2)
    ours = [r for r in caplog.records if r.name == "bot.socket_mode"]
    lines = [(r.levelname, r.getMessage()) for r in ours if "too_many" in r.getMessage()]
    assert len(lines) == 1 and lines[0][0] == "WARNING" and "SLACK_APP_TOKEN" in lines[0][1], lines
    assert "xapp-" not in lines[0][1]


def test_an_envelope_delivered_again_is_recorded_once(socket_bot: SocketBot) -> None:
    """Slack re-delivers an envelope it saw no ack for: the same envelope_id, or with ``retry_attempt``."""
    message = socket_bot.surface("p1")
    envelope = socket_bot.socket.click(user_id=ALICE, action_id="npo_like", message=message)
    socket_bot.socket.wait_ack(envelope)
    socket_bot.socket.resend(envelope)
    socket_bot.socket.resend(envelope, retry_attempt=1, retry_reason="timeout")
    socket_bot.socket.wait_ack(envelope, count=3)  # acknowledged each time, so Slack stops re-sending
    assert socket_bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]
    assert socket_bot.rows("SELECT COALESCE(SUM(pulls), 0) FROM bandit_arms") == [(1,)]


# ---- connecting fails -------------------------------------------------------------------------------------------
def test_a_refused_websocket_handshake_is_retried_on_a_fresh_url(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """A WebSocket URL is good for one connection. slack-sdk retried a failed handshake on the same URL every
    ``ping_interval``, forever (a traceback each time, the bot deaf until restarted)."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(retry_delays=(0.1, 0.2))
    message = bot.surface("p1")
    opened = len(bot.standin.calls(OPEN))
    bot.socket.refuse_handshakes(2)
    bot.socket.drop("close")
    bot.socket.wait_connected(accepted=2)
    calls = bot.standin.calls(OPEN)[opened:]
    urls = [call.response["url"] for call in calls]
    assert len(urls) == 3 and len(set(urls)) == 3  # one URL per attempt
    assert bot.socket.refused == 2
    assert len(_warnings(caplog, "the WebSocket did not open")) == 2
    # the stand-in accepts the socket before the client returns from its handshake and logs the recovery
    wait_for(lambda: _warnings(caplog, "connected after 2 failed attempts"))
    assert not _problems(caplog)
    bot.socket.wait_ack(bot.socket.click(user_id=BOB, action_id="npo_like", message=message))
    assert bot.rows("SELECT operator, kind FROM feedback") == [(BOB, "like")]


@pytest.mark.parametrize("when", ["at-start", "reconnecting"])
def test_a_websocket_handshake_nobody_answers_times_out_and_is_retried_on_a_fresh_url(
    make_socket_bot: Callable[..., SocketBot],
    socket_server: SocketModeStandIn,
    caplog: pytest.LogCaptureFixture,
    when: str,
) -> None:
    """A proxy or load balancer accepts the TCP connection and never answers the WebSocket upgrade. The handshake
    waited for aiohttp's session default of 5 minutes, without a word: at start the bot (and its ingest API) stayed
    down that long, and on a reconnection no click or command arrived meanwhile. It is now given up after
    ``NPO_SLACK_TIMEOUT_S`` (2 s in these tests) with one warning line, and retried on a fresh URL."""
    caplog.set_level(logging.INFO)
    if when == "at-start":
        socket_server.hang_handshakes(1)
        bot = make_socket_bot(retry_delays=(0.1, 0.2))
        assert socket_server.hung == 1 and socket_server.accepted == 1
    else:
        bot = make_socket_bot(retry_delays=(0.1, 0.2))
        bot.socket.hang_handshakes(1)
        bot.socket.drop("close")
        bot.socket.wait_connected(accepted=2, timeout=20)
        assert bot.socket.hung == 1
    (line,) = wait_for(lambda: _warnings(caplog, "the WebSocket did not open"))
    assert "no answer" in line and "2 s" in line, line
    wait_for(lambda: _warnings(caplog, "connected after 1 failed attempts"))
    assert not _problems(caplog)
    message = bot.surface("p1")
    bot.socket.wait_ack(bot.socket.click(user_id=ALICE, action_id="npo_like", message=message))
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]


def test_start_up_rides_out_failures_of_apps_connections_open(
    tmp_path: Path, standin: StandIn, socket_server: SocketModeStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack unreachable, an answer that is not JSON, a 5xx and a 429 before the first connection: one warning line
    each, waits that grow (a 429's Retry-After at least), then the bot connects. Before, the first two ended
    start-up with a traceback (exit 1) and the 5xx was logged with a traceback on every retry."""
    caplog.set_level(logging.INFO)
    standin.faults.disconnect(OPEN, times=2)  # slack-sdk's client tries a dropped connection twice
    standin.faults.malformed(OPEN)
    standin.faults.server_error(OPEN, status=503)
    standin.faults.rate_limit(OPEN, retry_after=1)
    built = build_bot(make_settings(tmp_path, standin, slack_app_token=APP_TOKEN, port=0), seed=1)
    service = SocketModeService(built, log_level="warning", retry_delays=(0.1, 0.2))
    try:
        service.start_thread(timeout=20)
        calls = standin.calls(OPEN)
        assert [call.status for call in calls] == [0, 0, 200, 503, 429, 200]
        assert calls[5].monotonic - calls[4].monotonic >= 1.0  # Retry-After
        assert calls[3].monotonic - calls[2].monotonic >= 0.2  # backing off: 0.1 s, then 0.2 s
        failures = _warnings(caplog, "apps.connections.open failed")
        assert len(failures) == 4, failures
        assert "ServerDisconnectedError" in failures[0]
        assert "could not be read" in failures[1]
        assert "HTTP 503" in failures[2] and "HTTP 429: ratelimited" in failures[3]
        assert not _problems(caplog)
        assert socket_server.connected() == 1
    finally:
        service.stop()
        built.close()


def test_a_token_revoked_while_running_stops_the_bot_with_status_2(
    tmp_path: Path,
    standin: StandIn,
    socket_server: SocketModeStandIn,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """The connection ends and ``apps.connections.open`` now answers ``token_revoked``: one error line and exit
    status 2 (the supervisor sees it). Before, the bot asked again every 10 s forever, logging two errors each
    time, with the process up and deaf."""
    proc = start_socket_cli(tmp_path, standin.api_url)
    processes.append(proc)
    socket_server.wait_connected(timeout=30)
    standin.faults.error(OPEN, "token_revoked", times=None)
    asked = len(standin.calls(OPEN))
    socket_server.drop("close")
    code = proc.wait(timeout=30)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 2, stderr[-2000:]
    assert "SLACK_APP_TOKEN was refused by apps.connections.open: token_revoked" in stderr
    assert "Traceback" not in stderr
    assert len(standin.calls(OPEN)) == asked + 1  # asked once, not again and again
    assert not (tmp_path / "npo.db-wal").exists()  # the store was closed


@pytest.mark.parametrize("where", ["standin-without-socket-mode", "wrong-path"])
def test_an_api_url_without_apps_connections_open_stops_the_bot_with_status_2(
    tmp_path: Path, standin: StandIn, processes: list[subprocess.Popen[bytes]], where: str
) -> None:
    """``SLACK_API_URL`` answering HTTP 404 for ``apps.connections.open`` (the stand-in without its Socket Mode part,
    a base URL with a wrong path) is a setting to correct: one error line naming the URL and the setting, exit
    status 2. Before, the bot asked again without limit, up to every 60 s, with the process up and deaf."""
    api_url = standin.api_url if where == "standin-without-socket-mode" else f"{standin.url}/nope/"
    proc = start_socket_cli(tmp_path, api_url)
    processes.append(proc)
    code = proc.wait(timeout=30)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr[-2000:]
    assert f"SLACK_API_URL: {api_url}apps.connections.open answered HTTP 404" in errors[0]
    assert "Traceback" not in stderr
    asked = [c.status for c in standin.calls(OPEN)]
    assert asked == ([404] if where == "standin-without-socket-mode" else [])  # once, not again and again


def test_a_port_in_use_stops_socket_before_anything_starts(
    tmp_path: Path, standin: StandIn, socket_server: SocketModeStandIn, processes: list[subprocess.Popen[bytes]]
) -> None:
    """``npo-bot socket`` on a port another process listens on (a ``serve`` or a second ``socket`` with the same
    settings file): one line naming the settings and exit 1, as ``serve`` does — before it opens the database,
    connects to Slack (where it could be handed envelopes) or starts its scheduler and delivery worker. Before, it
    did all that, then failed to bind with exit status 3 and three tracebacks (the bind, the scheduler's thread, an
    unretrieved task)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = start_socket_cli(tmp_path, standin.api_url, port=port)
        processes.append(proc)
        code = proc.wait(timeout=30)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 1, stderr[-2000:]
    assert f"npo-bot socket: cannot listen on 127.0.0.1:{port} (NPO_HOST, NPO_PORT): Address already in use" in stderr
    assert "Traceback" not in stderr and "Scheduler started" not in stderr, stderr[-2000:]
    assert standin.calls(OPEN) == [] and socket_server.connected() == 0
    assert not (tmp_path / "npo.db").exists()


@pytest.mark.parametrize("how", ["close", "disconnect"], ids=["close-frame", "disconnect-refresh_requested"])
def test_a_token_revoked_while_running_is_told_in_one_error_line(
    tmp_path: Path,
    standin: StandIn,
    socket_server: SocketModeStandIn,
    processes: list[subprocess.Popen[bytes]],
    how: str,
) -> None:
    """However the connection ends — a close frame or Slack's routine ``disconnect`` (``refresh_requested``) — a
    refused token is one error line. Before, the reconnection that met it also logged it: after a ``disconnect`` as
    "Failed to run message listeners" with a traceback, after a close frame as "Failed to receive or enqueue a
    message"."""
    proc = start_socket_cli(tmp_path, standin.api_url)
    processes.append(proc)
    socket_server.wait_connected(timeout=30)
    standin.faults.error(OPEN, "token_revoked", times=None)
    socket_server.drop(how, reason="refresh_requested")
    code = proc.wait(timeout=30)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "SLACK_APP_TOKEN was refused by apps.connections.open: token_revoked; stopping" in errors[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_while_slack_is_unreachable_at_start_stops_the_bot(
    tmp_path: Path,
    standin: StandIn,
    socket_server: SocketModeStandIn,
    processes: list[subprocess.Popen[bytes]],
    sig: signal.Signals,
) -> None:
    """``apps.connections.open`` answers 503 at start-up (the first connection is being retried): SIGTERM or Ctrl-C
    stops the bot at once, exit 0. Before, both were ignored until the connection opened (only SIGKILL helped)."""
    standin.faults.server_error(OPEN, times=None, status=503)
    proc = start_socket_cli(tmp_path, standin.api_url)
    processes.append(proc)
    wait_for(lambda: standin.calls(OPEN), timeout=30)
    proc.send_signal(sig)
    code = proc.wait(timeout=20)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 0, stderr[-2000:]
    assert f"npo-bot stopped ({sig.name})" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert socket_server.accepted == 0
    assert not (tmp_path / "npo.db-wal").exists()  # the store was closed


# ---- stopping -------------------------------------------------------------------------------------------------
def test_an_envelope_being_handled_when_the_bot_stops_is_finished_and_acknowledged(socket_bot: SocketBot) -> None:
    """A stop (SIGTERM, Ctrl-C) lets an envelope in hand finish — its work done, its ack sent — as HTTP mode lets a
    request in flight finish. Before, its listener was cancelled where it stood and never acknowledged (an Override
    click waiting for ``views.open``; a click waiting for the responder look-up was not even stored)."""
    message = socket_bot.surface("p1")
    socket_bot.standin.faults.delay("views.open", 1.0, times=1)
    envelope = socket_bot.socket.click(user_id=BOB, action_id="npo_override", message=message)
    wait_for(lambda: not socket_bot.standin.faults.pending("views.open"))  # views.open is being answered
    started = time.monotonic()
    socket_bot.service.stop()
    assert time.monotonic() - started < 10
    socket_bot.socket.wait_ack(envelope, timeout=30)
    assert [view["callback_id"] for view in socket_bot.standin.views()] == ["npo_override_modal"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_an_envelope_being_handled_at_a_stop_signal_is_finished_and_acknowledged(
    tmp_path: Path,
    standin: StandIn,
    socket_server: SocketModeStandIn,
    processes: list[subprocess.Popen[bytes]],
    sig: signal.Signals,
) -> None:
    """One SIGTERM or one Ctrl-C lets an envelope in hand finish and be acknowledged. uvicorn hands the signal it
    stopped on back to the process's handler once it is done; a Ctrl-C handed back must not count as a second one
    (which does not wait)."""
    proc, envelope = _override_click_in_hand(tmp_path, standin, socket_server, processes)
    proc.send_signal(sig)
    socket_server.wait_ack(envelope, timeout=30)
    assert proc.wait(timeout=20) == 0, _stderr(tmp_path)[-2000:]
    assert [view["callback_id"] for view in standin.views()] == ["npo_override_modal"]
    assert "still being handled" not in _stderr(tmp_path)


@pytest.mark.parametrize("how", ["close", "abort"], ids=["close-frame", "tcp-dies"])
def test_a_stop_while_the_connection_is_being_reopened_does_not_wait_to_acknowledge(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """An Override click is being handled when the connection ends and Slack gives no new URL (503): the click's work
    finishes (the form opens) with no connection to acknowledge it on. A stop then ends at once, with one warning
    line naming the envelope. Before, the acknowledgement waited for the reconnection however long it took, so the
    stop waited out its 10 s, warned of an envelope "still being handled", and slack-sdk logged an error with a
    traceback ("Failed to run a request listener: Cannot write to closing transport")."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(ping_interval=0.5, retry_delays=(0.5, 1.0))
    message = bot.surface("p1")
    bot.standin.faults.delay("views.open", 1.0, times=1)
    envelope = bot.socket.click(user_id=BOB, action_id="npo_override", message=message)
    wait_for(lambda: not bot.standin.faults.pending("views.open"))  # views.open is being answered
    bot.standin.faults.server_error(OPEN, status=503, times=None)
    bot.socket.drop(how)
    wait_for(lambda: _warnings(caplog, "apps.connections.open failed"))
    wait_for(bot.standin.views)  # the click's work is done
    bot.service.stop()
    assert bot.socket.acked(envelope) == 0
    assert [view["callback_id"] for view in bot.standin.views()] == ["npo_override_modal"]
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.socket_mode"]
    assert not [line for line in lines if "still being handled" in line], lines
    (line,) = _warnings(caplog, "not acknowledged")
    assert envelope in line, line
    assert not _problems(caplog)


def test_an_acknowledgement_waits_a_moment_for_a_new_connection_then_slack_sends_the_envelope_again(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """The connection ends under a click being handled and stays down: its acknowledgement waits for a new connection
    for as long as Slack waits for it (3 s), then gives up with one warning line, instead of being held until a
    connection opens, minutes later while Slack is unreachable. Slack sends the envelope again on the new
    connection: it is acknowledged, and its work is not done twice."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(ping_interval=0.5, retry_delays=(0.5, 1.0))
    message = bot.surface("p1")
    bot.standin.faults.delay("views.open", 1.0, times=1)
    envelope = bot.socket.click(user_id=BOB, action_id="npo_override", message=message)
    wait_for(lambda: not bot.standin.faults.pending("views.open"))
    bot.standin.faults.server_error(OPEN, status=503, times=None)
    bot.socket.drop("close")
    (line,) = wait_for(lambda: _warnings(caplog, "not acknowledged"), timeout=20)
    assert envelope in line, line
    bot.standin.faults.clear(OPEN)  # Slack is back
    bot.socket.wait_connected(accepted=2, timeout=20)
    bot.socket.resend(envelope, retry_attempt=1, retry_reason="timeout")
    bot.socket.wait_ack(envelope)
    assert [view["callback_id"] for view in bot.standin.views()] == ["npo_override_modal"]
    assert not _problems(caplog)


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr.log").read_text()


# ---- messages that are not envelopes ----------------------------------------------------------------------------
def test_malformed_messages_are_logged_in_one_line_and_ignored(
    socket_bot: SocketBot, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, text that is not JSON and an envelope without a payload were dropped without a word; invalid JSON,
    a null or list payload and a payload of the wrong shape were logged with a traceback."""
    caplog.set_level(logging.INFO)
    message = socket_bot.surface("p1")
    bad_click = {"type": "block_actions", "user": {"id": ALICE}, "actions": "npo_like"}
    bad_event = {"type": "event_callback", "event_id": 5, "event": {"type": "app_home_opened"}}
    sent = {
        "hello there": "hello there",
        "{broken": '{broken: "json"',
        "[1, 2]": "[1, 2]",
        "M1": json.dumps({"type": "interactive", "envelope_id": "M1"}),
        "M2": json.dumps({"type": "interactive", "envelope_id": "M2", "payload": None}),
        "M3": json.dumps({"type": "interactive", "envelope_id": "M3", "payload": bad_click}),
        "M4": json.dumps({"type": "events_api", "envelope_id": "M4", "payload": bad_event}),
    }
    for text in sent.values():
        socket_bot.socket.send_text(text)

    def all_ignored() -> list[str]:
        lines = _warnings(caplog, "ignored")
        return lines if len(lines) >= len(sent) else []

    ignored = wait_for(all_ignored)
    assert len(ignored) == len(sent), ignored
    for token in sent:  # one line for each, naming it
        assert sum(token in line for line in ignored) == 1, (token, ignored)
    assert not _problems(caplog)
    assert all(socket_bot.socket.acked(name) == 0 for name in ("M1", "M2", "M3", "M4"))
    assert socket_bot.socket.connected() == 1 and socket_bot.socket.accepted == 1  # the same connection
    socket_bot.socket.wait_ack(socket_bot.socket.click(user_id=ALICE, action_id="npo_like", message=message))
    assert socket_bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]


def test_a_stop_during_a_reconnection_slack_asked_for_does_not_wait_for_it(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """Slack asks for a new connection (``disconnect``) and is then unreachable; a stop meanwhile stops at once.
    Before, the stop waited 10 s for the reconnection as if it were an envelope being handled, then warned that it
    "stopped with 1 envelope(s) still being handled (not acknowledged)" — there was none."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(retry_delays=(0.5, 1.0))
    bot.standin.faults.server_error(OPEN, status=503, times=None)
    bot.socket.drop("disconnect", reason="refresh_requested")
    wait_for(lambda: _warnings(caplog, "apps.connections.open failed"))
    started = time.monotonic()
    bot.service.stop()
    took = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.socket_mode"]
    assert took < 3, (took, lines)
    assert not [line for line in lines if "still being handled" in line], lines
    assert not _problems(caplog)


def test_a_retry_after_longer_than_slack_ever_asks_is_capped(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy answers apps.connections.open with 429 ``Retry-After: 86400``: Slack's own values are seconds to a
    minute, and a day's wait would leave the bot without a connection (no clicks, no commands) for a day. The wait is
    capped at RETRY_AFTER_CAP_S, and the warning names the value received and the cap."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(retry_delays=(0.1, 0.2))
    bot.standin.faults.rate_limit(OPEN, retry_after=86400)
    bot.socket.drop("disconnect", reason="refresh_requested")
    (line,) = wait_for(lambda: _warnings(caplog, "apps.connections.open failed"))
    waited = re.search(r"asking again in (\d+) s", line)
    assert waited is not None and float(waited.group(1)) == RETRY_AFTER_CAP_S, line
    assert "86400" in line, line
    bot.service.stop()
    assert not _problems(caplog)


def test_socket_mode_turned_off_for_the_app_stops_the_bot_with_status_2(
    tmp_path: Path,
    standin: StandIn,
    socket_server: SocketModeStandIn,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """Slack's ``disconnect`` with reason ``link_disabled`` says Socket Mode was turned off for the app: no new
    connection will bring envelopes. One error line naming the cause and what to do, exit status 2 (a supervisor does
    not restart it), no new ``apps.connections.open``; an envelope in hand is still finished and acknowledged, and
    the store closed. Before, the bot reconnected as for a routine refresh and stayed up, deaf."""
    proc, envelope = _override_click_in_hand(tmp_path, standin, socket_server, processes)
    asked = len(standin.calls(OPEN))
    socket_server.drop("disconnect", reason="link_disabled")
    socket_server.wait_ack(envelope, timeout=30)
    code = proc.wait(timeout=20)
    stderr = _stderr(tmp_path)
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr[-2000:]
    assert "link_disabled" in errors[0] and "Socket Mode" in errors[0] and "npo-bot serve" in errors[0], errors[0]
    assert "Traceback" not in stderr and "still being handled" not in stderr
    assert len(standin.calls(OPEN)) == asked  # no reconnection
    assert socket_server.accepted == 1
    assert [view["callback_id"] for view in standin.views()] == ["npo_override_modal"]
    assert not (tmp_path / "npo.db-wal").exists()  # the store was closed


# ---- connections that end at once -------------------------------------------------------------------------------
def test_connections_that_end_at_once_are_reopened_ever_more_slowly(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy (or a Slack edge) accepts every WebSocket and closes it at once. Before, the bot reconnected at once
    each time: over a thousand connections (and as many ``apps.connections.open`` calls) in 3 s, and a proxy does not
    rate-limit them as Slack would. A reconnection after a connection that lasted only a moment now waits as after a
    failed attempt (``retry_delays``, growing, with jitter), one warning line each."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(retry_delays=(0.2, 0.8))
    bot.socket.close_new_connections()
    bot.socket.drop("close")
    time.sleep(3)
    churned = bot.socket.accepted - 1
    # waits of at least 0.1, 0.2, 0.4, 0.4, … s (half to all of 0.2, 0.4, 0.8, 0.8, …): at most 10 in 3 s
    assert 1 <= churned <= 12, churned
    assert len(bot.standin.calls(OPEN)) <= churned + 2
    assert len(_warnings(caplog, "reconnecting in")) >= churned, _warnings(caplog, "reconnecting in")
    assert not _problems(caplog)
    bot.socket.close_new_connections(0)  # the proxy is fixed: the bot connects and works
    wait_for(lambda: bot.socket.connected() == 1)
    message = bot.surface("p1")
    bot.socket.wait_ack(bot.socket.click(user_id=ALICE, action_id="npo_like", message=message))
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]


def test_a_connection_that_lasted_is_reopened_at_once_after_short_ones(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture
) -> None:
    """Once a connection lasts ``short_lived_s``, the waits start over: Slack's routine refresh of it is followed by
    a reconnection without a wait, as before."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(retry_delays=(0.2, 0.8), short_lived_s=1.0)
    bot.socket.close_new_connections(3)
    bot.socket.drop("close")
    bot.socket.wait_connected(accepted=5)  # three closed at once, then one that stays
    waits = len(_warnings(caplog, "reconnecting in"))
    assert waits in (3, 4)  # one for each closed at once, and for the first connection when it lasted under 1 s
    time.sleep(1.2)  # it lasts longer than short_lived_s
    assert bot.socket.connected() == 1 and bot.socket.accepted == 5
    bot.socket.drop("disconnect", reason="refresh_requested")
    bot.socket.wait_connected(accepted=6)
    wait_for(lambda: bot.socket.connected() == 1)
    assert len(_warnings(caplog, "reconnecting in")) == waits  # no wait this time
    bot.socket.drop("close")  # one that lasted only a moment again: the waits start over from the first
    bot.socket.wait_connected(accepted=7)
    (line,) = _warnings(caplog, "reconnecting in")[waits:]
    assert "(1 in a row under 1 s)" in line, line
    waited = re.search(r"reconnecting in ([\d.]+) s", line)
    assert waited is not None and float(waited.group(1)) <= 0.2, line
    assert not _problems(caplog)


@pytest.mark.parametrize("how", ["close", "disconnect"], ids=["close-frame", "disconnect-refresh_requested"])
def test_a_stop_while_waiting_to_reopen_a_connection_that_ended_at_once_stops_at_once(
    make_socket_bot: Callable[..., SocketBot], caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """The wait before reopening a connection that lasted only a moment (here at least 15 s) ends with a stop."""
    caplog.set_level(logging.INFO)
    bot = make_socket_bot(retry_delays=(30.0, 60.0))
    bot.socket.close_new_connections()
    bot.socket.drop(how, reason="refresh_requested")
    wait_for(lambda: _warnings(caplog, "reconnecting in"))
    started = time.monotonic()
    bot.service.stop()
    took = time.monotonic() - started
    assert took < 3, took
    assert bot.socket.accepted == 1  # no reconnection
    assert not _problems(caplog)


def _override_click_in_hand(
    tmp_path: Path,
    standin: StandIn,
    socket_server: SocketModeStandIn,
    processes: list[subprocess.Popen[bytes]],
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``npo-bot socket``, surface p1 through its ingest API, and click Override on its message with
    ``views.open`` held for a second: returns the process and the envelope id it is handling."""
    proc = start_socket_cli(tmp_path, standin.api_url)
    processes.append(proc)
    socket_server.wait_connected(timeout=30)
    found = wait_for(lambda: re.search(r"HTTP \(ingest, health, metrics\) on http://\S+:(\d+)", _stderr(tmp_path)))
    response = httpx.post(
        f"http://127.0.0.1:{found.group(1)}/api/v1/predictions",
        json=prediction("p1"),
        headers={"Authorization": "Bearer ingest-token-0123456789"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["verdict"] == "surface", response.text
    message = wait_for(
        lambda: next(((m.channel, m.ts) for m in standin.messages(INCIDENT) if "p1" in str(m.blocks)), None)
    )
    standin.faults.delay("views.open", 1.0, times=1)
    envelope = socket_server.click(user_id=BOB, action_id="npo_override", message=message)
    wait_for(lambda: not standin.faults.pending("views.open"))  # views.open is being answered
    return proc, envelope


# ---- SLACK_API_URL's credentials are masked in every line that names it -----------------------------------------
def test_the_api_urls_credentials_are_masked_in_the_connected_line(
    make_socket_bot: Callable[..., SocketBot], standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A base URL with a credential in its query string (a proxy's key) is named in the "connected" line as in the
    start-up line: masked (``masked_url``), as the poller's URL is."""
    caplog.set_level(logging.INFO)
    make_socket_bot(settings={"slack_api_url": f"{standin.api_url}?api_key=proxy-key-0123456789"})
    connected = [r.getMessage() for r in caplog.records if "Socket Mode connected" in r.getMessage()]
    assert connected == [f"Socket Mode connected (apps.connections.open via {standin.api_url}?api_key=***)"]
    assert "proxy-key-0123456789" not in caplog.text


def test_the_api_urls_credentials_are_masked_in_the_404_error(
    tmp_path: Path, standin: StandIn, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The one error line of an ``SLACK_API_URL`` answering HTTP 404 names the URL with its credentials masked."""
    proc = start_socket_cli(tmp_path, f"{standin.url}/nope/?api_key=proxy-key-0123456789")
    processes.append(proc)
    code = proc.wait(timeout=30)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "answered HTTP 404" in errors[0], stderr[-2000:]
    assert f"SLACK_API_URL: {standin.url}/nope/?api_key=***" in errors[0]
    assert "proxy-key-0123456789" not in stderr
