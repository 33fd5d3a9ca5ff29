"""A comment after an empty value in the settings file, read by the real command line.

Each test runs ``npo-bot`` in a child process with a real environment (only the variables given) in an empty
folder, as a service manager or a shell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {  # complete and valid: each test changes one thing
    "SLACK_BOT_TOKEN": "xoxb-test-token",
    "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
    "NPO_INGEST_TOKEN": "ingest-token-0123456789",
    "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
    "NPO_OPS_CHANNEL": "C0OPS",
    "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never reached
}


def npo_bot(folder: Path, *argv: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``npo-bot ARGV`` run in ``folder`` with no ``NPO_*``/``SLACK_*`` variable but those of ``environ``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    env |= (environ or {}) | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
