"""An unanswered recommendation becomes skipped: the sweeper records it and the message says so (chat.update)."""

from __future__ import annotations

import time

from slack_testing import ALICE, BotUnderTest, wait_for

from bot.jobs.skips import sweep_skips
from bot.slack.blocks import ACTION_LIKE


def test_the_message_footer_says_skipped_and_a_late_answer_replaces_it(bot: BotUnderTest) -> None:
    channel, ts = bot.surface("p1")
    store, wake = bot.bot.store, bot.bot.worker.wake
    # The real clock; the timeout decides (the exact-boundary case is in tests/jobs/test_jobs_skips.py).
    assert sweep_skips(store, now=time.time(), timeout_s=3600, on_enqueue=wake).skipped == ()
    # The message is in the channel a moment before the worker marks it sent (what makes it sweepable): retry.
    swept = wait_for(lambda: sweep_skips(store, now=time.time(), timeout_s=0, on_enqueue=wake).skipped or None, 5)
    assert swept == ("p1",)
    footer = wait_for(
        lambda: [b for b in bot.standin.message(channel, ts).blocks if b.get("block_id") == "npo_skipped"], 5
    )
    assert "counted as *skipped*" in footer[0]["elements"][0]["text"]
    (applied,) = store.feedback_log()
    assert applied.event.operator == "system" and applied.y == store.config.codes.skip_lambda
    # A late answer replaces the skip in the learning state.
    assert bot.click(ALICE, ACTION_LIKE, (channel, ts)).status_code == 200
    assert [a.event.kind.value for a in store.feedback_log()] == ["skipped", "like"]
    assert [s.y for s in store.alignment_samples()] == [0.0]
