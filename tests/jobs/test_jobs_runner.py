"""The job runner: one run per (job, slot) across schedulers sharing the file, coalesced catch-up, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from jobs_testing import Clock, fire_scheduled, wait_for_start
from slack_sdk import WebClient

from bot.jobs.runner import JobSpec, Scheduler, previous_fire_time, retry_delay, slot_id
from storage import SQLiteStore
from storage.jobs import claim_count, finish_claim, last_claim

WEEKLY = CronTrigger(day_of_week="mon", hour=9, minute=0, timezone=UTC)
WEEK = timedelta(days=8)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    with SQLiteStore(tmp_path / "npo.db") as a, SQLiteStore(tmp_path / "npo.db") as b:
        yield a, b


def test_previous_fire_time() -> None:
    now = datetime(2025, 3, 26, 12, tzinfo=UTC)
    assert previous_fire_time(WEEKLY, now, WEEK) == datetime(2025, 3, 24, 9, tzinfo=UTC)
    assert previous_fire_time(WEEKLY, datetime(2025, 3, 24, 9, tzinfo=UTC), WEEK) == datetime(
        2025, 3, 24, 9, tzinfo=UTC
    )
    assert previous_fire_time(WEEKLY, now, timedelta(hours=1)) is None


def test_one_run_per_slot_across_two_schedulers(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    ran: list[str] = []
    clock = Clock(datetime(2025, 3, 24, 9, 0, 5, tzinfo=UTC))
    schedulers = [
        Scheduler(s, [JobSpec("weekly", WEEKLY, _recorder(ran, str(n)), WEEK)], now=clock) for n, s in enumerate(stores)
    ]
    barrier = threading.Barrier(2)

    def go(s: Scheduler) -> None:
        barrier.wait()
        s.run_due("weekly")

    threads = [threading.Thread(target=go, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1 and ran[0].endswith("@2025-03-24T09:00:00+00:00")
    with stores[0].read() as conn:
        assert claim_count(conn, "weekly") == 1


def test_catch_up_runs_one_missed_slot_only(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    ran: list[datetime] = []
    clock = Clock(datetime(2025, 3, 10, 9, 0, tzinfo=UTC))
    spec = JobSpec("weekly", WEEKLY, ran.append, WEEK, catch_up=True)
    first = Scheduler(stores[0], [spec], now=clock)
    assert first.run_due("weekly")
    clock.now = datetime(2025, 3, 26, 12, tzinfo=UTC)  # slots of 17 and 24 March missed while down
    restarted = Scheduler(stores[1], [spec], now=clock)
    assert restarted.catch_up() == ["weekly"]
    assert restarted.catch_up() == []  # already claimed: nothing more
    assert ran == [datetime(2025, 3, 10, 9, tzinfo=UTC), datetime(2025, 3, 24, 9, tzinfo=UTC)]
    with stores[0].read() as conn:
        assert last_claim(conn, "weekly") == "2025-03-24T09:00:00+00:00"
        assert claim_count(conn, "weekly") == 2


def test_a_failed_run_releases_its_claim(
    stores: tuple[SQLiteStore, SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[datetime] = []

    def flaky(slot: datetime) -> None:
        calls.append(slot)
        if len(calls) == 1:
            raise RuntimeError("slack down")

    s = Scheduler(stores[0], [JobSpec("weekly", WEEKLY, flaky, WEEK)], now=Clock(datetime(2025, 3, 24, 10, tzinfo=UTC)))
    assert not s.run_due("weekly")
    assert "slack down" in caplog.text
    assert s.run_due("weekly")
    assert not s.run_due("weekly")
    assert len(calls) == 2


def test_background_schedulers_share_the_catch_up(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    ran: list[str] = []
    clock = Clock(datetime(2025, 3, 26, 12, tzinfo=UTC))
    assert stores[0].claim_job("weekly", "2025-03-17T09:00:00+00:00", now=0.0)  # it ran before the restart
    schedulers = [
        Scheduler(s, [JobSpec("weekly", WEEKLY, _recorder(ran, str(n)), WEEK, catch_up=True)], now=clock)
        for n, s in enumerate(stores)
    ]
    try:
        for s in schedulers:
            s.start()
            s.start()  # idempotent
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with stores[0].read() as conn:
                if claim_count(conn, "weekly") == 2 and all(_idle(s) for s in schedulers):
                    break
            time.sleep(0.02)
    finally:
        for s in schedulers:
            s.shutdown()
    assert ran in (["0@2025-03-24T09:00:00+00:00"], ["1@2025-03-24T09:00:00+00:00"])
    assert not any(s.running for s in schedulers)


def test_a_first_start_catches_nothing_up(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    ran: list[datetime] = []
    scheduler = Scheduler(
        stores[0],
        [JobSpec("weekly", WEEKLY, ran.append, WEEK, catch_up=True)],
        now=Clock(datetime(2025, 3, 26, tzinfo=UTC)),
    )
    assert scheduler.missed_slot("weekly") is None
    assert scheduler.catch_up() == [] and ran == []


def _recorder(ran: list[str], name: str) -> Callable[[datetime], None]:
    def run(slot: datetime) -> None:
        ran.append(f"{name}@{slot_id(slot)}")

    return run


def _idle(s: Scheduler) -> bool:
    scheduler = s._scheduler
    return scheduler is not None and scheduler.get_job("catch-up") is None


def test_a_raising_job_is_logged_and_the_scheduler_keeps_running(
    stores: tuple[SQLiteStore, SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(slot: datetime) -> None:
        raise RuntimeError("boom")

    clock = Clock(datetime(2025, 3, 24, 10, tzinfo=UTC))
    ran: list[datetime] = []
    s = Scheduler(
        stores[0], [JobSpec("broken", WEEKLY, broken, WEEK), JobSpec("ok", WEEKLY, ran.append, WEEK)], now=clock
    )
    s.start()
    try:
        s._safe_run_due("broken")  # what APScheduler calls: never raises
        assert s.running and "job broken failed" in caplog.text and "boom" in caplog.text
        s._safe_run_due("ok")
        assert ran == [datetime(2025, 3, 24, 9, tzinfo=UTC)]
        with stores[0].read() as conn:
            assert claim_count(conn, "broken") == 0  # released: the next run retries the slot
    finally:
        s.shutdown()


def test_retry_delays_back_off_to_an_hour() -> None:
    assert [retry_delay(300.0, n) for n in (1, 2, 3, 4, 5, 6, 50)] == [300, 600, 1200, 2400, 3600, 3600, 3600]
    assert retry_delay(None, 3) is None


def _refused_weekly(store: SQLiteStore, client: WebClient, clock: Clock) -> Scheduler:
    """A started scheduler whose weekly job posts to a channel Slack does not know (every run fails alike)."""

    def post(slot: datetime) -> None:
        client.chat_postMessage(channel="C0GONE", text="weekly summary")  # the stand-in answers channel_not_found

    s = Scheduler(store, [JobSpec("weekly", WEEKLY, post, WEEK, retry_after_s=300.0)], now=clock)
    s.start()
    return s


def _minutes_to_retry(s: Scheduler) -> int:
    """Run the job's slot (it fails) and return the minutes until the retry it schedules."""
    started = datetime.now(UTC)
    assert not s.run_due("weekly")
    retry = s._scheduler.get_job("weekly-retry")  # type: ignore[union-attr]
    return round((retry.next_run_time - started).total_seconds() / 60)


def test_a_slot_slack_keeps_refusing_is_retried_ever_later_without_a_traceback(
    stores: tuple[SQLiteStore, SQLiteStore], client: WebClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The weekly summary's channel is gone, or the bot was removed from it: every retry fails the same way. It was
    tried every 5 minutes for the rest of the week, each failure logged with a traceback; now each is one warning
    line naming Slack's error, and the retries back off (5, 10, 20 … minutes, at most an hour)."""
    s = _refused_weekly(stores[0], client, Clock(datetime(2025, 3, 24, 10, tzinfo=UTC)))
    try:
        assert [_minutes_to_retry(s) for _ in range(3)] == [5, 10, 20]
    finally:
        s.shutdown()
    failures = [r for r in caplog.records if "job weekly failed" in r.getMessage()]
    assert len(failures) == 3 and all(r.exc_info is None for r in failures)
    assert "Slack answered channel_not_found (failure 3 in a row); retrying in 1200 s" in failures[-1].getMessage()


def test_a_new_slot_of_a_job_that_kept_failing_starts_its_back_off_afresh(
    stores: tuple[SQLiteStore, SQLiteStore], client: WebClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Last week's summary failed all week; this week's first failure is retried after 5 minutes, as the first
    failure of any slot — not after the hour last week's retries had reached — and is counted as its first."""
    clock = Clock(datetime(2025, 3, 24, 10, tzinfo=UTC))
    s = _refused_weekly(stores[0], client, clock)
    try:
        assert [_minutes_to_retry(s) for _ in range(6)][-1] == 60
        clock.now = datetime(2025, 3, 31, 9, 1, tzinfo=UTC)  # the next week's slot
        assert _minutes_to_retry(s) == 5
    finally:
        s.shutdown()
    last = [r.getMessage() for r in caplog.records if "job weekly failed" in r.getMessage()][-1]
    assert "2025-03-31T09:00:00+00:00: Slack answered channel_not_found (failure 1 in a row); retrying in 300 s" in last


def test_the_periodic_catch_up_leaves_a_failing_slot_to_its_own_retry(
    stores: tuple[SQLiteStore, SQLiteStore], client: WebClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The catch-up a running scheduler makes every few minutes runs a slot another process gave back, but not one
    this process failed and retries itself: Slack refusing for hours is not asked every 5 minutes in spite of the
    back-off."""

    def post(slot: datetime) -> None:
        client.chat_postMessage(channel="C0GONE", text="weekly summary")  # the stand-in answers channel_not_found

    clock = Clock(datetime(2025, 3, 24, 8, 59, tzinfo=UTC))
    assert stores[0].claim_job("weekly", "2025-03-17T09:00:00+00:00", now=0.0)
    with stores[0].transaction() as tx:
        assert finish_claim(tx.connection, "weekly", "2025-03-17T09:00:00+00:00", "", 1.0)
    s = Scheduler(stores[0], [JobSpec("weekly", WEEKLY, post, WEEK, catch_up=True, retry_after_s=300.0)], now=clock)
    s.start()
    try:
        wait_for_start(s)
        fire_scheduled(s, clock, datetime(2025, 3, 24, 11, 0, tzinfo=UTC))
    finally:
        s.shutdown()
    failures = [r.getMessage() for r in caplog.records if "job weekly failed" in r.getMessage()]
    assert len(failures) == 1 and "(failure 1 in a row); retrying in 300 s" in failures[0]
