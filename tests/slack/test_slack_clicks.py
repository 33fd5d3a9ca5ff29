"""Clicks, the override modal, App Home and /npo over real HTTP, including a slow Slack."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from slack_testing import ALICE, BOB, INCIDENT, MALLORY, SECRET, BotUnderTest, make_settings, serving, wait_for

from bot.app import build_bot
from bot.slack.blocks import DETAILS_BLOCK_ID, REASON_BLOCK_ID
from bot.slack.responders import ResponderDirectory
from bot.standin import StandIn
from bot.standin.store import Message
from npo.loop import UnknownPrediction
from npo.types import FeedbackKind


def test_click_is_durable_before_the_200(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    response = bot.click(BOB, "npo_neutral", message)
    assert response.status_code == 200
    conn = sqlite3.connect(bot.bot.settings.db_path)  # a separate connection, right after the response
    try:
        rows = conn.execute("SELECT operator, kind FROM feedback").fetchall()
        queued = conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'update'").fetchone()[0]
    finally:
        conn.close()
    assert rows == [(BOB, "neutral")] and queued == 1


def test_click_returns_fast_while_chat_update_is_slow(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    bot.standin.faults.delay("chat.update", 5.0)
    start = time.monotonic()
    response = bot.click(ALICE, "npo_like", message)
    assert response.status_code == 200 and time.monotonic() - start < 3
    assert bot.counts()["feedback"] == 1
    bot.standin.faults.clear()


def test_a_click_is_answered_within_slacks_3_s_while_the_member_look_up_hangs(tmp_path: Path, standin: StandIn) -> None:
    """Slack waits 3 s for the answer to a click (so does the stand-in). With the default 5 s Web API timeout, a
    click needing the responder look-up (``conversations.members``) that Slack answered slowly was answered after
    it, and the person saw Slack's error. The look-up now gets 2 s: the click is answered in time, and with no
    member list known yet it is refused, as any failed look-up (fail closed), and the person is told."""
    settings = make_settings(tmp_path, standin, responders=(), slack_timeout_s=5.0)
    standin.set_channel_members(INCIDENT, [ALICE, BOB])
    with serving(build_bot(settings, seed=1), standin) as bot:
        message = bot.surface("p1")
        standin.faults.delay("conversations.members", 4.5, times=1)
        start = time.monotonic()
        assert bot.click(ALICE, "npo_like", message).status_code == 200
        assert time.monotonic() - start < 3
        assert bot.counts()["feedback"] == 0 and _told(bot, ALICE)


@pytest.mark.parametrize("slack", ["slow", "failing"])
def test_a_click_whose_clicker_cannot_be_looked_up_is_not_refused_as_a_non_responder(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture, slack: str
) -> None:
    """Responders are the incident channel's members, and no member list is known yet when Slack answers
    ``conversations.members`` past the 2 s budget or with an error: nothing is recorded (fail closed). Before, the
    clicker — a member — was told "only the on-call responders for this channel can answer", which is false and
    gave no reason to click again, and the log said "not a responder". Now they are told that their answer could
    not be checked and to click again, and the log says why."""
    caplog.set_level(logging.INFO)
    settings = make_settings(tmp_path, standin, responders=(), slack_timeout_s=5.0)
    standin.set_channel_members(INCIDENT, [ALICE, BOB])
    with serving(build_bot(settings, seed=1), standin) as bot:
        message = bot.surface("p1")
        if slack == "slow":
            standin.faults.delay("conversations.members", 4.5, times=1)
        else:
            standin.faults.error("conversations.members", "internal_error", times=1)
        assert bot.click(ALICE, "npo_like", message).status_code == 200
        text = _told(bot, ALICE)[0].text
        assert bot.counts()["feedback"] == 0
        assert "only the on-call responders" not in text, text
        assert "could not check just now whether you may answer" in text and "nothing was recorded" in text
        assert "click again" in text
        logged = [r.getMessage() for r in caplog.records if r.name.startswith("bot.")]
        assert not [line for line in logged if "not a responder" in line], logged
        why = "no answer within 2 s" if slack == "slow" else "internal_error"
        assert [line for line in logged if "cannot tell who may answer" in line and why in line], logged


@pytest.mark.parametrize("error", ["internal_error", "channel_not_found"])
def test_an_override_submitted_when_its_author_cannot_be_looked_up_stays_open(
    tmp_path: Path, standin: StandIn, error: str
) -> None:
    """The override modal was opened, then the bot restarted, and now Slack's member look-up fails: the submission
    records nothing and the modal stays open saying the answer could not be checked — not "Only on-call responders
    can answer", which is false for its author — so submitting again later counts. When Slack refuses the look-up
    for a reason no retry changes (the channel it cannot find), the modal names it instead of "Submit again"."""
    settings = make_settings(tmp_path, standin, responders=())
    standin.set_channel_members(INCIDENT, [ALICE, BOB])
    with serving(build_bot(settings, seed=1), standin) as bot:
        message = bot.surface("p1")
        assert bot.click(ALICE, "npo_override", message).status_code == 200
        assert len(standin.views()) == 1
    standin.faults.error("conversations.members", error, times=None)
    with serving(build_bot(settings, seed=1), standin) as bot:
        values = {"reason": {"reason": "maintenance"}}
        submitted = standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values)
        assert submitted.status_code == 200 and submitted.json()["response_action"] == "errors"
        shown = submitted.json()["errors"][REASON_BLOCK_ID]
        assert "Only on-call" not in shown
        if error == "internal_error":
            assert "could not check" in shown and "Submit again" in shown
        else:
            assert "NPO_INCIDENT_CHANNEL" in shown and "Ask whoever runs NPO" in shown and "again" not in shown
        assert bot.bot.store.feedback_log() == []


def test_click_still_acks_when_chat_update_fails(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    bot.standin.faults.error("chat.update", "message_not_found", times=None)
    start = time.monotonic()
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert time.monotonic() - start < 3
    wait_for(lambda: bot.bot.store.outbox("failed"))
    assert bot.counts()["feedback"] == 1
    bot.standin.faults.clear()


@pytest.mark.parametrize("details", ["", "   ", "\u200b", "\u200c\u200d\u2060\ufeff", "\u00a0\u3000\u200b "])
def test_other_with_details_made_only_of_invisible_characters_is_refused(bot: BotUnderTest, details: str) -> None:
    """ "Other" needs details; a zero-width space (a paste artefact, or a way round the check) is no description,
    and the modal says so as for empty details (before: stored as ``Other: \u200b``); real text then counts."""
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_override", message).status_code == 200
    before = bot.counts()
    values = {"reason": {"reason": "other"}, "details": {"details": details}}
    refused = bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values)
    assert refused.status_code == 200 and refused.json()["response_action"] == "errors"
    assert "describe the reason" in refused.json()["errors"][DETAILS_BLOCK_ID]
    assert bot.counts() == before and bot.bot.store.feedback_log() == []
    values = {"reason": {"reason": "other"}, "details": {"details": "\u200bfan\u00a0noise"}}
    assert bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values).status_code == 200
    assert [a.event.kind for a in bot.bot.store.feedback_log(prediction_id="p1")] == [FeedbackKind.OVERRIDE]


@pytest.mark.parametrize(
    "details", ["\u3164", "\u115f\u1160", "\uffa0 ", "\u2800\u2800", "\u034f", "\ufe0f\u200b", "\u17b4"]
)
def test_other_with_details_made_only_of_blank_letters_or_ignorable_marks_is_refused(
    bot: BotUnderTest, details: str
) -> None:
    """Letters and marks that show nothing (the Hangul fillers, the blank Braille pattern: the "invisible character"
    one pastes to get past a required field; a variation selector, a grapheme joiner) are no description either:
    before, "Other" with details made only of them was accepted and stored as ``Other: \u3164``. Text in the
    scripts they belong to still counts."""
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_override", message).status_code == 200
    values = {"reason": {"reason": "other"}, "details": {"details": details}}
    refused = bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values)
    assert refused.status_code == 200 and refused.json()["response_action"] == "errors"
    assert "describe the reason" in refused.json()["errors"][DETAILS_BLOCK_ID]
    assert bot.bot.store.feedback_log() == []
    values = {"reason": {"reason": "other"}, "details": {"details": "\u3164\ud32c \uc18c\uc74c \u2764\ufe0f"}}
    assert bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values).status_code == 200
    assert [a.event.kind for a in bot.bot.store.feedback_log(prediction_id="p1")] == [FeedbackKind.OVERRIDE]


def test_override_opens_the_modal_and_validates_the_reason(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    start = time.monotonic()
    assert bot.click(ALICE, "npo_override", message).status_code == 200
    assert time.monotonic() - start < 3
    views = bot.standin.views()
    assert len(views) == 1 and views[0]["callback_id"] == "npo_override_modal"
    before = bot.counts()
    empty = bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values={})
    assert empty.status_code == 200
    assert empty.json()["response_action"] == "errors" and REASON_BLOCK_ID in empty.json()["errors"]
    assert bot.counts() == before
    valid = bot.standin.submit_view(
        bot.events_url,
        SECRET,
        user_id=ALICE,
        values={"reason": {"reason": "maintenance"}, "details": {"details": "rack 12 is being recabled"}},
    )
    assert valid.status_code == 200
    log = bot.bot.store.feedback_log(prediction_id="p1")
    assert len(log) == 1 and log[0].event.kind.value == "override"
    assert log[0].event.reason == "Maintenance: rack 12 is being recabled"
    wait_for(lambda: "Override (1)" in str(bot.standin.message(*message).blocks))


def test_outcome_buttons_resolve_the_recommendation(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_confirm_fault", message).status_code == 200
    assert bot.counts()["outcomes"] == 1
    wait_for(lambda: "npo_resolved" in str(bot.standin.message(*message).blocks))
    blocks = bot.standin.message(*message).blocks
    assert not any(b["type"] == "actions" for b in blocks)
    (resolved,) = [b for b in blocks if b.get("block_id") == "npo_resolved"]
    assert resolved["elements"][0]["text"].endswith(f" via <@{ALICE}>")  # the person, as Slack names them


def test_app_home_retry_publishes_once(bot: BotUnderTest) -> None:
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    first = bot.standin.send_event(bot.events_url, SECRET, event, event_id="Ev0001")
    retry = bot.standin.send_event(bot.events_url, SECRET, event, event_id="Ev0001", retry_num=1)
    assert first.status_code == retry.status_code == 200
    wait_for(lambda: bot.standin.home_view(ALICE))
    time.sleep(0.2)
    assert len(bot.standin.calls("views.publish")) == 1


def test_slash_command_status_and_help(bot: BotUnderTest) -> None:
    bot.surface("p1")
    status = bot.standin.slash_command(bot.events_url, SECRET, "/npo", "status", ALICE, INCIDENT)
    assert status.status_code == 200 and "Alignment loss" in status.json()["text"]
    help_reply = bot.standin.slash_command(bot.events_url, SECRET, "/npo", "help", ALICE, INCIDENT)
    assert "/npo status" in help_reply.json()["text"]


def test_a_click_the_database_cannot_store_is_reported_to_its_person(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failure (simulated: a full disk is tested on a real process in tests/hardening) still acks, stores
    nothing and tells the person, since Slack does not retry interactions; clicking again later counts."""
    message = bot.surface("p1")

    def full_disk(*args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(bot.bot.service, "record_click", full_disk)
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    notice = _told(bot, ALICE)
    assert "not counted" in notice[0].text and "click again" in notice[0].text
    assert bot.bot.store.feedback_log() == []
    # The override modal stays open with an error instead of closing as if it had been recorded.
    assert bot.click(BOB, "npo_override", message).status_code == 200
    submitted = bot.standin.submit_view(
        bot.events_url, SECRET, user_id=BOB, values={"reason": {"reason": "maintenance"}}
    )
    assert submitted.status_code == 200 and submitted.json()["response_action"] == "errors"
    assert "Not recorded" in submitted.json()["errors"][REASON_BLOCK_ID]
    assert bot.bot.store.feedback_log() == []
    monkeypatch.undo()
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert [a.event.operator for a in bot.bot.store.feedback_log()] == [ALICE]


def test_an_outcome_click_the_database_cannot_store_is_reported_to_its_person(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confirmed fault / False alarm are clicks too: when the write fails the person is told it did not count."""
    message = bot.surface("p1")

    def full_disk(*args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(bot.bot.service, "record_outcome", full_disk)
    assert bot.click(ALICE, "npo_confirm_fault", message).status_code == 200
    notice = _told(bot, ALICE)
    assert "not counted" in notice[0].text and "click again" in notice[0].text
    assert bot.counts()["outcomes"] == 0
    monkeypatch.undo()
    assert bot.click(ALICE, "npo_confirm_fault", message).status_code == 200
    assert bot.counts()["outcomes"] == 1


def test_an_override_form_that_cannot_open_is_reported_to_its_person(bot: BotUnderTest) -> None:
    """``views.open`` refused (an expired trigger: the responder look-up took over 3 s, or Slack failed): before,
    the click did nothing at all on the person's screen."""
    message = bot.surface("p1")
    bot.standin.faults.error("views.open", "expired_trigger_id")
    assert bot.click(ALICE, "npo_override", message).status_code == 200
    notice = _told(bot, ALICE)
    assert "could not be opened" in notice[0].text and "nothing was recorded" in notice[0].text
    assert "expired_trigger_id" in notice[0].text
    assert bot.counts()["feedback"] == 0


@pytest.mark.parametrize(("timeout_s", "expected"), [(5.0, "expired_trigger_id"), (1.0, "no answer in time")])
def test_an_override_click_is_answered_within_3_s_while_views_open_is_slow(
    tmp_path: Path, standin: StandIn, timeout_s: float, expected: str
) -> None:
    """Slack waits 3 s for the answer to a click. With the Web API timeout at its default (5 s), a ``views.open``
    Slack took 3.5 s over held the answer to the Override click until it came back: Slack showed the click as
    failed. The click is now answered within 2.5 s, the form's opening finishing after the answer, and when it does
    not open — the trigger expired meanwhile, or Slack did not answer within the timeout (before, that told the
    person nothing) — the person is told."""
    settings = make_settings(tmp_path, standin, slack_timeout_s=timeout_s)
    with serving(build_bot(settings, seed=1), standin) as bot:
        message = bot.surface("p1")
        standin.faults.delay("views.open", 3.5, times=1)
        start = time.monotonic()
        assert bot.click(ALICE, "npo_override", message).status_code == 200
        assert time.monotonic() - start < 3
        notice = _told(bot, ALICE)
        assert "could not be opened" in notice[0].text and expected in notice[0].text, notice[0].text
        assert bot.counts()["feedback"] == 0


def test_an_outcome_click_the_loop_refuses_is_reported_to_its_person(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcome for a prediction the database does not hold (a message from before the database was replaced)
    was refused in the log only; the person believed it was recorded."""
    message = bot.surface("p1")

    def unknown(*args: object, **kwargs: object) -> object:
        raise UnknownPrediction("p1")

    monkeypatch.setattr(bot.bot.service, "record_outcome", unknown)
    assert bot.click(ALICE, "npo_false_alarm", message).status_code == 200
    notice = _told(bot, ALICE)
    assert "not recorded" in notice[0].text and "no prediction with id 'p1'" in notice[0].text


def _told(bot: BotUnderTest, user: str) -> list[Message]:
    """The ephemeral messages ``user`` got in the incident channel, once there is one (5 s at most)."""
    return wait_for(
        lambda: [m for m in bot.standin.messages(INCIDENT, include_ephemeral=True) if m.ephemeral_to == user]
    )


def test_an_outcome_click_after_another_outcome_tells_its_person_it_was_not_recorded(bot: BotUnderTest) -> None:
    """Alice clicks *Confirmed fault*; Bob, whose message still shows the buttons, clicks *False alarm*. The first
    outcome counts, so Bob's is not recorded — but he was told nothing, and believed his answer stood. He is told
    now which outcome was recorded, and by whom; a click agreeing with it changes nothing and tells nothing."""
    message = bot.surface("p1")
    bobs = bot.click_body(BOB, "npo_false_alarm", message)  # the buttons as Bob's client still shows them
    agreeing = bot.click_body(BOB, "npo_confirm_fault", message)
    assert bot.click(ALICE, "npo_confirm_fault", message).status_code == 200
    before = bot.counts()
    assert bot.send_signed(bobs).status_code == 200
    told = _told(bot, BOB)
    assert "was not recorded" in told[0].text and "*Confirmed fault*" in told[0].text
    assert f"<@{ALICE}>" in told[0].text
    assert bot.send_signed(agreeing).status_code == 200
    time.sleep(0.3)
    assert len(_told(bot, BOB)) == 1
    assert bot.counts() == before
    recorded = bot.bot.store.outcome("p1")
    assert recorded is not None and recorded.real_fault and recorded.source == f"slack:{ALICE}"


def test_the_engineer_an_on_call_group_rotated_to_can_answer_at_once(tmp_path: Path, standin: StandIn) -> None:
    """Responders are the members of an on-call user group, which Slack rotates at handover. The members were
    cached for 5 minutes, so the engineer it rotated to was refused — "only the on-call responders … can answer",
    nothing recorded — for up to 5 minutes after taking over. A clicker not in the cached list has it looked up
    again at once; a non-responder's clicks still cost at most one look-up per 30 s."""
    standin.add_usergroup("S0ONCALL", [ALICE])
    settings = make_settings(tmp_path, standin, responders=("S0ONCALL",))
    with serving(build_bot(settings, seed=1), standin) as bot:
        now = [1000.0]
        bot.bot.deps.responders = ResponderDirectory(
            bot.bot.async_client, users=(), groups=("S0ONCALL",), channel=INCIDENT, clock=lambda: now[0]
        )
        message = bot.surface("p1")
        assert bot.click(ALICE, "npo_like", message).status_code == 200  # the group's members are looked up now
        standin.add_usergroup("S0ONCALL", [BOB])  # a minute later, the rotation: Bob is on call
        now[0] += 60
        assert bot.click(BOB, "npo_like", message).status_code == 200
        assert [f.event.operator for f in bot.bot.store.feedback_log(prediction_id="p1")] == [ALICE, BOB]
        looked_up = len(standin.calls("usergroups.users.list"))
        for _ in range(3):
            assert bot.click(MALLORY, "npo_like", message).status_code == 200
        assert len(standin.calls("usergroups.users.list")) == looked_up
        assert len(bot.bot.store.feedback_log(prediction_id="p1")) == 2


def test_an_override_submitted_again_with_another_reason_after_slack_gave_up_waiting_keeps_the_new_one(
    bot: BotUnderTest,
) -> None:
    """The database was busy (another process writing) past Slack's 3 s: the override was stored, but Slack had
    given up waiting, so the modal stayed open saying it could not be submitted. Its person corrected the reason and
    submitted again. The submission's request id was the view's and the person's alone, so this one was taken for
    a repeat of the first: the modal closed as if recorded, and the corrected reason was dropped. The same modal
    submitted again as it was is still a repeat; with another reason it is a changed answer, and replaces the first."""
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_override", message).status_code == 200
    blocker = sqlite3.connect(bot.bot.settings.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(3.5, blocker.commit)
    release.start()
    try:
        with pytest.raises(httpx.ReadTimeout):  # Slack's 3 s
            bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values={"reason": {"reason": "maintenance"}})
        wait_for(lambda: bot.bot.store.feedback_log(prediction_id="p1"))  # stored after Slack gave up
    finally:
        release.join()
        blocker.close()
    corrected = {"reason": {"reason": "false_positive"}, "details": {"details": "the disk was replaced yesterday"}}
    for _ in range(2):  # the corrected form, then the same again (a repeat)
        assert bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=corrected).status_code == 200
    log = bot.bot.store.feedback_log(prediction_id="p1")
    assert [f.event.reason for f in log] == ["Maintenance", "False positive: the disk was replaced yesterday"]
    assert log[1].replaces == log[0].event.request_id
