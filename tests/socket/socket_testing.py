"""Helpers for the Socket Mode tests: the app-level token and the bot in Socket Mode with its helpers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from slack_testing import ALICE, BOB, INCIDENT, OPS, SECRET, TOKEN, prediction, wait_for

from bot.app import Bot
from bot.socket_mode import SocketModeService
from bot.standin import StandIn
from bot.standin.socket_mode import SocketModeStandIn

APP_TOKEN = "xapp-1-A0STANDIN-1-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
# The CLI with the signal dispositions of a terminal, whatever the test runner's (an inherited SIG_IGN for SIGINT,
# as in a shell's background job, would hide what Ctrl-C does).
_LAUNCH = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "sys.argv = ['npo-bot', *sys.argv[1:]]; runpy.run_module('bot.cli', run_name='__main__')"
)


def start_socket_cli(tmp_path: Path, api_url: str, port: int = 0) -> subprocess.Popen[bytes]:
    """``npo-bot socket`` in a process of its own (Slack on the stand-in at ``api_url``, the database in
    ``tmp_path``, HTTP on ``port``, by default a free one); its output goes to ``tmp_path/stdout.log`` and
    ``stderr.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPO_", "SLACK_"))}
    env |= {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": api_url,
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_DB_PATH": str(tmp_path / "npo.db"),
        "NPO_PORT": str(port),
        "NPO_INCIDENT_CHANNEL": INCIDENT,
        "NPO_OPS_CHANNEL": OPS,
        "NPO_RESPONDERS": f"{ALICE},{BOB}",
        "NPO_SLACK_TIMEOUT_S": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with (tmp_path / "stdout.log").open("wb") as out, (tmp_path / "stderr.log").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, "socket", "--env-file", os.devnull],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )


@dataclass
class SocketBot:
    """The bot in Socket Mode: its parts, the service (HTTP port) and the stand-in's WebSocket side."""

    bot: Bot
    service: SocketModeService
    standin: StandIn
    socket: SocketModeStandIn

    def surface(self, pid: str) -> tuple[str, str]:
        """Ingest a prediction over HTTP (sure to surface) and wait for its message; its (channel, ts)."""
        response = httpx.post(
            f"http://127.0.0.1:{self.service.http_port}/api/v1/predictions",
            json=prediction(pid),
            headers={"Authorization": f"Bearer {self.bot.settings.ingest_token}"},
            timeout=10,
        )
        assert response.status_code == 200 and response.json()["verdict"] == "surface", response.text

        def find() -> tuple[str, str] | None:
            for message in self.standin.messages(INCIDENT):
                if pid in str(message.blocks):
                    return message.channel, message.ts
            return None

        return wait_for(find)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows read over a separate connection (what another process would see)."""
        conn = sqlite3.connect(self.bot.settings.db_path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
