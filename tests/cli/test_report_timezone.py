"""``npo-bot report`` refuses a time zone that is not one with one line and exit 2, whichever way it is given.

A region name (``Europe``, ``America``) is a folder of the zone database, not a zone: ``ZoneInfo`` raises
``IsADirectoryError`` for it, which the command let through as a traceback (exit 1), while ``serve`` refuses the
same ``NPO_TIMEZONE`` naming the setting. A zone the command did not get on its command line (``NPO_TIMEZONE`` from
the environment or the settings file) is refused naming the setting, in the words ``serve`` uses: "unknown timezone"
alone left the operator to guess where it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_testing import npo_bot

from bot.cli import main
from storage import SQLiteStore


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith(("NPO_", "SLACK_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "npo.db"
    with SQLiteStore(path):
        pass
    return path


@pytest.mark.parametrize("zone", ["Europe", "America", "Nowhere/City"])
def test_a_region_or_unknown_zone_given_with_timezone_is_one_line_and_exit_2(
    zone: str, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--db", str(db), "--timezone", zone]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"npo-bot report: unknown timezone {zone!r}\n"


def test_a_region_in_npo_timezone_is_one_line_and_exit_2(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NPO_TIMEZONE", "Europe")
    assert main(["report", "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "npo-bot report: NPO_TIMEZONE: must be an IANA time zone like Europe/Berlin, got 'Europe'\n"


def test_a_misspelt_npo_timezone_in_the_settings_file_is_named(db: Path) -> None:
    """The real command line, in a child process: ``NPO_TIMEZONE`` from ``./.env``, no ``--timezone``."""
    (db.parent / ".env").write_text("NPO_TIMEZONE=Europe/Berln\n", encoding="utf-8")
    done = npo_bot(db.parent, "report")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "npo-bot report: NPO_TIMEZONE: must be an IANA time zone like Europe/Berlin, got 'Europe/Berln'\n"
    )
