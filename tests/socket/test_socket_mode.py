"""Socket Mode end to end: ``apps.connections.open`` on the stand-in, a real WebSocket, Slack's envelopes, the
bot's acks, and what the shared listeners stored — the same listeners as HTTP mode, with no signature."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from slack_testing import ALICE, BOB, INCIDENT, MALLORY, make_settings, wait_for
from socket_testing import APP_TOKEN, SocketBot

from bot.app import build_bot
from bot.config import ConfigError, load_settings
from bot.slack.command import REPLAYED, SUMMARY_REPLAYED, SUMMARY_WORKING
from bot.socket_mode import SocketModeService
from bot.standin import StandIn, interactions
from bot.standin.socket_mode import SocketModeStandIn


def test_connects_with_the_app_token_and_says_hello(socket_bot: SocketBot) -> None:
    calls = socket_bot.standin.calls("apps.connections.open")
    assert len(calls) == 1  # one URL per connection (a refused token is told by this call too)
    assert all(call.header("Authorization") == f"Bearer {APP_TOKEN}" for call in calls)
    assert socket_bot.socket.opens == 1 and socket_bot.socket.connected() == 1


def test_a_click_over_the_websocket_is_stored_before_its_ack(socket_bot: SocketBot) -> None:
    message = socket_bot.surface("p1")
    envelope = socket_bot.socket.click(user_id=ALICE, action_id="npo_like", message=message)
    ack = socket_bot.socket.wait_ack(envelope)
    assert ack["envelope_id"] == envelope and not ack.get("payload")
    # Stored before the ack, read over another connection right after it:
    assert socket_bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]
    wait_for(lambda: "Like (1)" in str(socket_bot.standin.message(*message).blocks))


def test_override_modal_and_its_validation_over_the_websocket(socket_bot: SocketBot) -> None:
    message = socket_bot.surface("p1")
    socket_bot.socket.wait_ack(socket_bot.socket.click(user_id=BOB, action_id="npo_override", message=message))
    views = socket_bot.standin.views()
    assert len(views) == 1 and views[0]["callback_id"] == "npo_override_modal"

    empty = socket_bot.socket.wait_ack(socket_bot.socket.submit_view(user_id=BOB, values={}))
    assert empty["payload"]["response_action"] == "errors" and "reason" in empty["payload"]["errors"]
    assert socket_bot.rows("SELECT COUNT(*) FROM feedback") == [(0,)]

    values = {"reason": {"reason": "false_positive"}, "details": {"details": "fan reads fine"}}
    valid = socket_bot.socket.wait_ack(socket_bot.socket.submit_view(user_id=BOB, values=values))
    assert not valid.get("payload")
    assert socket_bot.rows("SELECT operator, kind, reason FROM feedback") == [
        (BOB, "override", "False positive: fan reads fine")
    ]


def test_an_unauthorised_click_is_acked_and_not_stored(socket_bot: SocketBot) -> None:
    message = socket_bot.surface("p1")
    socket_bot.socket.wait_ack(socket_bot.socket.click(user_id=MALLORY, action_id="npo_like", message=message))
    assert socket_bot.rows("SELECT COUNT(*) FROM feedback") == [(0,)]
    refusal = wait_for(lambda: socket_bot.standin.calls("chat.postEphemeral"))
    assert refusal[0].body["user"] == MALLORY


def test_the_responders_are_the_incident_channels_members_over_the_websocket(
    make_socket_bot: Callable[..., SocketBot],
) -> None:
    """Without NPO_RESPONDERS the members of the incident channel may answer. Over the WebSocket the bot looks them
    up with slack-sdk's async client, which sends ``conversations.members`` as GET, as Slack accepts it."""
    bot = make_socket_bot(settings={"responders": ()})
    bot.standin.set_channel_members(INCIDENT, [ALICE])
    message = bot.surface("p1")
    bot.socket.wait_ack(bot.socket.click(user_id=MALLORY, action_id="npo_like", message=message))
    bot.socket.wait_ack(bot.socket.click(user_id=ALICE, action_id="npo_like", message=message))
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]
    assert all(call.status == 200 for call in bot.standin.calls("conversations.members"))


def test_a_responder_on_the_second_page_of_the_channel_members_may_answer(
    make_socket_bot: Callable[..., SocketBot],
) -> None:
    """Slack pages conversations.members (at most 1,000 a page): the bot follows the cursor, so a member listed
    after the first thousand may answer too. (The check at start asks for one member: not a page of the look-up.)"""
    bot = make_socket_bot(settings={"responders": ()})
    bot.standin.set_channel_members(INCIDENT, [f"U0M{i:05d}" for i in range(1500)] + [ALICE])
    message = bot.surface("p1")
    bot.socket.wait_ack(bot.socket.click(user_id=ALICE, action_id="npo_like", message=message))
    assert bot.rows("SELECT operator, kind FROM feedback") == [(ALICE, "like")]
    pages = [call for call in bot.standin.calls("conversations.members") if str(call.body.get("limit")) == "1000"]
    assert len(pages) == 2


def test_slash_command_answers_in_its_ack(socket_bot: SocketBot) -> None:
    socket_bot.surface("p1")
    ack = socket_bot.socket.wait_ack(socket_bot.socket.slash_command("/npo", "status", ALICE, INCIDENT))
    assert "Alignment loss" in ack["payload"]["text"]


def test_the_summary_over_the_websocket_follows_its_ack_through_the_response_url(socket_bot: SocketBot) -> None:
    """``/npo summary`` is acknowledged at once over the WebSocket as over HTTP; the report follows through the
    command's response_url."""
    socket_bot.surface("p1")
    ack = socket_bot.socket.wait_ack(socket_bot.socket.slash_command("/npo", "summary", ALICE, INCIDENT))
    assert ack["payload"] == {"text": SUMMARY_WORKING, "response_type": "ephemeral"}
    assert len(socket_bot.standin.response_urls()) == 1
    (post,) = wait_for(lambda: socket_bot.standin.response_urls()[0].posts)
    assert post["response_type"] == "ephemeral" and post["text"].startswith("NPO weekly summary")


def test_a_summary_envelope_sent_again_posts_its_report_once(socket_bot: SocketBot) -> None:
    """Slack sends an envelope again when its acknowledgement did not arrive in time: the ``/npo summary`` sent
    again is told its request was carried out, and its report is not built and posted a second time."""
    socket_bot.surface("p1")
    envelope = socket_bot.socket.slash_command("/npo", "summary", ALICE, INCIDENT)
    assert socket_bot.socket.wait_ack(envelope)["payload"]["text"] == SUMMARY_WORKING
    (post,) = wait_for(lambda: socket_bot.standin.response_urls()[0].posts)
    socket_bot.socket.resend(envelope, retry_attempt=1, retry_reason="timeout")
    assert socket_bot.socket.wait_ack(envelope, count=2)["payload"]["text"] == SUMMARY_REPLAYED
    again = socket_bot.socket.slash_command("/npo", "summary", ALICE, INCIDENT)  # a new invocation
    assert socket_bot.socket.wait_ack(again)["payload"]["text"] == SUMMARY_WORKING
    wait_for(lambda: socket_bot.standin.response_urls()[1].posts)
    assert socket_bot.standin.response_urls()[0].posts == [post]


def test_events_are_processed_once_per_event_id_across_retries(socket_bot: SocketBot) -> None:
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    first = socket_bot.socket.event(event, event_id="Ev0SOCKET1")
    socket_bot.socket.wait_ack(first)
    wait_for(lambda: socket_bot.standin.home_view(ALICE))
    retry = socket_bot.socket.event(event, event_id="Ev0SOCKET1", retry_attempt=1, retry_reason="timeout")
    socket_bot.socket.wait_ack(retry)
    assert len(socket_bot.standin.calls("views.publish")) == 1
    assert socket_bot.rows("SELECT COUNT(*) FROM processed_requests WHERE request_id = 'event:Ev0SOCKET1'") == [(1,)]


def test_a_wrong_app_token_is_refused_and_nothing_connects(
    tmp_path: Path, standin: StandIn, socket_server: SocketModeStandIn
) -> None:
    settings = make_settings(tmp_path, standin, slack_app_token="xapp-1-wrong", port=0)
    built = build_bot(settings, seed=1)
    try:
        with pytest.raises(RuntimeError, match=r"SLACK_APP_TOKEN was refused by apps\.connections\.open: invalid_auth"):
            SocketModeService(built, log_level="critical").start_thread()
    finally:
        built.close()
    assert socket_server.connected() == 0
    assert standin.calls("apps.connections.open")[0].response["error"] == "invalid_auth"


@pytest.mark.parametrize(
    "error",
    [
        "forbidden_team",
        "no_permission",
        "missing_args",
        "deprecated_endpoint",
        "team_disabled",
        "user_removed_from_team",
    ],
)
def test_an_app_token_slack_will_never_accept_stops_the_bot(
    tmp_path: Path, standin: StandIn, socket_server: SocketModeStandIn, error: str
) -> None:
    """Errors of ``apps.connections.open`` that Slack documents and no retry can fix (the workspace may not use the
    method, the token lacks the permission, the method is gone) are a refused token, as ``invalid_auth`` is: the
    service stops (``npo-bot socket``: exit 2, one error line). Before, they were retried every 60 s forever, with
    the process up and deaf."""
    standin.faults.error("apps.connections.open", error, times=None)
    built = build_bot(make_settings(tmp_path, standin, slack_app_token=APP_TOKEN, port=0), seed=1)
    try:
        service = SocketModeService(built, log_level="critical", retry_delays=(0.1, 0.2))
        with pytest.raises(RuntimeError, match=rf"SLACK_APP_TOKEN was refused by apps\.connections\.open: {error}"):
            service.start_thread(timeout=20)
    finally:
        built.close()
    assert socket_server.connected() == 0
    assert len(standin.calls("apps.connections.open")) == 1


def test_the_app_token_setting_is_checked() -> None:
    base = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
    }
    assert load_settings(base | {"SLACK_APP_TOKEN": APP_TOKEN}, None).slack_app_token == APP_TOKEN
    assert load_settings(base, None).slack_app_token == ""
    with pytest.raises(ConfigError) as error:
        load_settings(base | {"SLACK_APP_TOKEN": "xoxb-not-an-app-token"}, None)
    assert "SLACK_APP_TOKEN" in error.value.problems
    assert "slack_app_token" in load_settings(base | {"SLACK_APP_TOKEN": APP_TOKEN}, None).redacted()
    assert load_settings(base | {"SLACK_APP_TOKEN": APP_TOKEN}, None).redacted()["slack_app_token"] == "***"


def test_cli_refuses_to_start_without_an_app_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "NPO_"))}
    env |= {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
        "NPO_DB_PATH": str(tmp_path / "npo.db"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "socket", "--env-file", os.devnull],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2
    assert "SLACK_APP_TOKEN is required" in done.stderr
    assert not (tmp_path / "npo.db").exists()


def test_a_mute_sent_again_without_a_trigger_id_is_carried_out_once(socket_bot: SocketBot) -> None:
    """Slack sends an envelope again when its acknowledgement did not arrive in time. A ``/npo mute`` envelope with
    no trigger id (and over the WebSocket there is no signature either) is still recognised by its envelope id: sent
    again after an unmute, it does not put the lifted mute back, and the person is told nothing was changed."""
    key = "disk_failure|investigate|r#-p#|p>=0.9"
    socket_bot.surface("p1")
    fields = interactions.slash_command_fields(
        socket_bot.standin.store,
        f"{socket_bot.standin.url}/response",
        command="/npo",
        text=f"mute {key} 2h",
        user_id=ALICE,
        channel_id=INCIDENT,
    )
    del fields["trigger_id"]
    envelope = socket_bot.socket.send("slash_commands", fields)
    assert "is muted until" in socket_bot.socket.wait_ack(envelope)["payload"]["text"]
    unmute = socket_bot.socket.slash_command("/npo", f'unmute "{key}"', ALICE, INCIDENT)
    assert socket_bot.socket.wait_ack(unmute)["payload"]["text"].startswith("Lifted 1 mute(s)")
    socket_bot.socket.resend(envelope)
    assert socket_bot.socket.wait_ack(envelope, count=2)["payload"]["text"] == REPLAYED
    assert socket_bot.rows("SELECT COUNT(*) FROM audit_log WHERE kind = 'policy_mute'") == [(1,)]
    assert socket_bot.rows("SELECT COUNT(*) FROM policy_mutes WHERE lifted_at IS NULL") == [(0,)]


def test_clicks_without_an_action_ts_are_told_apart_by_their_envelope(socket_bot: SocketBot) -> None:
    """A click whose payload has no ``action_ts`` is identified by its envelope over the WebSocket: a person's
    second, different answer counts, and the first click's envelope sent again does not bring the first back."""
    message = socket_bot.surface("p1")

    def click(action_id: str) -> str:
        envelope = socket_bot.socket.click(user_id=ALICE, action_id=action_id, message=message, action_ts=False)
        socket_bot.socket.wait_ack(envelope)
        return envelope

    like = click("npo_like")
    click("npo_neutral")
    socket_bot.socket.resend(like)
    socket_bot.socket.wait_ack(like, count=2)
    assert socket_bot.rows("SELECT operator, kind FROM feedback ORDER BY id") == [(ALICE, "like"), (ALICE, "neutral")]


def test_an_override_click_sent_again_does_not_say_the_open_form_could_not_open(socket_bot: SocketBot) -> None:
    """Slack sends an envelope again when its acknowledgement came late. An Override click sent again carries the
    trigger id the form was already opened with, which Slack will not open a second view with: the person, looking
    at the open form, must not be told it could not be opened and to click again."""
    message = socket_bot.surface("p1")
    envelope = socket_bot.socket.click(user_id=BOB, action_id="npo_override", message=message)
    socket_bot.socket.wait_ack(envelope)
    assert len(socket_bot.standin.views()) == 1
    socket_bot.socket.resend(envelope)
    socket_bot.socket.wait_ack(envelope, count=2)
    time.sleep(0.3)  # anything the second delivery set off is done by now
    assert len(socket_bot.standin.views()) == 1
    assert socket_bot.standin.calls("chat.postEphemeral") == []
