"""Partial pooling (``LoopConfig.pool_keys``) against a real SQLite file: the parent rows are plain key rows (no
schema change), the store learns exactly what the in-memory reference learns, ``decide_batch`` (the bulk path,
which reads the parents with the keys) scores as ``decide`` does, and ``db check`` finds nothing wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npo.bandit import BanditConfig
from npo.loop import InMemoryStore, LoopConfig, LoopStore, decide, decide_batch, record_feedback, record_outcome
from npo.policy import parse_policy
from npo.scoring import PARENT_PREFIX
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, check, connect

CONFIG = LoopConfig(bandit=BanditConfig(thresholds=(0.6,)), dedupe_window_s=0.0, pool_keys=True)
POLICY = parse_policy("")
FAULTS = ("disk_full", "psu")
KINDS = (FeedbackKind.OVERRIDE, FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.SKIPPED)


def _p(i: int, action: str = "investigate") -> Prediction:
    return Prediction(
        id=f"p{i}",
        fault_type=FAULTS[i % 2],
        target=f"r{i % 5}-n{i}",
        action=action,
        confidence=(0.62, 0.8, 0.95)[i % 3],
        received_at=_at(i),
    )


def _at(i: int) -> float:
    """Two hours apart: the SQLite store's Safety Policy context (override cool-down, channel cap) then agrees
    with the in-memory reference's empty world."""
    return 7200.0 * i


def _history(store: LoopStore) -> list[float]:
    """Thirty predictions, answered (some changed, some skipped) and their outcomes; returns the m of each."""
    rng = np.random.default_rng(4)
    ms = []
    for i in range(30):
        with store.transaction() as tx:
            decision = decide(tx, _p(i), config=CONFIG, policy=POLICY, rng=rng, now=_at(i)).decision
        ms.append(decision.misalignment)
        with store.transaction() as tx:
            if decision.surfaced:
                kind = KINDS[i % 4]
                operator = "system" if kind is FeedbackKind.SKIPPED else f"op{i % 3}"
                record_feedback(tx, FeedbackEvent(f"p{i}", operator, kind, _at(i) + 5, f"r{i}"), config=CONFIG)
                if i % 5 == 0:  # a changed mind
                    event = FeedbackEvent(f"p{i}", operator, FeedbackKind.NEUTRAL, _at(i) + 7, f"r{i}b")
                    record_feedback(tx, event, config=CONFIG)
            record_outcome(tx, Outcome(f"p{i}", real_fault=i % 3 == 1, at=_at(i) + 9), config=CONFIG)
    return ms


def test_sqlite_learns_what_the_reference_learns_and_the_database_stays_consistent(tmp_path: Path) -> None:
    reference = InMemoryStore(CONFIG)
    expected_ms = _history(reference)
    path = tmp_path / "npo.db"
    with SQLiteStore(path, CONFIG) as store:
        assert _history(store) == pytest.approx(expected_ms)
        stored = store.keys()
    assert {k for k in stored if k.startswith(PARENT_PREFIX)} == {PARENT_PREFIX + f for f in FAULTS}
    assert set(stored) == set(reference.keys)
    for key, state in reference.keys.items():
        assert stored[key].m == pytest.approx(state.m)
        assert stored[key].weight_sum == pytest.approx(state.weight_sum)
    assert any(m > 0 for m in expected_ms)  # the history moved the scores
    db = connect(path)
    try:
        assert check(db) == (LATEST_SCHEMA_VERSION, [])
    finally:
        db.close()


def test_decide_batch_scores_with_the_parent_as_decide_does(tmp_path: Path) -> None:
    batch = [_p(i, action="observe") for i in range(100, 112)]  # keys never seen before
    with SQLiteStore(tmp_path / "npo.db", CONFIG) as store:
        _history(store)
        with store.transaction() as tx:
            one_by_one = [
                decide(tx, p, config=CONFIG, policy=POLICY, rng=np.random.default_rng(0), now=_at(200)).decision
                for p in batch
            ]
    with SQLiteStore(tmp_path / "npo2.db", CONFIG) as store:
        _history(store)
        bulk = store.decide_many(batch, policy=POLICY, rng=np.random.default_rng(0), now=_at(200))
    assert [r.decision.misalignment for r in bulk] == pytest.approx([d.misalignment for d in one_by_one])
    # New keys borrow their parent's m, which is not zero.
    assert any(d.misalignment > 0 for d in one_by_one)
    reference = InMemoryStore(CONFIG)
    _history(reference)
    with reference.transaction() as tx:
        plain = decide_batch(tx, batch, config=CONFIG, policy=POLICY, rng=np.random.default_rng(0), now=_at(200))
    assert [r.decision.misalignment for r in plain] == pytest.approx([d.misalignment for d in one_by_one])
