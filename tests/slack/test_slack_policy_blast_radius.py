"""The running bot's blast radius with a policy file: a recommendation nobody closes stops counting once stale
(``blast_radius.stale_after_seconds`` after its predicted fault), one turned down by a trusted person's Override
stops counting until someone likes it, and a reload that changes the stale age is refused, as the store counts
with the one it was started with."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from slack_testing import ALICE, BOB, INCIDENT, MALLORY, SECRET, BotUnderTest, make_settings, prediction, serving

from bot.app import build_bot
from bot.config import Settings
from bot.slack.blocks import ACTION_LIKE, ACTION_OVERRIDE
from bot.standin import StandIn
from npo.trust import OperatorTrust

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


def _drain(bot: BotUnderTest, pid: str, time_to_fault_s: float, fault_type: str = "disk_failure") -> dict[str, str]:
    body = prediction(
        pid, fault_type=fault_type, action="drain", labels={"cluster": "rack7"}, time_to_fault_s=time_to_fault_s
    )
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


def _override(bot: BotUnderTest, user: str, message: tuple[str, str], reason: str = "false_positive") -> None:
    """The Override button, then the modal submitted with a reason: what a person does in Slack."""
    assert bot.click(user, ACTION_OVERRIDE, message).status_code == 200
    values = {"reason": {"reason": reason}}
    submitted = bot.standin.submit_view(bot.events_url, SECRET, user_id=user, values=values)
    assert submitted.status_code == 200 and b"errors" not in submitted.content, submitted.text


def _why(bot: BotUnderTest, pid: str) -> str:
    response = bot.standin.slash_command(bot.events_url, SECRET, "/npo", f"why {pid}", ALICE, INCIDENT)
    assert response.status_code == 200, response.text
    return str(response.json()["text"])


def test_an_override_frees_the_clusters_slot_and_a_like_takes_it_back(bot: BotUnderTest) -> None:
    """Through the bot as Slack and the ingest API drive it: a drain overridden by a trusted responder as a false
    positive or the wrong action (and liked by nobody) is not work under way, so the next drain of its cluster is
    surfaced (overridden for maintenance or as already handled, it still counts); a Like by another responder
    counts it again, and the next one is held back; the Like changed back to an Override frees the slot again.
    Each drain has its own fault type and target, so no override cooldown gets in the way."""
    assert _drain(bot, "a1", 3600)["verdict"] == "surface"
    message = bot.posted("a1")
    held = _drain(bot, "a2", 3600, "psu_failure")
    assert (held["verdict"], held["rule"]) == ("block", "blast_radius"), held
    assert "already has 1 open disruptive recommendation(s) (max_concurrent 1)" in _why(bot, "a2")
    for reason in ("maintenance", "already_handled"):  # the node may well be out of service: a1 still counts
        _override(bot, ALICE, message, reason)
        held = _drain(bot, f"a2-{reason}", 3600, f"psu_{reason}")
        assert (held["verdict"], held["rule"]) == ("block", "blast_radius"), (reason, held)
    _override(bot, ALICE, message)  # changed to "False positive": nobody acts on a1
    assert _drain(bot, "a3", 3600, "fan_failure")["verdict"] == "surface"
    assert bot.click(BOB, ACTION_LIKE, message).status_code == 200  # Bob drains n-a1 after all
    held = _drain(bot, "a4", 3600, "nic_failure")
    assert (held["verdict"], held["rule"]) == ("block", "blast_radius"), held
    assert "already has 2 open disruptive recommendation(s)" in _why(bot, "a4")  # a1 and a3
    _override(bot, BOB, message, "wrong_action")  # Bob changes his mind: nobody likes a1 any more
    blocked_by_a3_only = _drain(bot, "a5", 3600, "mem_failure")
    assert "already has 1 open" in blocked_by_a3_only["reason"], blocked_by_a3_only
    log = bot.bot.store.feedback_log(prediction_id="a1")
    assert [(a.event.operator, a.event.kind.value, a.event.reason) for a in log] == [
        (ALICE, "override", "Maintenance"),
        (ALICE, "override", "Already handled"),
        (ALICE, "override", "False positive"),
        (BOB, "like", ""),
        (BOB, "override", "Wrong action"),
    ]


def test_an_override_at_trust_weight_zero_frees_no_slot(tmp_path: Path, standin: StandIn) -> None:
    """A person whose answers have been contradicted down to trust weight 0 starts no cooldown with an Override, and
    turns nothing down either: the drain they overrode still holds its cluster's slot."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY, encoding="utf-8")
    settings = make_settings(tmp_path, standin, policy_file=policy_file, responders=(ALICE, BOB, MALLORY))
    with serving(build_bot(settings, seed=1), standin) as bot:
        with bot.bot.store.transaction() as tx:
            tx.put_trust(OperatorTrust(MALLORY, agree=1.0, disagree=20.0, n_outcome=19))  # agreement 5 %: weight 0
        assert _drain(bot, "a1", 3600)["verdict"] == "surface"
        _override(bot, MALLORY, bot.posted("a1"))
        (applied,) = bot.bot.store.feedback_log(prediction_id="a1")
        assert (applied.event.kind.value, applied.weight) == ("override", 0.0)
        held = _drain(bot, "a2", 3600, "psu_failure")
        assert (held["verdict"], held["rule"]) == ("block", "blast_radius"), held


def test_an_override_frees_the_slot_with_the_override_cooldown_off(tmp_path: Path, standin: StandIn) -> None:
    """Turning down depends on who overrode (trust weight above zero), not on the override cooldown rule: with
    ``override_cooldown.seconds = 0`` a trusted person's Override still frees the cluster's slot, as the policy
    file's comment and the README say."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY + "[rules.override_cooldown]\nseconds = 0\n", encoding="utf-8")
    settings = make_settings(tmp_path, standin, policy_file=policy_file)
    with serving(build_bot(settings, seed=1), standin) as bot:
        assert _drain(bot, "a1", 3600)["verdict"] == "surface"
        assert _drain(bot, "a2", 3600, "psu_failure")["rule"] == "blast_radius"
        _override(bot, ALICE, bot.posted("a1"))
        assert _drain(bot, "a3", 3600, "fan_failure")["verdict"] == "surface"
