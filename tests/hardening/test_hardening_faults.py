"""Slack faults against the running bot: the stand-in down, answering 429 to everything, answering slowly, and
answering malformed JSON. In each case the bot keeps accepting predictions and clicks (the 200 never waits on
Slack), loses nothing accepted, and once Slack is back posts every recommendation and update — once, unless a
call timed out after Slack had already acted on it (Slack has no idempotency key), and then the extra posts are
counted and bounded by the timed-out calls.

In CI the outage and the 429 spell last until the worker has retried a few times; ``NPO_FAULT_SECONDS=60``
(set by ``scripts/reliability``) holds each of them for a minute while predictions keep arriving once a second.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time

import httpx
from slack_testing import ALICE, BOB, INCIDENT, BotUnderTest, prediction, wait_for

FAULT_SECONDS = float(os.environ.get("NPO_FAULT_SECONDS", "0"))


def _hold(bot: BotUnderTest, prefix: str) -> list[str]:
    """Keep predictions arriving once a second for ``FAULT_SECONDS`` (the full-length run); their ids."""
    pids: list[str] = []
    deadline = time.monotonic() + FAULT_SECONDS
    while time.monotonic() < deadline:
        pid = f"{prefix}-held-{len(pids)}"
        response = bot.ingest(prediction(pid, target=f"host-{pid}"))
        assert response.status_code == 200, response.text
        pids.append(pid)
        time.sleep(1.0)
    return pids


def _duplicate_posts(bot: BotUnderTest) -> int:
    """Posts Slack accepted more than once: successful ``chat.postMessage`` calls minus distinct messages the
    database knows (a digest is one message for many recommendations)."""
    posts = [
        c
        for c in bot.standin.calls("chat.postMessage")
        if c.status == 200
        and isinstance(c.response, dict)
        and c.response.get("ok")
        and c.body.get("channel") == INCIDENT
    ]
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        (distinct,) = conn.execute(
            "SELECT COUNT(DISTINCT message_ts) FROM recommendations WHERE channel = ? AND message_ts != ''", (INCIDENT,)
        ).fetchone()
    finally:
        conn.close()
    return len(posts) - int(distinct)


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


def _settle(bot: BotUnderTest, pids: list[str], timeout: float = 20.0) -> int:
    """Wait until the outbox is drained: nothing failed, every recommendation posted (alone or in a digest).
    Returns the number of duplicate posts."""
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=timeout)
    assert not bot.bot.store.outbox("failed"), [i.last_error for i in bot.bot.store.outbox("failed")]
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        posted = dict(conn.execute("SELECT prediction_id, message_ts FROM recommendations").fetchall())
    finally:
        conn.close()
    assert all(posted.get(pid) for pid in pids), {pid: posted.get(pid) for pid in pids}
    return _duplicate_posts(bot)


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
    # the oldest post keeps failing; the newer ones wait behind it (outbox order), which is not a failed try
    wait_for(lambda: any(i.attempts >= 2 for i in bot.bot.store.outbox("pending")))
    assert len(bot.bot.store.outbox("pending")) == len(pids) + 1  # three posts and Bob's update, all kept
    pids += _hold(bot, "down")
    updates_before = len(bot.standin.calls("chat.update"))
    bot.standin.start()
    assert _settle(bot, ["first", *pids], timeout=30 + FAULT_SECONDS) == 0
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
    pids += _hold(bot, "rl")
    bot.standin.faults.clear()
    assert _settle(bot, ["first", *pids], timeout=30 + FAULT_SECONDS) == 0
    assert bot.bot.metrics.counter("npo_deliveries_total", kind="recommendation", result="retry") >= 2


def test_slack_answering_slowly(bot: BotUnderTest) -> None:
    """5 s answers with the bot's 2 s Web API timeout: every call times out, yet Slack acts on it. Each such
    post may appear twice (the retry); the extra posts are counted and never exceed the timed-out calls."""
    message = _first(bot)
    assert bot.bot.settings.slack_timeout_s < 5
    bot.standin.faults.delay("*", 5.0, times=2)
    pids = ["slow-1"]
    _accept_during_fault(bot, pids, message)
    duplicates = _settle(bot, ["first", *pids], timeout=30)
    timed_out = bot.bot.metrics.counter("npo_deliveries_total", kind="recommendation", result="retry")
    assert timed_out >= 1
    assert duplicates <= timed_out, (duplicates, timed_out)


def test_slack_answering_malformed_json(bot: BotUnderTest) -> None:
    message = _first(bot)
    bot.standin.faults.malformed("chat.postMessage", times=2)
    bot.standin.faults.malformed("chat.update", times=1)
    pids = ["mal-1", "mal-2"]
    _accept_during_fault(bot, pids, message)
    assert _settle(bot, ["first", *pids]) == 0
    assert BOB in str(bot.bot.store.feedback_log(prediction_id="first"))
    wait_for(lambda: [c for c in bot.standin.calls("chat.update") if c.status == 200 and BOB in str(c.body)])
