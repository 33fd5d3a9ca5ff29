"""Helpers for the Socket Mode tests: the app-level token and the bot in Socket Mode with its helpers."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx
from slack_testing import INCIDENT, prediction, wait_for

from bot.app import Bot
from bot.socket_mode import SocketModeService
from bot.standin import StandIn
from bot.standin.socket_mode import SocketModeStandIn

APP_TOKEN = "xapp-1-A0STANDIN-1-0123456789abcdef"


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
