"""Fixtures for the job tests: real SQLite files under ``tmp_path`` and a stand-in Slack on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_testing import OPS, TOKEN
from slack_sdk import WebClient

from bot.standin import StandIn, running_standin
from storage import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A store on a fresh SQLite file of the test's own."""
    with SQLiteStore(tmp_path / "npo.db") as s:
        yield s


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "npo.db"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    yield from running_standin(token=TOKEN, channels={"C1INC": "oncall", OPS: "ops"})


@pytest.fixture
def client(standin: StandIn) -> WebClient:
    return WebClient(base_url=standin.api_url, token=TOKEN, timeout=5, retry_handlers=[])
