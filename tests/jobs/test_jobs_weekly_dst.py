"""The weekly summary's trigger around daylight-saving changes: one slot every week, none skipped.

APScheduler 3.11's ``CronTrigger`` loses a week when its search crosses a change to summer time and the local time
is in the hour after midnight (Monday 00:00–00:59 after a Sunday change, as in Europe and the US), or is the
skipped time itself when the clocks go forward at midnight (America/Santiago): the next fire time it computes is
a week late, and the runner's slot (its latest fire time) stays on the previous week meanwhile."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jobs_testing import OPS, Clock, prediction, surface_and_post
from slack_sdk import WebClient

from bot.jobs.build import JobDeps, build_scheduler
from bot.jobs.cli import add_report_parser, run_report
from bot.jobs.report import build_report, report_text
from bot.jobs.runner import previous_fire_time
from bot.jobs.weekly import WEEK, WEEKLY_JOB, weekly_trigger
from bot.standin import StandIn
from npo.loop import record_feedback
from npo.types import FeedbackEvent, FeedbackKind
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


def test_each_answer_is_in_one_summary_and_one_day_and_no_day_is_split(store: SQLiteStore) -> None:
    """Summaries at Monday 09:00 Berlin over the week summer time starts (Sunday 30 March 2025, 02:00 → 03:00).
    The days were calendar days while the week ran from 09:00: each summary had eight, Monday 24 March was in two
    (09:00–24:00 in one, 00:00–09:00 in the other, each with its own L_align for "Mon 24") and so was Monday 31.
    Days now run from the slot's 09:00, so they tile with the weeks."""
    berlin = ZoneInfo("Europe/Berlin")
    answers = [  # when, and the day (its 09:00 start) it belongs to
        (datetime(2025, 3, 24, 8, 59, 59, 900_000, tzinfo=berlin), "2025-03-23"),
        (datetime(2025, 3, 24, 9, 0, tzinfo=berlin), "2025-03-24"),
        (datetime(2025, 3, 30, 1, 59, 59, tzinfo=berlin), "2025-03-29"),  # CET, just before the change
        (datetime(2025, 3, 30, 3, 0, tzinfo=berlin), "2025-03-29"),  # CEST, just after it
        (datetime(2025, 3, 30, 8, 59, 59, tzinfo=berlin), "2025-03-29"),  # Saturday 09:00 → Sunday 09:00: 23 hours
        (datetime(2025, 3, 30, 23, 59, 59, tzinfo=berlin), "2025-03-30"),
        (datetime(2025, 3, 31, 0, 0, tzinfo=berlin), "2025-03-30"),
        (datetime(2025, 3, 31, 8, 59, 59, 999_000, tzinfo=berlin), "2025-03-30"),
        (datetime(2025, 3, 31, 9, 0, tzinfo=berlin), "2025-03-31"),
    ]
    t0 = datetime(2025, 3, 17, tzinfo=UTC).timestamp()
    surface_and_post(store, [prediction(i, t0) for i in range(len(answers))], posted_at=t0 + 1)
    with store.transaction() as tx:
        for i, (at, _) in enumerate(answers):
            event = FeedbackEvent(f"p{i}", "U1", FeedbackKind.OVERRIDE, at.timestamp(), f"r{i}")
            record_feedback(tx, event, config=store.config)
    trigger = weekly_trigger("Europe/Berlin")
    reports = []
    for monday in (24, 31, 7):
        now = datetime(2025, 3 if monday > 7 else 4, monday, 9, 0, 1, tzinfo=berlin)
        slot = previous_fire_time(trigger, now, timedelta(days=8))
        assert slot is not None
        reports.append(build_report(store, since=slot - WEEK, until=slot, timezone="Europe/Berlin"))
    assert sum(r.answers for r in reports) == len(answers)  # each answer in exactly one summary
    counted: dict[str, int] = {}
    for report in reports:
        assert len(report.days) == 7
        assert sum(d.answers for d in report.days) == report.answers
        for d in report.days:
            assert d.day.isoformat() not in counted, d.day  # no day in two summaries
            counted[d.day.isoformat()] = d.answers
    expected: dict[str, int] = {}
    for _, day in answers:
        expected[day] = expected.get(day, 0) + 1
    assert {day: n for day, n in counted.items() if n} == expected
    assert reports[1].days[0].day.isoformat() == "2025-03-24"
    text = report_text(reports[1])
    assert "over 7 answers; days from 09:00 to 09:00 the next day" in text
    assert "Sun 2025-03-30  1.000  (3 answers)" in text and "Mon 2025-03-31" not in text


def test_a_summary_at_a_time_the_clocks_skip_names_its_period_as_its_days_count_it(store: SQLiteStore) -> None:
    """A summary on Sundays at 02:30 Berlin: on 30 March 2025 the clocks go from 02:00 to 03:00, so that slot is the
    instant the clocks show as 03:30 CEST (02:30 CET), and the next week's days are counted from 02:30. The header
    showed that week's start as "03:30" when the slot's zone was an equal zone object but not the same one, and as
    "02:30" under the end's "CEST" (an hour earlier, a time that never was) otherwise; it is now 02:30 CET, the
    days' time of day and the period's instant, whatever zone object the slot carries."""
    berlin = ZoneInfo("Europe/Berlin")
    answers = [  # just before the slot (the week before), at it, and the last moment of the week's first day
        datetime(2025, 3, 30, 1, 29, 59, tzinfo=UTC),  # 02:29:59 CET: 01:59:59 is the last minute before the gap
        datetime(2025, 3, 30, 1, 30, tzinfo=UTC),  # 03:30 CEST
        datetime(2025, 3, 31, 0, 29, 59, tzinfo=UTC),  # Monday 02:29:59 CEST
    ]
    t0 = datetime(2025, 3, 17, tzinfo=UTC).timestamp()
    surface_and_post(store, [prediction(i, t0) for i in range(len(answers))], posted_at=t0 + 1)
    with store.transaction() as tx:
        for i, at in enumerate(answers):
            record_feedback(
                tx, FeedbackEvent(f"p{i}", "U1", FeedbackKind.OVERRIDE, at.timestamp(), f"r{i}"), config=store.config
            )
    trigger = weekly_trigger("Europe/Berlin", "sun", 2, 30)
    slot = previous_fire_time(trigger, datetime(2025, 4, 6, 12, tzinfo=berlin), timedelta(days=8))
    assert slot is not None and slot - WEEK == datetime(2025, 3, 30, 2, 30, tzinfo=berlin)
    assert (slot - WEEK).timestamp() == datetime(2025, 3, 30, 1, 30, tzinfo=UTC).timestamp()
    for zone in (berlin, ZoneInfo.no_cache("Europe/Berlin")):  # the same zone, as another object
        at = slot.replace(tzinfo=zone)
        report = build_report(store, since=at - WEEK, until=at, timezone="Europe/Berlin")
        text = report_text(report)
        assert text.startswith("NPO weekly summary · 2025-03-30 02:30 CET – 2025-04-06 02:30 CEST\n"), text
        assert "over 2 answers; days from 02:30 to 02:30 the next day" in text
        assert "Sun 2025-03-30  1.000  (2 answers)" in text


def test_the_report_command_s_last_seven_days_are_seven_across_a_clock_change(
    store: SQLiteStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """``npo-bot report`` without ``--since`` (and ``/npo summary``) cover the last seven days of the local calendar,
    as the weekly summary does: 168 hours back from Wednesday 2 April 12:00 CEST ended at 11:00 CET, so with days
    counted from 12:00 an eighth day of one hour was printed."""
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--db", str(store.path), "--timezone", "Europe/Berlin"])
    now = datetime(2025, 4, 2, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert run_report(args, now=now) == 0
    out = capsys.readouterr().out
    assert out.startswith("NPO weekly summary · 2025-03-26 12:00 CET – 2025-04-02 12:00 CEST")
    days = [line.split()[1] for line in out.splitlines() if line.startswith("  ") and line.endswith("answers)")]
    assert days == [f"2025-03-{d}" for d in range(26, 32)] + ["2025-04-01"]


@pytest.mark.parametrize(
    ("now", "extra", "status", "message"),
    [
        # The clocks skip 02:00–03:00: 02:59 as set is 03:59 CEST, after the period's end at 03:00 CEST.
        (
            datetime(2025, 4, 2, 12, tzinfo=UTC),
            ("--since", "2025-03-30T02:59", "--until", "2025-03-30T03:00"),
            2,
            "npo-bot report: --since must be before the end of the period (2025-03-30T03:00:00+02:00), "
            "got '2025-03-30T02:59'\n",
        ),
        # The clocks go back at 03:00 CEST to 02:00 CET; now is 02:40 CET, the second 02:40. 02:50 as given is
        # the first one (CEST), 50 minutes ago; 02:45 CEST an hour ago; 02:30 CEST before 02:20 CET.
        (datetime(2025, 10, 26, 1, 40, tzinfo=UTC), ("--until", "2025-10-26T02:50"), 0, ""),
        (datetime(2025, 10, 26, 1, 40, tzinfo=UTC), ("--since", "2025-10-26T02:45"), 0, ""),
        (
            datetime(2025, 10, 26, 1, 40, tzinfo=UTC),
            ("--since", "2025-10-26T02:30", "--until", "2025-10-26T01:20Z"),
            0,
            "",
        ),
    ],
)
def test_the_report_command_compares_its_period_s_ends_as_instants_across_a_clock_change(
    now: datetime,
    extra: tuple[str, ...],
    status: int,
    message: str,
    store: SQLiteStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--since``, ``--until`` and now were compared as wall times when they were in the same zone: near a clock
    change a start after the end was taken (an empty report of a period that ends before it starts, exit 0), and
    a time in the hour the clocks repeat was refused as in the future, or after the end, though it was before."""
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--db", str(store.path), "--timezone", "Europe/Berlin", *extra])
    assert run_report(args, now=now) == status
    out, err = capsys.readouterr()
    assert err == message
    assert out.startswith("NPO weekly summary") == (status == 0)


def _instants(zone: str, day: str, hour: int, minute: int) -> list[float]:
    """Every slot of 2025 as an instant: the local time at its first occurrence (fold 0) on each ``day``."""
    tz, weekday = ZoneInfo(zone), ("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(day)
    first = datetime(2025, 1, 1, hour, minute, tzinfo=tz)
    return [
        (first + timedelta(days=d)).timestamp() for d in range(365) if (first + timedelta(days=d)).weekday() == weekday
    ]


@pytest.mark.parametrize(("hour", "minute"), [(1, 59), (2, 0), (2, 30), (2, 59), (3, 0), (3, 30)])
@pytest.mark.parametrize("start", [datetime(2025, 10, 25, 23, tzinfo=UTC), datetime(2025, 3, 29, 23, tzinfo=UTC)])
def test_the_weekly_slot_is_found_by_instant_whatever_zone_now_is_given_in(
    hour: int, minute: int, start: datetime
) -> None:
    """Sundays at ``hour:minute`` Berlin, ``now`` every 5 minutes from 00:00 to 05:00 local on the days the clocks
    go back (26 October 2025: 02:00–02:59 twice) and forward (30 March 2025: 02:00–02:59 never), given in UTC and in
    Europe/Berlin. ``now`` in the trigger's own zone was compared with the slot as a wall time: in the second 02:15
    the first 02:30, 45 minutes past, was the next fire time (APScheduler runs a past fire time at once: a second
    summary that day), the slot at 03:30 CEST (02:30 as set, a time the clocks skip) was taken as past from 03:00
    CEST on (that week's summary never came), and the runner's slot was the one still 30 minutes ahead."""
    trigger = weekly_trigger("Europe/Berlin", "sun", hour, minute)
    instants = _instants("Europe/Berlin", "sun", hour, minute)
    for step in range(0, 5 * 60 + 1, 5):
        at = start + timedelta(minutes=step)
        for now in (at, at.astimezone(ZoneInfo("Europe/Berlin"))):
            fire = trigger.get_next_fire_time(None, now)
            assert fire is not None and fire.timestamp() == min(t for t in instants if t >= at.timestamp()), now
            slot = previous_fire_time(trigger, now, timedelta(days=8))
            assert slot is not None and slot.timestamp() == max(t for t in instants if t <= at.timestamp()), now


@pytest.mark.parametrize(
    "previous",
    [
        datetime(2025, 10, 26, 0, 30, tzinfo=UTC),  # the slot, 02:30 CEST (its first occurrence), as UTC
        datetime(2025, 10, 26, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),  # the same, as the trigger gives it
        datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),  # an hour later: 02:30 CET
        datetime(2025, 10, 26, 2, 10, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),  # 02:10 CET, after the slot
    ],
)
def test_a_fire_time_in_the_repeated_hour_is_followed_by_next_week_s(previous: datetime) -> None:
    """The previous fire time is an instant: one in the hour the clocks repeat, given with ``fold=1`` (the second
    02:10, 40 minutes after the slot), was taken as the first 02:10, before the slot, which came again."""
    trigger = weekly_trigger("Europe/Berlin", "sun", 2, 30)
    fire = trigger.get_next_fire_time(previous, previous)
    assert fire is not None and fire.isoformat() == "2025-11-02T02:30:00+01:00"


def test_the_summary_at_a_skipped_time_is_not_posted_before_its_slot(
    store: SQLiteStore, standin: StandIn, client: WebClient
) -> None:
    """Sundays at 02:30 Berlin, a scheduler whose clock reads Berlin time: at 03:10 CEST on 30 March 2025 the slot
    (02:30 as set, the instant 03:30 CEST) is 20 minutes ahead, and the week's summary was posted then, early; it
    is posted at its slot, once, also by a scheduler started again (a restart) after it."""
    berlin = ZoneInfo("Europe/Berlin")
    clock = Clock(datetime(2025, 3, 23, 2, 31, tzinfo=berlin))
    jobs = JobDeps(store, client, OPS, timezone="Europe/Berlin", now=clock, weekly_at=("sun", 2, 30))
    assert build_scheduler(jobs).run_due(WEEKLY_JOB)  # the week before
    clock.now = datetime(2025, 3, 30, 3, 10, tzinfo=berlin)
    assert not build_scheduler(jobs).run_due(WEEKLY_JOB)
    assert build_scheduler(jobs).catch_up() == []
    assert len(summaries(standin)) == 1
    clock.now = datetime(2025, 3, 30, 3, 30, 1, tzinfo=berlin)
    assert build_scheduler(jobs).run_due(WEEKLY_JOB)
    assert summaries(standin)[-1].startswith("NPO weekly summary · 2025-03-23 02:30 – 2025-03-30 02:30 CET\n")
    clock.now = datetime(2025, 3, 30, 4, 0, tzinfo=berlin)  # a restart after it
    assert not build_scheduler(jobs).run_due(WEEKLY_JOB)
    assert build_scheduler(jobs).catch_up() == []
    assert len(summaries(standin)) == 2


def test_the_summary_in_the_repeated_hour_is_posted_once(
    store: SQLiteStore, standin: StandIn, client: WebClient
) -> None:
    """Sundays at 02:30 Berlin, a scheduler whose clock reads Berlin time: on 26 October 2025 the slot is the first
    02:30 (CEST); in the second 02:00–02:59 (CET) the runner's slot was the week before's again, and a restart's
    catch-up there ran nothing while the week's summary was owed, and a catch-up's report showed the τ posteriors
    "as of" the slot (the later of the two wall times), not of the run."""
    berlin = ZoneInfo("Europe/Berlin")
    clock = Clock(datetime(2025, 10, 19, 2, 31, tzinfo=berlin))
    jobs = JobDeps(store, client, OPS, timezone="Europe/Berlin", now=clock, weekly_at=("sun", 2, 30))
    assert build_scheduler(jobs).run_due(WEEKLY_JOB)  # the week before
    clock.now = datetime(2025, 10, 26, 2, 10, fold=1, tzinfo=berlin)  # CET: the slot (02:30 CEST) was 40 min ago
    assert build_scheduler(jobs).catch_up() == [WEEKLY_JOB]  # a restart: the slot missed while stopped
    for minute in (10, 31, 59):
        clock.now = datetime(2025, 10, 26, 2, minute, fold=1, tzinfo=berlin)
        assert not build_scheduler(jobs).run_due(WEEKLY_JOB)
        assert build_scheduler(jobs).catch_up() == []
    texts = summaries(standin)
    assert len(texts) == 2
    assert texts[-1].startswith("NPO weekly summary · 2025-10-19 02:30 – 2025-10-26 02:30 CEST\n"), texts[-1]
    assert "now, as of 2025-10-26 02:10 CET" in texts[-1]  # the catch-up's time, 40 minutes after the slot
