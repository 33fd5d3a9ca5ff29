"""A comment after an empty value in the settings file, read by the real command line.

Each test runs ``npo-bot`` in a child process with a real environment (only the variables given) in an empty
folder, as a service manager or a shell would.
"""

from __future__ import annotations

import os
from pathlib import Path

from cli_testing import SETTINGS, npo_bot


def write_env(folder: Path, text: str) -> None:
    (folder / ".env").write_text(text, encoding="utf-8")


def test_a_comment_after_an_empty_value_leaves_the_value_empty(tmp_path: Path) -> None:
    """``NAME=   # what it is`` sets NAME empty, as python-dotenv reads it and as a ``#`` after whitespace starts a
    comment elsewhere. Before, the comment became the value: ``db migrate`` created a database named
    ``# default: npo.db``, and a signing secret left to fill in was taken as ``# from Basic Information``."""
    write_env(tmp_path, "NPO_DB_PATH=   # default: npo.db\n")
    done = npo_bot(tmp_path, "db", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("npo.db: schema version 0 -> ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "npo.db"]

    lines = [f"{k}={v}" for k, v in SETTINGS.items() if k != "SLACK_SIGNING_SECRET"]
    write_env(tmp_path, "\n".join([*lines, "SLACK_SIGNING_SECRET=\t# Basic Information -> Signing Secret", ""]))
    done = npo_bot(tmp_path, "replay", os.devnull)
    assert done.returncode == 2
    assert "SLACK_SIGNING_SECRET: is required" in done.stderr
