"""The simulator's meta-monitor decides as the bot's does (``npo.monitor`` driven as ``bot.jobs.monitor`` drives it).

In particular a Page–Hinkley alarm the cooldown holds back is remembered (:class:`npo.monitor.HeldAlarm`): the
detector's running mean catches up with a lasting change, so its statistic falls back below the threshold on its
own, and the first check free to trigger would otherwise see no alarm. The simulator has no open proposal (an
approval is immediate), so only its cooldown holds alarms back.

The worlds here surface every prediction (τ = 0) and code a skip λ = 0.25, so every feedback code is a multiple of
0.25: a window's L_align is then exact, never θ plus a rounding error — except in the test of that rounding error
(codes whose mean is θ up to rounding, which neither the bot nor the simulator counts as above θ).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from npo.monitor import (
    HeldAlarm,
    MonitorConfig,
    MonitorState,
    PageHinkleyState,
    evaluate_monitor,
    held_alarm_observe,
    held_alarm_persists,
    held_alarm_persists_batch,
    observe_feedback,
    page_hinkley_alarm,
    page_hinkley_baseline,
    page_hinkley_update,
    resolve_proposal,
)
from npo.sim.engine import Condition, Trace, run
from npo.sim.world import World, WorldConfig, make_world

SKIP_LAMBDA = 0.25
EVERY = 50  # episodes between checks
# Surface everything; the drift detector and the L_align window are the simulator's defaults.
SURFACE_ALL = Condition("monitor", fixed_threshold=0.0, trust=False, skip_lambda=SKIP_LAMBDA, monitor_every=EVERY)


def _world(y: npt.NDArray[np.float64], skipped: npt.NDArray[np.bool_] | None = None) -> World:
    """A world whose engineers answer ``y`` (S, T) ∈ {0, 0.5, 1} truthfully: 0 where the fault is real (like), 1
    where it is not (override), 0.5 neutral; where ``skipped`` nobody answers (code λ)."""
    s, t = y.shape
    k, o = 2, 1
    skipped = np.zeros((s, t), dtype=bool) if skipped is None else skipped
    return World(
        WorldConfig(episodes=t, n_keys=k, drift_at=None, outcome_delay=0, n_operators=o, n_families=1),
        key=np.zeros((s, t), dtype=np.int64),
        confidence=np.full((s, t), 0.9),
        real_fault=(y == 0.0) & ~skipped,
        operator=np.zeros((s, t), dtype=np.int64),
        flip=np.zeros((s, t), dtype=bool),
        skipped=skipped,
        neutral=(y == 0.5) & ~skipped,
        adversarial_ops=np.zeros((s, o), dtype=bool),
        owner=np.zeros((s, k), dtype=np.int64),
        true_rate=np.zeros((s, 2, k)),
    )


def _level(length: int, period: int) -> list[float]:
    """``length`` answers, every ``period``-th an override: an override rate of 1/period."""
    return [1.0 if i % period == 0 else 0.0 for i in range(length)]


def _triggered_at(trace: Trace, seed: int = 0) -> list[int]:
    return [int(t) for t in trace.check_episodes[trace.triggers[seed]]]


def _bot_monitor(trace: Trace, condition: Condition, *, remember: bool = True) -> npt.NDArray[np.bool_]:
    """(S, C): whether the bot's monitor triggers at each of the simulator's checks, fed each seed's surfaced codes.

    Each check is a run of ``bot.jobs.monitor``: the codes since the last check go through the detector one by one
    (an alarm at any of them counts; without codes, the level), a held alarm counts them, :func:`evaluate_monitor`
    decides, and a run held back with an alarm remembers it (the level before the change replayed from the codes
    since the detector's last reset up to its last alarm) until a run triggers or has no cause. As in the simulator:
    an approval is immediate, the cooldown is counted in episodes, and L_align averages the last
    ``monitor_window`` codes (the bot's counts only the answers since the last proposal). ``remember=False``: the
    simulator before held alarms (forgotten at the next check).
    """
    config = MonitorConfig(
        loss_threshold=condition.monitor_threshold,
        window=condition.monitor_window,
        cooldown_s=float(condition.monitor_cooldown),
        min_samples=condition.monitor_min_samples,
        page_hinkley=condition.page_hinkley,
    )
    out = np.zeros(trace.triggers.shape, dtype=bool)
    for s in range(trace.y.shape[0]):
        state, held = MonitorState(), None
        window: deque[float] = deque(maxlen=config.window)
        since_reset: list[float] = []  # the codes the detector has seen since its last reset
        start = 0
        for c, t in enumerate(trace.check_episodes):
            codes = [float(y) for y in trace.y[s, start : t + 1] if not np.isnan(y)]
            start = int(t) + 1
            alarm = False if codes else page_hinkley_alarm(state.ph, config.page_hinkley)
            last_alarm = -1 if alarm else None
            for i, y in enumerate(codes):
                state, raised = observe_feedback(state, y, config)
                if held is not None:
                    held = held_alarm_observe(held, y, raised)
                if raised:
                    last_alarm = i
                alarm = alarm or raised
            window.extend(codes)
            before = len(since_reset)
            since_reset.extend(codes)
            loss = sum(window) / len(window) if window else None
            decision, state = evaluate_monitor(state, config, loss, len(window), alarm, float(t), held_alarm=held)
            out[s, c] = decision.trigger
            if decision.trigger:
                state = resolve_proposal(state, approved=True)
                since_reset = []
            if decision.trigger or not decision.held_back or not remember:
                held = None
            elif held is None and last_alarm is not None:
                upto = since_reset[: before + last_alarm + 1]
                held = HeldAlarm(raised_at=float(t), baseline=page_hinkley_baseline(upto, config.page_hinkley))
                for y in codes[last_alarm + 1 :]:
                    held = held_alarm_observe(held, y, False)
    return out


# A first trigger at episode 99 (50 likes, then 50 overrides: L_align 1.0) starts a cooldown of 500 episodes and
# resets the detector. 50 likes later the override rate rises to 0.25 for good (L_align 0.24–0.26 < 0.3): the
# detector alarms at episodes 226–514, within the cooldown, and is quiet from then on. The first check after the
# cooldown is at episode 599.
FIRST, COOLDOWN, FREE = 99, 500, 599
RISE = [0.0] * 50 + [1.0] * 50 + [0.0] * 50


def _alarm_episodes(y: list[float], condition: Condition) -> list[int]:
    """The episodes after the first trigger at which the detector (reset then) is in alarm."""
    state, alarms = PageHinkleyState(), []
    for t, code in enumerate(y[FIRST + 1 :], start=FIRST + 1):
        state, alarm = page_hinkley_update(state, code, condition.page_hinkley)
        if alarm:
            alarms.append(t)
    return alarms


def test_a_drift_alarm_the_cooldown_holds_back_triggers_at_the_first_check_after_it() -> None:
    codes = RISE + _level(650, 4)
    condition = replace(SURFACE_ALL, monitor_cooldown=COOLDOWN)
    alarms = _alarm_episodes(codes, condition)
    assert (alarms[0], alarms[-1]) == (226, 514)
    trace = run(_world(np.array([codes])), condition)
    assert _triggered_at(trace) == [FIRST, FREE]
    assert _bot_monitor(trace, condition).tolist() == trace.triggers.tolist()
    # The drift alarm is over before the cooldown is: forgotten at each check, it would never be raised.
    assert not _bot_monitor(trace, condition, remember=False)[0, trace.check_episodes == FREE].any()


def test_a_held_alarm_whose_level_falls_back_is_forgotten() -> None:
    """The same rise, but the override rate falls back to 0 at episode 450: by the first free check the answers
    after the alarm are back at the level before the change, so nothing triggers — then or later."""
    codes = RISE + _level(300, 4) + [0.0] * 550
    condition = replace(SURFACE_ALL, monitor_cooldown=COOLDOWN)
    alarms = _alarm_episodes(codes, condition)
    assert alarms[0] > FIRST and alarms[-1] + condition.page_hinkley.min_samples < FREE  # held back, then enough after
    trace = run(_world(np.array([codes])), condition)
    assert _triggered_at(trace) == [FIRST]
    assert _bot_monitor(trace, condition).tolist() == trace.triggers.tolist()


def test_a_held_alarm_stands_through_a_long_cooldown() -> None:
    """Held back at the 15 checks of a cooldown of 800 episodes, the alarm triggers once, at the first free one."""
    codes = RISE + _level(1650, 4)
    condition = replace(SURFACE_ALL, monitor_cooldown=800)
    assert _alarm_episodes(codes, condition)[-1] == 514
    trace = run(_world(np.array([codes])), condition)
    assert _triggered_at(trace) == [FIRST, FIRST + 800]
    assert _bot_monitor(trace, condition).tolist() == trace.triggers.tolist()


def _piecewise_streams(seeds: int, episodes: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Feedback streams whose override rate jumps among 0–0.6 every 150–700 episodes, with skips (20 %) and
    neutral answers (3 %): triggers by L_align and by drift alarms, and drift alarms the cooldown holds back."""
    rng = np.random.default_rng(seed)
    rate = np.zeros((seeds, episodes))
    for s in range(seeds):
        t = 0
        while t < episodes:
            length = int(rng.integers(150, 700))
            rate[s, t : t + length] = rng.choice([0.0, 0.1, 0.25, 0.4, 0.6])
            t += length
    return _answers(rate, rng)


def _changes_in_the_cooldown(
    seeds: int, episodes: int, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The scenario in which a held alarm matters, drawn at random: a low override rate r0 ∈ {0, 0.05, 0.1}, a burst
    of overrides (episodes 50–99) that triggers, 30–200 episodes at r0 again, a rise to r1 ∈ {0.2, 0.25, 0.3, 0.4}
    lasting 100–1,200 episodes, then r0 or r1 for the rest; skips and neutral answers as above."""
    rng = np.random.default_rng(seed)
    rate = np.zeros((seeds, episodes))
    for s in range(seeds):
        r0, r1 = rng.choice([0.0, 0.05, 0.1]), rng.choice([0.2, 0.25, 0.3, 0.4])
        rise, fall = 100 + int(rng.integers(30, 200)), int(rng.integers(100, 1200))
        rate[s] = r0
        rate[s, 50:100] = 1.0
        rate[s, rise : rise + fall] = r1
        rate[s, rise + fall :] = rng.choice([r0, r1])
    return _answers(rate, rng)


def _answers(
    rate: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    u = rng.random(rate.shape)
    y = np.where(rng.random(rate.shape) < rate, 1.0, 0.0)
    return np.where((u >= 0.2) & (u < 0.23), 0.5, y), u < 0.2


@pytest.mark.parametrize("cooldown", [200, 800])
def test_the_simulators_monitor_decides_as_npo_monitor_does(cooldown: int) -> None:
    y, skipped = _piecewise_streams(seeds=30, episodes=3000, seed=cooldown)
    condition = replace(SURFACE_ALL, monitor_cooldown=cooldown)
    trace = run(_world(y, skipped), condition)
    assert trace.triggers.sum() > 50
    np.testing.assert_array_equal(trace.triggers, _bot_monitor(trace, condition))


@pytest.mark.parametrize("cooldown", [400, 800])
def test_the_simulators_monitor_remembers_held_alarms_as_npo_monitor_does(cooldown: int) -> None:
    y, skipped = _changes_in_the_cooldown(seeds=40, episodes=2000, seed=0)
    condition = replace(SURFACE_ALL, monitor_cooldown=cooldown)
    trace = run(_world(y, skipped), condition)
    bot = _bot_monitor(trace, condition)
    np.testing.assert_array_equal(trace.triggers, bot)
    # Not vacuous: some of these triggers are held alarms' (forgotten at each check, there would be none).
    assert (bot & ~_bot_monitor(trace, condition, remember=False)).sum() >= 5


def test_the_simulators_monitor_decides_as_npo_monitor_does_in_the_simulated_data_center() -> None:
    """The experiment's world and learning (τ fixed at 0.5, a cooldown of 800 episodes): in one seed of eight a
    held alarm triggers (seed 1, at episode 1649)."""
    world = make_world(WorldConfig(episodes=2000), 8, seed=0)
    condition = Condition("fixed_0.5", fixed_threshold=0.5, skip_lambda=SKIP_LAMBDA, monitor_cooldown=800)
    trace = run(world, condition, seed=1)
    bot = _bot_monitor(trace, condition)
    np.testing.assert_array_equal(trace.triggers, bot)
    forgetful = _bot_monitor(trace, condition, remember=False)
    assert sorted(set(np.argwhere(forgetful != bot)[:, 0].tolist())) == [1]
    assert 1649 in _triggered_at(trace, 1) and not forgetful[1, trace.check_episodes == 1649].any()


# Codes of skips at λ = 0.3 = θ, alone or with likes, overrides and neutral answers in a period of 10 whose exact mean
# is 0.3 (an override, a neutral answer, five skips, three likes): every window of 50 averages to θ plus rounding.
ROUNDING_STREAMS = {
    "skips": ([0.0] * 10, [True] * 10),
    "mixed": (
        [1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [False, True, False, True, True, False, True, False, True, False],
    ),
}


@pytest.mark.parametrize("stream", ROUNDING_STREAMS)
def test_an_l_align_at_theta_up_to_rounding_does_not_trigger(stream: str) -> None:
    """A channel whose L_align is θ plus a rounding error (0.30000000000000004) is not above θ, for the bot
    (``LOSS_TOLERANCE``) and for the simulator, which once triggered every cooldown on it (episodes 49, 249, 449)."""
    period_y, period_skipped = ROUNDING_STREAMS[stream]
    repeat = 60  # 600 episodes, 12 checks
    y, skipped = np.array([period_y * repeat]), np.array([period_skipped * repeat])
    condition = replace(SURFACE_ALL, skip_lambda=0.3)
    trace = run(_world(y, skipped), condition)
    window = trace.y[0, -condition.monitor_window :]
    mean = float(window.sum() / window.size)
    assert condition.monitor_threshold < mean < condition.monitor_threshold + 1e-12  # θ, up to rounding
    assert not trace.triggers.any()
    assert not _bot_monitor(trace, condition).any()


@pytest.mark.parametrize("baseline", [0.0, 0.1, 0.2, 0.5])
def test_the_vectorised_persistence_rule_is_the_scalar_one(baseline: float) -> None:
    config = MonitorConfig()
    n_after = np.arange(0, 60)
    sums = [0.0, 0.25, 0.5, 0.75, 1.0]
    sum_after = np.array([[f * n for n in n_after] for f in sums])  # means 0, 0.25, ...; 0.25 = 0.2 + δ is not above
    batch = held_alarm_persists_batch(
        np.broadcast_to(n_after, sum_after.shape), sum_after, np.full(sum_after.shape, baseline), config.page_hinkley
    )
    scalar = [
        [
            held_alarm_persists(HeldAlarm(0.0, baseline, int(n), float(total)), config)
            for n, total in zip(n_after, row, strict=True)
        ]
        for row in sum_after
    ]
    assert batch.dtype == np.bool_ and batch.tolist() == scalar
