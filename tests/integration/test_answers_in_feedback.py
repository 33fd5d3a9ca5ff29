"""m009: a person's answers are found through one UNIQUE index of ``feedback`` (prediction, operator, request id),
which replaces both the ``effective_answers`` table and the global request-id index; the effective answer is the
newest one, unless a later answer names it in ``replaces`` (a click taking over the system's skip)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_steps import vm_steps
from storage_testing import copy_rows, dump, make_prediction, surface

from npo.loop import SYSTEM_OPERATOR, LoopConfig, record_feedback
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, StorageError, check, codec, connect, migrate

COPIED = ("decisions", "recommendations", "outbox", "learning_state", "audit_events", "feedback")


def _answers(store: SQLiteStore) -> None:
    """Answers of every shape: a first answer, one replaced twice, a skip taken over by a click, a skip alone."""
    with store.transaction() as tx:
        for event in (
            FeedbackEvent("p0", "alice", FeedbackKind.LIKE, 10.0, "r0"),
            FeedbackEvent("p0", "bob", FeedbackKind.OVERRIDE, 11.0, "r1", reason="wrong rack"),
            FeedbackEvent("p0", "alice", FeedbackKind.OVERRIDE, 12.0, "r2"),  # replaces r0
            FeedbackEvent("p0", "alice", FeedbackKind.NEUTRAL, 13.0, "r3"),  # replaces r2
            FeedbackEvent("p1", SYSTEM_OPERATOR, FeedbackKind.SKIPPED, 14.0, "skip:p1"),
            FeedbackEvent("p1", "carol", FeedbackKind.LIKE, 15.0, "r4"),  # replaces the skip
            FeedbackEvent("p2", SYSTEM_OPERATOR, FeedbackKind.SKIPPED, 16.0, "skip:p2"),
        ):
            assert record_feedback(tx, event, config=store.config).status in ("recorded", "replaced")


def _version_8(path: Path, source: Path) -> None:
    """A file at schema version 8 holding ``source``'s rows; its ``feedback_effective`` trigger fills the
    ``effective_answers`` table as the feedback rows are copied in order."""
    db = connect(path)
    assert migrate(db, stop_before="m009_answers_in_feedback") == 8
    copy_rows(db.conn, source, COPIED)
    db.close()


def _rows(conn: sqlite3.Connection, sql: str) -> list[dict[str, object]]:
    cur = conn.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _effective(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT prediction_id, operator, feedback_id FROM effective_answers ORDER BY 1, 2").fetchall()


@pytest.fixture
def v8(tmp_path: Path, relaxed_policy: Policy) -> Path:
    full = tmp_path / "full.db"
    with SQLiteStore(full, LoopConfig()) as store:
        surface(store, [make_prediction(i) for i in range(3)], relaxed_policy)
        _answers(store)
    old = tmp_path / "v8.db"
    _version_8(old, full)
    return old


def test_upgrade_keeps_every_answer_and_which_ones_are_effective(v8: Path) -> None:
    conn = sqlite3.connect(str(v8))
    effective = _effective(conn)
    # r3 (alice's newest on p0), r1 (bob), r4 (carol's click took the skip over), the skip on p2 alone
    assert [(p, o) for p, o, _ in effective] == [("p0", "alice"), ("p0", "bob"), ("p1", "carol"), ("p2", "system")]
    feedback = _rows(conn, "SELECT rowid, * FROM feedback ORDER BY rowid")
    audit = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
    conn.close()

    with SQLiteStore(v8, LoopConfig()) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        assert store.counts()["feedback_effective"] == 4
    conn = sqlite3.connect(str(v8))
    upgraded = _rows(conn, "SELECT rowid, * FROM feedback ORDER BY rowid")
    assert [{c: row[c] for c in feedback[0]} for row in upgraded] == feedback  # every column it had, unchanged
    assert {row["peer_credited"] for row in upgraded} == {None}  # m018: not known for answers stored before
    assert _effective(conn) == effective
    assert conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall() == audit
    objects = {
        r[0]: r[1] for r in conn.execute("SELECT name, type FROM sqlite_master WHERE tbl_name != 'sqlite_sequence'")
    }
    assert objects["effective_answers"] == "view"
    assert objects["feedback_answers"] == "index" and objects["feedback_one_effective_answer"] == "trigger"
    assert "feedback_effective" not in objects
    assert not [r for r in conn.execute("PRAGMA index_list(feedback)") if r[3] == "u"]  # no UNIQUE request_id
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    db = connect(v8)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_the_upgraded_file_keeps_the_rules(v8: Path) -> None:
    with SQLiteStore(v8, LoopConfig()) as store:
        with store.transaction() as tx:
            retried = FeedbackEvent("p0", "alice", FeedbackKind.NEUTRAL, 13.0, "r3")
            assert record_feedback(tx, retried, config=store.config).status == "duplicate"
            again = FeedbackEvent("p0", "alice", FeedbackKind.LIKE, 20.0, "r5")
            result = record_feedback(tx, again, config=store.config)
            assert result.status == "replaced" and result.applied is not None and result.applied.replaces == "r3"
            assert (
                record_feedback(
                    tx, FeedbackEvent("p2", "dave", FeedbackKind.OVERRIDE, 21.0, "r6"), config=store.config
                ).status
                == "replaced"
            )
        with store.transaction() as tx:
            assert tx.effective_feedback("p0", "alice").event.request_id == "r5"  # type: ignore[union-attr]
            assert tx.effective_feedback("p2", SYSTEM_OPERATOR) is None  # dave's click took the skip over
        # the effective answers alone: bob's (11), carol's (15), alice's newest (20), dave's (21)
        assert sorted(s.at for s in store.alignment_samples()) == [11.0, 15.0, 20.0, 21.0]
    db = connect(v8)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_a_request_id_is_unique_per_person_and_recommendation(store: SQLiteStore, relaxed_policy: Policy) -> None:
    """A Slack interaction belongs to one person and one message: the same request id from another person or on
    another recommendation is another answer; from the same person on the same one, a retry."""
    surface(store, [make_prediction(0), make_prediction(1)], relaxed_policy)
    with store.transaction() as tx:
        for event, status in (
            (FeedbackEvent("p0", "alice", FeedbackKind.LIKE, 1.0, "same"), "recorded"),
            (FeedbackEvent("p0", "bob", FeedbackKind.LIKE, 2.0, "same"), "recorded"),
            (FeedbackEvent("p1", "alice", FeedbackKind.LIKE, 3.0, "same"), "recorded"),
            (FeedbackEvent("p0", "alice", FeedbackKind.OVERRIDE, 4.0, "same"), "duplicate"),
        ):
            assert record_feedback(tx, event, config=store.config).status == status
    assert len(store.feedback_log()) == 3


def test_an_upgrade_over_answers_that_break_the_rule_stops_and_changes_nothing(v8: Path) -> None:
    conn = sqlite3.connect(str(v8))
    # Make alice's first answer on p0 (r0) effective again, as no code of the project ever would.
    conn.execute(
        "UPDATE effective_answers SET feedback_id = (SELECT id FROM feedback WHERE request_id = 'r0') "
        "WHERE prediction_id = 'p0' AND operator = 'alice'"
    )
    conn.commit()
    conn.close()
    before = dump(v8)
    with pytest.raises(StorageError, match=r"effective_answers 'p0 / alice'.*feedback"):
        SQLiteStore(v8, LoopConfig())
    assert dump(v8) == before
    db = connect(v8)
    assert check(db)[0] == 8
    db.close()


def test_finding_a_persons_answer_does_not_read_everyone_elses(store: SQLiteStore, relaxed_policy: Policy) -> None:
    """A recommendation answered by 2,000 people costs a look-up of one person's effective answer (the click path,
    the cooldown's check, the reports) no more than one answered by three."""
    surface(store, [make_prediction(0), make_prediction(1)], relaxed_policy)
    with store.transaction() as tx:
        for i in range(2000):
            record_feedback(tx, FeedbackEvent("p0", f"u{i}", FeedbackKind.LIKE, float(i), f"a{i}"), config=store.config)
        for i in range(3):
            record_feedback(tx, FeedbackEvent("p1", f"u{i}", FeedbackKind.LIKE, float(i), f"b{i}"), config=store.config)
    lookups = (
        "SELECT feedback_id FROM effective_answers WHERE prediction_id = ? AND operator = ?",
        f"SELECT f.id FROM feedback f WHERE f.prediction_id = ? AND f.operator = ? AND {codec.IS_EFFECTIVE}",
    )
    with store.read() as conn:
        for sql in lookups:
            crowded = vm_steps(conn, lambda q=sql: conn.execute(q, ("p0", "u1")).fetchall())
            quiet = vm_steps(conn, lambda q=sql: conn.execute(q, ("p1", "u1")).fetchall())
            assert crowded <= quiet + 10, (sql, crowded, quiet)


def test_an_upgrade_over_a_replacement_of_nothing_stops_and_changes_nothing(v8: Path) -> None:
    """Version 8 let a first answer name an answer that does not exist in ``replaces``; the count of effective
    answers (answers minus replacing ones, see ``SQLiteStore.counts``) would then be wrong, so the upgrade refuses."""
    conn = sqlite3.connect(str(v8))
    conn.execute(
        "INSERT INTO feedback (request_id, prediction_id, operator, kind, at, key, y, weight, key_n_before, reward, "
        "replaces) SELECT 'r9', prediction_id, 'zed', kind, at + 1, key, y, weight, key_n_before, reward, 'nothing' "
        "FROM feedback WHERE request_id = 'r1'"
    )
    conn.commit()
    conn.close()
    before = dump(v8)
    with pytest.raises(StorageError, match="replacing another"):
        SQLiteStore(v8, LoopConfig())
    assert dump(v8) == before
