"""The weekly summary job: Monday 09:00 in the configured timezone, the report text and its PNG chart posted to
the ops channel in one ``files_upload_v2`` (getUploadURLExternal → raw upload → completeUploadExternal)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from slack_sdk import WebClient

from bot.jobs.report import WeeklyReport, build_report, chart_alt_text, render_png, report_text
from storage import SQLiteStore

WEEKLY_JOB = "weekly_summary"
WEEK = timedelta(days=7)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WeeklyAt(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """Every ``day`` (a weekday name) at ``hour:minute`` local time in ``timezone``, worked out from the calendar
    day by day, once a week whatever the clocks do.

    * A local time that occurs twice (the clocks going back) fires at its first occurrence only (``fold`` 0):
      APScheduler 3's ``CronTrigger`` fires at both, and each was a slot of its own, so a weekly summary set inside
      that hour was posted twice.
    * A local time that does not occur (the clocks going forward) fires once, after the gap: at that time on the
      clock before the change (02:30 skipped from 02:00 to 03:00 is 02:30 CET, the clocks' 03:30 CEST).
    * No week is skipped: APScheduler 3.11's ``CronTrigger`` loses a week when its search crosses a change to
      summer time and the time is in the hour after midnight (Monday 00:00–00:59 after a Sunday change) or is
      itself skipped at midnight (America/Santiago): its next fire time came a week late.

    The fire times are the local wall time with the zone (not normalised), so ``slot - WEEK`` is the previous
    slot exactly, even next to a gap. ``now``, the previous fire time and the slots are compared as instants (in
    UTC), whatever zone they are given in: Python compares datetimes of one zone by their wall time, ignoring
    ``fold`` and the offset, so in the hour the clocks repeat or just after a gap a slot in the past was taken as
    still to come, or one still to come as past."""

    def __init__(self, timezone: ZoneInfo, day: str, hour: int, minute: int) -> None:
        self.timezone = timezone
        self.weekday = _WEEKDAYS.index(day[:3].lower())
        self.hour, self.minute = hour, minute

    def _at(self, day: date) -> datetime:
        return datetime.combine(day, time(self.hour, self.minute), tzinfo=self.timezone)  # fold 0

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None:
            start = now.astimezone(UTC)
        else:  # the instant after it (arithmetic in its own zone would drop ``fold``)
            start = previous_fire_time.astimezone(UTC) + timedelta(microseconds=1)
        day = start.astimezone(self.timezone).date() - timedelta(days=1)
        for _ in range(9):
            if day.weekday() == self.weekday and (fire := self._at(day)).astimezone(UTC) >= start:
                return fire
            day += timedelta(days=1)
        return None  # not reached: a week has every weekday

    def __str__(self) -> str:
        return f"weekly[{_WEEKDAYS[self.weekday]} {self.hour:02d}:{self.minute:02d} {self.timezone.key}]"

    def __repr__(self) -> str:
        return f"<WeeklyAt ({self})>"


def weekly_trigger(timezone: str, day: str = "mon", hour: int = 9, minute: int = 0) -> BaseTrigger:
    """Every ``day`` (a weekday *name*, default Monday) at ``hour:minute`` local time (default 09:00), once a week
    even on the days the clocks change (:class:`WeeklyAt`). Names on purpose: in APScheduler 3.x numeric weekdays
    count from 0 = Monday, so ``from_crontab("0 9 * * 1")`` would fire on Tuesdays."""
    return WeeklyAt(ZoneInfo(timezone), day, hour, minute)


def post_report(client: WebClient, channel: str, report: WeeklyReport, png: bytes) -> str:
    """Upload the chart with the report as its message; returns the Slack file id."""
    response = client.files_upload_v2(
        channel=channel,
        content=png,
        filename=f"npo-weekly-{report.until:%Y-%m-%d}.png",
        title=f"NPO L_align, week to {report.until:%Y-%m-%d}",
        alt_txt=chart_alt_text(report),
        initial_comment=report_text(report),
    )
    file = response.get("file") or {}
    return str(file.get("id", "")) if isinstance(file, dict) else ""


def run_weekly_summary(
    store: SQLiteStore,
    client: WebClient,
    channel: str,
    timezone: str,
    slot: datetime,
    *,
    clock: Callable[[], datetime] | None = None,
) -> str:
    """Build the report for the week ending at ``slot`` and post it; returns the file id.

    The week is read under the database's write lock (run at or after ``slot``): an answer is stamped with the time
    it is written, inside its write transaction, so every answer stamped before ``slot`` has been committed and is
    read here, and any other is stamped after it and is in the next week's summary — none falls between the two.
    ``clock`` is read once the lock is held: the time the τ posteriors and F_monitor are shown "as of" (a run that
    starts late, a catch-up after a restart, reads them later than ``slot``); without it, ``slot``."""
    with store.transaction():  # reads inside it use its connection (SQLiteStore.read)
        now = slot if clock is None else max(slot, clock(), key=datetime.timestamp)  # the later instant
        report = build_report(store, since=slot - WEEK, until=slot, timezone=timezone, now=now)
    return post_report(client, channel, report, render_png(report))
