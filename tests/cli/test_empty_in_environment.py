"""A required setting set empty in the environment hides the settings file's value, and the message says so.

The environment wins over ``.env``, also with an empty value (as python-dotenv and docker compose have it). A
service manager or compose file that passes a variable through unset (``Environment=SLACK_BOT_TOKEN=``,
``SLACK_BOT_TOKEN: ${SLACK_BOT_TOKEN}``) then made ``serve`` say ``SLACK_BOT_TOKEN: is required`` while ``.env``
held the token. Run as a child process with a real environment.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cli_testing import SETTINGS, npo_bot


def _replay(folder: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return npo_bot(folder, "replay", os.devnull, environ=environ)


def test_an_empty_variable_in_the_environment_is_named_as_what_hides_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SETTINGS.items()), encoding="utf-8")
    done = _replay(tmp_path, {"SLACK_BOT_TOKEN": "", "NPO_OPS_CHANNEL": "  "})
    assert done.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "NPO_OPS_CHANNEL"):
        assert f"{name}: is required: it is set empty in the environment, which hides its value in .env" in done.stderr
    assert "xoxb-test-token" not in done.stderr
    assert _replay(tmp_path, {}).returncode == 0  # the file alone is complete


def test_a_variable_missing_everywhere_is_simply_required(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=\n", encoding="utf-8")
    done = _replay(tmp_path, {k: v for k, v in SETTINGS.items() if k != "SLACK_BOT_TOKEN"} | {"SLACK_BOT_TOKEN": ""})
    assert done.returncode == 2
    assert "  SLACK_BOT_TOKEN: is required\n" in done.stderr
