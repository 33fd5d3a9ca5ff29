"""Life-cycle gaps over real HTTP: updates of a recommendation that was never posted, update coalescing, Events
API deduplication for every event, the predictions poller started by the server, and a restart that leaves
leased outbox messages behind."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from slack_testing import ALICE, BOB, INCIDENT, SECRET, BotUnderTest, make_settings, prediction, wait_for

from bot.app import build_bot
from bot.serve import ServerThread
from bot.standin import StandIn
from npo.types import FeedbackEvent, FeedbackKind


def _bot(settings: Any, standin: StandIn, *, run_worker: bool = True) -> BotUnderTest:
    built = build_bot(settings, seed=1, run_worker=run_worker)
    return BotUnderTest(built, ServerThread(built.asgi, loop="asyncio").start(), standin)


def _stop(under: BotUnderTest) -> None:
    under.server.stop()
    under.bot.close()


# -- updates of a recommendation whose post failed ------------------------------------------------------------
def test_update_of_a_recommendation_that_failed_to_post_is_failed_not_retried(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    bot.standin.faults.error("chat.postMessage", "channel_not_found", times=None)
    bot.ingest(prediction("p1"))
    wait_for(lambda: bot.bot.store.outbox("failed"))
    event = FeedbackEvent("p1", ALICE, FeedbackKind.LIKE, time.time(), request_id="r-p1-alice")
    with caplog.at_level(logging.ERROR, logger="bot.delivery"):
        assert bot.bot.service.record_click(event, None).status == "recorded"
        failed = wait_for(lambda: [i for i in bot.bot.store.outbox("failed") if i.kind == "update"])
    assert "never posted" in str(failed[0].last_error)
    assert failed[0].attempts == 1  # failed at the first look, not retried every 2 s
    assert not bot.bot.store.outbox("pending")
    assert not bot.standin.calls("chat.update")
    assert any("FAILED" in r.getMessage() and "update" in r.getMessage() for r in caplog.records)


# -- update coalescing ------------------------------------------------------------------------------------------
def test_a_burst_of_clicks_costs_at_most_two_chat_updates_and_the_last_shows_every_answer(bot: BotUnderTest) -> None:
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    wait_for(lambda: bot.standin.calls("chat.update"))  # the first update goes out at once
    assert bot.click(BOB, "npo_neutral", message).status_code == 200
    assert bot.click(ALICE, "npo_neutral", message).status_code == 200  # replaces Alice's Like
    wait_for(lambda: not bot.bot.store.outbox("pending"))
    updates = bot.standin.calls("chat.update")
    assert len(updates) == 2, [c.body for c in updates]
    assert updates[1].monotonic - updates[0].monotonic >= 0.9  # NPO_UPDATE_INTERVAL_S = 1 s
    assert bot.counts()["feedback"] == 3
    final = str(bot.standin.message(*message).blocks)
    assert ALICE in final and BOB in final


# -- Events API dedupe ------------------------------------------------------------------------------------------
def test_every_event_callback_is_processed_once_per_event_id(bot: BotUnderTest) -> None:
    home = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    assert bot.standin.send_event(bot.events_url, SECRET, home, event_id="Ev1").status_code == 200
    for n in (1, 2, 3):
        retry = bot.standin.send_event(bot.events_url, SECRET, home, event_id="Ev1", retry_num=n)
        assert retry.status_code == 200 and retry.text == ""
    assert bot.standin.send_event(bot.events_url, SECRET, home, event_id="Ev2").status_code == 200
    wait_for(lambda: len(bot.standin.calls("views.publish")) == 2)
    # An event type NPO has no listener for is acknowledged and ignored: nothing claimed, so nothing stored.
    other = {"type": "reaction_added", "user": BOB, "reaction": "eyes", "item": {"type": "message"}}
    assert bot.standin.send_event(bot.events_url, SECRET, other, event_id="Ev3").status_code == 200
    retry = bot.standin.send_event(bot.events_url, SECRET, other, event_id="Ev3", retry_num=1)
    assert retry.status_code == 200
    time.sleep(0.2)
    assert len(bot.standin.calls("views.publish")) == 2
    assert bot.counts()["processed_requests"] == 2


def test_a_forged_retry_is_refused_before_the_dedupe(bot: BotUnderTest) -> None:
    home = {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "home"}
    forged = bot.standin.send_event(bot.events_url, "not-the-secret-0123456789", home, event_id="Ev9", retry_num=1)
    assert forged.status_code == 401
    assert bot.counts()["processed_requests"] == 0  # a forged id cannot suppress the real event


# -- the poller -------------------------------------------------------------------------------------------------
class _Predictions(BaseHTTPRequestHandler):
    body = b"[]"
    seen_auth: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != "Bearer poll-secret":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def predictions_server() -> Iterator[tuple[str, type[_Predictions]]]:
    handler = type("Handler", (_Predictions,), {"seen_auth": [], "body": b"[]"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/predictions", handler
    finally:
        server.shutdown()
        server.server_close()


def test_serve_polls_npo_poll_url_and_the_recommendation_is_posted(
    tmp_path: Path, standin: StandIn, predictions_server: tuple[str, type[_Predictions]]
) -> None:
    url, handler = predictions_server
    handler.body = json.dumps({"predictions": [prediction("polled-1"), {"id": "bad"}]}).encode()
    settings = make_settings(tmp_path, standin, poll_url=url, poll_interval_s=1.0, poll_token="poll-secret")
    under = _bot(settings, standin)
    try:
        under.posted("polled-1")  # polled at start-up, decided, posted to the stand-in
        wait_for(lambda: len(handler.seen_auth) >= 2)  # and again after the interval
        assert set(handler.seen_auth) == {"Bearer poll-secret"}
        assert under.counts()["predictions"] == 1  # the invalid entry was skipped; re-serving is deduplicated
        assert len(standin.calls("chat.postMessage")) == 1
    finally:
        _stop(under)
    polls = len(handler.seen_auth)
    time.sleep(1.3)
    assert len(handler.seen_auth) == polls  # the poller stopped with the server


# -- restart with leased messages -------------------------------------------------------------------------------
def test_restart_posts_leased_and_pending_messages_exactly_once_after_the_lease(
    tmp_path: Path, standin: StandIn
) -> None:
    settings = make_settings(tmp_path, standin)
    first = _bot(settings, standin, run_worker=False)
    try:
        for pid in ("leased-a", "pending-b"):
            assert first.ingest(prediction(pid)).json()["verdict"] == "surface"
        # What a worker that dies mid-pass leaves behind: leased-a leased (attempt counted), never marked.
        leased = first.bot.store.claim_due(time.time(), 1, lease_s=2.0)
        assert [i.prediction_id for i in leased] == ["leased-a"]
    finally:
        _stop(first)  # the "process" goes away holding the lease
    lease_ends = leased[0].next_attempt_at

    second = _bot(settings, standin)  # a new process on the same file, worker on
    try:
        second.posted("pending-b")  # the unleased one is posted at once
        second.posted("leased-a")  # the leased one once its lease has expired
        # Read off when the post arrived, not off whether it has yet when pending-b's has: on a slow machine the
        # second process may start after the lease is over.
        (leased_post,) = [c for c in standin.calls("chat.postMessage") if "leased-a" in str(c.body)]
        assert leased_post.at >= lease_ends - 0.05
        time.sleep(1.5)  # nothing is posted again
        texts = [str(m.blocks) for m in standin.messages(INCIDENT)]
        assert sum("leased-a" in t for t in texts) == 1 and sum("pending-b" in t for t in texts) == 1
        assert len(standin.calls("chat.postMessage")) == 2
        assert {i.prediction_id for i in second.bot.store.outbox("sent")} == {"leased-a", "pending-b"}
        assert not second.bot.store.outbox("pending")
    finally:
        _stop(second)


# -- storage off the event loop ---------------------------------------------------------------------------------
def test_clicks_are_stored_before_the_200_with_the_writer_thread(bot: BotUnderTest) -> None:
    bot.bot.deps.storage_mode = "writer"
    message = bot.surface("p1")
    assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert bot.counts()["feedback"] == 1
