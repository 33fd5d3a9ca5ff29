"""What a recommendation message lists as answers, over real HTTP with the stand-in: long override reasons do not
push a later answer out of the message, and the skip note stops inviting an answer once the outcome is known."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from slack_testing import ALICE, BOB, MALLORY, SECRET, BotUnderTest, make_settings, wait_for

from bot.config import Settings
from bot.jobs.skips import sweep_skips
from bot.slack.blocks import ACTION_CONFIRM_FAULT, ACTION_LIKE, ACTION_OVERRIDE
from bot.standin import StandIn


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    """The Slack tests' settings (and so their ``bot``), with a third responder who may answer."""
    for user in (ALICE, BOB, MALLORY):
        standin.add_user(user)
    return make_settings(tmp_path, standin, responders=(ALICE, BOB, MALLORY))


def _block(bot: BotUnderTest, message: tuple[str, str], block_id: str) -> dict[str, Any] | None:
    return next((b for b in bot.standin.message(*message).blocks if b.get("block_id") == block_id), None)


def _override(bot: BotUnderTest, user: str, message: tuple[str, str], details: str) -> None:
    assert bot.click(user, ACTION_OVERRIDE, message).status_code == 200
    values = {"reason": {"reason": "already_handled"}, "details": {"details": details[:2000]}}
    assert bot.standin.submit_view(bot.events_url, SECRET, user_id=user, values=values).status_code == 200


def test_long_override_reasons_leave_every_answer_listed(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    _override(bot, ALICE, message, "Disk r12 was already swapped during the 02:00 maintenance window. " * 25)
    _override(bot, BOB, message, "Same here: the SMART errors are from the old disk, see CHG-4411. " * 20)
    assert bot.click(MALLORY, ACTION_LIKE, message).status_code == 200
    wait_for(lambda: "Like (1)" in str(bot.standin.message(*message).blocks))
    answers = _block(bot, message, "npo_answers")
    assert answers is not None
    lines = answers["text"]["text"].split("\n")
    assert [line.split(" by ")[1].split(" at ")[0] for line in lines] == [f"<@{u}>" for u in (ALICE, BOB, MALLORY)]
    assert all(line.endswith("…") for line in lines[:2]) and "*like*" in lines[2]
    # The full reasons stay stored; only the message shows them shortened.
    assert [len(a.event.reason) > 1000 for a in bot.bot.store.feedback_log()] == [True, True, False]


def test_skip_note_stops_inviting_an_answer_once_the_outcome_is_known(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    store, wake = bot.bot.store, bot.bot.worker.wake
    wait_for(lambda: sweep_skips(store, now=time.time(), timeout_s=0, on_enqueue=wake).skipped or None)
    note = wait_for(lambda: _block(bot, message, "npo_skipped"))
    assert "An answer now still counts" in note["elements"][0]["text"]
    assert bot.click(ALICE, ACTION_CONFIRM_FAULT, message).status_code == 200
    wait_for(lambda: _block(bot, message, "npo_resolved"))
    blocks = bot.standin.message(*message).blocks
    note = _block(bot, message, "npo_skipped")
    assert note is not None and "counted as *skipped*" in note["elements"][0]["text"]
    assert "An answer now still counts" not in note["elements"][0]["text"]
    assert not any(b["type"] == "actions" for b in blocks)


def test_an_outcome_dated_before_the_calendar_still_updates_the_message(bot: BotUnderTest) -> None:
    """An outcome's ``at`` has no lower bound (only times ahead of the clock are refused): one before year 1 — a
    sender's sentinel — is stored, and the message shows it as Slack's date token with the raw time as its fallback.
    A UTC fallback that cannot be written must not make every update of the message fail."""
    message = bot.surface("p1")
    answer = bot.ingest({"prediction_id": "p1", "real_fault": True, "at": -1e12}, "/api/v1/outcomes")
    assert answer.status_code == 200 and answer.json()["recorded"] is True, answer.text
    resolved = wait_for(lambda: _block(bot, message, "npo_resolved"))
    assert "<!date^-1000000000000^{date_short_pretty} {time}|-1000000000000>" in resolved["elements"][0]["text"]
