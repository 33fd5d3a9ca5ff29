"""Secrets in the logs of Socket Mode at DEBUG (a program that runs NPO with DEBUG logging): slack-sdk logs every
message it receives whole, and ``apps.connections.open``'s answer. Neither the verification ``token`` nor a
``response_url`` of an envelope, nor the app-level or bot token, nor the WebSocket URL's ticket may reach a log;
what the lines are about (envelope ids, types, the rest of the payload) still does."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest
from slack_testing import ALICE, BOB, INCIDENT, TOKEN
from socket_testing import APP_TOKEN, SocketBot

from bot.slack.log_redaction import REDACTED, SecretRedactor, redact
from bot.standin.store import VERIFICATION_TOKEN


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    records = caplog.records
    return "\n".join(
        [
            caplog.text,
            *(r.getMessage() for r in records),
            *(str(r.args) for r in records),
            *(r.exc_text or "" for r in records),
        ]
    )


def test_no_envelope_secret_reaches_the_logs_at_debug(
    caplog: pytest.LogCaptureFixture, make_socket_bot: Callable[..., SocketBot]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: the bot, Bolt, slack_sdk's Web API and Socket Mode clients
    for name in ("slack_sdk", "slack_bolt", "bot"):  # also where an earlier test set a level (the demo's WARNING)
        caplog.set_level(logging.DEBUG, logger=name)
    socket_bot = make_socket_bot()  # apps.connections.open and its answer (the WebSocket URL) logged at DEBUG
    message = socket_bot.surface("p1")
    click = socket_bot.socket.click(user_id=ALICE, action_id="npo_like", message=message)
    socket_bot.socket.wait_ack(click)
    socket_bot.socket.wait_ack(socket_bot.socket.click(user_id=BOB, action_id="npo_override", message=message))
    values = {"reason": {"reason": "false_positive"}, "details": {"details": "fan reads fine"}}
    socket_bot.socket.wait_ack(socket_bot.socket.submit_view(user_id=BOB, values=values))
    socket_bot.socket.wait_ack(socket_bot.socket.slash_command("/npo", "status", ALICE, INCIDENT))
    event = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    socket_bot.socket.wait_ack(socket_bot.socket.event(event, event_id="Ev0LOGS"))

    text = _logged(caplog)
    secrets = {
        "verification token": VERIFICATION_TOKEN,
        "response_url": f"{socket_bot.standin.url}/response",
        "app-level token": APP_TOKEN,
        "bot token": TOKEN,
    }
    for name, secret in secrets.items():
        assert secret not in text, f"the {name} appears in the logs"
    assert f"envelope_id: {click}" in text  # the envelopes were logged, their ids kept
    assert '"action_id": "npo_like"' in text and '"command": "/npo"' in text  # and what they carry
    assert f'"token": "{REDACTED}"' in text and f'"response_url": "{REDACTED}"' in text
    assert "ticket=" in text and not re.search(r"ticket=(?!\[redacted\])", text)  # the one-time WebSocket URL


@pytest.mark.parametrize(
    ("logged", "kept", "gone"),
    [
        (  # Slack's own JSON: slashes escaped
            '{"token":"Xy9verif","response_url":"https:\\/\\/hooks.slack.com\\/actions\\/T1\\/2\\/abc","type":"x"}',
            '"type":"x"',
            ("Xy9verif", "abc", "actions"),
        ),
        (  # a Python repr, as slack-sdk logs answers and request bodies
            "body: {'ok': True, 'url': 'wss://wss-primary.slack.com/link/?ticket=9f8e&app_id=A1'}",
            "app_id=A1",
            ("9f8e",),
        ),
        (  # a form-encoded slash command
            "token=Xy9verif&command=%2Fnpo&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1%2F2%2Fabc",
            "command=%2Fnpo",
            ("Xy9verif", "commands"),
        ),
        (  # an interaction's form-encoded payload, as Bolt logs a request whose signature it refuses
            "body: payload=%7B%22token%22%3A+%22Xy9verif%22%2C+%22response_url%22%3A+%22https%3A%2F%2Fhooks.slack.com"
            "%2Factions%2FT1%2F2%2Fabc%22%2C+%22type%22%3A+%22block_actions%22%7D",
            "%22type%22%3A+%22block_actions%22",
            ("Xy9verif", "abc", "actions%2F"),
        ),
        ("embedded https%3A%2F%2Fhooks.slack.com%2Fservices%2FT1%2FB2%2Fsecret&next=1", "&next=1", ("secret", "T1")),
        ("auth with xoxb-1-2-secret and xapp-1-A1-2-secret", "auth with", ("secret",)),
        ("posting to https://hooks.slack.com/services/T1/B2/secret failed", "failed", ("T1", "secret")),
        ('\\"response_url\\": \\"https://example.org/r/secret\\"', "response_url", ("secret",)),
    ],
)
def test_the_filter_redacts_slack_secrets_and_keeps_the_rest(logged: str, kept: str, gone: tuple[str, ...]) -> None:
    record = logging.LogRecord("slack_sdk", logging.DEBUG, __file__, 1, "%s", (logged,), None)
    assert SecretRedactor().filter(record)
    message = record.getMessage()
    assert kept in message and REDACTED in message and message == redact(logged)
    for secret in gone:
        assert secret not in message
