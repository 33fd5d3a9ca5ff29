"""Fixtures for the Socket Mode tests: the Slack tests' loopback guard and stand-in (reused, not copied), the
stand-in's WebSocket side for ``apps.connections.open``, and the bot in Socket Mode on a background thread."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))  # slack_testing: constants, make_settings

from slack_testing import ALICE, BOB, MALLORY, load_slack_conftest, make_settings  # noqa: E402
from socket_testing import APP_TOKEN, SocketBot  # noqa: E402

from bot.app import build_bot  # noqa: E402
from bot.socket_mode import SocketModeService  # noqa: E402
from bot.standin import StandIn  # noqa: E402
from bot.standin.socket_mode import SocketModeStandIn, attach  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest_socket")
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]


@pytest.fixture
def socket_server(standin: StandIn) -> Iterator[SocketModeStandIn]:
    server = attach(standin, APP_TOKEN)
    yield server
    server.stop()


@pytest.fixture
def make_socket_bot(
    tmp_path: Path, standin: StandIn, socket_server: SocketModeStandIn
) -> Iterator[Callable[..., SocketBot]]:
    """Start the bot in Socket Mode (``SocketModeService`` keyword arguments: ``ping_interval``, ``retry_delays``;
    ``settings``: fields of the bot's settings to change); stopped at the end of the test."""
    started: list[SocketBot] = []

    def make(*, settings: dict[str, Any] | None = None, **service_options: Any) -> SocketBot:
        for user in (ALICE, BOB, MALLORY):
            standin.add_user(user)
        overrides = {"slack_app_token": APP_TOKEN, "port": 0} | (settings or {})
        settings = make_settings(tmp_path, standin, **overrides)
        built = build_bot(settings, seed=1)
        try:
            service = SocketModeService(built, log_level="warning", **service_options).start_thread()
        except BaseException:
            built.close()
            raise
        started.append(SocketBot(built, service, standin, socket_server))
        socket_server.wait_connected()
        return started[-1]

    yield make
    for running in started:
        running.service.stop()
        running.bot.close()


@pytest.fixture
def socket_bot(make_socket_bot: Callable[..., SocketBot]) -> SocketBot:
    return make_socket_bot()
