"""The systemd units in ``deploy/``: their commands are ones ``npo-bot`` accepts, the backup unit's command makes a
checked copy when run as written, the exit status they refuse to restart on is the one a refused setting gives,
and ``systemd-analyze verify`` (where installed) finds nothing to say about them."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.cli import build_parser
from bot.config import ConfigError, load_settings
from bot.socket_mode import FINISH_TIMEOUT_S
from storage import SQLiteStore
from storage.connection import connect
from storage.migrations import migrate

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("npo-bot.service", "npo-bot-backup.service", "npo-bot-backup.timer")
INSTALLED = "/opt/npo/.venv"  # where the units expect the checkout's virtualenv
VENV = Path(sys.executable).parent.parent
SETTINGS_FOR_TIMEOUT = {
    "SLACK_BOT_TOKEN": "xoxb-local",
    "SLACK_SIGNING_SECRET": "local-secret-0123456789",
    "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
    "NPO_OPS_CHANNEL": "C0OPS",
    "NPO_INGEST_TOKEN": "0123456789abcdef0123",
}


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


def test_the_service_is_given_time_to_stop_and_descriptors_for_its_connections() -> None:
    """A stop waits for a Slack call in flight (``NPO_SLACK_TIMEOUT_S`` is accepted up to 60 s) and, in Socket
    Mode, for the envelopes in hand: systemd must not kill it first (a message it was posting would be posted
    again after the restart). Every client connection is a file descriptor."""
    service = _unit("npo-bot.service")["Service"]
    load_settings(SETTINGS_FOR_TIMEOUT | {"NPO_SLACK_TIMEOUT_S": "60"}, None)  # the largest accepted
    with pytest.raises(ConfigError):
        load_settings(SETTINGS_FOR_TIMEOUT | {"NPO_SLACK_TIMEOUT_S": "61"}, None)
    assert int(service["TimeoutStopSec"]) >= 60 + FINISH_TIMEOUT_S + 10
    assert int(service["LimitNOFILE"]) >= 65536


def test_the_status_the_service_does_not_restart_on_is_a_refused_setting(tmp_path: Path) -> None:
    """``RestartPreventExitStatus=2``: ``npo-bot serve`` with settings it refuses exits 2 (a restart would fail the
    same way, for ever) — checked with the real command."""
    status = _unit("npo-bot.service")["Service"]["RestartPreventExitStatus"]
    env_file = tmp_path / "npo.env"
    env_file.write_text("# nothing filled in\n", encoding="utf-8")
    done = _run_serve(env_file, tmp_path)
    assert str(done.returncode) == status == "2", done.stderr
    assert "invalid configuration" in done.stderr
    env_file.unlink()  # the settings file the unit names is missing: refused the same way
    done = _run_serve(env_file, tmp_path)
    assert str(done.returncode) == status, done.stderr
    assert done.stderr == f"npo-bot serve: --env-file {env_file}: no such file\n"


SETTINGS = (  # complete settings for `serve`; the Web API is never reached (nothing starts in these tests)
    "SLACK_BOT_TOKEN=xoxb-local\nSLACK_SIGNING_SECRET=local-secret\nSLACK_API_URL=http://127.0.0.1:9/api/\n"
    "NPO_INCIDENT_CHANNEL=C0INCIDENT\nNPO_OPS_CHANNEL=C0OPS\nNPO_INGEST_TOKEN=0123456789abcdef0123\n"
    "NPO_RESPONDERS=U0ALICE\nNPO_HOST=127.0.0.1\n"
)


def _run_serve(env_file: Path, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``npo-bot serve --env-file ENV_FILE`` as a real process, with no NPO_*/SLACK_* variable of this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "bot.cli", "serve", "--env-file", str(env_file)],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env | {"PYTHONPATH": str(REPO)},
        timeout=60,
    )


def _serve(tmp_path: Path, port: int, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "npo.env"
    env_file.write_text(f"{SETTINGS}NPO_PORT={port}\nNPO_DB_PATH={tmp_path / 'npo.db'}\n", encoding="utf-8")
    return _run_serve(env_file, tmp_path, prefix)


def test_a_port_in_use_stops_serve_before_anything_starts(tmp_path: Path) -> None:
    """Another process holds the port: `serve` says so naming the settings and exits 1 (the unit restarts it: the
    port may be freed) — before its scheduler, delivery worker or database start, which otherwise ran (the
    catch-up job, the outbox) on every restart until the bind failed, with exit status 3."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = _serve(tmp_path, holder.getsockname()[1])
    assert done.returncode == 1, done.stderr
    assert "cannot listen on 127.0.0.1:" in done.stderr and "NPO_PORT" in done.stderr
    assert "Scheduler started" not in done.stderr and not (tmp_path / "npo.db").exists()


def test_of_two_serve_started_together_on_one_port_the_second_is_refused_before_it_starts(tmp_path: Path) -> None:
    """The port is claimed before the bot is built. Before, it was only checked (bound and released), so two
    processes started together both passed, both built their bot — opened the database, started a scheduler and a
    delivery worker, said "serving on" — and the one that bound second then failed with exit status 3 and no line
    saying why. Here the first waits to upgrade a database another connection holds locked (as it would for
    another process's upgrade) while the second starts."""
    db_path = tmp_path / "npo.db"
    old = connect(db_path)
    assert migrate(old, stop_before="m019_prediction_aliases_by_prediction") == 18
    old.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env_file = tmp_path / "npo.env"
    env_file.write_text(f"{SETTINGS}NPO_PORT={port}\nNPO_DB_PATH={db_path}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))} | {"PYTHONPATH": str(REPO)}
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    first = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--env-file", str(env_file)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # the first holds the port while it waits for the database
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert first.poll() is None and time.monotonic() < deadline, "the first did not claim the port"
            time.sleep(0.05)
        second = _run_serve(env_file, tmp_path)
        assert second.returncode == 1, second.stderr
        assert f"cannot listen on 127.0.0.1:{port} (NPO_HOST, NPO_PORT)" in second.stderr
        assert "Scheduler started" not in second.stderr and "serving on" not in second.stderr
        lock.execute("ROLLBACK")  # the first upgrades the database, then serves on the port it held
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/livez"):
            assert first.poll() is None and time.monotonic() < deadline, "the first did not start serving"
            time.sleep(0.05)
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
        first.terminate()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "serving on" in err


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_port_it_may_not_listen_on_is_the_status_the_service_does_not_restart_on(tmp_path: Path) -> None:
    """NPO_PORT=80 for a user without the privilege to bind it (the unit's `npo` user): a restart would fail the
    same way for ever, so `serve` exits with the unit's RestartPreventExitStatus, before anything starts."""
    status = _unit("npo-bot.service")["Service"]["RestartPreventExitStatus"]
    if os.geteuid() == 0:  # root may bind port 80: run it without that capability
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is not installed")
        prefix: tuple[str, ...] = ("setpriv", "--bounding-set=-net_bind_service")
    else:
        unprivileged = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        if not unprivileged.exists() or int(unprivileged.read_text(encoding="utf-8")) <= 80:
            pytest.skip("port 80 is not privileged here")
        prefix = ()
    done = _serve(tmp_path, 80, prefix)
    assert str(done.returncode) == status == "2", done.stderr
    assert "cannot listen on 127.0.0.1:80 (NPO_HOST, NPO_PORT): Permission denied" in done.stderr
    assert "Scheduler started" not in done.stderr and not (tmp_path / "npo.db").exists()


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
