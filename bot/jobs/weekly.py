"""The weekly summary job: Monday 09:00 in the configured timezone, the report text and its PNG chart posted to
the ops channel in one ``files_upload_v2`` (getUploadURLExternal → raw upload → completeUploadExternal)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from slack_sdk import WebClient

from bot.jobs.report import WeeklyReport, build_report, chart_alt_text, render_png, report_text
from storage import SQLiteStore

WEEKLY_JOB = "weekly_summary"
WEEK = timedelta(days=7)


class OncePerLocalTime(CronTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """A cron trigger that fires once at a local time that occurs twice: when the clocks go back, APScheduler 3
    fires at both occurrences of the repeated hour (02:30 CEST, then 02:30 CET an hour later), and each is a slot
    of its own, so a weekly summary set inside that hour was posted twice. The second occurrence (``fold`` 1) is
    skipped; a time that does not occur (clocks going forward) still fires once, just after the gap."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        if fire is not None and fire.fold == 1:
            fire = super().get_next_fire_time(fire, fire)
        return fire


def weekly_trigger(timezone: str, day: str = "mon", hour: int = 9, minute: int = 0) -> CronTrigger:
    """Every ``day`` (a weekday *name*, default Monday) at ``hour:minute`` local time (default 09:00), once even
    on the day the clocks go back (:class:`OncePerLocalTime`). Names on purpose: in APScheduler 3.x numeric
    weekdays count from 0 = Monday, so ``from_crontab("0 9 * * 1")`` would fire on Tuesdays."""
    return OncePerLocalTime(day_of_week=day, hour=hour, minute=minute, timezone=ZoneInfo(timezone))


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


def run_weekly_summary(store: SQLiteStore, client: WebClient, channel: str, timezone: str, slot: datetime) -> str:
    """Build the report for the week ending at ``slot`` and post it; returns the file id."""
    report = build_report(store, since=slot - WEEK, until=slot, timezone=timezone)
    return post_report(client, channel, report, render_png(report))
