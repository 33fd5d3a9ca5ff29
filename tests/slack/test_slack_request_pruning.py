"""The skip sweeper prunes the Slack request ids (``processed_requests``) a day old, and only those: a request
still inside its replay window stays refused, and one past it is refused by its signature before its id is read."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

from slack_sdk import WebClient
from slack_testing import ALICE, INCIDENT, OPS, SECRET, TOKEN, BotUnderTest, wait_for

from bot.jobs.build import REQUESTS_KEPT, SKIP_JOB, JobDeps, build_jobs
from bot.slack.blocks import ACTION_LIKE

HOME = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}


def _request_ids(bot: BotUnderTest) -> set[str]:
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        return {str(r[0]) for r in conn.execute("SELECT request_id FROM processed_requests")}
    finally:
        conn.close()


def _sweep_at(bot: BotUnderTest, slot: datetime) -> None:
    """One run of the minutely skip sweeper for ``slot`` (as the scheduler runs it)."""
    client = WebClient(base_url=bot.standin.api_url, token=TOKEN, timeout=5, retry_handlers=[])
    (sweep,) = [j for j in build_jobs(JobDeps(bot.bot.store, client, OPS, now=lambda: slot)) if j.name == SKIP_JOB]
    sweep.run(slot)


def test_requests_inside_the_window_are_kept_and_still_refused(bot: BotUnderTest) -> None:
    assert bot.standin.send_event(bot.events_url, SECRET, HOME, event_id="EvNEW").status_code == 200
    wait_for(lambda: len(bot.standin.calls("views.publish")) == 1)
    two_days_ago = time.time() - 2 * 86_400
    assert bot.bot.store.claim_request("event:EvOLD", "app_home_opened", two_days_ago)  # accepted two days ago
    _sweep_at(bot, datetime.now(UTC).replace(second=0, microsecond=0))
    assert _request_ids(bot) == {"event:EvNEW"}  # the old id is gone, the new one kept
    for n in (1, 2, 3):  # Slack's retries of the new delivery are still refused
        retry = bot.standin.send_event(bot.events_url, SECRET, HOME, event_id="EvNEW", retry_num=n)
        assert retry.status_code == 200 and retry.text == ""
    # The pruned delivery sent again with its own signed timestamp is refused by the signature check.
    stale = bot.standin.send_event(bot.events_url, SECRET, HOME, event_id="EvOLD", timestamp=int(two_days_ago))
    assert stale.status_code == 401
    time.sleep(0.2)
    assert len(bot.standin.calls("views.publish")) == 1
    assert _request_ids(bot) == {"event:EvNEW"}


def test_a_day_later_every_kind_of_slack_request_id_is_pruned_and_alert_ends_are_kept(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    for _ in range(2):  # the second click repeats the answer: only its request id is stored
        assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    wait_for(lambda: bot.counts()["processed_requests"] == 1)
    assert bot.standin.send_event(bot.events_url, SECRET, HOME, event_id="Ev1").status_code == 200
    mute = "mute disk_failure|x|y|p>=0.9 1h"
    muted = bot.standin.slash_command(bot.events_url, SECRET, "/npo", mute, ALICE, INCIDENT)
    assert muted.status_code == 200 and "is muted until" in muted.json()["text"]
    assert bot.bot.service.close_without_outcome("p1", time.time(), source="test").closed
    before = _request_ids(bot)
    assert len(before) == 4 and "alert_resolved:p1" in before
    _sweep_at(bot, datetime.now(UTC).replace(second=0, microsecond=0) + REQUESTS_KEPT - timedelta(minutes=1))
    assert _request_ids(bot) == before  # not yet a day old
    _sweep_at(bot, datetime.now(UTC).replace(second=0, microsecond=0) + REQUESTS_KEPT + timedelta(minutes=2))
    assert _request_ids(bot) == {"alert_resolved:p1"}  # not a Slack request: a resolved alert repeated stays a repeat
    bot.bot.service.close_without_outcome("p1", time.time(), source="test")
    assert len(bot.bot.store.audit_entries(kind="alert_resolved")) == 1
