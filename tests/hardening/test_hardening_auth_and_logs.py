"""Ingest authentication (missing, wrong, near-miss tokens; a constant-time comparison) and secrets in logs: the
bot token, the signing secret, the ingest token, and the verification token and response URLs of Slack's payloads
never appear in anything the service logs, at any level,
whether requests succeed, are refused, or fail against Slack — in process and from a real ``npo-bot serve``."""

from __future__ import annotations

import hmac
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hardening_testing import WriteWatch
from slack_testing import ALICE, INCIDENT, MALLORY, SECRET, TOKEN, BotUnderTest, make_settings, prediction, wait_for

from bot.app import build_bot
from bot.standin import StandIn, interactions
from bot.standin.signing import signed_headers
from bot.standin.store import VERIFICATION_TOKEN

ROOT = Path(__file__).resolve().parents[2]
INGEST_ROUTES = ("/api/v1/predictions", "/api/v1/alertmanager", "/api/v1/outcomes")


def _near_misses(token: str) -> dict[str, dict[str, Any]]:
    """Authorization headers that must all be refused."""
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "scheme only": {"Authorization": "Bearer"},
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "token without scheme": {"Authorization": token},
        "basic scheme": {"Authorization": f"Basic {token}"},
        "prefix of the token": {"Authorization": f"Bearer {token[:-1]}"},
        "token plus a character": {"Authorization": f"Bearer {token}x"},
        "token in another case": {"Authorization": f"Bearer {token.upper()}"},
        "two tokens": {"Authorization": f"Bearer {token} {token}"},
        "non-ASCII": {"Authorization": "Bearer t\u00f6ken".encode()},
    }


def test_ingest_refuses_every_wrong_authorization_on_every_route_and_stores_nothing(bot: BotUnderTest) -> None:
    token = bot.bot.settings.ingest_token
    watch = WriteWatch(bot.bot.settings.db_path)
    try:
        for path in INGEST_ROUTES:
            for name, headers in _near_misses(token).items():
                before = watch.counts()  # not data_version: the scheduler and the worker may write meanwhile
                response = httpx.post(f"{bot.server.url}{path}", json=prediction("p1"), headers=headers)
                assert watch.counts() == before, f"{name} on {path}"
                assert response.status_code == 401, (name, path, response.text)
                assert response.json()["field"] == "Authorization"
                assert token not in response.text
            query = httpx.post(f"{bot.server.url}{path}?token={token}", json=prediction("p1"))
            assert query.status_code == 401  # the token is only accepted in the header
    finally:
        watch.close()
    assert bot.counts()["predictions"] == 0


def test_auth_is_checked_before_the_body_is_read(bot: BotUnderTest) -> None:
    huge = b"[" * (bot.bot.settings.max_body_bytes + 1)  # would be 413 (or 400) if it were read
    for path in INGEST_ROUTES:
        response = httpx.post(f"{bot.server.url}{path}", content=huge, headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401


def test_the_scheme_is_case_insensitive_and_the_right_token_is_accepted(bot: BotUnderTest) -> None:
    token = bot.bot.settings.ingest_token
    for i, scheme in enumerate(("Bearer", "bearer", "BEARER")):
        response = httpx.post(
            f"{bot.server.url}/api/v1/predictions",
            json=prediction(f"p{i}", target=f"host-{i}"),
            headers={"Authorization": f"{scheme} {token}"},
        )
        assert response.status_code == 200, (scheme, response.text)


def test_every_token_comparison_is_constant_time(bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token is compared with ``hmac.compare_digest`` (time independent of where the first difference is),
    for right, wrong and missing tokens alike, and never with ``==``."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = bot.bot.settings.ingest_token
    attempts = {"right": f"Bearer {token}", "wrong": "Bearer x", "prefix": f"Bearer {token[:5]}", "missing": None}
    for name, value in attempts.items():
        calls.clear()
        headers = {} if value is None else {"Authorization": value}
        expected = 200 if name == "right" else 401
        response = httpx.post(f"{bot.server.url}/api/v1/outcomes", json=[], headers=headers)
        assert response.status_code in (expected, 422), name  # 422: the empty list, once authorised
        assert any(token.encode() in pair for pair in calls), f"{name}: not compared with compare_digest"
        assert all(len(pair) == 2 for pair in calls)


# -- secrets in logs ---------------------------------------------------------------------------------------------
def _exercise(bot: BotUnderTest) -> None:
    """Everything that logs: accepted, refused and failed requests, deliveries that are rate-limited, fail for
    good and time out, refused clicks, events, commands."""
    ingest_token = bot.bot.settings.ingest_token
    url = bot.server.url
    message = bot.surface("p1")
    bot.standin.faults.rate_limit("chat.update", times=1, retry_after=1)
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert bot.click(MALLORY, "npo_like", message).status_code == 200  # refused: not a responder
    bot.standin.faults.server_error("chat.postMessage", times=1)
    bot.ingest(prediction("p2", target="host-2"))
    bot.standin.faults.error("chat.postMessage", "invalid_auth", times=1)
    bot.ingest(prediction("p3", target="host-3"))
    httpx.post(f"{url}/api/v1/predictions", json=prediction("p4"), headers={"Authorization": f"Bearer {TOKEN}"})
    httpx.post(f"{url}/api/v1/predictions", content=b"{", headers={"Authorization": f"Bearer {ingest_token}"})
    body = bot.click_body(ALICE, "npo_neutral", message)
    bot.send_signed(body, secret="a-forged-secret")
    bot.send_signed(body, timestamp=int(time.time()) - 3600)
    bot.standin.send_event(bot.events_url, SECRET, {"type": "app_home_opened", "user": ALICE, "tab": "home"})
    bot.standin.slash_command(bot.events_url, SECRET, "/npo", "status", ALICE, INCIDENT)
    bot.standin.slash_command(bot.events_url, SECRET, "/npo", "summary", ALICE, INCIDENT)  # posted to its URL
    httpx.post(bot.events_url, content=b"payload=%7B", headers=signed_headers(SECRET, "payload=%7B", interactions.FORM))
    wait_for(lambda: bot.bot.store.outbox("failed"))
    wait_for(lambda: bot.standin.calls("chat.update"))
    wait_for(lambda: bot.standin.calls("response_url"))


def _secrets(bot: BotUnderTest) -> dict[str, str]:
    s = bot.bot.settings
    return {
        "bot token": s.slack_bot_token,
        "signing secret": s.slack_signing_secret,
        "ingest token": s.ingest_token,
        "verification token": VERIFICATION_TOKEN,  # in every click, command and event Slack sends
        "response_url": f"{bot.standin.url}/response",  # lets anyone post to the channel for a while
    }


def test_secrets_never_appear_in_the_logs_at_debug_level(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: bot, Bolt, slack_sdk, uvicorn, httpx, aiohttp
    _exercise(bot)
    records = caplog.records
    assert len(records) > 20  # the scenario did log (refusals, retries, the failure, requests)
    assert any(r.levelno >= logging.WARNING for r in records)
    text = "\n".join(
        [caplog.text, *(str(r.args) for r in records), *(r.exc_text or "" for r in records), *capfd.readouterr()]
    )
    for name, secret in _secrets(bot).items():
        assert secret not in text, f"the {name} appears in the logs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_secrets_never_appear_in_the_output_of_npo_bot_serve(tmp_path: Path, standin: StandIn) -> None:
    port = _free_port()
    query_token = "serve-poll-query-token-4242"  # shown in the start-up line and each failed poll's before
    secrets = {
        "SLACK_BOT_TOKEN": "xoxb-serve-secret-token-4242",
        "SLACK_SIGNING_SECRET": "serve-signing-secret-4242",
        "NPO_INGEST_TOKEN": "serve-ingest-token-4242",
        "NPO_POLL_TOKEN": "serve-poll-token-4242",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))} | secrets
    env |= {
        "SLACK_API_URL": standin.api_url,
        "NPO_DB_PATH": str(tmp_path / "serve.db"),
        "NPO_PORT": str(port),
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
        "NPO_RESPONDERS": ALICE,
        "NPO_POLL_URL": f"{standin.url}/no-such-feed?since=1h&access_token={query_token}",
        "NPO_POLL_INTERVAL_S": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--env-file", os.devnull],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    response_url = "https://hooks.slack.com/actions/T0SERVE/1234/response-url-secret"
    try:
        wait_for(lambda: _up(url), timeout=20)
        auth = {"Authorization": f"Bearer {secrets['NPO_INGEST_TOKEN']}"}
        assert httpx.post(f"{url}/api/v1/predictions", json=prediction("s1"), headers=auth).status_code == 200
        httpx.post(f"{url}/api/v1/predictions", json=prediction("s2"), headers={"Authorization": "Bearer wrong"})
        httpx.post(f"{url}/api/v1/predictions", content=b"{", headers=auth)
        standin.faults.error("chat.postMessage", "invalid_auth", times=None)
        httpx.post(f"{url}/api/v1/predictions", json=prediction("s3", target="host-s3"), headers=auth)
        body = "payload=%7B%7D"
        httpx.post(f"{url}/slack/events", content=body, headers=signed_headers("forged", body, interactions.FORM))
        # A click signed 10 minutes ago (the host's clock is off): refused, and logged in one line without its body.
        click = {
            "type": "block_actions",
            "user": {"id": ALICE},
            "token": VERIFICATION_TOKEN,
            "response_url": response_url,
            "actions": [{"action_id": "npo_like", "block_id": "npo_feedback", "type": "button", "value": "s1"}],
        }
        stale = signed_headers(
            secrets["SLACK_SIGNING_SECRET"], interactions.form_body(click), interactions.FORM, int(time.time()) - 600
        )
        refused = httpx.post(f"{url}/slack/events", content=interactions.form_body(click), headers=stale)
        assert refused.status_code == 401
        wait_for(lambda: standin.calls("chat.postMessage"))
        time.sleep(1.5)  # one failed poll of NPO_POLL_URL (404) and the failed delivery get logged
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert "Uvicorn running" in output or "serving on" in output, output
    assert "WARNING" in output or "ERROR" in output, output  # failures were logged
    # One line, no body; the age is read on arrival, a second or two after the timestamp was made on a slow machine.
    assert re.search(r"refused a Slack request: stale signature \(timestamp 60\d s old", output), output
    for name, secret in (secrets | {"verification token": VERIFICATION_TOKEN, "response_url": "T0SERVE"}).items():
        assert secret not in output, f"{name} appears in the output of npo-bot serve"
    assert query_token not in output, "the access_token of NPO_POLL_URL appears in the output of npo-bot serve"
    assert "/no-such-feed?since=1h&access_token=***" in output, output  # the URL is still named, masked


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_bot_token_in_the_environment_starts_without_bolts_token_unused_warning(
    tmp_path: Path, standin: StandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt reads SLACK_BOT_TOKEN from the environment itself and, given NPO's client too, warned at every start
    that the token "will be unused": alarming, and untrue (``authorize`` hands it to every request). A token set in
    the environment (a unit file, a container) is how many deployments run; the line is gone, the token used."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    built = build_bot(make_settings(tmp_path, standin), seed=1, run_worker=False)
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [w for w in warnings if "will be unused" in w], warnings
    finally:
        built.close()
