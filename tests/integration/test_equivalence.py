"""The same decide / feedback / outcome sequence with the same seed leaves SQLiteStore and InMemoryStore in the
same learning state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from npo.loop import InMemoryStore, LoopConfig, LoopError, LoopStore, decide, record_feedback, record_outcome
from npo.policy import parse_policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction
from storage import SQLiteStore

KINDS = list(FeedbackKind)


def _drive(store: LoopStore, config: LoopConfig, seed: int) -> list[object]:
    """A random but reproducible history: predictions, clicks (with second clicks and skips), outcomes."""
    policy = parse_policy(RELAXED_POLICY_TEXT)
    rng = np.random.default_rng(seed)
    script = np.random.default_rng(seed + 1000)
    results: list[object] = []
    for i in range(300):
        p = Prediction(
            id=f"p{i}",
            fault_type=f"f{script.integers(3)}",
            target=f"h{script.integers(20)}",
            action=("drain", "investigate")[int(script.integers(2))],
            confidence=float(script.uniform(0.3, 1.0)),
            received_at=float(i * 10),
        )
        with store.transaction() as tx:
            results.append(decide(tx, p, config=config, policy=policy, rng=rng, now=p.received_at))
        for j in range(int(script.integers(4))):
            target = f"p{script.integers(i + 1)}"
            kind = KINDS[int(script.integers(len(KINDS)))]
            operator = "system" if kind is FeedbackKind.SKIPPED else f"op{script.integers(4)}"
            event = FeedbackEvent(target, operator, kind, float(i * 10 + j), f"r{i}-{j}")
            try:
                with store.transaction() as tx:
                    results.append(record_feedback(tx, event, config=config))
                    if script.random() < 0.05:
                        results.append(record_feedback(tx, event, config=config))  # a replay
            except LoopError as exc:
                results.append(type(exc).__name__)
        if script.random() < 0.3:
            outcome = Outcome(f"p{script.integers(i + 1)}", bool(script.random() < 0.5), float(i * 10 + 5))
            try:
                with store.transaction() as tx:
                    results.append(record_outcome(tx, outcome, config=config))
            except LoopError as exc:  # a duplicate prediction was never stored
                results.append(type(exc).__name__)
    return results


def test_sqlite_and_in_memory_learn_the_same(db_path: Path) -> None:
    config = LoopConfig()
    memory = InMemoryStore(config)
    with SQLiteStore(db_path, config, disruptive_actions=()) as sqlite:
        assert _drive(memory, config, seed=5) == _drive(sqlite, config, seed=5)
        assert sqlite.keys() == dict(memory.keys)
        assert sqlite.bandit() == memory.bandit
        assert sqlite.trust() == dict(memory.trust)
        assert sqlite.feedback_log() == list(memory.feedback_log)
        assert sqlite.alignment_samples() == list(memory.samples)
        # one effective answer per sample: the incremental tally, the effective_answers view and the in-memory store
        with sqlite.read() as conn:
            (in_view,) = conn.execute("SELECT COUNT(*) FROM effective_answers").fetchone()
        assert sqlite.counts()["feedback_effective"] == in_view == len(memory.samples)
        assert len(sqlite.audit_entries()) == len(memory.audit_log)
        # The same lines in the same order, details equal (decision and feedback lines come from the audit_log view)
        assert [(kind, subject, detail, at) for _, at, kind, subject, detail in sqlite.audit_entries()] == list(
            memory.audit_log
        )
        # enough learning for the comparison to mean something (95 pulls with this seed since skips after any
        # answer and repeated peer credit stopped counting)
        assert sum(memory.bandit.pulls) > 50


def test_a_rolled_back_replacement_keeps_the_order_of_answers_and_samples(db_path: Path) -> None:
    """InMemoryStore undid a replaced answer by putting it back last: feedback_for (whose first answer an ignored
    skip reports) and the samples (the meta-monitor's window) then came in another order than SQLite's."""
    config = LoopConfig()
    policy = parse_policy(RELAXED_POLICY_TEXT)
    clicks = [("p0", "alice", FeedbackKind.OVERRIDE, "a0"), ("p0", "bob", FeedbackKind.NEUTRAL, "b0")]
    clicks.append(("p1", "carol", FeedbackKind.LIKE, "c0"))
    seen = []
    with SQLiteStore(db_path, config, disruptive_actions=()) as sqlite:
        for store in (InMemoryStore(config, disruptive_actions=()), sqlite):
            with store.transaction() as tx:
                for i in range(2):
                    decide(tx, make_prediction(i), config=config, policy=policy, rng=np.random.default_rng(0), now=0.0)
            for n, (pid, operator, kind, request) in enumerate(clicks):
                with store.transaction() as tx:
                    record_feedback(tx, FeedbackEvent(pid, operator, kind, float(n + 1), request), config=config)
            try:
                with store.transaction() as tx:  # alice changes her answer, and the transaction fails
                    record_feedback(tx, FeedbackEvent("p0", "alice", FeedbackKind.LIKE, 5.0, "a1"), config=config)
                    raise RuntimeError("after the replacement")
            except RuntimeError:
                pass
            with store.transaction() as tx:
                skip = record_feedback(tx, FeedbackEvent("p0", "system", FeedbackKind.SKIPPED, 6.0, "s"), config=config)
                order = [a.event.operator for a in tx.feedback_for("p0")]
            samples = sqlite.alignment_samples() if store is sqlite else list(store.samples)
            seen.append((order, skip, samples))
    assert seen[0] == seen[1]
    assert seen[0][0] == ["alice", "bob"]
