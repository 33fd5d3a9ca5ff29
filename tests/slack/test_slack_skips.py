"""An unanswered recommendation becomes skipped: the sweeper records it and the message says so (chat.update)."""

from __future__ import annotations

import time
from pathlib import Path

from slack_testing import ALICE, INCIDENT, BotUnderTest, make_settings, prediction, wait_for

from bot.app import build_bot
from bot.jobs.skips import sweep_skips
from bot.serve import ServerThread
from bot.slack.blocks import ACTION_LIKE
from bot.standin import StandIn


def test_the_message_footer_says_skipped_and_a_late_answer_replaces_it(bot: BotUnderTest) -> None:
    channel, ts = bot.surface("p1")
    store, wake = bot.bot.store, bot.bot.worker.wake
    # The real clock; the timeout decides (the exact-boundary case is in tests/jobs/test_jobs_skips.py).
    assert sweep_skips(store, now=time.time(), timeout_s=3600, on_enqueue=wake).skipped == ()
    # The message is in the channel a moment before the worker marks it sent (what makes it sweepable): retry.
    swept = wait_for(lambda: sweep_skips(store, now=time.time(), timeout_s=0, on_enqueue=wake).skipped or None)
    assert swept == ("p1",)
    footer = wait_for(
        lambda: [b for b in bot.standin.message(channel, ts).blocks if b.get("block_id") == "npo_skipped"]
    )
    assert "counted as *skipped*" in footer[0]["elements"][0]["text"]
    (applied,) = store.feedback_log()
    assert applied.event.operator == "system" and applied.y == store.config.codes.skip_lambda
    # A late answer replaces the skip in the learning state.
    assert bot.click(ALICE, ACTION_LIKE, (channel, ts)).status_code == 200
    assert [a.event.kind.value for a in store.feedback_log()] == ["skipped", "like"]
    assert [s.y for s in store.alignment_samples()] == [0.0]


def test_an_alert_storms_digest_has_no_buttons_and_its_silence_is_not_a_skip(tmp_path: Path, standin: StandIn) -> None:
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3), seed=1)
    server = ServerThread(built.asgi, loop="asyncio").start()
    try:
        bot = BotUnderTest(built, server, standin)
        assert bot.ingest([prediction(f"s{i}", target=f"node-{i}") for i in range(6)]).status_code == 200
        wait_for(lambda: not built.store.outbox("pending"))
        (digest,) = standin.messages(INCIDENT)  # six surfaced recommendations, one message
        assert not [b for b in digest.blocks if b.get("type") == "actions"]
        wait_for(lambda: len(built.store.outbox("sent")) == 6)
        assert sweep_skips(built.store, now=time.time() + 3601, timeout_s=3600).skipped == ()
        assert built.store.feedback_log() == [] and all(s.n == 0 for s in built.store.keys().values())
    finally:
        server.stop()
        built.close()
