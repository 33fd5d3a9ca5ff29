"""The weekly summary's trigger around daylight-saving changes: one slot every week, none skipped.

APScheduler 3.11's ``CronTrigger`` loses a week when its search crosses a change to summer time and the local time
is in the hour after midnight (Monday 00:00–00:59 after a Sunday change, as in Europe and the US), or is the
skipped time itself when the clocks go forward at midnight (America/Santiago): the next fire time it computes is
a week late, and the runner's slot (its latest fire time) stays on the previous week meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jobs_testing import OPS, Clock
from slack_sdk import WebClient

from bot.jobs.build import JobDeps, build_scheduler
from bot.jobs.runner import previous_fire_time
from bot.jobs.weekly import WEEK, WEEKLY_JOB, weekly_trigger
from bot.standin import StandIn
from storage import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "npo.db") as s:
        yield s


def summaries(standin: StandIn) -> list[str]:
    return [m.text for m in standin.messages(OPS) if m.text.startswith("NPO weekly summary")]


def test_a_monday_midnight_summary_is_posted_in_the_week_summer_time_starts(
    store: SQLiteStore, standin: StandIn, client: WebClient
) -> None:
    clock = Clock(datetime(2025, 3, 23, 23, 0, 2, tzinfo=UTC))  # Monday 24 March, 00:00:02 CET
    jobs = JobDeps(store, client, OPS, timezone="Europe/Berlin", now=clock, weekly_at=("mon", 0, 0))
    scheduler = build_scheduler(jobs)
    assert scheduler.run_due(WEEKLY_JOB)
    trigger = scheduler.jobs[WEEKLY_JOB].trigger
    slot = datetime(2025, 3, 24, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    fire = trigger.get_next_fire_time(slot, clock.now)  # what APScheduler asks after the run
    assert fire is not None and fire.isoformat() == "2025-03-31T00:00:00+02:00"
    clock.now = datetime(2025, 3, 30, 22, 0, 2, tzinfo=UTC)  # Monday 31 March, 00:00:02 CEST
    assert scheduler.run_due(WEEKLY_JOB)
    assert len(summaries(standin)) == 2


def test_a_time_the_clocks_skip_at_midnight_still_fires_that_week() -> None:
    # America/Santiago: on Sunday 7 September 2025 the clocks go from 00:00 to 01:00.
    trigger = weekly_trigger("America/Santiago", "sun", 0, 0)
    previous = datetime(2025, 8, 31, 0, 0, tzinfo=ZoneInfo("America/Santiago"))
    fire = trigger.get_next_fire_time(previous, previous + timedelta(seconds=1))
    assert fire is not None and fire.timestamp() == datetime(2025, 9, 7, 4, 0, tzinfo=UTC).timestamp()  # 01:00 -03


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Sydney", "America/Santiago"])
@pytest.mark.parametrize("day", ["sun", "mon"])
@pytest.mark.parametrize(("hour", "minute"), [(0, 0), (0, 30), (1, 0), (2, 30), (3, 0), (9, 0), (23, 30)])
def test_every_week_has_one_slot_and_the_windows_tile(zone: str, day: str, hour: int, minute: int) -> None:
    trigger = weekly_trigger(zone, day, hour, minute)
    now = datetime(2024, 12, 30, tzinfo=UTC)
    previous = None
    for _ in range(60):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        if previous is not None:
            assert abs(fire.timestamp() - previous.timestamp() - WEEK.total_seconds()) <= 3600, fire
            assert (fire - WEEK).timestamp() == previous.timestamp(), fire  # each summary starts where the last ended
        after = fire + timedelta(seconds=1)
        assert previous_fire_time(trigger, after, timedelta(days=8)) == fire  # the runner's slot is this fire
        previous, now = fire, after
