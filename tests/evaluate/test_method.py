"""The pure parts: predictor, calibration, simulated engineers, counting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npo.evaluate.counting import f1, lead_times, precision_recall, quarter_means
from npo.evaluate.data import Dataset, FaultWindow, Series
from npo.evaluate.engineers import EngineerConfig, draw_answers
from npo.evaluate.predictor import PredictorConfig, confidence, predict, rarity, robust_scores
from npo.evaluate.replay import build_stream, fault_type
from npo.types import FeedbackKind, InvalidRecord

from .conftest import nab_values


def _series(spikes: list[int], n: int = 288 * 6) -> Series:
    return Series("s", "cpu", "host-1", np.arange(n) * 300.0, np.asarray(nab_values(n, spikes, seed=5)))


def test_predictor_flags_a_strong_spike_and_nothing_else() -> None:
    spike = 288 * 4
    p = predict(_series([spike]), PredictorConfig())
    assert p.rows.size >= 1
    assert np.all((p.rows >= spike) & (p.rows < spike + 12)), p.rows
    assert p.confidence.min() >= 0.75  # the trigger (once a week) is p = 0.75: even odds are three times a week


def test_values_near_the_float_limit_score_as_the_same_series_in_a_smaller_unit() -> None:
    """A series whose values reach the float limit (a counter gone wild, a sentinel) overflowed in the differences
    of the robust z (numpy warnings, z of 0); measured in halves it scores as the series does in any unit, the
    spike flagged at the same rows. Warnings are errors in this suite."""
    spike = 288 * 4
    base = _series([spike])
    centred = base.values - np.median(base.values)
    peak = np.finfo(np.float64).max * 0.99
    huge = Series("s", "cpu", "host-1", base.times, centred * (peak / np.max(np.abs(centred))))
    small = Series("s", "cpu", "host-1", base.times, centred * (1e6 / np.max(np.abs(centred))))
    assert np.max(np.abs(huge.values)) > np.finfo(np.float64).max / 2
    z_huge, z_small = robust_scores(huge, PredictorConfig()), robust_scores(small, PredictorConfig())
    assert np.array_equal(np.isnan(z_huge), np.isnan(z_small))
    assert np.allclose(z_huge, z_small, rtol=1e-9, equal_nan=True)
    assert np.array_equal(predict(huge, PredictorConfig()).rows, predict(small, PredictorConfig()).rows)
    assert predict(huge, PredictorConfig()).rows.size >= 1


def test_predictor_is_quiet_on_a_normal_series_and_respects_refractory() -> None:
    assert predict(_series([]), PredictorConfig()).rows.size <= 1
    spikes = [288 * 3, 288 * 3 + 14, 288 * 5]
    p = predict(_series(spikes), PredictorConfig(refractory_s=6 * 3600))
    assert np.all(np.diff(p.times) >= 6 * 3600)


def test_predictor_never_flags_inside_the_warmup() -> None:
    s = _series([288 * 2, 288 * 4])
    warm = Series(s.name, s.family, s.target, s.times, s.values, warmup=288 * 3)
    assert np.all(predict(warm, PredictorConfig()).rows >= 288 * 3)
    assert np.any(predict(s, PredictorConfig()).rows < 288 * 3)


def test_confidence_calibration_is_monotone_and_anchored() -> None:
    cfg = PredictorConfig()
    assert float(confidence(cfg.even_odds_expected, cfg)[()]) == pytest.approx(0.5)
    assert float(confidence(cfg.max_expected, cfg)[()]) == pytest.approx(0.75)
    assert float(confidence(cfg.even_odds_expected / 9, cfg)[()]) == pytest.approx(0.9)
    e = np.array([5.0, 1.0, 0.5, 0.1, 0.01])
    assert np.all(np.diff(confidence(e, cfg)) > 0)


def test_predictor_config_refuses_nonsense() -> None:
    with pytest.raises(InvalidRecord, match=r"predictor\.tail_quantile"):
        PredictorConfig(tail_quantile=1.0)
    with pytest.raises(InvalidRecord, match=r"predictor\.top_k"):
        PredictorConfig(top_k=0)
    with pytest.raises(InvalidRecord, match=r"predictor\.even_odds_expected"):
        PredictorConfig(even_odds_expected=0.0)


def test_engineers_answer_the_truth_without_noise_and_invert_when_adversarial() -> None:
    truth = np.array([True, False] * 50)
    series = np.zeros(100, dtype=np.int64)
    honest = draw_answers(truth, series, 1, EngineerConfig(noise=0, skip_rate=0), np.random.default_rng(0))
    assert [k is FeedbackKind.LIKE for k in honest.kind] == truth.tolist()
    evil = draw_answers(
        truth, series, 1, EngineerConfig(noise=0, skip_rate=0, adversarial=1.0), np.random.default_rng(0)
    )
    assert [k is FeedbackKind.OVERRIDE for k in evil.kind] == truth.tolist()
    skipping = draw_answers(truth, series, 1, EngineerConfig(skip_rate=1.0), np.random.default_rng(0))
    assert set(skipping.kind) == {FeedbackKind.SKIPPED}


def test_engineer_noise_flips_about_epsilon_and_is_reproducible() -> None:
    truth = np.ones(4000, dtype=bool)
    cfg = EngineerConfig(noise=0.2, skip_rate=0.0)
    a = draw_answers(truth, np.zeros(4000, dtype=np.int64), 1, cfg, np.random.default_rng(7))
    b = draw_answers(truth, np.zeros(4000, dtype=np.int64), 1, cfg, np.random.default_rng(7))
    assert a.kind == b.kind
    flipped = np.mean([k is FeedbackKind.OVERRIDE for k in a.kind])
    assert 0.17 < flipped < 0.23


def test_counting_precision_recall_f1_by_the_documented_rules() -> None:
    surfaced = np.array([True, True, True, False, True])
    window = np.array([0, 0, -1, 1, -1])  # two inside window 0, window 1 only suppressed
    p, r, f = precision_recall(surfaced, window, n_windows=3)
    assert p == pytest.approx(2 / 4) and r == pytest.approx(1 / 3)
    assert f == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    p0, r0, f0 = precision_recall(np.zeros(5, dtype=bool), window, n_windows=3)
    assert math.isnan(p0) and r0 == 0.0 and f0 == 0.0
    assert f1(1.0, 1.0) == 1.0 and f1(0.0, 0.0) == 0.0


def test_lead_time_is_onset_minus_first_surfaced_in_each_window() -> None:
    times = np.array([100.0, 200.0, 300.0, 900.0])
    surfaced = np.array([False, True, True, True])
    window = np.array([0, 0, 0, 1])
    onsets = np.array([260.0, 600.0])
    assert lead_times(times, surfaced, window, onsets).tolist() == [60.0, -300.0]


def test_quarter_means_ignore_nan_and_mark_empty_quarters() -> None:
    q = quarter_means(np.array([1.0, np.nan, 0.0, 0.0, np.nan, np.nan, 1.0, 0.0]))
    assert q[0] == 1.0 and q[1] == 0.0 and math.isnan(q[2]) and q[3] == 0.5


def test_stream_labels_predictions_against_windows_and_times_outcomes() -> None:
    a = Series("a", "cpu", "a", np.arange(10) * 60.0, np.zeros(10))
    b = Series("b", "cpu", "b", np.arange(10) * 60.0, np.zeros(10))
    ds = Dataset("t", (a, b), (FaultWindow("a", 120.0, 240.0, 180.0),), horizon_s=600.0)
    from npo.evaluate.predictor import SeriesPredictions  # noqa: PLC0415

    def preds(name: str, times: list[float]) -> SeriesPredictions:
        t = np.asarray(times)
        return SeriesPredictions(name, np.arange(t.size), t, np.ones(t.size), np.full(t.size, 0.7))

    stream = build_stream(ds, [preds("a", [60.0, 180.0, 240.0]), preds("b", [180.0])])
    assert stream.times.tolist() == [60.0, 180.0, 180.0, 240.0]
    assert stream.window.tolist() == [-1, 0, -1, 0]  # b at 180 is not inside a's window
    assert stream.outcome_at.tolist() == [660.0, 240.0, 780.0, 240.0]


def _machine(spike_dim: int, n: int = 288 * 6, d: int = 5) -> Series:
    """A multivariate series of ``d`` quiet dimensions, two of them (``spike_dim`` and the next) jumping together."""
    rng = np.random.default_rng(9)
    values = 0.5 + 0.01 * rng.normal(size=(n, d))
    values[288 * 4 : 288 * 4 + 12, spike_dim] += 0.6
    values[288 * 4 : 288 * 4 + 12, (spike_dim + 1) % d] += 0.3
    return Series("m", "server", "machine-1", np.arange(n) * 300.0, values)


def test_a_multivariate_prediction_names_the_dimension_that_deviated_most() -> None:
    for dim in (0, 3):
        p = predict(_machine(dim), PredictorConfig())
        assert p.rows.size >= 1 and p.dimension is not None
        assert p.dimension.tolist() == [dim] * p.rows.size
    univariate = predict(_series([288 * 4]), PredictorConfig())
    assert univariate.dimension is None


def test_fault_type_names_the_dimension_one_based_unless_switched_off() -> None:
    machine = _machine(3)
    quiet = _series([])
    ds = Dataset("t", (machine, quiet), (), horizon_s=600.0)
    cfg = PredictorConfig()
    stream = build_stream(ds, [predict(machine, cfg), predict(quiet, cfg)])
    on_machine = np.flatnonzero(stream.series_index == 0)
    assert on_machine.size >= 1 and stream.dimension is not None
    assert {fault_type(ds, stream, int(i)) for i in on_machine} == {"server/dim4"}
    assert {fault_type(ds, stream, int(i), name_dimension=False) for i in on_machine} == {"server"}
    assert all(fault_type(ds, stream, int(i)) == "cpu" for i in np.flatnonzero(stream.series_index == 1))


def test_splitting_the_scores_by_dimension_leaves_the_row_score_unchanged() -> None:
    machine = _machine(1)
    cfg = PredictorConfig()
    scores = robust_scores(machine, cfg)
    p = predict(machine, cfg)
    np.testing.assert_array_equal(p.scores, scores[p.rows])


def test_predictor_emits_nothing_on_rows_without_a_score_after_a_gap_in_the_data() -> None:
    """After a gap longer than the baseline the first rows have no score (too few rows in the past day); with more
    than a week of history before the gap their empirical tail made them look rare, so the predictor emitted
    predictions with a NaN score at confidence 0.81 — false alarms made of missing data."""
    n_before, n_after = 288 * 10, 288 * 2
    values = np.asarray(nab_values(n_before + n_after, [], seed=5))
    times = np.r_[np.arange(n_before), np.arange(n_after) + n_before + 288 * 2] * 300.0
    p = predict(Series("s", "cpu", "host-1", times, values), PredictorConfig())
    assert np.all(np.isfinite(p.scores)), p.scores
    assert not np.any((p.times >= times[n_before]) & (p.times < times[n_before] + 3 * 3600)), p.times


def test_predictor_memory_stays_linear_on_one_second_data() -> None:
    """Each hour's empirical tail compared every row of the hour with every past score: 3,600 × 100,000 booleans
    (360 MB) at the end of 28 hours of one-second data, gigabytes after a few days. It now searches the sorted
    past, with the same result (a pairwise count on a short series checks it)."""
    import tracemalloc  # noqa: PLC0415

    n = 28 * 3600
    rng = np.random.default_rng(4)
    values = 50 + rng.normal(0, 1, n)
    values[100_000:100_030] += 40
    series = Series("s", "cpu", "host-1", np.arange(n, dtype=np.float64), values)
    tracemalloc.start()
    try:
        p = predict(series, PredictorConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"{peak / 1e6:.0f} MB"
    assert np.any((p.rows >= 100_000) & (p.rows < 100_030)), p.rows

    short = _series([288 * 4])
    config = PredictorConfig()
    scores = robust_scores(short, config)
    expected = rarity(short, scores, config)
    a = 288 * 3  # a refresh point (hourly, 12 rows of 5 minutes)
    past = scores[:a][np.isfinite(scores[:a])]
    cur = scores[a : a + 12]
    u = float(np.quantile(past, config.tail_quantile))
    pairwise = (1.0 + np.sum(past[None, :] >= cur[:, None], axis=1)) / (past.size + 1.0)
    rows_per_rare = config.rare_s / 300.0
    empirical = cur <= u
    assert empirical.any()
    assert np.allclose(expected[a : a + 12][empirical], pairwise[empirical] * rows_per_rare, rtol=0, atol=0)


def _rarity_point_by_point(series: Series, scores: np.ndarray, config: PredictorConfig) -> np.ndarray:
    """:func:`rarity` as the module docstring states it, one refresh point at a time over the whole past."""
    t, n = series.times, series.times.size
    out = np.full(n, np.nan)
    finite = np.isfinite(scores)
    period = np.floor((t - t[0]) / config.refresh_s).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, period[1:] != period[:-1]])
    ends = np.r_[starts[1:], n]
    rows_per_rare = config.rare_s / max(float(np.median(np.diff(t))), 1e-9)
    first = int(np.argmax(finite)) if finite.any() else n
    q = config.tail_quantile
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        past = scores[:a][finite[:a]]
        if a <= first or t[a] - t[first] < config.min_history_s or past.size < 20:
            continue
        u = float(np.quantile(past, q))
        excess = past[past > u] - u
        beta = max(float(excess.mean()) if excess.size else 0.0, 1e-3)
        cur = scores[a:b]
        emp = (1.0 + np.sum(past[None, :] >= cur[:, None], axis=1)) / (past.size + 1.0)
        pot = (1.0 - q) * np.exp(-(cur - u) / beta)
        out[a:b] = np.where(np.isfinite(cur), np.where(cur > u, pot, emp) * rows_per_rare, np.nan)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_rarity_is_the_point_by_point_rarity(seed: int) -> None:
    """The rarity of every row is the one its refresh point's whole past gives: the same empirical tail (an exact
    count), the same threshold u (numpy's quantile, to the last bit) and β to rounding — on series with gaps (rows
    without a score), repeated values and short refresh periods."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1500, 4000))
    times = np.cumsum(rng.choice([60.0, 300.0, 300.0, 900.0, 4 * 3600.0], size=n, p=[0.3, 0.3, 0.3, 0.09, 0.01]))
    values = np.round(50 + rng.standard_t(3, size=n), 1)  # heavy tails, and many equal values
    series = Series("s", "cpu", "host-1", times, values)
    config = PredictorConfig(min_history_s=float(rng.choice([3600.0, 86400.0])), refresh_s=1800.0)
    scores = robust_scores(series, config)
    expected = rarity(series, scores, config)
    reference = _rarity_point_by_point(series, scores, config)
    assert np.array_equal(np.isnan(expected), np.isnan(reference)) and np.isfinite(reference).sum() > 500
    np.testing.assert_allclose(expected, reference, rtol=1e-12, atol=0)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(expected <= config.max_expected, reference <= config.max_expected)
