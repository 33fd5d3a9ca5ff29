from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import pytest

from bot.db_cli import run_db
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, StorageError, connect, migrate, schema_version

EXPECTED_TABLES = {
    "predictions",
    "decisions",
    "recommendations",
    "feedback",
    "outcomes",
    "key_alignment",
    "bandit_arms",
    "operator_trust",
    "monitor_state",
    "monitor_runs",
    "retraining_proposals",
    "model_versions",
    "outbox",
    "job_claims",
    "audit_log",
    "processed_requests",
}


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def test_migrations_build_the_schema_from_empty(db_path: Path) -> None:
    db = connect(db_path)
    assert schema_version(db) == 0
    assert migrate(db) == LATEST_SCHEMA_VERSION >= 2
    assert set(db.table_names()) >= EXPECTED_TABLES
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
    assert "feedback_one_effective_answer" in {i.name for i in db["feedback"].indexes}
    assert db.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
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


def test_audit_log_is_append_only(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.audit("config_change", "policy", {"by": "alice"}, 1.0)
    conn = sqlite3.connect(str(store.path))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET kind = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    conn.close()
    assert [e[2] for e in store.audit_entries()] == ["config_change"]
