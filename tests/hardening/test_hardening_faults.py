"""Slack faults against the running bot: the stand-in down, answering 429 to everything, answering slowly, and
answering malformed JSON. In each case the bot keeps accepting predictions and clicks (the 200 never waits on
Slack), loses nothing accepted, and once Slack is back posts every recommendation and update — once, unless a
call timed out after Slack had already acted on it (Slack has no idempotency key), and then the extra posts are
counted and bounded by the timed-out calls.

These are the short CI versions; ``scripts/faults`` runs the same scenarios at full length (a one-minute outage,
5 s answers) and prints PASS/FAIL for each.
"""

from __future__ import annotations

import itertools

import httpx
from slack_testing import ALICE, BOB, INCIDENT, BotUnderTest, prediction, wait_for


def _posts_per_prediction(bot: BotUnderTest, pids: list[str]) -> dict[str, int]:
    messages = [str(m.blocks) for m in bot.standin.messages(INCIDENT)]
    return {pid: sum(f"`{pid}`" in text for text in messages) for pid in pids}


def _accept_during_fault(bot: BotUnderTest, pids: list[str], message: tuple[str, str]) -> None:
    """Predictions and a click are accepted and stored while Slack misbehaves; the click's 200 does not wait on
    Slack (a 2 s client timeout would fail if it did, Slack being down or 5 s slow)."""
    for pid in pids:
        response = httpx.post(
            f"{bot.server.url}/api/v1/predictions",
            json=prediction(pid, target=f"host-{pid}"),
            headers={"Authorization": f"Bearer {bot.bot.settings.ingest_token}"},
            timeout=2,
        )
        assert response.status_code == 200 and response.json()["verdict"] == "surface", response.text
    body = bot.click_body(BOB, "npo_like", message)
    assert bot.send_signed(body).status_code == 200
    assert {f.event.operator for f in bot.bot.store.feedback_log(prediction_id="first")} == {ALICE, BOB}


def _settle(bot: BotUnderTest, pids: list[str], timeout: float = 20.0) -> dict[str, int]:
    """Wait until the outbox is drained; every recommendation was posted; nothing failed. Posts per prediction."""
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=timeout)
    assert not bot.bot.store.outbox("failed"), [i.last_error for i in bot.bot.store.outbox("failed")]
    posts = _posts_per_prediction(bot, pids)
    assert all(n >= 1 for n in posts.values()), posts
    return posts


def _first(bot: BotUnderTest) -> tuple[str, str]:
    message = bot.surface("first")
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    wait_for(lambda: bot.standin.calls("chat.update"))
    return message


def test_slack_down_then_back(bot: BotUnderTest) -> None:
    message = _first(bot)
    bot.standin.stop()
    pids = ["down-1", "down-2", "down-3"]
    _accept_during_fault(bot, pids, message)
    wait_for(lambda: all(i.attempts >= 2 for i in bot.bot.store.outbox("pending")), timeout=10)
    assert len(bot.bot.store.outbox("pending")) == len(pids) + 1  # three posts and Bob's update, all kept
    updates_before = len(bot.standin.calls("chat.update"))
    bot.standin.start()
    assert _settle(bot, ["first", *pids]) == {"first": 1, "down-1": 1, "down-2": 1, "down-3": 1}
    assert len(bot.standin.calls("chat.update")) > updates_before
    assert "Bob" in str(bot.standin.message(*message).blocks) or BOB in str(bot.standin.message(*message).blocks)


def test_slack_answering_429_to_everything(bot: BotUnderTest) -> None:
    message = _first(bot)
    bot.standin.faults.rate_limit("*", times=None, retry_after=1)
    pids = ["rl-1", "rl-2"]
    _accept_during_fault(bot, pids, message)
    limited = wait_for(
        lambda: len(bot.standin.calls("chat.postMessage")) >= 3 and bot.standin.calls("chat.postMessage")
    )
    first_tries = [c for c in limited if c.status == 429]
    assert len(first_tries) >= 2
    # Retry-After is honoured: no two attempts at the channel less than a second apart while limited.
    gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(first_tries)]
    assert min(gaps) >= 0.95, gaps
    bot.standin.faults.clear()
    assert _settle(bot, ["first", *pids]) == {"first": 1, "rl-1": 1, "rl-2": 1}
    assert bot.bot.metrics.counter("npo_deliveries_total", kind="recommendation", result="retry") >= 2


def test_slack_answering_slowly(bot: BotUnderTest) -> None:
    """5 s answers with the bot's 2 s Web API timeout: every call times out, yet Slack acts on it. Each such
    post may appear twice (the retry); the extra posts are counted and never exceed the timed-out calls."""
    message = _first(bot)
    assert bot.bot.settings.slack_timeout_s < 5
    bot.standin.faults.delay("*", 5.0, times=2)
    pids = ["slow-1"]
    _accept_during_fault(bot, pids, message)
    posts = _settle(bot, ["first", *pids], timeout=30)
    timed_out = bot.bot.metrics.counter("npo_deliveries_total", kind="recommendation", result="retry")
    extra = sum(n - 1 for n in posts.values())
    assert extra <= timed_out, (posts, timed_out)
    assert posts["first"] == 1


def test_slack_answering_malformed_json(bot: BotUnderTest) -> None:
    message = _first(bot)
    bot.standin.faults.malformed("chat.postMessage", times=2)
    bot.standin.faults.malformed("chat.update", times=1)
    pids = ["mal-1", "mal-2"]
    _accept_during_fault(bot, pids, message)
    assert _settle(bot, ["first", *pids]) == {"first": 1, "mal-1": 1, "mal-2": 1}
    assert BOB in str(bot.bot.store.feedback_log(prediction_id="first"))
    wait_for(lambda: [c for c in bot.standin.calls("chat.update") if c.status == 200 and BOB in str(c.body)])
