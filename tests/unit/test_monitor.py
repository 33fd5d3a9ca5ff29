"""Meta-monitor: Page–Hinkley drift detection, trigger rules, F_monitor."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.monitor import (
    HeldAlarm,
    MonitorConfig,
    MonitorDecision,
    MonitorState,
    PageHinkleyConfig,
    PageHinkleyState,
    evaluate_monitor,
    expire_proposal,
    held_alarm_observe,
    held_alarm_persists,
    monitor_fidelity,
    observe_feedback,
    page_hinkley_alarm,
    page_hinkley_baseline,
    page_hinkley_step,
    page_hinkley_update,
    proposal_expires_at,
    record_ground_truth,
    resolve_proposal,
)
from npo.types import InvalidRecord

HOUR = 3600.0


def _run_batch(y: np.ndarray, config: PageHinkleyConfig) -> np.ndarray:
    """Alarm matrix (seeds, samples) of independent detectors fed the rows of ``y``."""
    seeds, samples = y.shape
    n = np.zeros(seeds, dtype=np.int64)
    mean = np.zeros(seeds)
    cum = np.zeros(seeds)
    low = np.zeros(seeds)
    alarms = np.zeros((seeds, samples), dtype=bool)
    for t in range(samples):
        n, mean, cum, low, alarms[:, t] = page_hinkley_step(n, mean, cum, low, y[:, t], config)
    return alarms


# -- Page–Hinkley ----------------------------------------------------------------------------------
def test_false_alarms_are_rare_on_stationary_bernoulli_streams() -> None:
    seeds = 300
    rows = [np.random.default_rng(seed).random(2000) < 0.2 for seed in range(seeds)]
    alarms = _run_batch(np.array(rows, dtype=np.float64), PageHinkleyConfig())
    false_alarm_rate = alarms.any(axis=1).mean()
    assert false_alarm_rate < 0.05


def test_a_jump_from_0_2_to_0_5_is_detected_within_about_100_samples() -> None:
    seeds, before, after = 300, 1000, 300
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        rows.append(np.concatenate([rng.random(before) < 0.2, rng.random(after) < 0.5]))
    alarms = _run_batch(np.array(rows, dtype=np.float64), PageHinkleyConfig())
    clean = ~alarms[:, :before].any(axis=1)
    post = alarms[clean, before:]
    detected = post.any(axis=1)
    delay = np.where(detected, post.argmax(axis=1), after)
    assert clean.mean() > 0.95
    assert np.median(delay) <= 100
    assert (delay <= 150).mean() >= 0.9


def test_a_decrease_of_the_mean_never_alarms() -> None:
    config = PageHinkleyConfig()
    rng = np.random.default_rng(7)
    stream = np.concatenate([rng.random(500) < 0.8, rng.random(1500) < 0.1]).astype(float)
    state = PageHinkleyState()
    for y in stream:
        state, alarm = page_hinkley_update(state, float(y), config)
        assert not alarm


def test_no_alarm_before_min_samples_even_on_all_overrides() -> None:
    config = PageHinkleyConfig(delta=0.0, threshold=0.5, min_samples=30)
    state = PageHinkleyState()
    # Start low so the statistic rises fast once overrides arrive.
    for _ in range(5):
        state, _alarm = page_hinkley_update(state, 0.0, config)
    alarms = []
    for _ in range(40):
        state, alarm = page_hinkley_update(state, 1.0, config)
        alarms.append(alarm)
    assert state.statistic > config.threshold
    assert not any(alarms[: 30 - 5 - 1])
    assert alarms[-1]


def test_alarm_is_level_triggered_and_readable_without_a_new_sample() -> None:
    config = PageHinkleyConfig()
    state = PageHinkleyState()
    for y in [0.0] * 200 + [1.0] * 60:
        state, alarm = page_hinkley_update(state, y, config)
    assert alarm
    assert page_hinkley_alarm(state, config)
    state, alarm = page_hinkley_update(state, 1.0, config)
    assert alarm  # stays up; nothing resets it


def test_scalar_and_vectorised_detectors_agree() -> None:
    config = PageHinkleyConfig(threshold=3.0)
    rng = np.random.default_rng(3)
    stream = np.concatenate([rng.random(100) < 0.2, rng.random(100) < 0.6]).astype(float)
    state = PageHinkleyState()
    n = np.zeros(1, dtype=np.int64)
    mean, cum, low = np.zeros(1), np.zeros(1), np.zeros(1)
    for y in stream:
        state, alarm = page_hinkley_update(state, float(y), config)
        n, mean, cum, low, alarms = page_hinkley_step(n, mean, cum, low, np.array([y]), config)
        assert alarms[0] == alarm
    assert n[0] == state.n
    assert mean[0] == pytest.approx(state.mean)
    assert cum[0] == pytest.approx(state.cumulative)
    assert low[0] == pytest.approx(state.minimum)


def test_vectorised_mask_leaves_other_detectors_untouched() -> None:
    config = PageHinkleyConfig()
    n = np.array([5, 5], dtype=np.int64)
    mean = np.array([0.2, 0.2])
    cum = np.array([-1.0, -1.0])
    low = np.array([-2.0, -2.0])
    out = page_hinkley_step(n, mean, cum, low, np.array([1.0, 1.0]), config, mask=np.array([True, False]))
    n2, mean2, cum2, low2, _alarm = out
    assert n2.tolist() == [6, 5]
    assert mean2[1] == 0.2
    assert cum2[1] == -1.0
    assert low2[1] == -2.0
    assert mean2[0] > 0.2
    assert n.tolist() == [5, 5]  # inputs not modified


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_page_hinkley_rejects_codes_outside_unit_interval(bad: float) -> None:
    with pytest.raises(InvalidRecord):
        page_hinkley_update(PageHinkleyState(), bad, PageHinkleyConfig())


def test_page_hinkley_config_is_validated() -> None:
    with pytest.raises(InvalidRecord):
        PageHinkleyConfig(threshold=0.0)
    with pytest.raises(InvalidRecord):
        PageHinkleyConfig(delta=-0.1)
    with pytest.raises(InvalidRecord):
        PageHinkleyConfig(min_samples=0)


# -- trigger rules ---------------------------------------------------------------------------------
def test_loss_above_threshold_with_enough_samples_triggers_and_opens_a_proposal() -> None:
    config = MonitorConfig()
    decision, state = evaluate_monitor(MonitorState(), config, 0.41, 200, False, now=1000.0)
    assert decision.trigger
    assert decision.reason == "L_align 0.41 > 0.30 over 200 answers"
    assert state.open_proposal
    assert state.last_trigger_at == 1000.0


def test_loss_at_or_below_threshold_does_not_trigger() -> None:
    config = MonitorConfig()
    for loss in (0.3, 0.1, 0.0):
        decision, state = evaluate_monitor(MonitorState(), config, loss, 200, False, now=0.0)
        assert not decision.trigger
        assert state == MonitorState()


def test_a_loss_at_the_threshold_up_to_rounding_does_not_trigger() -> None:
    # The mean of 60 skips (λ = 0.3) is 0.30000000000000004: "L_align 0.30 > 0.30" was a proposal, before.
    config = MonitorConfig()
    loss = float(np.full(60, 0.3).mean())
    assert loss > 0.3
    decision, state = evaluate_monitor(MonitorState(), config, loss, 60, False, now=0.0)
    assert not decision.trigger and state == MonitorState()
    assert decision.reason == "no trigger: L_align 0.30 ≤ 0.30 over 60 answers; no drift alarm"
    decision, _ = evaluate_monitor(MonitorState(), config, 0.3 + 1e-6, 60, False, now=0.0)
    assert decision.trigger


def test_a_window_of_skips_only_never_triggers_on_loss_but_a_drift_alarm_still_does() -> None:
    config = MonitorConfig()
    decision, state = evaluate_monitor(MonitorState(), config, 0.35, 40, False, now=0.0, n_skipped=40)
    assert not decision.trigger and state == MonitorState()
    assert decision.reason == (
        "no trigger: only skips in the window: nobody answered (L_align 0.35 > 0.30 over 40 skips); no drift alarm"
    )
    decision, _ = evaluate_monitor(MonitorState(), config, 0.35, 40, False, now=0.0, n_skipped=39)
    assert decision.trigger and decision.reason == "L_align 0.35 > 0.30 over 40 answers"
    decision, _ = evaluate_monitor(MonitorState(), config, 0.35, 40, True, now=0.0, n_skipped=40)
    assert decision.trigger and decision.reason == "Page-Hinkley drift alarm"
    with pytest.raises(InvalidRecord, match="n_skipped"):
        evaluate_monitor(MonitorState(), config, 0.35, 40, False, now=0.0, n_skipped=41)


def test_too_few_answers_do_not_trigger_on_loss() -> None:
    config = MonitorConfig()
    decision, state = evaluate_monitor(MonitorState(), config, 0.9, 29, False, now=0.0)
    assert not decision.trigger
    assert "29" in decision.reason
    assert not state.open_proposal
    decision, _ = evaluate_monitor(MonitorState(), config, 0.9, 30, False, now=0.0)
    assert decision.trigger


def test_empty_window_does_not_trigger_but_drift_alarm_does() -> None:
    config = MonitorConfig()
    decision, _ = evaluate_monitor(MonitorState(), config, None, 0, False, now=0.0)
    assert not decision.trigger
    decision, state = evaluate_monitor(MonitorState(), config, None, 0, True, now=0.0)
    assert decision.trigger
    assert decision.reason == "Page-Hinkley drift alarm"
    assert state.open_proposal


def test_both_causes_are_named() -> None:
    decision, _ = evaluate_monitor(MonitorState(), MonitorConfig(), 0.5, 100, True, now=0.0)
    assert decision.trigger
    assert "L_align 0.50 > 0.30" in decision.reason
    assert "Page-Hinkley" in decision.reason


def test_open_proposal_suppresses_every_trigger() -> None:
    config = MonitorConfig(cooldown_s=0.0)
    _, state = evaluate_monitor(MonitorState(), config, 0.5, 200, False, now=0.0)
    for t in (HOUR, 10 * HOUR, 1000 * HOUR):
        decision, after = evaluate_monitor(state, config, 0.9, 200, True, now=t)
        assert not decision.trigger
        assert decision.reason.startswith("suppressed: proposal already open")
        assert after == state


def test_cooldown_blocks_a_new_trigger_until_it_has_passed() -> None:
    config = MonitorConfig()  # 6 h
    _, state = evaluate_monitor(MonitorState(), config, 0.5, 200, False, now=0.0)
    state = resolve_proposal(state, approved=False)
    assert not state.open_proposal
    decision, after = evaluate_monitor(state, config, 0.5, 200, False, now=5 * HOUR)
    assert not decision.trigger
    assert decision.reason.startswith("suppressed: cooldown until 1970-01-01 06:00:00Z")
    assert after == state
    decision, after = evaluate_monitor(state, config, 0.5, 200, False, now=6 * HOUR)
    assert decision.trigger
    assert after.last_trigger_at == 6 * HOUR


def test_a_trigger_resets_the_drift_detector() -> None:
    config = MonitorConfig()
    state = MonitorState()
    alarm = False
    for y in [0.0] * 100 + [1.0] * 60:
        state, alarm = observe_feedback(state, y, config)
    assert alarm
    assert page_hinkley_alarm(state.ph, config.page_hinkley)
    decision, state = evaluate_monitor(state, config, 0.2, 160, alarm, now=0.0)
    assert decision.trigger
    assert state.ph == PageHinkleyState()


def test_resolve_without_open_proposal_is_a_no_op() -> None:
    state = MonitorState(last_trigger_at=5.0)
    assert resolve_proposal(state, approved=True) == state


@pytest.mark.parametrize(("loss", "n"), [(1.5, 100), (-0.1, 100), (math.nan, 100), (0.5, -1)])
def test_evaluate_rejects_bad_inputs(loss: float, n: int) -> None:
    with pytest.raises(InvalidRecord):
        evaluate_monitor(MonitorState(), MonitorConfig(), loss, n, False, now=0.0)


# -- F_monitor -------------------------------------------------------------------------------------
def test_fidelity_counts_matches_over_decisions() -> None:
    state = MonitorState()
    assert monitor_fidelity(state) is None
    for acted, ideal in [(True, True), (True, False), (False, False), (False, True), (False, False)]:
        state = record_ground_truth(state, acted=acted, ideal=ideal)
    assert state.decisions == 5
    assert state.matches == 3
    assert monitor_fidelity(state) == pytest.approx(0.6)


def test_production_flow_approve_and_dismiss() -> None:
    config = MonitorConfig(cooldown_s=0.0)
    state = MonitorState()
    decision, state = evaluate_monitor(state, config, 0.5, 200, False, now=0.0)
    state = record_ground_truth(resolve_proposal(state, approved=True), acted=decision.trigger, ideal=True)
    decision, state = evaluate_monitor(state, config, 0.5, 200, False, now=HOUR)
    state = record_ground_truth(resolve_proposal(state, approved=False), acted=decision.trigger, ideal=False)
    assert (state.matches, state.decisions) == (1, 2)
    assert monitor_fidelity(state) == 0.5
    assert not state.open_proposal


def test_monitor_with_drift_detector_has_high_fidelity_in_simulation() -> None:
    """Simulation-style G_t: the ideal response is to trigger exactly when the known drift has happened."""
    config = MonitorConfig(cooldown_s=0.0)
    scores = []
    for seed in range(20):
        rng = np.random.default_rng(500 + seed)
        state = MonitorState()
        drift_at, hourly = 1200, 40  # samples; one monitor run per 40 feedback events
        handled = False
        for t in range(2400):
            p = 0.5 if t >= drift_at else 0.2
            state, _ = observe_feedback(state, float(rng.random() < p), config)
            if (t + 1) % hourly == 0:
                alarm = page_hinkley_alarm(state.ph, config.page_hinkley)
                decision, state = evaluate_monitor(state, config, None, 0, alarm, now=float(t))
                ideal = t >= drift_at and not handled
                state = record_ground_truth(state, decision.trigger, ideal)
                if decision.trigger:
                    handled = handled or t >= drift_at
                    state = resolve_proposal(state, approved=ideal)
        fidelity = monitor_fidelity(state)
        assert fidelity is not None
        scores.append(fidelity)
    assert np.mean(scores) > 0.9


# -- properties ------------------------------------------------------------------------------------
_step = st.tuples(
    st.sampled_from(["evaluate", "resolve"]),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.integers(0, 400),
    st.booleans(),
    st.floats(0.0, 10 * HOUR),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(_step, max_size=40), cooldown=st.floats(0.0, 12 * HOUR))
def test_never_triggers_while_open_or_within_cooldown(
    steps: list[tuple[str, float | None, int, bool, float]], cooldown: float
) -> None:
    config = MonitorConfig(cooldown_s=cooldown)
    state = MonitorState()
    now = 0.0
    for action, loss, n, drift, dt in steps:
        now += dt
        if action == "resolve":
            state = resolve_proposal(state, approved=drift)
            assert not state.open_proposal
            continue
        before = state
        decision, state = evaluate_monitor(state, config, loss, n, drift, now=now)
        assert isinstance(decision, MonitorDecision)
        if before.open_proposal:
            assert not decision.trigger
            assert state == before
        if decision.trigger:
            assert before.last_trigger_at is None or now - before.last_trigger_at >= cooldown
            assert state.open_proposal
            assert state.last_trigger_at == now
        else:
            assert replace(state, ph=before.ph) == before


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=50))
def test_fidelity_is_a_fraction(pairs: list[tuple[bool, bool]]) -> None:
    state = MonitorState()
    for acted, ideal in pairs:
        state = record_ground_truth(state, acted, ideal)
    fidelity = monitor_fidelity(state)
    if not pairs:
        assert fidelity is None
    else:
        assert fidelity is not None
        assert 0.0 <= fidelity <= 1.0
        assert state.matches == sum(a == i for a, i in pairs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mean": float("nan")}, "ph.mean"),  # would silence the detector for good: every later C is NaN
        ({"cumulative": float("inf")}, "ph.cumulative"),
        ({"minimum": float("nan")}, "ph.minimum"),
        ({"n": -1}, "ph.n"),
        ({"n": float("nan")}, "ph.n"),
    ],
)
def test_a_page_hinkley_state_with_a_non_finite_number_is_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        PageHinkleyState(**{"n": 40, "mean": 0.2, **kwargs})  # type: ignore[arg-type]
    assert excinfo.value.field == field


# -- expiry ----------------------------------------------------------------------------------------
def test_an_expired_proposal_closes_without_counting_toward_f_monitor() -> None:
    config = MonitorConfig()
    assert config.proposal_expiry_s == 7 * 24 * HOUR
    assert proposal_expires_at(1000.0, config) == 1000.0 + 7 * 24 * HOUR
    _, state = evaluate_monitor(MonitorState(), config, 0.5, 200, False, now=0.0)
    state = record_ground_truth(resolve_proposal(state, approved=True), acted=True, ideal=True)
    _, state = evaluate_monitor(state, config, 0.5, 200, False, now=6 * HOUR)
    assert state.open_proposal
    expired = expire_proposal(state)
    assert not expired.open_proposal and (expired.matches, expired.decisions) == (1, 1)
    assert expired.last_trigger_at == 6 * HOUR and monitor_fidelity(expired) == 1.0
    assert expire_proposal(expired) == expired  # none open: nothing to do
    decision, _ = evaluate_monitor(expired, config, 0.5, 200, False, now=6 * HOUR + 7 * 24 * HOUR)
    assert decision.trigger  # the monitor may propose again


@pytest.mark.parametrize("expiry", [0.0, -1.0, math.inf, math.nan])
def test_the_expiry_must_be_a_positive_duration(expiry: float) -> None:
    with pytest.raises(InvalidRecord, match="proposal_expiry_s"):
        MonitorConfig(proposal_expiry_s=expiry)


# -- a drift alarm held back -----------------------------------------------------------------------
QUARTER = [1.0, 0.0, 0.0, 0.0]


def _detector(codes: list[float]) -> tuple[MonitorState, list[bool]]:
    state, alarms = MonitorState(), []
    for y in codes:
        state, alarm = observe_feedback(state, y, MonitorConfig())
        alarms.append(alarm)
    return state, alarms


def test_the_detector_forgets_a_change_that_persists() -> None:
    """Why a held-back alarm must be remembered: 100 likes, then a quarter of overrides for ever. The detector alarms
    and, once its running mean has caught up, stops alarming although the new level holds."""
    codes = [0.0] * 100 + QUARTER * 500
    state, alarms = _detector(codes)
    up = [i for i, a in enumerate(alarms) if a]
    assert up[0] == 236 and up[-1] == 884 and not alarms[-1]
    assert state.ph.statistic < MonitorConfig().page_hinkley.threshold
    assert page_hinkley_baseline(codes[: up[-1] + 1], MonitorConfig().page_hinkley) == pytest.approx(0.0, abs=0.01)
    assert page_hinkley_baseline([], MonitorConfig().page_hinkley) == 0.0


def test_a_held_alarm_stands_while_the_answers_after_it_stay_above_the_level_before() -> None:
    config = MonitorConfig()  # δ 0.05, min_samples 30
    held = HeldAlarm(raised_at=HOUR, baseline=0.1)
    assert held_alarm_persists(held, config)  # no answer after it yet
    for y in [0.0] * 29:
        held = held_alarm_observe(held, y, alarm=False)
    assert held.n_after == 29 and held_alarm_persists(held, config)  # too few to say the change is over
    held = held_alarm_observe(held, 0.0, alarm=False)
    assert not held_alarm_persists(held, config)  # 30 answers at 0.0: back to (below) the level before
    held = held_alarm_observe(held, 1.0, alarm=True)  # the detector alarms again: count again from there
    assert (held.n_after, held.sum_after, held.baseline, held.raised_at) == (0, 0.0, 0.1, HOUR)
    for y in QUARTER * 10:
        held = held_alarm_observe(held, y, alarm=False)
    assert held.mean_after == 0.25 and held_alarm_persists(held, config)  # 0.25 > 0.1 + δ
    at_baseline = HeldAlarm(raised_at=HOUR, baseline=0.2, n_after=40, sum_after=10.0)  # 0.25 = 0.2 + δ: not above
    assert not held_alarm_persists(at_baseline, config)


def test_a_held_alarm_triggers_once_the_cooldown_is_over_if_it_persists() -> None:
    config = MonitorConfig()  # cooldown 6 h
    _, state = evaluate_monitor(MonitorState(), config, 0.5, 200, False, now=0.0)
    state = resolve_proposal(state, approved=False)
    decision, _ = evaluate_monitor(state, config, 0.2, 200, True, now=2 * HOUR)
    assert not decision.trigger and decision.held_back
    assert decision.reason.startswith("suppressed: cooldown until 1970-01-01 06:00:00Z (Page-Hinkley drift alarm)")
    held = HeldAlarm(raised_at=2 * HOUR, baseline=0.0, n_after=200, sum_after=50.0)

    early, _ = evaluate_monitor(state, config, 0.25, 200, False, now=5 * HOUR, held_alarm=held)
    assert not early.trigger and early.held_back and "held back since 1970-01-01 02:00:00Z" in early.reason
    decision, after = evaluate_monitor(state, config, 0.25, 200, False, now=6 * HOUR, held_alarm=held)
    assert decision.trigger and not decision.held_back and after.ph == PageHinkleyState()
    assert decision.reason == (
        "Page-Hinkley drift alarm held back since 1970-01-01 02:00:00Z "
        "(the 200 answers after it average 0.25, above 0.00 before the change)"
    )
    gone = replace(held, sum_after=5.0)  # 0.025: back at the level before
    decision, _ = evaluate_monitor(state, config, 0.25, 200, False, now=6 * HOUR, held_alarm=gone)
    assert not decision.trigger and not decision.held_back
    assert decision.reason.endswith("; no drift alarm")
    few = HeldAlarm(raised_at=2 * HOUR, baseline=0.0, n_after=3, sum_after=0.0)
    decision, _ = evaluate_monitor(state, config, None, 0, False, now=6 * HOUR, held_alarm=few)
    assert decision.trigger and decision.reason.endswith("(only 3 answers after it)")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"raised_at": math.nan, "baseline": 0.1},
        {"raised_at": 0.0, "baseline": 1.5},
        {"raised_at": 0.0, "baseline": 0.1, "n_after": -1},
        {"raised_at": 0.0, "baseline": 0.1, "n_after": 2, "sum_after": 3.0},
    ],
)
def test_a_held_alarm_with_impossible_numbers_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord):
        HeldAlarm(**kwargs)


def test_reasons_show_l_align_and_theta_with_the_digits_the_comparison_needs() -> None:
    # Two decimals showed 0.3025 above θ = 0.3 as "0.30 > 0.30", and θ = 0.325 as 0.33.
    above, _ = evaluate_monitor(MonitorState(), MonitorConfig(), 0.3025, 200, False, now=0.0)
    assert above.reason == "L_align 0.302 > 0.30 over 200 answers"
    above, _ = evaluate_monitor(MonitorState(), MonitorConfig(), 0.3 + 1e-6, 60, False, now=0.0)
    assert above.reason == "L_align 0.300001 > 0.30 over 60 answers"
    odd, _ = evaluate_monitor(MonitorState(), MonitorConfig(loss_threshold=0.325), 0.3275, 200, False, now=0.0)
    assert odd.reason == "L_align 0.328 > 0.325 over 200 answers"
    below, _ = evaluate_monitor(MonitorState(), MonitorConfig(loss_threshold=0.325), 0.3249, 200, False, now=0.0)
    assert below.reason == "no trigger: L_align 0.325 ≤ 0.325 over 200 answers; no drift alarm"
    skips, _ = evaluate_monitor(MonitorState(), MonitorConfig(), 0.3025, 40, False, now=0.0, n_skipped=40)
    assert "(L_align 0.302 > 0.30 over 40 skips)" in skips.reason
