from __future__ import annotations

import argparse
import csv
import json
import sqlite3
from pathlib import Path

import pytest
from storage_testing import make_prediction, surface

from bot.db_cli import add_db_parser, run_db
from npo.loop import record_feedback
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import LATEST_SCHEMA_VERSION, SQLiteStore


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_db_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def filled(db_path: Path, relaxed_policy: Policy) -> Path:
    with SQLiteStore(db_path) as store:
        surface(store, [make_prediction(i) for i in range(3)], relaxed_policy)
        for i, kind in enumerate((FeedbackKind.LIKE, FeedbackKind.OVERRIDE)):
            with store.transaction() as tx:
                record_feedback(tx, FeedbackEvent(f"p{i}", "alice", kind, 5.0, f"r{i}"), config=store.config)
    return db_path


def test_default_path_comes_from_the_environment(
    filled: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NPO_DB_PATH", str(filled))
    assert run_db(_parse(["db", "check"])) == 0
    assert f"{filled}: schema version {LATEST_SCHEMA_VERSION}" in capsys.readouterr().out


def test_backup_is_a_consistent_copy(filled: Path, tmp_path: Path) -> None:
    copy = tmp_path / "backup.db"
    assert run_db(_parse(["db", "backup", str(copy), "--db", str(filled)])) == 0
    assert run_db(_parse(["db", "check", "--db", str(copy)])) == 0
    conn = sqlite3.connect(str(copy))
    assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 2
    conn.close()
    assert run_db(_parse(["db", "backup", str(copy), "--db", str(filled)])) == 1  # never overwrites


def test_check_finds_broken_invariants(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(str(filled))
    conn.execute("UPDATE bandit_arms SET pulls = pulls + 5")
    conn.commit()
    conn.close()
    assert run_db(_parse(["db", "check", "--db", str(filled)])) == 1
    assert "PROBLEM bandit pulls" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("what", ["feedback", "decisions"])
def test_export(filled: Path, tmp_path: Path, fmt: str, what: str) -> None:
    out = tmp_path / f"out.{fmt}"
    args = ["db", "export", "--db", str(filled), "--what", what, "--format", fmt, "--out", str(out)]
    assert run_db(_parse(args)) == 0
    text = out.read_text(encoding="utf-8")
    rows = (
        [json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else list(csv.DictReader(text.splitlines()))
    )
    assert len(rows) == (2 if what == "feedback" else 3)
    assert rows[0]["prediction_id"] == "p0"


def test_missing_database_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_db(_parse(["db", "check", "--db", str(tmp_path / "none.db")])) == 1
    assert "no database" in capsys.readouterr().err
