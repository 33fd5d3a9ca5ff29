"""``npo-bot report`` refuses a time zone that is not one with one line and exit 2, whichever way it is given.

A region name (``Europe``, ``America``) is a folder of the zone database, not a zone: ``ZoneInfo`` raises
``IsADirectoryError`` for it, which the command let through as a traceback (exit 1), while ``serve`` refuses the
same ``NPO_TIMEZONE`` naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    assert captured.err == "npo-bot report: unknown timezone 'Europe'\n"
