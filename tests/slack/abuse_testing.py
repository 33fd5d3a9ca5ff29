"""Helpers for the feedback-abuse tests: a running bot whose delivery worker posts without the 1 s per-channel
spacing (many recommendations per test; the spacing has tests of its own), and a policy that lets every kind of
recommendation through often enough to be learnt (the demo's: a higher hourly cap, a target cool-down)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slack_testing import BotUnderTest, serving

from bot.app import build_bot
from bot.config import Settings
from bot.standin import StandIn
from npo.policy import DEFAULT_POLICY_TEXT

LEARNING_POLICY = DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000").replace(
    'scope = "both"', 'scope = "target"'
)


def write_policy(directory: Path) -> Path:
    """The learning policy as a file (``NPO_POLICY_FILE``)."""
    path = directory / "policy.toml"
    path.write_text(LEARNING_POLICY, encoding="utf-8")
    return path


@contextmanager
def running_bot(settings: Settings, standin: StandIn, *, seed: int = 1) -> Iterator[BotUnderTest]:
    """``build_bot`` on ``settings`` behind a real uvicorn server on loopback, its worker posting at once."""
    built = build_bot(settings, seed=seed)
    built.worker.config = dataclasses.replace(built.worker.config, post_interval_s=0.0)
    with serving(built, standin) as served:
        yield served
