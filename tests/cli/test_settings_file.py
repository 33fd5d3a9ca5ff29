"""``--env-file``: a settings file named on the command line must exist; the implicit ``./.env`` may be absent.

Before, every command took a named file that does not exist for "no settings file": ``npo-bot db migrate
--env-file /etc/npo/npo.evn`` (a typo) created and migrated an empty ``./npo.db`` and exited 0, ``db backup``
copied the wrong database, ``report --db`` counted the days in UTC, and ``serve`` ran on the environment alone.
Now each command refuses it with one line naming the option and the file, exit 2, before anything is opened or
created. The real command line: in-process for the commands that return, in a child process for ``serve`` and
``socket`` (which, before, kept running).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {  # complete: only the settings file is missing
    "SLACK_BOT_TOKEN": "xoxb-test-token",
    "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
    "NPO_INGEST_TOKEN": "ingest-token-0123456789",
    "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
    "NPO_OPS_CHANNEL": "C0OPS",
    "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never reached
    "SLACK_APP_TOKEN": "xapp-test-token",
    "NPO_PORT": "0",
}
RETURNING = [
    ["db", "migrate"],
    ["db", "migrate", "--db", "given.db"],
    ["db", "backup", "copy.db"],
    ["db", "check"],
    ["db", "export", "--what", "feedback"],
    ["report"],
    ["report", "--db", "given.db"],
    ["replay", "feed.jsonl"],
]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (no ./.env, no ./npo.db) and the complete settings in the environment."""
    for name in [n for n in os.environ if n.startswith(("NPO_", "SLACK_"))]:
        monkeypatch.delenv(name)
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "feed.jsonl").write_text(
        '{"id": "p1", "fault_type": "disk", "target": "r1-n1", "action": "drain", "confidence": 0.9}\n',
        encoding="utf-8",
    )
    return tmp_path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("argv", RETURNING, ids=" ".join)
def test_a_named_settings_file_that_does_not_exist_is_refused(
    argv: list[str], work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(work)
    assert main([*argv, "--env-file", "npo.evn"]) == 2
    captured = capsys.readouterr()
    command = " ".join(argv[:2]) if argv[0] == "db" else argv[0]
    assert captured.err == f"npo-bot {command}: --env-file npo.evn: no such file\n"
    assert captured.out == ""
    assert _files(work) == before  # no ./npo.db, no copy, nothing decided


@pytest.mark.parametrize("command", ["serve", "socket"])
def test_serve_and_socket_refuse_a_missing_settings_file_before_they_start(command: str, work: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    env |= SETTINGS | {"PYTHONPATH": str(REPO), "NPO_DB_PATH": str(work / "npo.db")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", command, "--env-file", str(work / "npo.evn")],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"npo-bot {command} started on the environment alone")
    assert done.returncode == 2
    assert done.stderr == f"npo-bot {command}: --env-file {work / 'npo.evn'}: no such file\n"
    assert not (work / "npo.db").exists()


def test_the_default_settings_file_may_be_absent_and_a_named_one_is_read(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--env-file`` a missing ./.env is no error (the settings come from the environment); a named file
    that exists, a pipe or ``/dev/null`` (the environment only) is read."""
    assert main(["db", "migrate"]) == 0
    assert capsys.readouterr().out.startswith("npo.db: schema version 0 -> ")
    (work / "npo.env").write_text("NPO_DB_PATH=named.db\n", encoding="utf-8")
    assert main(["db", "migrate", "--env-file", "npo.env"]) == 0
    assert capsys.readouterr().out.startswith("named.db: schema version 0 -> ")
    assert main(["db", "check", "--env-file", os.devnull]) == 0
    assert capsys.readouterr().out.startswith("npo.db: schema version")
    assert main(["replay", "feed.jsonl", "--env-file", os.devnull]) == 0
    assert capsys.readouterr().out.startswith("1 decided")


# `db … --db FILE` needs nothing from a settings file that exists, so it does not read it.
READING = [argv for argv in RETURNING if argv[0] != "db" or "--db" not in argv]


@pytest.mark.parametrize("argv", READING, ids=" ".join)
def test_a_malformed_settings_file_is_refused_by_every_command_alike(
    argv: list[str], work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A settings file that cannot be read (an unterminated quote) is a refused setting: exit 2 from every command,
    the message starting with the command's name and naming the file and line; nothing is opened or created.
    Before, ``db …`` exited 1 (as for problems found in a database) and ``replay`` said only "npo-bot:"."""
    (work / "npo.env").write_text('NPO_DB_PATH="npo.db\n', encoding="utf-8")
    before = _files(work)
    assert main([*argv, "--env-file", "npo.env"]) == 2
    captured = capsys.readouterr()
    command = " ".join(argv[:2]) if argv[0] == "db" else argv[0]
    assert captured.err.startswith(f"npo-bot {command}: invalid configuration"), captured.err
    assert "npo.env line 1: NPO_DB_PATH: unterminated quote" in captured.err
    assert captured.out == ""
    assert _files(work) == before


@pytest.mark.parametrize(
    "argv", [["db", "migrate"], ["db", "check"], ["report", "--db", "given.db"], ["report"]], ids=" ".join
)
def test_a_misspelled_name_in_the_settings_file_is_warned_by_every_command_that_reads_it(
    argv: list[str], work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``db`` and ``report --db`` read one setting each: a typo there (``NPO_DB_PAHT``) made ``db migrate`` create
    and migrate ``./npo.db`` without a word, where ``serve`` warns about it with the name meant. ``report`` reads
    two (the database and the zone) and warned about each typo twice, once per setting it read."""
    (work / ".env").write_text("NPO_DB_PAHT=state.db\nNPO_TIMEZNE=Europe/Berlin\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="bot.config"):
        main(argv)
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.config" and r.levelname == "WARNING"]
    assert any("NPO_DB_PAHT" in w and "did you mean NPO_DB_PATH?" in w for w in warnings), warnings
    assert any("NPO_TIMEZNE" in w and "did you mean NPO_TIMEZONE?" in w for w in warnings), warnings
    assert len(warnings) == 2, warnings  # once each


def test_report_needs_only_the_database_not_the_slack_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``report`` only reads the database: like ``db``, it finds it (and the zone) in the settings file, and does
    not ask for a Slack token, a signing secret, an ingest token or channels it never uses."""
    for name in [n for n in os.environ if n.startswith(("NPO_", "SLACK_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("NPO_DB_PATH=state.db\nNPO_TIMEZONE=Europe/Berlin\n", encoding="utf-8")
    assert main(["db", "migrate"]) == 0 and (tmp_path / "state.db").is_file()
    capsys.readouterr()
    assert main(["report"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.splitlines()[0].endswith((" CET", " CEST"))  # Berlin's days
    (tmp_path / "state.db").rename(tmp_path / "moved.db")
    assert main(["report"]) == 1
    assert capsys.readouterr().err == "npo-bot report: no such database: state.db\n"
