"""A Slack token put where the signing secret goes is refused at start-up, naming the variable.

``SLACK_BOT_TOKEN`` and ``SLACK_APP_TOKEN`` are refused when they hold the wrong kind of credential, but any
``SLACK_SIGNING_SECRET`` was taken: the bot token pasted there too (both come from the same app's settings) started
``serve``, and every click, command and event was then refused by the signature check. Run as a child process with
a real environment, as a service manager starts the bot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {
    "SLACK_BOT_TOKEN": "xoxb-1234-5678-abcdefabcdef",
    "NPO_INGEST_TOKEN": "ingest-token-0123456789",
    "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
    "NPO_OPS_CHANNEL": "C0OPS",
    "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never reached
}


def _replay(folder: Path, signing_secret: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    env |= SETTINGS | {"SLACK_SIGNING_SECRET": signing_secret, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "replay", os.devnull],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "token", ["xoxb-1234-5678-abcdefabcdef", "xapp-1-A0123-4567-abcdefabcdef", "xoxp-1234-5678-abcdefabcdef"]
)
def test_a_token_as_signing_secret_is_refused_without_showing_it(tmp_path: Path, token: str) -> None:
    done = _replay(tmp_path, token)
    assert done.returncode == 2, done.stderr
    assert "SLACK_SIGNING_SECRET: must be the app's signing secret" in done.stderr
    assert token not in done.stderr and "abcdef" not in done.stderr
    assert not (tmp_path / "npo.db").exists()


def test_a_signing_secret_is_taken(tmp_path: Path) -> None:
    done = _replay(tmp_path, "8f2b1c9e7d6a5f4e3b2a1c0d9e8f7a6b")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 decided")
