from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from file_testing import unwritable
from storage_testing import dump, make_prediction, surface

from bot.cli import main as cli_main
from bot.db_cli import add_db_parser, run_db
from npo.loop import record_feedback
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, StorageError


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


@pytest.mark.parametrize("suffix", ["-journal", "-wal", "-shm"])
def test_backup_refuses_the_name_of_a_file_of_the_database(
    filled: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db backup npo.db-journal`` (a slip of the tab key) said "backed up" and exit 0, then SQLite took the copy
    for the database's hot journal: a read-only ``db check`` or ``db export`` could no longer open the database
    ("attempt to write a readonly database"), and the next connection that could write removed the backup. The
    names of the database's -wal, -shm and -journal files are refused, as ``export --out`` refuses them; also through
    a link to the database, whose files SQLite names after the file the link leads to."""
    link = filled.with_name("link.db")
    link.symlink_to(filled.name)
    for db, target in ((filled, f"{filled}{suffix}"), (link, f"{filled}{suffix}")):
        Path(target).unlink(missing_ok=True)  # the bot stopped: only the database file is there
        assert run_db(_parse(["db", "backup", target, "--db", str(db), "--env-file", os.devnull])) == 1
        assert f"is the name of the {suffix[1:]} file of the database {db}" in capsys.readouterr().err
        assert not Path(target).exists() or Path(target).read_bytes()[:16] != b"SQLite format 3\x00"
    assert run_db(_parse(["db", "check", "--db", str(filled), "--env-file", os.devnull])) == 0


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


def test_the_path_comes_from_the_settings_file_as_for_serve(
    filled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NPO_DB_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    Path(".env").write_text(f"SLACK_BOT_TOKEN=xoxb-unchecked\nNPO_DB_PATH={filled}\n")  # the file serve uses
    assert run_db(_parse(["db", "check"])) == 0
    assert f"{filled}: schema version" in capsys.readouterr().out
    assert run_db(_parse(["db", "backup", "copy.db"])) == 0
    assert sqlite3.connect("copy.db").execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 2
    other = tmp_path / "other.env"
    other.write_text("NPO_DB_PATH=elsewhere.db\n")
    assert run_db(_parse(["db", "migrate", "--env-file", str(other)])) == 0
    assert (tmp_path / "elsewhere.db").exists() and "elsewhere.db: schema version 0 ->" in capsys.readouterr().out
    Path(".env").write_text("SLACK-SIGNING_SECRET\n")
    assert run_db(_parse(["db", "check"])) == 2  # a settings file that cannot be read: refused as by every command
    assert ".env line 1" in capsys.readouterr().err


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run_db(_parse(argv)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"npo-bot db {argv[1]}: ")
    return err


def test_unusable_files_and_folders_are_refused_with_a_message(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "folder" in _refused(["db", "backup", str(tmp_path / "no" / "b.db"), "--db", str(filled)], capsys)
    assert not (tmp_path / "no").exists()
    text = tmp_path / "notes.db"
    text.write_text("these are notes, not a database\n" * 100)
    for argv in (["db", "check"], ["db", "export", "--what", "feedback"], ["db", "backup", str(tmp_path / "c.db")]):
        assert "not a database" in _refused([*argv, "--db", str(text)], capsys)
    assert "does not exist" in _refused(["db", "migrate", "--db", str(tmp_path / "no" / "npo.db")], capsys)


def test_check_reports_a_damaged_file_instead_of_crashing(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(filled.read_bytes())
    data[4096 : 4096 * 4] = b"\xff" * (4096 * 3)  # pages 2-4 overwritten, the header intact
    filled.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(f"{filled}{suffix}").unlink(missing_ok=True)
    assert run_db(_parse(["db", "check", "--db", str(filled)])) == 1
    captured = capsys.readouterr()
    assert "PROBLEM integrity_check" in captured.out and "Traceback" not in captured.err


def test_a_database_from_a_newer_version_is_not_touched(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(str(filled))
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('npo', 'm099_future', 'later')"
    )
    conn.commit()
    conn.close()
    before = filled.read_bytes()
    err = _refused(["db", "migrate", "--db", str(filled)], capsys)
    assert "newer NPO" in err and "m099_future" in err and "upgrade NPO" in err
    assert run_db(_parse(["db", "check", "--db", str(filled)])) == 1
    newer = f"PROBLEM schema_version: schema version {LATEST_SCHEMA_VERSION + 1} was written by a newer NPO"
    assert newer in capsys.readouterr().out
    with pytest.raises(StorageError, match="newer NPO"):
        SQLiteStore(filled)
    assert filled.read_bytes() == before


POLICY_PROBLEMS: dict[str, tuple[bytes, str]] = {  # the policy file's bytes → what the message must say
    "policy file": (b'timezone = "Mars/Olympus"\n', "Mars/Olympus"),
    "policy not UTF-8": (b"\xff\xfe garbage", "not UTF-8"),
    "policy empty": (b" \n\t\n", "the policy file is empty"),
    "policy comments only": (b"# NPO Safety Policy\n#\n", "the policy file is empty"),  # cut after its header
}


@pytest.mark.parametrize("problem", ["database folder", "database is a folder", *POLICY_PROBLEMS])
@pytest.mark.parametrize("command", ["serve", "replay"])
def test_the_service_commands_refuse_unusable_settings_with_one_line(
    command: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy file that is not UTF-8 or cannot be read ended start-up in a traceback; an empty one (a truncated
    write) was taken as the default policy, every freeze window and allowed action of the real one gone."""
    policy = tmp_path / "policy.toml"
    content, expected = POLICY_PROBLEMS.get(problem, (b"", "missing does not exist"))
    if problem == "database is a folder":
        expected = f"{tmp_path}': is a folder, not a database file"
    policy.write_bytes(content)
    settings = {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never reached: the settings are refused first
        "NPO_DB_PATH": str(
            tmp_path
            if problem == "database is a folder"
            else tmp_path / ("missing" if problem == "database folder" else "") / "npo.db"
        ),
        **({"NPO_POLICY_FILE": str(policy)} if problem in POLICY_PROBLEMS else {}),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    feed = tmp_path / "p.jsonl"
    feed.write_text('{"id": "p1", "fault_type": "disk", "target": "r1-n1", "action": "drain", "confidence": 0.9}\n')
    argv = [command, "--env-file", os.devnull, *([str(feed)] if command == "replay" else [])]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npo-bot {command}: ") and "Traceback" not in err
    assert expected in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "command",
    [["db", "check"], ["db", "migrate"], ["db", "backup", "copy.db"], ["db", "export", "--what", "audit"], ["report"]],
    ids=["check", "migrate", "backup", "export", "report"],
)
def test_a_database_path_that_is_a_folder_is_refused_as_such(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--db`` naming a folder: said as such, exit 2. Before, check and export said "no such file", migrate and
    backup "unable to open database file" (exit 1), and report "no such database"."""
    folder = tmp_path / "state"
    folder.mkdir()
    argv = [*command[:2], *(str(tmp_path / a) if a == "copy.db" else a for a in command[2:])]
    assert cli_main([*argv, "--db", str(folder), "--env-file", os.devnull]) == 2
    name = " ".join(command[:2]) if command[0] == "db" else command[0]
    assert capsys.readouterr().err == f"npo-bot {name}: {folder} is a folder, not a database file\n"
    assert list(folder.iterdir()) == [] and not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize(
    "command",
    [["db", "check"], ["db", "backup", "copy.db"], ["db", "export", "--what", "audit"], ["db", "requeue"], ["report"]],
    ids=["check", "backup", "export", "requeue", "report"],
)
@pytest.mark.parametrize("content", [None, b"not a database, just some text\n"], ids=["missing", "not-sqlite"])
def test_a_missing_or_unreadable_database_is_exit_1_for_report_as_for_db(
    command: list[str], content: bytes | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database file that is not there, or is not an SQLite file, is a problem with the data, not a refused
    option: one line and exit 1, for ``report`` as for every ``db`` command (``report`` exited 2)."""
    db = tmp_path / "state.db"
    if content is not None:
        db.write_bytes(content)
    argv = [*command[:2], *(str(tmp_path / a) if a == "copy.db" else a for a in command[2:])]
    assert cli_main([*argv, "--db", str(db), "--env-file", os.devnull]) == 1
    err = capsys.readouterr().err
    name = " ".join(command[:2]) if command[0] == "db" else command[0]
    assert err.startswith(f"npo-bot {name}: ") and err.count("\n") == 1 and str(db) in err
    assert db.exists() == (content is not None) and not (tmp_path / "copy.db").exists()


def test_check_counts_every_problem_beyond_those_it_lists(
    db_path: Path, relaxed_policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLiteStore(db_path) as store:
        surface(store, [make_prediction(i) for i in range(25)], relaxed_policy)
    conn = sqlite3.connect(str(db_path))
    conn.execute("DELETE FROM outbox")  # every surfaced decision loses its message: 25 problems of one check
    conn.commit()
    conn.close()
    assert run_db(_parse(["db", "check", "--db", str(db_path)])) == 1
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("PROBLEM every surfaced decision")]
    assert len(listed) == 21 and listed[-1].endswith("… and 5 more like these")
    assert out.rstrip().endswith("25 problem(s)")


def test_check_and_export_read_a_backup_without_changing_it(
    filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backup is one self-contained file (rollback journal). ``db check`` and ``db export`` only read: before,
    they opened it as the bot does, which switched it to WAL (a change to the file, and a failure on read-only
    media, where the -wal and -shm files cannot be made)."""
    copy = tmp_path / "backup.db"
    assert run_db(_parse(["db", "backup", str(copy), "--db", str(filled)])) == 0
    before = copy.read_bytes()
    capsys.readouterr()
    assert run_db(_parse(["db", "check", "--db", str(copy)])) == 0
    assert run_db(_parse(["db", "export", "--what", "feedback", "--db", str(copy)])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "ok" and len(lines) == 2 + 2  # the check's two lines, then the two answers
    assert copy.read_bytes() == before
    assert not Path(f"{copy}-wal").exists() and not Path(f"{copy}-shm").exists()
    conn = sqlite3.connect(str(copy))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_backup_only_reads_its_source(filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A backup of a backup (one file, rollback journal) left the first one changed: ``db backup`` opened its source
    as the bot does, which switched it to WAL (its header rewritten, -wal and -shm files beside it), and a source
    the process may only read (read-only media, a file owned by another user) was refused ("attempt to write a
    readonly database"). The source is opened read-only, as ``db check`` opens it."""
    first = tmp_path / "first.db"
    assert run_db(_parse(["db", "backup", str(first), "--db", str(filled)])) == 0
    before = first.read_bytes()
    second = tmp_path / "second.db"
    assert run_db(_parse(["db", "backup", str(second), "--db", str(first)])) == 0
    assert first.read_bytes() == before
    assert not Path(f"{first}-wal").exists() and not Path(f"{first}-shm").exists()
    assert dump(second) == dump(first)
    capsys.readouterr()
    with unwritable(first):
        third = tmp_path / "third.db"
        assert run_db(_parse(["db", "backup", str(third), "--db", str(first)])) == 0, capsys.readouterr().err
    assert dump(third) == dump(first) and first.read_bytes() == before
    assert run_db(_parse(["db", "check", "--db", str(third)])) == 0


def test_a_dash_is_standard_output_for_export_and_refused_for_backup(
    filled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db export --out -`` wrote a file named ``-``, and ``db backup -`` a database under that name, where a user
    expects standard output, as for most commands that take a file. An export to ``-`` is written to standard
    output; a backup is a database file, never useful on a terminal and not made for a pipe, so ``-`` is refused
    before anything is opened. A file named ``-`` is still one ``./-`` away."""
    monkeypatch.chdir(tmp_path)
    db = ["--db", str(filled), "--env-file", os.devnull]
    assert run_db(_parse(["db", "export", "--what", "feedback", "--out", "-", *db])) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["request_id"] for line in captured.out.splitlines()] == ["r0", "r1"]
    assert captured.err == ""
    assert not (tmp_path / "-").exists()
    with pytest.raises(SystemExit) as refused:
        _parse(["db", "backup", "-", *db])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "a backup is a database file, not standard output" in err and "./-" in err
    assert not (tmp_path / "-").exists()
    assert run_db(_parse(["db", "backup", "./-", *db])) == 0  # a file named "-", asked for
    assert run_db(_parse(["db", "check", "--db", "./-", "--env-file", os.devnull])) == 0
    (tmp_path / "-").unlink()
    assert run_db(_parse(["db", "export", "--what", "feedback", "--out", "./-", *db])) == 0
    assert len((tmp_path / "-").read_text(encoding="utf-8").splitlines()) == 2


def test_check_reads_a_live_database_without_blocking_its_writer(filled: Path) -> None:
    """A check of the bot's own file runs beside the bot: a write committed while the check's connection is open
    is not disturbed, and the check's answer is for one consistent snapshot."""
    from storage.connection import connect_readonly  # noqa: PLC0415

    reader = connect_readonly(filled)
    try:
        reader.conn.execute("BEGIN")
        assert reader.conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 2
        with SQLiteStore(filled) as store, store.transaction() as tx:
            record_feedback(tx, FeedbackEvent("p2", "bob", FeedbackKind.LIKE, 6.0, "r9"), config=store.config)
        assert reader.conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 2  # its snapshot
        reader.conn.execute("ROLLBACK")
        assert reader.conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 3
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("DELETE FROM job_claims")
    finally:
        reader.close()


def test_the_settings_file_is_read_as_serve_reads_it(
    filled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db`` and ``report --db`` find NPO_DB_PATH / NPO_TIMEZONE as ``serve`` does. Before, a settings file given as
    a pipe (``--env-file <(sops -d npo.env.enc)``, which ``serve`` reads) was skipped, so ``db migrate`` created an
    empty ./npo.db and said it had migrated it; a file that is not UTF-8 ended in a traceback; and with
    NPO_DB_PATH set empty in the environment ``db`` used the file's path while ``serve`` used ./npo.db."""
    from bot.jobs.cli import add_report_parser, run_report  # noqa: PLC0415

    work = tmp_path / "work"  # not the folder of the database (tmp_path/npo.db)
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("NPO_DB_PATH", raising=False)
    monkeypatch.delenv("NPO_TIMEZONE", raising=False)
    read_end, write_end = os.pipe()
    os.write(write_end, f"NPO_DB_PATH={filled}\n".encode())
    os.close(write_end)
    try:
        assert run_db(_parse(["db", "migrate", "--env-file", f"/dev/fd/{read_end}"])) == 0
    finally:
        os.close(read_end)
    assert f"{filled}: schema version {LATEST_SCHEMA_VERSION} -> " in capsys.readouterr().out
    assert not (work / "npo.db").exists()

    not_utf8 = tmp_path / "latin1.env"
    not_utf8.write_bytes(b"NPO_DB_PATH=/var/lib/npo/caf\xe9.db\nNPO_TIMEZONE=Europe/Berlin\n")
    assert run_db(_parse(["db", "check", "--env-file", str(not_utf8)])) == 2  # refused as by every command
    err = capsys.readouterr().err
    assert err.startswith("npo-bot db check: ")
    assert f"{not_utf8}: cannot be read as UTF-8" in err and "Traceback" not in err
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_report_parser(parser.add_subparsers(dest="command"))
    report = parser.parse_args(["report", "--db", str(filled), "--env-file", str(not_utf8)])
    assert run_report(report) == 2
    err = capsys.readouterr().err
    assert err.startswith("npo-bot report: ") and "cannot be read as UTF-8" in err

    (work / ".env").write_text(f"NPO_DB_PATH={filled}\n")
    monkeypatch.setenv("NPO_DB_PATH", "")  # set empty: serve's setting is the default, ./npo.db
    assert run_db(_parse(["db", "check"])) == 1
    assert "no database at npo.db" in capsys.readouterr().err


def _fail_all(store: SQLiteStore, error: str, at: float) -> None:
    """Claim every pending outbox message and fail it for good with ``error`` at ``at``."""
    for item in store.claim_due(now=1e12, limit=1000):
        store.mark_failed(item.id, error, attempt=item.attempts, at=at)


def test_requeue_leaves_failed_what_would_post_something_wrong_or_twice(
    db_path: Path, relaxed_policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resolved or answered recommendations, a second failed post of one recommendation, an update of a
    recommendation never posted, all but the newest of several updates of one message, an ephemeral reply and a
    retraining alert whose proposal is closed stay failed, counted by reason; ``--since`` and ``--error`` select by
    when and why the message failed."""
    with SQLiteStore(db_path) as store:
        surface(store, [make_prediction(i) for i in range(4)], relaxed_policy)  # outbox 1-4: recommendations p0-p3
        store.enqueue("C1", "update", {"prediction_id": "p3"}, 10.0, prediction_id="p3")  # 5: p3 was never posted
        store.enqueue("C1", "ephemeral", {"user": "U1", "text": "noted"}, 10.0)  # 6
        store.enqueue("C1", "message_update", {"ts": "1.0", "text": "a"}, 10.0)  # 7: superseded by 8
        store.enqueue("C1", "message_update", {"ts": "1.0", "text": "b"}, 10.0)  # 8
        store.enqueue("C1", "message", {"text": "old proposal", "proposal_id": 99}, 10.0)  # 9: no such proposal
        store.enqueue("C1", "recommendation", {"prediction_id": "p2"}, 10.0, prediction_id="p2")  # 10: p2 twice
        _fail_all(store, "channel_not_found", at=1_000.0)
        store.enqueue("C1", "thread_reply", {"thread_ts": "1.0", "text": "later"}, 20.0)  # 11: failed later
        _fail_all(store, "not_in_channel", at=2_000_000_000.0)
        with store.transaction() as tx:
            tx.add_outcome(Outcome("p0", True, 50.0))
            record_feedback(tx, FeedbackEvent("p1", "alice", FeedbackKind.LIKE, 5.0, "r1"), config=store.config)

    def requeue(*args: str) -> str:
        assert cli_main(["db", "requeue", "--db", str(db_path), *args]) == 0
        return capsys.readouterr().out

    before = dump(db_path)
    out = requeue("--dry-run")
    assert out == (
        f"{db_path}: would requeue 4 of 11 failed message(s) (1 message_update/channel_not_found, "
        "2 recommendation/channel_not_found, 1 thread_reply/not_in_channel); left failed 7 (1 ephemeral: a reply to "
        "a click at the time, 1 message: its retraining proposal is closed, 1 message_update: superseded by a later "
        "update, 1 recommendation: answered, 1 recommendation: posted by another message, 1 recommendation: "
        "resolved, 1 update: its recommendation has no message of its own)\n"
    )
    assert dump(db_path) == before  # a dry run writes nothing
    assert "would requeue 1 of 1 " in requeue("--dry-run", "--since", "2030-01-01T00:00:00")  # the thread reply
    assert "would requeue 1 of 1 " in requeue("--dry-run", "--error", "not_in_channel")

    assert "requeued 4 of 11 " in requeue()
    with SQLiteStore(db_path) as store:
        pending = {(item.kind, item.prediction_id) for item in store.outbox("pending")}
        assert all(item.attempts == 0 and item.last_error is None for item in store.outbox("pending"))
    assert pending == {
        ("recommendation", "p2"),
        ("recommendation", "p3"),
        ("message_update", None),
        ("thread_reply", None),
    }
    conn = sqlite3.connect(str(db_path))
    states = dict(conn.execute("SELECT prediction_id, state FROM recommendations").fetchall())
    conn.close()
    assert states == {"p0": "resolved", "p1": "failed", "p2": "pending", "p3": "pending"}
    assert "requeued 0 of 7 " in requeue()  # the second run: nothing more


def test_requeue_leaves_failed_a_recommendation_whose_predicted_fault_time_has_passed(
    db_path: Path, relaxed_policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recommendation whose post failed yesterday and whose fault was predicted within 6 h would be posted today
    saying "Predicted fault in 6.0 h": it stays failed, counted under its own reason, unless ``--include-overdue``
    asks for it. One with its fault still ahead, or with no predicted time, is requeued as before."""
    now = time.time()
    with SQLiteStore(db_path) as store:
        surface(
            store,
            [
                make_prediction(0, received_at=now - 86_400, time_to_fault_s=6 * 3600.0),  # due 18 h ago
                make_prediction(1, received_at=now - 3600, time_to_fault_s=6 * 3600.0),  # due in 5 h
                make_prediction(2, received_at=now - 86_400),  # no predicted time
            ],
            relaxed_policy,
        )
        _fail_all(store, "invalid_auth", at=now - 60)

    def requeue(*args: str) -> str:
        assert cli_main(["db", "requeue", "--db", str(db_path), *args]) == 0
        return capsys.readouterr().out

    assert requeue("--dry-run") == (
        f"{db_path}: would requeue 2 of 3 failed message(s) (2 recommendation/invalid_auth); left failed 1 "
        "(1 recommendation: its predicted fault time has passed)\n"
    )
    assert "would requeue 3 of 3 " in requeue("--dry-run", "--include-overdue")
    assert "requeued 2 of 3 " in requeue()
    with SQLiteStore(db_path) as store:
        assert sorted(str(item.prediction_id) for item in store.outbox("pending")) == ["p1", "p2"]
        assert [item.prediction_id for item in store.outbox("failed")] == ["p0"]
    assert "requeued 0 of 1 " in requeue()  # run again: still left failed, nothing more
    assert "requeued 1 of 1 failed message(s) (1 recommendation/invalid_auth)" in requeue("--include-overdue")


@pytest.fixture
def big(filled: Path) -> Path:
    """``filled`` grown to ~200 MB, so a backup of it takes long enough to be stopped half way."""
    conn = sqlite3.connect(str(filled))
    conn.executemany(
        "INSERT INTO job_state (name, value, updated_at) VALUES (?, ?, 0)",
        ((f"filler{i}", json.dumps("x" * 4_000_000 + str(i))) for i in range(50)),
    )
    conn.commit()
    conn.close()
    return filled


def _backup_half_way(db: Path, target: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``npo-bot db backup target --db db`` in another process, once its hidden copy has over 1 MB written: the
    process and that hidden file."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    npo_bot = [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())"]
    proc = subprocess.Popen([*npo_bot, "db", "backup", str(target), "--db", str(db), "--env-file", os.devnull], env=env)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # until the copy has started to be written
        for f in target.parent.iterdir():
            if f.name.startswith(f".{target.name}.") and f.name.endswith(".partial") and f.stat().st_size > 1_000_000:
                return proc, f
    proc.kill()
    proc.wait()
    raise AssertionError(f"the backup into {target} ended or never started writing (exit {proc.returncode})")


def test_a_backup_killed_half_way_leaves_no_file_under_the_backup_name(big: Path, tmp_path: Path) -> None:
    """``db backup`` stopped mid-copy (SIGKILL; the same for SIGTERM, a host shutdown or a timeout of the backup
    unit) left a half-written file under the backup's name, which the next run refused to replace and which
    looked like a backup among the dated copies. The copy now gets its name only once complete; and the hidden
    file the stopped copy was written to, which stayed beside the backups for good, is removed by the next backup
    into that folder."""
    copies = tmp_path / "copies"
    copies.mkdir()
    target = copies / "npo-backup.db"
    proc, partial = _backup_half_way(big, target)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL  # stopped half way, not finished
    assert not target.exists() and partial.exists()
    assert run_db(_parse(["db", "backup", str(target), "--db", str(big)])) == 0  # the name is free for a retry
    assert run_db(_parse(["db", "check", "--db", str(target)])) == 0
    assert sorted(p.name for p in copies.iterdir()) == ["npo-backup.db"]  # the stopped copy's file is gone


def test_a_backup_leaves_the_hidden_file_of_one_still_running_alone(big: Path, tmp_path: Path) -> None:
    """A backup removes the hidden files of stopped backups in its folder, never that of a backup still copying
    (here paused with SIGSTOP, its lock held, while a second backup into the same folder runs)."""
    copies = tmp_path / "copies"
    copies.mkdir()
    first, second = copies / "first.db", copies / "second.db"
    proc, partial = _backup_half_way(big, first)
    try:
        proc.send_signal(signal.SIGSTOP)
        inode = partial.stat().st_ino
        assert run_db(_parse(["db", "backup", str(second), "--db", str(big)])) == 0
        assert partial.stat().st_ino == inode  # still there, the same file
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for copy in (first, second):
        assert run_db(_parse(["db", "check", "--db", str(copy)])) == 0
    assert sorted(p.name for p in copies.iterdir()) == ["first.db", "second.db"]


def test_a_backup_removes_only_stale_hidden_copies(filled: Path, tmp_path: Path) -> None:
    """Hidden copies named as versions before the lock named them (``.NAME.PID.partial``, no lock to tell a
    running one by) are removed once untouched for an hour; a newer one, an export's hidden file (not SQLite) and
    a link are left alone, as are the files of other programs."""
    copies = tmp_path / "copies"
    copies.mkdir()
    sqlite_bytes = filled.read_bytes()[:4096]
    hour_ago = time.time() - 2 * 3600
    old = {
        ".npo-2025-03-01.db.4242.partial": sqlite_bytes,  # a stopped backup by an earlier version: removed
        ".npo-2025-03-01.db.4242.partial-journal": b"journal",  # ...with its journal
        ".npo-2025-02-01.db.4241.partial": b"\x00" * 4096,  # stopped before the header was written: removed...
        ".npo-2025-02-01.db.4241.partial-journal": b"journal",  # ...as its journal says it is SQLite's
        ".feedback.csv.4243.partial": b"prediction_id,operator\r\n",  # an export's: not SQLite, left
        ".download.iso.4244.partial": b"\x00" * 64,  # another program's: left
    }
    for name, content in old.items():
        (copies / name).write_bytes(content)
        os.utime(copies / name, (hour_ago, hour_ago))
    (copies / ".npo-2025-03-02.db.4245.partial").write_bytes(sqlite_bytes)  # written just now: left
    (copies / ".npo-2025-03-03.db.4246.0123456789abcdef.partial").symlink_to(filled)  # a link: left
    assert run_db(_parse(["db", "backup", str(copies / "npo.db"), "--db", str(filled)])) == 0
    assert sorted(p.name for p in copies.iterdir()) == [
        ".download.iso.4244.partial",
        ".feedback.csv.4243.partial",
        ".npo-2025-03-02.db.4245.partial",
        ".npo-2025-03-03.db.4246.0123456789abcdef.partial",
        "npo.db",
    ]
    assert filled.read_bytes()[:4096] == sqlite_bytes


def test_a_backup_gets_the_permissions_sqlite_gives_a_new_database(filled: Path, tmp_path: Path) -> None:
    """A backup is created as SQLite creates a database file (0644 less the umask), not 0666 less it: under a
    permissive umask (0, 002) a copy of every answer and outcome is not left writable by the group or by anyone."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    npo_bot = [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())"]
    for umask, mode in ((0o000, 0o644), (0o002, 0o644), (0o077, 0o600)):
        copy = tmp_path / f"backup-{umask:03o}.db"
        argv = [*npo_bot, "db", "backup", str(copy), "--db", str(filled), "--env-file", os.devnull]
        subprocess.run(argv, env=env, umask=umask, check=True, capture_output=True)
        assert copy.stat().st_mode & 0o777 == mode, (oct(umask), oct(copy.stat().st_mode & 0o777))


def test_a_backup_is_no_more_readable_than_its_database(filled: Path, tmp_path: Path) -> None:
    """A database its operator made private (0600, or 0640 for a group) was copied as 0644 less the umask: a copy
    of every answer and outcome readable by anyone on the host. The backup gets no permission the database lacks."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    npo_bot = [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())"]
    for db_mode, umask, mode in ((0o600, 0o022, 0o600), (0o640, 0o000, 0o640), (0o640, 0o077, 0o600)):
        filled.chmod(db_mode)
        copy = tmp_path / f"backup-{db_mode:03o}-{umask:03o}.db"
        argv = [*npo_bot, "db", "backup", str(copy), "--db", str(filled), "--env-file", os.devnull]
        subprocess.run(argv, env=env, umask=umask, check=True, capture_output=True)
        assert copy.stat().st_mode & 0o777 == mode, (oct(db_mode), oct(umask), oct(copy.stat().st_mode & 0o777))
