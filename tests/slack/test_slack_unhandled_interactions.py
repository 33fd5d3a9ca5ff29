"""Interactions no listener handles — a button of an unknown action id, a shortcut or message action, a
``view_closed``, another modal's submission, a ``block_suggestion`` — over real HTTP, signed as Slack signs them."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from slack_testing import ALICE, BotUnderTest

from bot.standin import interactions


def _unhandled(message: tuple[str, str]) -> dict[str, dict[str, Any]]:
    channel, ts = message
    user = {"id": ALICE, "username": "alice", "team_id": "T0STANDIN"}
    view = {"id": "V0OTHER", "type": "modal", "callback_id": "npo_override_modal", "state": {"values": {}}}
    return {
        "view_closed": {"type": "view_closed", "user": user, "view": view, "is_cleared": False},
        "shortcut": {"type": "shortcut", "callback_id": "npo_report", "trigger_id": "1.2.3", "user": user},
        "message_action": {
            "type": "message_action",
            "callback_id": "npo_explain",
            "trigger_id": "1.2.3",
            "user": user,
            "channel": {"id": channel},
            "message": {"type": "message", "ts": ts, "text": "x"},
        },
        "view_submission of another modal": {
            "type": "view_submission",
            "user": user,
            "view": view | {"callback_id": "another_modal"},
        },
        "block_suggestion": {"type": "block_suggestion", "action_id": "npo_pick", "block_id": "b", "value": "a"},
        "interactive_message": {"type": "interactive_message", "callback_id": "legacy", "actions": [{"name": "a"}]},
    }


@pytest.mark.parametrize(
    "kind",
    [
        "unknown action_id",
        "view_closed",
        "shortcut",
        "message_action",
        "view_submission of another modal",
        "block_suggestion",
        "interactive_message",
    ],
)
def test_an_interaction_no_listener_handles_is_acknowledged_quietly(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Bolt answered these 404 — the person saw the app fail (a warning by the button, "didn't respond"), and in
    Socket Mode a 404 is not acknowledged at all, so Slack sent it again — and logged a warning of a dozen lines with
    a code suggestion each time. They are acknowledged with 200, store nothing and are logged in one line."""
    message = bot.surface("p1")
    if kind == "unknown action_id":  # a button of another version, or of another app's blocks
        body = bot.click_body(ALICE, "npo_snooze", message, force=True)
    else:
        body = interactions.form_body(_unhandled(message)[kind])
    before = bot.counts()
    caplog.clear()
    caplog.set_level(logging.INFO)
    response = bot.send_signed(body)
    assert response.status_code == 200, response.text
    expected = {"options": []} if kind == "block_suggestion" else None
    assert (response.json() if response.content else None) == expected
    assert bot.counts() == before and bot.bot.store.feedback_log() == []
    lines = [r for r in caplog.records if r.name.startswith("bot.")]
    assert not [r for r in lines if r.levelno >= logging.WARNING or r.exc_info], [r.getMessage() for r in lines]
    ignored = [r.getMessage() for r in lines if "no listener handles it" in r.getMessage()]
    assert len(ignored) == 1 and "\n" not in ignored[0], ignored


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "block_actions", "user": {"id": ALICE}}, "actions"),
        ({"type": "shortcut", "callback_id": 7, "user": {"id": ALICE}}, "callback_id"),
        ({"type": "block_suggestion", "action_id": ["x"], "user": {"id": ALICE}}, "action_id"),
        ({"type": "view_closed", "view": {"type": "modal", "callback_id": 1.5}}, "view.callback_id"),
    ],
)
def test_an_interaction_slack_never_sends_is_refused_naming_the_field(
    bot: BotUnderTest, payload: dict[str, Any], field: str
) -> None:
    """A click without its action, or an id a listener matches on that is not a string, is not from Slack: 400
    naming the field (a block_actions without actions got Bolt's 404, a numeric callback_id would reach a pattern
    search and answer 500)."""
    before = bot.counts()
    response = bot.send_signed(interactions.form_body(payload))
    assert response.status_code == 400 and response.json()["field"] == field, response.text
    assert bot.counts() == before


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "workflow_step_edit", "callback_id": "npo_step", "trigger_id": "1.2.3", "user": {"id": ALICE}},
        {
            "type": "view_submission",
            "user": {"id": ALICE},
            "view": {"id": "V0STEP", "type": "workflow_step", "callback_id": "npo_override_modal"},
        },
    ],
)
def test_a_workflow_step_payload_without_its_step_is_refused_not_a_500(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, payload: dict[str, Any]
) -> None:
    """Bolt reads a Steps from Apps payload's ``workflow_step`` to build the arguments of every middleware, and one
    without it was answered 500 with a traceback in the log ("Failed to run a middleware function"). Slack always
    sends it: a body without it is refused with 400 naming the field, and nothing runs."""
    before = bot.counts()
    response = bot.send_signed(interactions.form_body(payload))
    assert response.status_code == 400 and response.json()["field"] == "workflow_step", response.text
    assert bot.counts() == before
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    with_step = payload | {"workflow_step": {"workflow_step_edit_id": "1"}}
    assert bot.send_signed(interactions.form_body(with_step)).status_code == 200
    assert bot.counts() == before
