"""A responder whose trust weight is 0 changes no learning state, whatever they click or type: answers (the
buttons and the Override modal) are stored with weight 0, an outcome they report is not recorded (it would
calibrate everyone else's trust, and their own, and stand as the first outcome), and ``/npo mute`` — an
operator's action, not an answer — holds back the key's predictions without touching m(k), the bandit or trust."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from abuse_testing import running_bot
from slack_testing import ALICE, INCIDENT, MALLORY, SECRET, BotUnderTest, make_settings, prediction, wait_for

from bot.config import Settings
from bot.slack.blocks import ACTION_FALSE_ALARM, ACTION_LIKE
from bot.standin import StandIn
from npo.trust import OperatorTrust

DISTRUSTED = OperatorTrust(MALLORY, agree=1.0, disagree=19.0)  # weight 0, with 15 units of evidence


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    for user in (ALICE, MALLORY):
        standin.add_user(user)
    return make_settings(tmp_path, standin, responders=(ALICE, MALLORY))


@pytest.fixture
def bot(settings: Settings, standin: StandIn) -> Iterator[BotUnderTest]:
    with running_bot(settings, standin) as running:
        with running.bot.store.transaction() as tx:
            tx.put_trust(DISTRUSTED)
        yield running


def _learning_state(bot: BotUnderTest) -> tuple[Any, ...]:
    """m(k) of every key, the bandit and every person's trust: what answers and outcomes may move."""
    store = bot.bot.store
    with store.read() as conn:
        keys = conn.execute("SELECT * FROM key_alignment ORDER BY key").fetchall()
    return keys, store.bandit(), store.trust()


def _told(standin: StandIn, user: str) -> list[str]:
    return [m.text for m in standin.messages(INCIDENT, include_ephemeral=True) if m.ephemeral_to == user]


def test_an_outcome_reported_by_a_responder_of_weight_zero_is_not_recorded(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    assert bot.counts()["feedback"] == 1
    before = _learning_state(bot)
    assert bot.click(MALLORY, ACTION_FALSE_ALARM, message).status_code == 200
    told = wait_for(lambda: [t for t in _told(bot.standin, MALLORY) if "not recorded" in t])
    assert "trust weight is 0" in told[0]
    assert bot.bot.store.outcome("p1") is None  # the outcome is still to be reported, by anyone else
    assert _learning_state(bot) == before  # ALICE's trust did not drop, MALLORY's did not rise
    db = bot.bot.store.path
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT subject, detail FROM audit_log WHERE kind = 'outcome_not_trusted'").fetchall()
    finally:
        conn.close()
    assert [(s, json.loads(d)["operator"], json.loads(d)["real_fault"]) for s, d in rows] == [("p1", MALLORY, False)]
    assert bot.click(ALICE, ACTION_FALSE_ALARM, message).status_code == 200  # a trusted responder's counts
    outcome = wait_for(lambda: bot.bot.store.outcome("p1"))
    assert outcome.source == f"slack:{ALICE}" and not outcome.real_fault


def test_a_mute_by_a_responder_of_weight_zero_holds_predictions_back_but_moves_no_learning_state(
    bot: BotUnderTest,
) -> None:
    """``/npo mute`` is an operator's action, not an answer: any responder may mute, whatever their weight. It moves
    nothing learnt — a blocked prediction consults no bandit, and its outcome feeds neither m(k) nor trust — and is
    audited with its person's name; any other responder lifts it."""
    key = "disk_failure|investigate|r#-p#|p>=0.9"
    message = bot.surface("p1")
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    before = _learning_state(bot)
    reply = bot.standin.slash_command(bot.events_url, SECRET, "/npo", f"mute {key} 1h", MALLORY, INCIDENT)
    assert "is muted until" in reply.json()["text"]
    assert bot.ingest(prediction("p2")).json()["rule"] == "mute"
    outcome = {"prediction_id": "p2", "real_fault": True, "source": "test"}
    assert bot.ingest(outcome, path="/api/v1/outcomes").status_code == 200
    assert _learning_state(bot) == before
    conn = sqlite3.connect(bot.bot.store.path)
    try:
        rows = conn.execute("SELECT subject, detail FROM audit_log WHERE kind = 'policy_mute'").fetchall()
    finally:
        conn.close()
    assert [(s, json.loads(d)["by"]) for s, d in rows] == [(key, MALLORY)]
    reply = bot.standin.slash_command(bot.events_url, SECRET, "/npo", f"unmute {key}", ALICE, INCIDENT)
    assert reply.json()["text"].startswith("Lifted 1 mute(s)")
    assert bot.ingest(prediction("p3")).json()["rule"] != "mute"
