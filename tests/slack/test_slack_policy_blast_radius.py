"""The running bot's blast radius with a policy file: a recommendation nobody closes stops counting once stale
(``blast_radius.stale_after_seconds`` after its predicted fault), and a reload that changes that age is refused,
as the store counts with the one it was started with."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from slack_testing import BotUnderTest, make_settings, prediction

from bot.config import Settings
from bot.standin import StandIn

STALE_AFTER_S = 2.0
POLICY = f"""
version = 1
[rules.blast_radius]
max_concurrent = 1
stale_after_seconds = {STALE_AFTER_S}
"""


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY, encoding="utf-8")
    return make_settings(tmp_path, standin, policy_file=policy_file)


def _drain(bot: BotUnderTest, pid: str, time_to_fault_s: float) -> dict[str, str]:
    body = prediction(pid, action="drain", labels={"cluster": "rack7"}, time_to_fault_s=time_to_fault_s)
    response = bot.ingest(body)
    assert response.status_code == 200, response.text
    answer: dict[str, str] = response.json()
    return answer


def test_an_open_recommendation_stops_counting_once_stale(bot: BotUnderTest) -> None:
    assert _drain(bot, "a1", 0)["verdict"] == "surface"  # predicted to fail now: stale 2 s from now
    blocked = _drain(bot, "a2", 0)
    assert (blocked["verdict"], blocked["rule"]) == ("block", "blast_radius"), blocked
    time.sleep(STALE_AFTER_S + 0.2)  # no outcome, no resolved alert: a1 is stale
    assert _drain(bot, "a3", 3600)["verdict"] == "surface"  # due in an hour: counts for an hour and 2 s
    time.sleep(STALE_AFTER_S + 0.2)
    assert _drain(bot, "a4", 0)["rule"] == "blast_radius"
    assert bot.bot.store.counts()["recommendations_open"] == 2  # neither is closed: the metric still shows both


def test_a_reload_changing_the_stale_age_is_refused(bot: BotUnderTest) -> None:
    settings = bot.bot.settings
    assert settings.policy_file is not None
    old = bot.bot.service.base_policy
    settings.policy_file.write_text(POLICY.replace(f"= {STALE_AFTER_S}", "= 3600"), encoding="utf-8")
    auth = {"Authorization": f"Bearer {settings.ingest_token}"}
    response = httpx.post(f"{bot.server.url}/api/v1/policy/reload", headers=auth, timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "blast_radius.stale_after_seconds"
    assert "restart the service to apply it" in response.json()["error"]
    assert bot.bot.service.base_policy is old


def test_a_reload_changing_the_disruptive_actions_is_refused_and_a_change_of_case_is_none(bot: BotUnderTest) -> None:
    """The store counts a cluster's open disruptive recommendations with the actions it was started with: a reload
    that makes another action disruptive (or none) is refused, else the blast radius would count with one list and
    decide with another. Names are compared without case, so writing them in another case is no change."""
    settings = bot.bot.settings
    assert settings.policy_file is not None
    old = bot.bot.service.base_policy
    auth = {"Authorization": f"Bearer {settings.ingest_token}"}
    reload_url = f"{bot.server.url}/api/v1/policy/reload"
    settings.policy_file.write_text(POLICY + 'disruptive_actions = ["drain"]\n', encoding="utf-8")
    response = httpx.post(reload_url, headers=auth, timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "blast_radius.disruptive_actions"
    assert bot.bot.service.base_policy is old
    same = '["Drain", "REBOOT", "reimage", "power_cycle", "failover"]'
    settings.policy_file.write_text(POLICY + f"disruptive_actions = {same}\n", encoding="utf-8")
    response = httpx.post(reload_url, headers=auth, timeout=10)
    assert response.status_code == 200, response.text
    assert bot.bot.service.base_policy.blast_radius.disruptive_keys == old.blast_radius.disruptive_keys
