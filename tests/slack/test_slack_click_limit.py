"""The per-person click limit over real HTTP: a burst over it is acknowledged, not learnt from, audited and told
to the person; retries are recorded once; the limit holds across threads, two servers on one file, and processes.

Every test fixes the service's clock, so how many clicks the bucket allows does not depend on how fast the
machine is (the bucket refills with the clock)."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from abuse_testing import running_bot
from slack_testing import ALICE, BOB, INCIDENT, MALLORY, SECRET, BotUnderTest, make_settings, wait_for

from bot.config import ConfigError, Settings, load_settings
from bot.service import NpoService
from bot.standin import StandIn
from npo.policy import DEFAULT_POLICY
from npo.types import FeedbackEvent, FeedbackKind, Prediction
from storage import SQLiteStore
from storage.ratelimit import ClickLimit

BURST = 3
NOW = 1_900_000_000.0  # the services' fixed clock


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    for user in (ALICE, BOB, MALLORY):
        standin.add_user(user)
    return make_settings(
        tmp_path, standin, feedback_burst=BURST, feedback_rate_per_min=1.0, responders=(ALICE, BOB, MALLORY)
    )


@pytest.fixture
def bot(settings: Settings, standin: StandIn) -> Iterator[BotUnderTest]:
    with running_bot(settings, standin) as running:
        yield running


def _freeze(bot: BotUnderTest, at: float = NOW) -> None:
    bot.bot.service.clock = lambda: at


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _limited(db: Path) -> list[tuple[str, str, str]]:
    """(operator, recommendation, kind) of every feedback_rate_limited line of the audit_log view, in order."""
    rows = _rows(db, "SELECT subject, detail FROM audit_log WHERE kind = 'feedback_rate_limited' ORDER BY id")
    return [(json.loads(d)["operator"], s, json.loads(d)["kind"]) for s, d in rows]


def _told(standin: StandIn, user: str) -> list[str]:
    return [
        m.text
        for m in standin.messages(INCIDENT, include_ephemeral=True)
        if m.ephemeral_to == user and "not counted" in m.text
    ]


def test_a_burst_over_the_limit_is_acknowledged_not_learnt_audited_and_told(bot: BotUnderTest) -> None:
    messages = [bot.surface(f"p{i}") for i in range(BURST + 2)]
    _freeze(bot)
    learnt = bot.counts()
    responses = [bot.click(ALICE, "npo_like", m) for m in messages]
    assert [r.status_code for r in responses] == [200] * len(messages)  # acknowledged: Slack never retries
    db = bot.bot.settings.db_path
    assert _rows(db, "SELECT prediction_id FROM feedback WHERE operator = ? ORDER BY id", ALICE) == [
        (f"p{i}",) for i in range(BURST)
    ]
    assert bot.counts()["key_n"] == learnt["key_n"] + BURST  # the learning state saw three answers, not five
    assert _limited(db) == [(ALICE, f"p{BURST}", "like"), (ALICE, f"p{BURST + 1}", "like")]
    told = wait_for(lambda: len(_told(bot.standin, ALICE)) == 2 and _told(bot.standin, ALICE))
    assert all("Too many clicks" in text and "not counted" in text for text in told)
    # Someone else's bucket is their own.
    assert bot.click(BOB, "npo_like", messages[-1]).status_code == 200
    assert _rows(db, "SELECT COUNT(*) FROM feedback WHERE operator = ?", BOB) == [(1,)]


def test_a_retried_refused_click_is_recorded_once(bot: BotUnderTest) -> None:
    messages = [bot.surface(f"p{i}") for i in range(BURST + 1)]
    _freeze(bot)
    for message in messages[:BURST]:
        assert bot.click(ALICE, "npo_like", message).status_code == 200
    body = bot.click_body(ALICE, "npo_like", messages[BURST])  # one click, sent three times (a retry, a replay)
    assert {bot.send_signed(body).status_code for _ in range(3)} == {200}
    db = bot.bot.settings.db_path
    assert _limited(db) == [(ALICE, f"p{BURST}", "like")]
    assert _rows(db, "SELECT COUNT(*) FROM processed_requests WHERE kind = 'feedback_rate_limited'") == [(1,)]
    # The refused click was not charged again: after one token's worth of time exactly one more click counts.
    _freeze(bot, NOW + 60.0)
    second = bot.click_body(ALICE, "npo_like", messages[BURST])
    assert bot.send_signed(second).status_code == 200
    assert bot.send_signed(second).status_code == 200  # a replay of a recorded click: recorded once
    assert _rows(db, "SELECT COUNT(*) FROM feedback WHERE operator = ?", ALICE) == [(BURST + 1,)]
    assert len(_limited(db)) == 1


def test_a_duplicate_or_unchanged_answer_takes_nothing_from_the_limit(bot: BotUnderTest) -> None:
    messages = [bot.surface(f"p{i}") for i in range(BURST)]
    _freeze(bot)
    body = bot.click_body(ALICE, "npo_like", messages[0])
    for _ in range(5):  # a double-clicked / retried request: one answer, one token
        assert bot.send_signed(body).status_code == 200
    for _ in range(5):  # the same answer again with new clicks: nothing changes, nothing is charged
        assert bot.click(ALICE, "npo_like", messages[0]).status_code == 200
    for message in messages[1:]:
        assert bot.click(ALICE, "npo_like", message).status_code == 200
    db = bot.bot.settings.db_path
    assert _rows(db, "SELECT COUNT(*) FROM feedback WHERE operator = ?", ALICE) == [(BURST,)]
    assert _limited(db) == []


def test_an_override_over_the_limit_closes_the_modal_and_is_not_counted(bot: BotUnderTest) -> None:
    messages = [bot.surface(f"p{i}") for i in range(BURST + 1)]
    _freeze(bot)
    for message in messages[:BURST]:
        assert bot.click(ALICE, "npo_like", message).status_code == 200
    assert bot.click(ALICE, "npo_override", messages[BURST]).status_code == 200  # opening the modal is free
    wait_for(bot.standin.views)
    before = bot.counts()
    values = {"reason": {"reason": "false_positive"}}
    response = bot.standin.submit_view(bot.events_url, SECRET, user_id=ALICE, values=values)
    assert response.status_code == 200
    assert not response.content or "errors" not in response.json()  # the modal closes
    db = bot.bot.settings.db_path
    assert _limited(db) == [(ALICE, f"p{BURST}", "override")]
    after = bot.counts()
    assert (after["feedback"], after["key_n"]) == (before["feedback"], before["key_n"])
    wait_for(lambda: _told(bot.standin, ALICE))


def test_concurrent_clicks_on_two_servers_sharing_the_file_get_one_bucket(
    bot: BotUnderTest, settings: Settings, standin: StandIn
) -> None:
    messages = [bot.surface(f"p{i}") for i in range(12)]
    with running_bot(settings, standin, seed=2) as other:
        _freeze(bot)
        _freeze(other)
        bodies = [bot.click_body(ALICE, "npo_like", m) for m in messages]
        with ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(
                pool.map(lambda ib: (bot if ib[0] % 2 else other).send_signed(ib[1]).status_code, enumerate(bodies))
            )
        assert codes == [200] * len(bodies)
        db = settings.db_path
        recorded = _rows(db, "SELECT COUNT(*) FROM feedback WHERE operator = ?", ALICE)[0][0]
        assert recorded == BURST and len(_limited(db)) == len(bodies) - BURST


def _service_clicks(db: str, first: int, count: int) -> list[str]:
    """A service of its own on the shared file (its own connection) records ``count`` clicks by one person."""
    store = SQLiteStore(db)
    limit = ClickLimit(per_minute=1.0, burst=BURST)
    service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: NOW, click_limit=limit)
    try:
        return [
            service.record_click(FeedbackEvent(f"p{i}", ALICE, FeedbackKind.LIKE, NOW, f"r{i}"), None).status
            for i in range(first, first + count)
        ]
    finally:
        store.close()


def test_the_limit_holds_across_threads_and_processes(tmp_path: Path) -> None:
    db = tmp_path / "npo.db"
    store = SQLiteStore(db)
    service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: NOW)
    decided = service.decide(
        [Prediction(f"p{i}", "disk_failure", f"r1-n{i}", "investigate", 0.99, received_at=NOW) for i in range(40)]
    )
    assert all(d.decision.surfaced for d in decided)
    store.close()
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # two processes and two threads, at once
        parts = [pool.apply_async(_service_clicks, (str(db), 20 * k, 10)) for k in range(2)]
        results: list[list[str]] = [[], []]
        threads = [
            threading.Thread(target=lambda k=k: results[k].extend(_service_clicks(str(db), 20 * k + 10, 10)))
            for k in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = [s for part in parts for s in part.get(60)] + results[0] + results[1]
    assert len(statuses) == 40
    assert statuses.count("recorded") == BURST and statuses.count("rate_limited") == 40 - BURST
    assert len(_limited(db)) == 40 - BURST


def test_settings_of_the_limit(tmp_path: Path) -> None:
    base = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "NPO_INGEST_TOKEN": "0123456789abcdef",
        "NPO_INCIDENT_CHANNEL": "C0INC",
        "NPO_OPS_CHANNEL": "C0OPS",
    }
    default = load_settings(base, env_file=None)
    assert (default.feedback_rate_per_min, default.feedback_burst) == (30.0, 30)
    off = load_settings(base | {"NPO_FEEDBACK_RATE_PER_MIN": "0", "NPO_FEEDBACK_BURST": "5"}, env_file=None)
    assert (off.feedback_rate_per_min, off.feedback_burst) == (0.0, 5)
    with pytest.raises(ConfigError) as refused:
        load_settings(base | {"NPO_FEEDBACK_RATE_PER_MIN": "-1", "NPO_FEEDBACK_BURST": "0"}, env_file=None)
    assert set(refused.value.problems) == {"NPO_FEEDBACK_RATE_PER_MIN", "NPO_FEEDBACK_BURST"}
