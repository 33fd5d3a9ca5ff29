"""Helpers for the Slack tests: constants, the running bot, DB counts read over a separate connection."""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx

from bot.app import Bot
from bot.config import Settings
from bot.serve import ServerThread
from bot.standin import StandIn, interactions
from bot.standin.signing import signed_headers

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret-0123456789"
INCIDENT = "C0INCIDENT"
OPS = "C0OPS"
ALICE = "U0ALICE"
BOB = "U0BOB"
MALLORY = "U0MALLORY"
INGEST_TOKEN = "ingest-token-0123456789"
# The settings `serve` cannot start without, for tests that load settings from a mapping.
REQUIRED_ENV = {
    "SLACK_BOT_TOKEN": TOKEN,
    "SLACK_SIGNING_SECRET": SECRET,
    "NPO_INGEST_TOKEN": INGEST_TOKEN,
    "NPO_INCIDENT_CHANNEL": INCIDENT,
    "NPO_OPS_CHANNEL": OPS,
}
T = TypeVar("T")


def reaped_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """For a fixture: a list for the processes a test starts, each killed afterwards should the test fail before it
    exits (``yield from reaped_processes()``)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds. The default is generous:
    it only bounds how long a failing test waits, and background work (the delivery worker's 1 s pace per channel,
    a poll, a listener) takes several times longer on a slow or loaded machine than on a developer's."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def prediction(pid: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": pid,
        "fault_type": "disk_failure",
        "target": f"r12-{pid}",
        "action": "investigate",
        "confidence": 0.99,
        "severity": "critical",
        "time_to_fault_s": 6 * 3600,
    }
    return base | overrides


@dataclass
class BotUnderTest:
    bot: Bot
    server: ServerThread
    standin: StandIn

    @property
    def events_url(self) -> str:
        return f"{self.server.url}/slack/events"

    def ingest(self, body: Any, path: str = "/api/v1/predictions", token: str | None = None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token or self.bot.settings.ingest_token}"}
        return httpx.post(f"{self.server.url}{path}", json=body, headers=auth, timeout=10)

    def counts(self) -> dict[str, int]:
        """Row counts read over a new connection (what another process would see)."""
        conn = sqlite3.connect(self.bot.settings.db_path)
        try:
            tables = ("predictions", "decisions", "feedback", "outcomes", "outbox", "audit_log", "processed_requests")
            out = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}
            out["key_n"] = int(conn.execute("SELECT COALESCE(SUM(n), 0) FROM key_alignment").fetchone()[0])
            out["pulls"] = int(conn.execute("SELECT COALESCE(SUM(pulls), 0) FROM bandit_arms").fetchone()[0])
            return out
        finally:
            conn.close()

    def posted(self, pid: str, timeout: float = 30.0) -> tuple[str, str]:
        """Wait until the recommendation for ``pid`` is in the channel; its (channel, ts)."""

        def find() -> tuple[str, str] | None:
            for message in self.standin.messages(INCIDENT):
                if any(pid in str(block) for block in message.blocks):
                    return message.channel, message.ts
            return None

        return wait_for(find, timeout)

    def surface(self, pid: str, **overrides: Any) -> tuple[str, str]:
        response = self.ingest(prediction(pid, **overrides))
        assert response.status_code == 200, response.text
        assert response.json()["verdict"] == "surface", response.json()
        return self.posted(pid)

    def click_body(
        self, user: str, action_id: str, message: tuple[str, str], *, value: str | None = None, force: bool = False
    ) -> str:
        """A click on ``message``'s button ``action_id``; ``value`` (a prediction id) in place of the button's, and
        ``force``: a button the message no longer shows — what a crafted request or a stale client sends."""
        payload = interactions.block_actions_payload(
            self.standin.store,
            f"{self.standin.url}/response",
            user_id=user,
            action_id=action_id,
            value=value,
            message=message,
            view=None,
            trigger_id=None,
            force=force,
        )
        return interactions.form_body(payload)

    def send_signed(
        self, body: str, *, timestamp: int | None = None, secret: str = SECRET, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = signed_headers(secret, body, interactions.FORM, timestamp)
        if headers is not None:
            sent = headers
        return httpx.post(self.events_url, content=body.encode(), headers=sent, timeout=10)

    def click(self, user: str, action_id: str, message: tuple[str, str]) -> httpx.Response:
        return self.standin.click(self.events_url, SECRET, user_id=user, action_id=action_id, message=message)


def alertmanager_notification(*alerts: dict[str, Any], truncated: int = 0) -> dict[str, Any]:
    """A notification as Alertmanager 0.27 writes it (every top-level field); its status is the first alert's."""
    return {
        "receiver": "npo",
        "status": alerts[0]["status"] if alerts else "firing",
        "alerts": list(alerts),
        "groupLabels": {"alertname": "DiskWillFail"},
        "commonLabels": {"alertname": "DiskWillFail", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local:9093",
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="DiskWillFail"}',
        "truncatedAlerts": truncated,
    }


@contextlib.contextmanager
def serving(built: Bot, standin: StandIn) -> Iterator[BotUnderTest]:
    """``built`` served over HTTP (uvicorn on loopback) as a :class:`BotUnderTest`; stopped and closed after."""
    try:
        server = ServerThread(built.asgi, loop="asyncio").start()
        try:
            yield BotUnderTest(built, server, standin)
        finally:
            server.stop()
    finally:
        built.close()


def make_settings(tmp_path: Path, standin: StandIn, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "slack_bot_token": TOKEN,
        "slack_signing_secret": SECRET,
        "ingest_token": "ingest-token-0123456789",
        "incident_channel": INCIDENT,
        "ops_channel": OPS,
        "slack_api_url": standin.api_url,
        "db_path": tmp_path / "npo.db",
        "responders": (ALICE, BOB),
        "slack_timeout_s": 2.0,
    }
    return Settings(**(fields | overrides))


def load_slack_conftest(name: str) -> ModuleType:
    """The Slack tests' conftest as a module named ``name`` (one per importing test folder), so other folders
    reuse its fixtures — the loopback-only guard, the stand-in, settings, a bot — instead of copying them."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
