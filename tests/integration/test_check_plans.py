"""``npo-bot db check`` on a database with history: each invariant reads every table it needs a bounded number of
times, never once per row of another (a count per key in a correlated subquery read the whole feedback table once
per key: quadratic, more than a minute at 10,000 answers on 8,000 keys). Checked on SQLite's query plans, and the
rewritten invariants still find what they look for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlite_utils import Database
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from npo.loop import LoopConfig, record_feedback, record_outcome
from npo.policy import parse_policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore
from storage.maintenance import _INVARIANTS, check

NOW = 1_750_000_000.0


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """Predictions on several keys, answers (some changed), outcomes, through the loop."""
    path, cfg = tmp_path / "npo.db", LoopConfig()
    policy = parse_policy(RELAXED_POLICY_TEXT)
    with SQLiteStore(path, cfg) as store:
        predictions = [
            make_prediction(i, fault_type=f"fault_{i % 6}", received_at=NOW + i, confidence=0.5 + (i % 5) / 10)
            for i in range(60)
        ]
        results = store.decide_many(predictions, policy=policy, rng=np.random.default_rng(0), now=NOW + 60)
        surfaced = [p for p, r in zip(predictions, results, strict=True) if r.decision.surfaced]
        assert len(surfaced) > 10
        for i, p in enumerate(surfaced):
            with store.transaction() as tx:
                kind = (FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL)[i % 3]
                record_feedback(tx, FeedbackEvent(p.id, f"u{i % 4}", kind, NOW + 100 + i, f"a{i}"), config=cfg)
                if i % 4 == 0:  # a changed answer
                    event = FeedbackEvent(p.id, f"u{i % 4}", FeedbackKind.LIKE, NOW + 200 + i, f"b{i}")
                    record_feedback(tx, event, config=cfg)
        for i, p in enumerate(predictions[::3]):
            with store.transaction() as tx:
                record_outcome(tx, Outcome(p.id, i % 2 == 0, NOW + 300 + i), config=cfg)
    return path


def _scans_per_row(conn: sqlite3.Connection, sql: str) -> list[str]:
    """The steps of ``sql``'s query plan that read a whole table (or index) under a correlated subquery, i.e.
    once per row of the query around it."""
    plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    parent = {node: up for node, up, _, _ in plan}
    detail = {node: text for node, _, _, text in plan}

    def correlated(node: int) -> bool:
        while node in parent:
            node = parent[node]
            if detail.get(node, "").startswith("CORRELATED"):
                return True
        return False

    return [text for node, _, _, text in plan if text.startswith("SCAN ") and correlated(node)]


def test_no_invariant_reads_a_table_once_per_row(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        per_row = {what: scans for what, sql in _INVARIANTS if (scans := _scans_per_row(conn, sql))}
    finally:
        conn.close()
    assert per_row == {}


def test_the_counting_invariants_still_find_wrong_counts(filled: Path) -> None:
    db = Database(filled)
    try:
        assert check(db)[1] == []
        conn = db.conn
        key, n = conn.execute(
            "SELECT key, COUNT(*) FROM feedback WHERE replaces IS NULL AND weight > 0 GROUP BY key ORDER BY key LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE key_alignment SET n = 0 WHERE key = ?", (key,))
        arm, pulls = conn.execute("SELECT arm, pulls FROM bandit_arms WHERE pulls > 0 ORDER BY arm LIMIT 1").fetchone()
        conn.execute("UPDATE bandit_arms SET pulls = ? WHERE arm = ?", (pulls + 100, arm))
        conn.commit()
        problems = {(p.what, p.detail) for p in check(db)[1]}
    finally:
        db.close()
    assert problems == {
        ("key update counts cover their new feedback events of weight above 0", f"{key}: n 0 < feedback events {n}"),
        (
            "bandit pulls = new feedback events on the arm (+ at most one miss update per suppressed outcome)",
            f"{arm}: pulls {pulls + 100}, feedback events {pulls}, suppressed outcomes 0",
        ),
    }
