"""NPO_STEP_SIZE: the step size η of the m(k) update (DESIGN lists η among the settings). ``decaying`` (the default:
η_n = (n + 10)^−0.6 over the key's effective count) or a constant in (0, 1]; anything else stops start-up naming the
variable (``serve`` reads its settings with the same ``load_settings``). The last test builds the bot from its
settings on a real SQLite file and checks how far one Override, given through the service the Slack listeners call,
moves m(k)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))  # slack_testing: constants, the Slack tests' conftest

from slack_testing import REQUIRED_ENV, load_slack_conftest  # noqa: E402

from bot.app import Bot, build_bot, loop_config  # noqa: E402
from bot.config import ConfigError, load_settings  # noqa: E402
from bot.standin import StandIn  # noqa: E402
from npo.misalignment import EtaSchedule  # noqa: E402
from npo.types import FeedbackEvent, FeedbackKind, Prediction  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest_step_size")
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]

GOOD = REQUIRED_ENV


def test_default_and_accepted_values(tmp_path: Path) -> None:
    default = load_settings(GOOD, tmp_path / "missing.env")
    assert default.step_size == "decaying"
    assert loop_config(default).eta == EtaSchedule()  # (n + 10)^-0.6, the library's default
    assert loop_config(default).eta.rate(0) == pytest.approx(10**-0.6)
    for text, value in (("decaying", "decaying"), (" Decaying ", "decaying"), ("0.1", 0.1), ("1", 1.0), ("5e-2", 0.05)):
        settings = load_settings(GOOD | {"NPO_STEP_SIZE": text}, None)
        assert settings.step_size == value
        eta = loop_config(settings).eta
        if value == "decaying":
            assert eta == EtaSchedule()
        else:
            assert (eta.kind, eta.eta) == ("constant", value) and eta.rate(0) == eta.rate(1000) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "must be decaying or a constant step size in (0, 1], got 0"),
        ("1.5", "must be decaying or a constant step size in (0, 1], got 1.5"),
        ("-0.1", "must be decaying or a constant step size in (0, 1], got -0.1"),
        ("nan", "must be decaying or a constant step size in (0, 1], got nan"),
        ("constant", "must be decaying or a constant step size in (0, 1], got 'constant'"),
    ],
)
def test_a_bad_value_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(GOOD | {"NPO_STEP_SIZE": text}, None)
    assert info.value.problems == {"NPO_STEP_SIZE": message}


@pytest.fixture
def bot(tmp_path: Path, standin: StandIn, request: pytest.FixtureRequest) -> Iterator[Bot]:
    env = GOOD | {"SLACK_API_URL": standin.api_url, "NPO_DB_PATH": str(tmp_path / "npo.db")}
    if request.param is not None:
        env["NPO_STEP_SIZE"] = request.param
    running = build_bot(load_settings(env, None), seed=1, run_worker=False)
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize(
    ("bot", "eta"), [(None, 10**-0.6), ("decaying", 10**-0.6), ("0.5", 0.5), ("1", 1.0)], indirect=["bot"]
)
def test_one_override_moves_m_by_the_configured_step(bot: Bot, eta: float) -> None:
    now = bot.service.clock()
    (result,) = bot.service.decide([Prediction("p1", "disk_failure", "r12-n1", "investigate", 0.99, received_at=now)])
    assert result.decision.surfaced
    click = FeedbackEvent("p1", "U0ALICE", FeedbackKind.OVERRIDE, now + 1, "click-1")
    assert bot.service.record_click(click, None).status == "recorded"
    conn = sqlite3.connect(bot.settings.db_path)
    try:
        (m,) = conn.execute("SELECT m FROM key_alignment WHERE key = ?", (result.decision.key,)).fetchone()
        (weight,) = conn.execute("SELECT weight FROM feedback WHERE request_id = 'click-1'").fetchone()
    finally:
        conn.close()
    assert 0 < weight <= 1  # the answer's trust weight (a new person's is below 1)
    assert m == pytest.approx(eta * weight)  # from m = 0 toward y = 1: η·w·(1 − 0)
