"""The vectorised simulator and the production loop apply the same learning rules.

The simulator advances all seeds at once with array arithmetic; the loop handles one prediction at a time through
a store. Fed the same world (fixed τ, no trust weights, no monitor, so nothing random remains), they must end in
the same learned misalignment for every key.
"""

from __future__ import annotations

import numpy as np
import pytest

from npo.bandit import BanditConfig
from npo.loop import InMemoryStore, LoopConfig, decide, record_feedback, record_outcome
from npo.policy import parse_policy
from npo.scoring import KeySpec
from npo.sim.engine import Condition, run
from npo.sim.world import WorldConfig, make_world
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction

SKIP_LAMBDA = 0.3


def kind_of(y: float, skipped: bool) -> FeedbackKind:
    if skipped:
        return FeedbackKind.SKIPPED
    return {1.0: FeedbackKind.OVERRIDE, 0.0: FeedbackKind.LIKE, 0.5: FeedbackKind.NEUTRAL}[y]


@pytest.mark.parametrize("tau", [0.6, 0.8])
def test_loop_and_simulator_learn_the_same_misalignment(tau: float) -> None:
    world_cfg = WorldConfig(episodes=400, n_keys=8, drift_at=None, outcome_delay=5)
    world = make_world(world_cfg, seeds=1, seed=11)
    condition = Condition("fixed", fixed_threshold=tau, monitor=False, trust=False, skip_lambda=SKIP_LAMBDA)
    trace = run(world, condition, seed=0)

    config = LoopConfig(
        key_spec=KeySpec(fields=("fault_type",)),
        bandit=BanditConfig(thresholds=(tau,)),
        trust=None,
        dedupe_window_s=0.0,
    )
    store = InMemoryStore(config)
    policy = parse_policy("")  # default rules; nothing in this world trips them
    rng = np.random.default_rng(0)
    surfaced = []
    for t in range(world_cfg.episodes):
        key = int(world.key[0, t])
        prediction = Prediction(
            id=f"p{t}", fault_type=f"k{key}", target=f"host-{t}", action="investigate",
            confidence=float(world.confidence[0, t]), received_at=float(t),
        )  # fmt: skip
        with store.transaction() as tx:
            decision = decide(tx, prediction, config=config, policy=policy, rng=rng, now=float(t)).decision
        surfaced.append(decision.surfaced)
        if decision.surfaced:
            skipped = bool(world.skipped[0, t])
            truthful = 0.0 if world.real_fault[0, t] else 1.0
            answer = 1.0 - truthful if world.flip[0, t] else truthful
            y = 0.5 if world.neutral[0, t] and not skipped else answer
            operator = "system" if skipped else f"op{int(world.operator[0, t])}"
            event = FeedbackEvent(f"p{t}", operator, kind_of(y, skipped), at=float(t), request_id=f"r{t}")
            with store.transaction() as tx:
                record_feedback(tx, event, config=config)
        j = t - world_cfg.outcome_delay
        if j >= 0:
            with store.transaction() as tx:
                record_outcome(tx, Outcome(f"p{j}", bool(world.real_fault[0, j]), at=float(t)), config=config)

    assert np.array_equal(np.array(surfaced), trace.surfaced[0])
    loop_m = np.array([store.keys[f"k{k}"].m if f"k{k}" in store.keys else 0.0 for k in range(world_cfg.n_keys)])
    np.testing.assert_allclose(loop_m, trace.misalignment[0], atol=1e-9)
