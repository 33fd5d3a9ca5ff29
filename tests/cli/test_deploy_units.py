"""The systemd units in ``deploy/``: their commands are ones ``npo-bot`` accepts, the backup unit's command makes a
checked copy when run as written, the exit status they refuse to restart on is the one a refused setting gives,
and ``systemd-analyze verify`` (where installed) finds nothing to say about them."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import build_parser
from storage import SQLiteStore

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("npo-bot.service", "npo-bot-backup.service", "npo-bot-backup.timer")
INSTALLED = "/opt/npo/.venv"  # where the units expect the checkout's virtualenv
VENV = Path(sys.executable).parent.parent


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / name).read_text(encoding="utf-8"))
    return unit


def _npo_args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == f"{INSTALLED}/bin/npo-bot", words
    return words[1:]


def test_the_service_runs_serve_with_its_settings_file_and_stops_on_sigterm() -> None:
    service = _unit("npo-bot.service")["Service"]
    args = build_parser().parse_args(_npo_args(service["ExecStart"]))
    assert args.command == "serve" and str(args.env_file) == "/etc/npo/npo.env"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "npo" and service["WorkingDirectory"] == "/var/lib/npo"


def test_the_status_the_service_does_not_restart_on_is_a_refused_setting(tmp_path: Path) -> None:
    """``RestartPreventExitStatus=2``: ``npo-bot serve`` with settings it refuses exits 2 (a restart would fail the
    same way, for ever) — checked with the real command."""
    status = _unit("npo-bot.service")["Service"]["RestartPreventExitStatus"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--env-file", str(tmp_path / "npo.env")],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert str(done.returncode) == status == "2", done.stderr
    assert "invalid configuration" in done.stderr


def test_the_backup_command_as_written_makes_a_dated_checked_copy(tmp_path: Path) -> None:
    exec_start = _unit("npo-bot-backup.service")["Service"]["ExecStart"]
    shell, flag, script = shlex.split(exec_start)
    assert (shell, flag) == ("/bin/sh", "-c")
    for command in script.split(" && ")[1:]:  # each npo-bot command parses as the CLI reads it
        build_parser().parse_args(_npo_args(command.replace('"$f"', "x.db")))
    db, backups, env_file = tmp_path / "npo.db", tmp_path / "backups", tmp_path / "npo.env"
    backups.mkdir()
    with SQLiteStore(db):
        pass
    env_file.write_text(f"NPO_DB_PATH={db}\n", encoding="utf-8")
    here = (  # systemd's %% is a %; the installed paths point at this checkout and the test's folders
        script.replace("%%", "%")
        .replace(INSTALLED, str(VENV))
        .replace("/var/backups/npo", str(backups))
        .replace("/etc/npo/npo.env", str(env_file))
    )
    done = subprocess.run(
        ["/bin/sh", "-c", here], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (copy,) = backups.iterdir()
    assert copy.name.startswith("npo-") and copy.suffix == ".db"
    assert done.stdout.rstrip().endswith("ok") and str(copy) in done.stdout  # `db check` of the copy


def test_the_timer_starts_the_backup_daily() -> None:
    timer = _unit("npo-bot-backup.timer")
    assert timer["Timer"]["OnCalendar"] == "daily" and timer["Timer"]["Persistent"] == "true"
    assert (DEPLOY / "npo-bot-backup.service").exists()  # a timer starts the service of its own name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    for name in UNITS:  # the virtualenv path made to exist here: verify checks that ExecStart is executable
        text = (DEPLOY / name).read_text(encoding="utf-8").replace(INSTALLED, str(VENV))
        (tmp_path / name).write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{name}" for name in UNITS)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
