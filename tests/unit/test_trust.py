"""Trust calibration of feedback sources: outcome and peer agreement → per-operator weight."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.misalignment import EtaSchedule, KeyAlignment, update_key
from npo.trust import (
    OperatorTrust,
    TrustConfig,
    consensus,
    new_trust,
    outcome_agreement,
    peer_agreement,
    trust_weight,
    trust_weight_array,
    update_with_outcome,
    update_with_peers,
)
from npo.types import InvalidRecord

CONFIG = TrustConfig()


def _clicks(rng: np.random.Generator, real: np.ndarray, noise: float) -> np.ndarray:
    """Truthful codes (like 0 for a real fault, override 1 for a false alarm), flipped w.p. ``noise``."""
    truthful = np.where(real, 0.0, 1.0)
    flip = rng.random(real.shape) < noise
    return np.where(flip, 1.0 - truthful, truthful)


def _calibrate(noise: float, seed: int, n: int = 50) -> OperatorTrust:
    rng = np.random.default_rng(seed)
    real = rng.random(n) < 0.5
    trust = new_trust("op", CONFIG)
    for y, r in zip(_clicks(rng, real, noise), real, strict=True):
        trust = update_with_outcome(trust, float(y), bool(r), CONFIG)
    return trust


PRIOR_WEIGHT = (0.8 - 0.5) / (0.85 - 0.5)  # = 6/7 ≈ 0.857: prior mean 0.8 on the (½ → 0, 0.85 → 1) scale


def test_new_operator_starts_at_mean_0_8_and_weight_about_0_857() -> None:
    trust = new_trust("alice", CONFIG)
    assert trust.mean == pytest.approx(0.8)
    assert CONFIG.full_agreement == 0.85
    assert trust_weight(trust, CONFIG) == pytest.approx(PRIOR_WEIGHT)
    assert CONFIG.prior_weight == pytest.approx(PRIOR_WEIGHT)
    assert (trust.n_outcome, trust.n_peer) == (0, 0)


def test_weight_is_the_clipped_linear_map_from_half_to_full_agreement() -> None:
    uncapped = TrustConfig(min_weight_evidence=0.0)
    for agree, disagree, expected in [
        (85.0, 15.0, 1.0),  # exactly full_agreement
        (95.0, 5.0, 1.0),  # above it: clipped at 1
        (67.5, 32.5, 0.5),  # half way between ½ and 0.85
        (60.0, 40.0, (0.6 - 0.5) / 0.35),
        (50.0, 50.0, 0.0),  # chance
        (30.0, 70.0, 0.0),  # worse than chance: clipped at the floor
    ]:
        assert trust_weight(OperatorTrust("op", agree, disagree), uncapped) == pytest.approx(expected)
    strict = TrustConfig(min_weight_evidence=0.0, full_agreement=1.0)
    assert trust_weight(OperatorTrust("op", 75.0, 25.0), strict) == pytest.approx(0.5)
    assert TrustConfig(prior_agree=3.0, prior_disagree=1.0).prior_weight == pytest.approx(0.25 / 0.35)
    for bad in (0.5, 0.4, 1.01, float("nan")):
        with pytest.raises(InvalidRecord, match="full_agreement"):
            TrustConfig(full_agreement=bad)


def test_truthful_operator_gains_and_inverting_operator_loses_all_weight() -> None:
    for seed in range(20):
        truthful = _calibrate(0.0, seed)
        inverting = _calibrate(1.0, seed)
        assert truthful.n_outcome == 50
        assert trust_weight(truthful, CONFIG) == 1.0  # agreement 54/55 > 0.85 after > 10 units of evidence
        assert trust_weight(inverting, CONFIG) == 0.0  # agreement 4/55, far below chance


def test_noisy_operator_stays_in_between() -> None:
    # 30 % wrong answers: mean agreement ≈ (4 + 35) / 55 ≈ 0.71 → weight ≈ 0.60 (measured median 0.597).
    weights = np.array([trust_weight(_calibrate(0.3, seed), CONFIG) for seed in range(200)])
    truthful = min(trust_weight(_calibrate(0.0, seed), CONFIG) for seed in range(20))
    assert 0.5 < np.median(weights) < 0.7
    assert np.mean((weights > 0.2) & (weights < 0.95)) > 0.95
    assert np.median(weights) < truthful
    # An operator right 80 % of the time matches the prior's expectation: the weight stays about where it began.
    eighty = np.array([trust_weight(_calibrate(0.2, seed), CONFIG) for seed in range(200)])
    assert np.median(eighty) == pytest.approx(PRIOR_WEIGHT, abs=0.05)


def test_mean_weight_falls_as_noise_grows() -> None:
    means = [
        np.mean([trust_weight(_calibrate(noise, seed), CONFIG) for seed in range(100)])
        for noise in (0.1, 0.2, 0.3, 0.4)
    ]
    assert all(a > b + 0.05 for a, b in itertools.pairwise(means))


def test_chance_level_operator_gets_the_floor() -> None:
    trust = OperatorTrust("coin", agree=50.0, disagree=50.0)
    assert trust_weight(trust, CONFIG) == 0.0
    assert trust_weight(trust, TrustConfig(floor=0.1)) == pytest.approx(0.1)


def test_trust_is_earned_slowly_and_lost_fast() -> None:
    trust = new_trust("new", CONFIG)
    for _ in range(3):
        trust = update_with_outcome(trust, 0.0, True, CONFIG)  # three right answers: mean 7/8 → uncapped weight 1
    assert trust_weight(trust, TrustConfig(min_weight_evidence=0.0)) == 1.0
    assert trust_weight(trust, CONFIG) == pytest.approx(PRIOR_WEIGHT)  # capped: not enough evidence yet
    liar = new_trust("liar", CONFIG)
    liar = update_with_outcome(liar, 1.0, True, CONFIG)  # one wrong answer: mean 4/6 → weight ≈ 0.476 at once
    assert trust_weight(liar, CONFIG) == pytest.approx((4 / 6 - 0.5) / 0.35)
    for _ in range(2):
        liar = update_with_outcome(liar, 1.0, True, CONFIG)  # three wrong answers: mean 4/8 = chance
    assert trust_weight(liar, CONFIG) == 0.0
    for _ in range(10):
        trust = update_with_outcome(trust, 0.0, True, CONFIG)
    assert trust.agree + trust.disagree - 5.0 >= CONFIG.min_weight_evidence
    assert trust_weight(trust, CONFIG) == 1.0  # mean 17/18 with enough evidence: the cap is lifted


def test_outcome_agreement_scalar_and_array() -> None:
    assert outcome_agreement(0.0, True) == 1.0  # liked a real fault
    assert outcome_agreement(1.0, True) == 0.0  # overrode a real fault
    assert outcome_agreement(1.0, False) == 1.0  # overrode a false alarm
    assert outcome_agreement(0.5, False) == 0.5  # neutral: half right
    assert outcome_agreement(0.3, True) == pytest.approx(0.7)
    y = np.array([[0.0, 1.0], [0.5, 0.3]])
    truth = np.array([[True, True], [False, True]])
    assert np.allclose(outcome_agreement(y, truth), [[1.0, 0.0], [0.5, 0.7]])


def test_outcome_update_adds_one_unit_split_by_agreement() -> None:
    trust = update_with_outcome(new_trust("op", CONFIG), 0.5, True, CONFIG)
    assert trust.agree == pytest.approx(4.5)
    assert trust.disagree == pytest.approx(1.5)
    assert trust.n_outcome == 1


def test_peer_agreement_is_with_the_side_the_consensus_leans_to() -> None:
    assert peer_agreement(1.0, 0.9) == 1.0
    assert peer_agreement(1.0, 0.6) == 1.0  # a raw 1 − |y − m| would say 0.6
    assert peer_agreement(1.0, 0.5) == 1.0  # m = ½ counts as override-leaning
    assert peer_agreement(0.0, 0.5) == 0.0
    assert peer_agreement(0.0, 0.49) == 1.0
    assert peer_agreement(0.0, 0.2) == 1.0  # a key liked with some skips mixed in
    assert peer_agreement(1.0, 0.2) == 0.0
    assert peer_agreement(0.5, 0.1) == 0.5  # neutral: half right on either side
    assert peer_agreement(0.5, 0.9) == 0.5
    assert peer_agreement(0.3, 0.1) == pytest.approx(0.7)
    y = np.array([[1.0, 0.0], [0.5, 0.3]])
    m = np.array([[0.6, 0.5], [0.1, 0.8]])
    assert np.allclose(peer_agreement(y, m), [[1.0, 0.0], [0.5, 0.3]])


def test_peer_update_is_weighted_by_peer_weight() -> None:
    trust = new_trust("op", CONFIG)
    agreeing = update_with_peers(trust, 1.0, 0.6, CONFIG)  # override on an override-leaning key: full agreement
    assert agreeing.agree == pytest.approx(4.0 + 0.5 * 1.0)
    assert agreeing.disagree == pytest.approx(1.0)
    assert agreeing.n_peer == 1
    assert agreeing.n_outcome == 0
    neutral = update_with_peers(trust, 0.5, 0.2, CONFIG)
    assert neutral.agree == pytest.approx(4.0 + 0.5 * 0.5)
    assert neutral.disagree == pytest.approx(1.0 + 0.5 * 0.5)
    disagreeing = update_with_peers(trust, 0.0, 0.7, CONFIG)  # like on an override-leaning key
    assert disagreeing.agree == pytest.approx(4.0)
    assert disagreeing.disagree == pytest.approx(1.0 + 0.5)
    assert disagreeing.mean < trust.mean < agreeing.mean
    off = TrustConfig(peer_weight=0.0)
    assert update_with_peers(trust, 0.0, 1.0, off).mean == trust.mean


def test_operator_disagreeing_with_peers_loses_weight_slower_than_with_outcomes() -> None:
    by_peers = by_outcomes = new_trust("op", CONFIG)
    for _ in range(20):
        by_peers = update_with_peers(by_peers, 1.0, 0.0, CONFIG)
        by_outcomes = update_with_outcome(by_outcomes, 1.0, True, CONFIG)
    assert trust_weight(by_outcomes, CONFIG) <= trust_weight(by_peers, CONFIG)
    assert trust_weight(by_peers, CONFIG) == 0.0


def test_skips_never_update_trust() -> None:
    system = OperatorTrust("system", agree=4.0, disagree=1.0)
    with pytest.raises(InvalidRecord, match="skips"):
        update_with_outcome(system, 0.3, True, CONFIG)
    with pytest.raises(InvalidRecord, match="skips"):
        update_with_peers(system, 0.3, 0.5, CONFIG)


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_codes_outside_unit_interval_are_refused(bad: float) -> None:
    with pytest.raises(InvalidRecord):
        update_with_outcome(new_trust("op", CONFIG), bad, True, CONFIG)
    with pytest.raises(InvalidRecord):
        update_with_peers(new_trust("op", CONFIG), 0.5, bad, CONFIG)


def test_config_is_validated() -> None:
    with pytest.raises(InvalidRecord):
        TrustConfig(prior_agree=0.0)
    with pytest.raises(InvalidRecord):
        TrustConfig(peer_weight=1.5)
    with pytest.raises(InvalidRecord):
        TrustConfig(floor=1.0)


def test_vectorised_weight_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    agree = 4.0 + rng.random((20, 5)) * 60
    disagree = 1.0 + rng.random((20, 5)) * 60
    weights = trust_weight_array(agree, disagree, CONFIG)
    expected = [
        [trust_weight(OperatorTrust("op", float(a), float(d)), CONFIG) for a, d in zip(ra, rd, strict=True)]
        for ra, rd in zip(agree, disagree, strict=True)
    ]
    assert weights.shape == (20, 5)
    assert np.allclose(weights, expected)


def test_consensus_is_trust_weighted() -> None:
    assert consensus([0.0, 1.0], [1.0, 0.0]) == 0.0
    assert consensus([0.0, 1.0], [1.0, 3.0]) == pytest.approx(0.75)
    assert consensus([1.0], [0.0]) is None
    assert consensus([], []) is None
    with pytest.raises(InvalidRecord):
        consensus([0.5], [1.0, 2.0])


def test_one_inverting_operator_cannot_drag_a_key_alone() -> None:
    """After 50 outcomes each, a liar's overrides do not move a key that two truthful operators like."""
    rng = np.random.default_rng(42)
    real = rng.random(50) < 0.5
    honest = [new_trust(name, CONFIG) for name in ("a", "b")]
    liar = new_trust("mallory", CONFIG)
    for r in real:
        honest = [update_with_outcome(t, 0.0 if r else 1.0, bool(r), CONFIG) for t in honest]
        liar = update_with_outcome(liar, 1.0 if r else 0.0, bool(r), CONFIG)
    schedule = EtaSchedule(kind="constant", eta=0.2)
    key = KeyAlignment(key="disk_full|drain|host|high")
    for _ in range(30):  # the key's predictions are real faults: the truth is "like" (y = 0)
        for t in honest:
            key = update_key(key, 0.0, schedule, weight=trust_weight(t, CONFIG))
        key = update_key(key, 1.0, schedule, weight=trust_weight(liar, CONFIG))
    assert key.m < 0.05
    untrusted = KeyAlignment(key="disk_full|drain|host|high")
    for _ in range(30):
        for _t in honest:
            untrusted = update_key(untrusted, 0.0, schedule)
        untrusted = update_key(untrusted, 1.0, schedule)
    assert untrusted.m > 0.2  # without trust weights the liar holds the key at a third


# -- properties ------------------------------------------------------------------------------------
_update = st.tuples(st.booleans(), st.floats(0.0, 1.0), st.booleans(), st.floats(0.0, 1.0))


@settings(max_examples=200, deadline=None)
@given(
    updates=st.lists(_update, max_size=60),
    floor=st.floats(0.0, 0.9),
    peer_weight=st.floats(0.0, 1.0),
    evidence=st.floats(0.0, 50.0),
)
def test_weights_stay_in_unit_interval(
    updates: list[tuple[bool, float, bool, float]], floor: float, peer_weight: float, evidence: float
) -> None:
    config = TrustConfig(floor=floor, peer_weight=peer_weight, min_weight_evidence=evidence)
    trust = new_trust("op", config)
    for is_outcome, y, real, m in updates:
        trust = update_with_outcome(trust, y, real, config) if is_outcome else update_with_peers(trust, y, m, config)
        weight = trust_weight(trust, config)
        assert floor <= weight <= 1.0
        assert 0.0 <= trust.mean <= 1.0
    assert trust.n_outcome + trust.n_peer == len(updates)


@settings(max_examples=100, deadline=None)
@given(
    agree=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=10),
    disagree=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=10),
)
def test_vectorised_weights_stay_in_unit_interval(agree: list[float], disagree: list[float]) -> None:
    k = min(len(agree), len(disagree))
    weights = trust_weight_array(np.array(agree[:k]), np.array(disagree[:k]), CONFIG)
    assert np.all((weights >= 0.0) & (weights <= 1.0))


@pytest.mark.parametrize("peer_weight", [0.1, 0.3, 0.6])
def test_the_newcomer_cap_lifts_at_exactly_min_weight_evidence(peer_weight: float) -> None:
    # n peer comparisons at peer_weight w are n·w units of evidence; floats add 0.3 ten times to 2.9999999999999996
    config = TrustConfig(peer_weight=peer_weight, min_weight_evidence=3.0)
    trust = new_trust("op", config)
    needed = round(3.0 / peer_weight)
    for i in range(needed):
        assert trust_weight(trust, config) == pytest.approx(config.prior_weight)  # capped until then
        trust = update_with_peers(trust, 0.0, 0.1, config)  # a like on a liked-leaning key: agrees
        assert trust.n_peer == i + 1
    assert trust_weight(trust, config) == 1.0
    assert float(trust_weight_array(trust.agree, trust.disagree, config)) == 1.0
