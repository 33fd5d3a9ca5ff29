"""The skip sweeper: skipped exactly at the timeout, not a second earlier, and only once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from jobs_testing import OPS, RELAXED_POLICY, prediction, surface_and_post
from slack_sdk import WebClient
from weekly_slot import write_across_the_slot

from bot.jobs import skips
from bot.jobs.build import JobDeps, build_jobs
from bot.jobs.report import build_report
from bot.jobs.skips import SKIP_NOTE, sweep_skips
from bot.jobs.weekly import WEEK
from bot.standin import StandIn
from npo.loop import decide, record_feedback, record_outcome
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore
from storage.jobs import unanswered_before

T0 = 1_742_990_000.0
POSTED = T0 + 30.0
TIMEOUT = 3600.0


def test_skipped_exactly_at_the_timeout_once(store: SQLiteStore) -> None:
    surface_and_post(store, [prediction(1, T0)], posted_at=POSTED)
    wakes: list[int] = []

    def wake() -> None:
        wakes.append(1)

    assert sweep_skips(store, now=POSTED + TIMEOUT - 1, timeout_s=TIMEOUT, on_enqueue=wake).skipped == ()
    assert store.feedback_log() == [] and wakes == []

    assert sweep_skips(store, now=POSTED + TIMEOUT, timeout_s=TIMEOUT, on_enqueue=wake).skipped == ("p1",)
    assert sweep_skips(store, now=POSTED + TIMEOUT + 60, timeout_s=TIMEOUT, on_enqueue=wake).skipped == ()
    (applied,) = store.feedback_log()
    assert applied.event.kind is FeedbackKind.SKIPPED and applied.event.operator == "system"
    assert applied.event.request_id == "skip:p1" and applied.event.at == POSTED + TIMEOUT
    (update,) = store.outbox("pending")
    assert update.kind == "update" and update.prediction_id == "p1"
    assert update.payload == {
        "prediction_id": "p1",
        "note": SKIP_NOTE,
        "channel": update.channel,
        "ts": "1700000000.000000",
    }
    assert wakes == [1]


def test_answered_and_unposted_recommendations_are_not_skipped(store: SQLiteStore) -> None:
    surface_and_post(store, [prediction(1, T0), prediction(2, T0)], posted_at=POSTED)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p1", "U1", FeedbackKind.LIKE, T0 + 60, "r1"), config=store.config)
    # p3 is surfaced but its post is still pending in the outbox: nobody has seen it yet.
    with store.transaction() as tx:
        p3 = prediction(3, T0, fault_type="psu")
        decide(tx, p3, config=store.config, policy=RELAXED_POLICY, rng=np.random.default_rng(1), now=T0)
    result = sweep_skips(store, now=POSTED + 10 * TIMEOUT, timeout_s=TIMEOUT)
    assert result.skipped == ("p2",)
    kinds = sorted((a.event.prediction_id, a.event.kind.value) for a in store.feedback_log())
    assert kinds == [("p1", "like"), ("p2", "skipped")]


def test_recommendations_posted_together_in_a_digest_are_not_skipped(store: SQLiteStore) -> None:
    """An alert storm's digest: several posted recommendations share one message, which has no buttons."""
    surface_and_post(store, [prediction(1, T0)], posted_at=POSTED)  # a message of its own
    storm = [prediction(i, T0) for i in range(2, 6)]
    rng = np.random.default_rng(0)
    with store.transaction() as tx:
        for p in storm:
            decide(tx, p, config=store.config, policy=RELAXED_POLICY, rng=rng, now=T0)
    for item in store.claim_due(POSTED, limit=10):
        store.mark_sent(item.id, item.channel, "1700000001.000000", at=POSTED)  # the one digest message
    result = sweep_skips(store, now=POSTED + 10 * TIMEOUT, timeout_s=TIMEOUT)
    assert result.skipped == ("p1",)
    assert [a.event.prediction_id for a in store.feedback_log()] == ["p1"]


def test_the_request_id_makes_a_second_sweeper_harmless(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "npo.db") as a, SQLiteStore(tmp_path / "npo.db") as b:
        surface_and_post(a, [prediction(1, T0)], posted_at=POSTED)
        first = sweep_skips(a, now=POSTED + TIMEOUT, timeout_s=TIMEOUT)
        second = sweep_skips(b, now=POSTED + TIMEOUT, timeout_s=TIMEOUT)
        assert (first.skipped, second.skipped) == (("p1",), ())
        assert len(a.feedback_log()) == 1 and len(a.outbox("pending")) == 1


def test_an_answer_or_outcome_after_the_sweep_read_its_list_wins(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper reads the unanswered recommendations, then records each skip in a transaction of its own: a click
    or an outcome in between must not be followed by a skip (the list read before them stands in for the race)."""
    surface_and_post(store, [prediction(1, T0), prediction(2, T0), prediction(3, T0)], posted_at=POSTED)
    with store.read() as conn:
        stale = unanswered_before(conn, POSTED + TIMEOUT, 500)
    assert [u.prediction_id for u in stale] == ["p1", "p2", "p3"]
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p1", "U1", FeedbackKind.LIKE, POSTED + 60, "r1"), config=store.config)
        record_outcome(tx, Outcome("p2", True, POSTED + 90, "alertmanager"), config=store.config)
    monkeypatch.setattr(skips, "unanswered_before", lambda *_args, **_kw: stale)
    assert sweep_skips(store, now=POSTED + TIMEOUT, timeout_s=TIMEOUT).skipped == ("p3",)
    assert [(a.event.prediction_id, a.event.kind.value) for a in store.feedback_log()] == [
        ("p1", "like"),
        ("p3", "skipped"),
    ]


def test_a_skip_written_just_after_the_summary_read_its_week_is_in_the_next_summary(
    db_path: Path, client: WebClient, standin: StandIn
) -> None:
    """The sweep runs just before the weekly slot, but its skip waits for the write lock (another connection's long
    write) until after the slot's summary read the week: the skip is in the next summary, not in neither."""
    with SQLiteStore(db_path) as store:
        start = time.time()
        surface_and_post(store, [prediction(1, start - 2 * TIMEOUT)], posted_at=start - 2 * TIMEOUT)
        deps = JobDeps(store, client, OPS, timezone="UTC", skip_timeout_min=TIMEOUT / 60)
        (sweep, _, _) = build_jobs(deps)
        slot = write_across_the_slot(db_path, store, client, OPS, lambda: sweep.run(datetime.now(UTC)))
        assert store.counts().get("feedback_skipped") == 1
        (summary,) = [m.text for m in standin.messages(OPS) if m.text.startswith("NPO weekly summary")]
        this_week = 1 if "skipped 100% (1)" in summary else 0
        assert this_week or "Answers: none this period" in summary
        next_week = build_report(store, since=slot, until=slot + WEEK, timezone="UTC").answers
        assert this_week + next_week == 1
