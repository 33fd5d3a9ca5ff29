"""Running ``npo-bot`` as a service manager or a shell would: a child process with a real environment that holds
no ``NPO_*`` or ``SLACK_*`` variable but those a test gives, in a folder of the test's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
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


def npo_bot(
    folder: Path, *argv: str, environ: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``npo-bot ARGV`` run in ``folder`` with no ``NPO_*``/``SLACK_*`` variable but those of ``environ``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    env |= dict(environ or {}) | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
