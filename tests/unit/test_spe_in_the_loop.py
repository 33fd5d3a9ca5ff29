"""The Safety Policy Engine in the loop: nothing a hard rule blocks is ever surfaced, whatever R(s) and τ say."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.loop import InMemoryStore, decide
from npo.policy import PolicyContext, evaluate, parse_policy
from npo.scoring import scenario_key
from npo.types import Prediction, Severity, Verdict

ACTIONS = ["drain", "reboot", "investigate", "reimage"]
FAULTS = ["disk_failure", "psu_failure", "memory_ecc"]
NOW = 1_750_000_000.0  # a fixed instant; freeze windows below are placed around it


def policy_text(allowed: dict[str, list[str]], frozen_action: str | None) -> str:
    lines = ["[rules.allowed_actions]"]
    lines += [
        f"{fault} = [{', '.join(repr(a).replace(chr(39), chr(34)) for a in acts)}]" for fault, acts in allowed.items()
    ]
    if frozen_action is not None:
        lines += [
            "[[rules.freeze_windows]]",
            'name = "change freeze"',
            'start = "2025-06-15T00:00:00+00:00"',
            'end = "2025-06-16T00:00:00+00:00"',
            f'actions = ["{frozen_action}"]',
        ]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(
    allowed=st.dictionaries(st.sampled_from(FAULTS), st.lists(st.sampled_from(ACTIONS), min_size=1, unique=True)),
    frozen_action=st.none() | st.sampled_from(ACTIONS),
    fault=st.sampled_from(FAULTS),
    action=st.sampled_from(ACTIONS),
    confidence=st.floats(0.0, 1.0),
    severity=st.sampled_from(list(Severity)),
    seed=st.integers(0, 2**16),
)
def test_a_blocked_prediction_is_never_surfaced(
    allowed: dict[str, list[str]],
    frozen_action: str | None,
    fault: str,
    action: str,
    confidence: float,
    severity: Severity,
    seed: int,
) -> None:
    policy = parse_policy(policy_text(allowed, frozen_action))
    prediction = Prediction(
        id="p", fault_type=fault, target="r1-n1", action=action, confidence=confidence, severity=severity,
        received_at=NOW,
    )  # fmt: skip
    store = InMemoryStore()
    verdict = evaluate(policy, prediction, scenario_key(prediction), "incident", PolicyContext(now=NOW))
    with store.transaction() as tx:
        decision = decide(tx, prediction, config=store.config, policy=policy, rng=np.random.default_rng(seed), now=NOW)
    if verdict.outcome == "block":
        assert decision.decision.verdict is Verdict.BLOCK
        assert not decision.decision.surfaced
        assert decision.decision.rule == verdict.rule
        assert decision.decision.arm is None  # the bandit was not consulted
    else:
        assert decision.decision.verdict is not Verdict.BLOCK
