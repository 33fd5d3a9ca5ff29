"""Learned misalignment m(k): the stochastic-approximation rule m ← m + η·w·(y − m)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.misalignment import (
    EtaSchedule,
    KeyAlignment,
    replace_feedback,
    reset_key,
    step,
    update_batch,
    update_key,
)
from npo.types import InvalidRecord

_schedule = st.one_of(
    st.builds(EtaSchedule, kind=st.just("constant"), eta=st.floats(0.001, 1.0)),
    st.builds(EtaSchedule, kind=st.just("decaying"), n0=st.floats(1.0, 100.0), kappa=st.floats(0.51, 1.0)),
)
_state = st.builds(KeyAlignment, key=st.just("k"), m=st.floats(0.0, 1.0), n=st.integers(0, 1000),
                   weight_sum=st.floats(0.0, 1000.0))  # fmt: skip


# -- properties --------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(state=_state, schedule=_schedule, weight=st.floats(0.0, 1.0))
def test_a_like_never_raises_m_and_an_override_never_lowers_it(
    state: KeyAlignment, schedule: EtaSchedule, weight: float
) -> None:
    liked = update_key(state, 0.0, schedule, weight=weight)
    overridden = update_key(state, 1.0, schedule, weight=weight)
    assert liked.m <= state.m
    assert overridden.m >= state.m
    assert 0.0 <= liked.m <= 1.0 and 0.0 <= overridden.m <= 1.0
    assert liked.n == overridden.n == state.n + 1
    assert liked.weight_sum == pytest.approx(state.weight_sum + weight)


@settings(max_examples=200, deadline=None)
@given(
    schedule=_schedule,
    events=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)), max_size=50),
)
def test_m_stays_in_unit_interval_and_moves_toward_y(schedule: EtaSchedule, events: list[tuple[float, float]]) -> None:
    state = KeyAlignment("k")
    for y, w in events:
        new = update_key(state, y, schedule, weight=w)
        assert 0.0 <= new.m <= 1.0
        assert abs(new.m - y) <= abs(state.m - y) + 1e-12  # never overshoots past y, never moves away
        state = new


@settings(max_examples=200, deadline=None)
@given(state=_state, schedule=_schedule, y=st.floats(0.0, 1.0))
def test_weight_zero_changes_nothing_but_the_count(state: KeyAlignment, schedule: EtaSchedule, y: float) -> None:
    new = update_key(state, y, schedule, weight=0.0, at=5.0)
    assert new.m == state.m
    assert new.weight_sum == state.weight_sum  # a distrusted source uses up no step size either
    assert new.n == state.n + 1


@settings(max_examples=400, deadline=None)
@given(
    state=_state,
    schedule=_schedule,
    y1=st.floats(0.0, 1.0),
    y2=st.floats(0.0, 1.0),
    weights=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0) | st.none()),
)
def test_replace_feedback_is_exact_when_nothing_intervened(
    state: KeyAlignment, schedule: EtaSchedule, y1: float, y2: float, weights: tuple[float, float | None]
) -> None:
    """A second click (the same weight, ``None``) or a click replacing a skip (another weight): as if only the
    replacing answer had come; one person, one vote."""
    weight, new_weight = weights
    first = update_key(state, y1, schedule, weight=weight, at=1.0)
    replaced = replace_feedback(
        first, y1, y2, schedule, old_n=state.weight_sum, weight=weight, new_weight=new_weight, at=2.0
    )
    direct = update_key(state, y2, schedule, weight=weight if new_weight is None else new_weight, at=2.0)
    if new_weight is None or schedule.rate(state.weight_sum) * weight < 1.0 - 1e-6:  # else m was erased
        assert replaced.m == pytest.approx(direct.m, abs=1e-9)
    assert replaced.n == direct.n
    assert replaced.weight_sum == pytest.approx(direct.weight_sum)
    assert replaced.updated_at == 2.0


def test_a_distrusted_click_replacing_a_skip_leaves_m_as_before_the_skip() -> None:
    schedule = EtaSchedule()
    state = update_key(KeyAlignment(key="k"), 0.0, schedule, at=0.0)  # some history
    skipped = update_key(state, 0.3, schedule, weight=1.0, at=1.0)
    replaced = replace_feedback(skipped, 0.3, 1.0, schedule, old_n=state.weight_sum, weight=1.0, new_weight=0.0)
    assert replaced.m == pytest.approx(state.m, abs=1e-12) and skipped.m != state.m


@settings(max_examples=200, deadline=None)
@given(
    schedule=_schedule,
    m=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
    data=st.data(),
)
def test_update_batch_agrees_with_update_key(schedule: EtaSchedule, m: list[float], data: st.DataObject) -> None:
    k = len(m)
    ws = data.draw(st.lists(st.floats(0.0, 200.0), min_size=k, max_size=k))
    ys = data.draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
    mask = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
    weights = data.draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
    new_m, new_w = update_batch(np.array(m), np.array(ws), np.array(ys), np.array(mask), schedule, np.array(weights))
    for i in range(k):
        state = KeyAlignment("k", m=m[i], weight_sum=ws[i])
        expected = update_key(state, ys[i], schedule, weight=weights[i]) if mask[i] else state
        assert new_m[i] == pytest.approx(expected.m, abs=1e-12)
        assert new_w[i] == pytest.approx(expected.weight_sum, abs=1e-12)


def test_update_batch_with_scalar_weight_over_a_stream() -> None:
    rng = np.random.default_rng(3)
    schedule = EtaSchedule()
    keys = [KeyAlignment(f"k{i}") for i in range(8)]
    m = np.zeros(8)
    w = np.zeros(8)
    for _ in range(200):
        y = (rng.random(8) < np.linspace(0.1, 0.9, 8)).astype(np.float64)
        mask = rng.random(8) < 0.7
        m, w = update_batch(m, w, y, mask, schedule, 0.8)
        keys = [update_key(s, float(y[i]), schedule, weight=0.8) if mask[i] else s for i, s in enumerate(keys)]
    assert np.allclose(m, [s.m for s in keys], atol=1e-12)
    assert np.allclose(w, [s.weight_sum for s in keys], atol=1e-9)


# -- closed forms --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("eta", "p"), [(0.05, 0.3), (0.1, 0.5), (0.2, 0.8)])
def test_constant_eta_steady_state_std_matches_closed_form(eta: float, p: float) -> None:
    """std(m) → σ·√(η / (2 − η)) for i.i.d. Bernoulli(p) feedback, σ² = p(1 − p)."""
    schedule = EtaSchedule(kind="constant", eta=eta)
    rng = np.random.default_rng(12345)
    ys = (rng.random(60_000) < p).astype(float).tolist()
    state = KeyAlignment("k", m=p)
    trace = []
    for y in ys:
        state = update_key(state, y, schedule)
        trace.append(state.m)
    tail = np.array(trace[1000:])
    expected = math.sqrt(p * (1 - p)) * math.sqrt(eta / (2 - eta))
    assert tail.std() == pytest.approx(expected, rel=0.05)
    assert tail.mean() == pytest.approx(p, abs=0.02)


def test_constant_eta_steady_state_std_across_independent_keys() -> None:
    """The same closed form, measured across 4,000 independent keys after 300 steps (vectorised path)."""
    eta, p = 0.1, 0.4
    schedule = EtaSchedule(kind="constant", eta=eta)
    rng = np.random.default_rng(7)
    m, w = np.full(4000, p), np.zeros(4000)
    mask = np.ones(4000, dtype=bool)
    for _ in range(300):
        m, w = update_batch(m, w, (rng.random(4000) < p).astype(float), mask, schedule)
    expected = math.sqrt(p * (1 - p) * eta / (2 - eta))
    assert m.std() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("n", [0, 1, 5, 20])
def test_weight_of_a_past_value_decays_as_one_minus_eta_to_the_n(n: int) -> None:
    eta = 0.15
    schedule = EtaSchedule(kind="constant", eta=eta)
    state = update_key(KeyAlignment("k"), 1.0, schedule)  # one override: m = η
    for _ in range(n):
        state = update_key(state, 0.0, schedule)  # n likes
    assert state.m == pytest.approx(eta * (1 - eta) ** n, rel=1e-12)


@pytest.mark.parametrize(("kappa", "tolerance"), [(1.0, 0.02), (0.6, 0.06)])
def test_decaying_eta_converges_to_the_mean(kappa: float, tolerance: float) -> None:
    schedule = EtaSchedule(kind="decaying", n0=10.0, kappa=kappa)
    errors = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        p = 0.3
        state = KeyAlignment("k")
        for y in (rng.random(20_000) < p).astype(float).tolist():
            state = update_key(state, y, schedule)
        errors.append(abs(state.m - p))
    assert max(errors) < tolerance


def test_decaying_eta_settles_and_constant_eta_keeps_jittering() -> None:
    """Robbins–Monro: the late trajectory of the decaying schedule is far calmer than constant η = 0.1."""
    rng = np.random.default_rng(11)
    ys = (rng.random(20_000) < 0.5).astype(float).tolist()
    traces = {}
    for kind in ("constant", "decaying"):
        schedule = EtaSchedule(kind=kind, eta=0.1, kappa=0.8)  # type: ignore[arg-type]
        state = KeyAlignment("k")
        trace = []
        for y in ys:
            state = update_key(state, y, schedule)
            trace.append(state.m)
        traces[kind] = np.array(trace[-5000:])
    assert traces["decaying"].std() < traces["constant"].std() / 5


def test_eta_rates() -> None:
    assert EtaSchedule(kind="constant", eta=0.2).rate(1e6) == 0.2
    s = EtaSchedule(kind="decaying", n0=10.0, kappa=0.6)
    assert s.rate(0) == pytest.approx(10**-0.6)
    assert s.rate(90) == pytest.approx(100**-0.6)
    assert np.allclose(s.rates(np.array([0.0, 90.0])), [s.rate(0), s.rate(90)])
    assert all(0 < s.rate(n) <= 1 for n in (0, 1, 1e9))
    assert EtaSchedule(kind="decaying", n0=1.0, kappa=1.0).rate(0) == 1.0


@pytest.mark.parametrize("kind", ["constant", "decaying"])
@pytest.mark.parametrize("n", [-1.0, -10.0, -11.0, math.nan, math.inf])
def test_eta_of_a_negative_or_non_finite_count_is_refused(kind: str, n: float) -> None:
    """η_n is defined for n ≥ 0 only. Before, a NaN count gave η = NaN (which step() turns into m = 0 without a
    word), an infinite one η = 0, n = −n₀ a ZeroDivisionError and n < −n₀ a complex number's TypeError."""
    with pytest.raises(InvalidRecord) as info:
        EtaSchedule(kind=kind).rate(n)  # type: ignore[arg-type]
    assert info.value.field == "n" and "finite number >= 0" in info.value.message


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "linear"}, "eta.kind"),
        ({"eta": 0.0}, "eta.eta"),
        ({"eta": 1.5}, "eta.eta"),
        ({"eta": float("nan")}, "eta.eta"),
        ({"n0": 0.5}, "eta.n0"),
        ({"kappa": 0.5}, "eta.kappa"),
        ({"kappa": 1.2}, "eta.kappa"),
    ],
)
def test_invalid_schedules(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        EtaSchedule(**kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_invalid_updates_and_states() -> None:
    state = KeyAlignment("k")
    with pytest.raises(InvalidRecord, match="y"):
        update_key(state, 1.5, EtaSchedule())
    with pytest.raises(InvalidRecord, match="weight"):
        update_key(state, 0.5, EtaSchedule(), weight=1.5)
    with pytest.raises(InvalidRecord, match="weight"):
        update_key(state, 0.5, EtaSchedule(), weight=float("nan"))
    with pytest.raises(InvalidRecord, match="m"):
        KeyAlignment("k", m=1.1)
    with pytest.raises(InvalidRecord, match="key"):
        KeyAlignment("")


def test_step_and_reset() -> None:
    assert step(0.2, 1.0, 0.5) == pytest.approx(0.6)
    assert step(0.9, 1.0, 2.0) == 1.0  # clipped even for a caller's bad η
    state = KeyAlignment("k", m=0.7, n=40, weight_sum=30.0)
    again = reset_key(state, m=0.2, effective_samples=3.0)
    assert (again.m, again.n, again.weight_sum) == (0.2, 40, 3.0)
    assert reset_key(state).m == 0.7
    assert reset_key(state, m=5.0).m == 1.0


# -- non-finite and out-of-range inputs are refused, never turned into m = 0 --------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weight_sum": float("nan")}, "weight_sum"),
        ({"weight_sum": float("inf")}, "weight_sum"),
        ({"n": float("nan")}, "n"),
        ({"updated_at": float("nan")}, "updated_at"),
        ({"updated_at": float("inf")}, "updated_at"),
    ],
)
def test_a_key_state_with_a_non_finite_number_is_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        KeyAlignment("k", m=0.7, **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_an_update_at_a_non_finite_time_is_refused() -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        update_key(KeyAlignment("k", m=0.7), 0.5, EtaSchedule(), at=float("nan"))
    assert excinfo.value.field == "at"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"old_y": float("nan")}, "old_y"),
        ({"new_y": float("nan")}, "new_y"),
        ({"new_y": 2.0}, "new_y"),
        ({"weight": float("nan")}, "weight"),
        ({"new_weight": float("nan")}, "new_weight"),
        ({"new_weight": 5.0}, "new_weight"),
        ({"old_n": float("nan")}, "old_n"),
        ({"old_n": -9.5}, "old_n"),
        ({"old_n": -10.0}, "old_n"),
        ({"at": float("inf")}, "at"),
    ],
)
def test_replace_feedback_refuses_bad_inputs(kwargs: dict[str, float], field: str) -> None:
    state = KeyAlignment("k", m=0.4, n=3, weight_sum=3.0)
    args: dict[str, float] = {"old_y": 1.0, "new_y": 0.0, "old_n": 2.0, **kwargs}
    old_y, new_y = args.pop("old_y"), args.pop("new_y")
    with pytest.raises(InvalidRecord) as excinfo:
        replace_feedback(state, old_y, new_y, EtaSchedule(), **args)
    assert excinfo.value.field == field


def test_reset_key_refuses_a_nan_m() -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        reset_key(KeyAlignment("k", m=0.7), m=float("nan"))
    assert excinfo.value.field == "m"


def test_an_infinite_n0_is_refused_since_eta_would_be_zero() -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        EtaSchedule(n0=float("inf"))
    assert excinfo.value.field == "eta.n0"


@settings(max_examples=200, deadline=None)
@given(
    state=_state,
    schedule=_schedule,
    old=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    new=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)
def test_replacing_an_answer_and_replacing_it_back_restores_the_state(
    state: KeyAlignment, schedule: EtaSchedule, old: tuple[float, float], new: tuple[float, float]
) -> None:
    (old_y, old_w), (new_y, new_w) = old, new
    if schedule.rate(state.weight_sum) * max(old_w, new_w) > 0.99:
        return  # η·w ≈ 1: the first answer erased the earlier m, which no swap can bring back (documented)
    first = update_key(state, old_y, schedule, weight=old_w)
    swapped = replace_feedback(first, old_y, new_y, schedule, old_n=state.weight_sum, weight=old_w, new_weight=new_w)
    back = replace_feedback(swapped, new_y, old_y, schedule, old_n=state.weight_sum, weight=new_w, new_weight=old_w)
    assert back.m == pytest.approx(first.m, abs=1e-9)
    assert back.weight_sum == pytest.approx(first.weight_sum, abs=1e-9)
    assert (back.n, swapped.n) == (first.n, first.n)
