"""The predicted fault time in a recommendation message is true whenever it is read: beside the lead ("in 6.0 h",
counted from when NPO received the prediction) the message gives the absolute time as a Slack date token, so a post
held back by a Slack outage (or a requeue) does not send the reader hours off. Through the real path:
ingest over HTTP, the SQLite store, the delivery worker, the stand-in and its two pages. A post that goes out markedly
late says how late, and whether the predicted fault time had passed by then."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from slack_testing import ALICE, INCIDENT, BotUnderTest, prediction, wait_for

from bot.cli import main as cli_main
from bot.slack.blocks import ACTION_LIKE
from bot.slack.text import slack_time


def _received_at(bot: BotUnderTest, pid: str) -> float:
    conn = sqlite3.connect(Path(bot.bot.settings.db_path))
    try:
        (row,) = conn.execute("SELECT received_at FROM decisions WHERE prediction_id = ?", (pid,)).fetchall()
    finally:
        conn.close()
    return float(row[0])


def _late_note(bot: BotUnderTest, message: tuple[str, str]) -> str | None:
    blocks = bot.standin.message(*message).blocks
    note = next((b for b in blocks if b.get("block_id") == "npo_late"), None)
    return None if note is None else str(note["elements"][0]["text"])


def _summary(bot: BotUnderTest, message: tuple[str, str]) -> str:
    blocks = bot.standin.message(*message).blocks
    return str(next(b for b in blocks if b.get("block_id") == "npo_summary")["text"]["text"])


def test_a_post_held_back_by_an_outage_and_its_update_say_when_the_fault_is_predicted(bot: BotUnderTest) -> None:
    """The message said only "Predicted fault in *6.0 h*", counted from receipt: posted late (the outbox retries
    through an outage without limit) it told the reader a fault time hours later than predicted."""
    bot.standin.faults.server_error("chat.postMessage", times=2)  # Slack down: the post waits in the outbox
    response = bot.ingest(prediction("p-late"))
    assert response.status_code == 200 and response.json()["verdict"] == "surface", response.text
    message = bot.posted("p-late")
    fault_at = _received_at(bot, "p-late") + 6 * 3600
    token = slack_time(fault_at)  # <!date^…^{date_short_pretty} {time}|YYYY-MM-DD HH:MM UTC>
    assert f"Predicted fault in *6.0 h* (at {token}) · " in _summary(bot, message)
    # so does the notification text (push notifications, screen readers), which used to leave the time out
    assert bot.standin.message(*message).text.endswith(f") · fault in 6.0 h (at {token})")

    # the update after an answer says the same
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    wait_for(lambda: "*like*" in str(bot.standin.message(*message).blocks))
    assert f"Predicted fault in *6.0 h* (at {token}) · " in _summary(bot, message)

    # the stand-in's pages show a time, never the raw token: the plain page its fallback text, the live page the
    # time in UTC
    fallback = token.rsplit("|", 1)[1].rstrip(">")
    page = httpx.get(bot.standin.url + "/").text
    assert f"(at {fallback})" in page and "&lt;!date^" not in page
    state = httpx.get(bot.standin.url + "/ui/state", params={"as": ALICE}).text
    assert "!date^" not in state and fallback[11:16] in state  # HH:MM


def test_a_lead_beyond_the_calendar_gives_no_date(bot: BotUnderTest) -> None:
    """A valid but absurd lead (1e300 s) has no date: the message keeps the lead alone and is posted."""
    message = bot.surface("p-far", time_to_fault_s=1e300)
    summary = _summary(bot, message)
    assert "Predicted fault in *" in summary and "(at " not in summary and "!date^" not in summary
    assert len(bot.standin.messages(INCIDENT)) == 1


def test_a_post_that_goes_out_hours_late_says_so_and_its_update_too(
    bot: BotUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slack refused the posts (a revoked token) and they went out hours later, after `npo-bot db requeue
    --include-overdue`: each said "Predicted fault in *6.0 h*" as if just predicted, even the one whose fault time
    had already passed."""
    on_time = bot.surface("p-on-time")
    assert _late_note(bot, on_time) is None  # a post that goes out at once has no note
    bot.standin.faults.error("chat.postMessage", "invalid_auth", times=None)
    for pid, hours_ago in (("p-5h", 5), ("p-7h", 7)):  # the token is fixed 5 h and 7 h after they arrived
        bot.bot.service.clock = lambda hours_ago=hours_ago: time.time() - hours_ago * 3600
        assert bot.ingest(prediction(pid)).json()["verdict"] == "surface"
    bot.bot.service.clock = time.time
    wait_for(lambda: len(bot.bot.store.outbox("failed")) == 2)
    bot.standin.faults.clear()
    assert cli_main(["db", "requeue", "--db", str(bot.bot.settings.db_path), "--include-overdue"]) == 0
    assert "requeued 2 of 2" in capsys.readouterr().out

    late = bot.posted("p-5h")
    arrived = slack_time(_received_at(bot, "p-5h"))
    note = (
        f":hourglass: Posted *5.0 h* after the prediction arrived ({arrived}): the time to fault above counts from "
        "its arrival."
    )
    assert _late_note(bot, late) == note
    assert f"Predicted fault in *6.0 h* (at {slack_time(_received_at(bot, 'p-5h') + 6 * 3600)}) · " in _summary(
        bot, late
    )
    overdue = bot.posted("p-7h")
    passed = _late_note(bot, overdue)
    assert passed is not None and passed.startswith(":hourglass: Posted *7.0 h* after the prediction arrived (")
    assert passed.endswith(" The predicted fault time had passed when this was posted.")
    # the notification text counts from the post: about 1 h left for one, passed for the other
    text = bot.standin.message(*late).text
    assert re.search(r" · fault in (60 min|1\.0 h) \(at <!date\^\d+\^[^|]*\|[^>]*>\)$", text), text
    assert " · predicted fault time passed (at " in bot.standin.message(*overdue).text

    # an answer's update keeps the note as first posted
    assert bot.click(ALICE, ACTION_LIKE, late).status_code == 200
    wait_for(lambda: "*like*" in str(bot.standin.message(*late).blocks))
    assert _late_note(bot, late) == note
    # both stand-in pages show it with the arrival as a time, not as the raw token
    page = httpx.get(bot.standin.url + "/").text
    assert "Posted *5.0 h* after the prediction arrived (" in page and "&lt;!date^" not in page
    state = httpx.get(bot.standin.url + "/ui/state", params={"as": ALICE}).text
    assert "after the prediction arrived" in state and "!date^" not in state
