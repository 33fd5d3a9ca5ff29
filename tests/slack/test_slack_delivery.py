"""The delivery worker against the stand-in: rate limits, outages, pacing, permanent errors, storms."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_testing import ALICE, BOB, INCIDENT, OPS, TOKEN, BotUnderTest, make_settings, prediction, serving, wait_for

from bot.app import build_bot
from bot.delivery import RETRY_AFTER_CAP_S, DeliveryWorker, WorkerConfig
from bot.metrics import Metrics
from bot.slack.blocks import ACTION_LIKE, ACTION_NEUTRAL
from bot.slack.web_log import SEND_FAILED
from bot.standin import StandIn
from npo.types import Prediction, Severity
from storage import SQLiteStore, StorageError


def test_rate_limited_post_is_retried_after_retry_after_and_posted_once(bot: BotUnderTest) -> None:
    bot.standin.faults.rate_limit("chat.postMessage", times=1, retry_after=1)
    bot.ingest(prediction("p1"))
    calls = wait_for(lambda: [c for c in bot.standin.calls("chat.postMessage") if c.status == 200])
    attempts = bot.standin.calls("chat.postMessage")
    assert len(calls) == 1 and len(attempts) == 2
    assert attempts[1].monotonic - attempts[0].monotonic >= 1.0
    assert len(bot.standin.messages(INCIDENT)) == 1


def test_a_rate_limited_method_waits_out_retry_after_for_every_message_of_the_channel(bot: BotUnderTest) -> None:
    """After a 429 on chat.update no update of *any* message in that channel is attempted before Retry-After, and
    each arrives afterwards (another channel's are not held: see the tests above)."""
    first, second = bot.surface("p1"), bot.surface("p2")
    bot.standin.faults.rate_limit("chat.update", times=1, retry_after=2)
    assert bot.click(ALICE, ACTION_LIKE, first).status_code == 200
    (limited,) = wait_for(lambda: bot.standin.calls("chat.update"))
    assert bot.click(BOB, ACTION_NEUTRAL, second).status_code == 200  # another message, the same method
    updated = wait_for(lambda: [c for c in bot.standin.calls("chat.update") if c.status == 200])
    later = wait_for(lambda: len(bot.standin.calls("chat.update")) >= 3 and bot.standin.calls("chat.update"))
    assert limited.status == 429 and updated
    assert all(c.monotonic - limited.monotonic >= 2.0 for c in later[1:])  # none inside the Retry-After window
    assert {c.body.get("ts") for c in later[1:]} == {first[1], second[1]}


def _paced_worker(store: SQLiteStore, standin: StandIn, now: list[float]) -> DeliveryWorker:
    """A delivery worker on ``store`` whose clock is ``now[0]``, moved by hand: one pass at a time."""
    client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    return DeliveryWorker(SimpleNamespace(store=store), client, Metrics(), WorkerConfig(), clock=lambda: now[0])  # type: ignore[arg-type]


def _texts(standin: StandIn, channel: str) -> list[str]:
    return [m.text for m in standin.messages(channel)]


def test_a_post_rate_limited_in_one_channel_holds_back_that_channel_only(tmp_path: Path, standin: StandIn) -> None:
    """Slack limits chat.postMessage per channel: a 429 for the incident channel holds back its posts for
    Retry-After, while the ops channel's posts go on at their own pace; the incident channel's then follow, in
    order, each posted once."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        for n in range(2):  # interleaved: the ops posts queued behind the incident one that is limited
            store.enqueue(INCIDENT, "message", {"text": f"I{n}"}, now[0])
            store.enqueue(OPS, "message", {"text": f"O{n}"}, now[0])
        worker = _paced_worker(store, standin, now)
        standin.faults.rate_limit("chat.postMessage", times=1, retry_after=30, channel=INCIDENT)
        assert worker.run_once() == 4
        assert _texts(standin, INCIDENT) == [] and _texts(standin, OPS) == ["O0"]
        now[0] += 1.0  # the ops channel's next slot, well inside the incident channel's Retry-After
        assert worker.run_once() == 1
        assert _texts(standin, OPS) == ["O0", "O1"] and _texts(standin, INCIDENT) == []
        now[0] += 29.0  # Retry-After is over: the incident channel's posts, one a second, in order
        while store.outbox("pending"):
            worker.run_once()
            now[0] += 1.0
        assert _texts(standin, INCIDENT) == ["I0", "I1"] and _texts(standin, OPS) == ["O0", "O1"]
        assert not store.outbox("failed")
        assert [c.status for c in standin.calls("chat.postMessage")].count(429) == 1


def test_an_update_rate_limited_in_one_channel_holds_back_that_channel_only(tmp_path: Path, standin: StandIn) -> None:
    """The same for chat.update: a 429 updating a message in the incident channel does not hold back the update of
    a message in the ops channel; the limited one is sent once Retry-After is over."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        worker = _paced_worker(store, standin, now)
        store.enqueue(INCIDENT, "message", {"text": "alert"}, now[0])
        store.enqueue(OPS, "message", {"text": "alert"}, now[0])
        assert worker.run_once() == 2
        (incident,), (ops,) = standin.messages(INCIDENT), standin.messages(OPS)
        now[0] += 1.0
        store.enqueue(INCIDENT, "message_update", {"ts": incident.ts, "text": "done", "blocks": []}, now[0])
        store.enqueue(OPS, "message_update", {"ts": ops.ts, "text": "done", "blocks": []}, now[0])
        standin.faults.rate_limit("chat.update", times=1, retry_after=30, channel=INCIDENT)
        assert worker.run_once() == 2
        assert _texts(standin, OPS) == ["done"] and _texts(standin, INCIDENT) == ["alert"]
        now[0] += 30.0
        assert worker.run_once() == 1
        assert _texts(standin, INCIDENT) == ["done"] and not store.outbox("pending")


def test_a_rate_limit_of_a_workspace_wide_method_holds_back_that_method_in_every_channel(
    tmp_path: Path, standin: StandIn
) -> None:
    """chat.postEphemeral is limited per workspace: after its 429 no ephemeral reply goes to any channel before
    Retry-After, while posts (another method, limited per channel) go on; the replies follow, each sent once."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        store.enqueue(INCIDENT, "ephemeral", {"user": ALICE, "text": "to alice"}, now[0])
        store.enqueue(OPS, "ephemeral", {"user": BOB, "text": "to bob"}, now[0])
        store.enqueue(OPS, "message", {"text": "O0"}, now[0])
        worker = _paced_worker(store, standin, now)
        standin.faults.rate_limit("chat.postEphemeral", times=1, retry_after=30, channel=INCIDENT)
        assert worker.run_once() == 3
        assert [c.status for c in standin.calls("chat.postEphemeral")] == [429]  # none to the ops channel
        assert _texts(standin, OPS) == ["O0"]
        now[0] += 30.0
        assert worker.run_once() == 2
        assert [c.status for c in standin.calls("chat.postEphemeral")] == [429, 200, 200]
        assert not store.outbox("pending") and not store.outbox("failed")


def test_a_post_that_fails_once_keeps_its_place_in_the_channel(bot: BotUnderTest) -> None:
    """M1's post is cut off once: it is retried before M2 goes out (outbox order per channel), and a wait for the
    channel's pace does not count as a failed try (that would stretch M1's back-off past M2's turn)."""
    store = bot.bot.store
    for n in range(3):
        store.enqueue(INCIDENT, "message", {"text": f"M{n}"}, time.time())
    bot.bot.worker.wake()
    wait_for(lambda: [m for m in bot.standin.messages(INCIDENT) if m.text == "M0"])
    bot.standin.faults.disconnect("chat.postMessage", times=1)  # the next post, M1's
    wait_for(lambda: len(bot.standin.messages(INCIDENT)) == 3)
    assert [m.text for m in bot.standin.messages(INCIDENT)] == ["M0", "M1", "M2"]
    assert len(bot.standin.calls("chat.postMessage")) == 4  # M1 twice
    assert all(item.attempts <= 2 for item in store.outbox("sent"))  # the pace waits were not counted


def test_outage_keeps_predictions_pending_then_posts_each_once(bot: BotUnderTest) -> None:
    bot.standin.stop()
    bot.ingest([prediction("p1"), prediction("p2")])
    # the first post keeps failing; the second waits behind it (outbox order), which is not a failed try
    wait_for(lambda: any(i.attempts >= 2 for i in bot.bot.store.outbox("pending")))
    assert {i.prediction_id for i in bot.bot.store.outbox("pending")} == {"p1", "p2"}
    bot.standin.start()
    wait_for(lambda: len(bot.standin.messages(INCIDENT)) == 2)
    # the stand-in records a post before the worker hears the answer and marks it sent
    wait_for(lambda: not bot.bot.store.outbox("pending"))
    assert len(bot.standin.messages(INCIDENT)) == 2
    assert len([c for c in bot.standin.calls("chat.postMessage") if c.status == 200]) == 2


@pytest.mark.slow
def test_ten_queued_messages_arrive_one_second_apart_in_order(bot: BotUnderTest) -> None:
    ids = [f"q{i}" for i in range(10)]
    bot.ingest([prediction(pid, target=f"host-{pid}") for pid in ids])
    wait_for(lambda: len(bot.standin.messages(INCIDENT)) == 10)
    posts = [c for c in bot.standin.calls("chat.postMessage") if c.status == 200]
    assert [next(pid for pid in ids if f"`{pid}`" in str(c.body["blocks"])) for c in posts] == ids
    gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(posts)]
    assert min(gaps) >= 0.99, gaps


def test_permanent_error_is_marked_failed_not_retried(bot: BotUnderTest) -> None:
    bot.standin.faults.error("chat.postMessage", "channel_not_found", times=None)
    bot.ingest(prediction("p1"))
    failed = wait_for(lambda: bot.bot.store.outbox("failed"))
    assert failed[0].last_error == "channel_not_found"
    assert len(bot.standin.calls("chat.postMessage")) == 1
    assert bot.bot.metrics.counter("npo_deliveries_total", kind="recommendation", result="failed") == 1


@pytest.mark.parametrize(
    "code",
    ["invalid_auth", "token_revoked", "account_inactive", "team_disabled", "user_removed_from_team", "link_disabled"],
)
def test_a_refused_token_or_workspace_fails_the_post_once_with_an_error_line(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, code: str
) -> None:
    """Errors that name the token or the workspace, not the message, get the same answer on every try: the post is
    tried once, marked failed with Slack's code, logged as an error naming it and counted by it — and the
    recommendation itself stays stored (``npo-bot db export``, ``/npo why`` still have it)."""
    bot.standin.faults.error("chat.postMessage", code, times=None)
    bot.ingest(prediction("p1"))
    (failed,) = wait_for(lambda: bot.bot.store.outbox("failed"))
    assert failed.last_error == code
    time.sleep(0.5)  # no second try
    assert len(bot.standin.calls("chat.postMessage")) == 1
    assert bot.bot.store.outbox("pending") == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("FAILED for good" in line and code in line for line in errors), errors
    assert bot.bot.metrics.counter("npo_delivery_failures_total", error=code) == 1
    assert bot.bot.store.prediction("p1") is not None


@pytest.mark.parametrize("code", ["internal_error", "fatal_error", "service_unavailable", "request_timeout"])
def test_a_transient_slack_error_is_retried_and_posted_once_not_failed(bot: BotUnderTest, code: str) -> None:
    """Slack answers these (HTTP 200, ``"ok": false``) when it is in trouble, not the message: the post is tried
    again after a back-off and goes out once. Marked failed, the recommendation would be lost to a Slack outage."""
    bot.standin.faults.error("chat.postMessage", code, times=1)
    bot.ingest(prediction("p1"))
    wait_for(lambda: not bot.bot.store.outbox("pending"))
    assert not bot.bot.store.outbox("failed"), [item.last_error for item in bot.bot.store.outbox("failed")]
    assert [c.response.get("error") for c in bot.standin.calls("chat.postMessage")] == [code, None]
    assert len(bot.standin.messages(INCIDENT)) == 1
    assert bot.bot.metrics.counter("npo_deliveries_total", kind="recommendation", result="retry") == 1


@pytest.mark.parametrize("code", ["ratelimited", "rate_limited"])
def test_a_rate_limit_slack_names_in_the_body_is_waited_out_not_failed(bot: BotUnderTest, code: str) -> None:
    """Slack can name a rate limit in an HTTP 200 body: ``ratelimited`` (every method) or ``rate_limited``
    (chat.postMessage: "Application has posted too many messages"). Either is waited out like a 429 without
    ``Retry-After`` (at least a second, the method held), then the post goes out once; neither fails it for good."""
    bot.standin.faults.error("chat.postMessage", code, times=1)
    bot.ingest(prediction("p1"))
    wait_for(lambda: not bot.bot.store.outbox("pending"))
    assert not bot.bot.store.outbox("failed"), [item.last_error for item in bot.bot.store.outbox("failed")]
    attempts = bot.standin.calls("chat.postMessage")
    assert [c.response.get("error") for c in attempts] == [code, None]
    assert attempts[1].monotonic - attempts[0].monotonic >= 1.0
    assert len(bot.standin.messages(INCIDENT)) == 1


def test_a_recommendation_slack_refuses_is_sent_again_with_its_texts_cut_short(bot: BotUnderTest) -> None:
    """Slack's limits are counted in characters, as NPO counts them, but how Slack counts some text (emoji, other
    scripts) is undocumented: a recommendation Slack refuses (``invalid_blocks``) is sent once more in the compact
    rendering — names cut short, no labels — with its buttons, instead of being lost."""
    bot.standin.faults.error("chat.postMessage", "invalid_blocks", times=1)
    long_target = "r12-" + "🔥" * 400
    bot.ingest(prediction("p1", target=long_target, labels={"rack": "🔥" * 250, "team": "storage"}))
    (message,) = wait_for(lambda: bot.standin.messages(INCIDENT))
    attempts = bot.standin.calls("chat.postMessage")
    assert len(attempts) == 2 and attempts[0].body["blocks"] != attempts[1].body["blocks"]
    full, compact = str(attempts[0].body["blocks"]), str(message.blocks)
    assert "rack=" in full and long_target in full
    assert "rack=" not in compact and long_target not in compact and "r12-🔥" in compact  # cut, not dropped
    buttons = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]
    assert ACTION_LIKE in {b["action_id"] for b in buttons} and all(b.get("value") == "p1" for b in buttons)
    wait_for(lambda: bot.bot.store.outbox("sent"))  # recorded once Slack's answer is in
    assert not bot.bot.store.outbox("failed") and bot.bot.store.decision("p1") is not None


def test_a_recommendation_refused_twice_fails_for_good_and_an_update_is_sent_compact(bot: BotUnderTest) -> None:
    bot.standin.faults.error("chat.postMessage", "invalid_blocks", times=2)
    bot.ingest(prediction("p1"))
    failed = wait_for(lambda: bot.bot.store.outbox("failed"))
    assert failed[0].last_error == "invalid_blocks" and len(bot.standin.calls("chat.postMessage")) == 2
    posted = bot.surface("p2", labels={"rack": "a"})
    bot.standin.faults.error("chat.update", "msg_blocks_too_long", times=1)
    assert bot.click(ALICE, ACTION_LIKE, posted).status_code == 200
    (refused, updated) = wait_for(
        lambda: len(bot.standin.calls("chat.update")) == 2 and bot.standin.calls("chat.update")
    )
    assert refused.response["error"] == "msg_blocks_too_long" and updated.response["ok"]
    assert "rack=" in str(refused.body["blocks"]) and "rack=" not in str(updated.body["blocks"])
    assert "*like*" in str(bot.standin.message(*posted).blocks)  # the answer is shown


@pytest.fixture
def storm_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3), seed=1)
    with serving(built, standin) as served:
        yield served


def test_alert_storm_is_folded_into_one_digest(storm_bot: BotUnderTest) -> None:
    storm_bot.ingest([prediction(f"s{i}", target=f"node-{i}") for i in range(6)])
    wait_for(lambda: not storm_bot.bot.store.outbox("pending"))
    messages = storm_bot.standin.messages(INCIDENT)
    assert len(messages) == 1
    text = str(messages[0].blocks)
    assert all(f"`s{i}`" in text for i in range(6))
    assert "`/npo why &lt;id&gt;` explains one" in text and "/npo status" not in text  # /npo status answers nothing


def test_a_worker_whose_lease_ran_out_neither_sends_on_nor_overwrites_the_new_owner(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Two delivery workers (two processes) on one file. Worker A's first Slack call outlasts its lease (a 2.5 s
    answer against a 2 s lease; in service the call times out long before its 60 s lease, see LEASE_MARGIN_S), so
    worker B claims the three messages and posts them. A's late result is not recorded over B's, A sends none of
    the messages it no longer holds, and A's pass ends normally."""
    path = tmp_path / "npo.db"
    with SQLiteStore(path) as a_store, SQLiteStore(path) as b_store:
        for i in range(3):
            a_store.enqueue(INCIDENT, "message", {"text": f"msg{i}"}, time.time())
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        config = WorkerConfig(lease_s=2.0, post_interval_s=0.0)
        worker_a = DeliveryWorker(SimpleNamespace(store=a_store), client, Metrics(), config)  # type: ignore[arg-type]
        worker_b = DeliveryWorker(SimpleNamespace(store=b_store), client, Metrics(), config)  # type: ignore[arg-type]
        standin.faults.delay("chat.postMessage", 2.5, times=1)  # worker A's first call
        a_pass = threading.Thread(target=worker_a.run_once)
        a_pass.start()
        time.sleep(2.1)  # A's lease is over, its first call still in flight
        assert worker_b.run_once() == 3
        a_pass.join(10)
        texts = [m.text for m in standin.messages(INCIDENT)]
        assert sorted(texts) == ["msg0", "msg0", "msg1", "msg2"]  # only the call in flight went out twice
        sent = a_store.outbox("sent")
        assert len(sent) == 3 and all(item.attempts == 2 for item in sent)  # B's claim, B's result
        assert "another worker claimed it after this lease ran out" in caplog.text


def _ids_listed(blocks: object, ids: range) -> list[str]:
    return [f"s{i}" for i in ids if f"`s{i}`" in str(blocks)]


def test_a_digest_slack_refuses_is_posted_again_at_once_in_parts_of_half_as_many_lines(
    storm_bot: BotUnderTest,
) -> None:
    """A digest Slack refuses (its counting of some text differs from NPO's) is sent again at once with half as many
    lines, the rest following: none of its recommendations is lost."""
    storm_bot.standin.faults.error("chat.postMessage", "msg_blocks_too_long", times=1)
    storm_bot.ingest([prediction(f"s{i}", target=f"node-{i}") for i in range(8)])
    wait_for(lambda: not storm_bot.bot.store.outbox("pending"))
    calls = storm_bot.standin.calls("chat.postMessage")
    assert calls[0].response["error"] == "msg_blocks_too_long"
    assert _ids_listed(calls[0].body["blocks"], range(8)) == [f"s{i}" for i in range(8)]
    assert _ids_listed(calls[1].body["blocks"], range(8)) == ["s0", "s1", "s2", "s3"] and calls[1].response["ok"]
    shown = [pid for m in storm_bot.standin.messages(INCIDENT) for pid in _ids_listed(m.blocks, range(8))]
    assert sorted(shown) == [f"s{i}" for i in range(8)]  # every one shown once
    assert not storm_bot.bot.store.outbox("failed")


def test_a_digest_line_refused_alone_fails_for_good_and_the_rest_is_posted(storm_bot: BotUnderTest) -> None:
    storm_bot.standin.faults.error("chat.postMessage", "invalid_blocks", times=4)  # 8 lines, 4, 2, then 1
    storm_bot.ingest([prediction(f"s{i}", target=f"node-{i}") for i in range(8)])
    wait_for(lambda: not storm_bot.bot.store.outbox("pending"))
    calls = storm_bot.standin.calls("chat.postMessage")
    assert [len(_ids_listed(c.body["blocks"], range(8))) for c in calls[:4]] == [8, 4, 2, 1]
    (failed,) = storm_bot.bot.store.outbox("failed")
    assert failed.payload["prediction_id"] == "s0" and failed.last_error == "invalid_blocks"
    shown = [pid for m in storm_bot.standin.messages(INCIDENT) for pid in _ids_listed(m.blocks, range(8))]
    assert sorted(shown) == [f"s{i}" for i in range(1, 8)]


ALERT_BLOCKS = [
    {"type": "section", "block_id": "a", "text": {"type": "mrkdwn", "text": "retraining alert"}},
    {
        "type": "actions",
        "block_id": "npo_retrain",
        "elements": [{"type": "button", "action_id": "x", "text": {"type": "plain_text", "text": "Approve"}}],
    },
]


class SlowRefusal(WebClient):
    """A client whose first refused chat.postMessage answers late (``delay`` s after Slack refused it)."""

    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.slowed = False

    def chat_postMessage(self, **kwargs: Any) -> Any:  # noqa: N802 - slack_sdk's name
        try:
            return super().chat_postMessage(**kwargs)
        except SlackApiError:
            if not self.slowed:
                self.slowed = True
                time.sleep(self.delay)
            raise


def test_a_short_resend_is_not_started_after_the_lease_ran_out(tmp_path: Path, standin: StandIn) -> None:
    """Slack's refusal came back after the lease was over, and another worker had claimed and posted the message
    meanwhile: the short re-send would post it a second time. It is retried under a fresh lease instead (and finds
    it sent)."""
    path = tmp_path / "npo.db"
    with SQLiteStore(path) as a_store, SQLiteStore(path) as b_store:
        a_store.enqueue(INCIDENT, "message", {"text": "alert", "blocks": ALERT_BLOCKS}, time.time())
        config = WorkerConfig(lease_s=2.0, post_interval_s=0.0)
        slow = SlowRefusal(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[], delay=2.5)
        fast = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        worker_a = DeliveryWorker(SimpleNamespace(store=a_store), slow, Metrics(), config)  # type: ignore[arg-type]
        worker_b = DeliveryWorker(SimpleNamespace(store=b_store), fast, Metrics(), config)  # type: ignore[arg-type]
        standin.faults.error("chat.postMessage", "invalid_blocks", times=1)  # A's first call, answered late
        a_pass = threading.Thread(target=worker_a.run_once)
        a_pass.start()
        time.sleep(2.1)  # A's lease is over, its refused call not yet answered
        assert worker_b.run_once() == 1  # B claims the message and posts it in full
        a_pass.join(10)
        posted = standin.messages(INCIDENT)
        assert len(posted) == 1, [m.blocks for m in posted]  # A's short re-send is not started: B's post stands


def _post_refused_by_a_lock(store: SQLiteStore, standin: StandIn, lock: sqlite3.Connection) -> DeliveryWorker:
    """One message posted by a worker whose record of it the database refuses: ``lock`` (a connection of its own)
    takes the write lock while the post is in flight, and holds it. Returns the worker, its pass over."""
    store.enqueue(INCIDENT, "message", {"text": "alert"}, time.time())
    client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    worker = DeliveryWorker(
        SimpleNamespace(store=store),  # type: ignore[arg-type]
        client,
        Metrics(),
        WorkerConfig(lease_s=1.0, post_interval_s=0.0),  # in service: 60 s, a minute of lock
    )
    standin.faults.delay("chat.postMessage", 0.5, times=1)
    refused: list[StorageError] = []

    def first() -> None:
        try:
            worker.run_once()
        except StorageError as exc:  # marking it sent: the database is locked
            refused.append(exc)

    first_pass = threading.Thread(target=first)
    first_pass.start()
    wait_for(lambda: store.outbox("pending")[0].attempts == 1)  # claimed: the post is in flight
    lock.execute("BEGIN IMMEDIATE")
    first_pass.join(10)
    assert refused
    return worker


def test_a_post_whose_result_could_not_be_written_is_recorded_before_the_next_pass_not_posted_again(
    tmp_path: Path, standin: StandIn
) -> None:
    """The database is locked by another connection (a long write, an operator's shell) while a post is in flight:
    Slack has the message, but marking it sent fails. The result is kept and written before anything else once the
    lock is gone, so the message is not claimed again when its lease ends and posted a second time."""
    path = tmp_path / "npo.db"
    lock = sqlite3.connect(path, isolation_level=None)
    with SQLiteStore(path, busy_timeout_s=0.2, lock_retries=0) as store:
        worker = _post_refused_by_a_lock(store, standin, lock)
        assert len(standin.messages(INCIDENT)) == 1
        time.sleep(1.1)  # the lease is over
        lock.execute("ROLLBACK")
        lock.close()
        worker.run_once()
        assert [m.text for m in standin.messages(INCIDENT)] == ["alert"]
        (sent,) = store.outbox("sent")
        assert sent.attempts == 1


def test_a_post_in_flight_that_once_waited_for_the_pace_does_not_hold_back_newer_posts(
    tmp_path: Path, standin: StandIn
) -> None:
    """M0 waited once for the channel's pace, then was claimed by worker A, whose call is in flight (or whose
    process was killed mid-call: its lease runs a minute). A newer post, M1, is not held back behind it by worker B
    until that lease ends: order cannot be kept against a call in flight, as for a post that never waited."""
    path = tmp_path / "npo.db"
    with SQLiteStore(path) as a_store, SQLiteStore(path) as b_store:
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        config = WorkerConfig(lease_s=60.0, post_interval_s=0.5)
        worker_a = DeliveryWorker(SimpleNamespace(store=a_store), client, Metrics(), config)  # type: ignore[arg-type]
        worker_b = DeliveryWorker(SimpleNamespace(store=b_store), client, Metrics(), config)  # type: ignore[arg-type]
        a_store.enqueue(INCIDENT, "message", {"text": "first"}, time.time())
        a_store.enqueue(INCIDENT, "message", {"text": "M0"}, time.time())
        assert worker_a.run_once() == 2  # "first" posted, M0 waits for the channel's pace
        assert [m.text for m in standin.messages(INCIDENT)] == ["first"]
        # M0's call: held long enough for B's whole pass to run meanwhile on a loaded machine (3 s was not, once)
        standin.faults.delay("chat.postMessage", 8.0, times=1)
        time.sleep(0.6)
        a_pass = threading.Thread(target=worker_a.run_once)
        a_pass.start()
        wait_for(lambda: a_store.outbox("pending")[0].attempts == 1)  # M0 claimed by A: in flight
        try:
            b_store.enqueue(INCIDENT, "message", {"text": "M1"}, time.time())
            assert worker_b.run_once() == 1
            assert [m.text for m in standin.messages(INCIDENT)] == ["first", "M1"]  # M0 is still in flight
        finally:
            a_pass.join(15)
        assert [m.text for m in standin.messages(INCIDENT)] == ["first", "M1", "M0"]


def test_a_post_whose_result_could_not_be_written_is_not_posted_again_after_a_restart(
    tmp_path: Path, standin: StandIn
) -> None:
    """As above, but the process stops (a deploy, a crash) while the database still refuses the result: the post
    Slack has is recorded by the next process before it claims anything, with its ts, and is not posted again."""
    path = tmp_path / "npo.db"
    lock = sqlite3.connect(path, isolation_level=None)
    with SQLiteStore(path, busy_timeout_s=0.2, lock_retries=0) as store:
        _post_refused_by_a_lock(store, standin, lock)
    # the process is gone with the result unwritten; the lock outlasts it and the lease
    time.sleep(1.1)
    lock.execute("ROLLBACK")
    lock.close()
    (posted,) = standin.messages(INCIDENT)
    with SQLiteStore(path) as store:
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        restarted = DeliveryWorker(SimpleNamespace(store=store), client, Metrics(), WorkerConfig())  # type: ignore[arg-type]
        restarted.run_once()
        assert [m.text for m in standin.messages(INCIDENT)] == ["alert"]
        (sent,) = store.outbox("sent")
        assert sent.attempts == 1
        with store.read() as conn:
            assert conn.execute("SELECT message_ts FROM outbox WHERE id = ?", (sent.id,)).fetchone()[0] == posted.ts


def test_a_locked_database_is_one_warning_and_one_recovery_line_not_a_traceback_a_pass(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the write lock (a long write, an operator's shell) across many delivery passes: an
    expected, passing condition, logged as one warning line when it starts and one line when it clears, not as a
    traceback every pass; what was queued meanwhile is posted once it clears."""
    path = tmp_path / "npo.db"
    with SQLiteStore(path, busy_timeout_s=0.05, lock_retries=0) as store:
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        worker = DeliveryWorker(
            SimpleNamespace(store=store),  # type: ignore[arg-type]
            client,
            Metrics(),
            WorkerConfig(idle_poll_s=0.05, post_interval_s=0.0),
        )
        store.enqueue(INCIDENT, "message", {"text": "alert"}, time.time())
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        caplog.set_level(logging.INFO, logger="bot.delivery")
        worker.start()
        try:
            time.sleep(1.0)  # many passes, each refused the write lock
            lock.execute("ROLLBACK")
            lock.close()
            wait_for(lambda: [m.text for m in standin.messages(INCIDENT)] == ["alert"])
            wait_for(lambda: store.outbox("sent"))
            time.sleep(0.2)
        finally:
            worker.stop()
    records = [r for r in caplog.records if r.name == "bot.delivery"]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "locked" in warnings[0], warnings
    assert len([r for r in records if r.levelno == logging.INFO and "again" in r.getMessage()]) == 1


def test_a_retry_after_longer_than_slack_ever_asks_is_capped_with_one_warning(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy (or a broken gateway) answers 429 with ``Retry-After: 86400``: Slack's own values are seconds to a
    minute, and a day's wait would stall every message of the method. The wait is capped at RETRY_AFTER_CAP_S, and
    one warning names the value received and the cap."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        store.enqueue(INCIDENT, "message", {"text": "alert"}, time.time())
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        worker = DeliveryWorker(SimpleNamespace(store=store), client, Metrics(), WorkerConfig())  # type: ignore[arg-type]
        standin.faults.rate_limit("chat.postMessage", times=1, retry_after=86400)
        caplog.set_level(logging.INFO, logger="bot.delivery")
        before = time.time()
        assert worker.run_once() == 1
        (pending,) = store.outbox("pending")
        assert before + RETRY_AFTER_CAP_S - 1 <= pending.next_attempt_at <= time.time() + RETRY_AFTER_CAP_S
        assert worker._limited_until[("chat.postMessage", INCIDENT)] <= time.time() + RETRY_AFTER_CAP_S
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.delivery" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "86400" in warnings[0] and f"{RETRY_AFTER_CAP_S:.0f}" in warnings[0], warnings


def test_a_post_whose_lease_ends_while_its_result_waits_for_the_lock_is_not_posted_again_by_another_worker(
    tmp_path: Path, standin: StandIn
) -> None:
    """Two delivery workers on one file. Worker A's post comes back with little of its lease left (a slow answer),
    and recording it waits for the write lock, which worker B holds (a long write) until A's lease has ended; B then
    claims the due messages. A post Slack has is noted next to the database before A's lease ends, so B's claim
    records it instead of posting it a second time. Before, B claimed and posted it again, and A's late record was
    refused as a lost lease."""
    path = tmp_path / "npo.db"
    with SQLiteStore(path) as a_store, SQLiteStore(path) as b_store:
        a_store.enqueue(INCIDENT, "message", {"text": "alert"}, time.time())
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
        config = WorkerConfig(lease_s=2.0, post_interval_s=0.0)
        worker_a = DeliveryWorker(SimpleNamespace(store=a_store), client, Metrics(), config)  # type: ignore[arg-type]
        worker_b = DeliveryWorker(SimpleNamespace(store=b_store), client, Metrics(), config)  # type: ignore[arg-type]
        standin.faults.delay("chat.postMessage", 0.5, times=1)  # A's call: 1.5 s of the lease left when it returns
        a_pass = threading.Thread(target=worker_a.run_once)
        a_pass.start()
        wait_for(lambda: a_store.outbox("pending")[0].attempts == 1)  # claimed by A: its post is in flight
        lease_end = a_store.outbox("pending")[0].next_attempt_at
        with b_store.transaction():  # B's write lock, taken while A's post is in flight
            while time.time() < lease_end + 0.1:
                time.sleep(0.05)
            worker_b.run_once()  # A's lease is over: B claims what is due
        a_pass.join(30)
        assert [m.text for m in standin.messages(INCIDENT)] == ["alert"]
        (sent,) = a_store.outbox("sent")
        assert sent.attempts == 1  # A's post, recorded from its note


def test_a_digest_recorded_from_its_note_by_another_worker_is_no_lost_lease(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """As above, for a storm digest: worker A's digest comes back with little of its lease left and is noted next to
    the database; worker B's claim records it from the note while A waits for the write lock. Nothing is posted
    twice and A's record finds the digest already recorded, as it posted it. Before, A logged that another worker
    had claimed its messages and counted them as ``lease_lost``."""
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3), seed=1, run_worker=False)
    try:
        now = time.time()
        ids = [f"s{i}" for i in range(4)]
        results = built.service.decide(
            [
                Prediction(
                    id=pid,
                    fault_type="disk_failure",
                    target=f"node-{pid}",
                    action="investigate",
                    confidence=0.99,
                    severity=Severity.CRITICAL,
                    time_to_fault_s=6 * 3600,
                    received_at=now,
                )
                for pid in ids
            ]
        )
        assert [r.decision.verdict.value for r in results] == ["surface"] * 4
        with SQLiteStore(tmp_path / "npo.db") as b_store:
            client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
            config = WorkerConfig(lease_s=2.0, post_interval_s=0.0, storm_threshold=3)
            a_metrics = Metrics()
            worker_a = DeliveryWorker(built.service, client, a_metrics, config)
            worker_b = DeliveryWorker(SimpleNamespace(store=b_store), client, Metrics(), config)  # type: ignore[arg-type]
            standin.faults.delay("chat.postMessage", 0.5, times=1)  # A's digest: 1.5 s of the lease left
            caplog.set_level(logging.INFO, logger="bot.delivery")
            a_pass = threading.Thread(target=worker_a.run_once)
            a_pass.start()
            wait_for(lambda: all(item.attempts == 1 for item in built.store.outbox("pending")))
            lease_end = built.store.outbox("pending")[0].next_attempt_at
            with b_store.transaction():  # B's write lock, taken while A's digest is in flight
                while time.time() < lease_end + 0.1:
                    time.sleep(0.05)
                assert worker_b.run_once() == 0  # A's lease is over; its note is recorded, nothing is claimed
            a_pass.join(30)
        assert len(standin.messages(INCIDENT)) == 1  # one digest, listing the four
        sent = built.store.outbox("sent")
        assert len(sent) == 4 and all(item.attempts == 1 for item in sent)  # A's post, recorded from its note
        warnings = [r.getMessage() for r in caplog.records if r.name == "bot.delivery" and r.levelno >= logging.WARNING]
        assert not [w for w in warnings if "another worker" in w], warnings
        exposition = a_metrics.render(None)
        assert 'result="lease_lost"' not in exposition, exposition
        assert 'npo_deliveries_total{kind="digest",result="sent"} 4' in exposition, exposition
    finally:
        built.close()


def test_answers_given_while_an_update_waits_for_a_retry_ride_with_it(tmp_path: Path, standin: StandIn) -> None:
    """An update that failed (Slack unreachable) and waits for its next try renders the message as it is when
    tried: answers given meanwhile ride with it instead of each queueing an update of its own, which would retry
    on its own during an outage and, once Slack is back, update the same message once per answer."""
    built = build_bot(make_settings(tmp_path, standin), seed=1, run_worker=False)
    with serving(built, standin) as bot:
        ahead = [0.0]  # how far the worker's clock is ahead of the real one
        client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])

        def clock() -> float:
            return time.time() + ahead[0]

        worker = DeliveryWorker(bot.bot.service, client, Metrics(), WorkerConfig(), clock=clock)
        assert bot.ingest(prediction("p1")).status_code == 200
        assert worker.run_once() == 1
        message = bot.posted("p1")
        standin.faults.disconnect("chat.update", times=None)
        assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200
        assert worker.run_once() == 1  # the update is tried, and waits for another try
        (waiting,) = bot.bot.store.outbox("pending")
        assert waiting.kind == "update" and waiting.last_error
        assert bot.click(BOB, ACTION_LIKE, message).status_code == 200
        assert bot.click(ALICE, ACTION_NEUTRAL, message).status_code == 200
        assert [item.id for item in bot.bot.store.outbox("pending")] == [waiting.id]
        standin.faults.clear()
        ahead[0] = 120.0  # past the back-off
        assert worker.run_once() == 1
        assert not bot.bot.store.outbox("pending")
    updated = [c for c in standin.calls("chat.update") if c.status == 200]
    assert len(updated) == 1
    assert ALICE in str(updated[0].body["blocks"]) and BOB in str(updated[0].body["blocks"])


def test_a_post_that_could_not_be_sent_is_the_workers_warning_not_an_sdk_error(
    tmp_path: Path, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """slack-sdk logs a request it could not send at ERROR and raises it; the worker keeps the message and logs its
    retry once at WARNING. A network outage made every try an ERROR line for an error that lost nothing."""
    caplog.set_level(logging.DEBUG)
    built = build_bot(make_settings(tmp_path, standin), seed=1, run_worker=False)
    with serving(built, standin) as bot:
        standin.faults.disconnect("chat.postMessage", times=1)
        assert bot.ingest(prediction("p1")).status_code == 200
        assert built.worker.run_once() == 1
        (waiting,) = built.store.outbox("pending")  # kept for its next try
        assert waiting.last_error
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    unsent = [r for r in caplog.records if r.getMessage().startswith(SEND_FAILED)]
    assert unsent and all(r.levelno == logging.DEBUG for r in unsent), unsent  # still there for a debugging reader
    retried = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.delivery" and r.levelno == logging.WARNING and "will be retried" in r.getMessage()
    ]
    assert len(retried) == 1, retried


def test_an_alert_update_retried_after_a_later_one_was_sent_is_not_sent_again(tmp_path: Path, standin: StandIn) -> None:
    """A plain message's update carries the blocks it was queued with: one that failed and is retried after a later
    update of the same message was sent would put the older blocks back (a retraining alert showing its buttons
    again after it was resolved). It is recorded as done without a call."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        store.enqueue(OPS, "message", {"text": "alert"}, now[0])
        worker = _paced_worker(store, standin, now)
        assert worker.run_once() == 1
        (alert,) = standin.messages(OPS)
        now[0] += 1.0
        older = store.enqueue(OPS, "message_update", {"ts": alert.ts, "text": "deadline moved", "blocks": []}, now[0])
        standin.faults.error("chat.update", "internal_error", times=1)  # transient: retried after a back-off
        assert worker.run_once() == 1
        assert _texts(standin, OPS) == ["alert"]
        now[0] += 0.1  # the retry is not due yet when the later update is queued and sent
        store.enqueue(OPS, "message_update", {"ts": alert.ts, "text": "approved", "blocks": []}, now[0])
        assert worker.run_once() == 1
        assert _texts(standin, OPS) == ["approved"]
        now[0] += 120.0  # past the first update's back-off
        assert worker.run_once() == 1
        assert _texts(standin, OPS) == ["approved"]
        # the failed try, then the later update; no third call
        assert [c.body.get("text") for c in standin.calls("chat.update")] == ["deadline moved", "approved"]
        assert not store.outbox("pending") and older in {item.id for item in store.outbox("sent")}
