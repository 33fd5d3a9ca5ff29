"""Acting as Slack towards the bot: signed clicks, modal submissions, events, slash commands, response URLs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from standin_testing import SECRET, TOKEN, CapturingBot, FakeClock

from bot.standin import StandIn, sign

# Slack's published example, as used in slack-sdk tests/slack_sdk/signature/test_signature_verifier.py
VECTOR_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
VECTOR_TS = "1531420618"
VECTOR_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
VECTOR_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_sign_reproduces_slacks_published_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    assert sign(VECTOR_SECRET, int(VECTOR_TS), VECTOR_BODY.encode()) == VECTOR_SIGNATURE


RECOMMENDATION: list[dict[str, Any]] = [
    {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "Disk failure predicted"}},
    {
        "type": "actions",
        "block_id": "feedback",
        "elements": [
            {"type": "button", "action_id": "like", "text": {"type": "plain_text", "text": "Like"}, "value": "rec-7"},
            {
                "type": "button",
                "action_id": "override",
                "text": {"type": "plain_text", "text": "Override"},
                "value": "rec-7",
                "style": "danger",
            },
        ],
    },
]


MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "reason",
    "title": {"type": "plain_text", "text": "Override"},
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Why?"}}],
}


def post_recommendation(standin: StandIn) -> str:
    client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
    return str(client.chat_postMessage(channel="C1", text="Disk failure predicted", blocks=RECOMMENDATION)["ts"])


def payload_of(body: bytes) -> dict[str, Any]:
    form = parse_qs(body.decode())
    assert list(form) == ["payload"]
    parsed: dict[str, Any] = json.loads(form["payload"][0])
    return parsed


def test_click_is_signed_as_slack_signs(standin: StandIn, bot: CapturingBot) -> None:
    ts = post_recommendation(standin)
    response = standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts))
    assert response.status_code == 200

    headers, body = bot.last()
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(body, headers["x-slack-request-timestamp"], headers["x-slack-signature"])
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body.replace(b"like", b"neutral"), headers)


def test_click_payload_has_slacks_block_actions_shape(standin: StandIn, bot: CapturingBot) -> None:
    standin.add_user("U1", name="alice")
    ts = post_recommendation(standin)
    standin.click(bot.url, SECRET, user_id="U1", action_id="override", message=("C1", ts))
    payload = payload_of(bot.last()[1])

    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U1" and payload["user"]["username"] == "alice"
    assert payload["container"] == {"type": "message", "message_ts": ts, "channel_id": "C1", "is_ephemeral": False}
    assert payload["message"]["ts"] == ts and payload["message"]["blocks"] == RECOMMENDATION
    assert payload["channel"] == {"id": "C1", "name": "oncall"}
    assert {"api_app_id", "token", "team", "state", "trigger_id"} <= set(payload)
    (action,) = payload["actions"]
    assert action["action_id"] == "override" and action["block_id"] == "feedback"
    assert action["value"] == "rec-7" and action["type"] == "button"
    assert action["text"] == {"type": "plain_text", "text": "Override"}
    assert payload["response_url"].startswith(f"{standin.url}/response/")

    client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Why?"}, "blocks": []}
    client.views_open(trigger_id=payload["trigger_id"], view=view)  # the issued trigger id is valid


def test_click_value_override_and_missing_buttons(standin: StandIn, bot: CapturingBot) -> None:
    ts = post_recommendation(standin)
    standin.click(bot.url, SECRET, user_id="U1", action_id="like", value="tampered", message=("C1", ts))
    assert payload_of(bot.last()[1])["actions"][0]["value"] == "tampered"
    with pytest.raises(LookupError):
        standin.click(bot.url, SECRET, user_id="U1", action_id="neutral", message=("C1", ts))
    with pytest.raises(LookupError):
        standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", "1.000001"))
    standin.click(bot.url, SECRET, user_id="U1", action_id="neutral", message=("C1", ts), force=True)
    assert len(bot.requests) == 2


def test_click_with_old_timestamp(standin: StandIn, bot: CapturingBot) -> None:
    ts = post_recommendation(standin)
    standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts), timestamp=1_000_000_000)
    headers, body = bot.last()
    assert headers["x-slack-request-timestamp"] == "1000000000"
    assert headers["x-slack-signature"] == sign(SECRET, "1000000000", body)
    assert not SignatureVerifier(SECRET).is_valid_request(body, headers)  # outside the 5-minute window


def test_response_url_allows_five_uses(standin: StandIn, bot: CapturingBot) -> None:
    ts = post_recommendation(standin)
    standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts))
    response_url = payload_of(bot.last()[1])["response_url"]
    statuses = [httpx.post(response_url, json={"text": f"reply {i}"}).status_code for i in range(6)]
    assert statuses == [200] * 5 + [404]
    assert httpx.post(response_url, json={"text": "again"}).text == "used_url"
    (entry,) = standin.response_urls()
    assert [p["text"] for p in entry.posts] == [f"reply {i}" for i in range(5)]
    assert all(c.header("Authorization") is None for c in standin.calls("response_url"))


def test_response_url_expires_after_30_minutes(clocked_standin: StandIn, clock: FakeClock, bot: CapturingBot) -> None:
    ts = post_recommendation(clocked_standin)
    clocked_standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts))
    response_url = payload_of(bot.last()[1])["response_url"]
    clock.advance(30 * 60 + 1)
    reply = httpx.post(response_url, json={"text": "late"})
    assert (reply.status_code, reply.text) == (404, "expired_url")


def test_response_url_replaces_the_original_message(standin: StandIn, bot: CapturingBot) -> None:
    ts = post_recommendation(standin)
    standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts))
    response_url = payload_of(bot.last()[1])["response_url"]
    assert httpx.post(response_url, json={"text": "Liked by U1", "replace_original": True}).status_code == 200
    assert standin.message("C1", ts).text == "Liked by U1"
    httpx.post(response_url, json={"text": "only for you"})
    assert standin.messages("C1", include_ephemeral=True)[-1].ephemeral_to == "U1"


def test_response_url_refuses_blocks_slack_would_refuse(standin: StandIn, bot: CapturingBot) -> None:
    """The same block limits as chat.postMessage: a context over 3,000 characters, or over 12,000 characters of text
    across the blocks, is refused and the message is left as it was."""
    ts = post_recommendation(standin)
    standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts))
    response_url = payload_of(bot.last()[1])["response_url"]
    long_context = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 3001}]}]
    too_much = [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3000}} for _ in range(5)]
    for blocks, error in ((long_context, "invalid_blocks"), (too_much, "msg_blocks_too_long")):
        reply = httpx.post(response_url, json={"text": "t", "blocks": blocks, "replace_original": True})
        assert (reply.status_code, reply.text) == (400, error)
    assert standin.message("C1", ts).text != "t"


def test_submit_view_carries_callback_id_and_private_metadata(standin: StandIn, bot: CapturingBot) -> None:
    client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
    view = {
        "type": "modal",
        "callback_id": "override_reason",
        "private_metadata": json.dumps({"recommendation": 7}),
        "title": {"type": "plain_text", "text": "Override"},
        "submit": {"type": "plain_text", "text": "Save"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            },
            {
                "type": "input",
                "block_id": "action",
                "optional": True,
                "label": {"type": "plain_text", "text": "Corrective action"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            },
        ],
    }
    opened = client.views_open(trigger_id=standin.issue_trigger_id(), view=view)["view"]
    bot.reply = json.dumps({"response_action": "errors", "errors": {"reason": "Please give a reason"}}).encode()
    response = standin.submit_view(bot.url, SECRET, user_id="U1", values={"reason": {"text": "false alarm"}})
    assert response.json()["response_action"] == "errors"

    headers, body = bot.last()
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    payload = payload_of(body)
    assert payload["type"] == "view_submission"
    assert payload["view"]["id"] == opened["id"]
    assert payload["view"]["callback_id"] == "override_reason"
    assert json.loads(payload["view"]["private_metadata"]) == {"recommendation": 7}
    assert payload["view"]["state"]["values"] == {
        "reason": {"text": {"type": "plain_text_input", "value": "false alarm"}},
        "action": {"text": {"type": "plain_text_input", "value": None}},
    }
    assert payload["response_urls"] == []


def test_an_answer_after_three_seconds_is_a_timeout(standin: StandIn, bot: CapturingBot) -> None:
    """Slack waits 3 s for the answer to a click, a submission, a slash command or an event, then registers a
    timeout (the person sees an error; a submission's ``response_action`` is dropped). The stand-in used to wait
    10 s, so a bot answering in 3–10 s passed every test."""
    ts = post_recommendation(standin)
    client = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
    client.views_open(trigger_id=standin.issue_trigger_id(), view=MODAL)
    bot.reply = json.dumps({"response_action": "update", "view": MODAL | {"callback_id": "late"}}).encode()
    bot.delay_s = 3.3
    with pytest.raises(httpx.ReadTimeout):
        standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts))
    with pytest.raises(httpx.ReadTimeout):
        standin.submit_view(bot.url, SECRET, user_id="U1")
    assert standin.views()[0]["callback_id"] == "reason"
    bot.delay_s = 2.0
    assert standin.click(bot.url, SECRET, user_id="U1", action_id="like", message=("C1", ts)).status_code == 200


def test_submit_view_without_an_open_view(standin: StandIn, bot: CapturingBot) -> None:
    with pytest.raises(LookupError):
        standin.submit_view(bot.url, SECRET, user_id="U1")


def test_send_event_with_and_without_retry_headers(standin: StandIn, bot: CapturingBot) -> None:
    event = {"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"}
    standin.send_event(bot.url, SECRET, event, event_id="Ev1")
    standin.send_event(bot.url, SECRET, event, event_id="Ev1", retry_num=1)
    (_, first_headers, first_body), (_, retry_headers, retry_body) = bot.requests
    first = {k.lower(): v for k, v in first_headers.items()}
    retry = {k.lower(): v for k, v in retry_headers.items()}
    assert "x-slack-retry-num" not in first
    assert retry["x-slack-retry-num"] == "1" and retry["x-slack-retry-reason"] == "http_timeout"
    assert first["content-type"] == "application/json"
    for headers, body in ((first, first_body), (retry, retry_body)):
        assert SignatureVerifier(SECRET).is_valid_request(body, headers)
        envelope = json.loads(body)
        assert envelope["type"] == "event_callback" and envelope["event_id"] == "Ev1"
        assert envelope["event"] == event


def test_slash_command(standin: StandIn, bot: CapturingBot) -> None:
    standin.slash_command(bot.url, SECRET, "/npo", "status", "U1", "C1")
    headers, body = bot.last()
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    assert form["command"] == "/npo" and form["text"] == "status"
    assert form["user_id"] == "U1" and form["channel_id"] == "C1" and form["channel_name"] == "oncall"
    assert form["response_url"].startswith(f"{standin.url}/response/") and form["trigger_id"]
    assert httpx.post(form["response_url"], json={"text": "all fine", "response_type": "in_channel"}).status_code == 200
    assert [m.text for m in standin.messages("C1")] == ["all fine"]
