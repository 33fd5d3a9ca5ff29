"""Signed-request verification, replays, concurrency, authorisation and the loopback guard — over real HTTP."""

from __future__ import annotations

import json
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from slack_testing import ALICE, MALLORY, SECRET, BotUnderTest, wait_for

from bot.standin import interactions
from bot.standin.signing import sign, signed_headers


def test_signer_reproduces_slacks_published_vector() -> None:
    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        "channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        "response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert sign("8f742231b10e8888abcd99yyyzzz85a5", 1531420618, body) == expected


def _state(bot: BotUnderTest) -> tuple[dict[str, int], int]:
    return bot.counts(), len(bot.standin.calls())


def _bad_requests(body: str) -> dict[str, tuple[str, dict[str, str]]]:
    # Bolt compares against float time.time(): round *up* so "301 s ahead" stays > 300 s by the time it arrives.
    now = math.ceil(time.time())
    good = signed_headers(SECRET, body, interactions.FORM)
    altered = body.replace("npo_like", "npo_neutral")
    return {
        "forged signature": (body, signed_headers("not-the-secret-at-all", body, interactions.FORM)),
        "body altered after signing": (altered, good),
        "301 s old": (body, signed_headers(SECRET, body, interactions.FORM, int(time.time()) - 301)),
        "301 s ahead": (body, signed_headers(SECRET, body, interactions.FORM, now + 301)),
        "missing signature": (body, {k: v for k, v in good.items() if k != "X-Slack-Signature"}),
        "missing timestamp": (body, {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}),
        "missing both": (body, {"Content-Type": interactions.FORM}),
        "non-numeric timestamp": (body, good | {"X-Slack-Request-Timestamp": "abc"}),
        "4,301-digit timestamp": (body, good | {"X-Slack-Request-Timestamp": "1" * 4301}),
    }


def test_unverifiable_requests_are_refused_and_change_nothing(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    assert "npo_like" in body
    for name, (sent, headers) in _bad_requests(body).items():
        before = _state(bot)
        response = httpx.post(bot.events_url, content=sent.encode(), headers=headers)
        expected = 400 if name.endswith(" timestamp") and not name.startswith("missing") else 401
        assert response.status_code == expected, name
        time.sleep(0.05)
        assert _state(bot) == before, name


def test_a_timestamp_sent_twice_is_refused_before_bolt_reads_either(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    good = signed_headers(SECRET, body, interactions.FORM)
    for second in ("abc", good["X-Slack-Request-Timestamp"]):
        before = _state(bot)
        headers = [*good.items(), ("X-Slack-Request-Timestamp", second)]
        response = httpx.post(bot.events_url, content=body.encode(), headers=headers)
        assert response.status_code == 400 and response.json()["field"] == "X-Slack-Request-Timestamp"
        assert _state(bot) == before


def test_a_request_299_s_old_is_accepted(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    response = bot.send_signed(bot.click_body(ALICE, "npo_like", message), timestamp=math.ceil(time.time()) - 299)
    assert response.status_code == 200
    assert bot.counts()["feedback"] == 1


def test_replayed_request_records_nothing_new(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    headers = signed_headers(SECRET, body, interactions.FORM)
    first = bot.send_signed(body, headers=headers)
    after_first = bot.counts()
    replay = bot.send_signed(body, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert bot.counts() == after_first
    assert after_first["feedback"] == 1


def test_five_concurrent_identical_clicks_record_one_event(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    headers = signed_headers(SECRET, body, interactions.FORM)
    before = bot.counts()
    with ThreadPoolExecutor(5) as pool:
        statuses = list(pool.map(lambda _: bot.send_signed(body, headers=headers).status_code, range(5)))
    assert statuses == [200] * 5
    after = bot.counts()
    assert after["feedback"] == before["feedback"] + 1
    assert after["pulls"] == before["pulls"] + 1 and after["key_n"] == before["key_n"] + 1


def test_same_person_clicking_like_twice_changes_nothing_and_override_replaces(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    once = bot.counts()
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert bot.counts() == once
    assert bot.click(ALICE, "npo_neutral", message).status_code == 200
    log = bot.bot.store.feedback_log(prediction_id="p1")
    assert [f.event.kind.value for f in log] == ["like", "neutral"] and log[1].replaces == log[0].event.request_id
    assert bot.counts()["key_n"] == once["key_n"]  # replaced, not counted twice


def test_unauthorised_clicker_gets_an_ephemeral_refusal(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    before = bot.counts()
    response = bot.click(MALLORY, "npo_like", message)
    assert response.status_code == 200
    ephemeral = wait_for(lambda: bot.standin.calls("chat.postEphemeral"))
    assert ephemeral[0].body["user"] == MALLORY
    assert bot.counts()["feedback"] == before["feedback"] == 0
    assert not bot.standin.calls("chat.update")


def test_unknown_paths_url_verification_and_ssl_check(bot: BotUnderTest) -> None:
    before = _state(bot)
    assert httpx.get(bot.events_url).status_code == 404
    assert httpx.post(f"{bot.server.url}/slack/other", content=b"x").status_code == 404
    challenge = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
    response = httpx.post(
        bot.events_url, content=challenge, headers=signed_headers(SECRET, challenge, "application/json")
    )
    assert response.status_code == 200 and response.json() == {"challenge": "abc123"}
    ssl = "ssl_check=1&token=t"
    response = httpx.post(bot.events_url, content=ssl, headers=signed_headers(SECRET, ssl, interactions.FORM))
    assert response.status_code == 200 and response.text == ""
    assert _state(bot) == before


def test_the_network_guard_refuses_non_loopback(loopback_only: list[object]) -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("10.255.255.1", 443))
    loopback_only.clear()  # the guard itself worked; nothing else may trip it


def test_every_web_api_call_reached_the_standin(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    bot.click(ALICE, "npo_like", message)
    wait_for(lambda: bot.standin.calls("chat.update"))
    methods = {c.method for c in bot.standin.calls()}
    assert {"chat.postMessage", "chat.update"} <= methods
    assert "auth.test" not in methods  # custom authorize: Bolt never asks slack.com who it is
