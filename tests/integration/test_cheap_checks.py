"""m008: CHECKs of the form ``x IN (three or more constants)`` become ORs of equalities (same meaning, a fraction of
the cost per row written), by rebuilding the tables that have one — every row, index, trigger and view kept."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from storage_testing import copy_rows, make_prediction, surface

from npo.loop import LoopConfig, record_feedback, record_outcome
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, check, connect, migrate
from storage.migrations import cheap_checks

REBUILT = ("decisions", "feedback", "recommendations", "outbox", "learning_state", "retraining_proposals")


def _filled(path: Path, policy: Policy) -> None:
    """A database at the latest schema with rows in every rebuilt table (and the others they refer to)."""
    with SQLiteStore(path, LoopConfig()) as store:
        predictions = [make_prediction(i) for i in range(6)]
        surface(store, predictions, policy)
        with store.transaction() as tx:
            for i, kind in enumerate((FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL)):
                event = FeedbackEvent(
                    prediction_id=f"p{i}", operator="alice", kind=kind, at=10.0 + i, request_id=f"r{i}"
                )
                record_feedback(tx, event, config=store.config)
            again = FeedbackEvent(
                prediction_id="p0", operator="alice", kind=FeedbackKind.OVERRIDE, at=20.0, request_id="r9"
            )
            record_feedback(tx, again, config=store.config)  # replaces r0
            record_outcome(tx, Outcome(prediction_id="p1", real_fault=False, at=30.0), config=store.config)
            tx.open_proposal(40.0, "drift")


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return conn.execute(f'SELECT rowid, * FROM "{table}" ORDER BY rowid').fetchall()


def test_upgrade_to_cheap_checks_keeps_every_row_index_trigger_and_view(tmp_path: Path, relaxed_policy: Policy) -> None:
    full = tmp_path / "full.db"
    _filled(full, relaxed_policy)
    old = tmp_path / "v7.db"
    db = connect(old)
    assert migrate(db, stop_before="m008_cheap_checks") == 7
    conn = db.conn
    copy_rows(conn, full, (*REBUILT, "outcomes", "audit_events"))  # effective_answers: kept by the feedback trigger
    before = {t: _rows(conn, t) for t in REBUILT}
    assert all(before[t] for t in REBUILT), {t: len(r) for t, r in before.items()}
    objects = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type != 'table' ORDER BY type, name"
    ).fetchall()
    audit = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
    db.close()

    db = connect(old)
    assert migrate(db, stop_before="m009_answers_in_feedback") == 8
    db.close()
    conn = sqlite3.connect(str(old))
    assert {t: _rows(conn, t) for t in REBUILT} == before
    assert (
        conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type != 'table' ORDER BY type, name"
        ).fetchall()
        == objects
    )
    assert conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall() == audit
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'npo_rebuild_%'").fetchall()
    conn.close()
    with SQLiteStore(old, LoopConfig()) as store:  # migrates to the latest version
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        assert [f.event.request_id for f in store.feedback_log()] == ["r0", "r1", "r2", "r9"]
        assert sorted(s.at for s in store.alignment_samples()) == [11.0, 12.0, 20.0]  # r0 replaced by r9
    db = connect(old)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_no_table_checks_a_list_of_three_or_more_values_with_in(tmp_path: Path) -> None:
    """SQLite builds a temporary index of such a list every time it evaluates the CHECK (~1.7 µs per row written,
    measured); new tables must write the OR form (see storage/README.md, m008)."""
    db = connect(tmp_path / "npo.db")
    migrate(db)
    in_list = re.compile(r"\bIN\s*\(\s*(?:'[^']*'|-?\d+)\s*,\s*(?:'[^']*'|-?\d+)\s*,", re.IGNORECASE)
    offenders = [
        name
        for name, sql in db.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL")
        if in_list.search(sql)
    ]
    db.close()
    assert offenders == []


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("decisions.severity", ("urgent",)),
        ("decisions.verdict", ("maybe",)),
        ("UPDATE recommendations SET state = ? WHERE prediction_id = 'p0'", ("lost",)),
        ("UPDATE outbox SET state = ? WHERE prediction_id = 'p0'", ("gone",)),
        ("UPDATE retraining_proposals SET state = ?", ("maybe",)),
        ("INSERT INTO learning_state (kind, name, m, n, weight_sum, updated_at) VALUES (?, 'x', 0, 0, 0, 0)", ("k",)),
        ("UPDATE learning_state SET name = ? WHERE kind = 'arm' AND name = '0'", ("zero",)),
        ("UPDATE learning_state SET alpha = ? WHERE kind = 'arm' AND name = '0'", (None,)),
    ],
)
def test_the_rewritten_checks_still_refuse_bad_values(
    tmp_path: Path, relaxed_policy: Policy, sql: str, params: tuple[object, ...]
) -> None:
    path = tmp_path / "npo.db"
    _filled(path, relaxed_policy)
    conn = sqlite3.connect(str(path), isolation_level=None)
    before = conn.execute("SELECT COUNT(*), SUM(length(sql)) FROM sqlite_master").fetchone()
    snapshot = list(conn.iterdump())
    if sql.startswith("decisions."):  # append-only: a copy of p0 under a new id, with the one bad column
        bad = sql.split(".")[1]
        cols = [r[1] for r in conn.execute("PRAGMA table_info(decisions)")]
        values = [
            "seq + 100" if c == "seq" else "'px'" if c == "prediction_id" else "?" if c == bad else c for c in cols
        ]
        sql = f"INSERT INTO decisions ({', '.join(cols)}) SELECT {', '.join(values)} FROM decisions WHERE seq = 1"
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute(sql, params)
    assert list(conn.iterdump()) == snapshot
    assert conn.execute("SELECT COUNT(*), SUM(length(sql)) FROM sqlite_master").fetchone() == before
    conn.close()


def test_a_bad_feedback_kind_is_still_refused_through_the_store(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(1)], relaxed_policy)
    with pytest.raises(Exception, match="CHECK constraint failed"), store.transaction() as tx:
        tx.connection.execute(
            "INSERT INTO feedback (id, request_id, prediction_id, operator, kind, at, key, y, weight, key_n_before, "
            "reward) VALUES (999, 'rx', 'p1', 'alice', 'shrug', 1, 'k', 0, 1, 0, 1)"
        )
    assert store.feedback_log() == []


def test_cheap_checks_rewrites_only_lists_of_three_or_more_constants() -> None:
    sql = (
        "CREATE TABLE t (a TEXT CHECK (a IN ('x', 'y', 'z')), b INTEGER CHECK (b IN (0, 1)), "
        "c INTEGER CHECK (c IN (1, 2, -3)), d TEXT CHECK (d IN (SELECT v FROM w)))"
    )
    assert cheap_checks(sql) == (
        "CREATE TABLE t (a TEXT CHECK ((a = 'x' OR a = 'y' OR a = 'z')), b INTEGER CHECK (b IN (0, 1)), "
        "c INTEGER CHECK ((c = 1 OR c = 2 OR c = -3)), d TEXT CHECK (d IN (SELECT v FROM w)))"
    )
    conn = sqlite3.connect(":memory:")
    conn.execute(cheap_checks(sql).replace(", d TEXT CHECK (d IN (SELECT v FROM w))", ""))
    conn.execute("INSERT INTO t VALUES ('y', 1, -3)")
    conn.execute("INSERT INTO t VALUES (NULL, NULL, NULL)")  # NULL passes a CHECK in both forms
    for bad in (("w", 0, 1), ("x", 2, 1), ("x", 0, 3)):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", bad)
    conn.close()
