"""``/npo why`` (a key's history), ``/npo mute`` (whether a key was ever decided) and the newest recommendations of
``/npo status`` and the App Home search an index (m020) instead of reading whole tables that grow with the history;
checked on SQLite's query plans of the statements they run, and against a plain count over the tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from npo.loop import LoopConfig, record_feedback
from npo.policy import parse_policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore, migrate
from storage.codec import IS_EFFECTIVE
from storage.connection import connect
from storage.monitoring import key_history, key_known
from storage.outbox import recent_recommendations

NOW = 1_750_000_000.0


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path, cfg = tmp_path / "npo.db", LoopConfig()
    with SQLiteStore(path, cfg) as store:
        predictions = [
            make_prediction(i, fault_type=f"fault_{i % 3}", received_at=NOW + i, confidence=0.4 + (i % 6) / 10)
            for i in range(90)
        ]
        results = store.decide_many(
            predictions, policy=parse_policy(RELAXED_POLICY_TEXT), rng=np.random.default_rng(0), now=NOW + 90
        )
        surfaced = [p for p, r in zip(predictions, results, strict=True) if r.decision.surfaced]
        for i, p in enumerate(surfaced):
            with store.transaction() as tx:
                kind = (FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL)[i % 3]
                record_feedback(tx, FeedbackEvent(p.id, f"u{i % 3}", kind, NOW + 100 + i, f"a{i}"), config=cfg)
                if i % 4 == 0:  # a changed answer: only the newest counts
                    event = FeedbackEvent(p.id, f"u{i % 3}", FeedbackKind.LIKE, NOW + 200 + i, f"b{i}")
                    record_feedback(tx, event, config=cfg)
    return path


def _plans(conn: sqlite3.Connection, call: object) -> list[tuple[str, str]]:
    """(statement, its query plan) for every statement ``call()`` runs on ``conn``."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        call()  # type: ignore[operator]
    finally:
        conn.set_trace_callback(None)
    return [(sql, " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))) for sql in statements]


def _full_reads(plan: str) -> list[str]:
    """The steps of ``plan`` that read a whole table or index: any SCAN but the newest recommendations read from the
    end of their index by time (it stops at the LIMIT), and a sort of the recommendations."""
    ordered = "SCAN recommendations USING INDEX recommendations_by_surfaced"
    steps = plan.split(" | ")
    return [s for s in steps if (s.startswith("SCAN ") and s != ordered) or (ordered in steps and "TEMP B-TREE" in s)]


def test_a_keys_history_searches_indexes(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        (key,) = conn.execute("SELECT key FROM feedback GROUP BY key ORDER BY COUNT(*) DESC, key LIMIT 1").fetchone()
        plans = _plans(conn, lambda: (key_history(conn, key), key_known(conn, key), recent_recommendations(conn, 5)))
    finally:
        conn.close()
    assert len(plans) == 6
    for sql, plan in plans:
        assert _full_reads(plan) == [], (sql, plan)
    recent = [plan for sql, plan in plans if "FROM recommendations" in sql]
    assert recent == ["SCAN recommendations USING INDEX recommendations_by_surfaced"]


def test_a_keys_history_counts_what_a_plain_count_does(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        keys = [r[0] for r in conn.execute("SELECT DISTINCT key FROM decisions ORDER BY key")]
        assert len(keys) > 3
        for key in keys:
            history = key_history(conn, key, latest=3)
            plain = conn.execute(
                f"SELECT f.kind, COUNT(*) FROM feedback f WHERE f.key = ? AND {IS_EFFECTIVE} GROUP BY f.kind", (key,)
            ).fetchall()
            newest = conn.execute(
                f"SELECT f.operator, f.kind, f.at, COALESCE(f.reason, '') FROM feedback f WHERE f.key = ? "
                f"AND {IS_EFFECTIVE} ORDER BY f.id DESC LIMIT 3",
                (key,),
            ).fetchall()
            assert history.answers == dict(plain)
            assert history.latest == tuple(newest)
            assert (
                sum(history.verdicts.values())
                == conn.execute("SELECT COUNT(*) FROM decisions WHERE key = ?", (key,)).fetchone()[0]
            )
    finally:
        conn.close()


def test_the_upgrade_adds_the_indexes_to_a_filled_file(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    conn.executescript("DROP INDEX decisions_by_key; DROP INDEX recommendations_by_surfaced;")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm020_key_and_recent_lookups'")
    conn.commit()
    conn.close()
    db = connect(filled)
    try:
        assert migrate(db) >= 20
        names = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        db.close()
    assert {"decisions_by_key", "recommendations_by_surfaced"} <= names
