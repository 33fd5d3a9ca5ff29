"""What the bot keeps in memory per channel, per prediction or per route stays bounded over a long run: many
distinct keys driven through the real code paths leave structures no larger than what is in use at the moment."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import httpx
from slack_sdk import WebClient
from slack_testing import ALICE, TOKEN, BotUnderTest, wait_for

from bot.delivery import DeliveryWorker, WorkerConfig
from bot.metrics import Metrics
from bot.slack.blocks import ACTION_LIKE
from bot.standin import StandIn
from storage import SQLiteStore

CHANNELS = 1_000  # incident channels, one per incident (as incident tools create them), each posted to once
BATCH = 100


def _worker(store: SQLiteStore, standin: StandIn, now: list[float]) -> DeliveryWorker:
    """A delivery worker on ``store`` whose clock is ``now[0]``, moved by hand: one pass at a time."""
    client = WebClient(base_url=standin.api_url, token=TOKEN, timeout=10, retry_handlers=[])
    config = WorkerConfig(batch=BATCH)
    return DeliveryWorker(SimpleNamespace(store=store), client, Metrics(), config, clock=lambda: now[0])  # type: ignore[arg-type]


def _channel(n: int) -> str:
    return f"C0INC{n:05d}"


def test_the_per_channel_pace_and_rate_limit_holds_forget_channels_no_longer_posted_to(
    tmp_path: Path, standin: StandIn
) -> None:
    """The worker remembers, per channel, when its next post may go (Slack's 1 message/s) and, after a 429, until
    when a method is held back there. A channel posted to once is remembered only while that matters: over a run
    that posts to a thousand channels, each once, the worker holds no more channels than one pass posts to."""
    for n in range(CHANNELS):
        standin.add_channel(_channel(n))
    standin.faults.rate_limit("chat.postMessage", times=CHANNELS // 2, retry_after=1)  # half the posts: a 429 first
    with SQLiteStore(tmp_path / "npo.db") as store:
        now = [time.time()]
        for n in range(CHANNELS):
            store.enqueue(_channel(n), "message", {"text": f"incident {n}"}, now[0])
        worker = _worker(store, standin, now)
        passes = 0
        while store.outbox("pending"):
            worker.run_once()
            now[0] += 2.0  # past the pace and every Retry-After of the pass before
            passes += 1
            assert passes < 10 * CHANNELS // BATCH
            assert len(worker._ready_at) <= BATCH and len(worker._limited_until) <= BATCH
        worker.run_once()  # an idle pass: nothing due, nothing held
        assert len(worker._ready_at) == 0 and len(worker._limited_until) == 0
        assert not store.outbox("failed")
        assert all(len(standin.messages(_channel(n))) == 1 for n in range(CHANNELS))


OUTSIDERS = 100  # people who may not answer, each clicking once; and as many unknown paths a scanner tries


def _exposition_lines(bot: BotUnderTest) -> list[str]:
    """The process's own series in ``/metrics`` (the database's gauges left out: they count rows)."""
    text = httpx.get(f"{bot.server.url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("npo_http_") or line.startswith("npo_deliver")]


def test_many_distinct_people_and_paths_leave_nothing_behind_in_the_process(bot: BotUnderTest) -> None:
    """Signed clicks from hundreds of distinct people the bot refuses (not responders) and requests for hundreds of
    distinct unknown paths: the latency series are per route and status class ("other" for any unknown path), each
    refusal's ephemeral reply is a task forgotten once sent, and no structure is keyed by user. The process's
    series are the same after them as after the first few."""
    message = bot.surface("p1")
    assert bot.click(ALICE, ACTION_LIKE, message).status_code == 200

    def outsiders(first: int, last: int) -> None:
        for n in range(first, last):
            user = f"U0OUT{n:05d}"
            bot.standin.add_user(user)
            assert bot.click(user, ACTION_LIKE, message).status_code == 200
            assert httpx.get(f"{bot.server.url}/scan/{n}", timeout=10).status_code == 404

    outsiders(0, 5)
    wait_for(lambda: len(bot.standin.calls("chat.postEphemeral")) == 5)
    _exposition_lines(bot)  # the scrape's own route is counted from the second one
    before = _exposition_lines(bot)
    outsiders(5, OUTSIDERS)
    wait_for(lambda: len(bot.standin.calls("chat.postEphemeral")) == OUTSIDERS)
    wait_for(lambda: not bot.bot.deps._tasks)
    after = _exposition_lines(bot)
    assert [line.rsplit(" ", 1)[0] for line in after] == [line.rsplit(" ", 1)[0] for line in before]
    assert bot.counts()["feedback"] == 1 and bot.counts()["processed_requests"] == 0
