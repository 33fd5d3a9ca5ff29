"""The weekly summary's window against a click in flight: every answer is in exactly one summary, also one that
waited for the database's write lock across the summary's slot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from slack_sdk import WebClient
from slack_testing import ALICE, OPS, TOKEN, BotUnderTest, wait_for
from weekly_slot import write_across_the_slot

from bot.jobs.report import build_report
from bot.jobs.weekly import WEEK
from bot.slack.blocks import ACTION_LIKE


def _across_the_slot(bot: BotUnderTest, write: Callable[[], object]) -> datetime:
    """Run ``write`` (a click, an outcome) across the weekly summary's slot (``write_across_the_slot``)."""
    client = WebClient(base_url=bot.standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    return write_across_the_slot(bot.bot.settings.db_path, bot.bot.store, client, OPS, write)


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
