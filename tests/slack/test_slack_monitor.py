"""End to end through the real HTTP server and the stand-in: engineers start overriding one key, the meta-monitor
posts a retraining alert with Approve / Dismiss, Approve retrains (a new model version, a thread reply, F_monitor),
and a second click on the same alert records nothing new."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_testing import (
    ALICE,
    BOB,
    INCIDENT,
    OPS,
    SECRET,
    BotUnderTest,
    make_settings,
    prediction,
    serving,
    wait_for,
)

from bot.app import build_bot
from bot.jobs.build import monitor_config
from bot.jobs.monitor import run_monitor
from bot.slack.blocks import ACTION_LIKE, ACTION_NEUTRAL, ACTION_OVERRIDE
from bot.slack.monitor_blocks import (
    ACTION_APPROVE,
    ACTION_DISMISS,
    ALERT_HINT_BLOCK_ID,
    AlertFacts,
    alert_blocks,
    alert_text,
)
from bot.slack.text import slack_time
from bot.standin import StandIn
from npo.bandit import ThresholdBandit

CHANNELS = [f"C0CH{i:03d}" for i in range(32)]  # one channel each: no 1 message/s pacing between them


@pytest.fixture
def drift_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    for user in (ALICE, BOB):
        standin.add_user(user)
    for channel in CHANNELS:
        standin.add_channel(channel)
    settings = make_settings(tmp_path, standin, monitor_window=20, monitor_min_samples=10)
    built = build_bot(settings, seed=1)
    with serving(built, standin) as served:
        yield served


def _posted(bot: BotUnderTest, channel: str, pid: str) -> tuple[str, str]:
    def find() -> tuple[str, str] | None:
        for message in bot.standin.messages(channel):
            if any(pid in str(block) for block in message.blocks):
                return message.channel, message.ts
        return None

    return wait_for(find)


def _db(bot: BotUnderTest, sql: str) -> Any:
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def _arms(bot: BotUnderTest) -> list[tuple[float, float, int]]:
    """The threshold bandit's stored arms, lowest τ first: (α, β, pulls)."""
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        rows = conn.execute("SELECT alpha, beta, pulls FROM learning_state WHERE kind = 'arm' ORDER BY threshold")
        return [(float(a), float(b), int(n)) for a, b, n in rows]
    finally:
        conn.close()


def _alert(bot: BotUnderTest) -> tuple[str, str]:
    def find() -> tuple[str, str] | None:
        for message in bot.standin.messages(OPS):
            if ACTION_APPROVE in str(message.blocks):
                return message.channel, message.ts
        return None

    return wait_for(find)


def _posted_alert(bot: BotUnderTest) -> tuple[str, str]:
    """A proposal opened now and its alert (Approve / Dismiss) posted to the ops channel: (channel, ts)."""
    with bot.bot.store.transaction() as tx:
        proposal = tx.open_proposal(time.time(), "test proposal")
        tx.enqueue(OPS, "message", {"text": "alert", "blocks": _buttons(proposal)}, time.time())
    bot.bot.worker.wake()
    return _alert(bot)


def test_drift_alert_approve_retrains_once(drift_bot: BotUnderTest) -> None:
    bot = drift_bot
    # 12 disk recommendations and 20 PSU ones, all surfaced first (an override starts the key's cooldown).
    body = [
        prediction(f"d{i}", channel=CHANNELS[i])
        if i < 12
        else prediction(f"s{i}", fault_type="psu", channel=CHANNELS[i])
        for i in range(32)
    ]
    response = bot.ingest(body)
    assert response.status_code == 200 and all(r["verdict"] == "surface" for r in response.json()["results"])
    messages = {p["id"]: _posted(bot, p["channel"], p["id"]) for p in body}
    # Quiet period: everything liked.
    for pid in [f"d{i}" for i in range(6)] + [f"s{i}" for i in range(12, 22)]:
        assert bot.click(ALICE, ACTION_LIKE, messages[pid]).status_code == 200
    monitor = monitor_config(bot.bot.settings)
    quiet = run_monitor(bot.bot.store, monitor, now=time.time(), channel=OPS, on_enqueue=bot.bot.worker.wake)
    assert not quiet.decision.trigger and quiet.loss == 0.0
    # Drift: the engineers start overriding the PSU key (through the reason modal).
    for pid in [f"s{i}" for i in range(22, 32)]:
        assert bot.click(BOB, ACTION_OVERRIDE, messages[pid]).status_code == 200
        submitted = bot.standin.submit_view(
            bot.events_url, SECRET, user_id=BOB, values={"reason": {"reason": "false_positive"}}
        )
        assert submitted.status_code == 200
    # Alice goes on liking disk recommendations. Bob, who contradicts her on PSU, ends at trust weight 0, so the most
    # recent answers that carry weight — the ones a new model is compared on (at least 5) — are hers.
    for pid in [f"d{i}" for i in range(6, 12)]:
        assert bot.click(ALICE, ACTION_LIKE, messages[pid]).status_code == 200
    assert _db(bot, "SELECT COUNT(*) FROM feedback WHERE kind = 'override'")[0] == 10
    run = run_monitor(bot.bot.store, monitor, now=time.time(), channel=OPS, on_enqueue=bot.bot.worker.wake)
    assert run.decision.trigger and run.proposal_id == 1

    # The alert reaches the ops channel with Approve / Dismiss and the misaligned key.
    channel, ts = _alert(bot)
    alert = bot.standin.message(OPS, ts)
    assert ACTION_DISMISS in str(alert.blocks) and "psu|investigate" in str(alert.blocks)
    assert "L_align 0.50 &gt; 0.30" in alert.text and ">" not in alert.text  # mrkdwn: < and > escaped

    prior = ThresholdBandit(bot.bot.store.config.bandit)
    learned = _arms(bot)
    assert [a for a, _, _ in learned] != list(prior.alpha) and any(pulls for _, _, pulls in learned)
    assert bot.click(ALICE, ACTION_APPROVE, (channel, ts)).status_code == 200
    reply = wait_for(lambda: [m for m in bot.standin.messages(OPS) if m.thread_ts == ts], 10)[0]
    assert "Retraining approved by" in reply.text and "model *v1* promoted" in reply.text
    # The engineer confirmed the world changed: τ is learned again from the prior (how often each arm was drawn is
    # kept), and the reply says so.
    assert "threshold bandit starts again from its prior" in reply.text
    assert "&lt; base rate" in reply.text and "< base rate" not in reply.text  # the reason's "<" escaped
    assert _arms(bot) == [(a, b, pulls) for a, b, (_, _, pulls) in zip(prior.alpha, prior.beta, learned, strict=True)]
    wait_for(lambda: ACTION_APPROVE not in str(bot.standin.message(OPS, ts).blocks))
    assert "Approved by" in str(bot.standin.message(OPS, ts).blocks)
    # the updated alert's notification text names the proposal, not only "Approved by …"
    assert re.match(
        r"Retraining proposal #\d+: Approved by <@U\w+> → model v1 promoted$", bot.standin.message(OPS, ts).text
    )
    # The answered alert no longer says it will expire if nobody answers, nor explains buttons it no longer has.
    shown = str(bot.standin.message(OPS, ts).blocks)
    assert "If nobody answers, the proposal expires" not in shown and "Dismiss records" not in shown
    assert _db(bot, "SELECT version, promoted FROM model_versions") == (1, 1)
    assert _db(bot, "SELECT state, resolved_by, model_version FROM retraining_proposals") == ("approved", ALICE, 1)
    assert _db(bot, "SELECT matches, decisions, open_proposal FROM monitor_state") == (1, 1, 0)  # F_monitor = 1

    # A second click on the same alert (a stale client still showing the buttons) records nothing new.
    tables = ("model_versions", "audit_log", "retraining_proposals", "outbox")
    before = [_db(bot, f"SELECT COUNT(*) FROM {t}")[0] for t in tables]
    state = _db(bot, "SELECT * FROM monitor_state")
    again = bot.standin.click(
        bot.events_url, SECRET, user_id=BOB, action_id=ACTION_APPROVE, message=(channel, ts), value="1", force=True
    )
    assert again.status_code == 200
    notice = wait_for(lambda: [m for m in bot.standin.messages(OPS, include_ephemeral=True) if m.ephemeral_to == BOB])
    assert f"Proposal #1 was already approved by <@{ALICE}>." in notice[0].text  # who answered it, not just that
    assert [_db(bot, f"SELECT COUNT(*) FROM {t}")[0] for t in tables] == before
    assert _db(bot, "SELECT * FROM monitor_state") == state
    assert len([m for m in bot.standin.messages(OPS) if m.thread_ts == ts]) == 1


def test_dismiss_and_refusal(drift_bot: BotUnderTest) -> None:
    bot = drift_bot
    channel, ts = _posted_alert(bot)
    outsider = "U0MALLORY"
    bot.standin.add_user(outsider)
    assert bot.click(outsider, ACTION_DISMISS, (channel, ts)).status_code == 200
    assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)
    learned = _arms(bot)
    assert bot.click(BOB, ACTION_DISMISS, (channel, ts)).status_code == 200
    assert _db(bot, "SELECT state, resolved_by, model_version FROM retraining_proposals") == ("dismissed", BOB, None)
    assert _arms(bot) == learned  # the monitor was wrong: what the bandit learned stays
    assert _db(bot, "SELECT matches, decisions FROM monitor_state") == (0, 1)  # the monitor was wrong: F = 0
    reply = wait_for(lambda: [m for m in bot.standin.messages(OPS) if m.thread_ts == ts], 10)[0]
    assert "Dismissed by" in reply.text and "F_monitor is now 0.00" in reply.text
    assert _db(bot, "SELECT COUNT(*) FROM model_versions") == (0,)


def _buttons(proposal: int) -> list[dict[str, Any]]:
    return [
        {"type": "section", "block_id": "why", "text": {"type": "mrkdwn", "text": "why"}},
        {
            "type": "actions",
            "block_id": "npo_retrain_actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": t}, "action_id": a, "value": str(proposal)}
                for t, a in (("Approve", ACTION_APPROVE), ("Dismiss", ACTION_DISMISS))
            ],
        },
    ]


def test_an_alert_that_could_not_be_posted_is_posted_again_once_the_bot_is_back(drift_bot: BotUnderTest) -> None:
    bot = drift_bot
    body = [prediction(f"n{i}", channel=CHANNELS[i]) for i in range(20)]
    assert bot.ingest(body).status_code == 200
    messages = {p["id"]: _posted(bot, p["channel"], p["id"]) for p in body}
    for message in messages.values():  # Neutral everywhere: L_align 0.5 > θ
        assert bot.click(ALICE, ACTION_NEUTRAL, message).status_code == 200
    bot.standin.faults.error("chat.postMessage", "not_in_channel", times=None)  # the bot was removed from ops
    monitor, store, wake = monitor_config(bot.bot.settings), bot.bot.store, bot.bot.worker.wake
    first = run_monitor(store, monitor, now=time.time(), channel=OPS, on_enqueue=wake)
    assert first.decision.trigger and first.proposal_id == 1
    wait_for(lambda: [i for i in store.outbox("failed") if i.kind == "message"])
    assert bot.standin.messages(OPS) == []

    bot.standin.faults.clear()  # re-invited: the next run (within the cooldown) sends the same alert again
    again = run_monitor(store, monitor, now=time.time(), channel=OPS, on_enqueue=wake)
    assert again.resent_alert == 1 and again.proposal_id is None
    assert "no answers since the last proposal" in again.decision.reason  # nothing new to judge
    channel, ts = _alert(bot)
    assert bot.click(BOB, ACTION_DISMISS, (channel, ts)).status_code == 200
    wait_for(lambda: _db(bot, "SELECT state FROM retraining_proposals WHERE id = 1") == ("dismissed",))
    assert _db(bot, "SELECT COUNT(*) FROM audit_log WHERE kind = 'retraining_alert_resent'") == (1,)
    quiet = run_monitor(store, monitor, now=time.time(), channel=OPS, on_enqueue=wake)
    assert quiet.resent_alert is None and len([m for m in bot.standin.messages(OPS) if not m.thread_ts]) == 1


def _ephemeral(bot: BotUnderTest, user: str) -> list[Any]:
    return [m for m in bot.standin.messages(OPS, include_ephemeral=True) if m.ephemeral_to == user]


def test_a_retraining_answer_whose_author_cannot_be_looked_up_is_not_refused_as_a_non_responder(
    tmp_path: Path, standin: StandIn
) -> None:
    """Responders are the incident channel's members and Slack's member look-up fails before any list is known:
    nothing is recorded, the proposal stays open, and the person is told their answer could not be checked — not
    that only NPO's on-call responders can approve."""
    for user in (ALICE, BOB):
        standin.add_user(user)
    standin.set_channel_members(INCIDENT, [ALICE, BOB])
    standin.faults.error("conversations.members", "internal_error", times=None)
    settings = make_settings(tmp_path, standin, responders=())
    with serving(build_bot(settings, seed=1), standin) as bot:
        channel, ts = _posted_alert(bot)
        assert bot.click(BOB, ACTION_APPROVE, (channel, ts)).status_code == 200
        text = wait_for(lambda: _ephemeral(bot, BOB), 5)[0].text
        assert "only NPO's on-call responders" not in text, text
        assert "could not check just now" in text and "click again" in text
        assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)


@pytest.mark.parametrize("action", [ACTION_APPROVE, ACTION_DISMISS], ids=["approve", "dismiss"])
def test_an_answer_that_could_not_be_stored_is_reported_to_the_clicker(drift_bot: BotUnderTest, action: str) -> None:
    """The database refuses the write (a trigger standing in for a full disk). Before, the click was acknowledged and
    nothing else happened: no reply, the buttons still there, no word to the person — who had no way to tell that
    their Approve had not counted. Now they are told, and a second click, once the database is writable, counts."""
    bot = drift_bot
    channel, ts = _posted_alert(bot)
    deadline = float(int(time.time()) + 90)  # a minute and a half away: "click again in a minute" may be too late
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        conn.execute("UPDATE retraining_proposals SET expires_at = ?", (deadline,))
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE UPDATE ON retraining_proposals "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        if action == ACTION_APPROVE:  # an Approve writes the pending approval, not the proposal
            conn.execute(
                "CREATE TRIGGER full_disk_pending BEFORE INSERT ON job_state "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        conn.commit()
        assert bot.click(BOB, action, (channel, ts)).status_code == 200
        notice = wait_for(lambda: _ephemeral(bot, BOB))
        assert "was not recorded" in notice[0].text and "click again" in notice[0].text
        # Until when it can be clicked again, not an open-ended "still open, click again in a minute".
        assert f"still open until {slack_time(deadline)}: please click again before then" in notice[0].text
        assert "proposal #1 just now" in notice[0].text
        assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)
        assert _db(bot, "SELECT COUNT(*) FROM model_versions") == (0,)  # the Approve's model went with it
        conn.execute("DROP TRIGGER full_disk")
        conn.execute("DROP TRIGGER IF EXISTS full_disk_pending")
        conn.commit()
    finally:
        conn.close()
    assert bot.click(BOB, action, (channel, ts)).status_code == 200
    state = "approved" if action == ACTION_APPROVE else "dismissed"  # an Approve is carried out after the ack
    wait_for(lambda: _db(bot, "SELECT state, resolved_by FROM retraining_proposals") == (state, BOB))
    wait_for(lambda: [m for m in bot.standin.messages(OPS) if m.thread_ts == ts])
    assert len(_ephemeral(bot, BOB)) == 1


def test_an_alert_nobody_answers_expires_and_a_late_click_changes_nothing(drift_bot: BotUnderTest) -> None:
    """Before, a proposal nobody answered stayed open for ever: the next alert never came, and a click weeks later
    still approved it."""
    bot = drift_bot
    body = [prediction(f"x{i}", channel=CHANNELS[i]) for i in range(20)]
    assert bot.ingest(body).status_code == 200
    messages = {p["id"]: _posted(bot, p["channel"], p["id"]) for p in body}
    for message in messages.values():  # Neutral everywhere: L_align 0.5 > θ
        assert bot.click(ALICE, ACTION_NEUTRAL, message).status_code == 200
    monitor, store, wake = monitor_config(bot.bot.settings), bot.bot.store, bot.bot.worker.wake
    week_ago = time.time() - 7 * 86_400  # the alert was raised a week ago (the default expiry), and nobody answered
    first = run_monitor(store, monitor, now=week_ago, channel=OPS, on_enqueue=wake)
    assert first.proposal_id == 1
    channel, ts = _alert(bot)
    wait_for(lambda: _db(bot, "SELECT state FROM outbox WHERE kind = 'message'") == ("sent",))
    assert "expires" in str(bot.standin.message(OPS, ts).blocks)  # the alert names its deadline

    week = run_monitor(store, monitor, now=week_ago + 7 * 86_400, channel=OPS, on_enqueue=wake)
    assert _db(bot, "SELECT state, resolved_by FROM retraining_proposals") == ("expired", None)
    assert _db(bot, "SELECT matches, decisions, open_proposal FROM monitor_state") == (0, 0, 0)
    assert week.expired_proposal == 1 and week.proposal_id is None  # no answers since: nothing new to alert on
    wait_for(lambda: ACTION_APPROVE not in str(bot.standin.message(OPS, ts).blocks))
    assert "Expired unanswered at" in str(bot.standin.message(OPS, ts).blocks)
    assert "If nobody answers" not in str(bot.standin.message(OPS, ts).blocks)

    tables = ("model_versions", "audit_log", "retraining_proposals", "outbox")
    before = [_db(bot, f"SELECT COUNT(*) FROM {t}")[0] for t in tables]
    state = _db(bot, "SELECT * FROM monitor_state")
    late = bot.standin.click(
        bot.events_url, SECRET, user_id=BOB, action_id=ACTION_APPROVE, message=(channel, ts), value="1", force=True
    )
    assert late.status_code == 200
    notice = wait_for(lambda: _ephemeral(bot, BOB))
    assert notice[0].text.startswith("Retraining proposal #1 expired unanswered at <!date^")
    assert notice[0].text.endswith("Nothing was recorded.")
    assert [_db(bot, f"SELECT COUNT(*) FROM {t}")[0] for t in tables] == before
    assert _db(bot, "SELECT * FROM monitor_state") == state
    assert _db(bot, "SELECT state, resolved_by FROM retraining_proposals") == ("expired", None)


def test_an_alert_slack_refuses_is_posted_in_short_with_its_buttons_and_its_update_too(
    drift_bot: BotUnderTest,
) -> None:
    """Slack counts some text (emoji, other scripts) in a way NPO cannot check: an alert whose blocks it refuses is
    sent once more at once in short — its text and its Approve / Dismiss buttons — instead of failing, and being
    sent again (and refused again) at every monitor run; the update after a click likewise."""
    bot = drift_bot
    body = [prediction(f"n{i}", channel=CHANNELS[i]) for i in range(20)]
    assert bot.ingest(body).status_code == 200
    for p in body:  # Neutral everywhere: L_align 0.5 > θ
        assert bot.click(ALICE, ACTION_NEUTRAL, _posted(bot, p["channel"], p["id"])).status_code == 200
    bot.standin.faults.error("chat.postMessage", "invalid_blocks", times=1)
    monitor, store, wake = monitor_config(bot.bot.settings), bot.bot.store, bot.bot.worker.wake
    assert run_monitor(store, monitor, now=time.time(), channel=OPS, on_enqueue=wake).proposal_id == 1
    channel, ts = _alert(bot)
    refused, posted = [c for c in bot.standin.calls("chat.postMessage") if c.body.get("channel") == OPS]
    assert refused.response["error"] == "invalid_blocks" and posted.response["ok"]
    assert "*Why:*" in str(refused.body["blocks"]) and "*Why:*" not in str(posted.body["blocks"])
    shown = bot.standin.message(channel, ts)
    assert "NPO retraining proposal #1" in str(shown.blocks) and "Shown in short" in str(shown.blocks)
    assert {ACTION_APPROVE, ACTION_DISMISS} <= {
        e["action_id"] for b in shown.blocks if b["type"] == "actions" for e in b["elements"]
    }
    assert not [i for i in store.outbox("failed") if i.kind == "message"]

    bot.standin.faults.error("chat.update", "msg_blocks_too_long", times=1)
    assert bot.click(BOB, ACTION_DISMISS, (channel, ts)).status_code == 200
    wait_for(lambda: _db(bot, "SELECT state FROM retraining_proposals WHERE id = 1") == ("dismissed",))
    wait_for(lambda: "Dismissed by" in str(bot.standin.message(channel, ts).blocks))
    updated = bot.standin.message(channel, ts)
    assert ACTION_DISMISS not in str(updated.blocks) and "Shown in short" in str(updated.blocks)
    assert [c.response["ok"] for c in bot.standin.calls("chat.update") if c.body.get("ts") == ts] == [False, True]
    quiet = run_monitor(store, monitor, now=time.time(), channel=OPS, on_enqueue=wake)
    assert quiet.resent_alert is None


def test_a_member_of_the_ops_channel_who_is_not_a_responder_is_told_the_truth(drift_bot: BotUnderTest) -> None:
    """The alert is in the ops channel; who may answer it is NPO's responders (NPO_RESPONDERS, their groups, or the
    incident channel's members). Before, an ops-channel member who is not one was told "only the on-call responders
    for this channel can answer NPO recommendations": false for them, and about recommendations, not this alert."""
    bot = drift_bot
    channel, ts = _posted_alert(bot)
    carol = "U0CAROL"  # on the ops team, in the ops channel, not an incident responder
    bot.standin.add_user(carol)
    bot.standin.set_channel_members(OPS, [ALICE, BOB, carol])
    assert bot.click(carol, ACTION_APPROVE, (channel, ts)).status_code == 200
    notice = wait_for(lambda: _ephemeral(bot, carol))
    assert "for this channel" not in notice[0].text and "recommendations" not in notice[0].text
    assert "retraining proposal" in notice[0].text and "Nothing was recorded." in notice[0].text
    assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)


def test_approve_is_answered_before_the_retraining_and_carried_out_after_a_restart(
    tmp_path: Path, standin: StandIn
) -> None:
    """Before, Approve fitted the candidate model (the latest 20,000 answers: about 3 s on a large database) before the
    click was answered, and Slack shows a click not answered within 3 s as failed. Now the approval is recorded, the
    click answered, and the retraining carried out after it. Here the bot's approval runner is not started, so the
    order is certain: when the 200 arrives nothing of the retraining is there yet; the approval is pending, a second
    click is told so and records nothing, and a bot started again on the file (as after a crash) carries it out once."""
    for user in (ALICE, BOB):
        standin.add_user(user)
    settings = make_settings(tmp_path, standin)
    with serving(build_bot(settings, seed=1, run_worker=False), standin) as bot:
        bot.bot.worker.start()  # posts the alert; the approval runner stays stopped
        channel, ts = _posted_alert(bot)
        assert bot.click(ALICE, ACTION_APPROVE, (channel, ts)).status_code == 200
        # The answer came first: no model yet, the proposal open, the approval stored.
        assert _db(bot, "SELECT COUNT(*) FROM model_versions") == (0,)
        assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)
        assert ALICE in _db(bot, "SELECT value FROM job_state WHERE name = 'retraining_approvals'")[0]
        assert bot.click(BOB, ACTION_APPROVE, (channel, ts)).status_code == 200  # while it is being carried out
        told = wait_for(lambda: _ephemeral(bot, BOB))[0].text
        assert "is already being approved by" in told and ALICE in told, told
        assert bot.click(BOB, ACTION_DISMISS, (channel, ts)).status_code == 200
        wait_for(lambda: len(_ephemeral(bot, BOB)) == 2)
        assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)
    # Started again (the process had stopped before carrying it out): the approval is carried out, once.
    with serving(build_bot(settings, seed=1), standin) as bot:
        wait_for(lambda: _db(bot, "SELECT state, resolved_by FROM retraining_proposals") == ("approved", ALICE))
        reply = wait_for(lambda: [m for m in bot.standin.messages(OPS) if m.thread_ts == ts])
        assert len(reply) == 1 and "Retraining approved by" in reply[0].text
        assert _db(bot, "SELECT COUNT(*) FROM model_versions") == (1,)
        assert _db(bot, "SELECT value FROM job_state WHERE name = 'retraining_approvals'") == ("{}",)
        wait_for(lambda: ACTION_APPROVE not in str(bot.standin.message(OPS, ts).blocks))


def test_the_app_home_shows_an_approval_being_carried_out_past_the_deadline_as_being_approved(
    tmp_path: Path, standin: StandIn
) -> None:
    """Approve was clicked before the proposal's deadline and its retraining has not been carried out yet (the
    approval runner stopped here, so the order is certain) when the deadline passes. The meta-monitor does not expire
    it — it was answered in time — but the App Home said "expired unanswered … can no longer be approved or
    dismissed". Now it says who approved it and that the retraining is running."""
    for user in (ALICE, BOB):
        standin.add_user(user)
    settings = make_settings(tmp_path, standin)
    with serving(build_bot(settings, seed=1, run_worker=False), standin) as bot:
        bot.bot.worker.start()  # posts the alert; the approval runner stays stopped
        channel, ts = _posted_alert(bot)
        assert bot.click(ALICE, ACTION_APPROVE, (channel, ts)).status_code == 200
        assert ALICE in _db(bot, "SELECT value FROM job_state WHERE name = 'retraining_approvals'")[0]
        conn = sqlite3.connect(bot.bot.settings.db_path)
        try:  # the deadline passes while the approval waits to be carried out
            conn.execute("UPDATE retraining_proposals SET expires_at = ?", (time.time() - 60,))
            conn.commit()
        finally:
            conn.close()
        event = {"type": "app_home_opened", "user": BOB, "channel": "D0BOB", "tab": "home"}
        assert bot.standin.send_event(bot.events_url, SECRET, event, event_id="Ev0home").status_code == 200
        home = wait_for(lambda: bot.standin.home_view(BOB))
        shown = next(b for b in home["blocks"] if b.get("block_id") == "npo_home_proposal")["text"]["text"]
        assert "expired" not in shown, shown
        assert "proposal #1" in shown and f"approved by <@{ALICE}>" in shown and "being fitted" in shown
        assert _db(bot, "SELECT state FROM retraining_proposals") == ("open",)


def _hint(bot: BotUnderTest, ts: str) -> str:
    return str(next(b for b in bot.standin.message(OPS, ts).blocks if b.get("block_id") == ALERT_HINT_BLOCK_ID))


def test_an_alert_whose_approval_was_given_up_names_its_new_deadline(drift_bot: BotUnderTest) -> None:
    """Alice approves a minute before the deadline; the retraining's result cannot be stored, so the approval is given
    up and the deadline moved to an hour later. She was told the new deadline privately, but the alert everyone sees
    still said the proposal expires at the old one. Now the alert is updated: same buttons, the new deadline."""
    bot = drift_bot
    deadline = float(int(time.time()) + 60)
    facts = AlertFacts(
        proposal_id=1, reason="drift", loss=0.5, n_in_window=20, previous_loss=0.1, n_previous=20, threshold=0.3,
        ph_statistic=1.0, ph_threshold=15.0, ph_samples=40, drift_alarm=False, f_monitor=None, keys=[], trend=[],
        trend_chunk=1, expires_at=deadline,
    )  # fmt: skip
    with bot.bot.store.transaction() as tx:
        assert tx.open_proposal(time.time(), "drift", expires_at=deadline) == 1
        tx.enqueue(OPS, "message", {"text": alert_text(facts), "blocks": alert_blocks(facts)}, time.time())
    bot.bot.worker.wake()
    channel, ts = _alert(bot)
    assert slack_time(deadline) in _hint(bot, ts)
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON model_versions "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        assert bot.click(ALICE, ACTION_APPROVE, (channel, ts)).status_code == 200
        told = wait_for(lambda: _ephemeral(bot, ALICE))[0].text
        conn.execute("DROP TRIGGER full_disk")
        conn.commit()
    finally:
        conn.close()
    (until,) = _db(bot, "SELECT expires_at FROM retraining_proposals WHERE state = 'open'")
    assert until > deadline and f"still open until {slack_time(until)}" in told
    wait_for(lambda: slack_time(until) in _hint(bot, ts))  # the alert names the new deadline, not the old one
    shown = bot.standin.message(OPS, ts).blocks
    assert slack_time(deadline) not in str(shown) and ACTION_APPROVE in str(shown) and ACTION_DISMISS in str(shown)
    assert f"approval by <@{ALICE}> could not be carried out" in str(shown)

    assert bot.click(ALICE, ACTION_APPROVE, (channel, ts)).status_code == 200  # clicked again, carried out
    wait_for(lambda: _db(bot, "SELECT state, resolved_by FROM retraining_proposals") == ("approved", ALICE))
    wait_for(lambda: ACTION_APPROVE not in str(bot.standin.message(OPS, ts).blocks))
    assert "could not be carried out" not in str(bot.standin.message(OPS, ts).blocks)
