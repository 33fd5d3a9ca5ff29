"""A scheduled run whose process is killed mid-way (SIGKILL, out of memory, power loss) does not lose its slot.

The claim is taken before the run and marked finished after it; an unfinished claim is taken over once it is
stale (``JobSpec.stale_after_s``), by the catch-up at a restart or by the retry it schedules. Before, the claim
stayed for good: that week's summary was never posted, and the catch-up saw the slot as done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from jobs_testing import Clock, fire_scheduled, wait_for_start
from sqlite_utils import Database

from bot.jobs.runner import STALE_CLAIM_S, JobSpec, Scheduler
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, migrate
from storage.jobs import claim_of

WEEKLY = CronTrigger(day_of_week="mon", hour=9, minute=0, timezone=UTC)
WEEK = timedelta(days=8)
SLOT = datetime(2025, 3, 24, 9, 0, tzinfo=UTC)
PERIOD = "2025-03-24T09:00:00+00:00"

# Last week's run finishes; this week's is killed mid-run by its own process (as the kernel's OOM killer would).
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from apscheduler.triggers.cron import CronTrigger
    from bot.jobs.runner import JobSpec, Scheduler
    from storage import SQLiteStore

    WEEKLY = CronTrigger(day_of_week="mon", hour=9, minute=0, timezone=UTC)
    with SQLiteStore(Path(sys.argv[1])) as store:
        def at(*when):
            return lambda: datetime(*when, tzinfo=UTC)
        spec = JobSpec("weekly", WEEKLY, lambda slot: None, timedelta(days=8), catch_up=True)
        assert Scheduler(store, [spec], now=at(2025, 3, 17, 9, 0, 1)).run_due("weekly")
        dying = JobSpec("weekly", WEEKLY, lambda slot: os.kill(os.getpid(), signal.SIGKILL), timedelta(days=8))
        Scheduler(store, [dying], now=at(2025, 3, 24, 9, 0, 1)).run_due("weekly")
    """
)


@pytest.fixture
def killed_mid_run(tmp_path: Path) -> Path:
    db = tmp_path / "npo.db"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db)],
        check=False,
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL
    return db


def test_a_run_killed_mid_way_is_taken_over_once_its_claim_is_stale(killed_mid_run: Path) -> None:
    ran: list[datetime] = []
    clock = Clock(SLOT + timedelta(minutes=2))  # restarted two minutes later
    with SQLiteStore(killed_mid_run) as store:
        spec = JobSpec("weekly", WEEKLY, ran.append, WEEK, catch_up=True)
        scheduler = Scheduler(store, [spec], now=clock)
        with store.read() as conn:
            dead = claim_of(conn, "weekly", PERIOD)
        assert dead is not None and dead.done_at is None
        assert scheduler.missed_slot("weekly") == SLOT  # not finished: still to do
        assert scheduler.catch_up() == [] and ran == []  # not stale yet: it might still be running somewhere
        clock.now = SLOT + timedelta(seconds=STALE_CLAIM_S + 2)
        assert scheduler.catch_up() == ["weekly"] and ran == [SLOT]
        with store.read() as conn:
            taken = claim_of(conn, "weekly", PERIOD)
        assert taken is not None and taken.owner == scheduler.owner and taken.done_at is not None
        assert scheduler.catch_up() == [] and not scheduler.run_due("weekly")  # finished: never again
        clock.now = SLOT + timedelta(days=1)
        assert scheduler.catch_up() == [] and not scheduler.run_due("weekly") and ran == [SLOT]


def test_a_finished_claim_is_never_taken_over(tmp_path: Path) -> None:
    ran: list[datetime] = []
    clock = Clock(SLOT + timedelta(seconds=1))
    with SQLiteStore(tmp_path / "npo.db") as store:
        first = Scheduler(store, [JobSpec("weekly", WEEKLY, ran.append, WEEK, catch_up=True)], now=clock)
        assert first.run_due("weekly")
        clock.now = SLOT + timedelta(days=2)
        other = Scheduler(store, [JobSpec("weekly", WEEKLY, ran.append, WEEK, catch_up=True)], now=clock)
        assert other.missed_slot("weekly") is None and other.catch_up() == [] and not other.run_due("weekly")
        assert ran == [SLOT]


def test_claims_stored_before_the_upgrade_count_as_finished(tmp_path: Path) -> None:
    path = tmp_path / "npo.db"
    db = Database(path)
    assert migrate(db, stop_before="m014_job_claims_done") == 13
    db.execute(
        "INSERT INTO job_claims (job, period, claimed_at, owner) VALUES ('weekly', ?, ?, 'old')",
        (PERIOD, SLOT.timestamp()),
    )
    db.conn.commit()
    assert migrate(db) == LATEST_SCHEMA_VERSION
    db.close()
    with SQLiteStore(path) as store:
        with store.read() as conn:
            claim = claim_of(conn, "weekly", PERIOD)
        assert claim is not None and claim.done_at == SLOT.timestamp()
        clock = Clock(SLOT + timedelta(days=1))
        scheduler = Scheduler(store, [JobSpec("weekly", WEEKLY, lambda slot: None, WEEK, catch_up=True)], now=clock)
        assert scheduler.catch_up() == [] and not scheduler.run_due("weekly")


def test_a_run_killed_mid_way_is_taken_over_by_a_process_still_running(killed_mid_run: Path) -> None:
    """Another process on the same file was running all along: it took the slot over only if it restarted, so while
    it kept running the week was lost. Its periodic catch-up now takes the slot over once the claim is stale."""
    ran: list[datetime] = []
    clock = Clock(SLOT - timedelta(minutes=1))
    with SQLiteStore(killed_mid_run) as store:
        running = Scheduler(store, [JobSpec("weekly", WEEKLY, ran.append, WEEK, catch_up=True)], now=clock)
        running.start()
        try:
            wait_for_start(running)
            fire_scheduled(running, clock, SLOT + timedelta(seconds=STALE_CLAIM_S - 60))
            assert ran == []  # not stale yet: the run might still be going on somewhere
            fire_scheduled(running, clock, SLOT + timedelta(hours=2))
        finally:
            running.shutdown()
        assert ran == [SLOT]
        with store.read() as conn:
            taken = claim_of(conn, "weekly", PERIOD)
        assert taken is not None and taken.owner == running.owner and taken.done_at is not None
