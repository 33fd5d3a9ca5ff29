"""What an answer may move when the person giving it is distrusted or changes it.

* A changed answer takes its peer credit with it: clicking the team's side first and then the other one must not
  keep the agreement of the side left (else "like, then override" escapes the peer check that catches a person
  who overrides everything against the team).
* An answer of weight 0 is no event: it does not discount the bandit's arms (γ < 1), as the vectorised bandit the
  simulation uses does not, and it does not count as evidence of its key, which a promoted model's prior of young
  keys reads (so distrusted clicks cannot pull a key's score away from the model's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from npo.bandit import BanditConfig, ThresholdBandit, observe_batch
from npo.loop import InMemoryStore, LoopConfig, LoopStore, decide, record_feedback
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.retrain import LogisticModel
from npo.scoring import N_FEATURES
from npo.trust import OperatorTrust, swap_peer_answer, trust_weight
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord, Prediction
from storage import SQLiteStore

POLICY = parse_policy(  # the default rules without the cool-down, the hourly cap and the blast radius
    DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000")
    .replace("seconds = 3600", "seconds = 0")
    .replace(
        'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]', "disruptive_actions = []"
    )
)
NOW = 1_750_000_000.0
LIKE, OVERRIDE = FeedbackKind.LIKE, FeedbackKind.OVERRIDE


def _prediction(i: int) -> Prediction:
    return Prediction(
        id=f"p{i}", fault_type="disk", target=f"r1-n{i}", action="drain", confidence=0.99, received_at=NOW + i
    )


def _mallory_against_the_team(flip: bool) -> tuple[float, float]:
    """An honest engineer likes every recommendation of one kind; Mallory overrides each — directly, or (``flip``)
    after first clicking Like. Mallory's final trust weight and the kind's m."""
    cfg = LoopConfig()
    store = InMemoryStore(cfg)
    rng = np.random.default_rng(0)
    for i in range(60):
        with store.transaction() as tx:
            decision = decide(tx, _prediction(i), config=cfg, policy=POLICY, rng=rng, now=NOW + i).decision
        if not decision.surfaced:
            continue
        answers = [("honest", LIKE, "h")] + ([("mallory", LIKE, "ma")] if flip else []) + [("mallory", OVERRIDE, "mb")]
        for operator, kind, prefix in answers:
            with store.transaction() as tx:
                record_feedback(tx, FeedbackEvent(f"p{i}", operator, kind, NOW + i + 0.5, f"{prefix}{i}"), config=cfg)
    assert cfg.trust is not None
    (key,) = store.keys.values()
    return trust_weight(store.trust["mallory"], cfg.trust), key.m


def test_changing_an_answer_does_not_keep_the_first_answers_peer_credit() -> None:
    weight_direct, m_direct = _mallory_against_the_team(flip=False)
    weight_flip, m_flip = _mallory_against_the_team(flip=True)
    assert weight_direct == 0.0 and m_direct < 0.05  # overriding against the team: caught by peers
    # The same effective answers, reached by clicking Like first, are trusted no more (before: 0.86, m 0.50).
    assert weight_flip <= weight_direct + 1e-9, (weight_flip, m_flip)
    assert m_flip < 0.05, m_flip


def test_swapping_peer_credit_moves_it_and_keeps_the_count() -> None:
    cfg = LoopConfig().trust
    assert cfg is not None
    trust = OperatorTrust("alice", agree=3.0, disagree=1.0, n_outcome=0, n_peer=4)
    moved = swap_peer_answer(trust, 0.0, 1.0, 0.1, cfg)  # agreed with a consensus of 0.1, now disagrees
    assert moved.n_peer == 4 and moved.agree + moved.disagree == pytest.approx(4.0)
    assert moved.agree < trust.agree and moved.disagree > trust.disagree
    back = swap_peer_answer(moved, 1.0, 0.0, 0.1, cfg)
    assert (back.agree, back.disagree) == pytest.approx((3.0, 1.0))  # changing back restores it
    assert swap_peer_answer(trust, 0.5, 0.5, 0.1, cfg) == trust  # the same code: nothing moves
    with pytest.raises(InvalidRecord):
        swap_peer_answer(trust, 0.0, 1.0, math.nan, cfg)


@pytest.mark.parametrize("full_information", [True, False])
def test_an_answer_of_weight_zero_does_not_discount_the_bandit(full_information: bool) -> None:
    cfg = BanditConfig(gamma=0.99, full_information=full_information)
    learnt = ThresholdBandit(cfg)
    for _ in range(200):
        learnt = learnt.observe_surfaced(0, 0.95, 1.0, 1.0)  # 200 trusted likes
    alpha, beta = np.array([learnt.alpha]), np.array([learnt.beta])
    after = learnt
    for _ in range(300):  # 300 overrides of weight 0
        after = after.observe_surfaced(0, 0.95, 0.0, 0.0)
        alpha, beta = observe_batch(alpha, beta, np.array([0]), np.array([0.95]), np.zeros(1), np.zeros(1), cfg)
    assert np.allclose(alpha[0], learnt.alpha) and np.allclose(beta[0], learnt.beta)  # the simulation's bandit
    assert after.alpha == pytest.approx(learnt.alpha) and after.beta == pytest.approx(learnt.beta)  # the loop's
    assert after.pulls[0] == learnt.pulls[0] + 300  # the pulls are still counted


MODEL = LogisticModel(1, (0.0,) * N_FEATURES, math.log(0.3 / 0.7), 0.0, 30)  # P(override) = 0.3 for anything


def m_after_distrusted_likes(store: LoopStore, cfg: LoopConfig, likes: int) -> float:
    """With a promoted model saying P(override) = 0.3 (already in ``store``), a distrusted Mallory likes ``likes``
    recommendations of one kind; the m the next one is scored with."""
    with store.transaction() as tx:
        tx.put_trust(OperatorTrust("mallory", agree=1.0, disagree=9.0))
    assert cfg.trust is not None
    rng = np.random.default_rng(0)
    for i in range(likes + 1):
        with store.transaction() as tx:
            decision = decide(tx, _prediction(i), config=cfg, policy=POLICY, rng=rng, now=NOW + i).decision
            assert trust_weight(tx.get_trust("mallory") or OperatorTrust("mallory"), cfg.trust) == 0.0
        if i == likes:
            return decision.misalignment
        if not decision.surfaced:  # a τ above R drawn: nobody sees it
            continue
        with store.transaction() as tx:
            record_feedback(tx, FeedbackEvent(f"p{i}", "mallory", LIKE, NOW + i + 0.5, f"r{i}"), config=cfg)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("likes", [0, 20])
def test_answers_of_weight_zero_do_not_move_a_score_off_the_models_prior(likes: int) -> None:
    store = InMemoryStore(LoopConfig())
    store.set_model(MODEL)
    assert m_after_distrusted_likes(store, store.config, likes) == pytest.approx(0.3)  # before, at 20: 0.079


def _alice_on_a_young_key(
    store: LoopStore, answers: list[FeedbackKind], *, forget_credit: Callable[[], None] | None = None
) -> OperatorTrust:
    """Four colleagues override four recommendations of one kind (the key has 4 < ``peer_min_updates`` updates);
    Alice then answers a fifth of that kind with ``answers`` in turn (``forget_credit`` runs after her first
    answer). Alice's trust tally."""
    cfg = store.config
    rng = np.random.default_rng(0)
    for i in range(5):
        with store.transaction() as tx:
            assert decide(tx, _prediction(i), config=cfg, policy=POLICY, rng=rng, now=NOW + i).decision.surfaced
    for i, operator in enumerate(["bob", "carol", "dave", "erin"]):
        with store.transaction() as tx:
            record_feedback(tx, FeedbackEvent(f"p{i}", operator, OVERRIDE, NOW + 10 + i, f"r{i}"), config=cfg)
    for j, kind in enumerate(answers):
        with store.transaction() as tx:
            record_feedback(tx, FeedbackEvent("p4", "alice", kind, NOW + 20 + j, f"a{j}"), config=cfg)
        if j == 0 and forget_credit is not None:
            forget_credit()
    with store.transaction() as tx:
        trust = tx.get_trust("alice")
    assert trust is not None
    return trust


def _store(kind: str, path: Path) -> LoopStore:
    return InMemoryStore(LoopConfig()) if kind == "memory" else SQLiteStore(path.with_suffix(".db"), LoopConfig())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_changing_an_answer_that_earned_no_peer_credit_moves_none(kind: str, tmp_path: Path) -> None:
    # Alice's first answer came while the key was too young to be a consensus: it earned no peer credit, so
    # changing it must not move any (before: Like then Override gave agree 4.5, disagree 0.5 with n_peer 0 —
    # agreement nobody compared, repeatable on every young key; Override then Like gave 3.5, 1.5).
    runs = {
        "direct": [OVERRIDE],
        "like, then override": [LIKE, OVERRIDE],
        "override, then like": [OVERRIDE, LIKE],
    }
    tallies = {
        name: _alice_on_a_young_key(_store(kind, tmp_path / name.replace(",", "").replace(" ", "-")), answers)
        for name, answers in runs.items()
    }
    assert {name: (t.agree, t.disagree, t.n_peer) for name, t in tallies.items()} == {
        name: pytest.approx((4.0, 1.0, 0)) for name in runs
    }


def test_an_answer_stored_before_credit_was_recorded_moves_credit_as_before(tmp_path: Path) -> None:
    # An answer from before schema m018 has no record of its credit (NULL): a change moves credit when the key has
    # enough updates at the change, the earlier rule, so upgrading changes no stored tally's meaning.
    store = SQLiteStore(tmp_path / "npo.db", LoopConfig())

    def forget() -> None:
        # The log is append-only (a trigger refuses updates): lifted for this one edit, as a row stored before the
        # column would read.
        with store.transaction() as tx:
            conn = tx.connection
            (guard,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'feedback_no_update'").fetchone()
            conn.execute("DROP TRIGGER feedback_no_update")
            assert conn.execute("UPDATE feedback SET peer_credited = NULL WHERE operator = 'alice'").rowcount == 1
            conn.execute(guard)

    legacy = _alice_on_a_young_key(store, [LIKE, OVERRIDE], forget_credit=forget)
    assert (legacy.agree, legacy.disagree, legacy.n_peer) == pytest.approx((4.5, 0.5, 0))
