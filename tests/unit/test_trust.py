"""Trust calibration of feedback sources: outcome and peer agreement → per-operator weight."""

from __future__ import annotations

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


def test_new_operator_starts_at_mean_0_8_and_weight_0_6() -> None:
    trust = new_trust("alice", CONFIG)
    assert trust.mean == pytest.approx(0.8)
    assert trust_weight(trust, CONFIG) == pytest.approx(0.6)
    assert CONFIG.prior_weight == pytest.approx(0.6)
    assert (trust.n_outcome, trust.n_peer) == (0, 0)


def test_truthful_operator_gains_and_inverting_operator_loses_all_weight() -> None:
    for seed in range(20):
        truthful = _calibrate(0.0, seed)
        inverting = _calibrate(1.0, seed)
        assert truthful.n_outcome == 50
        assert trust_weight(truthful, CONFIG) > 0.8
        assert trust_weight(inverting, CONFIG) < 0.05


def test_noisy_operator_stays_in_between() -> None:
    weights = np.array([trust_weight(_calibrate(0.2, seed), CONFIG) for seed in range(200)])
    truthful = min(trust_weight(_calibrate(0.0, seed), CONFIG) for seed in range(20))
    assert 0.45 < np.median(weights) < 0.75
    assert np.mean((weights > 0.2) & (weights < 0.9)) > 0.95
    assert np.median(weights) < truthful


def test_chance_level_operator_gets_the_floor() -> None:
    trust = OperatorTrust("coin", agree=50.0, disagree=50.0)
    assert trust_weight(trust, CONFIG) == 0.0
    assert trust_weight(trust, TrustConfig(floor=0.1)) == pytest.approx(0.1)


def test_trust_is_earned_slowly_and_lost_fast() -> None:
    trust = new_trust("new", CONFIG)
    for _ in range(3):
        trust = update_with_outcome(trust, 0.0, True, CONFIG)  # three right answers
    assert trust_weight(trust, CONFIG) == pytest.approx(0.6)  # capped: not enough evidence yet
    liar = new_trust("liar", CONFIG)
    for _ in range(3):
        liar = update_with_outcome(liar, 1.0, True, CONFIG)  # three wrong answers
    assert trust_weight(liar, CONFIG) < 0.2
    for _ in range(10):
        trust = update_with_outcome(trust, 0.0, True, CONFIG)
    assert trust_weight(trust, CONFIG) > 0.8


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


def test_peer_update_is_weighted_by_peer_weight() -> None:
    trust = new_trust("op", CONFIG)
    agreeing = update_with_peers(trust, 1.0, 0.9, CONFIG)
    assert agreeing.agree == pytest.approx(4.0 + 0.5 * 0.9)
    assert agreeing.disagree == pytest.approx(1.0 + 0.5 * 0.1)
    assert agreeing.n_peer == 1
    assert agreeing.n_outcome == 0
    disagreeing = update_with_peers(trust, 0.0, 1.0, CONFIG)
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
        if is_outcome:
            trust = update_with_outcome(trust, y, real, config)
        else:
            trust = update_with_peers(trust, y, m, config)
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
