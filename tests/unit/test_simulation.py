"""The paper's experiments, reproduced on a smaller run than the README's (2,000 episodes, 12 seeds)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from npo.sim.engine import Condition, run
from npo.sim.experiments import ExperimentResult, conditions, run_experiments
from npo.sim.metrics import per_seed, recovery, summarise, t_quantile
from npo.sim.world import WorldConfig, make_world
from npo.types import InvalidRecord

REQUIRED_CONDITIONS = (
    "full",
    "fixed_0.7",
    "best_fixed",
    "skips_ignored",
    "no_monitor",
    "no_miss_term",
    "eta_constant",
    "eta_decaying",
    "no_trust",
)
REQUIRED_METRICS = (
    "reward",
    "f1",
    "precision",
    "recall",
    "override_rate",
    "l_align_first10",
    "l_align_last10",
    "true_l_align",
    "recovery_episodes",
    "true_l_align_adversarial",
)


@pytest.fixture(scope="module")
def result() -> ExperimentResult:
    return run_experiments(2000, 12, base_seed=1)


def mean(result: ExperimentResult, condition: str, metric: str) -> float:
    value = result.conditions[condition][metric]
    assert isinstance(value, dict)
    return float(value["mean"])  # type: ignore[arg-type]


def test_every_condition_has_every_metric_with_an_interval(result: ExperimentResult) -> None:
    for condition in REQUIRED_CONDITIONS:
        for metric in REQUIRED_METRICS:
            value = result.conditions[condition][metric]
            assert isinstance(value, dict)
            lo, hi = value["ci95"]  # type: ignore[misc]
            assert lo <= value["mean"] <= hi, (condition, metric)


def test_a_alignment_loss_halves_at_epsilon_0_1(result: ExperimentResult) -> None:
    first = mean(result, "full", "l_align_first10")
    last = mean(result, "full", "l_align_last10")
    assert last <= 0.5 * first, f"L_align last 10 % {last:.3f} vs first 10 % {first:.3f}"


def test_b_full_npo_beats_fixed_threshold_on_reward_and_f1(result: ExperimentResult) -> None:
    assert mean(result, "full", "reward") > mean(result, "fixed_0.7", "reward")
    assert mean(result, "full", "f1") > mean(result, "fixed_0.7", "f1")


def test_c_the_miss_term_keeps_recall(result: ExperimentResult) -> None:
    assert mean(result, "no_miss_term", "recall") < mean(result, "full", "recall")


def test_d_the_meta_monitors_retraining_pays_off_after_drift(result: ExperimentResult) -> None:
    # With the full-information bandit the monitor's gain shows in the ground truth and the reward; the episodes
    # until the *observed* L_align is back are level with and without it (80 seeds: 462 vs 467 ± 43; README).
    assert mean(result, "full", "true_l_align") < mean(result, "no_monitor", "true_l_align")
    assert mean(result, "full", "reward") > mean(result, "no_monitor", "reward")


def test_full_information_beats_learning_only_the_drawn_arm(result: ExperimentResult) -> None:
    full, drawn = result.conditions["full"], result.conditions["drawn_arm_only"]
    assert mean(result, "full", "reward") > mean(result, "drawn_arm_only", "reward")
    assert mean(result, "full", "true_l_align") < mean(result, "drawn_arm_only", "true_l_align")
    assert mean(result, "full", "true_l_align_adversarial") < mean(result, "drawn_arm_only", "true_l_align_adversarial")
    assert full["recall"]["ci95"][1] >= drawn["recall"]["mean"]  # type: ignore[index]  # recall no worse


def test_e_trust_weights_resist_adversarial_clickers(result: ExperimentResult) -> None:
    assert mean(result, "full", "true_l_align_adversarial") < mean(result, "no_trust", "true_l_align_adversarial")


def test_best_fixed_is_the_best_of_the_fixed_grid(result: ExperimentResult) -> None:
    best = mean(result, "best_fixed", "reward")
    for tau in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert best >= mean(result, f"fixed_{tau}", "reward")


def test_monitor_fidelity_is_reported_for_conditions_with_a_monitor(result: ExperimentResult) -> None:
    f = mean(result, "full", "f_monitor")
    assert 0.0 <= f <= 1.0
    assert "f_monitor" not in result.conditions["no_monitor"]


def test_noise_raises_the_floor_of_observed_alignment_loss(result: ExperimentResult) -> None:
    clean = mean(result, "full@eps=0.0", "l_align_last10")
    noisy = mean(result, "full@eps=0.3", "l_align_last10")
    assert clean < mean(result, "full", "l_align_last10") < noisy


def test_runs_are_reproducible_from_the_seed() -> None:
    world = make_world(WorldConfig(episodes=300), 3, seed=5)
    a = run(world, Condition("full"), seed=9)
    b = run(world, Condition("full"), seed=9)
    assert np.array_equal(a.surfaced, b.surfaced)
    assert np.array_equal(a.y, b.y, equal_nan=True)


def test_conditions_share_the_same_world() -> None:
    """Common random numbers: a fixed τ = 0.5 and a fixed τ = 0.9 see the same faults."""
    world = make_world(WorldConfig(episodes=300), 2, seed=3)
    low = run(world, Condition("fixed_0.5", fixed_threshold=0.5), seed=1)
    high = run(world, Condition("fixed_0.9", fixed_threshold=0.9), seed=1)
    assert np.array_equal(low.real_fault, high.real_fault)
    assert high.surfaced.sum() < low.surfaced.sum()


def test_run_experiments_honours_the_callers_world() -> None:
    """A world passed in keeps its label noise: the headline conditions run at the caller's ε (not 0.1), and the
    ε sweep covers the other levels, 0.1 among them."""
    world = WorldConfig(episodes=60, epsilon=0.0, skip=0.1)
    got = run_experiments(60, 2, world=world)
    direct = per_seed(run(make_world(world, 2, 0), conditions()["full"], seed=1), drift_episode=world.drift_episode)
    assert mean(got, "full", "reward") == pytest.approx(float(np.mean(direct["reward"])))
    assert mean(got, "full", "l_align_last10") == pytest.approx(float(np.nanmean(direct["l_align_last10"])))
    sweep = {name for name in got.conditions if name.startswith("full@eps=")}
    assert sweep == {"full@eps=0.1", "full@eps=0.2", "full@eps=0.3"}
    assert got.epsilon == 0.0  # what the plots label the headline curve


def test_recovery_counts_episodes_until_back_near_the_pre_drift_level() -> None:
    y = np.full((1, 400), np.nan)
    y[0, :200] = 0.2  # steady state before the drift at 200
    y[0, 200:300] = 0.8  # the spike
    y[0, 300:] = 0.2  # recovered
    got = recovery(y, 200, window=20)
    assert 100 <= got[0] <= 120
    never = y.copy()
    never[0, 300:] = 0.8
    assert recovery(never, 200, window=20)[0] == 200  # the horizon


def test_recovery_counts_from_the_first_episode_whose_trailing_window_is_full() -> None:
    """A window of 20 episodes is full at the 20th episode after the drift (index 19): a stream that never left
    its pre-drift level has recovered there, and a horizon exactly one window long can still show a recovery."""
    y = np.full((1, 400), 0.2)
    assert recovery(y, 200, window=20)[0] == 19
    one_window = np.full((1, 40), 0.2)  # 20 episodes after the drift at 20
    assert recovery(one_window, 20, window=20)[0] == 19  # not 20, the horizon: "never"


def test_f1_is_undefined_like_recall_in_a_seed_without_a_real_fault() -> None:
    """Seed 0 never faults, so its recall is undefined and so is its F1 (an F1 of 0 would pull the mean over seeds
    down); seed 1 surfaces nothing while a fault happens: recall 0, F1 0."""
    world = make_world(WorldConfig(episodes=40, drift_at=None), 2, seed=0)
    real = world.real_fault.copy()
    real[0] = False
    real[1] = False
    real[1, 5] = True
    world = replace(world, real_fault=real)
    trace = run(world, Condition("fixed_0.9", fixed_threshold=0.9), seed=1)
    trace = replace(trace, surfaced=np.array([[True] * 40, [False] * 40]))
    m = per_seed(trace, drift_episode=None)
    assert math.isnan(m["recall"][0]) and math.isnan(m["f1"][0])
    assert m["precision"][0] == 0.0
    assert m["recall"][1] == 0.0 and m["f1"][1] == 0.0


@pytest.mark.parametrize(
    ("dof", "exact"),  # t_{0.975, dof}, to five decimals
    [
        (4, 2.77645),
        (19, 2.09302),
        (21, 2.07961),
        (29, 2.04523),
        (40, 2.02108),
        (79, 1.99045),
        (120, 1.97993),
        (1000, 1.96234),
    ],
)
def test_t_quantile_is_exact_between_and_beyond_the_table_entries(dof: int, exact: float) -> None:
    """An 80-seed interval needs t_{0.975, 79} = 1.9905; the nearest lower table entry (2.000 at 60) widened it, and
    beyond 120 the normal 1.96 narrowed it."""
    assert t_quantile(dof) == pytest.approx(exact, abs=6e-4 if dof <= 20 else 5e-5)


def test_summarise_gives_a_t_interval() -> None:
    s = summarise(np.array([1.0, 2.0, 3.0, 4.0]))
    assert s["mean"] == 2.5
    lo, hi = s["ci95"]  # type: ignore[misc]
    assert 2.5 - lo == pytest.approx(hi - 2.5)
    assert hi - 2.5 == pytest.approx(3.182 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-3)
    assert math.isnan(summarise(np.array([np.nan]))["mean"])  # type: ignore[arg-type]


def test_one_value_has_no_interval_rather_than_a_zero_width_one() -> None:
    """A t-interval needs two values: one seed (or one seed with a value, the rest NaN) says nothing about the spread,
    and [mean, mean] would read as a figure known exactly."""
    for values in (np.array([0.4]), np.array([np.nan, 0.4, np.nan])):
        s = summarise(values)
        assert s["mean"] == 0.4
        assert all(math.isnan(bound) for bound in s["ci95"])  # type: ignore[union-attr]
    assert summarise(np.array([0.4, 0.4]))["ci95"] == [0.4, 0.4]  # two equal values: a real zero spread


@pytest.mark.parametrize(
    ("field", "value"),
    [("episodes", 5), ("epsilon", 1.5), ("skip", -0.1), ("drift_at", 1.0), ("good_rate", (0.9, 0.2))],
)
def test_world_config_refuses_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRecord) as err:
        WorldConfig(**{field: value})  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize("value", [0.9, 0.1, 5.0, -1.0, math.nan, math.inf])
def test_condition_refuses_a_skip_code_outside_the_papers_range(value: float) -> None:
    """λ is the feedback code of a skip, in [0.2, 0.4] wherever it is set: the bot's setting and the loop's
    ``FeedbackCodes`` refuse anything else, and so does a simulated condition. Before, ``Condition(skip_lambda=…)``
    took any number: 0.9 ran outside the paper's range without a word, NaN turned every m(k) and bandit posterior
    into NaN, and 5.0 failed deep inside numpy ("a <= 0")."""
    with pytest.raises(InvalidRecord) as err:
        Condition("x", skip_lambda=value)
    assert err.value.field == "skip_lambda"


def test_condition_keeps_a_skip_code_inside_the_range() -> None:
    assert Condition("x", skip_lambda=0.2).skip_lambda == 0.2
    assert Condition("x", skip_lambda=0.4).skip_lambda == 0.4
