"""NPO_MISS_WEIGHT: parsed and bounded at start-up, and the running bot's bandit learns with it.

The last test runs the real bot over HTTP (uvicorn, the Slack stand-in, a SQLite file): a prediction the bot
suppresses, then its outcome "a real fault", must cost every arm that would have suppressed it exactly the
configured weight on the failure side of its Beta posterior.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))  # slack_testing: constants, make_settings, the Slack tests' conftest

from slack_testing import REQUIRED_ENV, load_slack_conftest, prediction  # noqa: E402

from bot.app import build_bot, loop_config  # noqa: E402
from bot.cli import main  # noqa: E402
from bot.config import DEFAULT_MISS_WEIGHT, ConfigError, load_settings  # noqa: E402
from bot.serve import ServerThread  # noqa: E402
from bot.standin import StandIn  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest_bot")
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]

GOOD = REQUIRED_ENV


def test_default_and_accepted_values(tmp_path: Path) -> None:
    default = load_settings(GOOD, tmp_path / "missing.env")
    assert default.miss_weight == DEFAULT_MISS_WEIGHT
    assert loop_config(default).bandit.miss_weight == DEFAULT_MISS_WEIGHT
    for text, value in (("0", 0.0), ("2.5", 2.5), (" 10 ", 10.0), ("1e0", 1.0)):
        settings = load_settings(GOOD | {"NPO_MISS_WEIGHT": text}, None)
        assert settings.miss_weight == value
        assert loop_config(settings).bandit.miss_weight == value
    env_file = tmp_path / ".env"
    env_file.write_text("NPO_MISS_WEIGHT=7\n", encoding="utf-8")
    assert load_settings(GOOD, env_file).miss_weight == 7.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "must be between 0 and 10, got -1"),
        ("10.5", "must be between 0 and 10, got 10.5"),
        ("nan", "must be between 0 and 10, got nan"),
        ("inf", "must be between 0 and 10, got inf"),
        ("heavy", "must be a number, got 'heavy'"),
    ],
)
def test_a_bad_value_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_MISS_WEIGHT": text}, None)
    assert info.value.problems == {"NPO_MISS_WEIGHT": message}
    assert f"NPO_MISS_WEIGHT: {message}" in str(info.value)


def test_serve_refuses_to_start_with_a_bad_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in (GOOD | {"NPO_MISS_WEIGHT": "-3", "NPO_DB_PATH": str(tmp_path / "npo.db")}).items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--env-file", os.devnull]) == 2
    assert "NPO_MISS_WEIGHT: must be between 0 and 10, got -3" in capsys.readouterr().err
    assert not (tmp_path / "npo.db").exists()  # refused before anything was created


@pytest.fixture
def running(tmp_path: Path, standin: StandIn, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, float]]:
    weight = str(request.param)
    env = GOOD | {
        "NPO_MISS_WEIGHT": weight,
        "SLACK_API_URL": standin.api_url,
        "NPO_DB_PATH": str(tmp_path / "npo.db"),
    }
    settings = load_settings(env, None)
    bot = build_bot(settings, seed=1)
    server = ServerThread(bot.asgi, loop="asyncio").start()
    try:
        assert bot.store.config.bandit.miss_weight == float(weight)
        yield server.url, settings.db_path, float(weight)
    finally:
        server.stop()
        bot.close()


@pytest.mark.parametrize("running", [1.0, 4.5], indirect=True)
def test_a_missed_fault_costs_the_configured_weight(running: tuple[str, Path, float]) -> None:
    url, db, weight = running
    auth = {"Authorization": "Bearer ingest-token-0123456789"}
    sent = httpx.post(f"{url}/api/v1/predictions", json=[prediction("p1", confidence=0.05)], headers=auth, timeout=10)
    assert sent.status_code == 200, sent.text
    conn = sqlite3.connect(db)
    try:
        verdict, score = conn.execute("SELECT verdict, score FROM decisions WHERE prediction_id = 'p1'").fetchone()
        assert verdict == "suppress" and score < 0.5  # every τ in {0.5 … 0.9} would have suppressed it
        before = conn.execute("SELECT alpha, beta FROM bandit_arms ORDER BY arm").fetchall()
        outcome = {"prediction_id": "p1", "real_fault": True}
        assert httpx.post(f"{url}/api/v1/outcomes", json=outcome, headers=auth, timeout=10).status_code == 200
        after = conn.execute("SELECT alpha, beta FROM bandit_arms ORDER BY arm").fetchall()
    finally:
        conn.close()
    assert len(after) == 5
    for (a0, b0), (a1, b1) in zip(before or [(1.0, 1.0)] * 5, after, strict=True):
        assert a1 == pytest.approx(a0)  # a miss earns nothing
        assert b1 - b0 == pytest.approx(weight)  # ...and costs the miss weight
