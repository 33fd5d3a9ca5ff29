"""Fixtures for the demo tests: the Slack tests' loopback guard (reused, not copied) and a running demo."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_testing import SURE_PREDICTION

from bot.demo.runner import Demo, DemoOptions

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))  # the Slack tests' conftest imports slack_testing

from slack_testing import load_slack_conftest  # noqa: E402

loopback_only = load_slack_conftest("slack_tests_conftest_demo").loopback_only  # type: ignore[attr-defined]


@pytest.fixture
def manual_demo(tmp_path: Path) -> Iterator[tuple[Demo, str]]:
    """The demo as a person runs it (nobody answers but the page's user), fed one prediction sure to surface;
    its outcome is far off, so the buttons stay."""
    replay = tmp_path / "one.jsonl"
    replay.write_text(json.dumps(SURE_PREDICTION) + "\n", encoding="utf-8")
    options = DemoOptions(port=0, db=tmp_path / "demo.db", replay=replay, rate_per_min=600, outcome_delay_s=3600)
    demo = Demo(options, say=lambda _: None)
    url = demo.start()
    try:
        yield demo, url
    finally:
        demo.stop()
