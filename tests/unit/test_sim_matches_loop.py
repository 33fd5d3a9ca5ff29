"""The vectorised simulator and the production loop apply the same learning rules.

The simulator advances all seeds at once with array arithmetic; the loop handles one prediction at a time through
a store. Fed the same world (no monitor) they must end in the same learned misalignment for every key and, with the
bandit drawing τ from the same random stream, the same posterior on every threshold arm, whether the bandit learns
only the drawn arm or every arm (full information) — and, with trust weights, the same trust in every operator.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from npo.bandit import BanditConfig
from npo.loop import InMemoryStore, LoopConfig, decide, record_feedback, record_outcome
from npo.policy import parse_policy
from npo.scoring import KeySpec
from npo.sim.engine import Condition, Trace, run
from npo.sim.world import World, WorldConfig, make_world
from npo.trust import TrustConfig, trust_weight
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction

SKIP_LAMBDA = 0.3
WORLD = WorldConfig(episodes=400, n_keys=8, drift_at=None, outcome_delay=5, n_families=3)


def kind_of(y: float, skipped: bool) -> FeedbackKind:
    if skipped:
        return FeedbackKind.SKIPPED
    return {1.0: FeedbackKind.OVERRIDE, 0.0: FeedbackKind.LIKE, 0.5: FeedbackKind.NEUTRAL}[y]


def _loop(
    world: World, bandit: BanditConfig, rng_seed: int, *, pool_keys: bool = False, trust: TrustConfig | None = None
) -> tuple[list[bool], InMemoryStore]:
    """Seed 0 of ``world`` through the production loop, one prediction, answer and outcome at a time. With
    ``pool_keys`` the key is "f<family>|k<key>" (its parent the family, as in the simulated world), else "k<key>";
    ``trust``: the loop's trust calibration (none by default)."""
    spec = KeySpec(fields=("fault_type", "action")) if pool_keys else KeySpec(fields=("fault_type",))
    config = LoopConfig(key_spec=spec, bandit=bandit, trust=trust, dedupe_window_s=0.0, pool_keys=pool_keys)
    store = InMemoryStore(config)
    # The default rules but the two that read the store's world: the simulator has neither an override cooldown
    # nor a channel cap (one prediction a second here, so both would act), and no action in this world is disruptive.
    policy = parse_policy(
        "[rules.override_cooldown]\nseconds = 0\n\n[rules.channel_hourly_cap]\nmax_per_hour = 1000000\n"
    )
    rng = np.random.default_rng(rng_seed)
    surfaced = []
    for t in range(WORLD.episodes):
        key = int(world.key[0, t])
        fault_type, action = (f"f{int(world.family[key])}", f"k{key}") if pool_keys else (f"k{key}", "investigate")
        prediction = Prediction(
            id=f"p{t}", fault_type=fault_type, target=f"host-{t}", action=action,
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
        j = t - WORLD.outcome_delay
        if j >= 0:
            with store.transaction() as tx:
                record_outcome(tx, Outcome(f"p{j}", bool(world.real_fault[0, j]), at=float(t)), config=config)
    return surfaced, store


def _assert_same_misalignment(store: InMemoryStore, trace: Trace) -> None:
    loop_m = np.array([store.keys[f"k{k}"].m if f"k{k}" in store.keys else 0.0 for k in range(WORLD.n_keys)])
    np.testing.assert_allclose(loop_m, trace.misalignment[0], atol=1e-9)


@pytest.mark.parametrize("tau", [0.6, 0.8])
def test_loop_and_simulator_learn_the_same_misalignment(tau: float) -> None:
    world = make_world(WORLD, seeds=1, seed=11)
    condition = Condition("fixed", fixed_threshold=tau, monitor=False, trust=False, skip_lambda=SKIP_LAMBDA)
    trace = run(world, condition, seed=0)
    surfaced, store = _loop(world, BanditConfig(thresholds=(tau,)), rng_seed=0)
    assert np.array_equal(np.array(surfaced), trace.surfaced[0])
    _assert_same_misalignment(store, trace)


@pytest.mark.parametrize(
    "bandit",
    [
        BanditConfig(full_information=True),
        BanditConfig(full_information=False),
        BanditConfig(full_information=True, gamma=0.99, miss_weight=10.0),
        BanditConfig(full_information=True, miss_weight=0.0, quiet_weight=0.0),
        BanditConfig(full_information=True, miss_weight=10.0, prior_events=2.0),
        BanditConfig(full_information=True, gamma=0.99, miss_weight=10.0, prior_events=2.0),
    ],
    ids=[
        "full-information",
        "drawn-arm",
        "full-information-discounted",
        "full-information-no-miss-weights",
        "full-information-ignorance-prior",
        "full-information-discounted-ignorance-prior",
    ],
)
def test_loop_and_simulator_learn_the_same_bandit(bandit: BanditConfig) -> None:
    world = make_world(WORLD, seeds=1, seed=11)
    condition = Condition("bandit", bandit=bandit, monitor=False, trust=False, skip_lambda=SKIP_LAMBDA)
    trace = run(world, condition, seed=3)
    surfaced, store = _loop(world, bandit, rng_seed=3)  # the same Thompson draws, one bandit at a time
    assert np.array_equal(np.array(surfaced), trace.surfaced[0])
    assert len(set(trace.threshold[0].tolist())) > 1  # the bandit really explored several τ
    _assert_same_misalignment(store, trace)
    np.testing.assert_allclose(store.bandit.alpha, trace.bandit_alpha[0], rtol=1e-12)
    np.testing.assert_allclose(store.bandit.beta, trace.bandit_beta[0], rtol=1e-12)
    prior_alpha, prior_beta = (np.asarray(p) for p in bandit.arm_prior)
    touched = np.sum((trace.bandit_alpha[0] > prior_alpha) | (trace.bandit_beta[0] > prior_beta))
    assert touched == bandit.n_arms


def test_loop_and_simulator_calibrate_trust_the_same_way() -> None:
    """With trust weights, an answer compared with its key's consensus counts toward the operator's trust only once
    the key has had ``peer_min_updates`` updates (``KeyAlignment.n``: answers and suppressed outcomes, however much
    they weighed), as the loop counts them: the simulator must not read the key's effective sample size instead, a
    suppressed outcome counting half an update there. Both then weigh every answer alike and end with the same m,
    bandit and trust in every operator."""
    bandit = BanditConfig(full_information=True)
    world = make_world(WORLD, seeds=1, seed=11)
    condition = Condition("trusted", bandit=bandit, monitor=False, trust=True, skip_lambda=SKIP_LAMBDA)
    trace = run(world, condition, seed=3)
    surfaced, store = _loop(world, bandit, rng_seed=3, trust=TrustConfig())
    assert np.array_equal(np.array(surfaced), trace.surfaced[0])
    _assert_same_misalignment(store, trace)
    np.testing.assert_allclose(store.bandit.alpha, trace.bandit_alpha[0], rtol=1e-12)
    np.testing.assert_allclose(store.bandit.beta, trace.bandit_beta[0], rtol=1e-12)
    loop_weights = [trust_weight(store.trust[f"op{o}"], TrustConfig()) for o in range(WORLD.n_operators)]
    np.testing.assert_allclose(loop_weights, trace.trust_weights[0], atol=1e-12)
    assert any(t.n_peer > 0 for t in store.trust.values())  # peers were compared: the check is not vacuous


def test_loop_and_simulator_pool_keys_the_same_way() -> None:
    """With partial pooling every update also moves the parent key's m, and the score uses the pooled m: the
    loop (parents as key rows "^parent:f<family>") and the simulator (a family array) surface the same predictions
    and end with the same m for every key and every parent."""
    bandit = BanditConfig(full_information=True, miss_weight=10.0, prior_events=2.0)
    world = make_world(WORLD, seeds=1, seed=11)
    condition = Condition("pooled", bandit=bandit, monitor=False, trust=False, skip_lambda=SKIP_LAMBDA, pool_keys=True)
    trace = run(world, condition, seed=3)
    surfaced, store = _loop(world, bandit, rng_seed=3, pool_keys=True)
    assert np.array_equal(np.array(surfaced), trace.surfaced[0])
    keys = store.keys
    loop_m = [
        keys[f"f{int(world.family[k])}|k{k}"].m if f"f{int(world.family[k])}|k{k}" in keys else 0.0
        for k in range(WORLD.n_keys)
    ]
    np.testing.assert_allclose(loop_m, trace.misalignment[0], atol=1e-9)
    np.testing.assert_allclose(store.bandit.alpha, trace.bandit_alpha[0], rtol=1e-12)
    parents = {name: state for name, state in keys.items() if name.startswith("^parent:")}
    assert sorted(parents) == sorted({f"^parent:f{f}" for f in world.family[np.unique(world.key[0])]})
    for name, state in parents.items():  # a parent has seen exactly the evidence of its children
        children = [s for k, s in keys.items() if k.startswith(name.removeprefix("^parent:") + "|")]
        assert state.weight_sum == pytest.approx(sum(c.weight_sum for c in children))
    # Pooling changed what was surfaced: the comparison is not vacuous.
    unpooled = run(world, replace(condition, pool_keys=False), seed=3)
    assert not np.array_equal(unpooled.surfaced[0], trace.surfaced[0])
