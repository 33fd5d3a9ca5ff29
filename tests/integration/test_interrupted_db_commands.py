"""Ctrl-C (a real SIGINT) stops ``npo-bot report`` and every ``npo-bot db …`` command as it stops ``simulate``,
``evaluate`` and ``replay``: exit 130, one line on stderr saying what is left, no traceback, and the database as
it was (``requeue`` and ``migrate`` are one transaction each; an ``export --out`` or a ``backup`` leaves no file
behind). The signal is sent by the command's own process at a chosen moment (a profile hook in the launcher: when a
function returns), so the moment is the same on every run. The same launcher stops an ``export --out`` for good
(SIGKILL) or pauses it (SIGSTOP) half way, to see what the next export into the folder does with its hidden file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from storage_testing import dump, make_prediction, surface

from bot.cli import main as cli_main
from npo.loop import record_feedback
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore, connect, migrate, schema_version

# `npo-bot` with Python's own Ctrl-C handling (a child of the test runner may inherit SIGINT ignored), sending
# itself the signal argv[1] (SIGINT, SIGKILL, SIGSTOP) once the function argv[2] has returned for the argv[3]-th
# time: "module:qualname", or for a C function "module:qualname>c_module.name" (the C function called from that
# Python function).
_LAUNCH = """
import os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sent, target, nth = getattr(signal, sys.argv.pop(1)), sys.argv.pop(1), int(sys.argv.pop(1))
seen = 0
def profile(frame, event, arg):
    global seen
    if event not in ("return", "c_return"):
        return
    name = f"{frame.f_globals.get('__name__')}:{frame.f_code.co_qualname}"
    if event == "c_return":
        name += f">{getattr(arg, '__module__', '')}.{getattr(arg, '__name__', '')}"
    if name == target:
        seen += 1
        if seen == nth:
            sys.setprofile(None)
            os.kill(os.getpid(), sent)
sys.setprofile(profile)
sys.argv = ["npo-bot", *sys.argv[1:]]
runpy.run_module("bot.cli", run_name="__main__")
"""


def _launch(sent: str, at: str, nth: int, argv: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``npo-bot argv… --env-file /dev/null`` sending itself ``sent`` once
    ``at`` returned for the ``nth`` time."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("NPO_DB_PATH", None)
    return [sys.executable, "-c", _LAUNCH, sent, at, str(nth), *argv, "--env-file", os.devnull], env


def _interrupted(at: str, nth: int, *argv: str, cwd: Path) -> tuple[str, str]:
    """Run ``npo-bot argv… --env-file /dev/null``, interrupted once ``at`` returned for the ``nth`` time; its
    stdout and stderr, after checking it exited 130 with one line on stderr and no traceback."""
    command, env = _launch("SIGINT", at, nth, argv)
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, timeout=120, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.count("\n") == 1, err[-2000:]
    return proc.stdout.decode(), err


@pytest.fixture
def filled(db_path: Path, relaxed_policy: Policy) -> Path:
    now = time.time()
    with SQLiteStore(db_path) as store:
        surface(store, [make_prediction(i, received_at=now - 3600) for i in range(40)], relaxed_policy)
        for i in range(20):
            with store.transaction() as tx:
                event = FeedbackEvent(f"p{i}", "alice", FeedbackKind.LIKE, now - 60, f"r{i}")
                record_feedback(tx, event, config=store.config)
        for item in store.claim_due(now=1e12, limit=1000):  # every post failed for good: requeue has work
            store.mark_failed(item.id, "invalid_auth", attempt=item.attempts, at=now - 60)
    return db_path


def test_report_interrupted(filled: Path, tmp_path: Path) -> None:
    before = dump(filled)
    out, err = _interrupted("bot.jobs.report:build_report", 1, "report", "--db", str(filled), cwd=tmp_path)
    assert err.startswith("npo-bot report: interrupted") and out == ""
    assert dump(filled) == before


def test_requeue_interrupted_inside_its_transaction_changes_nothing(filled: Path, tmp_path: Path) -> None:
    """Stopped after the messages were put back to pending, before their audit lines: all of it rolled back."""
    before = dump(filled)
    out, err = _interrupted("storage.outbox:requeue", 1, "db", "requeue", "--db", str(filled), cwd=tmp_path)
    assert err.startswith("npo-bot db requeue: interrupted; nothing was requeued") and out == ""
    assert dump(filled) == before


def test_migrate_interrupted_between_two_migrations_changes_nothing(db_path: Path, tmp_path: Path) -> None:
    db = connect(db_path)
    try:
        assert migrate(db, stop_before="m016_recommendation_due") == 15
    finally:
        db.close()
    before = dump(db_path)
    out, err = _interrupted(
        "storage.migrations:m016_recommendation_due", 1, "db", "migrate", "--db", str(db_path), cwd=tmp_path
    )
    assert err.startswith("npo-bot db migrate: interrupted") and out == ""
    assert dump(db_path) == before
    db = connect(db_path)
    try:
        assert schema_version(db) == 15
    finally:
        db.close()


def test_check_interrupted(filled: Path, tmp_path: Path) -> None:
    before = dump(filled)
    out, err = _interrupted("storage.maintenance:check", 1, "db", "check", "--db", str(filled), cwd=tmp_path)
    assert err.startswith("npo-bot db check: interrupted") and out == ""
    assert dump(filled) == before


def test_backup_interrupted_as_the_copy_is_created_leaves_no_file(filled: Path, tmp_path: Path) -> None:
    """The backup's ``sqlite3.connect`` creates the file: Ctrl-C right then left an empty file, which the next
    ``db backup`` to that name refused as already existing."""
    copy = tmp_path / "backup.db"
    before = dump(filled)
    out, err = _interrupted(
        "storage.maintenance:_copy>_sqlite3.connect", 1, "db", "backup", str(copy), "--db", str(filled), cwd=tmp_path
    )
    assert err == f"npo-bot db backup: interrupted; no backup was written to {copy}\n" and out == ""
    assert not copy.exists() and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup.db.")]
    assert dump(filled) == before


def test_export_to_stdout_interrupted_midway(filled: Path, tmp_path: Path) -> None:
    argv = ("db", "export", "--what", "decisions", "--format", "csv", "--db", str(filled))
    out, err = _interrupted("bot.db_cli:_csv_cell", 5, *argv, cwd=tmp_path)
    assert err == "npo-bot db export: interrupted; the output is incomplete\n"
    assert out.startswith("prediction_id,")


def test_export_to_a_file_interrupted_midway_leaves_the_file_as_it_was(filled: Path, tmp_path: Path) -> None:
    target = tmp_path / "decisions.csv"
    target.write_text("an earlier export\n", encoding="utf-8")
    argv = ("db", "export", "--what", "decisions", "--format", "csv", "--db", str(filled), "--out", str(target))
    out, err = _interrupted("bot.db_cli:_csv_cell", 5, *argv, cwd=tmp_path)
    assert err == f"npo-bot db export: interrupted; {target} was not written (a file already there is left as it was)\n"
    assert out == ""
    assert target.read_text(encoding="utf-8") == "an earlier export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "decisions" in p.name) == ["decisions.csv"]  # no .partial


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_hidden_file_of_an_export_killed_half_way_is_removed_by_the_next_export(
    filled: Path, tmp_path: Path
) -> None:
    """``db export --out`` stopped for good half way (SIGKILL; a power loss, the OOM killer) left its hidden
    ``.NAME.PID.partial`` file beside the export for good, as a backup did before its hidden file was locked. The
    export's hidden file is now a backup's (locked while written), and the next export into the folder removes it."""
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "decisions.csv"
    argv = ("db", "export", "--what", "decisions", "--format", "csv", "--db", str(filled), "--out", str(target))
    command, env = _launch("SIGKILL", "bot.db_cli:_csv_cell", 5, argv)
    killed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not target.exists() and len(_hidden(exports)) == 1  # the stopped export's hidden file
    assert cli_main([*argv, "--env-file", os.devnull]) == 0
    assert sorted(p.name for p in exports.iterdir()) == ["decisions.csv"]
    assert len(target.read_text(encoding="utf-8").splitlines()) == 1 + 40  # the header and every decision


def test_an_export_leaves_the_hidden_file_of_one_still_running_alone(filled: Path, tmp_path: Path) -> None:
    """An export removes the hidden files of stopped exports in its folder, never that of one still writing (here
    paused with SIGSTOP half way, its lock held, while a second export to the same name runs)."""
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "decisions.csv"
    argv = ("db", "export", "--what", "decisions", "--format", "csv", "--db", str(filled), "--out", str(target))
    command, env = _launch("SIGSTOP", "bot.db_cli:_csv_cell", 5, argv)
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once it has stopped itself half way
        assert os.WIFSTOPPED(status), status
        [hidden] = _hidden(exports)
        inode = (exports / hidden).stat().st_ino
        assert cli_main([*argv, "--env-file", os.devnull]) == 0  # a second export to the same name
        assert (exports / hidden).stat().st_ino == inode  # still there, the same file
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err.decode()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sorted(p.name for p in exports.iterdir()) == ["decisions.csv"]
    assert len(target.read_text(encoding="utf-8").splitlines()) == 1 + 40
