"""Fixtures for the Slack stand-in tests: a running stand-in on an ephemeral loopback port and a WebClient on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from standin_testing import TOKEN, CapturingBot, FakeClock

from bot.standin import StandIn, running_standin


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    yield from running_standin(token=TOKEN, channels={"C1": "oncall", "C2": "ops"})


@pytest.fixture
def clocked_standin(clock: FakeClock) -> Iterator[StandIn]:
    yield from running_standin(token=TOKEN, channels={"C1": "oncall"}, clock=clock)


@pytest.fixture
def client(standin: StandIn) -> WebClient:
    return WebClient(base_url=standin.api_url, token=TOKEN, timeout=5, retry_handlers=[])


@pytest.fixture
def bot() -> Iterator[CapturingBot]:
    capturing = CapturingBot()
    capturing.thread.start()
    yield capturing
    capturing.server.shutdown()
    capturing.server.server_close()
