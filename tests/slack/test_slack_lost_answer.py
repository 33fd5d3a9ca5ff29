"""A post whose answer is lost (Slack has it, the worker never heard) is looked for before it is posted again: found
by the outbox id in its message metadata, it is recorded and not posted twice. A look-up Slack refuses for a
missing scope is passed by (the message is posted as before) with one warning naming the scope."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from slack_sdk import WebClient
from slack_testing import INCIDENT, OPS, TOKEN, BotUnderTest, make_settings, prediction, serving, wait_for

from bot.app import build_bot
from bot.delivery import (
    DIGEST_TAG_MAX_CHARS,
    OUTBOX_EVENT,
    DeliveryWorker,
    WorkerConfig,
    _carries,
    _digest_metadata,
    _outbox_metadata,
)
from bot.metrics import Metrics
from bot.standin import StandIn
from storage import OutboxItem, SQLiteStore

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


REPLIES = "conversations.replies"
STORM = [f"s{i}" for i in range(5)]  # over the storm threshold of 3: one digest


@pytest.fixture
def storm(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    """The bot with its own worker off and ``STORM`` waiting in the outbox, all due for one digest."""
    settings = make_settings(tmp_path, standin, storm_threshold=3, digest_delay_s=0.0)
    with serving(build_bot(settings, seed=1, run_worker=False), standin) as served:
        assert served.ingest([prediction(pid) for pid in STORM]).status_code == 200
        yield served


def _digest_worker(bot: BotUnderTest, now: list[float]) -> DeliveryWorker:
    client = WebClient(base_url=bot.standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    config = WorkerConfig(storm_threshold=3, digest_delay_s=0.0)
    return DeliveryWorker(bot.bot.service, client, Metrics(), config, clock=lambda: now[0])


def _sent_ts(store: SQLiteStore) -> dict[str, str]:
    """prediction id → the ts of the message the outbox records it as sent in."""
    with store.read() as conn:
        rows = conn.execute("SELECT prediction_id, message_ts FROM outbox WHERE state = 'sent'").fetchall()
    return {str(pid): str(ts) for pid, ts in rows}


def test_a_digest_whose_answer_was_lost_is_found_and_all_it_lists_recorded(storm: BotUnderTest) -> None:
    store, now = storm.bot.store, [time.time() + 1]
    ids = [item.id for item in store.outbox("pending")]
    worker = _digest_worker(storm, now)
    storm.standin.faults.lose_answer("chat.postMessage")
    assert worker.run_once() == 5
    (posted,) = storm.standin.messages(INCIDENT)  # Slack has the digest; the worker heard nothing
    assert posted.metadata == {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_ids": f"{ids[0]}-{ids[-1]}"}}
    assert len(store.outbox("pending")) == 5
    now[0] += 5.0
    assert worker.run_once() == 5
    assert len(storm.standin.messages(INCIDENT)) == 1  # once
    assert len(storm.standin.calls("chat.postMessage")) == 1 and len(storm.standin.calls(HISTORY)) == 1
    assert not store.outbox("pending") and _sent_ts(store) == dict.fromkeys(STORM, posted.ts)
    for pid in STORM:  # as a digest that was answered records them
        ref = storm.bot.service.message_ref(pid)
        assert ref is not None and ref.ts == posted.ts
    assert worker.metrics.counter("npo_deliveries_total", kind="digest", result="sent") == 5


def test_a_lost_digest_found_is_recorded_and_what_came_since_is_posted_on_its_own(storm: BotUnderTest) -> None:
    """The retry's digest holds what was queued after the lost one too: only what the digest Slack has lists is
    recorded as sent in it; the rest is posted in a digest of its own (tagged with its ids alone)."""
    store, now = storm.bot.store, [time.time() + 1]
    worker = _digest_worker(storm, now)
    storm.standin.faults.lose_answer("chat.postMessage")
    assert worker.run_once() == 5
    (lost,) = storm.standin.messages(INCIDENT)
    assert storm.ingest([prediction(pid) for pid in ("t0", "t1", "t2", "t3")]).status_code == 200
    later = [item.id for item in store.outbox("pending") if item.prediction_id in ("t0", "t1", "t2", "t3")]
    now[0] += 5.0
    assert worker.run_once() == 9
    first, second = storm.standin.messages(INCIDENT)
    assert first.ts == lost.ts and second.metadata == {
        "event_type": OUTBOX_EVENT,
        "event_payload": {"outbox_ids": f"{later[0]}-{later[-1]}"},
    }
    assert not store.outbox("pending")
    assert _sent_ts(store) == dict.fromkeys(STORM, lost.ts) | dict.fromkeys(("t0", "t1", "t2", "t3"), second.ts)


def test_a_thread_reply_whose_answer_was_lost_is_found_in_its_thread(tmp_path: Path, standin: StandIn) -> None:
    """A reply is not in the channel's history (only its thread's parent is): it is looked for in its thread
    (``conversations.replies``), by the outbox id in its metadata."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        store.enqueue(OPS, "message", {"text": "alert"}, now[0])
        worker = _worker(store, standin, now)
        assert worker.run_once() == 1
        (alert,) = standin.messages(OPS)
        outbox_id = store.enqueue(OPS, "thread_reply", {"thread_ts": alert.ts, "text": "promoted"}, now[0])
        now[0] += 2.0
        standin.faults.lose_answer("chat.postMessage")
        assert worker.run_once() == 1
        (reply,) = [m for m in standin.messages(OPS) if m.thread_ts == alert.ts]
        assert reply.metadata == {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_id": outbox_id}}
        now[0] += 5.0
        assert worker.run_once() == 1
        assert _texts(standin, OPS) == ["alert", "promoted"]  # the reply once
        (lookup,) = standin.calls(REPLIES)
        assert lookup.body["ts"] == alert.ts and standin.calls(HISTORY) == []
        assert len(standin.calls("chat.postMessage")) == 2 and not store.outbox("pending")
        with store.read() as conn:
            assert conn.execute("SELECT message_ts FROM outbox WHERE id = ?", (outbox_id,)).fetchone() == (reply.ts,)


def _items(ids: list[int]) -> list[OutboxItem]:
    return [OutboxItem(i, INCIDENT, "digest_item", {}, None, 1, 0.0, 0.0) for i in ids]


def test_a_digest_tag_names_its_ids_as_ranges_and_a_tag_too_long_is_left_off() -> None:
    """A storm's ids come in runs (a few characters for hundreds); ids too scattered for the bound are not sent at
    all (Slack's limit on metadata is undocumented: a digest refused for its tag would not be posted)."""
    tag = _digest_metadata(_items([*range(100, 1100), 1200, 1202, 1203]))
    assert tag == {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_ids": "100-1099,1200,1202-1203"}}
    message = {"ts": "1.000001", "metadata": tag}
    assert [i for i in (99, 100, 1099, 1100, 1200, 1201, 1203) if _carries(message, i)] == [100, 1099, 1200, 1203]
    assert _carries({"metadata": _outbox_metadata(_items([7])[0])}, 7)
    for odd in ({"event_type": "other", "event_payload": {"outbox_id": 7}}, {"event_type": OUTBOX_EVENT}, "x", None):
        assert not _carries({"metadata": odd}, 7)
    assert not _carries({"metadata": {"event_type": OUTBOX_EVENT, "event_payload": {"outbox_ids": "5-x"}}}, 5)
    scattered = _items(list(range(1, 2 * DIGEST_TAG_MAX_CHARS, 2)))
    assert _digest_metadata(scattered) is None


def test_a_digest_whose_tag_slack_refuses_is_posted_untagged(storm: BotUnderTest) -> None:
    """Slack's limit on metadata is undocumented: a digest refused for its tag is not lost but posted untagged."""
    store, now = storm.bot.store, [time.time() + 1]
    storm.standin.faults.error("chat.postMessage", "metadata_too_large")
    assert _digest_worker(storm, now).run_once() == 5
    (posted,) = storm.standin.messages(INCIDENT)
    assert posted.metadata is None and len(storm.standin.calls("chat.postMessage")) == 2
    assert not store.outbox("pending") and not store.outbox("failed")
    assert _sent_ts(store) == dict.fromkeys(STORM, posted.ts)
