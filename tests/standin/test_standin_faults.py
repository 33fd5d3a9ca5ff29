"""Fault injection seen through slack_sdk: 429 + Retry-After, 5xx, ok:false, delays, disconnects, outages."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
from collections.abc import Callable

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from standin_testing import TOKEN

from bot.standin import FaultKind, StandIn


def test_429_is_returned_as_the_sdk_expects(standin: StandIn, client: WebClient) -> None:
    standin.faults.rate_limit("chat.postMessage", retry_after=1)
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="C1", text="x")
    response = info.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response["error"] == "ratelimited"
    assert standin.messages("C1") == []
    client.chat_postMessage(channel="C1", text="x")  # only the next call was limited
    assert len(standin.messages("C1")) == 1


def test_rate_limit_retry_handler_succeeds_after_retry_after(standin: StandIn) -> None:
    client = WebClient(
        base_url=standin.api_url, token=TOKEN, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)]
    )
    standin.faults.rate_limit("chat.postMessage", retry_after=1)
    started = time.monotonic()
    client.chat_postMessage(channel="C1", text="once")
    assert time.monotonic() - started >= 1.0
    assert [m.text for m in standin.messages("C1")] == ["once"]
    first, second = standin.calls("chat.postMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.monotonic - first.monotonic >= 1.0


def test_faults_apply_to_the_next_n_calls_of_one_method_only(standin: StandIn, client: WebClient) -> None:
    standin.faults.server_error("chat.postMessage", times=2, status=503)
    client.auth_test()
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="x")
        assert info.value.response.status_code == 503
    client.chat_postMessage(channel="C1", text="x")
    assert standin.faults.pending() == []


def test_a_fault_for_one_channel_is_taken_by_a_call_to_that_channel_only(standin: StandIn, client: WebClient) -> None:
    standin.faults.rate_limit("chat.postMessage", times=1, retry_after=7, channel="C1")
    client.chat_postMessage(channel="C2", text="other channel")  # passes the fault by
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="C1", text="x")
    assert info.value.response.status_code == 429 and info.value.response.headers["Retry-After"] == "7"
    client.chat_postMessage(channel="C1", text="y")  # taken once
    assert [m.text for m in standin.messages("C2")] == ["other channel"]
    assert [m.text for m in standin.messages("C1")] == ["y"]
    assert standin.faults.pending() == []


def test_error_injection_answers_ok_false_with_http_200(standin: StandIn, client: WebClient) -> None:
    standin.faults.error("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel="C1", text="x")
    assert info.value.response.status_code == 200
    assert info.value.response["error"] == "channel_not_found"
    assert standin.messages("C1") == []


def test_wildcard_and_permanent_faults_until_cleared(standin: StandIn, client: WebClient) -> None:
    standin.faults.server_error("*", times=None)
    calls: list[Callable[[], object]] = [client.auth_test, lambda: client.chat_postMessage(channel="C1", text="x")]
    for call in calls:
        with pytest.raises(SlackApiError):
            call()
    assert [f.kind for f in standin.faults.pending()] == [FaultKind.SERVER_ERROR]
    standin.faults.clear()
    client.auth_test()


def test_delay_holds_the_answer(standin: StandIn, client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C1", text="x")["ts"]
    standin.faults.delay("chat.update", 0.5, times=1)
    started = time.monotonic()
    client.chat_update(channel="C1", ts=ts, text="y")
    assert time.monotonic() - started >= 0.5
    assert standin.message("C1", ts).text == "y"


def test_delay_longer_than_the_client_timeout_is_a_timeout(standin: StandIn) -> None:
    impatient = WebClient(base_url=standin.api_url, token=TOKEN, timeout=1, retry_handlers=[])
    standin.faults.delay("auth.test", 3)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        impatient.auth_test()


def test_disconnect_without_answer(standin: StandIn, client: WebClient) -> None:
    standin.faults.disconnect("auth.test")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        client.auth_test()
    client.auth_test()


def test_outage_refuses_connections_and_recovers_on_the_same_port(standin: StandIn, client: WebClient) -> None:
    client.chat_postMessage(channel="C1", text="before")
    port = standin.port
    standin.stop()
    assert not standin.running
    with pytest.raises(urllib.error.URLError) as info:
        client.chat_postMessage(channel="C1", text="during")
    assert isinstance(info.value.reason, ConnectionRefusedError)

    standin.start()
    assert standin.port == port
    client.chat_postMessage(channel="C1", text="after")
    assert [m.text for m in standin.messages("C1")] == ["before", "after"]


def test_restart_works_repeatedly_right_after_traffic(standin: StandIn, client: WebClient) -> None:
    for i in range(3):
        client.chat_postMessage(channel="C1", text=f"m{i}")
        standin.stop()
        standin.start()
    assert len(standin.messages("C1")) == 3


def test_channel_rate_is_not_enforced_by_default(standin: StandIn, client: WebClient) -> None:
    for i in range(5):
        client.chat_postMessage(channel="C1", text=f"m{i}")
    assert len(standin.messages("C1")) == 5


def test_channel_rate_can_be_enforced() -> None:
    with StandIn(token=TOKEN, enforce_channel_rate=True) as strict:
        client = WebClient(base_url=strict.api_url, token=TOKEN, retry_handlers=[])
        client.chat_postMessage(channel="C1", text="first")
        client.chat_postMessage(channel="C2", text="other channel")
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="too soon")
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "1"
        time.sleep(1.0)
        client.chat_postMessage(channel="C1", text="later")
        assert [m.text for m in strict.messages("C1")] == ["first", "later"]


def test_invalid_fault_arguments_are_refused(standin: StandIn) -> None:
    with pytest.raises(ValueError, match="5xx"):
        standin.faults.server_error("auth.test", status=404)
    with pytest.raises(ValueError, match="times"):
        standin.faults.rate_limit("auth.test", times=0)


def test_a_lost_answer_carries_the_call_out_and_answers_nothing(standin: StandIn, client: WebClient) -> None:
    standin.faults.lose_answer("chat.postMessage")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.chat_postMessage(channel="C1", text="stored, unanswered")
    assert [m.text for m in standin.messages("C1")] == ["stored, unanswered"]
    (call,) = standin.calls("chat.postMessage")
    assert call.status == 0 and call.response is None
    assert client.chat_postMessage(channel="C1", text="answered")["ok"]  # only the next call
    assert len(standin.messages("C1")) == 2 and standin.faults.pending() == []
