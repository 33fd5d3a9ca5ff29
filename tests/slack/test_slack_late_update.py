"""A recommendation's message update whose answer was lost but which Slack applied late, over real HTTP with the
stand-in: the message ends showing every answer the database holds."""

from __future__ import annotations

from typing import Any

from slack_testing import ALICE, BOB, BotUnderTest, wait_for

from bot.slack.blocks import ACTION_LIKE, ACTION_NEUTRAL


def _answers_text(bot: BotUnderTest, message: tuple[str, str]) -> str:
    block: dict[str, Any] | None = next(
        (b for b in bot.standin.message(*message).blocks if b.get("block_id") == "npo_answers"), None
    )
    return "" if block is None else str(block["text"]["text"])


def test_an_update_whose_answer_was_lost_and_lands_late_does_not_hide_later_answers(bot: BotUnderTest) -> None:
    """The first answer's chat.update gets no answer within the client's timeout (2 s) but is applied by Slack
    later (3 s after it arrived), after the updates that show the second answer: the message kept showing the
    first answer alone. The retry of the lost update now waits until such a late one would have landed."""
    message = bot.surface("late1")
    wait_for(lambda: not bot.bot.store.outbox("pending"))  # posted
    bot.standin.faults.delay("chat.update", 3.0, times=1)
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    wait_for(lambda: not bot.standin.faults.pending("chat.update"))  # the first update is in flight
    assert bot.click(BOB, ACTION_NEUTRAL, message).status_code == 200
    wait_for(lambda: not bot.bot.store.outbox("pending"))
    # the delayed call has been answered too (the stand-in records a call once it answers it)
    wait_for(lambda: len([c for c in bot.standin.calls("chat.update") if ALICE in str(c.body)]) >= 3)
    text = _answers_text(bot, message)
    assert "<@U0ALICE>" in text and "<@U0BOB>" in text, text
