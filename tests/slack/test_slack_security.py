"""Signed-request verification, replays, concurrency, authorisation and the loopback guard — over real HTTP."""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from slack_testing import ALICE, BOB, INCIDENT, MALLORY, SECRET, BotUnderTest, prediction, wait_for

from bot.log_throttle import REFUSED_LINES_PER_MINUTE
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


def _bad_requests(body: str) -> dict[str, Callable[[], tuple[str, dict[str, str]]]]:
    """Each bad request by name, made when called: right before it is sent, so "301 s ahead" is not made good by the
    time the requests before it took on a slow machine."""

    def ahead() -> tuple[str, dict[str, str]]:
        # Bolt compares against float time.time(): round *up* so "301 s ahead" stays > 300 s by the time it arrives.
        return body, signed_headers(SECRET, body, interactions.FORM, math.ceil(time.time()) + 301)

    def good() -> dict[str, str]:
        return signed_headers(SECRET, body, interactions.FORM)

    return {
        "forged signature": lambda: (body, signed_headers("not-the-secret-at-all", body, interactions.FORM)),
        "body altered after signing": lambda: (body.replace("npo_like", "npo_neutral"), good()),
        "301 s old": lambda: (body, signed_headers(SECRET, body, interactions.FORM, int(time.time()) - 301)),
        "301 s ahead": ahead,
        "missing signature": lambda: (body, {k: v for k, v in good().items() if k != "X-Slack-Signature"}),
        "missing timestamp": lambda: (body, {k: v for k, v in good().items() if k != "X-Slack-Request-Timestamp"}),
        "missing both": lambda: (body, {"Content-Type": interactions.FORM}),
        "non-numeric timestamp": lambda: (body, good() | {"X-Slack-Request-Timestamp": "abc"}),
        "4,301-digit timestamp": lambda: (body, good() | {"X-Slack-Request-Timestamp": "1" * 4301}),
    }


def test_unverifiable_requests_are_refused_and_change_nothing(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    assert "npo_like" in body
    for name, make in _bad_requests(body).items():
        before = _state(bot)
        sent, headers = make()
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
    body = bot.click_body(ALICE, "npo_like", message)
    for _ in range(5):
        stamp = math.ceil(time.time()) - 299  # rounded up: at least 1 s before the request is more than 300 s old
        response = bot.send_signed(body, timestamp=stamp)
        if response.status_code == 200:
            break
        # Refused: right only if the answer came more than 300 s after the stamp, so the bot may have read its clock
        # then (a machine slower than that second); try again with a new stamp.
        assert time.time() > stamp + 300, response.text
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
    assert bot.counts() == once | {"processed_requests": once["processed_requests"] + 1}  # its request id, only
    assert bot.click(ALICE, "npo_neutral", message).status_code == 200
    log = bot.bot.store.feedback_log(prediction_id="p1")
    assert [f.event.kind.value for f in log] == ["like", "neutral"] and log[1].replaces == log[0].event.request_id
    assert bot.counts()["key_n"] == once["key_n"]  # replaced, not counted twice


def test_a_replayed_repeat_of_an_answer_does_not_undo_a_later_change(bot: BotUnderTest) -> None:
    """Like, Like again (a new click: stored nothing), then Neutral. The second Like replayed as captured — same
    body, same signature, inside Slack's five minutes — was applied then, and Alice's answer was Like again. Its
    request id is remembered: the replay is a duplicate, and her answer stays Neutral."""
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    again = bot.click_body(ALICE, "npo_like", message)
    captured = signed_headers(SECRET, again, interactions.FORM)
    assert bot.send_signed(again, headers=captured).status_code == 200
    assert bot.click(ALICE, "npo_neutral", message).status_code == 200
    settled = bot.counts()
    assert bot.send_signed(again, headers=captured).status_code == 200  # the replay
    assert bot.counts() == settled
    log = bot.bot.store.feedback_log(prediction_id="p1")
    assert [f.event.kind.value for f in log] == ["like", "neutral"]
    with bot.bot.store.transaction() as tx:
        current = tx.effective_feedback("p1", ALICE)
    assert current is not None and current.event.kind.value == "neutral"


def test_unauthorised_clicker_gets_an_ephemeral_refusal(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    before = bot.counts()
    response = bot.click(MALLORY, "npo_like", message)
    assert response.status_code == 200
    ephemeral = wait_for(lambda: bot.standin.calls("chat.postEphemeral"))
    assert ephemeral[0].body["user"] == MALLORY
    assert bot.counts()["feedback"] == before["feedback"] == 0
    assert not bot.standin.calls("chat.update")


def test_a_non_responder_can_neither_record_an_outcome_nor_open_the_override_form(bot: BotUnderTest) -> None:
    """The outcome buttons and Override check the clicker as Like does: an outcome recorded by anyone in the channel
    would feed the miss term, m(k) and every answerer's trust, and the form would let them override."""
    first, second = bot.surface("p1"), bot.surface("p2")
    before = bot.counts()
    for action_id, message in (("npo_override", first), ("npo_confirm_fault", first), ("npo_false_alarm", second)):
        assert bot.click(MALLORY, action_id, message).status_code == 200
    refusals = wait_for(lambda: bot.standin.calls("chat.postEphemeral")[2:] and bot.standin.calls("chat.postEphemeral"))
    assert [c.body["user"] for c in refusals] == [MALLORY] * 3
    time.sleep(0.3)  # anything else the clicks set off is done by now
    assert bot.counts() == before and before["outcomes"] == 0
    assert not bot.standin.calls("views.open") and not bot.standin.calls("chat.update")


def test_unknown_paths_url_verification_and_ssl_check(bot: BotUnderTest) -> None:
    before = _state(bot)
    assert httpx.get(bot.events_url).status_code == 405
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


def _signed_click(bot: BotUnderTest, user: str, action_id: str, value: str, message: tuple[str, str]) -> int:
    """A click signed as Slack signs it, on ``message``, with the button's value (a prediction id) ``value``:
    what someone holding the signing secret could send, or a client showing an old message."""
    return bot.send_signed(bot.click_body(user, action_id, message, value=value, force=True)).status_code


def test_an_outcome_button_naming_a_prediction_never_surfaced_records_nothing(bot: BotUnderTest) -> None:
    """Like and Override refuse a prediction that was not surfaced; the outcome buttons recorded an outcome for it
    (and fed the miss term and m(k) with it). Only a surfaced recommendation shows them: refused, with a word."""
    message = bot.surface("p1")
    assert bot.ingest(prediction("q1", fault_type="psu", confidence=0.1)).json()["verdict"] == "suppress"
    before = bot.counts()
    assert _signed_click(bot, ALICE, "npo_confirm_fault", "q1", message) == 200
    told = wait_for(lambda: [m for m in bot.standin.messages(INCIDENT, include_ephemeral=True) if m.ephemeral_to])
    assert "not recorded" in told[0].text and "was not surfaced" in told[0].text
    assert bot.counts() == before


def test_an_override_button_naming_a_prediction_never_surfaced_opens_no_form(bot: BotUnderTest) -> None:
    """Override opened its reason form for a prediction that was not surfaced, and the form could then never be
    submitted ("Not recorded: … was not surfaced" under the reason, whatever was picked). Like tells the person at
    the click; Override now does the same and opens nothing."""
    message = bot.surface("p1")
    assert bot.ingest(prediction("q1", fault_type="psu", confidence=0.1)).json()["verdict"] == "suppress"
    before = bot.counts()
    assert _signed_click(bot, ALICE, "npo_override", "q1", message) == 200
    told = wait_for(lambda: [m for m in bot.standin.messages(INCIDENT, include_ephemeral=True) if m.ephemeral_to])
    assert "could not be recorded" in told[0].text and "was not surfaced" in told[0].text
    assert bot.standin.views() == [] and bot.standin.calls("views.open") == []
    assert bot.counts() == before


def test_an_answer_after_the_outcome_earns_no_peer_agreement(bot: BotUnderTest) -> None:
    """An answer given once the outcome is known (a stale client still showing the buttons) earns no agreement:
    with the outcome (only answers before it are credited) and, now, with the peers either — the consensus then
    mostly says what the outcome did. The answer itself still counts."""
    messages = [bot.surface(f"p{i}") for i in range(7)]
    for message in messages[:5]:  # the key's consensus: five likes
        assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert bot.ingest({"prediction_id": "p5", "real_fault": True}, path="/api/v1/outcomes").status_code == 200
    assert _signed_click(bot, BOB, "npo_like", "p5", messages[5]) == 200  # after the outcome
    trust = bot.bot.store.trust()
    assert BOB not in trust or trust[BOB].n_peer == 0
    assert [f.event.operator for f in bot.bot.store.feedback_log(prediction_id="p5")] == [BOB]  # still recorded
    assert _signed_click(bot, BOB, "npo_like", "p6", messages[6]) == 200  # no outcome yet: credited
    assert bot.bot.store.trust()[BOB].n_peer == 1


def test_a_click_naming_another_message_updates_only_its_own(bot: BotUnderTest) -> None:
    """The message a click updates is the one stored when its recommendation was posted, not the one the request
    names: a Like on p1 sent with p2's message as its container overwrote p2's message with p1's."""
    first, second = bot.surface("p1"), bot.surface("p2", target="r12-other")
    assert _signed_click(bot, ALICE, "npo_like", "p1", second) == 200
    wait_for(lambda: "*like*" in str(bot.standin.message(*first).blocks))  # p1's own message shows the answer
    time.sleep(1.2)  # the update interval: any further update would be out by now
    shown = str(bot.standin.message(*second).blocks)
    assert "r12-other" in shown and "*like*" not in shown  # p2's message is p2's, unanswered


def test_an_event_no_listener_handles_is_acknowledged_and_stores_nothing(bot: BotUnderTest) -> None:
    """A ``reaction_added`` event (not subscribed: no listener) got 404 but its id was claimed, so Slack's retry
    got 200 and a row stayed behind. It is acknowledged and ignored now, storing nothing."""
    before = bot.counts()
    event = {"type": "reaction_added", "user": ALICE, "reaction": "eyes", "item": {"type": "message"}}
    first = bot.standin.send_event(bot.events_url, SECRET, event, event_id="Ev0404")
    retry = bot.standin.send_event(bot.events_url, SECRET, event, event_id="Ev0404", retry_num=1)
    assert first.status_code == retry.status_code == 200
    assert bot.counts() == before
    home = {"type": "app_home_opened", "user": {"id": ALICE}, "tab": "home"}  # a user that is not an id
    assert bot.standin.send_event(bot.events_url, SECRET, home, event_id="Ev0405").status_code == 200
    time.sleep(0.3)
    assert not bot.standin.calls("views.publish")


def test_slack_events_with_a_trailing_slash_is_the_route_and_no_path_is_redirected(bot: BotUnderTest) -> None:
    """A Request URL entered with a trailing slash is served, not answered 307 with a ``Location`` built from the
    request's Host header; a wrong method gets 405 ``Allow: POST``, and a probe's path with a slash 404, as JSON."""
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    headers = signed_headers(SECRET, body, interactions.FORM) | {"Host": "attacker.example"}
    response = httpx.post(f"{bot.events_url}/", content=body.encode(), headers=headers)
    assert response.status_code == 200, (response.status_code, response.headers)
    assert bot.counts()["feedback"] == 1
    forged = signed_headers("not-the-secret-at-all", body, interactions.FORM)
    assert httpx.post(f"{bot.events_url}/", content=body.encode(), headers=forged).status_code == 401
    for path in ("/healthz/", "/livez/", "/metrics/"):
        for method in ("GET", "POST"):
            response = httpx.request(method, f"{bot.server.url}{path}", headers={"Host": "attacker.example"})
            assert response.status_code == 404 and "location" not in response.headers, (method, path)
            assert response.json()["field"] == "(path)"
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        response = httpx.request(method, bot.events_url)
        assert response.status_code == 405 and response.headers["allow"] == "POST", method
        if method != "HEAD":
            assert response.json()["field"] == "(method)"
    assert bot.counts()["feedback"] == 1


def test_a_refused_request_is_logged_in_one_short_line_without_its_body(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who can reach ``/slack/events`` can send a body with a bad signature. Bolt logged such a body whole at
    INFO, newlines included: the sender chose lines of the log (here one that looks like the bot's own). NPO logs
    one line instead: why (so an operator can tell a wrong secret from a clock that is off) and the body's size."""
    caplog.set_level(logging.DEBUG)
    forged = "FORGED-LINE"
    body = f"payload=%7B%7D&x=1\n2026-01-01 00:00:00,000 ERROR bot.service: {forged} database lost\nend"
    now = int(time.time())
    # The stale request's age is read when it arrives, a second or two after ``now`` on a slow machine.
    sent = {
        r"invalid signature \(check SLACK_SIGNING_SECRET\)": signed_headers("not-the-secret", body, interactions.FORM),
        r"stale signature \(timestamp 60\d s old": signed_headers(SECRET, body, interactions.FORM, now - 600),
        "no X-Slack-Signature or X-Slack-Request-Timestamp": {"Content-Type": interactions.FORM},
    }
    for reason, headers in sent.items():
        caplog.clear()
        response = httpx.post(bot.events_url, content=body.encode(), headers=headers)
        assert response.status_code == 401 and response.json() == {"error": "invalid request"}, reason
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage() or "signature" in r.getMessage()]
        assert len(lines) == 1 and re.match(f"refused a Slack request: {reason}", lines[0]), (reason, lines)
        assert lines[0].endswith(f"({len(body.encode())} bytes)"), lines
        assert not any(forged in r.getMessage() or "payload" in r.getMessage() for r in caplog.records), caplog.text
        assert not any("\n" in r.getMessage() for r in caplog.records if r.name.startswith(("bot", "slack")))
    # A request signed right is still let through (the check sits where Bolt's did).
    assert bot.send_signed(bot.click_body(ALICE, "npo_like", bot.surface("p1"))).status_code == 200


def test_a_flood_of_refused_requests_writes_a_bounded_number_of_log_lines(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused request was one log line: anyone who can reach ``/slack/events`` could fill the disk with them
    and bury the real errors. Now at most 20 a minute are written; every request is still refused (and counted in
    ``/metrics``)."""
    caplog.set_level(logging.INFO)
    body = "payload=%7B%7D"
    with httpx.Client() as client:
        for _ in range(45):
            response = client.post(
                bot.events_url, content=body, headers=signed_headers("not-the-secret", body, interactions.FORM)
            )
            assert response.status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused a Slack request")]
    assert len(lines) == REFUSED_LINES_PER_MINUTE, lines
    assert bot.counts()["feedback"] == 0


def test_a_signature_with_non_ascii_bytes_is_refused_401_and_logged_in_one_line(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """The signature header arrives decoded as latin-1; slack-sdk compared it with ``hmac.compare_digest``, which
    raises on a non-ASCII string: anyone got a 500 and an ERROR traceback in the log, past the refusal lines' limit.
    It is refused like any other wrong signature."""
    caplog.set_level(logging.DEBUG)
    message = bot.surface("p1")
    body = bot.click_body(ALICE, "npo_like", message)
    good = signed_headers(SECRET, body, interactions.FORM)
    before = _state(bot)
    for signature in (b"v0=\xe9", b"v0=" + good["X-Slack-Signature"][3:-1].encode() + b"\xff", b"\xe9"):
        caplog.clear()
        headers = [(k.encode(), v.encode()) for k, v in good.items() if k != "X-Slack-Signature"]
        response = httpx.post(
            bot.events_url, content=body.encode(), headers=[*headers, (b"X-Slack-Signature", signature)]
        )
        assert response.status_code == 401 and response.json() == {"error": "invalid request"}, signature
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused a Slack request")]
        assert lines == [f"refused a Slack request: invalid signature (check SLACK_SIGNING_SECRET) ({len(body)} bytes)"]
    time.sleep(0.05)
    assert _state(bot) == before
    assert bot.send_signed(body, headers=good).status_code == 200  # the right signature still passes
