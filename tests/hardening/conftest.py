"""Fixtures for the hardening tests: the Slack tests' loopback guard and helpers (reused, not copied), and a
bot that lives for a whole module, so a fuzzing run sends thousands of requests to one real server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))  # slack_testing: constants, BotUnderTest, make_settings

from slack_testing import (  # noqa: E402
    ALICE,
    BOB,
    INCIDENT,
    MALLORY,
    OPS,
    TOKEN,
    BotUnderTest,
    load_slack_conftest,
    make_settings,
)

from bot.app import build_bot  # noqa: E402
from bot.serve import ServerThread  # noqa: E402
from bot.standin import StandIn, running_standin  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest")
# The same fixtures as tests/slack: the autouse loopback-only socket guard, a stand-in, settings and a bot.
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]
settings = _slack.settings  # type: ignore[attr-defined]
bot = _slack.bot  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def module_standin() -> Iterator[StandIn]:
    yield from running_standin(token=TOKEN, channels={INCIDENT: "incident", OPS: "ops"})


@pytest.fixture(scope="module")
def fuzz_bot(tmp_path_factory: pytest.TempPathFactory, module_standin: StandIn) -> Iterator[BotUnderTest]:
    """One bot for a module's fuzzing: delivery worker off (no background writes), asyncio loop (the guard sees
    its sockets), two surfaced recommendations to aim clicks at."""
    for user in (ALICE, BOB, MALLORY):
        module_standin.add_user(user)
    built = build_bot(make_settings(tmp_path_factory.mktemp("fuzz"), module_standin), seed=1, run_worker=False)
    server = ServerThread(built.asgi, loop="asyncio").start()
    try:
        yield BotUnderTest(built, server, module_standin)
    finally:
        server.stop()
        built.close()


@pytest.fixture(scope="module")
def http(fuzz_bot: BotUnderTest) -> Iterator[httpx.Client]:
    """An HTTP client of the module's :func:`fuzz_bot` server."""
    with httpx.Client(base_url=fuzz_bot.server.url, timeout=30) as client:
        yield client
