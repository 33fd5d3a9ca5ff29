"""The running bot's policy file with a named time zone: read at start-up (a UTF-8 byte-order mark included), and a
reload through ``POST /api/v1/policy/reload`` naming an unknown zone is refused while the old policy stays in force."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from slack_testing import BotUnderTest, make_settings, prediction

from bot.config import Settings
from bot.standin import StandIn

EVERY_DAY = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
ZONED_POLICY = f"""
[rules.allowed_actions]
disk_failure = ["investigate", "drain", "replace_disk", "reboot"]

[[rules.freeze_windows]]
name = "no reboots"
days = {EVERY_DAY}
start = "00:00"
end = "24:00"
timezone = "Europe/Berlin"
actions = ["reboot"]
"""


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    """The Slack tests' settings (and so their ``bot``) with this policy file, saved with a byte-order mark as some
    editors save it."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(ZONED_POLICY, encoding="utf-8-sig")
    return make_settings(tmp_path, standin, policy_file=policy_file)


def _reload(bot: BotUnderTest) -> httpx.Response:
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    return httpx.post(f"{bot.server.url}/api/v1/policy/reload", headers=auth, timeout=10)


def _verdict(bot: BotUnderTest, pid: str, action: str) -> dict[str, str]:
    response = bot.ingest(prediction(pid, action=action, target=f"{pid}-n1"))
    assert response.status_code == 200, response.text
    answer: dict[str, str] = response.json()
    return answer


def test_a_policy_file_with_a_bom_and_a_named_zone_is_read_at_start_up(bot: BotUnderTest) -> None:
    window = bot.bot.service.base_policy.freeze_windows[0]
    assert (window.timezone, window.utc_offset_minutes) == ("Europe/Berlin", 0)
    blocked = _verdict(bot, "a1", "reboot")
    assert (blocked["verdict"], blocked["rule"]) == ("block", "freeze_window"), blocked
    assert "Europe/Berlin" in blocked["reason"]
    assert _verdict(bot, "a2", "drain")["verdict"] == "surface"


def test_a_reload_naming_an_unknown_zone_keeps_the_old_policy(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot.bot.settings
    assert settings.policy_file is not None
    old = bot.bot.service.base_policy
    settings.policy_file.write_text(
        ZONED_POLICY.replace("Europe/Berlin", "Europe/Berlni").replace('"reboot"]\n\n', '"reboot", "power_cycle"]\n\n'),
        encoding="utf-8",
    )
    response = _reload(bot)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["field"] == "rules.freeze_windows[0].timezone", answer
    assert "unknown time zone 'Europe/Berlni'" in answer["error"] and "line 10" in answer["error"], answer
    assert bot.bot.service.base_policy is old
    assert any(r.levelname == "ERROR" and "policy reload refused" in r.getMessage() for r in caplog.records)
    # the old policy still decides: reboots frozen on Berlin time, power_cycle not allowed, drain surfaces
    assert _verdict(bot, "b1", "reboot")["rule"] == "freeze_window"
    assert _verdict(bot, "b2", "power_cycle")["rule"] == "allowed_actions"
    assert _verdict(bot, "b3", "drain")["verdict"] == "surface"

    # A valid file (a byte-order mark again, another zone) is then taken, with its zone.
    settings.policy_file.write_text(ZONED_POLICY.replace("Europe/Berlin", "America/New_York"), encoding="utf-8-sig")
    response = _reload(bot)
    assert response.status_code == 200, response.text
    assert bot.bot.service.base_policy.freeze_windows[0].timezone == "America/New_York"
    assert "America/New_York" in _verdict(bot, "c1", "reboot")["reason"]
