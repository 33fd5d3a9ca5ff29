"""First end-to-end path: a prediction surfaces, a Like is recorded before the 200 and updates the message."""

from __future__ import annotations

import time

from slack_testing import ALICE, INCIDENT, BotUnderTest, wait_for


def test_prediction_surfaces_and_like_is_recorded(bot: BotUnderTest) -> None:
    channel, ts = bot.surface("p1")
    posts = bot.standin.calls("chat.postMessage")
    assert len(posts) == 1
    assert (
        posts[0].headers.get("Authorization", posts[0].headers.get("authorization"))
        == f"Bearer {bot.bot.settings.slack_bot_token}"
    )
    before = bot.counts()
    start = time.monotonic()
    response = bot.click(ALICE, "npo_like", (channel, ts))
    elapsed = time.monotonic() - start
    after = bot.counts()
    assert response.status_code == 200, response.text
    assert elapsed < 3
    assert after["feedback"] == before["feedback"] + 1
    assert after["key_n"] == before["key_n"] + 1
    assert after["pulls"] == before["pulls"] + 1
    updated = wait_for(lambda: bot.standin.calls("chat.update"))
    assert updated[0].body["ts"] == ts and updated[0].body["channel"] == INCIDENT
    text = str(bot.standin.message(channel, ts).blocks)
    assert ALICE in text and "Like (1)" in text
