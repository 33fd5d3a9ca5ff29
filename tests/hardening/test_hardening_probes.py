"""``GET /healthz``, ``/livez`` and ``/metrics`` as Kubernetes and Prometheus use them, over real HTTP on a real SQLite
file: they answer while ingest requests wait for the write lock, ``/healthz`` fails with the reason when the
database file is gone, cannot be read or cannot be written (and ``/livez`` does not), ``/metrics`` still serves the
process's own figures then (with ``npo_database_up 0``; every figure when the file can be read but not written),
nothing is cacheable, and ``/healthz`` costs the same on a year of history as on a day's."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from file_testing import unwritable
from slack_testing import BotUnderTest, prediction, serving
from sqlite_steps import vm_steps
from test_slack_metrics import parse_exposition

from bot.app import build_bot
from bot.config import Settings
from bot.standin import StandIn
from npo.loop import LoopConfig
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.types import Prediction
from storage import SQLiteStore

PROBES = ("/healthz", "/livez", "/metrics")


@pytest.fixture
def quiet_bot(settings: Settings, standin: StandIn) -> Iterator[BotUnderTest]:
    """The bot over HTTP without its delivery worker and scheduler: nothing reads the database in the background."""
    built = build_bot(settings, seed=1, run_worker=False)
    with serving(built, standin) as served:
        yield served


def _sample(text: str, name: str) -> str | None:
    return next((line.split(" ")[-1] for line in text.splitlines() if line.split(" ")[0] == name), None)


def test_probes_answer_while_ingest_requests_wait_for_the_write_lock(bot: BotUnderTest) -> None:
    """Another connection holds the write lock (a long write transaction: a one-transaction replay, a migration);
    more ingest requests than the default worker-thread pool (40) wait for it. The probes must not queue behind
    them: they only read, and WAL readers do not wait for writers."""
    assert bot.ingest(prediction("before")).status_code == 200
    holder = sqlite3.connect(bot.bot.settings.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    statuses: list[int] = []

    def ingest(i: int) -> None:
        statuses.append(bot.ingest(prediction(f"waiting-{i}", target=f"host-{i}")).status_code)

    waiting = [threading.Thread(target=ingest, args=(i,)) for i in range(50)]
    try:
        for thread in waiting:
            thread.start()
        time.sleep(1.5)  # every request has reached its worker thread (or the queue for one) and waits for the lock
        assert all(thread.is_alive() for thread in waiting)
        for path in PROBES:
            started = time.monotonic()
            response = httpx.get(f"{bot.server.url}{path}", timeout=3)
            assert response.status_code == 200, (path, response.text)
            assert time.monotonic() - started < 2, path
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        for thread in waiting:
            thread.join(60)
    assert statuses == [200] * 50  # and the writers got through once the lock was free


def test_healthz_fails_with_the_reason_when_the_database_file_is_deleted(bot: BotUnderTest) -> None:
    """A deleted database file keeps working for the process that has it open — every accepted item then goes to
    a file that is gone at the next restart — so "the reads work" is not healthy."""
    assert bot.ingest(prediction("p1")).status_code == 200
    assert httpx.get(f"{bot.server.url}/healthz").json()["status"] == "ok"
    db = bot.bot.settings.db_path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    response = httpx.get(f"{bot.server.url}/healthz", timeout=10)
    assert response.status_code == 503
    answer = response.json()
    assert answer["status"] == "error" and "no longer exists" in answer["error"] and str(db) in answer["error"]
    assert httpx.get(f"{bot.server.url}/livez").text == "ok"  # the process itself is fine: do not restart it
    metrics = httpx.get(f"{bot.server.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and _sample(metrics.text, "npo_database_up") == "0"


def test_healthz_fails_with_the_reason_when_the_database_file_is_replaced(bot: BotUnderTest, tmp_path: Path) -> None:
    db = bot.bot.settings.db_path
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    os.replace(other, db)  # e.g. a backup moved over the running bot's file
    response = httpx.get(f"{bot.server.url}/healthz", timeout=10)
    assert response.status_code == 503 and "replaced" in response.json()["error"], response.text


def _corrupt_outbox(db: Path) -> None:
    """Overwrite the outbox's pages (table and indexes) with garbage, then change the header in the WAL, so that
    every connection drops its cached pages and reads the garbage at its next read."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = [r[0] for r in conn.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'outbox'")]
        assert roots and conn.execute("PRAGMA page_count").fetchone()[0] > max(roots)
        with db.open("r+b") as file:
            for root in roots:
                file.seek((root - 1) * page_size)
                file.write(b"\xa5" * page_size)
        conn.execute("PRAGMA user_version = 42")
    finally:
        conn.close()


def test_healthz_and_metrics_when_the_database_cannot_be_read(quiet_bot: BotUnderTest) -> None:
    bot = quiet_bot
    assert bot.ingest(prediction("p1")).status_code == 200
    httpx.get(f"{bot.server.url}/livez")
    _corrupt_outbox(bot.bot.settings.db_path)

    response = httpx.get(f"{bot.server.url}/healthz", timeout=10)
    assert response.status_code == 503 and response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["status"] == "error" and "malformed" in answer["error"], answer
    assert httpx.get(f"{bot.server.url}/livez").text == "ok"
    # The scrape still works: the process's own figures (latency, deliveries) matter most when the database fails.
    metrics = httpx.get(f"{bot.server.url}/metrics", timeout=10)
    assert metrics.status_code == 200, metrics.text
    assert parse_exposition(metrics.text)[("npo_database_up", ())] == 0  # and still valid exposition
    assert 'npo_http_request_duration_seconds_count{route="/livez",status="2xx"} 2' in metrics.text
    assert "npo_outbox_messages" not in metrics.text  # nothing read from the database is made up


def test_healthz_fails_with_the_reason_when_the_database_cannot_be_written(
    settings: Settings, standin: StandIn
) -> None:
    """A database file the bot can read but not write (a read-only mount or volume, a file a restore left owned by
    another user): every prediction and click is refused with 503, so the bot is not healthy — though the reads
    work, and ``/metrics`` still has every figure."""
    build_bot(settings, seed=1, run_worker=False).close()  # the database, created and migrated
    with unwritable(settings.db_path), serving(build_bot(settings, seed=1, run_worker=False), standin) as bot:
        assert bot.ingest(prediction("p1")).status_code == 503  # what the probe must foretell
        response = httpx.get(f"{bot.server.url}/healthz", timeout=10)
        assert response.status_code == 503, response.text
        answer = response.json()
        assert answer["status"] == "error" and "cannot be written" in answer["error"], answer
        assert str(settings.db_path) in answer["error"]
        assert httpx.get(f"{bot.server.url}/livez").text == "ok"  # the process itself is fine: do not restart it
        metrics = parse_exposition(httpx.get(f"{bot.server.url}/metrics", timeout=10).text)
        assert metrics[("npo_database_up", ())] == 1  # it can be read: the figures are true
        assert ("npo_outbox_messages", (("state", "pending"),)) in metrics


def test_probes_are_never_cached_and_refuse_other_methods(bot: BotUnderTest) -> None:
    for path in PROBES:
        for method in ("GET", "HEAD"):
            response = httpx.request(method, f"{bot.server.url}{path}", timeout=10)
            assert response.status_code == 200, (method, path)
            assert response.headers.get("cache-control") == "no-store", (method, path, response.headers)
        assert response.content == b""  # HEAD: headers only
        refused = httpx.post(f"{bot.server.url}{path}", timeout=10)
        assert refused.status_code == 405 and set(refused.headers["allow"].split(", ")) == {"GET", "HEAD"}
    metrics = httpx.get(f"{bot.server.url}/metrics", timeout=10)
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert _sample(metrics.text, "npo_database_up") == "1"
    assert "# TYPE npo_database_up gauge" in metrics.text


def _predictions(prefix: str, n: int) -> list[Prediction]:
    return [
        Prediction(id=f"{prefix}{i}", fault_type="disk_failure", target=f"{prefix}-n{i}", action="investigate",
                   confidence=0.99, channel="C0INCIDENT", received_at=float(i))
        for i in range(n)
    ]  # fmt: skip


def _health_vm_steps(store: SQLiteStore) -> int:
    """SQLite virtual-machine instructions one ``store.health()`` runs (work that does not depend on the machine)."""
    with store.read() as conn:  # this thread's connection, the one health() uses on this thread
        pass
    return vm_steps(conn, store.health)


def test_healthz_costs_the_same_on_a_long_history(tmp_path: Path) -> None:
    """``/healthz`` runs ``store.health()``: the pending outbox messages (an index search: the backlog, not the
    history) and a look at the file. It used to count every decision, answer, audit line and outbox message —
    124 ms a probe and 1 s for the first one after a restart at a million decisions."""
    policy = parse_policy(DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000"))
    rng = np.random.default_rng(1)
    with SQLiteStore(tmp_path / "new.db", LoopConfig()) as new, SQLiteStore(tmp_path / "old.db", LoopConfig()) as old:
        new.decide_many(_predictions("fresh", 3), policy=policy, rng=rng, now=0.0)
        old.decide_many(_predictions("history", 3000), policy=policy, rng=rng, now=0.0)
        for item in old.claim_due(1e9, limit=3000):
            old.mark_sent(item.id, item.channel, f"{item.id}.0")
        old.decide_many(_predictions("fresh", 3), policy=policy, rng=rng, now=1e6)
        assert new.health() == old.health() == 3  # three pending messages in both
        quiet, busy = _health_vm_steps(new), _health_vm_steps(old)
        assert busy <= quiet + 50, (busy, quiet)
