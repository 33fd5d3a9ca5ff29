"""The override cooldown counts only overrides with a trust weight above zero: a person whose answers have been
contradicted down to weight 0 cannot silence a kind of recommendation or a target by overriding it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pytest

from npo.loop import InMemoryStore, LoopConfig, LoopStore, decide, decide_batch, record_feedback
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.trust import OperatorTrust
from npo.types import FeedbackEvent, FeedbackKind, Prediction
from storage import SQLiteStore

# The default policy (override cooldown of an hour on the key and the target) with the hourly cap and blast radius
# out of the way.
POLICY = parse_policy(
    DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000").replace(
        'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]', "disruptive_actions = []"
    )
)
CONFIG = LoopConfig()


def _p(pid: str, at: float, target: str = "r1-n1") -> Prediction:
    return Prediction(
        id=pid, fault_type="disk_failure", target=target, action="investigate", confidence=0.99, received_at=at
    )


def _rule_after_override(path: Path, operator_trust: OperatorTrust | None, *, batched: bool) -> str:
    with SQLiteStore(path, CONFIG, disruptive_actions=()) as store:
        with store.transaction() as tx:
            first = decide(tx, _p("a", 0.0), config=CONFIG, policy=POLICY, rng=np.random.default_rng(0), now=0.0)
            assert first.decision.verdict.value == "surface"
            if operator_trust is not None:
                tx.put_trust(operator_trust)
            applied = record_feedback(
                tx, FeedbackEvent("a", "mallory", FeedbackKind.OVERRIDE, 10.0, "r1"), config=CONFIG
            )
            assert applied.status == "recorded"
        # Another disk of the same kind (same scenario key; another target, so not a duplicate by fingerprint),
        # 10 minutes later: inside the hour of the key's cooldown.
        later = _p("b", 600.0, target="r1-n2")
        with store.transaction() as tx:
            if batched:
                (result,) = decide_batch(
                    tx, [later], config=CONFIG, policy=POLICY, rng=np.random.default_rng(1), now=600.0
                )
            else:
                result = decide(tx, later, config=CONFIG, policy=POLICY, rng=np.random.default_rng(1), now=600.0)
        return result.decision.rule


@pytest.mark.parametrize("batched", [False, True], ids=["decide", "decide_batch"])
def test_a_trusted_override_starts_the_cooldown(tmp_path: Path, batched: bool) -> None:
    assert _rule_after_override(tmp_path / "t.db", None, batched=batched) == "override_cooldown"


@pytest.mark.parametrize("batched", [False, True], ids=["decide", "decide_batch"])
def test_an_override_at_weight_zero_does_not(tmp_path: Path, batched: bool) -> None:
    distrusted = OperatorTrust("mallory", agree=1.0, disagree=20.0, n_outcome=19)  # agreement 5 % → weight 0
    rule = _rule_after_override(tmp_path / "d.db", distrusted, batched=batched)
    assert rule != "override_cooldown"
    with SQLiteStore(tmp_path / "d.db", CONFIG, disruptive_actions=()) as store:
        (row,) = [a for a in store.feedback_log() if a.event.operator == "mallory"]
        assert row.weight == 0.0  # the override is in the log, counted with weight 0


def _store(path: Path, kind: str) -> AbstractContextManager[LoopStore]:
    if kind == "memory":
        return nullcontext(InMemoryStore(CONFIG, disruptive_actions=()))
    return SQLiteStore(path, CONFIG, disruptive_actions=())


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@pytest.mark.parametrize("batched", [False, True], ids=["decide", "decide_batch"])
def test_a_like_changed_to_an_override_at_weight_zero_starts_no_cooldown(
    tmp_path: Path, kind: str, batched: bool
) -> None:
    # mallory liked while she was trusted; once the outcomes have taken her weight to 0 she changes that answer to
    # an Override. The changed answer keeps the Like's weight for learning, but she is at weight 0 when she gives
    # it: like any other Override of hers from then on, it must hold back neither the key nor the target.
    with _store(tmp_path / "c.db", kind) as store:
        with store.transaction() as tx:
            first = decide(tx, _p("a", 0.0), config=CONFIG, policy=POLICY, rng=np.random.default_rng(0), now=0.0)
            assert first.decision.verdict.value == "surface"
            liked = record_feedback(tx, FeedbackEvent("a", "mallory", FeedbackKind.LIKE, 5.0, "r1"), config=CONFIG)
            assert liked.applied is not None and liked.applied.weight > 0
            tx.put_trust(OperatorTrust("mallory", agree=1.0, disagree=20.0, n_outcome=19))  # agreement 5 % → 0
            event = FeedbackEvent("a", "mallory", FeedbackKind.OVERRIDE, 10.0, "r2")
            assert record_feedback(tx, event, config=CONFIG).status == "replaced"
        same_key = _p("b", 600.0, target="r1-n2")  # 10 minutes later, another disk of the same kind
        same_target = Prediction(  # the overridden target, another scenario key
            id="c", fault_type="memory_ecc", target="r1-n1", action="investigate", confidence=0.99, received_at=600.0
        )
        rng = np.random.default_rng(1)
        with store.transaction() as tx:
            if batched:
                results = decide_batch(tx, [same_key, same_target], config=CONFIG, policy=POLICY, rng=rng, now=600.0)
            else:
                results = [
                    decide(tx, p, config=CONFIG, policy=POLICY, rng=rng, now=600.0) for p in (same_key, same_target)
                ]
    assert [r.decision.rule for r in results] == ["all_rules_passed", "all_rules_passed"], [
        r.decision.reason for r in results
    ]
