"""The Safety Policy's ``deny_targets`` rule: never surface on a target matching a denied pattern."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npo.loop import InMemoryStore, LoopConfig, decide
from npo.policy import (
    DEFAULT_POLICY,
    DEFAULT_POLICY_TEXT,
    RULE_DENY_TARGETS,
    RULE_NAMES,
    PolicyContext,
    PolicyError,
    evaluate,
    parse_policy,
    policy_to_dict,
)
from npo.types import Prediction
from storage import SQLiteStore

NOW = 1_750_000_000.0


def _p(target: str, action: str = "drain", pid: str = "p1") -> Prediction:
    return Prediction(id=pid, fault_type="disk_failure", target=target, action=action, confidence=0.95)


def _verdict(policy_text: str, target: str, action: str = "drain") -> tuple[str, str]:
    verdict = evaluate(parse_policy(policy_text), _p(target, action), "k", "C1", PolicyContext(now=NOW))
    return verdict.rule, verdict.reason


def test_the_default_has_no_pattern_and_blocks_nothing() -> None:
    assert DEFAULT_POLICY.deny_targets.patterns == ()
    assert _verdict(DEFAULT_POLICY_TEXT, "db-01")[0] == "all_rules_passed"
    assert RULE_NAMES.index(RULE_DENY_TARGETS) == 1  # after allowed_actions, before the freeze windows


@pytest.mark.parametrize(
    ("target", "blocked"),
    [("db-01", True), ("DB-07", True), ("r12-db-01", False), ("web-canary", True), ("web-1", False), ("db", False)],
)
def test_a_target_matching_a_pattern_is_blocked_without_case(target: str, blocked: bool) -> None:
    rule, reason = _verdict('[rules.deny_targets]\npatterns = ["DB-*", "*-canary"]\n', target)
    assert (rule == RULE_DENY_TARGETS) is blocked
    if blocked:
        assert repr(target) in reason


@pytest.mark.parametrize(
    ("pattern", "target", "blocked"),
    [
        ("ÜBUNG-*", "übung-1", True),  # the documented "without case" holds beyond ASCII letters
        ("übung-*", "ÜBUNG-1", True),
        ("ΣRV-*", "σrv-2", True),
        ("srv-?", "SRV-Ä", True),  # "?" is still one character, whatever its case
        ("[ä-ö]*", "Ö-1", True),
        ("übung-*", "ubung-1", False),  # case folds, accents do not
    ],
)
def test_targets_are_compared_without_case_in_every_script(pattern: str, target: str, blocked: bool) -> None:
    rule, _ = _verdict(f'[rules.deny_targets]\npatterns = ["{pattern}"]\n', target)
    assert (rule == RULE_DENY_TARGETS) is blocked


def test_with_actions_only_those_actions_are_denied() -> None:
    text = '[rules.deny_targets]\npatterns = ["db-*"]\nactions = ["Reboot"]\n'
    assert _verdict(text, "db-01", "reboot")[0] == RULE_DENY_TARGETS
    assert _verdict(text, "db-01", "investigate")[0] == "all_rules_passed"


def test_it_comes_before_the_rules_that_count() -> None:
    text = '[rules.deny_targets]\npatterns = ["db-*"]\n[rules.channel_hourly_cap]\nmax_per_hour = 1\n'
    ctx = PolicyContext(now=NOW, surfaced_last_hour_by_channel={"C1": 5})
    assert evaluate(parse_policy(text), _p("db-01"), "k", "C1", ctx).rule == RULE_DENY_TARGETS


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[rules.deny_targets]\npattern = ["db-*"]\n', "rules.deny_targets.pattern"),
        ('[rules.deny_targets]\npatterns = "db-*"\n', "rules.deny_targets.patterns"),
        ('[rules.deny_targets]\npatterns = [" db-*"]\n', "rules.deny_targets.patterns"),
        ("[rules.deny_targets]\nactions = [1]\n", "rules.deny_targets.actions"),
    ],
)
def test_a_malformed_rule_is_refused_naming_its_line_and_field(text: str, field: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(text)
    assert refused.value.field == field
    assert refused.value.line == 2


def test_it_is_shown_by_policy_to_dict() -> None:
    policy = parse_policy('[rules.deny_targets]\npatterns = ["db-*"]\nactions = ["reboot"]\n')
    assert policy_to_dict(policy)["rules"]["deny_targets"] == {"patterns": ["db-*"], "actions": ["reboot"]}
    assert policy_to_dict(DEFAULT_POLICY)["rules"]["deny_targets"] == {"patterns": []}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_both_stores_record_the_block(tmp_path: Path, kind: str) -> None:
    config = LoopConfig()
    policy = parse_policy('[rules.deny_targets]\npatterns = ["db-*"]\n')
    store = InMemoryStore(config) if kind == "memory" else SQLiteStore(tmp_path / "npo.db", config)
    try:
        with store.transaction() as tx:
            result = decide(tx, _p("db-3"), config=config, policy=policy, rng=np.random.default_rng(0), now=NOW)
        assert (result.decision.verdict.value, result.decision.rule) == ("block", RULE_DENY_TARGETS)
        assert not result.decision.surfaced
    finally:
        if kind == "sqlite":
            store.close()


def test_an_empty_list_of_actions_is_refused() -> None:
    # Omitted, `actions` means every action; an empty list reads as "no action" (the rule off), so taking it as
    # every action would deny the opposite of what it says. Refused, as a freeze window's empty `actions` is.
    with pytest.raises(PolicyError) as refused:
        parse_policy('[rules.deny_targets]\npatterns = ["db-*"]\nactions = []\n')
    assert (refused.value.field, refused.value.line) == ("rules.deny_targets.actions", 3)
    assert "omit it" in refused.value.message
