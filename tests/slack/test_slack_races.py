"""Concurrent paths on one recommendation, over the real HTTP server, a real SQLite file and the stand-in: a click
racing the skip sweeper, an override submitted after the recommendation ended or was skipped, answers given while
the message's update is in flight, a changed answer racing a mute, an outcome reported twice at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from slack_testing import ALICE, BOB, MALLORY, SECRET, BotUnderTest, alertmanager_notification, prediction, wait_for

from bot.jobs.skips import sweep_skips
from bot.slack.blocks import (
    ACTION_CONFIRM_FAULT,
    ACTION_FALSE_ALARM,
    ACTION_LIKE,
    ACTION_NEUTRAL,
    ACTION_OVERRIDE,
)
from npo.types import FeedbackKind


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` on as many threads, released at once by a barrier; their results in order."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        gate.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _settled(bot: BotUnderTest) -> None:
    """Wait until the outbox holds nothing pending (every update sent)."""
    wait_for(lambda: not bot.bot.store.outbox("pending"))


def _block(bot: BotUnderTest, message: tuple[str, str], block_id: str) -> dict[str, Any] | None:
    return next((b for b in bot.standin.message(*message).blocks if b.get("block_id") == block_id), None)


def _answers_text(bot: BotUnderTest, message: tuple[str, str]) -> str:
    block = _block(bot, message, "npo_answers")
    return "" if block is None else str(block["text"]["text"])


def _sent(bot: BotUnderTest, n: int) -> None:
    wait_for(lambda: len([i for i in bot.bot.store.outbox("sent") if i.kind == "recommendation"]) >= n)


def _surface_many(bot: BotUnderTest, n: int, prefix: str) -> dict[str, tuple[str, str]]:
    pids = [f"{prefix}{i}" for i in range(n)]
    response = bot.ingest([prediction(pid, target=f"{prefix}-node-{i}") for i, pid in enumerate(pids)])
    assert response.status_code == 200, response.text
    return {pid: bot.posted(pid) for pid in pids}


@pytest.mark.parametrize("round_", range(8))
def test_a_click_racing_the_skip_sweeper_is_recorded_once_and_the_message_agrees(
    bot: BotUnderTest, round_: int
) -> None:
    messages = _surface_many(bot, 4, f"r{round_}s")
    _sent(bot, len(messages))
    store, wake = bot.bot.store, bot.bot.worker.wake
    clicks = [lambda m=m: bot.click(ALICE, ACTION_LIKE, m).status_code for m in messages.values()]
    results = _together(*clicks, lambda: sweep_skips(store, now=time.time(), timeout_s=0, on_enqueue=wake))
    assert results[:-1] == [200] * len(messages)
    _settled(bot)
    for pid, message in messages.items():
        log = [(a.event.operator, a.event.kind.value) for a in store.feedback_log(prediction_id=pid)]
        assert log in ([(ALICE, "like")], [("system", "skipped"), (ALICE, "like")]), log
        view = bot.bot.service.recommendation(pid)
        assert view is not None and [(a.operator, a.kind.value) for a in view.answers] == [(ALICE, "like")]
        assert _block(bot, message, "npo_skipped") is None
        assert "Like (1)" in str(bot.standin.message(*message).blocks)
    assert len(store.alignment_samples()) == len(messages)


def test_a_click_waiting_for_the_sweeps_transaction_replaces_the_skip(bot: BotUnderTest) -> None:
    """The sweep lists the recommendations, then the clicks are sent from inside its first transaction (holding
    the write lock): each click's transaction starts before that skip commits, and races the later ones."""
    messages = _surface_many(bot, 4, "w")
    _sent(bot, len(messages))
    store, wake = bot.bot.store, bot.bot.worker.wake
    started: list[threading.Thread] = []
    answers: list[int] = []

    def clock() -> float:
        if not started:
            for m in messages.values():
                t = threading.Thread(target=lambda m=m: answers.append(bot.click(ALICE, ACTION_LIKE, m).status_code))
                t.start()
                started.append(t)
        return time.time()

    swept = sweep_skips(store, now=time.time(), timeout_s=0, on_enqueue=wake, clock=clock)
    for t in started:
        t.join()
    assert answers == [200] * len(messages) and swept.skipped
    _settled(bot)
    for pid, message in messages.items():
        view = bot.bot.service.recommendation(pid)
        assert view is not None and [(a.operator, a.kind.value) for a in view.answers] == [(ALICE, "like")]
        assert _block(bot, message, "npo_skipped") is None and "Like (1)" in str(bot.standin.message(*message).blocks)
    assert len(store.alignment_samples()) == len(messages)


def _open_override(bot: BotUnderTest, user: str, message: tuple[str, str]) -> str:
    before = {v["id"] for v in bot.standin.views()}
    assert bot.click(user, ACTION_OVERRIDE, message).status_code == 200
    view = wait_for(lambda: next((v for v in bot.standin.views() if v["id"] not in before), None))
    return str(view["id"])


def _submit(bot: BotUnderTest, user: str, view_id: str) -> httpx.Response:
    values = {"reason": {"reason": "already_handled"}, "details": {"details": "swapped last night"}}
    return bot.standin.submit_view(bot.events_url, SECRET, user_id=user, view_id=view_id, values=values)


def _ingest_outcome(bot: BotUnderTest, pid: str) -> httpx.Response:
    return bot.ingest({"prediction_id": pid, "real_fault": False}, "/api/v1/outcomes")


@pytest.mark.parametrize("ended", ["outcome", "outcome_button", "skipped"])
@pytest.mark.parametrize("concurrent", [False, True])
def test_an_override_submitted_as_or_after_the_recommendation_ended_is_stored_once_and_shown(
    bot: BotUnderTest, ended: str, concurrent: bool
) -> None:
    message = bot.surface("o1")
    _sent(bot, 1)
    view_id = _open_override(bot, ALICE, message)
    store, wake = bot.bot.store, bot.bot.worker.wake

    def end() -> Any:
        if ended == "outcome":
            return _ingest_outcome(bot, "o1").status_code
        if ended == "outcome_button":
            return bot.click(BOB, ACTION_FALSE_ALARM, message).status_code
        return sweep_skips(store, now=time.time(), timeout_s=0, on_enqueue=wake).skipped

    if concurrent:
        submitted, _ = _together(lambda: _submit(bot, ALICE, view_id), end)
    else:
        end()
        submitted = _submit(bot, ALICE, view_id)
    assert submitted.status_code == 200, submitted.text
    assert not submitted.content or "errors" not in submitted.json(), submitted.text
    _settled(bot)
    log = [(a.event.operator, a.event.kind.value) for a in store.feedback_log(prediction_id="o1")]
    assert log.count((ALICE, "override")) == 1, log
    view = bot.bot.service.recommendation("o1")
    assert view is not None
    assert [(a.operator, a.kind.value) for a in view.answers] == [(ALICE, "override")]
    assert "*override* by <@U0ALICE>" in _answers_text(bot, message)
    assert _block(bot, message, "npo_skipped") is None
    if ended != "skipped":
        assert _block(bot, message, "npo_resolved") is not None
        assert bot.counts()["outcomes"] == 1


def _am_firing(fingerprint: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "DiskWillFail", "instance": f"{fingerprint}-n1:9100", "severity": "critical"},
        "annotations": {"summary": "the disk will fail", "action": "drain"},
        "startsAt": "2025-03-26T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local:9090/graph",
        "fingerprint": fingerprint,
    }


def _am_post(bot: BotUnderTest, body: dict[str, Any]) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    response = httpx.post(f"{bot.server.url}/api/v1/alertmanager", json=body, headers=auth, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("concurrent", [False, True])
def test_an_override_submitted_as_or_after_its_alert_resolved_is_stored_once_and_shown(
    bot: BotUnderTest, concurrent: bool
) -> None:
    fired = _am_post(bot, alertmanager_notification(_am_firing("f1")))
    pid = fired["results"][0]["id"]
    message = bot.posted(pid)
    _sent(bot, 1)
    view_id = _open_override(bot, ALICE, message)
    resolved = _am_firing("f1") | {"status": "resolved", "endsAt": "2025-03-26T11:00:00Z"}
    body = alertmanager_notification(resolved) | {"status": "resolved"}
    if concurrent:
        submitted, _ = _together(lambda: _submit(bot, ALICE, view_id), lambda: _am_post(bot, body))
    else:
        _am_post(bot, body)
        submitted = _submit(bot, ALICE, view_id)
    assert submitted.status_code == 200
    _settled(bot)
    view = bot.bot.service.recommendation(pid)
    assert view is not None and view.closed_at is not None
    assert [(a.operator, a.kind.value) for a in view.answers] == [(ALICE, "override")]
    assert "*override* by <@U0ALICE>" in _answers_text(bot, message)
    assert _block(bot, message, "npo_closed") is not None


@pytest.mark.parametrize("round_", range(4))
def test_answers_given_together_while_the_first_update_is_in_flight_are_all_shown(
    bot: BotUnderTest, round_: int
) -> None:
    message = bot.surface(f"u{round_}")
    _sent(bot, 1)
    bot.standin.faults.delay("chat.update", 1.0, times=1)
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    wait_for(lambda: not bot.standin.faults.pending("chat.update"))  # the first update is in flight
    codes = _together(
        lambda: bot.click(BOB, ACTION_NEUTRAL, message).status_code,
        lambda: bot.click(MALLORY, ACTION_LIKE, message).status_code,
    )
    assert codes == [200, 200]
    _settled(bot)
    text = _answers_text(bot, message)
    assert "<@U0ALICE>" in text and "<@U0BOB>" in text, text
    assert "Neutral (1)" in str(bot.standin.message(*message).blocks)


@pytest.mark.parametrize("round_", range(6))
def test_a_changed_answer_racing_a_mute_of_its_key(bot: BotUnderTest, round_: int) -> None:
    message = bot.surface(f"m{round_}")
    _sent(bot, 1)
    key = bot.bot.store.decision(f"m{round_}").key  # type: ignore[union-attr]
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    view_id = _open_override(bot, ALICE, message)

    def mute() -> int:
        url = bot.events_url
        return bot.standin.slash_command(url, SECRET, "/npo", f"mute {key} 1h racing", BOB, message[0]).status_code

    submitted, muted = _together(lambda: _submit(bot, ALICE, view_id), mute)
    assert submitted.status_code == 200 and muted == 200
    _settled(bot)
    store = bot.bot.store
    log = [(a.event.kind.value, a.replaces) for a in store.feedback_log(prediction_id=f"m{round_}")]
    assert [k for k, _ in log] == ["like", "override"] and log[1][1] is not None, log
    view = bot.bot.service.recommendation(f"m{round_}")
    assert view is not None and [(a.operator, a.kind.value) for a in view.answers] == [(ALICE, "override")]
    assert "Override (1)" in str(bot.standin.message(*message).blocks)
    assert "Like (1)" not in str(bot.standin.message(*message).blocks)
    wait_for(lambda: len(store.audit_entries(kind="policy_mute")) == 1)
    assert [s.y for s in store.alignment_samples()] == [store.config.codes.code(FeedbackKind.OVERRIDE)]


@pytest.mark.parametrize("same", [True, False])
def test_an_outcome_reported_at_once_by_alertmanager_and_the_button_is_recorded_once(
    bot: BotUnderTest, same: bool
) -> None:
    fired = _am_post(bot, alertmanager_notification(_am_firing("g1")))
    pid = fired["results"][0]["id"]
    message = bot.posted(pid)
    _sent(bot, 1)
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
    resolved = _am_firing("g1") | {"status": "resolved", "endsAt": "2025-03-26T11:00:00Z"}
    resolved["annotations"] = resolved["annotations"] | {"npo_outcome": "real_fault"}
    body = alertmanager_notification(resolved) | {"status": "resolved"}
    button = ACTION_CONFIRM_FAULT if same else ACTION_FALSE_ALARM
    _, clicked = _together(lambda: _am_post(bot, body), lambda: bot.click(BOB, button, message).status_code)
    assert clicked == 200
    _settled(bot)
    store = bot.bot.store
    assert bot.counts()["outcomes"] == 1
    assert len(store.audit_entries(kind="outcome")) == 1
    outcome = store.outcome(pid)
    assert outcome is not None
    block = _block(bot, message, "npo_resolved")
    assert block is not None
    shown = block["elements"][0]["text"]
    assert ("Confirmed fault" in shown) == outcome.real_fault
    assert store.trust()[ALICE].n_outcome == 1  # Alice's answer calibrated once
