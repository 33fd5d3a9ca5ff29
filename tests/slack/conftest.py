"""Fixtures for the Slack tests: the real bot over HTTP on an ephemeral loopback port, a real SQLite file, the
stand-in as the Web API, and a socket guard that refuses any connection beyond loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_testing import (
    ALICE,
    BOB,
    INCIDENT,
    MALLORY,
    OPS,
    TOKEN,
    BotUnderTest,
    make_settings,
    serving,
)

from bot.app import build_bot
from bot.config import Settings
from bot.standin import StandIn, running_standin


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse socket.connect to anything but loopback; the test fails if anything tried."""
    refused: list[Any] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded(self: socket.socket, address: Any) -> Any:
        if not _loopback(address):
            refused.append(address)
            raise ConnectionRefusedError(f"test guard: no connections beyond loopback ({address!r})")
        return real_connect(self, address)

    def guarded_ex(self: socket.socket, address: Any) -> Any:
        if not _loopback(address):
            refused.append(address)
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)
    yield refused
    assert not refused, f"something tried to leave loopback: {refused}"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    yield from running_standin(token=TOKEN, channels={INCIDENT: "incident", OPS: "ops"})


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    for user in (ALICE, BOB, MALLORY):
        standin.add_user(user)
    return make_settings(tmp_path, standin)


@pytest.fixture
def bot(settings: Settings, standin: StandIn) -> Iterator[BotUnderTest]:
    built = build_bot(settings, seed=1)
    with serving(built, standin) as served:
        yield served
