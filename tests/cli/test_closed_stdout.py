"""Every ``npo-bot`` command that prints a result, when its stdout cannot take it: a reader that went away
(``| head``, ``| true``) is exit 141 and nothing on stderr, as cat and git do; a full disk (``> /dev/full``) and a
stdout closed at start (``>&-``) are one line on stderr and exit 1 — never a traceback. The real command line in
a child process, as a shell runs it (``evaluate`` and ``simulate`` are tested beside their other failures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SIGPIPE_EXIT = 141
FEED = (
    '{"id": "p1", "fault_type": "disk_full", "target": "db-1", "action": "expand the volume", "confidence": 0.9}\n'
    '{"id": "p2", "fault_type": "oom", "target": "web-1", "action": "restart the worker", "confidence": 0.8}\n'
)
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (always full)")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A database holding two decisions (``npo-bot replay`` of a feed), the feed, and the settings replay needs
    (from the environment: Slack is never called)."""
    folder = tmp_path_factory.mktemp("closed-stdout")
    feed = folder / "feed.jsonl"
    feed.write_text(FEED, encoding="utf-8")
    db = folder / "npo.db"
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "NPO_DB_PATH": str(db),
    }
    env.pop("PYTHONIOENCODING", None)
    made = _npo(["replay", str(feed), "--env-file", os.devnull], env, stdout=subprocess.PIPE)
    assert made.returncode == 0, made.stderr.decode()
    return {"folder": folder, "feed": feed, "db": db, "env": env}


def _npo(argv: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        check=False,
        timeout=120,
        **kwargs,
    )


@contextmanager
def _pipe_nobody_reads() -> Iterator[int]:
    """The write end of a pipe whose reader has already gone away (``npo-bot … | true``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


def _report(w: dict[str, Any], n: int) -> list[str]:
    return ["report", "--db", str(w["db"]), "--env-file", os.devnull]


def _replay(w: dict[str, Any], n: int) -> list[str]:
    return ["replay", str(w["feed"]), "--env-file", os.devnull]


def _db(sub: str) -> Callable[[dict[str, Any], int], list[str]]:
    def argv(w: dict[str, Any], n: int) -> list[str]:
        extra = {
            "backup": [str(w["folder"] / f"backup-{n}.db")],
            "export": ["--what", "decisions"],
        }.get(sub, [])
        return ["db", sub, *extra, "--db", str(w["db"])]

    return argv


COMMANDS: dict[str, Callable[[dict[str, Any], int], list[str]]] = {
    "report": _report,
    "replay": _replay,
    "db check": _db("check"),
    "db migrate": _db("migrate"),
    "db backup": _db("backup"),
    "db export": _db("export"),
    "policy check": lambda w, n: ["policy", "check"],
}
_runs = iter(range(1_000_000))  # a new backup file each run


@pytest.mark.parametrize("command", COMMANDS)
def test_a_reader_that_went_away_is_exit_141_and_nothing_on_stderr(world: dict[str, Any], command: str) -> None:
    with _pipe_nobody_reads() as stdout:
        proc = _npo(COMMANDS[command](world, next(_runs)), world["env"], stdout=stdout)
    assert proc.returncode == SIGPIPE_EXIT, proc.stderr.decode()
    assert proc.stderr == b""


@needs_dev_full
@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_stdout_is_one_line_and_exit_1(world: dict[str, Any], command: str) -> None:
    with open("/dev/full", "wb") as full:
        proc = _npo(COMMANDS[command](world, next(_runs)), world["env"], stdout=full)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"npo-bot {command}: cannot write the result to stdout: No space left on device\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_stdout_closed_at_start_is_one_line_not_a_silent_success(world: dict[str, Any], command: str) -> None:
    """``npo-bot … >&-``: Python starts with no stdout at all; the result must not vanish without a word."""
    proc = _npo(COMMANDS[command](world, next(_runs)), world["env"], preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"npo-bot {command}: stdout is closed; nothing was printed\n"


@pytest.mark.parametrize("command", ["report", "db check", "replay", "policy check"])
def test_the_result_is_utf8_whatever_the_terminal_encoding(world: dict[str, Any], command: str) -> None:
    """The report holds τ and ·; a path or a verdict may hold any character."""
    env = world["env"] | {"PYTHONIOENCODING": "ascii"}
    proc = _npo(COMMANDS[command](world, next(_runs)), env, stdout=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    proc.stdout.decode("utf-8")


@pytest.mark.parametrize("out", [None, "/dev/stdout", "-"])
def test_an_export_into_a_pipe_whose_reader_went_away_is_exit_141_however_named(
    world: dict[str, Any], out: str | None
) -> None:
    """``npo-bot db export --out /dev/stdout | true`` said "[Errno 32] Broken pipe" and exit 1, where the same export
    to stdout by default is exit 141 and nothing on stderr: the reader went away, whichever name the pipe was
    written under."""
    argv = ["db", "export", "--what", "decisions", "--db", str(world["db"])]
    with _pipe_nobody_reads() as stdout:
        proc = _npo([*argv, *(["--out", out] if out else [])], world["env"], stdout=stdout)
    assert proc.returncode == SIGPIPE_EXIT, proc.stderr.decode()
    assert proc.stderr == b""


@needs_dev_full
def test_an_export_into_a_full_device_names_it(world: dict[str, Any]) -> None:
    """``--out /dev/full`` (or ``--out /dev/stdout`` on a full disk): one line naming the file, as for a file."""
    argv = ["db", "export", "--what", "decisions", "--db", str(world["db"]), "--out", "/dev/full"]
    proc = _npo(argv, world["env"], stdout=subprocess.DEVNULL)
    assert proc.returncode == 1
    err = "npo-bot db export: export '/dev/full': cannot write the file: No space left on device\n"
    assert proc.stderr.decode() == err


def test_what_is_done_before_the_pipe_breaks_stays_done(world: dict[str, Any]) -> None:
    """The backup and the migration happen before their one line is printed: a reader gone away loses the line only."""
    target = world["folder"] / "kept-backup.db"
    with _pipe_nobody_reads() as stdout:
        proc = _npo(["db", "backup", str(target), "--db", str(world["db"])], world["env"], stdout=stdout)
    assert proc.returncode == SIGPIPE_EXIT and target.is_file()
    check = _npo(["db", "check", "--db", str(target)], world["env"], stdout=subprocess.PIPE)
    assert check.returncode == 0 and check.stdout.decode().endswith("ok\n")
    exported = _npo(["db", "export", "--db", str(target), "--what", "decisions"], world["env"], stdout=subprocess.PIPE)
    assert sorted(json.loads(line)["prediction_id"] for line in exported.stdout.decode().splitlines()) == ["p1", "p2"]


# --- npo-bot demo: a start line while it runs, a summary when it stops ------------------------------------------


def _demo(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bot.cli", "demo", "--port", "0", "--db", str(tmp_path / "demo.db"), *extra]


DEMO_ENV = os.environ | {"PYTHONPATH": str(REPO)}
QUICK_DEMO = ("--auto", "--count", "3", "--rate", "600", "--quiet")


def _run_demo(tmp_path: Path, stdout: Any) -> subprocess.CompletedProcess[bytes]:
    """A short unattended demo with ``stdout`` as its standard output (stderr captured)."""
    return subprocess.run(
        _demo(tmp_path, *QUICK_DEMO),
        cwd=REPO,
        env=DEMO_ENV,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )


def test_demo_with_no_reader_from_the_start_is_exit_141_and_stops_cleanly(tmp_path: Path) -> None:
    """``npo-bot demo … | true``: the start line cannot be printed; the demo still runs to its end and closes its
    database (no -wal left), then exits 141."""
    with _pipe_nobody_reads() as stdout:
        proc = _run_demo(tmp_path, stdout)
    err = proc.stderr.decode()
    assert proc.returncode == SIGPIPE_EXIT, err
    assert "Traceback" not in err and "Broken pipe" not in err
    assert (tmp_path / "demo.db").is_file() and not (tmp_path / "demo.db-wal").exists()


def test_demo_whose_reader_takes_the_url_and_leaves_is_exit_141(tmp_path: Path) -> None:
    """``npo-bot demo … | head -1``: the URL is read, then the summary finds nobody."""
    with (tmp_path / "stderr.log").open("w+b") as log:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            _demo(tmp_path, *QUICK_DEMO), cwd=REPO, env=DEMO_ENV, stdout=subprocess.PIPE, stderr=log
        )
        assert proc.stdout is not None
        try:
            with proc.stdout:
                first = proc.stdout.readline().decode()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        err = log.read().decode()
    assert first.startswith("NPO demo running: open http://127.0.0.1:"), first
    assert code == SIGPIPE_EXIT, err
    assert "Traceback" not in err and "Broken pipe" not in err, err
    assert not (tmp_path / "demo.db-wal").exists()


@needs_dev_full
def test_demo_into_a_full_stdout_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        proc = _run_demo(tmp_path, full)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert err.count("npo-bot demo: cannot write to stdout: No space left on device\n") == 1, err


def test_demo_with_stdout_closed_runs_as_it_would_and_stops_cleanly(tmp_path: Path) -> None:
    """``npo-bot demo … >&-``: it runs, printing nothing, and closes its database. The web server's log set-up
    asked the missing stdout whether it is a terminal and the demo ended in a traceback before it started."""
    proc = subprocess.run(
        _demo(tmp_path, *QUICK_DEMO),
        cwd=REPO,
        env=DEMO_ENV,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    db = tmp_path / "demo.db"
    assert db.is_file() and not Path(f"{db}-wal").exists()
    check = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "check", "--db", str(db)],
        cwd=REPO,
        env=DEMO_ENV,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0 and check.stdout.decode().endswith("ok\n"), check.stdout.decode()
