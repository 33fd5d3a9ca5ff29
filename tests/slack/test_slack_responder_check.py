"""The responder look-up tried once at start: a setting or scope Slack refuses is one error line naming it, at
start, instead of a "could not check" refusal of every click with the reason only in the log of each."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_testing import ALICE, INCIDENT, SECRET, BotUnderTest, make_settings, serving, wait_for

from bot.app import build_bot
from bot.standin import StandIn


def _told(bot: BotUnderTest, user: str) -> str:
    """The first ephemeral message ``user`` got in the incident channel (waits 5 s at most)."""
    told = wait_for(
        lambda: [m for m in bot.standin.messages(INCIDENT, include_ephemeral=True) if m.ephemeral_to == user]
    )
    return str(told[0].text)


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("bot.") and r.levelno == level]


@pytest.mark.parametrize(
    ("responders", "method", "error", "named"),
    [
        (("S0WRONG",), None, "no_such_subteam", "NPO_RESPONDERS"),  # the stand-in knows no group S0WRONG
        (("S0ONCALL",), "usergroups.users.list", "missing_scope", "usergroups:read"),
        ((), "conversations.members", "missing_scope", "channels:read"),
        ((), "conversations.members", "channel_not_found", "NPO_INCIDENT_CHANNEL"),
        ((), "conversations.members", "invalid_auth", "SLACK_BOT_TOKEN"),
    ],
)
def test_a_responder_look_up_slack_refuses_is_one_error_line_at_start_naming_what_to_fix(
    tmp_path: Path,
    standin: StandIn,
    caplog: pytest.LogCaptureFixture,
    responders: tuple[str, ...],
    method: str | None,
    error: str,
    named: str,
) -> None:
    """Before, nothing was said at start; every click was then refused with "could not check just now … click
    again", forever, and only a warning per click said why. Now the start logs one error naming the setting or
    the scope, and the bot still runs (ingest, posting, and the listed users may answer)."""
    caplog.set_level(logging.INFO)
    standin.add_usergroup("S0ONCALL", [ALICE])
    standin.set_channel_members(INCIDENT, [ALICE])
    if method is not None:
        standin.faults.error(method, error, times=None)
    with serving(build_bot(make_settings(tmp_path, standin, responders=responders), seed=1), standin) as bot:
        errors = [line for line in _lines(caplog, logging.ERROR) if "responder" in line]
        assert len(errors) == 1, _lines(caplog, logging.ERROR)
        assert error in errors[0] and named in errors[0], errors[0]
        assert bot.surface("p1")  # still serving: recommendations are posted


def test_a_start_up_check_slack_cannot_answer_is_a_warning_and_clicks_look_up_later(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack failing at start (5xx) is not a configuration error: a warning, no error, and the first click looks
    the members up itself (the check keeps no member list: members added after the start may answer)."""
    caplog.set_level(logging.INFO)
    standin.faults.server_error("conversations.members", times=1)
    with serving(build_bot(make_settings(tmp_path, standin, responders=()), seed=1), standin) as bot:
        assert not [line for line in _lines(caplog, logging.ERROR) if "responder" in line]
        assert [line for line in _lines(caplog, logging.WARNING) if "responder" in line and "start" in line]
        standin.set_channel_members(INCIDENT, [ALICE])
        message = bot.surface("p1")
        assert bot.click(ALICE, "npo_like", message).status_code == 200
        assert bot.counts()["feedback"] == 1


def test_no_start_up_look_up_when_responders_are_user_ids_only(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(build_bot(make_settings(tmp_path, standin), seed=1), standin):
        pass
    assert not standin.calls("conversations.members") and not standin.calls("usergroups.users.list")


@contextlib.contextmanager
def _clicked_while_the_look_up_fails(
    tmp_path: Path, standin: StandIn, error: str
) -> Iterator[tuple[BotUnderTest, str]]:
    """A running bot whose responders are the incident channel's members, a recommendation posted, then Slack
    answering ``conversations.members`` with ``error`` for good and ALICE clicking Like: the bot and what she is
    told."""
    standin.set_channel_members(INCIDENT, [ALICE])
    with serving(build_bot(make_settings(tmp_path, standin, responders=()), seed=1), standin) as bot:
        message = bot.surface("p1")
        standin.faults.error("conversations.members", error, times=None)
        assert bot.click(ALICE, "npo_like", message).status_code == 200
        yield bot, _told(bot, ALICE)


def test_a_click_while_slack_refuses_the_look_up_names_what_to_fix_instead_of_click_again(
    tmp_path: Path, standin: StandIn
) -> None:
    """Slack refuses the member look-up for a reason no retry changes (the bot was never invited to the private
    incident channel): the clicker was told "could not check just now … click again in a minute", and every click
    a minute later got the same answer, forever. Now the clicker is told what Slack refuses and that clicking again
    will not help; nothing is recorded (fail closed) and a mute is refused the same way."""
    with _clicked_while_the_look_up_fails(tmp_path, standin, "channel_not_found") as (bot, text):
        assert bot.counts()["feedback"] == 0
        assert "Slack refuses its look-up of the on-call responders" in text, text
        assert "NPO_INCIDENT_CHANNEL" in text and "channel_not_found" in text and "Nothing was recorded" in text
        assert "will not help" in text and "click again" not in text and "just now" not in text
        response = standin.slash_command(bot.events_url, SECRET, "/npo", "mute some|key 1h", ALICE, INCIDENT)
        reply = str(response.json()["text"])
        assert "may mute or unmute keys" in reply and "NPO_INCIDENT_CHANNEL" in reply, reply
        assert "Nothing was changed" in reply and "will not help" in reply


def test_a_look_up_slack_fails_to_answer_still_says_click_again(tmp_path: Path, standin: StandIn) -> None:
    """A Slack that errs for a passing reason (internal_error) is not a setting to fix: click again."""
    with _clicked_while_the_look_up_fails(tmp_path, standin, "internal_error") as (bot, text):
        assert bot.counts()["feedback"] == 0
        assert "could not check just now" in text and "click again" in text and "refuses" not in text, text
