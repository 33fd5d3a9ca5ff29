"""Digests too big for one Slack message, against the stand-in: every recommendation the outbox records as sent was
listed in the message it records, the header counts what its message lists, posts keep the channel's pace, and a
part that fails is retried (or failed) alone — the parts already posted are not posted again.

A digest line here is ~600 characters (three names shortened to 80, the fault type's ``&`` escaped to ``&amp;``), so
one message lists 16 of them."""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_testing import ALICE, BOB, INCIDENT, TOKEN, BotUnderTest, make_settings, prediction, serving, wait_for

from bot.app import build_bot
from bot.delivery import DeliveryWorker, WorkerConfig
from bot.metrics import Metrics
from bot.standin import StandIn, limits
from bot.standin.store import Call, Message

HEADER = re.compile(r":package: \*(\d+) recommendation\(s\) in one digest\*")


def _long(pid: str) -> dict[str, object]:
    # a kind of its own (fault type and action) each, named alike up to where a line shortens the name: a storm of
    # one kind is one counted line (the last test)
    return prediction(pid, fault_type="ft-" + "&" * 300 + pid, target=f"{pid}-" + "x" * 300, action="a" * 300)


def _listed(blocks: list[dict[str, object]]) -> list[str]:
    """Prediction ids a message lists (its sections, in order)."""
    return [pid for b in blocks if b.get("type") == "section" for pid in re.findall(r"id `([^`]+)`", str(b))]


def _notes(blocks: list[dict[str, object]]) -> list[str]:
    return [str(e["text"]) for b in blocks if b.get("type") == "context" for e in b["elements"]]  # type: ignore[attr-defined]


def _header(message: Message) -> int | None:
    match = HEADER.match(str(message.blocks[0].get("text", {}).get("text", "")))
    return None if match is None else int(match.group(1))


def _header_of(call: Call) -> int | None:
    match = HEADER.match(str(call.body["blocks"][0]["text"]["text"]))
    return None if match is None else int(match.group(1))


def _sent(bot: BotUnderTest) -> list[tuple[str, str, str]]:
    """(prediction id, channel, ts) of every recommendation or digest item the outbox records as sent."""
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        rows = conn.execute(
            "SELECT prediction_id, channel, message_ts FROM outbox WHERE state = 'sent' "
            "AND kind IN ('recommendation', 'digest_item') ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def _posts(bot: BotUnderTest) -> list[Call]:
    return [
        c
        for c in bot.standin.calls("chat.postMessage")
        if c.status == 200 and isinstance(c.response, dict) and c.response.get("ok")
    ]


def _assert_sent_means_listed(bot: BotUnderTest, pids: list[str]) -> None:
    """Each of ``pids`` is recorded as sent once, in a message that lists it; each is listed in exactly one message;
    each digest's header counts what it lists and hides nothing."""
    messages = {(m.channel, m.ts): m for m in bot.standin.messages(INCIDENT)}
    sent = _sent(bot)
    assert sorted(pid for pid, _, _ in sent) == sorted(pids)
    unlisted = [pid for pid, channel, ts in sent if pid not in _listed(messages[(channel, ts)].blocks)]
    assert not unlisted, f"{len(unlisted)} marked sent but not listed in their message, e.g. {unlisted[:3]}"
    listed = Counter(pid for m in messages.values() for pid in _listed(m.blocks))
    assert set(listed) == set(pids) and set(listed.values()) == {1}
    for message in messages.values():
        assert limits.blocks_text_chars(message.blocks) <= limits.MAX_BLOCKS_TEXT_CHARS
        count = _header(message)
        if count is not None:
            assert count == len(_listed(message.blocks)), message.blocks[0]
            assert not [n for n in _notes(message.blocks) if "not shown" in n]


@pytest.fixture
def digest_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    """A storm is > 3 pending recommendations; capped recommendations (past the default policy's 20 an hour) are
    gathered for 0.2 s."""
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3, digest_delay_s=0.2), seed=1)
    with serving(built, standin) as served:
        yield served


def test_a_digest_too_big_for_one_message_goes_out_in_paced_parts_each_marking_what_it_lists(
    digest_bot: BotUnderTest,
) -> None:
    """50 recommendations: 20 surfaced at once (a storm) and 30 over the hourly cap. The worker used to post one
    digest per channel listing the 16 lines that fit, say "…and 4 more recommendations not shown", and mark all 20
    sent (then the same for the 30) — the ones not shown were never delivered to anyone."""
    bot = digest_bot
    pids = [f"s{i:03d}" for i in range(50)]
    assert bot.ingest([_long(pid) for pid in pids]).status_code == 200
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=30)
    assert not bot.bot.store.outbox("failed")
    _assert_sent_means_listed(bot, pids)
    posts = _posts(bot)
    assert len(posts) == 4  # 16 + 16 + 16 + 2 lines: the storm's rest leads the capped ones
    assert [_header_of(c) for c in posts] == [16, 16, 16, 2]
    assert "· 4 more to follow" in str(posts[0].body["blocks"][0])  # the storm's rest, in the next pass
    gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(posts)]
    assert min(gaps) >= 0.99, gaps  # the channel's 1 message/s, between the parts too
    assert [pid for c in posts for pid in _listed(c.body["blocks"])] == pids  # outbox order
    assert all(item.attempts == 1 for item in bot.bot.store.outbox("sent"))  # waits for a part are not tries
    metrics = bot.bot.metrics
    assert metrics.counter("npo_deliveries_total", kind="digest", result="sent") == 50
    assert metrics.counter("npo_deliveries_total", kind="recommendation", result="sent") == 0


def test_a_part_that_fails_once_is_retried_and_the_parts_already_posted_are_not_posted_again(
    digest_bot: BotUnderTest,
) -> None:
    """The third part gets a 500 once (Slack posted nothing): it is retried, with the part after it waiting behind
    it; the parts already posted and marked are not posted again; every recommendation is listed once."""
    bot = digest_bot
    pids = [f"r{i:03d}" for i in range(60)]
    assert bot.ingest([_long(pid) for pid in pids]).status_code == 200
    wait_for(lambda: len(bot.standin.messages(INCIDENT)) >= 2)
    bot.standin.faults.server_error("chat.postMessage", times=1)  # the next part
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=30)
    assert not bot.bot.store.outbox("failed")
    _assert_sent_means_listed(bot, pids)
    calls = bot.standin.calls("chat.postMessage")
    assert [c.status for c in calls].count(500) == 1
    assert len(calls) == len(_posts(bot)) + 1  # one try more than messages: the part that failed, once
    assert [pid for c in _posts(bot) for pid in _listed(c.body["blocks"])] == pids  # outbox order, the retry too
    assert bot.bot.metrics.counter("npo_deliveries_total", kind="digest", result="sent") == 60


def test_a_part_that_fails_for_good_fails_alone(digest_bot: BotUnderTest) -> None:
    """Slack refuses the third part for good (an error other than a refusal of its blocks, which is sent again with
    fewer lines): exactly the recommendations it listed are marked failed (and counted failed); the parts before
    and after it are posted, each recommendation of theirs once."""
    bot = digest_bot
    pids = [f"f{i:03d}" for i in range(60)]
    assert bot.ingest([_long(pid) for pid in pids]).status_code == 200
    wait_for(lambda: len(bot.standin.messages(INCIDENT)) >= 2)
    bot.standin.faults.error("chat.postMessage", "not_in_channel", times=1)
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=30)
    calls = bot.standin.calls("chat.postMessage")
    refusals = [c for c in calls if isinstance(c.response, dict) and c.response.get("error") == "not_in_channel"]
    assert len(refusals) == 1, f"{len(calls)} posts: no third part was tried"
    refused = refusals[0]
    lost = _listed(refused.body["blocks"])
    assert lost == pids[32:48] and _header_of(refused) == len(lost)
    assert _listed(calls[-1].body["blocks"]) == pids[48:]  # the part after it, posted in the next pass
    failed = bot.bot.store.outbox("failed")
    assert sorted(str(item.prediction_id) for item in failed) == sorted(lost)
    assert all(item.last_error == "not_in_channel" for item in failed)
    _assert_sent_means_listed(bot, [pid for pid in pids if pid not in lost])
    metrics = bot.bot.metrics
    assert metrics.counter("npo_deliveries_total", kind="digest", result="sent") == 60 - len(lost)
    assert metrics.counter("npo_delivery_failures_total", error="not_in_channel") == len(lost)


# -- one pass at a time: the worker driven by hand, with its own clock -------------------------------------------
QUEUED = [f"q{i:02d}" for i in range(40)]  # 20 recommendations (a storm) and 20 over the cap: parts of 16, 16, 8


@pytest.fixture
def queued(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    """The bot with its own worker off and ``QUEUED`` waiting in the outbox, all due for one digest."""
    settings = make_settings(tmp_path, standin, storm_threshold=3, digest_delay_s=0.0)
    with serving(build_bot(settings, seed=1, run_worker=False), standin) as served:
        assert served.ingest([_long(pid) for pid in QUEUED]).status_code == 200
        yield served


def _worker(bot: BotUnderTest, clock: Callable[[], float], *, post_interval_s: float = 1.0) -> DeliveryWorker:
    client = WebClient(base_url=bot.standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    config = WorkerConfig(post_interval_s=post_interval_s, storm_threshold=3, digest_delay_s=0.0)
    return DeliveryWorker(bot.bot.service, client, Metrics(), config, clock=clock)


def test_a_pass_posts_one_part_and_defers_the_rest_to_the_channel_s_next_slot(queued: BotUnderTest) -> None:
    """At 1 message/s a pass posts one part; the rest waits, not as a failed try, until the channel's next slot,
    when it leads the next digest."""
    now = [time.time() + 1]
    worker = _worker(queued, lambda: now[0])
    assert worker.run_once() == 40
    (message,) = queued.standin.messages(INCIDENT)
    assert _listed(message.blocks) == QUEUED[:16] and _header(message) == 16
    pending = queued.bot.store.outbox("pending")
    assert [item.prediction_id for item in pending] == QUEUED[16:]
    assert all(item.attempts == 0 and item.next_attempt_at == pytest.approx(now[0] + 1.0) for item in pending)
    assert worker.run_once() == 0  # nothing is due before the channel's next slot
    now[0] += 1.0
    assert worker.run_once() == 24
    now[0] += 1.0
    assert worker.run_once() == 8 and not queued.bot.store.outbox("pending")
    assert [_header(m) for m in queued.standin.messages(INCIDENT)] == [16, 16, 8]
    _assert_sent_means_listed(queued, QUEUED)
    assert worker.metrics.counter("npo_deliveries_total", kind="digest", result="sent") == 40


def test_without_pacing_one_pass_posts_every_part(queued: BotUnderTest) -> None:
    worker = _worker(queued, time.time, post_interval_s=0.0)
    assert worker.run_once() == 40 and not queued.bot.store.outbox("pending")
    messages = queued.standin.messages(INCIDENT)
    assert [_header(m) for m in messages] == [16, 16, 8]
    headers = [str(m.blocks[0]["text"]["text"]) for m in messages]
    assert headers[0].endswith(" · 24 more to follow") and headers[1].endswith(" · 8 more to follow")
    assert "to follow" not in headers[2]
    _assert_sent_means_listed(queued, QUEUED)


def test_the_rest_of_a_digest_is_not_sent_on_a_lease_nearly_over(queued: BotUnderTest) -> None:
    """Each post takes 55 s of the 60 s lease (the clock moves with the stand-in's calls): after a part, less than
    ``LEASE_MARGIN_S`` is left, so the rest is deferred — due at once, claimed again with a fresh lease — instead of
    being posted on a lease another worker may already hold."""
    start = time.time() + 1
    worker = _worker(queued, lambda: start + 55.0 * len(queued.standin.calls("chat.postMessage")), post_interval_s=0.0)
    assert [worker.run_once() for _ in range(3)] == [40, 24, 8]
    assert [_header(m) for m in queued.standin.messages(INCIDENT)] == [16, 16, 8]
    assert all(item.attempts == 1 for item in queued.bot.store.outbox("sent"))
    _assert_sent_means_listed(queued, QUEUED)


def test_a_digest_item_whose_prediction_is_gone_is_failed_not_marked_sent(queued: BotUnderTest) -> None:
    """A digest could not list it, so it is failed (``not_in_database``, as a recommendation of its own would be)
    instead of being recorded as sent in a message that never showed it."""
    ghost = queued.bot.store.enqueue(INCIDENT, "digest_item", {"prediction_id": "ghost"}, time.time())
    worker = _worker(queued, time.time, post_interval_s=0.0)
    assert worker.run_once() == 41 and not queued.bot.store.outbox("pending")
    failed = queued.bot.store.outbox("failed")
    assert [(item.id, item.last_error) for item in failed] == [(ghost, "prediction 'ghost' is not in the database")]
    assert worker.metrics.counter("npo_delivery_failures_total", error="not_in_database") == 1
    assert "ghost" not in str([m.blocks for m in queued.standin.messages(INCIDENT)])
    _assert_sent_means_listed(queued, QUEUED)


def _states(bot: BotUnderTest, pids: list[str]) -> list[str]:
    """The state of each of ``pids``' recommendations (pending, posted, failed, resolved)."""
    conn = sqlite3.connect(bot.bot.settings.db_path)
    try:
        states = dict(conn.execute("SELECT prediction_id, state FROM recommendations").fetchall())
    finally:
        conn.close()
    return [str(states[pid]) for pid in pids]


def test_a_digest_item_that_failed_for_good_fails_its_recommendation_and_is_requeued_like_a_post(
    tmp_path: Path, standin: StandIn
) -> None:
    """Slack refuses the digest for good (``not_in_channel``). Its capped recommendations (digest items) end failed
    as the storm's own recommendations do — they used to stay pending for ever, and the update an outcome queued for
    one was recorded as sent ("posted inside a digest") with nothing posted — the update is failed
    (``never_posted``, one error line, counted), and ``npo-bot db requeue`` puts the unresolved one back, pending,
    and it is posted once the bot is in the channel."""
    settings = make_settings(tmp_path, standin, storm_threshold=3, digest_delay_s=0.0)
    with serving(build_bot(settings, seed=1, run_worker=False), standin) as bot:
        pids = [f"c{i:02d}" for i in range(22)]  # 20 surfaced (a storm), 2 over the default hourly cap
        assert bot.ingest([prediction(pid, target=f"node-{pid}") for pid in pids]).status_code == 200
        store = bot.bot.store
        assert [i.prediction_id for i in store.outbox("pending") if i.kind == "digest_item"] == ["c20", "c21"]
        now = [time.time() + 1]
        worker = _worker(bot, lambda: now[0])
        standin.faults.error("chat.postMessage", "not_in_channel", times=None)
        while store.outbox("pending"):
            worker.run_once()
            now[0] += 1.0
        assert len(store.outbox("failed")) == 22
        assert _states(bot, ["c00", "c20", "c21"]) == ["failed", "failed", "failed"]
        bot.ingest({"prediction_id": "c20", "real_fault": True}, "/api/v1/outcomes")
        worker.run_once()
        (update,) = [i for i in store.outbox() if i.kind == "update"]
        assert (update.state, update.last_error) == (
            "failed",
            "recommendation c20 was never posted (its delivery failed): no message to update",
        )
        assert worker.metrics.counter("npo_delivery_failures_total", error="never_posted") == 1
        assert not standin.calls("chat.update")
        planned = store.requeue_failed(time.time(), codes=["not_in_channel"])
        requeued = {m.prediction_id for m in planned if not m.skip and m.kind == "digest_item"}
        assert requeued == {"c21"}  # c20 is resolved: left failed
        assert _states(bot, ["c20", "c21"]) == ["resolved", "pending"]
        standin.faults.clear()
        while store.outbox("pending"):
            worker.run_once()
            now[0] += 1.0
        assert "`c21`" in str([m.blocks for m in standin.messages(INCIDENT)])


def test_a_storm_digest_slack_refuses_is_sent_in_fewer_kinds_then_one_by_one_and_nothing_is_lost(
    digest_bot: BotUnderTest,
) -> None:
    """A storm too large to list one by one is listed one line per kind. Slack refuses it (its counting of some text
    differs from NPO's): the digest is sent again at once with half as many kinds; a single kind's line refused is
    listed one recommendation a line instead, so no kind is failed for good with all its recommendations."""
    bot = digest_bot
    kinds = {f"g{i:02d}": "ft-" + "&" * 300 + ("a" if i % 2 else "b") for i in range(40)}  # two kinds of 20
    bot.standin.faults.error("chat.postMessage", "invalid_blocks", times=2)
    body = [
        prediction(pid, fault_type=fault, target=f"{pid}-" + "x" * 300, action="a" * 300)
        for pid, fault in kinds.items()
    ]
    assert bot.ingest(body).status_code == 200
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=30)
    calls = bot.standin.calls("chat.postMessage")
    refused = [c for c in calls if isinstance(c.response, dict) and c.response.get("error") == "invalid_blocks"]
    assert len(refused) == 2
    kinds_in = [len(re.findall(r"\d+ × ft-", str(c.body["blocks"]))) for c in refused]
    assert kinds_in == [2, 1]  # both kinds, then one
    third = _listed(calls[2].body["blocks"])  # then that kind, one recommendation a line
    assert calls[2].response["ok"] and len(third) > 1 and len({kinds[pid] for pid in third}) == 1
    assert not bot.bot.store.outbox("failed")
    assert sorted(pid for pid, _, _ in _sent(bot)) == sorted(kinds)  # every one sent once…
    counted = [
        re.match(r":package: \*(\d+) recommendation", str(m.blocks[0]["text"]["text"]))
        for m in bot.standin.messages(INCIDENT)
    ]
    assert sum(int(c.group(1)) for c in counted if c) == 40  # …and counted once in the digests posted


class Timed(WebClient):
    """A client for a worker on a fake clock: each chat.postMessage takes ``seconds`` of it; records when each
    call started."""

    def __init__(self, *args: Any, now: list[float], seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now, self.seconds, self.starts = now, seconds, []

    def chat_postMessage(self, **kwargs: Any) -> Any:  # noqa: N802 - slack_sdk's name
        self.starts.append(self.now[0])
        try:
            return super().chat_postMessage(**kwargs)
        finally:
            self.now[0] += self.seconds


def test_a_refused_digest_is_not_posted_again_after_its_lease_ran_out(tmp_path: Path, standin: StandIn) -> None:
    """A storm digest of 8 refused three times (8, 4, 2 lines) is posted as one line at the fourth call; with
    each call taking 20 s of a 60 s lease, that call would start 60 s after the claim, with no lease left (another
    worker may have claimed the digest's items by then): the items are deferred to a fresh lease instead."""
    standin.add_user(ALICE)
    standin.add_user(BOB)
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3), seed=1, run_worker=False)
    with serving(built, standin) as served:
        assert served.ingest([prediction(f"s{i}", target=f"node-{i}") for i in range(8)]).status_code == 200
        now = [time.time()]
        client = Timed(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[], now=now, seconds=20.0)
        worker = DeliveryWorker(
            served.bot.service, client, Metrics(), WorkerConfig(lease_s=60.0, storm_threshold=3), clock=lambda: now[0]
        )
        standin.faults.error("chat.postMessage", "msg_blocks_too_long", times=3)
        claimed_at = now[0]
        assert worker.run_once() == 8
        lease_end = claimed_at + 60.0
        late = [start - claimed_at for start in client.starts if start >= lease_end - 10.0]  # LEASE_MARGIN_S
        assert late == [], f"calls started {late} s after the claim of a 60 s lease"


def test_a_digest_s_notification_text_says_what_it_holds(digest_bot: BotUnderTest) -> None:
    """The ``text`` of a message is its push notification and what screen readers read instead of the blocks: a
    digest's said only "5 recommendations (digest)". It now names the first kinds and their targets."""
    bot = digest_bot
    batch = [
        prediction("t1", fault_type="disk_failure", target="a1-n1", action="inspect"),
        prediction("t2", fault_type="disk_failure", target="b1-n1", action="inspect"),
        prediction("t3", fault_type="psu_failure", target="pdu14-52", action="ticket"),
        prediction("t4", fault_type="disk_failure", target="c1-n1", action="inspect"),
        prediction("t5", fault_type="fan<&>", target="r1-n1", action="check"),
    ]
    assert bot.ingest(batch).status_code == 200
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=30)
    (post,) = _posts(bot)
    assert _header_of(post) == 5
    assert post.body["text"] == (
        "5 recommendations in one digest: 3 × disk_failure → inspect on 3 targets, psu_failure → ticket on "
        "pdu14-52 and fan&lt;&amp;&gt; → check on r1-n1"
    )
