"""Replays, duplicates, second clicks, outbox, job claims and the policy context, on a real file."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from storage_testing import make_prediction, surface

from npo.loop import SYSTEM_OPERATOR, decide, record_feedback, record_outcome
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Verdict
from storage import SQLiteStore, check, connect
from storage.errors import LeaseLost


def _click(store: SQLiteStore, pid: str, who: str, kind: FeedbackKind, rid: str, at: float = 10.0) -> str:
    with store.transaction() as tx:
        return record_feedback(tx, FeedbackEvent(pid, who, kind, at, rid), config=store.config).status


def test_replayed_request_is_recorded_once(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(0)], relaxed_policy)
    assert _click(store, "p0", "alice", FeedbackKind.LIKE, "req-1") == "recorded"
    pulls = sum(store.bandit().pulls)
    assert _click(store, "p0", "alice", FeedbackKind.LIKE, "req-1") == "duplicate"
    assert len(store.feedback_log()) == 1
    assert sum(store.bandit().pulls) == pulls


def test_second_click_replaces_the_first_in_learning_but_both_are_logged(
    store: SQLiteStore, relaxed_policy: Policy
) -> None:
    surface(store, [make_prediction(0)], relaxed_policy)
    assert _click(store, "p0", SYSTEM_OPERATOR, FeedbackKind.SKIPPED, "skip:p0") == "recorded"
    assert _click(store, "p0", "alice", FeedbackKind.LIKE, "req-1") == "replaced"  # a click replaces the skip
    assert _click(store, "p0", "alice", FeedbackKind.OVERRIDE, "req-2") == "replaced"
    key = store.decision("p0").key  # type: ignore[union-attr]
    assert store.keys()[key].n == 1  # one person, one recommendation, one vote
    assert sum(store.bandit().pulls) == 1
    log = store.feedback_log()
    assert [f.event.request_id for f in log] == ["skip:p0", "req-1", "req-2"]
    assert [f.replaces for f in log] == [None, "skip:p0", "req-1"]
    with store.read() as conn:
        effective = conn.execute(
            "SELECT f.request_id FROM effective_answers e JOIN feedback f ON f.id = e.feedback_id"
        ).fetchall()
    assert effective == [("req-2",)]
    assert [e[3] for e in store.audit_entries(kind="feedback")] == ["p0", "p0", "p0"]
    db = connect(store.path)
    assert check(db)[1] == []
    db.close()


def test_duplicate_predictions_are_recorded_once(store: SQLiteStore, default_policy: Policy) -> None:
    rng = np.random.default_rng(0)
    first = make_prediction(0, received_at=0.0)
    same_fingerprint = make_prediction(0, id="other", received_at=100.0)
    later = make_prediction(0, id="later", received_at=first.received_at + store.config.dedupe_window_s + 1)
    with store.transaction() as tx:
        results = [
            decide(tx, p, config=store.config, policy=default_policy, rng=rng, now=p.received_at)
            for p in (first, first, same_fingerprint, later)
        ]
    assert [r.duplicate for r in results] == [False, True, True, False]
    assert results[2].decision.prediction_id == "p0"
    assert store.counts()["predictions"] == 2
    assert len(store.audit_entries(kind="duplicate_prediction")) == 2


def test_outcome_recorded_once_and_closes_the_recommendation(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(0)], relaxed_policy)
    with store.transaction() as tx:
        assert record_outcome(tx, Outcome("p0", True, 50.0), config=store.config).recorded
        assert not record_outcome(tx, Outcome("p0", False, 60.0), config=store.config).recorded
    assert store.counts()["outcomes"] == 1
    assert store.counts()["recommendations_open"] == 0


def test_policy_context_counts_the_real_world(store: SQLiteStore, default_policy: Policy) -> None:
    rng = np.random.default_rng(0)
    drains = [make_prediction(i, action="drain", target=f"c1-n{i}", received_at=float(i)) for i in range(3)]
    with store.transaction() as tx:
        verdicts = [
            decide(tx, p, config=store.config, policy=default_policy, rng=rng, now=p.received_at).decision
            for p in drains
        ]
    # max_concurrent = 2 open disruptive recommendations per cluster: the third drain in c1 is blocked
    assert [d.verdict for d in verdicts] == [Verdict.SURFACE, Verdict.SURFACE, Verdict.BLOCK]
    assert verdicts[2].rule == "blast_radius"
    with store.transaction() as tx:
        record_outcome(tx, Outcome("p0", True, 5.0), config=store.config)
        ctx = tx.policy_context(drains[2], verdicts[1].key, "incident", 10.0)
    assert ctx.active_disruptive_by_cluster == {"c1": 1}
    assert ctx.surfaced_last_hour_by_channel == {"incident": 2}
    assert _click(store, "p1", "alice", FeedbackKind.OVERRIDE, "o-1", at=20.0) == "recorded"
    with store.transaction() as tx:
        ctx = tx.policy_context(drains[1], verdicts[1].key, "incident", 30.0)
        late = tx.policy_context(drains[1], verdicts[1].key, "incident", 10_000.0)
    assert ctx.last_override_at == {f"key:{verdicts[1].key}": 20.0, "target:c1-n1": 20.0}
    assert late.surfaced_last_hour_by_channel == {"incident": 0}


def test_outbox_is_written_with_the_decision_and_delivered_once(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(0), make_prediction(1)], relaxed_policy)
    reopened = SQLiteStore(store.path)  # e.g. after a crash between "decided" and "posted"
    assert [i.payload for i in reopened.outbox("pending")] == [{"prediction_id": "p0"}, {"prediction_id": "p1"}]
    due = reopened.claim_due(now=100.0, limit=10, lease_s=30.0)
    assert [i.attempts for i in due] == [1, 1]
    assert reopened.claim_due(now=110.0) == []  # leased
    reopened.mark_sent(due[0].id, "C123", "1700000000.000100", at=111.0)
    reopened.mark_retry(due[1].id, 200.0, "ratelimited")
    assert [i.id for i in reopened.claim_due(now=150.0)] == []
    again = reopened.claim_due(now=200.0)
    assert [(i.id, i.attempts, i.last_error) for i in again] == [(due[1].id, 2, "ratelimited")]
    reopened.mark_failed(again[0].id, "channel_not_found")
    assert [i.state for i in reopened.outbox()] == ["sent", "failed"]
    with reopened.read() as conn:
        rows = conn.execute("SELECT prediction_id, channel, message_ts, state FROM recommendations ORDER BY 1")
        assert rows.fetchall() == [("p0", "C123", "1700000000.000100", "posted"), ("p1", "incident", None, "failed")]
    reopened.close()


def test_a_result_on_a_lapsed_lease_changes_nothing_while_the_new_owner_holds_the_message(store: SQLiteStore) -> None:
    """Worker A's lease ran out and worker B claimed the messages (its call still in flight: they are pending).
    A's late result — sent, retry, failed, a digest's sent, a deferral — is refused and leaves B's claim as it is:
    otherwise A's retry would end B's lease early (a third worker posts the message again), or A's failure would
    mark failed a message B is posting."""
    ids = [store.enqueue("C1", "message", {"text": f"m{i}"}, 0.0) for i in range(5)]
    old = store.claim_due(now=0.0, limit=5, lease_s=10.0)  # worker A: attempt 1
    new = store.claim_due(now=10.0, limit=5, lease_s=60.0)  # A's lease is over: worker B, attempt 2
    assert [i.id for i in old] == [i.id for i in new] == ids and {i.attempts for i in new} == {2}
    held = store.outbox()
    with pytest.raises(LeaseLost):
        store.mark_sent(ids[0], "C1", "1.000001", at=11.0, attempt=1)
    with pytest.raises(LeaseLost):
        store.mark_retry(ids[1], 12.0, "ratelimited", attempt=1)
    with pytest.raises(LeaseLost):
        store.mark_failed(ids[2], "channel_not_found", attempt=1)
    assert store.mark_sent_many([(ids[3], 1)], "C1", "1.000002", at=11.0) == 0
    assert store.defer_many([(ids[4], 12.0, "waiting for the channel's pace", 1)]) == 0
    assert store.outbox() == held  # pending, B's attempt, due when B's lease ends
    assert store.claim_due(now=69.0) == []  # nobody else takes them while B holds them
    assert store.mark_sent_many([(i, 2) for i in ids], "C1", "1.000003", at=20.0) == 5  # B's result is recorded


def test_job_claimed_once_across_threads_and_stores(db_path: Path) -> None:
    stores = [SQLiteStore(db_path), SQLiteStore(db_path)]
    wins: list[bool] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        won = stores[i % 2].claim_job("weekly_summary", "2025-W13", now=1.0, owner=f"w{i}")
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert stores[0].claim_job("weekly_summary", "2025-W14", now=2.0)
    assert stores[0].claim_request("Ev123", "event", 1.0)
    assert not stores[1].claim_request("Ev123", "event", 2.0)
    for s in stores:
        s.close()
