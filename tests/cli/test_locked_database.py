"""A database another process holds locked gives one line naming it and saying what to do, not a traceback.

A backup or a copy is one file in rollback-journal mode, where a reader waits for a writer: ``npo-bot report`` on
such a file while another tool held a write transaction on it printed a ``sqlite3.OperationalError`` traceback
after the busy timeout, and the ``db`` commands printed a bare "database is locked".
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from storage import SQLiteStore


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An NPO database turned into a one-file copy (journal mode DELETE), with another connection in the middle of
    a write transaction on it."""
    for name in [n for n in os.environ if n.startswith(("NPO_", "SLACK_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "copy.db"
    with SQLiteStore(path):
        pass
    other = sqlite3.connect(path, isolation_level=None)
    assert other.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    other.execute("BEGIN EXCLUSIVE")
    yield path
    other.execute("ROLLBACK")
    other.close()


@pytest.mark.slow  # each command waits out the busy timeout (5 s)
@pytest.mark.parametrize("command", [["report"], ["db", "check"]], ids=["report", "db check"])
def test_a_database_locked_by_another_process_is_one_line(
    held: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*command, "--db", str(held)])
    err = capsys.readouterr().err
    assert code == 1  # a database problem: exit 1 for report as for db check
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"npo-bot {' '.join(command)}: {held}: database is locked")
    assert "another process" in err and "try again" in err
