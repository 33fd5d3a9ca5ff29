"""``/npo`` (every subcommand) and the App Home, through signed requests to the real server."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_testing import (
    ALICE,
    BOB,
    INCIDENT,
    MALLORY,
    SECRET,
    BotUnderTest,
    make_settings,
    prediction,
    serving,
    wait_for,
)

from bot.app import build_bot
from bot.insights import summary_text
from bot.slack.blocks import ACTION_LIKE, ACTION_OVERRIDE
from bot.slack.command import (
    MAX_REPLY,
    REPLAYED,
    SUMMARY_FAILED,
    SUMMARY_REPLAYED,
    SUMMARY_WORKING,
    fit_lines,
)
from bot.slack.monitor_blocks import ACTION_APPROVE, ALERT_ACTIONS_BLOCK_ID
from bot.slack.text import truncate
from bot.standin import StandIn, interactions
from npo.loop import record_feedback, record_outcome
from npo.types import FeedbackEvent, FeedbackKind, Outcome

KEY = "disk_failure|investigate|r#-p#|p>=0.9"


def npo(bot: BotUnderTest, text: str, user: str = ALICE) -> str:
    response = bot.standin.slash_command(bot.events_url, SECRET, "/npo", text, user, INCIDENT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_type"] == "ephemeral"
    return str(body["text"])


def summary(bot: BotUnderTest, user: str = ALICE) -> str:
    """``/npo summary``: acknowledged at once with :data:`SUMMARY_WORKING`; the report then posted, once, to the
    command's response_url (ephemeral). Returns the report's text."""
    issued = {url.id for url in bot.standin.response_urls()}
    assert npo(bot, "summary", user) == SUMMARY_WORKING
    (url,) = [url for url in bot.standin.response_urls() if url.id not in issued]
    (post,) = wait_for(lambda: next(u for u in bot.standin.response_urls() if u.id == url.id).posts)
    assert post == {"text": post["text"], "response_type": "ephemeral"}
    return str(post["text"])


def test_status_help_and_unknown(bot: BotUnderTest) -> None:
    bot.surface("p1")
    assert "Alignment loss" in npo(bot, "status")
    usage = npo(bot, "help")
    for sub in ("/npo status", "/npo summary", "/npo why", "/npo mute", "/npo unmute", "/npo help"):
        assert sub in usage
    assert npo(bot, "") == usage
    # <, > and & are mrkdwn control characters, even in code: a bare <key> would be read as a link and vanish.
    assert "`/npo mute &lt;key&gt; &lt;duration&gt; [reason]`" in usage and "<key>" not in usage
    mute_usage = npo(bot, "mute")
    assert "&lt;key&gt;" in mute_usage and "p&gt;=0.9" in mute_usage and "<" not in mute_usage
    why_usage = npo(bot, "why")
    assert "`/npo why &lt;recommendation id&gt;`" in why_usage and "<" not in why_usage
    unknown = npo(bot, "frobnicate now")
    assert unknown.startswith("Unknown command `frobnicate now`") and "/npo why" in unknown
    assert npo(bot, "status extra").startswith("Unknown command")


def test_summary(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    text = summary(bot)
    assert text.startswith("NPO weekly summary") and "like 100% (1)" in text
    assert "MTTR" in text and "τ=0.50" in text and "F_monitor" in text


def test_summary_is_acknowledged_at_once_and_posted_to_the_response_url(bot: BotUnderTest) -> None:
    """``/npo summary`` built the whole report before answering (0.6–0.9 s with 20,000 answers in the week, 2.7 s
    with 100,000), and Slack shows a command not answered within 3 s as failed. The answer now only says it is
    being worked on; the report — the very text the answer carried — follows through the command's response_url,
    as JSON without a token, shown to the person alone."""
    message = bot.surface("p1")
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    at = time.time()
    bot.bot.service.clock = lambda: at  # one instant, so that the report can be built here too and compared
    expected = truncate(fit_lines(summary_text(bot.bot.service, bot.bot.settings.timezone)), MAX_REPLY)
    issued = {url.id for url in bot.standin.response_urls()}  # the click's
    response = bot.standin.slash_command(bot.events_url, SECRET, "/npo", "summary", ALICE, INCIDENT)
    assert response.status_code == 200, response.text
    assert response.json() == {"text": SUMMARY_WORKING, "response_type": "ephemeral"}
    (url,) = [url for url in bot.standin.response_urls() if url.id not in issued]
    posts = wait_for(lambda: next(u for u in bot.standin.response_urls() if u.id == url.id).posts)
    assert posts == [{"text": expected, "response_type": "ephemeral"}]
    assert expected.startswith("NPO weekly summary") and "like 100% (1)" in expected
    (call,) = bot.standin.calls("response_url")
    assert call.path == f"/response/{url.id}" and call.status == 200
    assert call.header("Authorization") is None and "application/json" in str(call.header("Content-Type"))
    shown = [m for m in bot.standin.messages(INCIDENT, include_ephemeral=True) if m.text == expected]
    assert [m.ephemeral_to for m in shown] == [ALICE]


def test_a_summary_that_cannot_be_built_is_told_through_the_response_url(bot: BotUnderTest) -> None:
    """Building the report fails (the database cannot be read): the person is told so in one line at the
    response_url, after the answer that it was being worked on."""
    damage = sqlite3.connect(bot.bot.settings.db_path)
    try:
        damage.execute("ALTER TABLE retraining_proposals RENAME TO proposals_elsewhere")  # the report reads it
        damage.commit()
        text = summary(bot)
    finally:
        damage.execute("ALTER TABLE proposals_elsewhere RENAME TO retraining_proposals")
        damage.commit()
        damage.close()
    assert text == SUMMARY_FAILED and "\n" not in text
    assert summary(bot).startswith("NPO weekly summary")  # the database readable again: the report


def _summary_fields(bot: BotUnderTest) -> dict[str, str]:
    """The form fields of Alice's ``/npo summary`` in the incident channel, as Slack signs them."""
    return interactions.slash_command_fields(
        bot.standin.store,
        f"{bot.standin.url}/response",
        command="/npo",
        text="summary",
        user_id=ALICE,
        channel_id=INCIDENT,
    )


def test_a_replayed_summary_is_built_and_posted_once(bot: BotUnderTest) -> None:
    """The same signed ``/npo summary`` sent again (a replay inside Slack's five-minute window) posted the report
    to the response_url a second time — one more of its five posts, and another build of the week's report. Its
    trigger id is now claimed as a mute's is: sent again, it builds and posts nothing and says so; a new
    invocation still gets its report."""
    bot.surface("p1")
    fields = _summary_fields(bot)
    body, rid = urlencode(fields), fields["response_url"].rsplit("/", 1)[1]

    def send() -> str:
        response = interactions.post_signed(bot.events_url, SECRET, body, interactions.FORM)
        assert response.status_code == 200, response.text
        assert response.json()["response_type"] == "ephemeral"
        return str(response.json()["text"])

    def posts() -> list[dict[str, Any]]:
        return next(u for u in bot.standin.response_urls() if u.id == rid).posts

    assert send() == SUMMARY_WORKING
    (post,) = wait_for(posts)
    assert str(post["text"]).startswith("NPO weekly summary")
    assert send() == SUMMARY_REPLAYED  # the same bytes again, signed anew: the same trigger id
    assert summary(bot).startswith("NPO weekly summary")  # a new invocation is carried out
    assert posts() == [post]
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        claimed = conn.execute("SELECT request_id, kind FROM processed_requests WHERE kind = 'command'").fetchall()
    finally:
        conn.close()
    assert len(claimed) == 2 and (f"command:{fields['trigger_id']}", "command") in claimed


def test_a_summary_without_a_response_url_is_answered_in_its_ack_once(bot: BotUnderTest) -> None:
    """A ``/npo summary`` with no response_url (Slack always sends one; a crafted request may not) gets the report
    in its answer; the same request again gets only the note that it was carried out."""
    bot.surface("p1")
    fields = _summary_fields(bot)
    del fields["response_url"]
    body = urlencode(fields)
    answers = [interactions.post_signed(bot.events_url, SECRET, body, interactions.FORM) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    first, second = (str(a.json()["text"]) for a in answers)
    assert first.startswith("NPO weekly summary") and second == SUMMARY_REPLAYED


def _overridden_real_faults(bot: BotUnderTest, pids: list[str], operators: list[str]) -> None:
    """Each of ``operators`` overrides each recommendation of ``pids``; all were real faults."""
    store, now = bot.bot.store, time.time()
    with store.transaction() as tx:
        for op in operators:
            for pid in pids:
                event = FeedbackEvent(pid, op, FeedbackKind.OVERRIDE, now, f"{op}:{pid}")
                record_feedback(tx, event, config=store.config)
        for pid in pids:
            record_outcome(tx, Outcome(pid, True, now + 1, "test"), config=store.config)


def _not_delivered(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]


def test_a_summary_post_slack_fails_is_tried_again(bot: BotUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    """The response_url answers 503 twice, then drops the connection: the report was lost after one log line.
    It is now posted again after a short wait each time, and arrives on the fourth try (within the five posts
    Slack allows there); nothing is logged as lost."""
    bot.standin.faults.server_error("response_url", times=2, status=503)
    bot.standin.faults.disconnect("response_url", times=1)
    assert summary(bot).startswith("NPO weekly summary")
    assert [call.status for call in bot.standin.calls("response_url")] == [503, 503, 0, 200]
    assert _not_delivered(caplog) == []


def test_a_summary_slack_does_not_take_is_logged_once_without_its_url(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """The response_url answers 500, or cannot be reached, on every try: there is nowhere left to tell the person,
    so after its last try the log says, once, that the summary was not delivered, and why, without the URL
    (anyone holding it may post)."""
    head = f"/npo summary for {ALICE} not delivered after 4 tries: its response_url"
    bot.standin.faults.server_error("response_url", times=4)
    assert npo(bot, "summary") == SUMMARY_WORKING
    (line,) = wait_for(lambda: _not_delivered(caplog))
    assert line == f'{head} answered 500 {{"ok": false, "error": "internal_error"}}'
    assert [call.status for call in bot.standin.calls("response_url")] == [500] * 4
    bot.standin.faults.disconnect("response_url", times=4)
    assert npo(bot, "summary") == SUMMARY_WORKING
    _, line = wait_for(lambda: _not_delivered(caplog)[1:] and _not_delivered(caplog))
    assert line.startswith(f"{head} could not be reached (") and line.endswith(")")
    assert [call.status for call in bot.standin.calls("response_url")] == [500] * 4 + [0] * 4
    assert "/response/" not in caplog.text
    assert all(not url.posts for url in bot.standin.response_urls())


def test_a_summary_post_slack_refuses_is_not_tried_again(bot: BotUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    """A 4xx from the response_url (here one Slack never issued: 404 ``no_service``; an expired or used-up URL
    answers so too) will not change: it is logged at once, and not posted again."""
    fields = _summary_fields(bot)
    fields["response_url"] = f"{bot.standin.url}/response/never-issued"
    response = interactions.post_signed(bot.events_url, SECRET, urlencode(fields), interactions.FORM)
    assert response.status_code == 200 and response.json()["text"] == SUMMARY_WORKING
    (line,) = wait_for(lambda: _not_delivered(caplog))
    assert line == f"/npo summary for {ALICE} not delivered: its response_url answered 404 no_service"
    assert [call.status for call in bot.standin.calls("response_url")] == [404]


def test_summary_with_long_keys_keeps_every_section(bot: BotUnderTest) -> None:
    """Long (valid) keys are shortened in ``/npo summary`` so the end of the report is not cut off."""
    pids = [f"p{i}" for i in range(5)]
    for i, pid in enumerate(pids):
        bot.surface(pid, fault_type=f"kubernetes_pod_crashloop_{i}_" + "x" * 440, target=f"node-{i}")
    _overridden_real_faults(bot, pids, [BOB])
    text = summary(bot)
    assert len(text) <= MAX_REPLY and "more line" not in text
    (line,) = [line for line in text.splitlines() if line.startswith("Most overridden keys: ")]
    keys = [k.rsplit(" (", 1)[0] for k in line.removeprefix("Most overridden keys: ").split(", ")]
    assert len(keys) == 5 and all(len(k) <= 80 and k.endswith("…") for k in keys)
    assert "F_monitor" in text and "Answers to look at (1 person):" in text
    assert text.endswith("agreed with 0 of 5 outcomes")


def test_summary_too_long_says_how_many_lines_are_left_off(bot: BotUnderTest) -> None:
    """Still too long (many people to look at): whole lines are left off and the reply says how many."""
    pids = [f"p{i}" for i in range(5)]
    for i, pid in enumerate(pids):
        bot.surface(pid, target=f"node-{i}")
    people = [f"U{i:03d}" + "X" * 150 for i in range(40)]
    _overridden_real_faults(bot, pids, people)
    text = summary(bot)
    assert len(text) <= MAX_REPLY and "Answers to look at (40 people):" in text
    *shown, note = text.split("\n")
    flagged = [line for line in shown if line.startswith("  U")]
    assert flagged and all(line.endswith("agreed with 0 of 5 outcomes") for line in flagged)  # none cut in half
    # The Slack text lists 20 of the 40 and a line counting the other 20: the reply leaves off what does not fit.
    assert note == f"… ({20 - len(flagged) + 1} more lines: see `npo-bot report`)"


def test_fit_lines() -> None:
    assert fit_lines("a\nb", 3) == "a\nb"
    text = "\n".join(f"line {i}" for i in range(10))  # 69 characters
    four = "\n".join(f"line {i}" for i in range(4))  # 27 characters, + 1 + 38 of the note = 66
    assert fit_lines(text, 68) == four + "\n… (6 more lines: see `npo-bot report`)"
    # A first line too long to fit whole is shortened, not left off: the reply used to be the note alone.
    cut = fit_lines("x" * 50 + "\nlast", 50)
    assert cut == "x" * 11 + "…\n… (1 more line: see `npo-bot report`)" and len(cut) == 50
    assert fit_lines("x" * 50 + "\n" + "y" * 60, 88) == "x" * 50 + "\n… (1 more line: see `npo-bot report`)"
    assert len(fit_lines("z" * 100, 20)) == 20  # no room even for the note: cut, with an ellipsis


def test_why_shows_score_tau_rule_and_history(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    bot.surface("p2")
    bot.click(BOB, ACTION_OVERRIDE, message)
    bot.standin.submit_view(
        bot.events_url,
        SECRET,
        user_id=BOB,
        values={"reason": {"reason": "maintenance"}, "details": {"details": "rack 12 recabled"}},
    )
    text = npo(bot, "why p1")
    assert "*Recommendation `p1`*" in text and "rule `all_rules_passed`" in text and "*Verdict*: surface" in text
    assert "R(s) = p(s)·(1 − m) = 0.99" in text and "*τ* = 0." in text
    assert f"*Key* `{KEY.replace('>', '&gt;')}`" in text and "override 1" in text and "surface 2" in text
    assert f"override by <@{BOB}> — Maintenance: rack 12 recabled" in text
    assert npo(bot, "why nope").startswith("No recommendation with id `nope`")
    assert npo(bot, "why").startswith("Usage: `/npo why")


def test_mute_blocks_the_key_until_lifted_and_is_audited(bot: BotUnderTest) -> None:
    bot.surface("p1")
    # Slack escapes < > & in the command text; the key is matched unescaped.
    reply = npo(bot, f"mute {KEY.replace('>', '&gt;')} 2h rack 12 maintenance")
    assert ":mute:" in reply and "is muted until" in reply and "no recommendation" not in reply
    blocked = bot.ingest(prediction("p2")).json()
    assert blocked["verdict"] == "block" and blocked["rule"] == "mute", blocked
    why = npo(bot, "why p2")
    assert "rule `mute`" in why and "is muted by U0ALICE" in why and "(*in force*) — rack 12 maintenance" in why
    (entry,) = bot.bot.store.audit_entries(kind="policy_mute")
    assert entry[3] == KEY and entry[4]["by"] == ALICE and entry[4]["reason"] == "rack 12 maintenance"
    assert entry[4]["until"] == pytest.approx(time.time() + 7200, abs=30)
    other = bot.ingest(prediction("q1", fault_type="psu")).json()
    assert other["verdict"] == "surface"  # another key is not muted

    assert npo(bot, f"unmute {KEY}") == f"Lifted 1 mute(s) of `{KEY.replace('>', '&gt;')}`."
    assert bot.ingest(prediction("p3")).json()["verdict"] == "surface"
    assert "(lifted" in npo(bot, "why p2")
    assert bot.bot.store.audit_entries(kind="policy_unmute")[0][4]["by"] == ALICE
    assert npo(bot, f"unmute {KEY}").endswith("is not muted.")


def test_mute_refusals_change_nothing(bot: BotUnderTest) -> None:
    bot.surface("p1")
    bot.standin.add_user(MALLORY)
    assert npo(bot, f"mute {KEY} 2h", user=MALLORY).startswith("Only on-call responders")
    assert npo(bot, f"mute {KEY} soon").startswith("Not muted: `soon` is not a duration")
    assert npo(bot, f"mute {KEY} 45d") == "Not muted: a mute lasts between 1 minute and 30 days."
    assert npo(bot, "mute onlyakey").startswith("Usage: `/npo mute")
    assert bot.bot.store.audit_entries(kind="policy_mute") == []
    assert bot.ingest(prediction("p2")).json()["verdict"] == "surface"
    unknown = npo(bot, "mute no|such|key 10m")
    assert "no recommendation has had this key yet" in unknown


def test_a_mute_whose_author_cannot_be_looked_up_is_not_refused_as_a_non_responder(
    tmp_path: Path, standin: StandIn
) -> None:
    """Responders are the incident channel's members and Slack's member look-up fails before any list is known:
    nothing is muted, and the person is told it could not be checked — not "Only on-call responders can mute"."""
    settings = make_settings(tmp_path, standin, responders=())
    standin.set_channel_members(INCIDENT, [ALICE, BOB])
    standin.faults.error("conversations.members", "internal_error", times=None)
    with serving(build_bot(settings, seed=1), standin) as bot:
        reply = npo(bot, f"mute {KEY} 2h")
        assert not reply.startswith("Only on-call responders"), reply
        assert "could not check just now" in reply and "nothing was changed" in reply
        assert bot.bot.store.audit_entries(kind="policy_mute") == []


def test_a_mute_takes_a_duration_of_several_units(bot: BotUnderTest) -> None:
    """``1h30m`` is an hour and a half; units repeated or out of order are refused, naming the fix."""
    bot.surface("p1")
    reply = npo(bot, f"mute {KEY} 1h30m rack work")
    assert "is muted until" in reply, reply
    (entry,) = bot.bot.store.audit_entries(kind="policy_mute")
    assert entry[4]["until"] - entry[1] == pytest.approx(5400, abs=1)
    assert entry[4]["reason"] == "rack work"
    for typed in ("30m1h", "1h1h"):
        refused = npo(bot, f"mute {KEY} {typed}")
        assert refused.startswith(f"Not muted: `{typed}` repeats a unit or puts a smaller one first"), refused
    assert npo(bot, f"mute {KEY} 4w3d") == "Not muted: a mute lasts between 1 minute and 30 days."
    assert len(bot.bot.store.audit_entries(kind="policy_mute")) == 1
    # Written with a space, as people do: still an hour and a half, and the reason is what follows.
    assert "is muted until" in npo(bot, f"mute {KEY} 1h 30m rack work")
    spaced = bot.bot.store.audit_entries(kind="policy_mute")[-1]
    assert spaced[4]["until"] - spaced[1] == pytest.approx(5400, abs=1) and spaced[4]["reason"] == "rack work"


def test_app_home_shows_loss_trend_tau_overrides_and_proposal(bot: BotUnderTest) -> None:
    first, second = bot.surface("p1"), bot.surface("p2", fault_type="psu")
    bot.click(ALICE, ACTION_LIKE, first)
    bot.click(BOB, ACTION_OVERRIDE, second)
    bot.standin.submit_view(
        bot.events_url, SECRET, user_id=BOB, values={"reason": {"reason": "wrong_action"}, "details": {"details": "x"}}
    )
    with bot.bot.store.transaction() as tx:
        tx.open_proposal(time.time(), "L_align 0.50 > 0.30 over 2 recommendations")
    npo(bot, "mute psu|investigate|r#-p#|p&gt;=0.9 1h")
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, event).status_code == 200
    view: dict[str, Any] = wait_for(lambda: bot.standin.home_view(ALICE))
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    text = str(view["blocks"])
    assert "L_align: 0.500 over the last 2 answer(s)" in text and "*L_align trend*" in text
    assert "τ = 0.50:" in text and "[0." in text  # posterior mean and interval per τ
    # ... and the bandit's count per τ, named for what it is (the two answers; not the τ draws): before, "pulls"
    assert "pulls" not in text and sum(int(n) for n in re.findall(r"· (\d+) answers \+ outcomes", text)) == 2
    assert f"<@{BOB}> on *psu*" in text and "Wrong action: x" in text  # the override with its reason
    assert "Open retraining proposal #1" in text and "L_align 0.50 &gt; 0.30" in text
    assert ":mute: `psu|investigate|r#-p#|p&gt;=0.9`" in text
    assert len(bot.standin.calls("views.publish")) == 1


def test_app_home_does_not_offer_a_proposal_past_its_deadline(bot: BotUnderTest) -> None:
    """Before, App Home showed a proposal whose deadline had passed (the meta-monitor records the expiry only at its
    next run, up to NPO_MONITOR_INTERVAL_MIN later) as open, with "Approve or Dismiss it on the alert" — while a
    click on the alert answered that it had expired and recorded nothing. The open one now shows its deadline."""
    now = time.time()
    with bot.bot.store.transaction() as tx:
        proposal = tx.open_proposal(now - 8 * 86_400, "L_align 0.50 > 0.30 over 40 answers", expires_at=now - 60)
        buttons = {
            "type": "actions",
            "block_id": ALERT_ACTIONS_BLOCK_ID,
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "action_id": ACTION_APPROVE,
                    "value": str(proposal),
                }
            ],
        }
        tx.enqueue("C0OPS", "message", {"text": "alert", "blocks": [buttons], "proposal_id": proposal}, now)
    bot.bot.worker.wake()
    alert = wait_for(lambda: [m for m in bot.standin.messages("C0OPS") if ACTION_APPROVE in str(m.blocks)], 10)[0]
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, event).status_code == 200
    text = str(wait_for(lambda: bot.standin.home_view(ALICE))["blocks"])
    assert "Approve or Dismiss it" not in text and f"proposal #{proposal} (" in text and "expired unanswered" in text
    # ...which is what a click on the alert says
    assert bot.click(ALICE, ACTION_APPROVE, (alert.channel, alert.ts)).status_code == 200
    notice = wait_for(lambda: [m for m in bot.standin.messages("C0OPS", include_ephemeral=True) if m.ephemeral_to])
    assert "expired unanswered" in notice[0].text


def test_app_home_names_the_open_proposals_deadline(bot: BotUnderTest) -> None:
    now = time.time()
    with bot.bot.store.transaction() as tx:
        tx.open_proposal(now, "L_align 0.50 > 0.30 over 40 answers", expires_at=now + 86_400)
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, event).status_code == 200
    text = str(wait_for(lambda: bot.standin.home_view(ALICE))["blocks"])
    assert "Open retraining proposal #1" in text and f"It expires unanswered at <!date^{int(now + 86_400)}^" in text
    # Where a client cannot render the date token (older clients, notifications), it reads as a UTC time.
    utc = datetime.fromtimestamp(int(now + 86_400), UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f"{{time}}|{utc}>" in text


def test_a_replayed_mute_or_unmute_changes_nothing(bot: BotUnderTest) -> None:
    """The same signed ``/npo mute`` sent again (a replay inside Slack's five-minute window) must not put back a
    mute lifted meanwhile; a replayed unmute must not lift a newer mute."""
    bot.surface("p1")

    def signed(text: str) -> str:
        fields = interactions.slash_command_fields(
            bot.standin.store,
            f"{bot.standin.url}/response",
            command="/npo",
            text=text,
            user_id=ALICE,
            channel_id=INCIDENT,
        )
        return urlencode(fields)

    def send(body: str) -> str:
        response = interactions.post_signed(bot.events_url, SECRET, body, interactions.FORM)
        assert response.status_code == 200, response.text
        return str(response.json()["text"])

    mute, unmute = signed(f"mute {KEY} 2h"), signed(f"unmute {KEY}")
    assert "is muted until" in send(mute)
    assert send(unmute).startswith("Lifted 1 mute(s)")
    assert send(mute) == REPLAYED
    assert bot.ingest(prediction("p2")).json()["verdict"] == "surface"  # still not muted
    assert "is muted until" in npo(bot, f"mute {KEY} 1h")  # a new request is carried out
    assert send(unmute) == REPLAYED
    assert bot.ingest(prediction("p3")).json()["verdict"] == "block"  # the newer mute holds
    assert [e[2] for e in bot.bot.store.audit_entries() if e[2].startswith("policy_")] == [
        "policy_mute",
        "policy_unmute",
        "policy_mute",
    ]


def test_a_replayed_mute_without_a_trigger_id_changes_nothing(bot: BotUnderTest) -> None:
    """A ``/npo mute`` carrying no trigger id (Slack always sends one; a crafted or truncated request may not) is
    still recognised when replayed as captured: the same signed bytes carry the same signature."""
    bot.surface("p1")
    fields = interactions.slash_command_fields(
        bot.standin.store,
        f"{bot.standin.url}/response",
        command="/npo",
        text=f"mute {KEY} 2h",
        user_id=ALICE,
        channel_id=INCIDENT,
    )
    del fields["trigger_id"]
    body, stamp = urlencode(fields), int(time.time())

    def send(text_body: str) -> str:
        response = interactions.post_signed(bot.events_url, SECRET, text_body, interactions.FORM, timestamp=stamp)
        assert response.status_code == 200, response.text
        return str(response.json()["text"])

    assert "is muted until" in send(body)
    assert npo(bot, f"unmute {KEY}").startswith("Lifted 1 mute(s)")
    assert send(body) == REPLAYED
    assert bot.ingest(prediction("p2")).json()["verdict"] == "surface"  # the lifted mute was not put back
    assert len(bot.bot.store.audit_entries(kind="policy_mute")) == 1


def test_an_empty_quoted_key_is_no_key(bot: BotUnderTest) -> None:
    """``/npo mute "" 1h`` names no key: the usage, not a mute of a key made of two quote marks."""
    for typed in ('mute "" 1h', "mute `` 1h", 'mute "   " 1h'):
        assert npo(bot, typed).startswith("Usage: `/npo mute"), typed
    assert npo(bot, 'unmute ""').startswith("Usage: `/npo unmute")
    assert npo(bot, 'why ""').startswith("Usage: `/npo why")
    assert bot.bot.store.audit_entries(kind="policy_mute") == []


def test_a_refused_duration_is_escaped_in_the_reply(bot: BotUnderTest) -> None:
    """What was typed is shown escaped: ``<!channel>`` or ``<@U…>`` typed as the duration is not a mention."""
    for typed in ("&lt;!channel&gt;", "&lt;@U0BOB&gt;"):  # as Slack sends ``<!channel>`` and ``<@U0BOB>``
        reply = npo(bot, f"mute {KEY} {typed}")
        assert reply.startswith(f"Not muted: `{typed}` is not a duration"), reply
        assert "<" not in reply.split(";")[0]


def test_a_key_or_id_with_spaces_is_named_in_quotes(bot: BotUnderTest) -> None:
    """An action (or fault type, or id) may hold spaces, so its key does: quoted, it can be muted, unmuted and asked
    about; the reply shows how to lift it."""
    bot.surface("p1", action="restart the pod")
    key = "disk_failure|restart the pod|r#-p#|p&gt;=0.9"  # as Slack sends it
    assert npo(bot, f"mute {key} 1h").startswith("Not muted: `the` is not a duration")  # unquoted: refused
    reply = npo(bot, f'mute "{key}" 1h pod churn')
    assert "is muted until" in reply and "no recommendation" not in reply, reply
    assert f'`/npo unmute "{key}"` lifts it' in reply
    assert bot.ingest(prediction("p2", action="restart the pod")).json()["verdict"] == "block"
    assert "(*in force*) — pod churn" in npo(bot, "why p2")
    assert npo(bot, f"unmute `{key}`") == f"Lifted 1 mute(s) of `{key}`."  # in backticks, as keys are shown
    assert bot.ingest(prediction("p3", action="restart the pod")).json()["verdict"] == "surface"
    assert npo(bot, f'unmute "{key}" now').startswith("Usage: `/npo unmute")
    bot.surface("p 4", fault_type="psu")
    assert npo(bot, 'why "p 4"').startswith("*Recommendation `p 4`*")
    assert npo(bot, "why p 4").startswith("Usage: `/npo why")


def test_why_with_long_answer_reasons_shortens_them_instead_of_cutting_the_reply(bot: BotUnderTest) -> None:
    """Override details may be 2,000 characters (a pasted log): ``/npo why`` shortens each reason, as the message
    does, and keeps every part of the reply instead of cutting it off in the middle of a line."""
    message = bot.surface("p1")
    details = ("kubelet: pod sandbox changed, it will be killed and re-created; " * 40)[:2000]
    for user in (ALICE, BOB):
        assert bot.click(user, ACTION_OVERRIDE, message).status_code == 200
        values = {"reason": {"reason": "other"}, "details": {"details": details}}
        assert bot.standin.submit_view(bot.events_url, SECRET, user_id=user, values=values).status_code == 200
    text = npo(bot, "why p1")
    assert len(text) <= MAX_REPLY and "*Latest answers on this key*:" in text, text[-300:]
    reasons = [line for line in text.split("\n") if "— Other: kubelet" in line]
    assert len(reasons) == 4 and all(line.endswith("…") and len(line) < 300 for line in reasons)


def test_app_home_shortens_long_override_reasons_so_every_recent_override_shows(bot: BotUnderTest) -> None:
    """A pasted log as an override's details (up to 2,000 characters) is shortened on the Home tab, as on the
    message, so it does not push the other recent overrides off the tab."""
    store, now = bot.bot.store, time.time()
    pids = [f"p{i}" for i in range(8)]
    for pid in pids:
        assert bot.ingest(prediction(pid)).json()["verdict"] == "surface"
    details = ("kubelet: pod sandbox changed, it will be killed and re-created; " * 40)[:2000]
    with store.transaction() as tx:
        for pid in pids:
            event = FeedbackEvent(pid, BOB, FeedbackKind.OVERRIDE, now, f"o:{pid}", reason=f"Other: {details}")
            record_feedback(tx, event, config=store.config)
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, event).status_code == 200
    view: dict[str, Any] = wait_for(lambda: bot.standin.home_view(ALICE))
    text = "\n".join(str(b.get("text", {}).get("text", "")) for b in view["blocks"] if b["type"] == "section")
    shown = [line for line in text.split("\n") if line.startswith(f":no_entry: <@{BOB}>")]
    assert len(shown) == 8 and all(len(line) < 400 and "…" in line for line in shown), shown
    assert "more section" not in str(view["blocks"])


def test_a_command_whose_text_says_payload_is_answered_not_404(bot: BotUnderTest) -> None:
    """Bolt reads any form body containing the text "payload" as an interaction's ``payload=`` field and, finding
    none, as empty: ``/npo why payload-7`` got 404 and a key naming "payload" could not be muted from Slack."""
    pkey = "payload_corruption|investigate|r#-p#|p>=0.9"
    bot.surface("p1", fault_type="payload_corruption")
    assert npo(bot, "why payload-7").startswith("No recommendation with id `payload-7`")
    assert ":mute:" in npo(bot, f"mute {pkey.replace('>', '&gt;')} 1h payload path")
    assert bot.ingest(prediction("p2", fault_type="payload_corruption")).json()["rule"] == "mute"
    assert npo(bot, "why p1").startswith("*Recommendation `p1`*")  # an ordinary command is read as before
    assert npo(bot, "status payload").startswith("Unknown command `status payload`")  # read, not a 404


def test_the_unmute_shown_for_a_key_with_double_quotes_lifts_it(bot: BotUnderTest) -> None:
    """An action is free text and may hold double quotes (``restart "api" pod``), and so does its key: the mute reply
    shows an unmute that, typed as shown, lifts that mute — not one cut at the key's own quote mark."""
    bot.surface("p1", action='restart "api" pod')
    key = 'disk_failure|restart "api" pod|r#-p#|p&gt;=0.9'  # as Slack sends it
    reply = npo(bot, f"mute `{key}` 1h")  # in backticks, as keys are shown
    assert "is muted until" in reply and "no recommendation" not in reply, reply
    shown = reply.split("`/npo ", 1)[1].rsplit("` lifts it", 1)[0]
    assert shown.startswith("unmute ")
    assert npo(bot, shown) == f"Lifted 1 mute(s) of `{key}`."
    assert bot.ingest(prediction("p2", action='restart "api" pod')).json()["verdict"] == "surface"


def test_why_shows_a_multi_line_reason_on_its_answers_line(bot: BotUnderTest) -> None:
    """The override form's details are multi-line (a pasted log). ``/npo why`` printed a reason's line breaks as
    they were, so its lines came out as further lines of the reply — unbulleted, and read as lines of NPO's own,
    such as a ``*Verdict*`` — and the reply's "… more lines" count was off. The reason is on its answer's line,
    its blank runs collapsed, as on the recommendation's message and the App Home."""
    message = bot.surface("p1")
    assert bot.click(ALICE, ACTION_OVERRIDE, message).status_code == 200
    details = "rack 12 is being recabled\n\n*Verdict*: block · rule `mute`\n  by the DC team"
    values = {"reason": {"reason": "other"}, "details": {"details": details}}
    assert bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values).status_code == 200
    lines = npo(bot, "why p1").split("\n")
    assert [line for line in lines if line.startswith("*Verdict*")] == [lines[1]]  # NPO's own, only
    mine = [line for line in lines if "Other: rack 12" in line]
    assert len(mine) == 2 and all(line.startswith("• override by") for line in mine)  # here, and on the key
    assert all(
        line.endswith("Other: rack 12 is being recabled *Verdict*: block · rule `mute` by the DC team") for line in mine
    )


def test_a_shorter_mute_of_a_muted_key_says_until_when_it_stays_blocked(bot: BotUnderTest) -> None:
    """A key muted for 4 h and then for 30 min stays blocked for the 4 h (the latest expiry wins). The second reply
    said "muted until" the 30 min, so whoever meant to shorten the mute believed it ended then."""
    bot.surface("p1")
    escaped_key = KEY.replace(">", "&gt;")
    assert "is muted until" in npo(bot, f"mute {escaped_key} 4h")
    longest = bot.bot.store.audit_entries(kind="policy_mute")[-1][4]["until"]
    reply = npo(bot, f"mute {escaped_key} 30m shorter")
    until = datetime.fromtimestamp(longest, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f"is muted until {until}" in reply, reply
    assert "an earlier mute" in reply and f"`/npo unmute {escaped_key}`" in reply, reply
    assert bot.ingest(prediction("p2")).json()["verdict"] == "block"
    # A longer mute over a shorter one is what it says.
    reply = npo(bot, f"mute {escaped_key} 8h")
    assert "an earlier mute" not in reply, reply


def test_a_key_with_spaces_typed_without_quotes_is_refused_with_the_fix(bot: BotUnderTest) -> None:
    """A key pasted as the message shows it, spaces and all, without quotes: the refusal says to quote it (it said
    "`the` is not a duration", or gave the unmute usage), and a word of the action that reads as a duration
    (``wait 5m then restart``) does not mute the key's first words for that long."""
    bot.surface("p1", action="restart the pod")
    key = "disk_failure|restart the pod|r#-p#|p&gt;=0.9"  # as Slack sends it
    for typed in (f"mute {key} 1h", f"unmute {key}"):
        reply = npo(bot, typed)
        assert "in double quotes" in reply and f'`/npo {typed.split()[0]} "' in reply, reply
    bot.surface("p2", action="wait 5m then restart")
    reply = npo(bot, "mute disk_failure|wait 5m then restart|r#-p#|p&gt;=0.9 1h")
    assert reply.startswith("Not muted") and "double quotes" in reply, reply
    assert bot.bot.store.audit_entries(kind="policy_mute") == []
    # Quoted, it is muted; a reason holding "|" after a known key is a reason.
    assert "is muted until" in npo(bot, 'mute "disk_failure|wait 5m then restart|r#-p#|p&gt;=0.9" 1h')
    assert "is muted until" in npo(bot, f'mute "{key}" 1h rack 12 | ticket 42')
    assert bot.bot.store.audit_entries(kind="policy_mute")[-1][4]["reason"] == "rack 12 | ticket 42"
