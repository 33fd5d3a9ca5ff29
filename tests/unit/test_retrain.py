"""Retraining: numpy logistic regression, holdout split, promotion rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npo.retrain import (
    LogisticModel,
    brier,
    fit_logistic,
    log_loss,
    propose_retraining,
    retrain_on_answers,
    split_holdout,
)
from npo.scoring import KeySpec
from npo.types import Prediction

TRUE_W = np.array([1.5, -2.0, 0.5])
TRUE_B = -0.3


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    p = _sigmoid(x @ TRUE_W + TRUE_B)
    y = (rng.random(n) < p).astype(np.float64)
    return x, y, p


# -- fitting ---------------------------------------------------------------------------------------
def test_fit_recovers_known_coefficients() -> None:
    x, y, _ = _data(20_000, seed=1)
    model = fit_logistic(x, y, version=1, trained_at=0.0)
    assert np.allclose(model.weights, TRUE_W, atol=0.12)
    assert model.bias == pytest.approx(TRUE_B, abs=0.08)
    assert model.metrics["converged"] == 1.0
    assert model.n_train == 20_000


def test_fit_on_soft_targets_recovers_them() -> None:
    x, _, p = _data(2000, seed=2)
    model = fit_logistic(x, p, l2=0.0, version=1, trained_at=0.0)
    assert np.allclose(model.weights, TRUE_W, atol=1e-4)
    assert model.bias == pytest.approx(TRUE_B, abs=1e-4)
    assert np.allclose(model.predict(x), p, atol=1e-5)


def test_constant_soft_targets_give_their_value() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 2))
    for code in (0.5, 0.3, 0.0, 1.0):
        model = fit_logistic(x, np.full(300, code), version=1, trained_at=0.0)
        assert np.allclose(model.predict(x), code, atol=0.02)


def test_fit_is_deterministic() -> None:
    x, y, _ = _data(1000, seed=4)
    w = np.random.default_rng(5).random(1000)
    a = fit_logistic(x, y, sample_weight=w, version=2, trained_at=10.0)
    b = fit_logistic(x.copy(), y.copy(), sample_weight=w.copy(), version=2, trained_at=10.0)
    assert a == b


def test_zero_sample_weight_rows_are_ignored() -> None:
    x, y, _ = _data(600, seed=6)
    w = np.ones(600)
    w[::3] = 0.0
    keep = w > 0
    weighted = fit_logistic(x, y, sample_weight=w, version=1, trained_at=0.0)
    subset = fit_logistic(x[keep], y[keep], version=1, trained_at=0.0)
    assert np.allclose(weighted.weights, subset.weights, atol=1e-8)
    assert weighted.bias == pytest.approx(subset.bias, abs=1e-8)


def test_separable_and_huge_features_stay_finite_without_warnings() -> None:
    x = np.array([[1e6], [-1e6], [2e6], [-3e6], [5e8]])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    for l2 in (0.0, 1e-2):
        model = fit_logistic(x, y, l2=l2, version=1, trained_at=0.0)
        p = model.predict(x)
        assert np.all(np.isfinite(p))
        assert np.all((p >= 0.0) & (p <= 1.0))
        assert math.isfinite(log_loss(model, x, y))


def test_predict_accepts_leading_batch_dimensions() -> None:
    model = LogisticModel(version=1, weights=(1.0, -1.0), bias=0.0, trained_at=0.0, n_train=0)
    assert model.predict(np.array([0.0, 0.0])).shape == ()
    assert float(model.predict(np.array([0.0, 0.0]))) == 0.5
    batch = np.zeros((4, 7, 2))
    assert model.predict(batch).shape == (4, 7)
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((3, 5)))


@pytest.mark.parametrize(
    ("x", "y", "w", "message"),
    [
        (np.zeros((5, 2)), np.zeros(4), None, "rows"),
        (np.zeros((0, 2)), np.zeros(0), None, "no data"),
        (np.zeros(5), np.zeros(5), None, "2-D"),
        (np.zeros((5, 2)), np.zeros((5, 1)), None, "1-D"),
        (np.array([[0.0], [math.nan]]), np.zeros(2), None, "X contains NaN"),
        (np.zeros((2, 1)), np.array([0.0, math.nan]), None, "y contains NaN"),
        (np.zeros((2, 1)), np.array([0.0, 1.5]), None, r"\[0, 1\]"),
        (np.zeros((2, 1)), np.zeros(2), np.array([1.0, -1.0]), ">= 0"),
        (np.zeros((2, 1)), np.zeros(2), np.array([1.0]), "sample_weight must have shape"),
        (np.zeros((2, 1)), np.zeros(2), np.zeros(2), "sums to 0"),
    ],
)
def test_fit_refuses_bad_input(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_logistic(x, y, sample_weight=w, version=1, trained_at=0.0)


def test_log_loss_and_brier_of_a_coin() -> None:
    coin = LogisticModel(version=1, weights=(0.0,), bias=0.0, trained_at=0.0, n_train=0)
    x = np.zeros((4, 1))
    y = np.array([0.0, 1.0, 1.0, 0.0])
    assert log_loss(coin, x, y) == pytest.approx(math.log(2))
    assert brier(coin, x, y) == pytest.approx(0.25)
    sure = LogisticModel(version=1, weights=(0.0,), bias=800.0, trained_at=0.0, n_train=0)
    assert log_loss(sure, x, y) == pytest.approx(400.0)  # finite even when confidently wrong
    assert brier(sure, x, y) == pytest.approx(0.5)


def test_log_loss_weights() -> None:
    model = LogisticModel(version=1, weights=(0.0,), bias=0.0, trained_at=0.0, n_train=0)
    x = np.zeros((2, 1))
    assert log_loss(model, x, np.array([0.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(math.log(2))


# -- holdout and promotion -------------------------------------------------------------------------
def test_split_holdout_keeps_the_most_recent_rows() -> None:
    train, hold = split_holdout(30, 0.2)
    assert train.tolist() == list(range(24))
    assert hold.tolist() == list(range(24, 30))
    train, hold = split_holdout(21, 0.2)
    assert hold.tolist() == [16, 17, 18, 19, 20]
    train, hold = split_holdout(0)
    assert train.size == hold.size == 0
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_holdout(10, 1.0)


def test_first_model_is_always_promoted_as_version_1() -> None:
    x, y, _ = _data(500, seed=7)
    result = propose_retraining(None, x, y, now=123.0)
    assert result.promoted
    assert result.current_loss is None
    assert result.candidate.version == 1
    assert result.candidate.trained_at == 123.0
    assert result.candidate.n_train == 400
    assert result.candidate.metrics["holdout_log_loss"] == pytest.approx(result.candidate_loss)
    assert "holdout_brier" in result.candidate.metrics
    assert result.candidate.metrics["n_holdout"] == 100


def test_better_model_is_promoted_and_worse_one_refused() -> None:
    x, y, _ = _data(3000, seed=8)
    shuffled = np.random.default_rng(9).permutation(y)
    good = fit_logistic(x, y, version=3, trained_at=0.0)
    noise = fit_logistic(x, shuffled, version=3, trained_at=0.0)

    # The current model learned noise; the data are real: the candidate wins.
    result = propose_retraining(noise, x, y, now=1.0)
    assert result.promoted
    assert result.current_loss is not None
    assert result.candidate_loss < result.current_loss
    assert result.candidate.version == 4
    assert result.candidate.metrics["current_holdout_log_loss"] == pytest.approx(result.current_loss)
    assert result.reason.startswith("promoted")

    # The current model is right; the older (training) rows have shuffled labels, the recent holdout is real.
    train_idx, _ = split_holdout(len(y))
    y_bad = y.copy()
    y_bad[train_idx] = np.random.default_rng(10).permutation(y[train_idx])
    result = propose_retraining(good, x, y_bad, now=2.0)
    assert not result.promoted
    assert result.current_loss is not None
    assert result.candidate_loss > result.current_loss
    assert result.candidate.version == 4
    assert result.reason.startswith("not promoted")


def test_min_improvement_is_required() -> None:
    x, y, _ = _data(1000, seed=11)
    current = fit_logistic(x[:900], y[:900], version=1, trained_at=0.0)
    result = propose_retraining(current, x, y, now=0.0, min_improvement=10.0)
    assert not result.promoted
    assert "not promoted" in result.reason


def test_too_little_data_is_not_promoted_and_does_not_raise() -> None:
    x, y, _ = _data(15, seed=12)
    result = propose_retraining(None, x, y, now=0.0)
    assert not result.promoted
    assert "too little data" in result.reason
    assert result.candidate.version == 1

    x, y, _ = _data(40, seed=13)
    result = propose_retraining(None, x, y, now=0.0, holdout_fraction=0.1)  # 4 held-back rows
    assert not result.promoted
    assert "holdout too small" in result.reason

    result = propose_retraining(None, np.zeros((0, 3)), np.zeros(0), now=0.0)
    assert not result.promoted
    assert result.candidate.weights == (0.0, 0.0, 0.0)
    assert math.isnan(result.candidate_loss)


def test_feature_count_mismatch_with_current_model_raises() -> None:
    current = LogisticModel(version=1, weights=(0.0, 0.0), bias=0.0, trained_at=0.0, n_train=0)
    x, y, _ = _data(100, seed=14)
    with pytest.raises(ValueError, match="features"):
        propose_retraining(current, x, y, now=0.0)


# -- properties ------------------------------------------------------------------------------------
_finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=4),
    bias=st.floats(-1e3, 1e3),
    data=st.data(),
)
def test_predictions_are_probabilities(weights: list[float], bias: float, data: st.DataObject) -> None:
    model = LogisticModel(version=1, weights=tuple(weights), bias=bias, trained_at=0.0, n_train=0)
    x = data.draw(hnp.arrays(np.float64, (5, len(weights)), elements=_finite))
    p = model.predict(x)
    assert p.shape == (5,)
    assert np.all((p >= 0.0) & (p <= 1.0))


@settings(max_examples=50, deadline=None)
@given(
    x=hnp.arrays(np.float64, (12, 2), elements=st.floats(-100, 100)),
    y=hnp.arrays(np.float64, (12,), elements=st.floats(0.0, 1.0)),
)
def test_fit_on_arbitrary_soft_data_gives_probabilities(x: np.ndarray, y: np.ndarray) -> None:
    model = fit_logistic(x, y, version=1, trained_at=0.0)
    p = model.predict(x)
    assert np.all((p >= 0.0) & (p <= 1.0))
    assert math.isfinite(log_loss(model, x, y))


# -- the reason names the recorded version; no promotion without variation or convergence ---------------------
def test_reason_names_the_version_it_is_given() -> None:
    x, y, _ = _data(500, seed=15)
    # v1 was recorded but not promoted: the first promoted model is v2, and the reason must say so.
    first = propose_retraining(None, x, y, now=0.0, version=2)
    assert first.promoted and first.candidate.version == 2
    assert "v2" in first.reason and "v1" not in first.reason

    current = fit_logistic(x, np.random.default_rng(16).permutation(y), version=2, trained_at=0.0)
    later = propose_retraining(current, x, y, now=0.0, version=5)  # v3 and v4 were recorded, not promoted
    assert later.promoted and later.candidate.version == 5
    assert later.reason.startswith("promoted: v5 ") and "v2" in later.reason and "v3" not in later.reason

    assert propose_retraining(current, x, y, now=0.0).candidate.version == 3  # default: current + 1
    for bad in (0, 2, True):
        with pytest.raises(ValueError, match="version"):
            propose_retraining(current, x, y, now=0.0, version=bad)


@pytest.mark.parametrize(("code", "name"), [(1.0, "1 (override)"), (0.0, "0 (like)"), (0.5, "0.5 (neutral)")])
def test_one_class_training_targets_are_not_promoted(code: float, name: str) -> None:
    # 25 answers of one key, all the same: the old fit ran the bias off (never converged) and was promoted,
    # predicting that code for every scenario ever after.
    x = np.tile(np.array([[1.0, 0.0, 0.5]]), (25, 1))
    y = np.full(25, code)
    result = propose_retraining(None, x, y, now=0.0)
    assert not result.promoted
    assert result.reason == (
        f"not promoted: all 20 training answers have the same feedback code {name}, "
        "so there is no variation to learn from"
    )
    assert result.candidate.version == 1 and result.candidate.n_train == 20  # still a candidate to record
    assert all(math.isfinite(w) for w in result.candidate.weights) and abs(result.candidate.bias) < 15

    # Not even against a current model that is worse on the (one-class) recent rows.
    current = LogisticModel(version=4, weights=(0.0, 0.0, 0.0), bias=0.0, trained_at=0.0, n_train=0)
    again = propose_retraining(current, x, y, now=0.0)
    assert not again.promoted and again.current_loss is not None and "no variation" in again.reason


def test_zero_weight_rows_do_not_count_as_variation() -> None:
    x, _, _ = _data(30, seed=17)
    y = np.ones(30)
    y[3] = 0.0
    w = np.ones(30)
    w[3] = 0.0  # the only like carries no weight
    result = propose_retraining(None, x, y, sample_weight=w, now=0.0)
    assert not result.promoted and "all 23 training answers have the same feedback code 1" in result.reason


def test_a_fit_that_did_not_converge_is_not_promoted() -> None:
    # Separable classes and no penalty on the weights: the weights grow without bound until max_iter.
    x, _, _ = _data(200, seed=18)
    y = (x[:, 0] > 0).astype(np.float64)
    result = propose_retraining(None, x, y, now=0.0, l2=0.0)
    assert result.candidate.metrics["converged"] == 0.0
    assert not result.promoted
    assert (
        result.reason
        == "not promoted: the fit of v1 did not converge in 50 iterations, so its predictions cannot be trusted"
    )
    assert propose_retraining(None, x, y, now=0.0).promoted  # with the default penalty it converges and wins


def test_one_class_fit_converges_with_a_finite_bias() -> None:
    rng = np.random.default_rng(19)
    x = rng.normal(size=(20, 3))
    for code in (0.0, 1.0):
        model = fit_logistic(x, np.full(20, code), version=1, trained_at=0.0)
        assert model.metrics["converged"] == 1.0
        assert 5.0 < abs(model.bias) < 15.0  # P ≈ the code, but the bias does not run off
        assert np.allclose(model.predict(x), code, atol=1e-3)
    unpenalised = fit_logistic(x, np.ones(20), l2_bias=0.0, version=1, trained_at=0.0)
    assert unpenalised.metrics["converged"] == 0.0  # the old behaviour, for comparison
    with pytest.raises(ValueError, match="l2_bias"):
        fit_logistic(x, np.ones(20), l2_bias=-1.0, version=1, trained_at=0.0)


def test_training_answers_of_one_scenario_key_are_not_promoted() -> None:
    # 9 in 10 answers of one key overridden: the old rule promoted the fit as the first model, and its
    # P(override) ≈ 0.9 then became the prior of every new key (whose score fell below every threshold).
    x, _, _ = _data(40, seed=20)
    y = np.where(np.arange(40) % 10 == 0, 0.0, 1.0)
    one = propose_retraining(None, x, y, now=0.0, groups=["disk|drain"] * 40)
    assert not one.promoted
    assert one.reason == (
        "not promoted: all 32 training answers are about one scenario key, so the model would only carry that "
        "key's override rate over to every new key"
    )
    # A second key among the held-back rows only, or with zero weight, does not count.
    late = ["disk|drain"] * 32 + ["psu|swap"] * 8
    assert not propose_retraining(None, x, y, now=0.0, groups=late).promoted
    w = np.ones(40)
    w[1] = 0.0
    lone = ["disk|drain"] * 40
    lone[1] = "psu|swap"
    assert not propose_retraining(None, x, y, sample_weight=w, now=0.0, groups=lone).promoted
    two = propose_retraining(None, x, y, now=0.0, groups=["disk|drain", "psu|swap"] * 20)
    assert two.promoted and two.reason.startswith("promoted: v1 is the first promoted model")
    assert propose_retraining(None, x, y, now=0.0).promoted  # without groups: no such check
    with pytest.raises(ValueError, match="groups has 39 entries but X has 40 rows"):
        propose_retraining(None, x, y, now=0.0, groups=["k"] * 39)


# -- the base rate: a model must beat predicting every answer at the training answers' mean code ----------------
def _flipped_world() -> tuple[np.ndarray, np.ndarray]:
    """40 answers about two kinds (one-hot features): the older 32 override kind A and like kind B, the 8 most
    recent (held back) the opposite — what the fit learns from the older rows is wrong on the recent ones."""
    x = np.zeros((40, 2))
    x[::2, 0] = 1.0
    x[1::2, 1] = 1.0
    y = x[:, 0].copy()
    y[32:] = 1.0 - y[32:]
    return x, y


def test_a_first_model_worse_than_the_base_rate_is_not_promoted() -> None:
    # Before: promoted as "the first model" with a holdout log loss of 5.6 nats — eight times a coin's — and from
    # then on the prior of every young key through the model prior.
    x, y = _flipped_world()
    result = propose_retraining(None, x, y, now=0.0, groups=["a", "b"] * 20)
    assert not result.promoted
    assert result.base_rate_loss == pytest.approx(math.log(2))  # the training answers' mean code is 0.5
    assert result.candidate.metrics["base_rate_holdout_log_loss"] == pytest.approx(math.log(2))
    assert result.candidate_loss > 2.0
    assert result.reason == (
        f"not promoted: v1 holdout log loss {result.candidate_loss:.4f} is not below the base rate's 0.6931 "
        "(every answer predicted at the training answers' mean code 0.5) on 8 recent rows: "
        "its features add nothing to the override rate"
    )


def test_beating_the_current_model_is_not_enough_without_beating_the_base_rate() -> None:
    x, y = _flipped_world()
    worse = LogisticModel(version=1, weights=(8.0, -8.0), bias=0.0, trained_at=0.0, n_train=32)
    result = propose_retraining(worse, x, y, now=0.0)
    assert result.current_loss is not None and result.candidate_loss < result.current_loss
    assert not result.promoted and "base rate" in result.reason

    # With real signal the candidate beats both, and the reason names both.
    xs, ys, _ = _data(500, seed=21)
    noise = fit_logistic(xs, np.random.default_rng(22).permutation(ys), version=1, trained_at=0.0)
    good = propose_retraining(noise, xs, ys, now=0.0)
    assert good.promoted and good.base_rate_loss is not None and good.candidate_loss < good.base_rate_loss
    assert "base rate" in good.reason


def test_counts_are_of_rows_that_carry_weight() -> None:
    # Rows of weight 0 (an answer left out of the fit, an operator NPO does not trust) are not "trained on".
    x, y, _ = _data(100, seed=23)
    w = np.ones(100)
    w[:30] = 0.0
    w[95:] = 0.0
    result = propose_retraining(None, x, y, sample_weight=w, now=0.0)
    assert result.candidate.n_train == 50 and result.candidate.metrics["n_holdout"] == 15


def test_answers_that_all_carry_no_weight_are_not_fitted_as_if_trusted() -> None:
    x, y, _ = _data(100, seed=24)
    result = propose_retraining(None, x, y, sample_weight=np.zeros(100), now=0.0)
    assert not result.promoted and result.candidate.n_train == 0
    assert result.reason == "not promoted: no training answer carries weight (NPO trusts none of their operators)"


def test_answers_whose_features_are_all_the_same_are_not_promoted() -> None:
    # Two clusters, one kind of recommendation: the scenario keys differ (the key names the cluster) but φ(s) does
    # not. The fit can only predict one P(override) for all, its mean code pulled a little towards ½ by the priors;
    # after a drift towards more overrides that pull beat the base rate by 2e-6 nats and the constant was promoted
    # as the first model ("0.8370 < base rate 0.8370"), the prior of every young key.
    spec = KeySpec(fields=("fault_type", "action", "cluster"))
    rows = []
    for i in range(40):
        labels = {"cluster": "east" if i % 2 else "west"}
        p = Prediction(id=f"p{i}", fault_type="disk_full", target="db-1", action="drain", confidence=0.9, labels=labels)
        overridden = i % 4 == 0 if i < 32 else i % 2 == 0  # 1 in 4 of the older answers, half of the recent ones
        rows.append((p, 1.0 if overridden else 0.0, 1.0))
    result = retrain_on_answers(rows, None, key_spec=spec, now=0.0, version=1)
    assert not result.promoted
    assert result.reason == (
        "not promoted: all 32 training answers have the same features φ(s), so v1 would predict one P(override) "
        "for every scenario (about their mean code): it knows nothing of scenarios"
    )
    # Rows of weight 0 do not count as variation; one more kind among the weighted answers does.
    x = np.ones((40, 2))
    y = np.where(np.arange(40) % 4 == 0, 1.0, 0.0)
    x[5] = [0.0, 1.0]
    w = np.ones(40)
    w[5] = 0.0
    assert "the same features" in propose_retraining(None, x, y, sample_weight=w, now=0.0).reason
    assert "the same features" not in propose_retraining(None, x, y, now=0.0).reason


@pytest.mark.parametrize("scale", [1e308, 1e200, 1e-300, 5e-324], ids=["largest", "huge", "tiny", "subnormal"])
def test_only_the_ratios_of_the_weights_matter_up_to_the_float_limits(scale: float) -> None:
    # Before, their sum overflowed to inf (the base rate became NaN and the comparison raised "weights and bias must
    # be finite"), or sums of subnormal weights lost their digits (holdout log loss 0.75 against a base rate of 1.0,
    # instead of 0.67 and 0.71).
    x, y, _ = _data(40, seed=25)
    unit = propose_retraining(None, x, y, now=0.0)
    scaled = propose_retraining(None, x, y, sample_weight=np.full(40, scale), now=0.0)
    assert scaled.promoted == unit.promoted and scaled.reason == unit.reason
    assert scaled.candidate_loss == pytest.approx(unit.candidate_loss, rel=1e-12)
    assert scaled.base_rate_loss == pytest.approx(unit.base_rate_loss, rel=1e-12)
    assert np.allclose(scaled.candidate.weights, unit.candidate.weights, rtol=1e-9, atol=1e-12)
    model = unit.candidate
    w = np.full(40, scale)
    assert log_loss(model, x, y, w) == pytest.approx(log_loss(model, x, y), rel=1e-12)
    assert brier(model, x, y, w) == pytest.approx(brier(model, x, y), rel=1e-12)
    fitted = fit_logistic(x, y, sample_weight=w, version=1, trained_at=0.0)
    assert fitted.metrics["train_log_loss"] == pytest.approx(
        fit_logistic(x, y, version=1, trained_at=0.0).metrics["train_log_loss"], rel=1e-12
    )
