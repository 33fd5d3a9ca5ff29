"""A post whose answer is lost (Slack has it, the worker never heard) is looked for before it is posted again: found
by the outbox id in its message metadata, it is recorded and not posted twice. A look-up Slack refuses for a
missing scope is passed by (the message is posted as before) with one warning naming the scope."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from slack_sdk import WebClient
from slack_testing import INCIDENT, OPS, TOKEN, BotUnderTest, prediction, wait_for

from bot.delivery import OUTBOX_EVENT, DeliveryWorker, WorkerConfig
from bot.metrics import Metrics
from bot.standin import StandIn
from storage import SQLiteStore

HISTORY = "conversations.history"


def _worker(store: SQLiteStore, standin: StandIn, now: list[float]) -> DeliveryWorker:
    """A delivery worker on ``store`` whose clock is ``now[0]``, moved by hand: one pass at a time."""
    client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    return DeliveryWorker(SimpleNamespace(store=store), client, Metrics(), WorkerConfig(), clock=lambda: now[0])  # type: ignore[arg-type]


def _texts(standin: StandIn, channel: str) -> list[str]:
    return [m.text for m in standin.messages(channel)]


def test_a_post_whose_answer_was_lost_is_found_and_not_posted_again(tmp_path: Path, standin: StandIn) -> None:
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        outbox_id = store.enqueue(INCIDENT, "message", {"text": "M0"}, now[0])
        worker = _worker(store, standin, now)
        standin.faults.lose_answer("chat.postMessage")
        assert worker.run_once() == 1
        (posted,) = standin.messages(INCIDENT)  # Slack has it; the worker heard nothing
        assert posted.metadata == {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_id": outbox_id}}
        assert [item.id for item in store.outbox("pending")] == [outbox_id]
        now[0] += 5.0  # past the back-off
        assert worker.run_once() == 1
        assert _texts(standin, INCIDENT) == ["M0"]  # once
        assert len(standin.calls("chat.postMessage")) == 1 and len(standin.calls(HISTORY)) == 1
        assert not store.outbox("pending") and not store.outbox("failed")
        with store.read() as conn:
            (ts,) = conn.execute("SELECT message_ts FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
        assert ts == posted.ts  # recorded as the post Slack has (a later update edits that message)


def test_a_post_cut_off_before_slack_had_it_is_looked_for_then_posted_once(tmp_path: Path, standin: StandIn) -> None:
    """A dropped connection may have come before Slack stored the post: the look-up finds nothing, and it is posted
    once. A connection refused (nothing was sent) is retried without a look-up."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        store.enqueue(INCIDENT, "message", {"text": "M0"}, now[0])
        store.enqueue(OPS, "message", {"text": "O0"}, now[0])
        worker = _worker(store, standin, now)
        standin.faults.disconnect("chat.postMessage")  # the first post, M0's: not stored
        standin.stop()
        assert worker.run_once() == 2  # both refused a connection
        standin.start()
        now[0] += 5.0
        assert worker.run_once() == 2
        assert standin.calls(HISTORY) == []  # O0: posted at once; M0 cut off
        now[0] += 5.0
        assert worker.run_once() == 1
        assert _texts(standin, INCIDENT) == ["M0"] and _texts(standin, OPS) == ["O0"]
        assert [c.body["channel"] for c in standin.calls(HISTORY)] == [INCIDENT]
        assert not store.outbox("pending")


def test_a_lease_taken_over_from_a_killed_worker_finds_its_post(tmp_path: Path, standin: StandIn) -> None:
    """A worker killed after its post reached Slack left the message claimed with no result: the worker that
    claims it once the lease is over finds the post and records it."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        outbox_id = store.enqueue(INCIDENT, "message", {"text": "M0"}, now[0])
        (claimed,) = store.claim_due(now[0], lease_s=60.0)  # the killed worker's claim and its post
        killed = WebClient(base_url=standin.api_url, token=TOKEN, retry_handlers=[])
        metadata = {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_id": claimed.id}}
        ts = killed.chat_postMessage(channel=INCIDENT, text="M0", metadata=metadata)["ts"]
        now[0] += 61.0
        assert _worker(store, standin, now).run_once() == 1
        assert _texts(standin, INCIDENT) == ["M0"] and len(standin.calls(HISTORY)) == 1
        assert not store.outbox("pending")
        with store.read() as conn:
            assert conn.execute("SELECT message_ts FROM outbox WHERE id = ?", (outbox_id,)).fetchone() == (ts,)


def test_a_lookup_refused_for_a_missing_scope_posts_again_and_names_the_scope_once(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        store.enqueue(INCIDENT, "message", {"text": "M0"}, now[0])
        store.enqueue(OPS, "message", {"text": "O0"}, now[0])
        worker = _worker(store, standin, now)
        standin.faults.lose_answer("chat.postMessage", times=2)
        standin.faults.error(HISTORY, "missing_scope", times=None)
        assert worker.run_once() == 2
        now[0] += 5.0
        with caplog.at_level(logging.WARNING, logger="bot.delivery"):
            assert worker.run_once() == 2
        assert _texts(standin, INCIDENT) == ["M0", "M0"] and _texts(standin, OPS) == ["O0", "O0"]  # as before
        assert len(standin.calls(HISTORY)) == 2 and not store.outbox("pending")
        scope = [r.getMessage() for r in caplog.records if "missing_scope" in r.getMessage()]
        assert len(scope) == 1 and "channels:history" in scope[0] and "groups:history" in scope[0], scope


def test_a_recommendation_whose_answer_was_lost_is_in_the_channel_once(bot: BotUnderTest) -> None:
    bot.standin.faults.lose_answer("chat.postMessage")
    bot.ingest(prediction("p1"))
    wait_for(lambda: bot.bot.store.outbox("sent"))
    assert len(bot.standin.messages(INCIDENT)) == 1
    assert len(bot.standin.calls("chat.postMessage")) == 1 and len(bot.standin.calls(HISTORY)) == 1
    ref = bot.bot.service.message_ref("p1")
    assert ref is not None and ref.ts == bot.standin.messages(INCIDENT)[0].ts
