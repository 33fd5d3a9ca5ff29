"""Stopping ``npo-bot serve`` (or ``npo-bot socket``) with SIGTERM (a supervisor) or SIGINT (Ctrl-C): uvicorn shuts
down gracefully, then the bot closes (worker, scheduler, poller, SQLite store), it says so, and the process exits 0
without a traceback.

uvicorn re-raises the signal it captured once it has shut down; before the fix that re-raise killed the process
(SIGTERM: exit 143 with the store still open, its ``-wal`` left behind; SIGINT: a ``KeyboardInterrupt`` traceback).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hardening_testing import INGEST_TOKEN, ROOT, free_port, serve_env
from slack_testing import ALICE, INCIDENT, SECRET, prediction, reaped_processes, wait_for

from bot.serve import StopSignals
from bot.standin import StandIn
from bot.standin.socket_mode import attach

# The CLI with the signal dispositions of a terminal, whatever the test runner's (an inherited SIG_IGN for SIGINT,
# as in a shell's background job, would hide what Ctrl-C does).
_LAUNCH = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "sys.argv = ['npo-bot', *sys.argv[1:]]; runpy.run_module('bot.cli', run_name='__main__')"
)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


APP_TOKEN = "xapp-1-A0NPO-1-stopsignals"


def _serve(
    tmp_path: Path, standin: StandIn, command: str = "serve", **settings: str
) -> tuple[subprocess.Popen[bytes], str]:
    """``npo-bot serve`` (or ``socket``, with the stand-in's Socket Mode side) on a free loopback port, Slack on the
    stand-in; returns once ``/livez`` answers and one prediction is stored (so the WAL has something to
    checkpoint). ``settings``: more environment variables (``NPO_…``)."""
    port = free_port()
    extra = settings | ({"SLACK_APP_TOKEN": APP_TOKEN} if command == "socket" else {})
    env = serve_env(tmp_path / "npo.db", standin.api_url, port, **extra)
    with (tmp_path / "stdout.log").open("wb") as out, (tmp_path / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, command, "--env-file", os.devnull],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not _up(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("npo-bot serve did not start:\n" + (tmp_path / "stderr.log").read_text())
        time.sleep(0.05)
    response = httpx.post(
        f"{url}/api/v1/predictions",
        json=prediction("p1"),
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return proc, url


@pytest.fixture
def stopped(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed afterwards should the test fail before they exit."""
    yield from reaped_processes()


def _stop(proc: subprocess.Popen[bytes], *signals: signal.Signals) -> int:
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    return proc.wait(30)


def _cold_copy_rows(tmp_path: Path) -> Any:
    """Open a copy of the main database file alone (no ``-wal``/``-shm``): what a backup of it would hold."""
    cold = tmp_path / "cold"
    cold.mkdir()
    shutil.copy(tmp_path / "npo.db", cold / "npo.db")
    conn = sqlite3.connect(cold / "npo.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "socket"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_closes_the_bot_and_exits_0(
    tmp_path: Path, standin: StandIn, stopped: list[subprocess.Popen[bytes]], sig: signal.Signals, command: str
) -> None:
    code = _start_and_stop(tmp_path, standin, stopped, command, sig)
    _assert_closed_cleanly(tmp_path, code, sig)


def _assert_closed_cleanly(tmp_path: Path, code: int, sig: signal.Signals) -> None:
    stderr = (tmp_path / "stderr.log").read_text()
    output = (tmp_path / "stdout.log").read_text() + stderr
    assert code == 0, f"exit {code} after {sig.name}:\n{stderr[-2000:]}"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-2000:]
    assert f"npo-bot stopped ({sig.name})" in stderr
    # The store was closed: the last connection checkpointed the WAL and removed it.
    wal = tmp_path / "npo.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL was left behind: the store was not closed"
    assert _cold_copy_rows(tmp_path) == 1


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "socket"])
def test_ctrl_c_twice_may_force_the_stop_but_corrupts_nothing(
    tmp_path: Path, standin: StandIn, stopped: list[subprocess.Popen[bytes]], command: str
) -> None:
    """A second Ctrl-C makes uvicorn skip the lifespan's shutdown event: the bot still shuts down, with one warning
    line, not a traceback of the cancelled lifespan (``npo-bot socket`` logged one)."""
    code = _start_and_stop(tmp_path, standin, stopped, command, signal.SIGINT, signal.SIGINT)
    output = (tmp_path / "stdout.log").read_text() + (tmp_path / "stderr.log").read_text()
    assert code in (0, 130), output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    conn = sqlite3.connect(tmp_path / "npo.db")  # with whatever WAL is left: SQLite recovers it
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1
    finally:
        conn.close()


def _posts(standin: StandIn, pid: str) -> int:
    """Messages Slack accepted that show the recommendation ``pid``."""
    shown = re.compile(rf"(?<![\w-]){re.escape(pid)}(?![\w-])")
    accepted = [c for c in standin.calls("chat.postMessage") if isinstance(c.response, dict) and c.response.get("ok")]
    return sum(1 for c in accepted if shown.search(json.dumps(c.body)))


@pytest.mark.slow
def test_a_stop_while_slack_is_slow_hands_back_what_the_worker_had_not_sent(
    tmp_path: Path, standin: StandIn, stopped: list[subprocess.Popen[bytes]]
) -> None:
    """SIGTERM while Slack answers slowly (within the timeout) and a pass holds a dozen due messages: the worker
    finishes the call in flight and hands the rest back, due at once, so the next start sends them without waiting
    for the stopped process's lease (a minute) and posts nothing twice. Before the fix the stop waited 10 s, then
    closed the store under the worker, which left the rest leased and its call in flight unrecorded: its post was
    sent again after the restart."""
    proc, url = _serve(tmp_path, standin, NPO_SLACK_TIMEOUT_S="5")
    stopped.append(proc)
    auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    pids = [f"slow-{i}" for i in range(10)]
    for pid in pids:
        response = httpx.post(f"{url}/api/v1/predictions", json=prediction(pid), headers=auth, timeout=10)
        assert response.status_code == 200 and response.json()["verdict"] == "surface", response.text
    db = tmp_path / "npo.db"

    def posted() -> dict[str, str] | None:
        with sqlite3.connect(db) as conn:
            ts = dict(conn.execute("SELECT prediction_id, message_ts FROM recommendations WHERE message_ts != ''"))
        return ts if all(pid in ts for pid in pids) else None

    where = wait_for(posted, timeout=30)
    standin.faults.delay("*", 1.5)  # every call answered after 1.5 s: slow, but well within the 5 s timeout
    for pid in pids:  # an update for each, one in flight and the rest claimed together by the next pass
        assert standin.click(f"{url}/slack/events", SECRET, user_id=ALICE, action_id="npo_like",
                             message=(INCIDENT, where[pid])).status_code == 200  # fmt: skip
    response = httpx.post(f"{url}/api/v1/predictions", json=prediction("slow-late"), headers=auth, timeout=10)
    assert response.status_code == 200 and response.json()["verdict"] == "surface"
    time.sleep(2.0)  # the second pass is under way: nine updates and a post, 1.5 s each
    assert _stop(proc, signal.SIGTERM) == 0
    with sqlite3.connect(db) as conn:
        leased = conn.execute(
            "SELECT id, kind, prediction_id FROM outbox WHERE state = 'pending' AND next_attempt_at > ?",
            (time.time() + 1,),
        ).fetchall()
    assert leased == [], "messages left leased by the stopped process"
    time.sleep(2.0)  # any call the stopped process left in flight reaches Slack
    standin.faults.clear()
    proc, _ = _serve(tmp_path, standin)
    stopped.append(proc)
    with sqlite3.connect(db) as conn:
        wait_for(lambda: not conn.execute("SELECT 1 FROM outbox WHERE state = 'pending'").fetchone())
    assert {pid: _posts(standin, pid) for pid in [*pids, "slow-late"]} == dict.fromkeys([*pids, "slow-late"], 1)
    assert _stop(proc, signal.SIGTERM) == 0


def test_stop_signals_ask_the_server_to_exit_and_restore_the_handlers() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = SimpleNamespace(should_exit=False, force_exit=False)
    with StopSignals(server) as stops:  # type: ignore[arg-type]
        signal.raise_signal(signal.SIGTERM)  # would end this process without the handler
        assert server.should_exit and not server.force_exit
        signal.raise_signal(signal.SIGINT)  # the second Ctrl-C: uvicorn stops waiting
        assert server.force_exit
        stops.closing()
        signal.raise_signal(signal.SIGTERM)  # while the bot closes: ignored
    assert stops.received == [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_signal_before_the_server_exists_stops_it_once_set() -> None:
    with StopSignals() as stops:
        signal.raise_signal(signal.SIGTERM)
        server = SimpleNamespace(should_exit=False, force_exit=False)
        stops.server = server  # type: ignore[assignment]
        assert server.should_exit


def _start_and_stop(
    tmp_path: Path,
    standin: StandIn,
    stopped: list[subprocess.Popen[bytes]],
    command: str,
    *signals: signal.Signals,
) -> int:
    """Start ``npo-bot <command>`` (``socket`` against the stand-in's Socket Mode side, once connected), send it
    ``signals`` and return its exit status."""
    socket_side = attach(standin, APP_TOKEN) if command == "socket" else None
    try:
        proc, _ = _serve(tmp_path, standin, command)
        stopped.append(proc)
        if socket_side is not None:
            socket_side.wait_connected()
        return _stop(proc, *signals)
    finally:
        if socket_side is not None:
            socket_side.stop()
