"""The weekly summary's window against a click in flight: every answer is in exactly one summary, also one that
waited for the database's write lock across the summary's slot."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from slack_sdk import WebClient
from slack_testing import ALICE, OPS, TOKEN, BotUnderTest, wait_for

from bot.jobs.report import build_report
from bot.jobs.weekly import WEEK, run_weekly_summary
from bot.slack.blocks import ACTION_LIKE


def _across_the_slot(bot: BotUnderTest, write: Callable[[], object]) -> datetime:
    """Run ``write`` (a click, an outcome) while another connection holds the write lock (a long write), with the
    weekly summary's slot coming while it waits; the summary of that slot runs then. Returns the slot."""
    lock = sqlite3.connect(bot.bot.settings.db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    client = WebClient(base_url=bot.standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    writing = threading.Thread(target=write)
    writing.start()
    try:
        time.sleep(0.5)  # the request is in, waiting for the write lock
        slot = datetime.now(UTC)
        weekly = threading.Thread(target=run_weekly_summary, args=(bot.bot.store, client, OPS, "UTC", slot))
        weekly.start()
        time.sleep(0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    weekly.join(30)
    writing.join(30)
    return slot


def _summary(bot: BotUnderTest) -> str:
    (summary,) = [m.text for m in bot.standin.messages(OPS) if m.text.startswith("NPO weekly summary")]
    return summary


def test_a_click_recorded_just_after_the_summary_read_its_week_is_in_the_next_summary(bot: BotUnderTest) -> None:
    """A click comes in just before the weekly slot, but it is written only after the slot's summary read the week:
    it must be counted in the next summary then, not in neither (this week's read did not see it, and the next
    week starts at the slot)."""
    store = bot.bot.store
    message = bot.surface("p1")
    slot = _across_the_slot(bot, lambda: bot.click(ALICE, ACTION_LIKE, message))
    wait_for(lambda: store.counts().get("feedback_like"))
    summary = _summary(bot)
    this_week = 1 if "like 100% (1)" in summary else 0
    assert this_week or "Answers: none this period" in summary
    next_week = build_report(store, since=slot, until=slot + WEEK, timezone="UTC").answers
    assert this_week + next_week == 1


def test_an_outcome_recorded_just_after_the_summary_read_its_week_is_in_the_next_summary(bot: BotUnderTest) -> None:
    store = bot.bot.store
    bot.surface("p1")
    outcome = {"prediction_id": "p1", "real_fault": True}
    slot = _across_the_slot(bot, lambda: bot.ingest(outcome, path="/api/v1/outcomes"))
    wait_for(lambda: store.counts().get("outcomes"))
    summary = _summary(bot)
    this_week = 1 if "Outcomes known (recorded in the period): 1" in summary else 0
    assert this_week or "Outcomes known (recorded in the period): 0" in summary
    next_week = build_report(store, since=slot, until=slot + WEEK, timezone="UTC").outcomes_known
    assert this_week + next_week == 1
