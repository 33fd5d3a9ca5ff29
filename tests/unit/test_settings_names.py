"""Every ``NPO_*`` / ``SLACK_*`` name the project reads is known to the settings check, so setting it never logs
"unknown setting … is ignored" (before, ``NPO_HYPOTHESIS=explore``, read by the test suite, did)."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import _READ_ELSEWHERE, _setting_names

REPO = Path(__file__).resolve().parents[2]
READ = re.compile(r"""environ(?:\.get)?[\[(]\s*["']((?:NPO|SLACK)_[A-Z0-9_]+)["']""")


def test_every_name_read_from_the_environment_is_a_known_setting() -> None:
    read: dict[str, str] = {}
    for folder in ("bot", "npo", "storage", "bench", "scripts", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for name in READ.findall(path.read_text(encoding="utf-8")):
                read.setdefault(name, str(path.relative_to(REPO)))
    assert "NPO_DATA_DIR" in read and "NPO_HYPOTHESIS" in read  # the scan finds the names it is meant to
    known = _setting_names() | _READ_ELSEWHERE
    assert {name: where for name, where in read.items() if name not in known} == {}
