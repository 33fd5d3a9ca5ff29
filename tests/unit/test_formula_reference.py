"""The numeric core against plain re-implementations of the formulas the README's "How it works" states.

Each test writes the documented formula out in a few lines of numpy (no code of ``npo`` in the reference) and
compares it with the module on fixed-seed random inputs and on the edge values: η at n = 0, λ at its bounds,
weights 0, empty windows, and NaN / infinite inputs, which are refused with an :class:`InvalidRecord` naming the
field.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from npo.alignment import AlignmentSample, alignment_loss, window, windowed_loss
from npo.bandit import BanditConfig, ThresholdBandit, credit_batch, observe_batch
from npo.feedback import FeedbackCodes, feedback_code
from npo.loop import InMemoryStore, LoopConfig, decide, record_feedback
from npo.misalignment import EtaSchedule, KeyAlignment, update_batch, update_key
from npo.monitor import (
    MonitorConfig,
    MonitorState,
    PageHinkleyConfig,
    PageHinkleyState,
    evaluate_monitor,
    monitor_fidelity,
    page_hinkley_update,
    record_ground_truth,
)
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.scoring import score
from npo.trust import (
    OperatorTrust,
    TrustConfig,
    new_trust,
    trust_weight,
    trust_weight_array,
    update_with_outcome,
    update_with_peers,
)
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord, Prediction

NAN, INF = math.nan, math.inf
KINDS = (FeedbackKind.OVERRIDE, FeedbackKind.LIKE, FeedbackKind.NEUTRAL, FeedbackKind.SKIPPED)


def ref_code(kind: FeedbackKind, lam: float) -> float:
    return {"override": 1.0, "like": 0.0, "neutral": 0.5, "skipped": lam}[kind.value]


# -- feedback codes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.2, 0.25, 0.3, 0.4])
def test_codes_are_override_1_like_0_neutral_half_skip_lambda(lam: float) -> None:
    codes = FeedbackCodes(lam)
    for kind in KINDS:
        assert codes.code(kind) == ref_code(kind, lam)
        assert codes.code(kind.value) == ref_code(kind, lam)
        assert feedback_code(kind, lam) == ref_code(kind, lam)
        assert codes.reward(kind) == pytest.approx(1.0 - ref_code(kind, lam), abs=0)


def test_default_lambda_is_0_3() -> None:
    assert FeedbackCodes().code(FeedbackKind.SKIPPED) == 0.3


@pytest.mark.parametrize("lam", [0.19999999, 0.40000001, 0.0, 1.0, -0.3, NAN, INF, -INF])
def test_lambda_outside_0_2_to_0_4_or_not_finite_is_refused(lam: float) -> None:
    with pytest.raises(InvalidRecord, match="skip_lambda"):
        FeedbackCodes(lam)


def test_unknown_feedback_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="maybe"):
        FeedbackCodes().code("maybe")


# -- step size and m(k) --------------------------------------------------------------------------------------
def ref_eta(n: float, kind: str, eta: float, n0: float, kappa: float) -> float:
    return eta if kind == "constant" else (n + n0) ** (-kappa)


@pytest.mark.parametrize(("n0", "kappa"), [(10.0, 0.6), (1.0, 1.0), (1.0, 0.51), (50.0, 0.75)])
def test_decaying_eta_is_n_plus_n0_to_the_minus_kappa(n0: float, kappa: float) -> None:
    schedule = EtaSchedule("decaying", n0=n0, kappa=kappa)
    ns = np.concatenate([[0.0, 0.5, 1.0], np.random.default_rng(1).uniform(0, 1e6, 200)])
    got = np.array([schedule.rate(n) for n in ns])
    want = (ns + n0) ** -kappa
    assert np.allclose(got, want, rtol=1e-12, atol=0)
    assert np.allclose(schedule.rates(ns), want, rtol=1e-12, atol=0)
    assert np.all((got > 0) & (got <= 1)) and np.all(np.diff(got[np.argsort(ns)]) <= 0)


def test_eta_at_n_0_is_n0_to_the_minus_kappa_and_the_default_is_decaying_10_0_6() -> None:
    assert EtaSchedule().kind == "decaying"
    assert EtaSchedule().rate(0) == pytest.approx(10**-0.6, rel=1e-15)
    assert EtaSchedule(n0=1.0).rate(0) == 1.0  # η₀ = 1 at the smallest n0: the first answer sets m to y
    assert EtaSchedule("constant", eta=0.1).rate(0) == 0.1 == EtaSchedule("constant", eta=0.1).rate(1e9)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "linear"}, "eta.kind"),
        ({"eta": 0.0}, "eta.eta"),
        ({"eta": 1.01}, "eta.eta"),
        ({"eta": NAN}, "eta.eta"),
        ({"n0": 0.5}, "eta.n0"),
        ({"n0": INF}, "eta.n0"),
        ({"n0": NAN}, "eta.n0"),
        ({"kappa": 0.5}, "eta.kappa"),
        ({"kappa": 1.01}, "eta.kappa"),
        ({"kappa": NAN}, "eta.kappa"),
    ],
)
def test_eta_schedule_refuses_values_outside_its_range(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        EtaSchedule(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize("kind", ["constant", "decaying"])
def test_m_follows_m_plus_eta_w_times_y_minus_m(kind: str) -> None:
    """m ← m + η_n·w·(y − m), η_n over the effective sample size Σw, from m₀ = 0, on random codes and weights."""
    rng = np.random.default_rng(7)
    schedule = EtaSchedule(kind, eta=0.1)  # type: ignore[arg-type]
    state = KeyAlignment("k")
    m, wsum = 0.0, 0.0
    for i in range(500):
        y = float(rng.choice([0.0, 1.0, 0.5, 0.3]))
        w = float(rng.choice([1.0, 0.0, 0.4, rng.uniform()]))
        eta = ref_eta(wsum, kind, 0.1, 10.0, 0.6)
        m = m + eta * w * (y - m)
        wsum += w
        state = update_key(state, y, schedule, weight=w, at=float(i))
        assert state.m == pytest.approx(m, abs=1e-12)
        assert state.weight_sum == pytest.approx(wsum, abs=1e-9)
        assert state.n == i + 1 and state.updated_at == float(i)
        assert 0.0 <= state.m <= 1.0


def test_a_weight_of_0_neither_moves_m_nor_uses_up_step_size() -> None:
    state = update_key(KeyAlignment("k"), 1.0, EtaSchedule(), weight=1.0)
    after = update_key(state, 0.0, EtaSchedule(), weight=0.0)
    assert (after.m, after.weight_sum) == (state.m, state.weight_sum)


def test_like_never_raises_m_and_override_never_lowers_it() -> None:
    rng = np.random.default_rng(3)
    for m0, n in zip(rng.uniform(0, 1, 200), rng.uniform(0, 100, 200), strict=True):
        state = KeyAlignment("k", m=float(m0), weight_sum=float(n))
        assert update_key(state, 0.0, EtaSchedule()).m <= m0
        assert update_key(state, 1.0, EtaSchedule()).m >= m0


def test_m_converges_to_the_mean_code_under_the_decaying_step() -> None:
    rng = np.random.default_rng(11)
    ys = rng.choice([0.0, 1.0], size=20_000, p=[0.7, 0.3])
    state = KeyAlignment("k")
    for y in ys:
        state = update_key(state, float(y), EtaSchedule())
    assert state.m == pytest.approx(0.3, abs=0.03)


def test_update_batch_is_update_key_elementwise() -> None:
    rng = np.random.default_rng(5)
    m = rng.uniform(0, 1, 64)
    wsum = rng.uniform(0, 50, 64)
    y = rng.choice([0.0, 0.3, 0.5, 1.0], 64)
    w = rng.uniform(0, 1, 64)
    mask = rng.uniform(size=64) < 0.7
    new_m, new_w = update_batch(m, wsum, y, mask, EtaSchedule(), w)
    for i in range(64):
        if mask[i]:
            ref = update_key(KeyAlignment("k", m=m[i], weight_sum=wsum[i]), y[i], EtaSchedule(), weight=w[i])
            assert (new_m[i], new_w[i]) == pytest.approx((ref.m, ref.weight_sum), abs=1e-12)
        else:
            assert (new_m[i], new_w[i]) == (m[i], wsum[i])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"y": NAN}, "y"),
        ({"y": 1.5}, "y"),
        ({"y": -INF}, "y"),
        ({"weight": NAN}, "weight"),
        ({"weight": 2.0}, "weight"),
        ({"at": NAN}, "at"),
        ({"at": INF}, "at"),
    ],
)
def test_update_key_refuses_codes_weights_and_times_out_of_range(kwargs: dict[str, float], field: str) -> None:
    args: dict[str, float] = {"y": 0.5, "weight": 1.0, "at": 0.0} | kwargs
    with pytest.raises(InvalidRecord) as info:
        update_key(KeyAlignment("k"), args["y"], EtaSchedule(), weight=args["weight"], at=args["at"])
    assert info.value.field == field


# -- the score ----------------------------------------------------------------------------------------------------
def test_score_is_p_times_one_minus_m() -> None:
    rng = np.random.default_rng(2)
    for p, m in zip(rng.uniform(0, 1, 500), rng.uniform(0, 1, 500), strict=True):
        assert score(float(p), float(m)) == pytest.approx(p * (1 - m), abs=1e-15)
    assert score(0.8, 0.0) == 0.8  # a new key (m₀ = 0) scores at the predictor's own confidence
    assert score(1.0, 1.0) == 0.0 and score(0.0, 0.0) == 0.0


@pytest.mark.parametrize(
    ("p", "m", "field"),
    [
        (NAN, 0.5, "confidence"),
        (INF, 0.5, "confidence"),
        (INF, 1.0, "confidence"),
        (0.5, NAN, "misalignment"),
        (0.5, -INF, "misalignment"),
        (0.0, INF, "misalignment"),
    ],
)
def test_score_refuses_nan_and_infinity(p: float, m: float, field: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        score(p, m)
    assert info.value.field == field


# -- the threshold bandit ------------------------------------------------------------------------------------
TAUS = np.array([0.5, 0.6, 0.7, 0.8, 0.9])


def ref_credit(score_: float, r: float, w: float, quiet: float, miss: float) -> tuple[np.ndarray, np.ndarray]:
    """Full information: τ ≤ R earns the surfaced reward r; τ > R the miss term (liked → miss, overridden → quiet)."""
    surfaced = score_ >= TAUS
    d_alpha = np.where(surfaced, w * r, w * quiet * (1 - r))
    d_beta = np.where(surfaced, w * (1 - r), w * miss * r)
    return d_alpha, d_beta


def test_thompson_choice_is_the_argmax_of_one_beta_draw_per_arm() -> None:
    rng = np.random.default_rng(0)
    for seed in range(200):
        alpha = tuple(rng.uniform(0.5, 30, 5))
        beta = tuple(rng.uniform(0.5, 30, 5))
        bandit = ThresholdBandit(alpha=alpha, beta=beta)
        want = int(np.argmax(np.random.default_rng(seed).beta(np.array(alpha), np.array(beta))))
        assert bandit.choose(np.random.default_rng(seed)) == want


def test_drawn_arm_update_is_alpha_plus_w_r_and_beta_plus_w_one_minus_r() -> None:
    """The paper's update (full information off): like = success, override = failure, fractional otherwise."""
    cfg = BanditConfig(full_information=False)
    rng = np.random.default_rng(4)
    bandit = ThresholdBandit(cfg)
    alpha, beta = np.ones(5), np.ones(5)
    for _ in range(300):
        arm = int(rng.integers(5))
        kind = KINDS[int(rng.integers(4))]
        r = 1.0 - ref_code(kind, 0.3)
        w = float(rng.choice([1.0, 0.0, rng.uniform()]))
        alpha[arm] += w * r
        beta[arm] += w * (1 - r)
        bandit = bandit.observe_surfaced(arm, float(rng.uniform()), FeedbackCodes().reward(kind), w)
    assert np.allclose(bandit.alpha, alpha) and np.allclose(bandit.beta, beta)


@pytest.mark.parametrize("gamma", [1.0, 0.99])
def test_full_information_credits_every_arm_by_what_its_tau_would_have_done(gamma: float) -> None:
    cfg = BanditConfig(gamma=gamma, miss_weight=3.0, quiet_weight=0.2)
    rng = np.random.default_rng(9)
    bandit = ThresholdBandit(cfg)
    alpha, beta = np.ones(5), np.ones(5)
    prior = np.ones(5)
    for _ in range(300):
        arm = int(rng.integers(5))
        s = float(rng.choice([rng.uniform(), 0.5, 0.9, 0.0, 1.0]))  # scores on the grid: τ ≤ R includes equality
        if rng.uniform() < 0.7:  # an answer to a surfaced prediction
            r = 1.0 - ref_code(KINDS[int(rng.integers(4))], 0.3)
            w = float(rng.choice([1.0, 0.0, rng.uniform()]))
            bandit = bandit.observe_surfaced(arm, s, r, w)
        else:  # the outcome of a suppressed one: surfacing a real fault earns 1, a false alarm 0
            real = bool(rng.uniform() < 0.5)
            r, w = (1.0 if real else 0.0), 1.0
            bandit = bandit.observe_suppressed(arm, s, real)
        if w > 0:  # an event of weight 0 is no event: not discounted either
            alpha = prior + gamma * (alpha - prior)
            beta = prior + gamma * (beta - prior)
        d_alpha, d_beta = ref_credit(s, r, w, cfg.quiet_weight, cfg.miss_weight)
        alpha, beta = alpha + d_alpha, beta + d_beta
        assert np.allclose(bandit.alpha, alpha, atol=1e-12) and np.allclose(bandit.beta, beta, atol=1e-12)


def test_miss_term_with_the_drawn_arm_only() -> None:
    """Suppressed and a real fault: reward 0 at ``miss_weight``; expired without one: reward 1 at ``quiet_weight``."""
    cfg = BanditConfig(full_information=False, miss_weight=3.0, quiet_weight=0.2)
    b = ThresholdBandit(cfg).observe_suppressed(2, 0.1, real_fault=True)
    assert b.alpha == (1, 1, 1, 1, 1) and b.beta == (1, 1, 4.0, 1, 1)
    b = ThresholdBandit(cfg).observe_suppressed(2, 0.1, real_fault=False)
    assert b.alpha == pytest.approx((1, 1, 1.2, 1, 1)) and b.beta == (1, 1, 1, 1, 1)
    zero = BanditConfig(full_information=False, miss_weight=0.0, quiet_weight=0.0, gamma=0.9)
    assert ThresholdBandit(zero).observe_suppressed(0, 0.1, True) == ThresholdBandit(zero)  # weight 0: no event


def test_batch_credit_and_observe_match_the_scalar_bandit() -> None:
    cfg = BanditConfig(gamma=0.98, miss_weight=2.0)
    rng = np.random.default_rng(12)
    scores, rewards, weights = rng.uniform(size=40), rng.choice([0, 0.5, 0.7, 1], 40), rng.choice([0, 0.3, 1], 40)
    arms = rng.integers(0, 5, 40)
    alpha = rng.uniform(1, 5, (40, 5))
    beta = rng.uniform(1, 5, (40, 5))
    d_alpha, d_beta = credit_batch(scores, rewards, weights, cfg)
    new_alpha, new_beta = observe_batch(alpha, beta, arms, scores, rewards, weights, cfg)
    for i in range(40):
        ref_a, ref_b = ref_credit(scores[i], rewards[i], weights[i], cfg.quiet_weight, cfg.miss_weight)
        assert np.allclose(d_alpha[i], ref_a) and np.allclose(d_beta[i], ref_b)
        one = ThresholdBandit(cfg, alpha=tuple(alpha[i]), beta=tuple(beta[i]))
        one = one.observe_surfaced(int(arms[i]), float(scores[i]), float(rewards[i]), float(weights[i]))
        assert np.allclose(one.alpha, new_alpha[i]) and np.allclose(one.beta, new_beta[i])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, NAN, 1.0, 1.0), "score"),
        ((0, 1.5, 1.0, 1.0), "score"),
        ((0, 0.5, NAN, 1.0), "reward"),
        ((0, 0.5, 1.0, NAN), "weight"),
        ((0, 0.5, 1.0, INF), "weight"),
        ((5, 0.5, 1.0, 1.0), "arm"),
    ],
)
def test_bandit_refuses_nan_and_out_of_range_events(args: tuple[int, float, float, float], field: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        ThresholdBandit().observe_surfaced(*args)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gamma": NAN}, "gamma"),
        ({"gamma": 0.0}, "gamma"),
        ({"prior_alpha": INF}, "prior"),
        ({"miss_weight": NAN}, "miss_weight"),
        ({"thresholds": (NAN,)}, "thresholds"),
        ({"prior_events": INF}, "prior_events"),
    ],
)
def test_bandit_config_refuses_nan_and_infinity(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        BanditConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


# -- alignment loss ---------------------------------------------------------------------------------------------
def test_alignment_loss_is_the_weighted_mean_code() -> None:
    rng = np.random.default_rng(6)
    for size in (1, 2, 17, 200):
        ys = rng.choice([0.0, 0.3, 0.5, 1.0], size)
        ws = rng.uniform(0, 1, size)
        assert alignment_loss(ys) == pytest.approx(sum(ys) / size, abs=1e-12)
        assert alignment_loss(ys, ws) == pytest.approx(float(np.sum(ws * ys) / np.sum(ws)), abs=1e-12)
        assert alignment_loss(list(ys), [1.0] * size) == pytest.approx(alignment_loss(ys), abs=1e-15)


def test_alignment_loss_of_nothing_or_of_zero_weight_is_none() -> None:
    assert alignment_loss([]) is None
    assert alignment_loss([0.5, 1.0], [0.0, 0.0]) is None
    assert windowed_loss([]) is None
    assert windowed_loss([AlignmentSample("k", 1.0, 0.0, weight=0.0)], weighted=True) is None
    assert windowed_loss([AlignmentSample("k", 1.0, 0.0)], key="other") is None


def test_window_is_key_and_channel_then_time_then_the_last_n() -> None:
    rng = np.random.default_rng(8)
    samples = [
        AlignmentSample(
            str(rng.choice(["a", "b"])), float(rng.choice([0, 0.5, 1])), float(t), channel=str(rng.choice(["x", "y"]))
        )
        for t in range(300)
    ]
    for key, channel, since, last_n in [("a", None, 100.0, 50), (None, "x", None, 200), (None, None, 250.0, 10)]:
        chosen = [s for s in samples if (key is None or s.key == key) and (channel is None or s.channel == channel)]
        chosen = [s for s in chosen if since is None or s.at >= since][-last_n:]
        assert window(samples, key=key, channel=channel, since=since, last_n=last_n) == chosen
        assert windowed_loss(samples, key=key, channel=channel, since=since, last_n=last_n) == pytest.approx(
            float(np.mean([s.y for s in chosen]))
        )


@pytest.mark.parametrize(("field", "value"), [("y", NAN), ("y", INF), ("weight", NAN), ("weight", -0.1)])
def test_alignment_sample_refuses_nan(field: str, value: float) -> None:
    args: dict[str, float] = {"y": 0.5, "at": 0.0, "weight": 1.0} | {field: value}
    with pytest.raises(InvalidRecord) as info:
        AlignmentSample("k", args["y"], args["at"], args["weight"])
    assert info.value.field == field


# -- the meta-monitor ---------------------------------------------------------------------------------------------
def ref_page_hinkley(ys: np.ndarray, delta: float, h: float, min_samples: int) -> np.ndarray:
    """Textbook Page–Hinkley for an increase: m_T = Σ_{t≤T} (y_t − ȳ_t − δ), M_T = min_{t≤T} m_t,
    alarm ⇔ T ≥ min_samples and m_T − M_T > h."""
    t = np.arange(1, ys.size + 1)
    running_mean = np.cumsum(ys) / t
    m = np.cumsum(ys - running_mean - delta)
    big_m = np.minimum.accumulate(np.minimum(m, 0.0))
    return (t >= min_samples) & (m - big_m > h)


@pytest.mark.parametrize(("delta", "h"), [(0.05, 15.0), (0.0, 2.0), (0.01, 5.0)])
def test_page_hinkley_alarm_matches_the_textbook_statistic(delta: float, h: float) -> None:
    cfg = PageHinkleyConfig(delta=delta, threshold=h, min_samples=30)
    rng = np.random.default_rng(13)
    for _ in range(5):
        ys = np.concatenate([rng.binomial(1, 0.2, 400), rng.binomial(1, 0.6, 400)]).astype(float)
        want = ref_page_hinkley(ys, delta, h, 30)
        state, got = PageHinkleyState(), []
        for y in ys:
            state, alarm = page_hinkley_update(state, float(y), cfg)
            got.append(alarm)
        assert got == list(want)
        assert want.any()  # the rise is detected


def ref_trigger(
    loss: float | None,
    n: int,
    n_skipped: int,
    drift: bool,
    open_: bool,
    since_trigger: float | None,
    cfg: MonitorConfig,
) -> bool:
    loss_cause = loss is not None and n >= cfg.min_samples and loss > cfg.loss_threshold + 1e-9 and n_skipped < n
    held_back = open_ or (since_trigger is not None and since_trigger < cfg.cooldown_s)
    return (loss_cause or drift) and not held_back


def test_trigger_rule_is_loss_above_theta_or_drift_unless_open_or_cooling_down() -> None:
    cfg = MonitorConfig()
    rng = np.random.default_rng(14)
    for _ in range(2000):
        n = int(rng.choice([0, 1, 29, 30, 31, 200]))
        loss = None if n == 0 else float(rng.choice([0.0, 0.3, 0.3 + 1e-12, 0.31, 1.0, rng.uniform()]))
        n_skipped = int(rng.integers(0, n + 1)) if rng.uniform() < 0.7 else n
        drift = bool(rng.uniform() < 0.3)
        open_ = bool(rng.uniform() < 0.2)
        since = None if rng.uniform() < 0.5 else float(rng.choice([0.0, 3600.0, 6 * 3600.0 - 1, 6 * 3600.0, 1e6]))
        state = MonitorState(open_proposal=open_, last_trigger_at=None if since is None else 1e9 - since)
        decision, new = evaluate_monitor(state, cfg, loss, n, drift, 1e9, n_skipped=n_skipped)
        assert decision.trigger == ref_trigger(loss, n, n_skipped, drift, open_, since, cfg)
        if decision.trigger:
            assert new.open_proposal and new.last_trigger_at == 1e9 and new.ph == PageHinkleyState()
        else:
            assert new == state


@pytest.mark.parametrize(("loss", "field"), [(NAN, "window_loss"), (INF, "window_loss"), (1.5, "window_loss")])
def test_monitor_refuses_a_nan_loss(loss: float, field: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        evaluate_monitor(MonitorState(), MonitorConfig(), loss, 40, False, 0.0)
    assert info.value.field == field


def test_f_monitor_is_the_share_of_decisions_matching_the_ideal() -> None:
    rng = np.random.default_rng(15)
    acted, ideal = rng.uniform(size=500) < 0.5, rng.uniform(size=500) < 0.6
    state = MonitorState()
    assert monitor_fidelity(state) is None  # nothing judged yet
    for a, g in zip(acted, ideal, strict=True):
        state = record_ground_truth(state, bool(a), bool(g))
    assert monitor_fidelity(state) == pytest.approx(float(np.mean(acted == ideal)), abs=1e-15)


# -- trust -------------------------------------------------------------------------------------------------------
def ref_trust_weight(agree: float, disagree: float, cfg: TrustConfig) -> float:
    w = min(1.0, max(cfg.floor, (agree / (agree + disagree) - 0.5) / (cfg.full_agreement - 0.5)))
    prior = min(1.0, max(cfg.floor, (cfg.prior_agree / (cfg.prior_agree + cfg.prior_disagree) - 0.5) / 0.35))
    evidence = agree + disagree - cfg.prior_agree - cfg.prior_disagree
    return min(w, max(prior, cfg.floor)) if evidence + 1e-9 < cfg.min_weight_evidence else w


def test_trust_weight_is_clip_of_agreement_above_chance() -> None:
    cfg = TrustConfig()
    assert cfg.prior_weight == pytest.approx(0.3 / 0.35)  # a newcomer: mean 0.8, weight ≈ 0.86
    rng = np.random.default_rng(16)
    trust = new_trust("ana", cfg)
    agree, disagree = 4.0, 1.0
    for _ in range(400):
        y = float(rng.choice([0.0, 0.5, 1.0]))
        if rng.uniform() < 0.6:
            real = bool(rng.uniform() < 0.5)
            a = 1.0 - abs(y - (0.0 if real else 1.0))  # agreement with the truthful code
            agree, disagree = agree + a, disagree + 1 - a
            trust = update_with_outcome(trust, y, real, cfg)
        else:
            m = float(rng.uniform())
            a = 1.0 - abs(y - (1.0 if m >= 0.5 else 0.0))  # agreement with the side the consensus leans to
            agree, disagree = agree + 0.5 * a, disagree + 0.5 * (1 - a)
            trust = update_with_peers(trust, y, m, cfg)
        assert (trust.agree, trust.disagree) == pytest.approx((agree, disagree))
        assert trust_weight(trust, cfg) == pytest.approx(ref_trust_weight(agree, disagree, cfg), abs=1e-12)
        assert float(trust_weight_array([agree], [disagree], cfg)[0]) == pytest.approx(
            ref_trust_weight(agree, disagree, cfg), abs=1e-12
        )


def test_an_operator_at_chance_or_worse_gets_weight_0() -> None:
    cfg = TrustConfig()
    for agree, disagree in [(10.0, 10.0), (5.0, 20.0), (0.0, 30.0)]:
        assert trust_weight(OperatorTrust("x", agree, disagree), cfg) == 0.0


# -- the loop applies the same formulas (npo.learning) ------------------------------------------------------------
def test_record_feedback_moves_m_and_every_arm_by_the_documented_rules() -> None:
    """Answers through the loop (no trust weighting): m(k) by m + η_n(y − m) with the feedback codes, every τ arm
    by the full-information credit of the decision's score; a skip after an answer changes nothing."""
    disruptive = 'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]'
    policy = parse_policy(  # without the rules that read the store's world (as tests/unit/test_loop.py)
        DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000")
        .replace("seconds = 3600", "seconds = 0")
        .replace(disruptive, "disruptive_actions = []")
    )
    config = LoopConfig(trust=None, codes=FeedbackCodes(0.25))
    store = InMemoryStore(config)
    rng = np.random.default_rng(17)
    m, wsum = 0.0, 0.0
    alpha, beta = np.ones(5), np.ones(5)
    now = 1_750_000_000.0
    answered = 0
    for i in range(400):
        prediction = Prediction(
            id=f"p{i}", fault_type="disk_failure", target=f"r{i}-n1", action="drain", confidence=0.95,
            received_at=now + i,
        )  # fmt: skip
        with store.transaction() as tx:
            decision = decide(tx, prediction, config=config, policy=policy, rng=rng, now=now + i).decision
        assert decision.score == pytest.approx(0.95 * (1 - m), abs=1e-12)
        if not decision.surfaced:
            continue
        kind = KINDS[int(rng.choice(4, p=[0.1, 0.7, 0.1, 0.1]))]  # mostly likes: the key keeps surfacing
        operator = "system" if kind is FeedbackKind.SKIPPED else "ana"
        with store.transaction() as tx:
            event = FeedbackEvent(f"p{i}", operator, kind, now + i + 1, f"r{i}")
            record_feedback(tx, event, config=config)
        y = ref_code(kind, 0.25)
        m += (wsum + 10) ** -0.6 * (y - m)
        wsum += 1
        d_alpha, d_beta = ref_credit(decision.score, 1 - y, 1.0, 0.2, 1.0)
        alpha, beta = alpha + d_alpha, beta + d_beta
        answered += 1
        if kind is not FeedbackKind.SKIPPED:  # the timeout's skip arrives late: it carries nothing
            with store.transaction() as tx:
                skip = FeedbackEvent(f"p{i}", "system", FeedbackKind.SKIPPED, now + i + 2, f"s{i}")
                assert record_feedback(tx, skip, config=config).status == "duplicate"
        with store.transaction() as tx:
            key = tx.get_key(decision.key)
            bandit = tx.get_bandit()
        assert key.m == pytest.approx(m, abs=1e-12) and key.n == answered
        assert np.allclose(bandit.alpha, alpha) and np.allclose(bandit.beta, beta)
    assert answered > 30
