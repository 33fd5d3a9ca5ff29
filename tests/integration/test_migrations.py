from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from storage_testing import RELAXED_POLICY_TEXT, copy_rows, make_prediction, surface

from bot.db_cli import run_db
from npo.loop import LoopConfig, decide, decision_audit_detail, record_feedback, record_outcome
from npo.policy import Policy, parse_policy
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, StorageError, check, connect, migrate, schema_version
from storage.monitoring import get_proposal, open_proposal

EXPECTED_TABLES = {
    "decisions",
    "recommendations",
    "feedback",
    "outcomes",
    "learning_state",
    "monitor_state",
    "monitor_runs",
    "retraining_proposals",
    "model_versions",
    "outbox",
    "job_claims",
    "audit_events",
    "processed_requests",
}
EXPECTED_VIEWS = {"predictions", "audit_log", "key_alignment", "bandit_arms", "operator_trust", "effective_answers"}


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(env_file=None, **kw)  # no --env-file given, as parsed


def test_migrations_build_the_schema_from_empty(db_path: Path) -> None:
    db = connect(db_path)
    assert schema_version(db) == 0
    assert migrate(db) == LATEST_SCHEMA_VERSION >= 2
    assert set(db.table_names()) >= EXPECTED_TABLES
    assert set(db.view_names()) >= EXPECTED_VIEWS
    assert migrate(db) == LATEST_SCHEMA_VERSION  # idempotent
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


def test_upgrade_from_the_first_migration_keeps_data(db_path: Path) -> None:
    db = connect(db_path)
    assert migrate(db, stop_before="m002_delivery_and_indexes") == 1
    assert "processed_requests" not in db.table_names()
    assert "message_ts" not in db["outbox"].columns_dict
    db.execute("INSERT INTO outbox (channel, kind, payload, next_attempt_at, created_at) VALUES ('c', 'k', '{}', 0, 0)")
    db.close()
    with pytest.raises(StorageError, match="schema version 1"):
        SQLiteStore(db_path, migrate=False)

    assert run_db(_args(db_command="migrate", db=db_path)) == 0
    db = connect(db_path)
    assert schema_version(db) == LATEST_SCHEMA_VERSION
    assert {"message_ts", "sent_at"} <= set(db["outbox"].columns_dict)
    assert {"key_alignment", "bandit_arms", "operator_trust", "effective_answers"} <= set(db.view_names())
    assert "learning_state" in db.table_names()
    assert db.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    db.close()


def test_upgrade_from_the_second_migration_keeps_data(db_path: Path) -> None:
    """A database written at schema version 2 (predictions, decisions, a replaced answer, an outcome, outbox,
    audit lines) keeps everything through m003: same records, same effective answers, same audit lines (none
    doubled by the new views), and the store works on it afterwards."""
    db = connect(db_path)
    assert migrate(db, stop_before="m003_append_only_logs") == 2
    conn = db.conn
    conn.execute("BEGIN")
    for i, verdict in enumerate(("surface", "suppress")):
        conn.execute(
            "INSERT INTO predictions (id, fault_type, target, action, confidence, severity, time_to_fault_s, labels, "
            "channel, received_at, fingerprint, cluster) VALUES (?, 'disk', 'r1-n1', 'investigate', 0.9, 'warning', "
            "NULL, '{\"a\":\"b\"}', NULL, ?, ?, 'r1')",
            (f"p{i}", float(i), f"fp{i}"),
        )
        conn.execute(
            "INSERT INTO decisions (prediction_id, key, verdict, rule, reason, confidence, misalignment, score, "
            "threshold, arm, decided_at, channel) VALUES (?, 'k', ?, 'threshold', 'why', 0.9, 0.25, 0.675, 0.5, 2, "
            "?, 'incident')",
            (f"p{i}", verdict, float(i)),
        )
        conn.execute(
            "INSERT INTO audit_log (at, kind, subject, detail) VALUES (?, 'decision', ?, '{\"verdict\":\"x\"}')",
            (float(i), f"p{i}"),
        )
    conn.execute(
        "INSERT INTO recommendations (prediction_id, verdict, channel, key, target, action, cluster, surfaced_at) "
        "VALUES ('p0', 'surface', 'incident', 'k', 'r1-n1', 'investigate', 'r1', 0)"
    )
    conn.execute(
        "INSERT INTO outbox (prediction_id, channel, kind, payload, next_attempt_at, created_at) "
        "VALUES ('p0', 'incident', 'recommendation', '{\"prediction_id\":\"p0\"}', 0, 0)"
    )
    feedback = (
        "INSERT INTO feedback (request_id, prediction_id, operator, kind, at, key, target, channel, y, weight, "
        "key_n_before, arm, reward, replaces, effective) VALUES (?, 'p0', 'alice', ?, ?, 'k', 'r1-n1', 'incident', "
        "?, 1.0, 0, 2, ?, ?, ?)"
    )
    conn.execute(feedback, ("r1", "like", 5.0, 0.0, 1.0, None, 0))
    conn.execute(feedback, ("r2", "override", 6.0, 1.0, 0.0, "r1", 1))
    conn.execute("INSERT INTO key_alignment (key, m, n, weight_sum, updated_at) VALUES ('k', 0.4, 1, 1.0, 6)")
    conn.execute("INSERT INTO outcomes (prediction_id, real_fault, at, source) VALUES ('p1', 1, 9, 'ticket')")
    conn.execute("INSERT INTO audit_log (at, kind, subject, detail) VALUES (9, 'outcome', 'p1', '{}')")
    conn.execute("COMMIT")
    audit_before = conn.execute("SELECT id, at, kind, subject, detail FROM audit_log ORDER BY id").fetchall()
    db.close()

    with SQLiteStore(db_path, migrate=True) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        p0 = store.prediction("p0")
        assert p0 is not None and dict(p0.labels) == {"a": "b"} and p0.target == "r1-n1"
        d1 = store.decision("p1")
        assert d1 is not None and d1.verdict.value == "suppress" and d1.arm == 2 and d1.score == 0.675
        assert [f.event.request_id for f in store.feedback_log()] == ["r1", "r2"]
        assert [s.y for s in store.alignment_samples()] == [1.0]  # only the effective answer
        assert len(store.alignment_samples(effective_only=False)) == 2
        counts = store.counts()
        assert (counts["predictions"], counts["feedback_effective"], counts["outcomes"]) == (2, 1, 1)
        assert counts["recommendations_open"] == 1
        # The old audit lines are all there, once (migrated rows are not audited a second time by the view) ...
        assert [(e[0], e[2], e[3]) for e in store.audit_entries()] == [(r[0], r[2], r[3]) for r in audit_before]
        # ... and new lines come after them.
        with store.transaction() as tx:
            tx.audit("config_change", "policy", {"by": "alice"}, 10.0)
        assert store.audit_entries()[-1][0] > audit_before[-1][0]
        assert [i.payload for i in store.outbox()] == [{"prediction_id": "p0"}]
        # the key state and the effective override moved through m006 into learning_state
        assert (store.keys()["k"].m, store.keys()["k"].n) == (0.4, 1)
        with store.transaction() as tx:
            assert dict(tx.policy_context(p0, "k", "incident", 7.0).last_override_at) == {
                "key:k": 6.0,
                "target:r1-n1": 6.0,
            }
    db = connect(db_path)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_check_prints_the_schema_version(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SQLiteStore(db_path).close()
    assert run_db(_args(db_command="check", db=db_path)) == 0
    out = capsys.readouterr().out
    assert f"schema version {LATEST_SCHEMA_VERSION} (latest {LATEST_SCHEMA_VERSION})" in out
    assert out.strip().endswith("ok")


def test_check_reports_an_outdated_schema(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = connect(db_path)
    migrate(db, stop_before="m002_delivery_and_indexes")
    db.close()
    assert run_db(_args(db_command="check", db=db_path)) == 1
    assert "schema version 1" in capsys.readouterr().out


def test_an_upgrade_that_would_leave_a_dangling_reference_changes_nothing(db_path: Path) -> None:
    """``migrate`` checks the foreign keys before it commits (they are off while tables are rebuilt): an outcome
    whose decision is missing (written by hand with foreign keys off) stops the upgrade with the row named, and the
    database stays at its version, with no table of the migrations it stopped."""
    db = connect(db_path)
    assert migrate(db, stop_before="m017_outcome_agreement") == 16
    db.conn.execute("PRAGMA foreign_keys = OFF")
    db.conn.execute("INSERT INTO outcomes (prediction_id, real_fault, at, source) VALUES ('ghost', 1, 5.0, 'api')")
    db.conn.commit()
    with pytest.raises(StorageError, match=r"outcomes.*refer.*missing decisions rows"):
        migrate(db)
    assert schema_version(db) == 16 and "outcome_agreement" not in db.table_names()
    db.close()


def test_audit_log_is_append_only(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(0)], relaxed_policy)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p0", "alice", FeedbackKind.LIKE, 2.0, "r-1"), config=store.config)
    with store.transaction() as tx:
        tx.audit("config_change", "policy", {"by": "alice"}, 1.0)
    conn = sqlite3.connect(str(store.path))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET kind = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    for table in ("audit_events", "decisions", "feedback"):  # the logs behind the audit_log view
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(f"UPDATE {table} SET at = 0" if table != "decisions" else "UPDATE decisions SET rule = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(f"DELETE FROM {table}")
    conn.close()
    assert [e[2] for e in store.audit_entries()] == ["decision", "feedback", "config_change"]


def test_upgrade_moves_the_learning_state_into_one_table(db_path: Path) -> None:
    """A database at schema version 5 (keys, arms, trust in their own tables; overrides found by the partial
    indexes) keeps its learning state through m006: the same rows through the old names, the same last effective
    override per key and target (a replaced override no longer counts), and the store works on it afterwards."""
    db = connect(db_path)
    assert migrate(db, stop_before="m006_learning_state") == 5
    conn = db.conn
    conn.execute("BEGIN")
    for i, target in enumerate(("r1-n1", "r1-n2")):
        conn.execute(
            "INSERT INTO decisions (seq, prediction_id, fault_type, target, action, confidence, severity, received_at, "
            "fingerprint, cluster, key, verdict, rule, reason, decision_confidence, misalignment, score, threshold, "
            "arm, decided_at, channel) VALUES (?, ?, 'disk', ?, 'investigate', 0.9, 'warning', 0, ?, 'r1', 'k', "
            "'surface', 'threshold', 'why', 0.9, 0.25, 0.675, 0.5, 0, 0, 'incident')",
            (i + 1, f"p{i}", target, f"fp{i}"),
        )
    feedback = (
        "INSERT INTO feedback (id, request_id, prediction_id, operator, kind, at, key, target, channel, y, weight, "
        "key_n_before, arm, reward, replaces) VALUES (?, ?, ?, ?, ?, ?, 'k', ?, 'incident', ?, 1.0, 0, 0, ?, ?)"
    )
    conn.execute(feedback, (10, "a1", "p0", "alice", "override", 5.0, "r1-n1", 1.0, 0.0, None))
    conn.execute(feedback, (11, "b1", "p1", "bob", "override", 8.0, "r1-n2", 1.0, 0.0, None))
    conn.execute(feedback, (12, "b2", "p1", "bob", "like", 9.0, "r1-n2", 0.0, 1.0, "b1"))  # replaces bob's override
    conn.execute("INSERT INTO key_alignment (key, m, n, weight_sum, updated_at) VALUES ('k', 0.4, 2, 2.0, 9)")
    conn.executemany(
        "INSERT INTO bandit_arms (arm, threshold, alpha, beta, pulls) VALUES (?, ?, ?, 1.5, ?)",
        [(arm, 0.5 + arm / 10, 1.0 + arm, arm) for arm in range(5)],
    )
    conn.execute("INSERT INTO operator_trust VALUES ('alice', 2.5, 0.5, 3, 1), ('bob', 1, 1, 0, 0)")
    conn.execute("COMMIT")
    before = {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in ("key_alignment", "bandit_arms", "operator_trust")
    }
    db.close()

    with SQLiteStore(db_path, migrate=True) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        after = sqlite3.connect(str(db_path))
        for table, rows in before.items():
            assert after.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() == rows, table
        assert after.execute("SELECT type FROM sqlite_master WHERE name = 'key_alignment'").fetchone() == ("view",)
        after.close()
        assert store.keys()["k"].n == 2 and store.trust()["alice"].agree == 2.5
        assert store.bandit().pulls == (0, 1, 2, 3, 4)
        p = store.prediction("p1")
        assert p is not None
        with store.transaction() as tx:
            assert dict(tx.policy_context(p, "k", "incident", 10.0).last_override_at) == {"key:k": 5.0}
            p0 = store.prediction("p0")
            assert p0 is not None
            ctx = tx.policy_context(p0, "k", "incident", 10.0)
            assert dict(ctx.last_override_at) == {"key:k": 5.0, "target:r1-n1": 5.0}
        with store.transaction() as tx:  # and the store goes on learning on the moved state
            record_feedback(tx, FeedbackEvent("p1", "alice", FeedbackKind.OVERRIDE, 12.0, "a2"), config=store.config)
        assert store.keys()["k"].n == 3
        with store.transaction() as tx:
            assert dict(tx.policy_context(p, "k", "incident", 13.0).last_override_at) == {
                "key:k": 12.0,
                "target:r1-n2": 12.0,
            }
    db = connect(db_path)
    version, problems = check(db)
    db.close()
    # (the hand-written rows skip recommendations and exact pull counts; the moved state itself is consistent)
    assert version == LATEST_SCHEMA_VERSION
    moved = (
        "integrity_check",
        "foreign_key_check",
        "the last override kept per key and per target is the newest effective override",
        "feedback keys have a key state",
    )
    assert [p for p in problems if p.what in moved] == []


def test_upgrade_lets_proposals_expire_and_keeps_them(db_path: Path) -> None:
    """A database at schema version 11 with an open, an approved and a dismissed proposal keeps them through m012
    (same ids and columns, no deadline: NULL ``expires_at``); afterwards a proposal may be ``expired`` and the
    CHECK still refuses anything else."""
    db = connect(db_path)
    assert migrate(db, stop_before="m012_proposal_expiry") == 11
    conn = db.conn
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO model_versions (version, weights, bias, trained_at, n_train, metrics, promoted, recorded_at) "
        "VALUES (1, '[]', 0, 5, 10, '{}', 1, 5)"
    )
    conn.executemany(
        "INSERT INTO retraining_proposals (id, opened_at, reason, state, resolved_at, resolved_by, model_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (3, 1.0, "L_align 0.40 > 0.30", "approved", 2.0, "U1", 1),
            (5, 3.0, "Page-Hinkley drift alarm", "dismissed", 4.0, "U2", None),
            (8, 6.0, "L_align 0.50 > 0.30", "open", None, None, None),
        ],
    )
    conn.execute("COMMIT")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute("UPDATE retraining_proposals SET state = 'expired' WHERE id = 8")  # not yet a state
    before = conn.execute("SELECT * FROM retraining_proposals ORDER BY id").fetchall()
    db.close()

    with SQLiteStore(db_path, migrate=True) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        with store.read() as read:
            rows = read.execute(
                "SELECT id, opened_at, reason, state, resolved_at, resolved_by, model_version, expires_at "
                "FROM retraining_proposals ORDER BY id"
            ).fetchall()
            assert rows == [(*row, None) for row in before]
            still_open = open_proposal(read)
        assert still_open is not None and (still_open.id, still_open.expires_at) == (8, None)
        with store.transaction() as tx:
            assert tx.expire_proposal(8, at=7.0) and not tx.expire_proposal(8, at=8.0)  # once
            assert not tx.expire_proposal(3, at=7.0)  # only an open proposal expires
            new = tx.open_proposal(9.0, "L_align 0.45 > 0.30", expires_at=9.0 + 86_400)
        with store.read() as read:
            expired, latest = get_proposal(read, 8), get_proposal(read, new)
        assert expired is not None and (expired.state, expired.resolved_at, expired.resolved_by) == (
            "expired",
            7.0,
            None,
        )
        assert latest is not None and (latest.id, latest.state, latest.expires_at) == (9, "open", 9.0 + 86_400)
    conn = sqlite3.connect(str(db_path))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute("UPDATE retraining_proposals SET state = 'lapsed' WHERE id = 9")
    conn.close()
    db = connect(db_path)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


# The relaxed policy, but a disk failure may only be drained: make_prediction(i) with i % 4 == 0 (a disk failure to
# investigate) is blocked by allowed_actions, every other one surfaced.
BLOCKING_POLICY_TEXT = RELAXED_POLICY_TEXT.replace(
    "[rules.allowed_actions]\n", '[rules.allowed_actions]\ndisk_failure = ["drain"]\n', 1
)


def _decide(store: SQLiteStore, n: int) -> list[Decision]:
    """Decide make_prediction(0) … make_prediction(n - 1) under BLOCKING_POLICY_TEXT; p0 is blocked, p1 surfaced."""
    policy = parse_policy(BLOCKING_POLICY_TEXT)
    assert dict(policy.allowed_actions) == {"disk_failure": ("drain",)}
    rng = np.random.default_rng(0)
    with store.transaction() as tx:
        decisions = [
            decide(tx, p, config=store.config, policy=policy, rng=rng, now=p.received_at).decision
            for p in map(make_prediction, range(n))
        ]
    assert [d.verdict.value for d in decisions[:2]] == ["block", "surface"]
    assert decisions[0].threshold is None and decisions[1].threshold is not None
    return decisions


def test_a_blocked_decision_is_audited_with_a_null_threshold(store: SQLiteStore) -> None:
    """A blocked decision has no threshold (no arm was drawn): its audit line says ``"threshold": null`` as the
    ``decisions`` row and the in-memory store do, not 0.0 (m003's view printed ``printf('%!.17g', NULL)``, which is
    '0.0'; m013). A surfaced one keeps its number, to the bit."""
    decisions = _decide(store, 2)
    lines = store.audit_entries(kind="decision")
    assert [(subject, detail) for _, _, _, subject, detail in lines] == [
        (d.prediction_id, decision_audit_detail(d)) for d in decisions
    ]
    assert lines[0][4]["threshold"] is None
    assert isinstance(lines[1][4]["threshold"], float) and lines[1][4]["threshold"] == decisions[1].threshold
    with store.read() as conn:
        assert conn.execute("SELECT threshold FROM decisions WHERE prediction_id = 'p0'").fetchone() == (None,)
        (raw,) = conn.execute("SELECT detail FROM audit_log WHERE kind = 'decision' AND subject = 'p0'").fetchone()
    assert raw.endswith(',"threshold":null}')


def _audit_log_triggers(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log' ORDER BY name"
    ).fetchall()


def _refusals(conn: sqlite3.Connection) -> list[str]:
    """The errors of an UPDATE and a DELETE on the audit_log view (each must be refused)."""
    messages = []
    for statement in ("UPDATE audit_log SET kind = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only") as refused:
            conn.execute(statement)
        messages.append(str(refused.value))
    return messages


def test_upgrade_prints_a_null_threshold_and_keeps_the_audit_log(tmp_path: Path) -> None:
    """A database at schema version 12 (decisions, a blocked one among them, feedback, an outcome, a config change)
    keeps every audit line through m013 — same ids, times, kinds, subjects and details, except that the blocked
    decision's threshold now reads null — and the view's triggers: an INSERT through it still goes to
    ``audit_events`` (next id of the shared sequence), UPDATE and DELETE are still refused with the same message."""
    full = tmp_path / "full.db"
    with SQLiteStore(full, LoopConfig()) as store:
        decisions = _decide(store, 4)
        with store.transaction() as tx:
            for i, kind in enumerate((FeedbackKind.LIKE, FeedbackKind.OVERRIDE)):
                event = FeedbackEvent(f"p{i + 1}", "alice", kind, 10.0 + i, f"r{i}")
                record_feedback(tx, event, config=store.config)
            record_outcome(tx, Outcome(prediction_id="p1", real_fault=True, at=20.0), config=store.config)
            tx.audit("config_change", "policy", {"by": "alice"}, 21.0)
    old = tmp_path / "v12.db"
    db = connect(old)
    assert migrate(db, stop_before="m013_audit_null_threshold") == 12
    conn = db.conn
    copy_rows(
        conn, full, ("decisions", "feedback", "recommendations", "outbox", "learning_state", "outcomes", "audit_events")
    )
    before = conn.execute("SELECT id, at, kind, subject, detail FROM audit_log ORDER BY id").fetchall()
    assert [r[2] for r in before] == ["decision"] * 4 + ["feedback", "feedback", "outcome", "config_change"]
    assert json.loads(before[0][4])["threshold"] == 0.0  # the defect: p0 was blocked, its threshold is NULL
    triggers = _audit_log_triggers(conn)
    assert [name for name, _ in triggers] == ["audit_log_insert", "audit_log_no_delete", "audit_log_no_update"]
    refusals = _refusals(conn)
    assert refusals == ["audit_log is append-only: UPDATE refused", "audit_log is append-only: DELETE refused"]
    db.close()

    db = connect(old)
    assert migrate(db) == LATEST_SCHEMA_VERSION
    db.close()
    conn = sqlite3.connect(str(old))
    after = conn.execute("SELECT id, at, kind, subject, detail FROM audit_log ORDER BY id").fetchall()
    assert after[1:] == before[1:]  # every other line, byte for byte
    assert after[0][:4] == before[0][:4] and before[0][2:4] == ("decision", "p0")
    assert (
        json.loads(after[0][4])
        == {**json.loads(before[0][4]), "threshold": None}
        == decision_audit_detail(decisions[0])
    )
    assert _audit_log_triggers(conn) == triggers
    assert _refusals(conn) == refusals
    conn.execute("INSERT INTO audit_log (at, kind, subject, detail) VALUES (30, 'config_change', 'policy', '{}')")
    assert conn.execute("SELECT id, kind FROM audit_events ORDER BY id DESC LIMIT 1").fetchone() == (
        before[-1][0] + 1,
        "config_change",
    )
    conn.commit()
    assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone() == (len(before) + 1,)
    conn.close()

    with SQLiteStore(old, LoopConfig()) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        assert [detail for *_, detail in store.audit_entries(kind="decision")] == [
            decision_audit_detail(d) for d in decisions
        ]
        with store.transaction() as tx:  # the store audits through the view as before
            tx.audit("config_change", "policy", {"by": "bob"}, 31.0)
        assert store.audit_entries()[-1][0] == before[-1][0] + 2
    db = connect(old)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_upgrade_remembers_the_ids_found_duplicates_in_the_history(tmp_path: Path, default_policy: Policy) -> None:
    """A database at schema version 14: m015 fills ``prediction_aliases`` from the ``duplicate_prediction`` audit
    lines, so an id found a duplicate by fingerprint before the upgrade still leads to the prediction it duplicated
    (its outcome, or the same id sent again after the dedupe window, finds that one) — as for one found after it.
    A line whose id is the first's own (the same prediction sent twice) names no alias, nor one whose id has a
    decision of its own (sent again after the dedupe window, which the version before decided as a new one)."""
    full = tmp_path / "full.db"
    config = LoopConfig()
    late = make_prediction(0, id="late", received_at=config.dedupe_window_s + 1)
    sent = (make_prediction(0), make_prediction(0), make_prediction(0, id="again", received_at=100.0), late)
    with SQLiteStore(full, config) as store:
        with store.transaction() as tx:
            for p in sent:
                decide(tx, p, config=config, policy=default_policy, rng=np.random.default_rng(0), now=p.received_at)
            tx.audit("duplicate_prediction", "late", {"first": "p0"}, 50.0)  # its first sending, as the old version
        duplicates = [subject for _, _, _, subject, _ in store.audit_entries(kind="duplicate_prediction")]
        assert duplicates == ["p0", "again", "late"] and store.decision("late") is not None
    old = tmp_path / "v14.db"
    db = connect(old)
    assert migrate(db, stop_before="m015_prediction_aliases") == 14
    assert "prediction_aliases" not in db.table_names()
    copy_rows(db.conn, full, ("decisions", "recommendations", "outbox", "learning_state", "audit_events"))
    db.close()

    with SQLiteStore(old, config) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        with store.read() as conn:
            aliases = conn.execute("SELECT alias_id, prediction_id FROM prediction_aliases").fetchall()
        assert aliases == [("again", "p0")]
        assert store.alias_of("again") == "p0"
    db = connect(old)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_upgrade_dates_the_open_recommendations_by_their_predicted_fault(tmp_path: Path) -> None:
    """A database at schema version 15: m016 gives each recommendation its predicted fault time ``due_at``
    (surfaced + the prediction's time to fault, or surfaced without one), so those stored before the upgrade stop
    counting toward the blast radius a day (the default ``stale_after_seconds``) after it, as new ones do."""
    full = tmp_path / "full.db"
    drains = [
        make_prediction(i, action="drain", labels={"cluster": "rack7"}, time_to_fault_s=ttf)
        for i, ttf in enumerate((None, 7200.0, None))
    ]
    with SQLiteStore(full, LoopConfig()) as store:
        surface(store, drains, parse_policy(RELAXED_POLICY_TEXT))
        with store.transaction() as tx:
            record_outcome(tx, Outcome(prediction_id="p2", real_fault=True, at=5.0), config=store.config)
    old = tmp_path / "v15.db"
    db = connect(old)
    assert migrate(db, stop_before="m016_recommendation_due") == 15
    assert "due_at" not in db["recommendations"].columns_dict
    copy_rows(db.conn, full, ("decisions", "recommendations", "outbox", "learning_state", "outcomes", "audit_events"))
    db.close()

    with SQLiteStore(old, LoopConfig()) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        with store.read() as conn:
            due = conn.execute("SELECT prediction_id, surfaced_at, due_at FROM recommendations ORDER BY 1").fetchall()
            plan = conn.execute(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM recommendations WHERE cluster = ? AND resolved_at IS NULL "
                "AND lower(action) IN ('drain') AND due_at > ?",
                ("rack7", 0.0),
            ).fetchall()
        assert due == [("p0", 0.0, 0.0), ("p1", 1.0, 7201.0), ("p2", 2.0, 2.0)]
        assert "recommendations_open_by_cluster (cluster=? AND <expr>=? AND due_at>?)" in plan[0][-1]
        probe = make_prediction(9, action="drain", labels={"cluster": "rack7"})
        with store.transaction() as tx:
            counts = [
                tx.policy_context(probe, "k", "incident", t).active_disruptive_by_cluster["rack7"]
                for t in (86399.0, 86400.0, 93600.0, 93601.0)
            ]
        assert counts == [2, 1, 1, 0]  # p2 is closed by its outcome; p0 is stale after a day, p1 a day after 7201
    db = connect(old)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()
