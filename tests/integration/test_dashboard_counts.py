"""The outbox per state and the open recommendations that ``/npo status``, the App Home and every metrics scrape show
(``SQLiteStore.counts``) are read without going through the outbox or the recommendations row by row (m021): the
pending and the failed messages through their partial indexes, the sent ones as the rest of a tally, the open
recommendations from a figure kept by triggers. Checked on SQLite's query plans of the statements ``counts`` runs,
and against the plain counts it used to run, on a filled file, across writers, restarts and hand edits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from npo.loop import LoopConfig
from npo.policy import parse_policy
from npo.types import Outcome
from storage import SQLiteStore, check, connect, migrate

NOW = 1_750_000_000.0
# What counts() ran before m021, whose figures it must keep (a state with no message has no entry).
PLAIN = (
    "SELECT 'recommendations_open', COUNT(*) FROM recommendations WHERE resolved_at IS NULL",
    "SELECT 'outbox_' || state, COUNT(*) FROM outbox GROUP BY state",
)
SHOWN = ("recommendations_open", "outbox_pending", "outbox_sent", "outbox_failed")
# The only SCANs allowed of the two tables: of a partial index of a state that stays small.
SMALL_STATE_INDEXES = {"outbox_due": "WHERE state = 'pending'", "outbox_failed": "WHERE state = 'failed'"}


def _plain(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(str(path))
    try:
        return {str(name): int(n) for sql in PLAIN for name, n in conn.execute(sql).fetchall()}
    finally:
        conn.close()


def _shown(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k in SHOWN}


def _fill(store: SQLiteStore, round_: int, n: int = 40) -> None:
    """Decide ``n`` predictions (a recommendation and a pending post each, surfaced ones), then post some, fail some,
    requeue one of the failed, close some recommendations by an outcome and some by a resolved alert."""
    now = NOW + 1000 * round_
    batch = [make_prediction(1000 * round_ + i, received_at=now + i) for i in range(n)]
    store.decide_many(batch, policy=parse_policy(RELAXED_POLICY_TEXT), rng=np.random.default_rng(round_), now=now)
    claimed = store.claim_due(now + n + 100, limit=n)
    assert len(claimed) >= 20
    for i, item in enumerate(claimed):
        if i % 5 == 0:
            store.mark_failed(item.id, "channel_not_found", attempt=item.attempts, at=now + n + 101)
        elif i % 5 != 1:  # i % 5 == 1 stays pending (its lease runs out)
            store.mark_sent(item.id, "C1", f"{round_}.{i}", at=now + n + 101, attempt=item.attempts)
    store.requeue_failed(now + n + 102, since=now + n + 101, codes=("channel_not_found",), dry_run=False)
    with store.transaction() as tx:
        for i, p in enumerate(batch):
            if i % 3 == 0:
                tx.add_outcome(Outcome(p.id, bool(i % 2), now + n + 200 + i))
            elif i % 3 == 1 and i % 2:
                tx.close_recommendation(p.id, now + n + 300 + i)


def _fail_some(store: SQLiteStore, now: float) -> None:
    """Leave a few failed messages (the requeue above put the earlier ones back)."""
    for i, item in enumerate(store.claim_due(now, limit=6)):
        if i % 2 == 0:
            store.mark_failed(item.id, "invalid_auth", attempt=item.attempts, at=now)


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "npo.db"
    with SQLiteStore(path, LoopConfig()) as store:
        for round_ in range(3):
            _fill(store, round_)
        _fail_some(store, NOW + 10_000)
    return path


def _traced_plans(store: SQLiteStore) -> list[tuple[str, str]]:
    """(statement, its query plan) for every statement ``store.counts()`` runs; counts() is called twice, so both
    the first tally and the incremental one are seen."""
    statements: list[str] = []
    with store.read() as conn:  # the thread's connection, which counts() reads through too
        conn.set_trace_callback(statements.append)
    try:
        store.counts()
        store.counts()
    finally:
        with store.read() as conn:
            conn.set_trace_callback(None)
            plans = [
                (sql, " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")))
                for sql in statements
                if sql.lstrip().upper().startswith(("SELECT", "WITH"))
            ]
    return plans


def test_counts_read_no_outbox_or_recommendation_row_by_row(filled: Path) -> None:
    with SQLiteStore(filled, LoopConfig()) as store:
        with store.read() as conn:
            indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall())
        plans = _traced_plans(store)
    touched = [(sql, plan) for sql, plan in plans if "outbox" in sql or "recommendations" in sql]
    assert len(touched) >= 4
    for sql, plan in touched:
        for step in plan.split(" | "):
            assert "TEMP B-TREE" not in step, (sql, plan)
            if step.split()[:2] in (["SCAN", "outbox"], ["SCAN", "recommendations"]):
                index = step.split(" INDEX ")[-1] if " INDEX " in step else ""
                assert index in SMALL_STATE_INDEXES, (sql, plan)
                assert indexes[index].endswith(SMALL_STATE_INDEXES[index]), indexes[index]


def test_the_failed_messages_are_listed_through_their_index(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        sql = (
            "SELECT id, kind, channel, prediction_id, attempts, next_attempt_at, COALESCE(last_error, ''), payload "
            "FROM outbox WHERE state = 'failed' AND (? IS NULL OR next_attempt_at >= ?) ORDER BY id"
        )
        plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (None, None)))
    finally:
        conn.close()
    assert "outbox_failed" in plan, plan


def test_the_figures_are_those_of_the_plain_counts(filled: Path) -> None:
    plain = _plain(filled)
    # the file has every state and both open and closed recommendations
    assert set(plain) == set(SHOWN) and min(plain.values()) > 0
    conn = sqlite3.connect(str(filled))
    try:
        closed = conn.execute("SELECT COUNT(*) FROM recommendations WHERE resolved_at IS NOT NULL").fetchone()[0]
    finally:
        conn.close()
    assert closed > 0
    with SQLiteStore(filled, LoopConfig()) as reader, SQLiteStore(filled, LoopConfig()) as writer:
        assert _shown(reader.counts()) == plain
        for round_ in range(3, 5):  # the reader's tally brought up to date with another store's writes
            _fill(writer, round_)
            _fail_some(writer, NOW + 10_000 * round_)
            assert _shown(reader.counts()) == _plain(filled)
            assert _shown(writer.counts()) == _plain(filled)
    with SQLiteStore(filled, LoopConfig()) as restarted:
        counts = restarted.counts()
    assert _shown(counts) == _plain(filled)
    # the same entries in the same order as before (a state with no message has none)
    assert [k for k in counts if k in SHOWN] == ["recommendations_open", *sorted(k for k in plain if "outbox" in k)]


def test_a_state_with_no_message_has_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with SQLiteStore(path, LoopConfig()) as store:
        assert _shown(store.counts()) == _plain(path) == {"recommendations_open": 0}
        store.decide_many(
            [make_prediction(i) for i in range(3)],
            policy=parse_policy(RELAXED_POLICY_TEXT),
            rng=np.random.default_rng(0),
            now=NOW,
        )
        assert _shown(store.counts()) == _plain(path) == {"recommendations_open": 3, "outbox_pending": 3}


def test_the_open_count_survives_hand_edits_and_db_check_recounts_it(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        conn.execute(
            "UPDATE recommendations SET resolved_at = NULL WHERE rowid IN (SELECT MIN(rowid) FROM "
            "recommendations WHERE resolved_at IS NOT NULL)"
        )
        conn.execute(
            "DELETE FROM recommendations WHERE rowid = (SELECT MAX(rowid) FROM recommendations "
            "WHERE resolved_at IS NULL)"
        )
        conn.execute("UPDATE recommendations SET resolved_at = resolved_at + 1 WHERE resolved_at IS NOT NULL")
        conn.commit()
    finally:
        conn.close()
    with SQLiteStore(filled, LoopConfig()) as store:
        assert _shown(store.counts()) == _plain(filled)
    db = connect(filled)
    what = "the open recommendation count is the number of recommendations not closed"
    try:
        assert [p for p in check(db)[1] if p.what == what] == []  # (the deleted row has its own problem)
        db.conn.execute("UPDATE recommendations_open_count SET n = n + 2")
        problems = [p for p in check(db)[1] if p.what == what]
    finally:
        db.close()
    assert len(problems) == 1 and "n " in problems[0].detail


def test_the_upgrade_counts_the_open_recommendations_of_a_filled_file(filled: Path) -> None:
    expected = _plain(filled)
    conn = sqlite3.connect(str(filled))
    conn.executescript(
        "DROP TRIGGER recommendations_open_insert; DROP TRIGGER recommendations_open_update; "
        "DROP TRIGGER recommendations_open_delete; DROP TABLE recommendations_open_count; DROP INDEX outbox_failed; "
        "DELETE FROM _sqlite_migrations WHERE name = 'm021_dashboard_counts';"
    )
    conn.close()
    db = connect(filled)
    try:
        assert migrate(db) >= 21
        assert db.conn.execute("SELECT n FROM recommendations_open_count").fetchall() == [
            (expected["recommendations_open"],)
        ]
    finally:
        db.close()
    with SQLiteStore(filled, LoopConfig()) as store:
        assert _shown(store.counts()) == expected
