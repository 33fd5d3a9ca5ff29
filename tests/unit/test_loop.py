"""The loop (decide, record_feedback, record_outcome) over the reference InMemoryStore."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from npo.bandit import DEFAULT_THRESHOLDS, BanditConfig
from npo.feedback import FeedbackCodes
from npo.loop import (
    ConflictingPrediction,
    DecideResult,
    FeedbackResult,
    InMemoryStore,
    LoopConfig,
    NotSurfaced,
    OutcomeResult,
    UnknownPrediction,
    decide,
    record_feedback,
    record_outcome,
)
from npo.misalignment import EtaSchedule
from npo.policy import DEFAULT_POLICY_TEXT, Policy, parse_policy
from npo.scoring import scenario_key
from npo.trust import TrustConfig, trust_weight
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction, Verdict

# The default policy without the rules that read the store's world (blast radius, override cooldown, hourly cap):
# these tests are about the learning rules, and many predictions here share a cluster, a key and a time. Those rules
# in the loop: tests/unit/test_spe_in_the_loop.py, tests/integration/test_store_policy_equivalence.py.
POLICY = parse_policy(
    DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000")
    .replace("seconds = 3600", "seconds = 0")
    .replace(
        'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]', "disruptive_actions = []"
    )
)
NOW = 1_750_000_000.0
LIKE, OVERRIDE, NEUTRAL, SKIPPED = FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL, FeedbackKind.SKIPPED


def _pred(pid: str, *, confidence: float = 0.99, target: str = "r1-n1", action: str = "drain", **kw: Any) -> Prediction:
    return Prediction(
        id=pid, fault_type="disk_failure", target=target, action=action, confidence=confidence,
        received_at=kw.pop("received_at", NOW), **kw,
    )  # fmt: skip


def _decide(
    store: InMemoryStore,
    prediction: Prediction,
    *,
    seed: int = 0,
    policy: Policy = POLICY,
    rng: np.random.Generator | None = None,
) -> DecideResult:
    with store.transaction() as tx:
        return decide(
            tx,
            prediction,
            config=store.config,
            policy=policy,
            rng=rng or np.random.default_rng(seed),
            now=prediction.received_at,
        )


def _click(
    store: InMemoryStore, pid: str, operator: str, kind: FeedbackKind, request_id: str, at: float = NOW + 60
) -> FeedbackResult:
    with store.transaction() as tx:
        return record_feedback(tx, FeedbackEvent(pid, operator, kind, at, request_id), config=store.config)


def _skip(store: InMemoryStore, pid: str, at: float = NOW + 900) -> FeedbackResult:
    return _click(store, pid, "system", SKIPPED, f"skip:{pid}", at)


def _outcome(store: InMemoryStore, pid: str, real_fault: bool, at: float = NOW + 7200) -> OutcomeResult:
    with store.transaction() as tx:
        return record_outcome(tx, Outcome(pid, real_fault, at), config=store.config)


def _snapshot(store: InMemoryStore) -> tuple[object, ...]:
    return (
        store.keys,
        store.bandit,
        store.feedback_log,
        store.audit_log,
        store.trust,
        store.samples,
    )


def _surfaced(store: InMemoryStore, pid: str, **kw: Any) -> DecideResult:
    result = _decide(store, _pred(pid, **kw))
    assert result.decision.verdict is Verdict.SURFACE
    return result


# -- decide -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_a_confident_prediction_is_surfaced_on_a_fresh_store(seed: int) -> None:
    store = InMemoryStore()
    prediction = _pred("p1")
    result = _decide(store, prediction, seed=seed)
    d = result.decision
    assert not result.duplicate
    assert d.verdict is Verdict.SURFACE and d.surfaced
    assert d.rule == "all_rules_passed"
    assert d.key == scenario_key(prediction)
    assert (d.confidence, d.misalignment, d.score) == pytest.approx((0.99, 0.0, 0.99))
    assert d.arm is not None and d.threshold == DEFAULT_THRESHOLDS[d.arm]
    assert d.score >= d.threshold
    assert store.audit_log[-1][0:2] == ("decision", "p1")
    assert store.audit_log[-1][2]["verdict"] == "surface"


@pytest.mark.parametrize("seed", range(10))
def test_a_low_confidence_prediction_is_suppressed_by_the_threshold(seed: int) -> None:
    store = InMemoryStore()
    d = _decide(store, _pred("p1", confidence=0.45), seed=seed).decision
    assert d.verdict is Verdict.SUPPRESS and not d.surfaced
    assert d.rule == "threshold"
    assert d.arm is not None and d.threshold is not None
    assert f"τ={d.threshold:.2f}" in d.reason
    assert "R(s)=0.450" in d.reason


def test_a_blocked_prediction_never_consults_the_bandit() -> None:
    policy = parse_policy(
        DEFAULT_POLICY_TEXT.replace(
            "[rules.allowed_actions]\n", '[rules.allowed_actions]\ndisk_failure = ["investigate"]\n', 1
        )
    )
    store = InMemoryStore()
    rng = np.random.default_rng(3)
    rng_state = rng.bit_generator.state
    d = _decide(store, _pred("p1", confidence=0.99), policy=policy, rng=rng).decision
    assert d.verdict is Verdict.BLOCK and not d.surfaced
    assert d.rule == "allowed_actions"
    assert d.arm is None and d.threshold is None
    assert rng.bit_generator.state == rng_state  # no Thompson draw was taken
    kind, subject, detail, _ = store.audit_log[-1]
    assert (kind, subject, detail["verdict"], detail["rule"]) == ("decision", "p1", "block", "allowed_actions")
    with pytest.raises(NotSurfaced):
        _click(store, "p1", "alice", LIKE, "r1")
    # an allowed action of the same fault type goes through
    assert _decide(store, _pred("p2", action="investigate"), policy=policy).decision.verdict is Verdict.SURFACE


def test_duplicate_by_id_returns_the_first_decision_and_changes_nothing() -> None:
    store = InMemoryStore()
    first = _decide(store, _pred("p1", confidence=0.99)).decision
    before = _snapshot(store)
    again = _decide(store, _pred("p1", confidence=0.2, target="other-host", received_at=NOW + 99_999), seed=7)
    assert again.duplicate
    assert again.decision == first
    keys, bandit, feedback, audit, trust, samples = _snapshot(store)
    assert (keys, bandit, feedback, trust, samples) == (before[0], before[1], before[2], before[4], before[5])
    decisions = [line for line in store.audit_log if line[0] == "decision"]
    assert len(decisions) == 1  # no second decision was recorded
    assert audit[: len(before[3])] == before[3]


def test_an_id_sent_again_with_another_body_is_a_conflict_an_identical_one_is_not() -> None:
    """A duplicate by id says in which fields its body differs from the one on record; with ``refuse_conflicts``
    it raises, naming the id and the fields, and nothing is written (not even the duplicate's audit line)."""
    store = InMemoryStore()
    _decide(store, _pred("p1", confidence=0.99, labels={"cluster": "a"}))
    assert _decide(store, _pred("p1", confidence=0.99, labels={"cluster": "a"}, received_at=NOW + 5)).conflict == ()
    again = _decide(store, _pred("p1", confidence=0.2, target="other-host", labels={"cluster": "b"}))
    assert again.duplicate and again.conflict == ("target", "confidence", "labels")
    assert store.audit_log[-1][2] == {"first": "p1", "differs": ["target", "confidence", "labels"]}
    before = len(store.audit_log)
    changed = _pred("p1", action="reboot", labels={"cluster": "a"})
    rng = np.random.default_rng(0)
    with store.transaction() as tx, pytest.raises(ConflictingPrediction) as refused:
        decide(tx, changed, config=LoopConfig(), policy=POLICY, rng=rng, now=NOW, refuse_conflicts=True)
    assert (refused.value.prediction_id, refused.value.fields, refused.value.field) == ("p1", ("action",), "action")
    assert len(store.audit_log) == before
    # a duplicate by fingerprint (another id) has no body on record to differ from
    assert _decide(store, _pred("p2", confidence=0.5, labels={"cluster": "a"})).conflict == ()


def test_duplicate_by_fingerprint_within_the_window_only() -> None:
    store = InMemoryStore()
    first = _decide(store, _pred("p1")).decision
    before = _snapshot(store)
    window = store.config.dedupe_window_s
    dup = _decide(store, _pred("p2", received_at=NOW + window - 1))
    assert dup.duplicate and dup.decision == first
    assert _snapshot(store)[:3] == before[:3]
    with pytest.raises(UnknownPrediction):  # the duplicate was not recorded under its own id
        _click(store, "p2", "alice", LIKE, "r1")
    other_action = _decide(store, _pred("p3", action="reboot", received_at=NOW + 1))
    assert not other_action.duplicate
    later = _decide(store, _pred("p4", received_at=NOW + window + 1))
    assert not later.duplicate and later.decision.prediction_id == "p4"


# -- feedback -----------------------------------------------------------------------------------------------
def test_a_like_moves_m_down_and_the_arm_reward_up() -> None:
    store = InMemoryStore(LoopConfig(bandit=BanditConfig(full_information=False)))  # only the drawn arm learns
    d = _surfaced(store, "p1").decision
    assert d.arm is not None
    _click(store, "p1", "alice", OVERRIDE, "r1")
    m_after_override = store.keys[d.key].m
    mean_after_override = store.bandit.posterior_means()[d.arm]
    assert m_after_override > 0.0
    result = _click(store, "p1", "bob", LIKE, "r2")
    assert result.status == "recorded"
    assert result.key_state is not None and result.key_state == store.keys[d.key]
    assert store.keys[d.key].m < m_after_override
    assert store.keys[d.key].n == 2
    assert store.bandit.posterior_means()[d.arm] > mean_after_override
    assert store.bandit.pulls[d.arm] == 2
    others = [a for i, a in enumerate(store.bandit.alpha) if i != d.arm]
    assert others == [1.0] * (len(DEFAULT_THRESHOLDS) - 1)


def test_an_override_moves_m_up_by_eta_times_trust_weight() -> None:
    config = LoopConfig()
    store = InMemoryStore(config)
    d = _surfaced(store, "p1").decision
    _click(store, "p1", "alice", OVERRIDE, "r1")
    assert config.trust is not None
    expected = config.eta.rate(0) * config.trust.prior_weight * 1.0
    assert store.keys[d.key].m == pytest.approx(expected)
    assert store.keys[d.key].weight_sum == pytest.approx(config.trust.prior_weight)


def test_a_repeated_request_id_is_a_no_op() -> None:
    store = InMemoryStore()
    _surfaced(store, "p1")
    assert _click(store, "p1", "alice", LIKE, "req-1").status == "recorded"
    before = _snapshot(store)
    replay = _click(store, "p1", "alice", OVERRIDE, "req-1", at=NOW + 120)
    assert replay.status == "duplicate"
    assert replay.applied is None
    assert _snapshot(store) == before


def test_feedback_on_an_unknown_prediction_raises_and_changes_nothing() -> None:
    store = InMemoryStore()
    _surfaced(store, "p1")
    _click(store, "p1", "alice", LIKE, "req-1")
    before = _snapshot(store)
    with pytest.raises(UnknownPrediction) as excinfo:
        _click(store, "nope", "alice", LIKE, "req-2")
    assert excinfo.value.field == "prediction_id"
    assert _snapshot(store) == before
    assert _click(store, "p1", "bob", LIKE, "req-2").status == "recorded"  # the request id was not used up


def test_feedback_on_a_suppressed_prediction_raises_not_surfaced() -> None:
    store = InMemoryStore()
    assert _decide(store, _pred("p1", confidence=0.3)).decision.verdict is Verdict.SUPPRESS
    before = _snapshot(store)
    with pytest.raises(NotSurfaced, match="suppress"):
        _click(store, "p1", "alice", LIKE, "req-1")
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    ("first", "second"), [(OVERRIDE, LIKE), (LIKE, OVERRIDE), (NEUTRAL, LIKE), (LIKE, NEUTRAL), (LIKE, LIKE)]
)
@pytest.mark.parametrize("trust", [True, False])
@pytest.mark.parametrize("full_information", [True, False])
def test_a_second_click_by_the_same_person_replaces_the_first(
    first: FeedbackKind, second: FeedbackKind, trust: bool, full_information: bool
) -> None:
    bandit = BanditConfig(full_information=full_information)
    config = LoopConfig(bandit=bandit) if trust else LoopConfig(bandit=bandit, trust=None)
    twice, once = InMemoryStore(config), InMemoryStore(config)
    for store in (twice, once):
        _surfaced(store, "p0", target="r9-n9")
        _click(store, "p0", "carol", OVERRIDE, "warm-up")  # some history on the key and the bandit
        assert _decide(store, _pred("p1"), seed=1).decision.verdict is Verdict.SURFACE  # seed 1 draws τ ≤ R
    assert _click(twice, "p1", "alice", first, "r1").status == "recorded"
    result = _click(twice, "p1", "alice", second, "r2", at=NOW + 120)
    assert result.status == "replaced"
    assert result.applied is not None and result.applied.replaces == "r1"
    _click(once, "p1", "alice", second, "r2", at=NOW + 120)
    key = scenario_key(_pred("p1"))
    a, b = twice.keys[key], once.keys[key]
    assert a.m == pytest.approx(b.m, abs=1e-12)
    assert (a.n, a.weight_sum) == pytest.approx((b.n, b.weight_sum))
    assert np.allclose(twice.bandit.alpha, once.bandit.alpha, atol=1e-12)
    assert np.allclose(twice.bandit.beta, once.bandit.beta, atol=1e-12)
    assert twice.bandit.pulls == once.bandit.pulls
    log = [(f.event.request_id, f.event.kind) for f in twice.feedback_log if f.event.prediction_id == "p1"]
    assert log == [("r1", first), ("r2", second)]  # both answers stay in the log
    assert [s.y for s in twice.samples][-1] == FeedbackCodes().code(second)


@pytest.mark.parametrize("full_information", [True, False])
def test_a_click_after_a_skip_replaces_the_skip(full_information: bool) -> None:
    # every answer weighs 1, so "replaces" can be checked exactly
    config = LoopConfig(trust=None, bandit=BanditConfig(full_information=full_information))
    skipped, direct = InMemoryStore(config), InMemoryStore(config)
    for store in (skipped, direct):
        _surfaced(store, "p1")
    key = scenario_key(_pred("p1"))
    assert _skip(skipped, "p1").status == "recorded"
    assert skipped.keys[key].m == pytest.approx(config.eta.rate(0) * config.codes.skip_lambda)
    result = _click(skipped, "p1", "alice", LIKE, "r1", at=NOW + 1000)
    assert result.status == "replaced"
    assert result.applied is not None and result.applied.replaces == "skip:p1"
    _click(direct, "p1", "alice", LIKE, "r1", at=NOW + 1000)
    assert skipped.keys[key].m == pytest.approx(direct.keys[key].m, abs=1e-12)
    assert skipped.keys[key].n == 1  # the click took the skip's place, it did not add a vote
    assert np.allclose(skipped.bandit.alpha, direct.bandit.alpha)
    assert np.allclose(skipped.bandit.beta, direct.bandit.beta)
    assert skipped.bandit.alpha != config.bandit.prior_alpha  # the click was learned, not just the skip undone


# -- full information: every arm learns what it would have done ------------------------------------------------
def _arm_split(score: float) -> tuple[list[int], list[int]]:
    """Arms that would have surfaced (τ ≤ R) and suppressed (τ > R) a prediction of ``score``."""
    surfacing = [i for i, t in enumerate(DEFAULT_THRESHOLDS) if t <= score]
    return surfacing, [i for i in range(len(DEFAULT_THRESHOLDS)) if i not in surfacing]


@pytest.mark.parametrize(("kind", "y"), [(LIKE, 0.0), (OVERRIDE, 1.0), (NEUTRAL, 0.5)])
def test_with_full_information_an_answer_teaches_every_arm(kind: FeedbackKind, y: float) -> None:
    config = LoopConfig(trust=None)
    assert config.bandit.full_information  # the default
    store = InMemoryStore(config)
    d = _surfaced(store, "p1", confidence=0.75).decision  # R = 0.75: τ 0.5–0.7 surface it, 0.8 and 0.9 would not
    assert d.arm is not None and d.score == pytest.approx(0.75)
    _click(store, "p1", "alice", kind, "r1")
    surfacing, suppressing = _arm_split(d.score)
    assert surfacing == [0, 1, 2] and d.arm in surfacing
    cfg = config.bandit
    for i in surfacing:  # surfaced too: the same reward 1 − y
        assert (store.bandit.alpha[i], store.bandit.beta[i]) == pytest.approx((1.0 + (1 - y), 1.0 + y))
    for i in suppressing:  # would have suppressed it: right when overridden, a miss when liked
        assert (store.bandit.alpha[i], store.bandit.beta[i]) == pytest.approx(
            (1.0 + cfg.quiet_weight * y, 1.0 + cfg.miss_weight * (1 - y))
        )
    assert store.bandit.pulls == tuple(int(i == d.arm) for i in range(len(DEFAULT_THRESHOLDS)))


def test_with_full_information_the_outcome_of_a_suppressed_prediction_teaches_every_arm() -> None:
    config = LoopConfig(trust=None)
    seed = next(s for s in range(100) if _decide(InMemoryStore(config), _pred("p1", confidence=0.65), seed=s)
                .decision.verdict is Verdict.SUPPRESS)  # fmt: skip
    for real_fault in (True, False):
        store = InMemoryStore(config)
        d = _decide(store, _pred("p1", confidence=0.65), seed=seed).decision
        assert d.verdict is Verdict.SUPPRESS and d.arm is not None
        assert _outcome(store, "p1", real_fault=real_fault).missed_fault is real_fault
        surfacing, suppressing = _arm_split(d.score)
        assert surfacing == [0, 1] and d.arm in suppressing
        cfg = config.bandit
        for i in surfacing:  # would have surfaced it: a real fault is a like, a false alarm an override
            assert (store.bandit.alpha[i], store.bandit.beta[i]) == (1.0 + real_fault, 1.0 + (not real_fault))
        for i in suppressing:  # the miss term, as for the arm drawn
            expected = (1.0, 1.0 + cfg.miss_weight) if real_fault else (1.0 + cfg.quiet_weight, 1.0)
            assert (store.bandit.alpha[i], store.bandit.beta[i]) == pytest.approx(expected)


def test_without_full_information_only_the_drawn_arm_learns() -> None:
    config = LoopConfig(trust=None, bandit=BanditConfig(full_information=False))
    store = InMemoryStore(config)
    d = _surfaced(store, "p1", confidence=0.75).decision
    assert d.arm is not None
    _click(store, "p1", "alice", LIKE, "r1")
    changed = [i for i in range(len(DEFAULT_THRESHOLDS)) if (store.bandit.alpha[i], store.bandit.beta[i]) != (1, 1)]
    assert changed == [d.arm]


def test_a_click_after_a_skip_replaces_the_skip_with_trust_weights() -> None:
    store = InMemoryStore()
    _surfaced(store, "p1")
    key = scenario_key(_pred("p1"))
    _skip(store, "p1")
    m_skip = store.keys[key].m
    assert _click(store, "p1", "alice", LIKE, "r1", at=NOW + 1000).status == "replaced"
    assert store.keys[key].m < m_skip
    assert store.keys[key].n == 1


def test_a_skip_after_a_click_is_ignored() -> None:
    store = InMemoryStore()
    d = _surfaced(store, "p1").decision
    _click(store, "p1", "alice", LIKE, "r1")
    keys, bandit = store.keys, store.bandit
    result = _skip(store, "p1", at=NOW + 900)  # the skip timer fires after alice already answered
    assert store.keys[d.key].n == 1
    assert store.keys == keys
    assert store.bandit == bandit
    assert result.status == "duplicate"  # logged as ignored, nothing learned


def test_a_second_skip_is_ignored() -> None:
    store = InMemoryStore()
    _surfaced(store, "p1")
    _skip(store, "p1")
    keys, bandit = store.keys, store.bandit
    assert _click(store, "p1", "system", SKIPPED, "skip:p1:again", at=NOW + 1800).status == "duplicate"
    assert (store.keys, store.bandit) == (keys, bandit)


def test_a_distrusted_operator_cannot_move_m_by_answering_after_a_skip() -> None:
    """Weight 0 means "cannot move any key's m(k)" (npo/trust.py) — also when the answer comes after the skip."""
    store = InMemoryStore()
    config = store.config.trust
    assert config is not None
    for i in range(5):  # mallory likes five false alarms: agreement 4/10, weight 0
        _surfaced(store, f"q{i}", target=f"r5-n{i}")
        _click(store, f"q{i}", "mallory", LIKE, f"q{i}")
        _outcome(store, f"q{i}", real_fault=False)
    assert trust_weight(store.trust["mallory"], config) == 0.0
    # on the normal path her override moves nothing
    direct = _surfaced(store, "d1", target="r8-n1", action="reboot").decision
    _click(store, "d1", "mallory", OVERRIDE, "md")
    assert store.keys[direct.key].m == 0.0
    # after a skip, her override must not count more than the skip it replaces
    late = _surfaced(store, "x1", target="r7-n1", action="power_cycle").decision
    _skip(store, "x1")
    m_skip = store.keys[late.key].m
    _click(store, "x1", "mallory", OVERRIDE, "mx", at=NOW + 1000)
    assert store.keys[late.key].m <= m_skip + 1e-12


def test_re_clicking_one_recommendation_earns_no_extra_peer_trust() -> None:
    """One person, one recommendation, one vote: changing an answer must not farm peer agreement."""
    store = InMemoryStore()
    config = store.config.trust
    assert config is not None
    for i in range(store.config.peer_min_updates + 1):  # the key has a like-leaning consensus from peers
        _surfaced(store, f"w{i}", target=f"r1-n{i + 10}")
        _click(store, f"w{i}", f"peer{i}", LIKE, f"w{i}")
    _surfaced(store, "p1", target="r1-n99")
    for j in range(30):  # the same like, clicked again and again (each a new Slack request)
        _click(store, "p1", "alice", LIKE, f"a{j}", at=NOW + 60 + j)
    alice = store.trust["alice"]
    assert alice.n_peer <= 1
    assert trust_weight(alice, config) <= config.prior_weight + 1e-12  # no more say than a newcomer


# -- outcomes -------------------------------------------------------------------------------------------------
def test_outcome_of_a_suppressed_prediction_applies_the_miss_term() -> None:
    store = InMemoryStore()
    d = _decide(store, _pred("p1", confidence=0.3)).decision
    assert d.verdict is Verdict.SUPPRESS and d.arm is not None
    mean_before = store.bandit.posterior_means()[d.arm]
    result = _outcome(store, "p1", real_fault=True)
    assert result == OutcomeResult(recorded=True, missed_fault=True)
    assert store.bandit.posterior_means()[d.arm] < mean_before
    assert store.bandit.beta[d.arm] == pytest.approx(1.0 + store.config.bandit.miss_weight)
    assert store.keys[d.key].m == 0.0  # a real fault is the truth "like": m cannot drop below 0
    # idempotent: a second outcome (even a contradicting one) is ignored
    before = _snapshot(store)
    assert _outcome(store, "p1", real_fault=False, at=NOW + 9000) == OutcomeResult(recorded=False, missed_fault=False)
    assert _snapshot(store) == before


def test_a_quiet_expiry_of_a_suppressed_prediction_raises_the_arm_and_m() -> None:
    store = InMemoryStore()
    d = _decide(store, _pred("p1", confidence=0.3)).decision
    assert d.arm is not None
    mean_before = store.bandit.posterior_means()[d.arm]
    assert _outcome(store, "p1", real_fault=False).missed_fault is False
    assert store.bandit.posterior_means()[d.arm] > mean_before
    assert store.keys[d.key].m > 0.0  # false alarm: the truth is "override"


def test_outcome_of_a_surfaced_prediction_does_not_touch_the_bandit() -> None:
    store = InMemoryStore()
    _surfaced(store, "p1")
    before = store.bandit
    assert _outcome(store, "p1", real_fault=True) == OutcomeResult(recorded=True, missed_fault=False)
    assert store.bandit == before


def test_outcome_for_an_unknown_prediction_raises() -> None:
    store = InMemoryStore()
    with pytest.raises(UnknownPrediction):
        _outcome(store, "nope", real_fault=True)
    assert store.audit_log == []


def test_outcome_calibrates_the_trust_of_the_operators_who_answered() -> None:
    store = InMemoryStore()
    config = store.config.trust
    assert config is not None
    _surfaced(store, "p1")
    _click(store, "p1", "alice", LIKE, "r1")  # liked what turns out to be a false alarm
    _click(store, "p1", "bob", OVERRIDE, "r2")  # overrode it: right
    prior = store.trust["alice"]
    assert prior.n_outcome == 0
    _outcome(store, "p1", real_fault=False)
    alice, bob = store.trust["alice"], store.trust["bob"]
    assert (alice.n_outcome, bob.n_outcome) == (1, 1)
    assert alice.mean < prior.mean < bob.mean
    assert trust_weight(alice, config) < config.prior_weight
    assert trust_weight(bob, config) == pytest.approx(config.prior_weight)  # capped until enough evidence
    assert alice.disagree == pytest.approx(prior.disagree + 1.0)
    assert "system" not in store.trust


def test_outcome_ignores_skips_and_uses_the_effective_answer() -> None:
    store = InMemoryStore()
    _surfaced(store, "p1")
    _surfaced(store, "p2", target="r2-n2")
    _skip(store, "p2")
    _click(store, "p1", "alice", OVERRIDE, "r1")
    _click(store, "p1", "alice", LIKE, "r2", at=NOW + 120)  # alice changed her mind: like is her answer
    _outcome(store, "p1", real_fault=True)
    _outcome(store, "p2", real_fault=True)
    alice = store.trust["alice"]
    assert alice.n_outcome == 1
    assert alice.agree == pytest.approx(TrustConfig().prior_agree + 1.0)  # credited for the like, not the override
    assert "system" not in store.trust


# -- transactions -----------------------------------------------------------------------------------------------
class Boom(RuntimeError):
    pass


def _failing_unit_of_work(store: InMemoryStore, log_length_before: int) -> None:
    """Decide, click and resolve inside one transaction, then fail."""
    cfg = store.config
    with store.transaction() as tx:
        decide(tx, _pred("p3", target="r3-n3"), config=cfg, policy=POLICY, rng=np.random.default_rng(0), now=NOW)
        record_feedback(tx, FeedbackEvent("p3", "bob", OVERRIDE, NOW + 1, "r3"), config=cfg)
        record_feedback(tx, FeedbackEvent("p1", "alice", LIKE, NOW + 2, "r4"), config=cfg)  # a replacement
        record_feedback(tx, FeedbackEvent("p1", "carol", LIKE, NOW + 3, "r5"), config=cfg)
        record_outcome(tx, Outcome("p1", False, NOW + 4), config=cfg)
        record_outcome(tx, Outcome("p2", True, NOW + 5), config=cfg)
        assert len(store.feedback_log) > log_length_before  # the writes really happened inside the transaction
        raise Boom


def test_a_failure_inside_a_transaction_rolls_everything_back() -> None:
    store = InMemoryStore(LoopConfig(eta=EtaSchedule(kind="constant", eta=0.2)))
    _surfaced(store, "p1")
    _click(store, "p1", "alice", OVERRIDE, "r1")
    _decide(store, _pred("p2", confidence=0.3, target="r2-n2"))
    before = _snapshot(store)
    with pytest.raises(Boom):
        _failing_unit_of_work(store, len(before[2]))
    assert _snapshot(store) == before
    # nothing of the failed unit of work survives: ids and request ids are free again
    with pytest.raises(UnknownPrediction):
        _click(store, "p3", "bob", LIKE, "r3")
    assert _click(store, "p1", "carol", LIKE, "r5").status == "recorded"
    assert _outcome(store, "p1", real_fault=False).recorded
    assert not _decide(store, _pred("p3", target="r3-n3")).duplicate
