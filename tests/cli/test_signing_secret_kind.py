"""A Slack token put where the signing secret goes is refused at start-up, naming the variable.

``SLACK_BOT_TOKEN`` and ``SLACK_APP_TOKEN`` are refused when they hold the wrong kind of credential, but any
``SLACK_SIGNING_SECRET`` was taken: the bot token pasted there too (both come from the same app's settings) started
``serve``, and every click, command and event was then refused by the signature check. Run as a child process with
a real environment, as a service manager starts the bot.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_testing import SETTINGS, npo_bot


def _replay(folder: Path, signing_secret: str) -> subprocess.CompletedProcess[str]:
    return npo_bot(folder, "replay", os.devnull, environ=SETTINGS | {"SLACK_SIGNING_SECRET": signing_secret})


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
