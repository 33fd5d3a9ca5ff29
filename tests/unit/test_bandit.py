"""The threshold bandit: Thompson sampling over τ, fractional rewards, the miss term, discounting."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.bandit import (
    DEFAULT_THRESHOLDS,
    BanditConfig,
    ThresholdBandit,
    choose_batch,
    credit_batch,
    decide_and_update_batch,
    new_batch,
    observe_batch,
    observe_suppressed_batch,
    update_batch,
)
from npo.types import InvalidRecord

K = len(DEFAULT_THRESHOLDS)
_event = st.tuples(st.integers(0, K - 1), st.floats(0.0, 1.0), st.floats(0.0, 5.0))
_config = st.builds(
    BanditConfig,
    prior_alpha=st.floats(0.1, 10.0),
    prior_beta=st.floats(0.1, 10.0),
    gamma=st.floats(0.5, 1.0),
    miss_weight=st.floats(0.0, 10.0),
    prior_events=st.sampled_from([0.0, 1.0, 2.0, 5.0]),
)


def _apply(bandit: ThresholdBandit, events: list[tuple[int, float, float]]) -> ThresholdBandit:
    for arm, reward, weight in events:
        bandit = bandit.update(arm, reward, weight)
    return bandit


# -- properties ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(config=_config, events=st.lists(_event, max_size=60), replaced=st.lists(_event, max_size=10))
def test_posterior_means_stay_in_unit_interval(
    config: BanditConfig, events: list[tuple[int, float, float]], replaced: list[tuple[int, float, float]]
) -> None:
    bandit = _apply(ThresholdBandit(config), events)
    for arm, reward, weight in replaced:
        bandit = bandit.replace_reward(arm, reward, 1.0 - reward, weight)
        bandit = bandit.miss_update(arm, real_fault=reward > 0.5)
    means = bandit.posterior_means()
    assert len(means) == K
    assert all(0.0 < m < 1.0 for m in means)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_event, max_size=60), data=st.data())
def test_updates_commute_without_discount(events: list[tuple[int, float, float]], data: st.DataObject) -> None:
    order_a = data.draw(st.permutations(events))
    order_b = data.draw(st.permutations(events))
    a = _apply(ThresholdBandit(BanditConfig(gamma=1.0)), order_a)
    b = _apply(ThresholdBandit(BanditConfig(gamma=1.0)), order_b)
    assert np.allclose(a.alpha, b.alpha, rtol=1e-12, atol=1e-9)
    assert np.allclose(a.beta, b.beta, rtol=1e-12, atol=1e-9)
    assert a.pulls == b.pulls
    # and the evidence is just the sum of the events
    for arm in range(K):
        mine = [(r, w) for x, r, w in events if x == arm]
        assert a.alpha[arm] == pytest.approx(1.0 + sum(w * r for r, w in mine))
        assert a.beta[arm] == pytest.approx(1.0 + sum(w * (1 - r) for r, w in mine))


def test_discounted_updates_do_not_commute() -> None:
    """γ < 1 weighs recent evidence more, so order matters (this is the point of discounting)."""
    events = [(0, 1.0, 1.0)] * 20 + [(0, 0.0, 1.0)] * 20
    cfg = BanditConfig(gamma=0.9)
    late_failures = _apply(ThresholdBandit(cfg), events)
    late_successes = _apply(ThresholdBandit(cfg), events[::-1])
    assert late_failures.posterior_means()[0] < 0.3
    assert late_successes.posterior_means()[0] > 0.7


@settings(max_examples=200, deadline=None)
@given(config=_config, events=st.lists(_event, max_size=60))
def test_discount_never_pulls_below_the_prior(config: BanditConfig, events: list[tuple[int, float, float]]) -> None:
    bandit = ThresholdBandit(config)
    prior_alpha, prior_beta = config.arm_prior
    for arm, reward, weight in events:
        bandit = bandit.update(arm, reward, weight)
        assert all(a >= p - 1e-12 for a, p in zip(bandit.alpha, prior_alpha, strict=True))
        assert all(b >= p - 1e-12 for b, p in zip(bandit.beta, prior_beta, strict=True))


def test_discount_pulls_evidence_back_toward_the_prior() -> None:
    cfg = BanditConfig(gamma=0.5)
    bandit = ThresholdBandit(cfg).update(0, 1.0, 8.0)  # α₀ = 9
    bandit = bandit.update(1, 1.0, 0.0)  # no evidence for arm 1, but arm 0 is discounted
    assert bandit.alpha[0] == pytest.approx(1.0 + 0.5 * 8.0)
    assert bandit.beta[0] == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(
    config=_config,
    events=st.lists(_event, max_size=30),
    swaps=st.lists(st.tuples(st.integers(0, K - 1), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 20.0)),
                   max_size=20),
)  # fmt: skip
def test_replace_reward_never_drives_below_the_prior(
    config: BanditConfig,
    events: list[tuple[int, float, float]],
    swaps: list[tuple[int, float, float, float]],
) -> None:
    bandit = _apply(ThresholdBandit(config), events)
    prior_alpha, prior_beta = config.arm_prior
    for arm, old, new, weight in swaps:
        swapped = bandit.replace_reward(arm, old, new, weight)
        assert all(a >= p for a, p in zip(swapped.alpha, prior_alpha, strict=True))
        assert all(b >= p for b, p in zip(swapped.beta, prior_beta, strict=True))
        assert swapped.pulls == bandit.pulls  # a changed answer is not a new pull
        bandit = swapped


@settings(max_examples=200, deadline=None)
@given(arm=st.integers(0, K - 1), old=st.floats(0.0, 1.0), new=st.floats(0.0, 1.0), weight=st.floats(0.0, 3.0))
def test_replace_reward_is_exact_when_nothing_intervened(arm: int, old: float, new: float, weight: float) -> None:
    start = _apply(ThresholdBandit(), [(0, 1.0, 1.0), (2, 0.0, 1.0), (4, 0.5, 2.0)])
    swapped = start.update(arm, old, weight).replace_reward(arm, old, new, weight)
    direct = start.update(arm, new, weight)
    assert np.allclose(swapped.alpha, direct.alpha, atol=1e-12)
    assert np.allclose(swapped.beta, direct.beta, atol=1e-12)
    assert swapped.pulls == direct.pulls


@settings(max_examples=200, deadline=None)
@given(config=_config, events=st.lists(_event, min_size=1, max_size=40))
def test_update_batch_agrees_with_scalar_update(config: BanditConfig, events: list[tuple[int, float, float]]) -> None:
    bandit = ThresholdBandit(config)
    alpha, beta = new_batch((1,), config)
    for arm, reward, weight in events:
        if weight == 0.0:
            continue  # a weight of 0 means "no event" in the batch form (not even a discount)
        bandit = bandit.update(arm, reward, weight)
        alpha, beta = update_batch(alpha, beta, np.array([arm]), np.array([reward]), np.array([weight]), config)
    assert np.allclose(alpha[0], bandit.alpha, rtol=1e-12, atol=1e-12)
    assert np.allclose(beta[0], bandit.beta, rtol=1e-12, atol=1e-12)


def test_update_batch_over_many_bandits_matches_a_loop_and_leaves_inputs_alone() -> None:
    rng = np.random.default_rng(5)
    cfg = BanditConfig(gamma=0.97)
    shape = (4, 3)
    alpha, beta = new_batch(shape, cfg)
    scalar = [[ThresholdBandit(cfg) for _ in range(3)] for _ in range(4)]
    for _ in range(50):
        arms = rng.integers(0, K, size=shape)
        rewards = rng.random(shape)
        weights = np.where(rng.random(shape) < 0.3, 0.0, rng.random(shape) * 2)
        before = (alpha.copy(), beta.copy())
        new_alpha, new_beta = update_batch(alpha, beta, arms, rewards, weights, cfg)
        assert np.array_equal(alpha, before[0]) and np.array_equal(beta, before[1])
        alpha, beta = new_alpha, new_beta
        for i in range(4):
            for j in range(3):
                if weights[i, j] > 0:
                    b = scalar[i][j].update(int(arms[i, j]), float(rewards[i, j]), float(weights[i, j]))
                    scalar[i][j] = b
    assert np.allclose(alpha, [[b.alpha for b in row] for row in scalar])
    assert np.allclose(beta, [[b.beta for b in row] for row in scalar])


@settings(max_examples=100, deadline=None)
@given(config=_config, events=st.lists(_event, max_size=20), seed=st.integers(0, 2**32 - 1))
def test_choose_batch_agrees_with_scalar_choose(
    config: BanditConfig, events: list[tuple[int, float, float]], seed: int
) -> None:
    """Same posterior, same seed → the same arm (both draw arm by arm from one stream)."""
    bandits = [_apply(ThresholdBandit(config), events[i:]) for i in range(3)]
    alpha = np.array([b.alpha for b in bandits])
    beta = np.array([b.beta for b in bandits])
    batch = choose_batch(alpha, beta, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    scalar = [b.choose(rng) for b in bandits]
    assert batch.shape == (3,)
    assert batch.tolist() == scalar


# -- Thompson sampling --------------------------------------------------------------------------------------
def test_choice_is_reproducible_for_the_same_seed() -> None:
    bandit = _apply(ThresholdBandit(), [(0, 1.0, 1.0), (1, 0.0, 1.0), (3, 0.5, 1.0)])
    a = [bandit.choose(np.random.default_rng(99)) for _ in range(3)]
    rng1, rng2 = np.random.default_rng(1234), np.random.default_rng(1234)
    assert [bandit.choose(rng1) for _ in range(200)] == [bandit.choose(rng2) for _ in range(200)]
    assert len(set(a)) == 1
    # the choice really is random: a flat posterior picks every arm
    rng = np.random.default_rng(0)
    assert {ThresholdBandit().choose(rng) for _ in range(200)} == set(range(K))


def test_a_confident_posterior_wins_the_draw() -> None:
    bandit = ThresholdBandit().update(3, 1.0, 200.0)
    for arm in (0, 1, 2, 4):
        bandit = bandit.update(arm, 0.0, 200.0)
    rng = np.random.default_rng(0)
    assert all(bandit.choose(rng) == 3 for _ in range(100))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_best_fixed_bernoulli_arm_dominates_late_rounds(seed: int) -> None:
    p = np.array([0.3, 0.45, 0.6, 0.75, 0.9])
    rng = np.random.default_rng(seed)
    bandit = ThresholdBandit()
    chosen = []
    for _ in range(3000):
        arm = bandit.choose(rng)
        bandit = bandit.update(arm, float(rng.random() < p[arm]))
        chosen.append(arm)
    late = np.array(chosen[-1000:])
    assert np.mean(late == 4) > 0.8
    assert bandit.pulls[4] == max(bandit.pulls)
    assert sum(bandit.pulls) == 3000


# -- the miss term ------------------------------------------------------------------------------------------
def test_miss_term_moves_the_arm_with_the_configured_weights() -> None:
    cfg = BanditConfig(miss_weight=2.0, quiet_weight=0.5)
    start = _apply(ThresholdBandit(cfg), [(2, 1.0, 3.0), (2, 0.0, 3.0)])  # arm 2 at mean ½
    missed = start.miss_update(2, real_fault=True)
    quiet = start.miss_update(2, real_fault=False)
    assert missed.posterior_means()[2] < start.posterior_means()[2] < quiet.posterior_means()[2]
    assert (missed.alpha[2], missed.beta[2]) == pytest.approx((4.0, 6.0))  # β += miss_weight
    assert (quiet.alpha[2], quiet.beta[2]) == pytest.approx((4.5, 4.0))  # α += quiet_weight
    assert missed.posterior_means()[:2] == start.posterior_means()[:2]
    assert missed.pulls[2] == start.pulls[2] + 1


def test_miss_term_with_zero_weight_is_a_no_op() -> None:
    cfg = BanditConfig(miss_weight=0.0, quiet_weight=0.0, gamma=0.9)
    start = ThresholdBandit(cfg).update(1, 1.0)
    assert start.miss_update(1, real_fault=True) == start
    assert start.miss_update(1, real_fault=False) == start


def test_default_miss_weights_treat_a_miss_as_worse_than_a_quiet_expiry() -> None:
    cfg = BanditConfig()
    assert cfg.miss_weight > cfg.quiet_weight > 0
    start = ThresholdBandit(cfg)
    drop = 0.5 - start.miss_update(4, real_fault=True).posterior_means()[4]
    rise = start.miss_update(4, real_fault=False).posterior_means()[4] - 0.5
    assert drop > rise > 0


# -- configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"thresholds": ()}, "thresholds"),
        ({"thresholds": (0.5, 0.5, 0.7)}, "thresholds"),
        ({"thresholds": (0.7, 0.5)}, "thresholds"),
        ({"thresholds": (0.5, 1.2)}, "thresholds"),
        ({"thresholds": (float("nan"),)}, "thresholds"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.01}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"prior_alpha": 0.0}, "prior"),
        ({"prior_beta": -1.0}, "prior"),
        ({"prior_alpha": float("nan")}, "prior"),
        ({"prior_beta": float("inf")}, "prior"),
        ({"miss_weight": -0.1}, "miss_weight"),
        ({"quiet_weight": 11.0}, "quiet_weight"),
        ({"quiet_weight": float("nan")}, "quiet_weight"),
        ({"full_information": 1}, "full_information"),
        ({"prior_events": -1.0}, "prior_events"),
        ({"prior_events": float("nan")}, "prior_events"),
        ({"prior_events": 101.0}, "prior_events"),
    ],
)
def test_invalid_configs_raise(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        BanditConfig(**kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_invalid_states_and_events_raise() -> None:
    with pytest.raises(InvalidRecord, match="alpha"):
        ThresholdBandit(alpha=(1.0, 1.0))
    with pytest.raises(InvalidRecord, match="posterior"):
        ThresholdBandit(alpha=(1.0, 0.0, 1.0, 1.0, 1.0))
    bandit = ThresholdBandit()
    with pytest.raises(InvalidRecord, match="arm"):
        bandit.update(K, 1.0)
    with pytest.raises(InvalidRecord, match="reward"):
        bandit.update(0, 1.5)
    with pytest.raises(InvalidRecord, match="weight"):
        bandit.update(0, 1.0, -1.0)
    with pytest.raises(InvalidRecord, match="reward"):
        bandit.replace_reward(0, 0.0, 2.0)


def test_reset_returns_to_the_prior_and_keeps_pulls() -> None:
    bandit = _apply(ThresholdBandit(BanditConfig(prior_alpha=2.0)), [(0, 1.0, 1.0), (1, 0.0, 3.0)])
    fresh = bandit.reset()
    assert fresh.alpha == (2.0,) * K and fresh.beta == (1.0,) * K
    assert fresh.pulls == bandit.pulls


# -- drift: discounted vs stationary Thompson sampling --------------------------------------------------------
SEEDS = 30
HORIZON = 4000
CHANGE = 2000


def _drift_run(p_before: tuple[float, ...], gamma: float) -> tuple[float, np.ndarray]:
    """Best-arm share over the decisions after the change, and the expected post-change regret per seed."""
    cfg = BanditConfig(gamma=gamma)
    alpha, beta = new_batch((SEEDS,), cfg)
    before = np.tile(np.array(p_before), (SEEDS, 1))
    after = before[:, ::-1].copy()  # the arms swap to reversed order
    rng = np.random.default_rng(2024)
    best_after = int(np.argmax(after[0]))
    hits = 0
    regret = np.zeros(SEEDS)
    rows = np.arange(SEEDS)
    for t in range(HORIZON):
        p = before if t < CHANGE else after
        alpha, beta, arms, rewards = decide_and_update_batch(alpha, beta, p, rng, cfg)
        assert rewards.shape == (SEEDS,) and set(np.unique(rewards)) <= {0.0, 1.0}
        if t >= CHANGE:
            hits += int(np.sum(arms == best_after))
            regret += p[rows, best_after] - p[rows, arms]
    return hits / (SEEDS * (HORIZON - CHANGE)), regret


def test_discounted_bandit_recovers_after_the_arms_swap() -> None:
    # Measured (30 bandits, rng seed 2024): discounted 85.6 % best-arm share after the change, regret 95 ± 15;
    # stationary 54.6 %, regret 470 ± 165 (ratio 0.20). Other seeds: 85 % / 55–59 %.
    share_discounted, regret_discounted = _drift_run((0.3, 0.45, 0.6, 0.75, 0.9), 0.995)
    share_stationary, regret_stationary = _drift_run((0.3, 0.45, 0.6, 0.75, 0.9), 1.0)
    assert share_discounted >= 0.70
    assert regret_discounted.mean() <= 0.5 * regret_stationary.mean()
    assert share_discounted > share_stationary


def test_discounted_bandit_recovers_on_a_harder_gap() -> None:
    # Arms 0.4…0.8 (gaps of 0.1). Measured (rng seed 2024): discounted 71.7 % best-arm share after the change,
    # regret 116 ± 15; stationary 43.9 %, regret 375 ± 102 (ratio 0.31). Other seeds: 71–72 % / 38–45 %.
    # The ≥ 70 % bar holds here only narrowly, so this test asks for ≥ 65 %.
    share_discounted, regret_discounted = _drift_run((0.4, 0.5, 0.6, 0.7, 0.8), 0.995)
    share_stationary, regret_stationary = _drift_run((0.4, 0.5, 0.6, 0.7, 0.8), 1.0)
    assert share_discounted >= 0.65
    assert regret_discounted.mean() <= 0.5 * regret_stationary.mean()
    assert share_discounted > share_stationary + 0.15


# -- full information --------------------------------------------------------------------------------------------
_score = st.floats(0.0, 1.0)
_observation = st.tuples(st.integers(0, K - 1), _score, st.floats(0.0, 1.0), st.floats(0.01, 5.0))


@settings(max_examples=200, deadline=None)
@given(config=_config, score=_score, reward=st.floats(0.0, 1.0), weight=st.floats(0.0, 5.0))
def test_credit_splits_the_arms_at_the_score(config: BanditConfig, score: float, reward: float, weight: float) -> None:
    d_alpha, d_beta = ThresholdBandit(config).credit(score, reward, weight)
    for t, a, b in zip(config.thresholds, d_alpha, d_beta, strict=True):
        if t <= score:  # would have surfaced it: the answer's own reward
            assert (a, b) == pytest.approx((weight * reward, weight * (1 - reward)))
        else:  # would have suppressed it: the miss term's credit
            assert (a, b) == pytest.approx(
                (weight * config.quiet_weight * (1 - reward), weight * config.miss_weight * reward)
            )


@settings(max_examples=200, deadline=None)
@given(
    config=_config,
    events=st.lists(_observation, min_size=1, max_size=30),
    suppressed=st.lists(st.tuples(st.integers(0, K - 1), _score, st.booleans()), max_size=10),
)
def test_observe_batch_agrees_with_the_scalar_form(
    config: BanditConfig,
    events: list[tuple[int, float, float, float]],
    suppressed: list[tuple[int, float, bool]],
) -> None:
    for full in (True, False):
        cfg = replace(config, full_information=full)
        bandit = ThresholdBandit(cfg)
        alpha, beta = new_batch((1,), cfg)
        for arm, score, reward, weight in events:
            bandit = bandit.observe_surfaced(arm, score, reward, weight)
            alpha, beta = observe_batch(
                alpha, beta, np.array([arm]), np.array([score]), np.array([reward]), np.array([weight]), cfg
            )
        for arm, score, real in suppressed:
            bandit = bandit.observe_suppressed(arm, score, real)
            alpha, beta = observe_suppressed_batch(
                alpha, beta, np.array([arm]), np.array([score]), np.array([real]), np.array([True]), cfg
            )
        assert np.allclose(alpha[0], bandit.alpha, rtol=1e-12, atol=1e-12)
        assert np.allclose(beta[0], bandit.beta, rtol=1e-12, atol=1e-12)


def test_full_information_changes_every_arm_and_counts_one_pull() -> None:
    bandit = ThresholdBandit(BanditConfig(full_information=True)).observe_surfaced(1, 0.75, 1.0, 2.0)
    assert bandit.alpha == pytest.approx((3.0, 3.0, 3.0, 1.0, 1.0))  # τ ≤ 0.75 surfaced a liked one
    assert bandit.beta == pytest.approx((1.0, 1.0, 1.0, 3.0, 3.0))  # τ > 0.75 would have missed it (weight 1)
    assert bandit.pulls == (0, 1, 0, 0, 0)
    drawn = ThresholdBandit(BanditConfig(full_information=False)).observe_surfaced(1, 0.75, 1.0, 2.0)
    assert drawn == ThresholdBandit(BanditConfig(full_information=False)).update(1, 1.0, 2.0)


def test_full_information_suppressed_outcome_is_the_miss_term_on_the_suppressing_arms() -> None:
    cfg = BanditConfig(full_information=True, miss_weight=4.0, quiet_weight=0.5)
    missed = ThresholdBandit(cfg).observe_suppressed(4, 0.65, real_fault=True)
    assert missed.alpha == pytest.approx((2.0, 2.0, 1.0, 1.0, 1.0))
    assert missed.beta == pytest.approx((1.0, 1.0, 5.0, 5.0, 5.0))
    quiet = ThresholdBandit(cfg).observe_suppressed(4, 0.65, real_fault=False)
    assert quiet.alpha == pytest.approx((1.0, 1.0, 1.5, 1.5, 1.5))
    assert quiet.beta == pytest.approx((2.0, 2.0, 1.0, 1.0, 1.0))
    assert missed.pulls == quiet.pulls == (0, 0, 0, 0, 1)


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(_observation, max_size=10),
    arm=st.integers(0, K - 1),
    score=_score,
    old=st.floats(0.0, 1.0),
    new=st.floats(0.0, 1.0),
    weight=st.floats(0.0, 3.0),
    new_weight=st.floats(0.0, 3.0),
)
def test_replace_surfaced_is_exact_on_every_arm(
    history: list[tuple[int, float, float, float]],
    arm: int,
    score: float,
    old: float,
    new: float,
    weight: float,
    new_weight: float,
) -> None:
    start = ThresholdBandit(BanditConfig(full_information=True))
    for a, sc, r, w in history:
        start = start.observe_surfaced(a, sc, r, w)
    swapped = start.observe_surfaced(arm, score, old, weight).replace_surfaced(arm, score, old, new, weight, new_weight)
    direct = start.observe_surfaced(arm, score, new, new_weight)
    assert np.allclose(swapped.alpha, direct.alpha, atol=1e-12)
    assert np.allclose(swapped.beta, direct.beta, atol=1e-12)
    assert swapped.pulls == direct.pulls


def test_credit_batch_broadcasts_over_bandits() -> None:
    cfg = BanditConfig()
    d_alpha, d_beta = credit_batch(np.array([0.55, 0.95]), np.array([0.0, 1.0]), 1.0, cfg)
    assert d_alpha.shape == d_beta.shape == (2, K)
    assert d_beta[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.0])  # τ = 0.5 surfaced an override
    assert d_alpha[0].tolist() == pytest.approx([0.0] + [cfg.quiet_weight] * 4)  # the others rightly suppressed it
    assert d_alpha[1].tolist() == pytest.approx([1.0] * K)  # every τ surfaced a liked one


# -- the ignorance prior ----------------------------------------------------------------------------------
def test_without_prior_events_every_arm_starts_at_the_flat_prior() -> None:
    cfg = BanditConfig(prior_alpha=2.0, prior_beta=3.0, miss_weight=10.0)
    assert cfg.arm_prior == ((2.0,) * K, (3.0,) * K)
    assert ThresholdBandit(cfg).alpha == (2.0,) * K and ThresholdBandit(cfg).beta == (3.0,) * K


def test_ignorance_prior_is_the_expected_credit_of_predictions_of_unknown_truth() -> None:
    """n pseudo-predictions at even odds with R uniform over [τ₁, 1]: the prior is their mean full-information
    credit (reward ½), computed here by averaging :meth:`ThresholdBandit.credit` over a fine grid of scores."""
    cfg = BanditConfig(miss_weight=10.0, quiet_weight=0.2, prior_events=2.0)
    flat = ThresholdBandit(replace(cfg, prior_events=0.0))
    scores = 0.5 + 0.5 * (np.arange(2000) + 0.5) / 2000  # midpoints of 2,000 equal slices of [0.5, 1]
    credits = [flat.credit(float(r), 0.5, 2.0) for r in scores]
    mean_alpha = np.mean([c[0] for c in credits], axis=0)
    mean_beta = np.mean([c[1] for c in credits], axis=0)
    prior_alpha, prior_beta = cfg.arm_prior
    np.testing.assert_allclose(np.asarray(prior_alpha) - 1.0, mean_alpha, atol=2e-3)
    np.testing.assert_allclose(np.asarray(prior_beta) - 1.0, mean_beta, atol=2e-3)
    # The lowest τ suppresses none of them: even odds; τ = 0.9 suppresses 80 %: α = 1 + ½·2·(0.2 + 0.8·0.2).
    assert (prior_alpha[0], prior_beta[0]) == pytest.approx((2.0, 2.0))
    assert (prior_alpha[-1], prior_beta[-1]) == pytest.approx((1.36, 1.0 + 0.2 + 0.8 * 10.0))


def test_ignorance_prior_tilts_toward_the_permissive_arm_only_when_a_miss_costs_more() -> None:
    costly = ThresholdBandit(BanditConfig(miss_weight=10.0, prior_events=2.0)).posterior_means()
    assert all(a > b for a, b in itertools.pairwise(costly))
    assert costly[0] == pytest.approx(0.5)
    even = ThresholdBandit(BanditConfig(miss_weight=1.0, quiet_weight=1.0, prior_events=2.0)).posterior_means()
    assert even == pytest.approx((0.5,) * K)


def test_with_no_evidence_the_ignorance_prior_rarely_draws_a_suppressing_threshold() -> None:
    rng = np.random.default_rng(4)
    flat = ThresholdBandit(BanditConfig(miss_weight=10.0))
    tilted = ThresholdBandit(BanditConfig(miss_weight=10.0, prior_events=2.0))
    flat_high = np.mean([flat.choose(rng) >= 3 for _ in range(4000)])
    tilted_high = np.mean([tilted.choose(rng) >= 3 for _ in range(4000)])
    assert 0.35 < flat_high < 0.45  # two arms of five: a coin flip over τ
    assert tilted_high < 0.15
    assert np.mean([tilted.choose(rng) == 0 for _ in range(4000)]) > 0.4


def test_ignorance_prior_is_where_reset_discount_and_batches_return() -> None:
    cfg = BanditConfig(miss_weight=10.0, prior_events=2.0, gamma=0.5)
    prior_alpha, prior_beta = cfg.arm_prior
    bandit = ThresholdBandit(cfg).observe_surfaced(0, 0.95, 1.0).observe_suppressed(4, 0.55, True)
    assert bandit.reset().alpha == prior_alpha and bandit.reset().beta == prior_beta
    for _ in range(60):  # evidence of weight 0 leaves only the discount: back to every arm's own prior
        bandit = bandit.update(0, 1.0, 0.0)
    np.testing.assert_allclose(bandit.alpha, prior_alpha, atol=1e-9)
    np.testing.assert_allclose(bandit.beta, prior_beta, atol=1e-9)
    alpha, beta = new_batch((3,), cfg)
    assert alpha.shape == (3, K) and np.all(alpha == np.asarray(prior_alpha)) and np.all(beta == np.asarray(prior_beta))


@given(
    arm=st.integers(0, 4),
    score=st.floats(0.0, 1.0),
    reward=st.sampled_from([0.0, 0.5, 1.0, 0.7, 0.3]),
    weight=st.floats(0.0, 1.0),
    miss=st.floats(0.0, 10.0),
    steps=st.integers(1, 5),
)
def test_observe_surfaced_is_credit_then_add_exactly(
    arm: int, score: float, reward: float, weight: float, miss: float, steps: int
) -> None:
    """The γ = 1 fast path of observe_surfaced gives the same floats as crediting every arm and adding."""
    bandit = ThresholdBandit(BanditConfig(miss_weight=miss, prior_events=1.0))
    slow = bandit
    for _ in range(steps):
        bandit = bandit.observe_surfaced(arm, score, reward, weight)
        d_alpha, d_beta = slow.credit(score, reward, weight)
        slow = slow._add(arm, d_alpha, d_beta)
    assert (bandit.alpha, bandit.beta, bandit.pulls) == (slow.alpha, slow.beta, slow.pulls)
    assert bandit == slow


# -- non-finite numbers are refused, never folded into the posteriors -------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_posterior_with_a_non_finite_parameter_is_refused(bad: float) -> None:
    with pytest.raises(InvalidRecord, match="posterior"):
        ThresholdBandit(alpha=(1.0, bad, 1.0, 1.0, 1.0))
    with pytest.raises(InvalidRecord, match="posterior"):
        ThresholdBandit(beta=(bad,) * K)


@pytest.mark.parametrize("full_information", [True, False])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_weight_is_refused(full_information: bool, gamma: float, bad: float) -> None:
    bandit = ThresholdBandit(BanditConfig(gamma=gamma, full_information=full_information))
    with pytest.raises(InvalidRecord, match="weight"):
        bandit.update(0, 1.0, bad)
    with pytest.raises(InvalidRecord, match="weight"):
        bandit.observe_surfaced(0, 0.7, 1.0, bad)
    with pytest.raises(InvalidRecord, match="weight"):
        bandit.replace_reward(0, 1.0, 0.0, 1.0, bad)
    with pytest.raises(InvalidRecord, match="weight"):
        bandit.replace_surfaced(0, 0.7, 1.0, 0.0, 1.0, bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5])
def test_a_score_outside_the_unit_interval_is_refused(bad: float) -> None:
    bandit = ThresholdBandit()
    with pytest.raises(InvalidRecord, match="score"):
        bandit.observe_surfaced(0, bad, 1.0)
    with pytest.raises(InvalidRecord, match="score"):
        bandit.observe_suppressed(4, bad, True)
    with pytest.raises(InvalidRecord, match="score"):
        bandit.replace_surfaced(0, bad, 1.0, 0.0)
