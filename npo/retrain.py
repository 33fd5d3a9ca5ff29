"""Retraining the feature model: a numpy logistic regression φ(s) → P(override), promoted only if better.

The model predicts the feedback code y ∈ [0, 1] of a scenario from its features φ(s) (override 1, like 0,
neutral 0.5, skipped λ); soft targets are fitted by cross-entropy, so the prediction is the expected code,
read as P(override). It is fitted by Newton's method (IRLS) with a backtracking line search on

    J(w, b) = Σᵢ s̃ᵢ·CE(yᵢ, σ(xᵢ·w + b))  +  (l2 / 2)·‖w‖²  +  (l2_bias / 2)·b²,   s̃ᵢ = sᵢ·Σⱼ sⱼ / Σⱼ sⱼ²,

with sample weights sᵢ ≥ 0 (e.g. trust weights) rescaled so that they sum to Kish's effective sample size
(Σs)²/Σs² — unit weights stay 1, only ratios matter, zero-weight rows drop out: Gaussian priors
w ~ N(0, 1/l2) and, much weaker, b ~ N(0, 1/l2_bias), whose pull fades as data accumulate. For l2 > 0 and
l2_bias > 0, J is strictly convex and grows without bound, so it has exactly one minimum even when every
target is the same or the data are separable (the bias and weights cannot run off to infinity), and the fit
is deterministic. Features should be on comparable scales (l2 penalises raw weights).

:func:`propose_retraining` fits a candidate on the older rows and compares it with the current model on the
most recent rows (held back: rows are in time order), promoting only an improvement of a fit that converged
on training targets that vary (and, given each row's scenario key, about more than one key) and features that
vary (a model of answers that all look alike to it can only predict one P(override) for all), and only when it
also beats the *base rate* — every held-back answer predicted at the training answers' mean code, no features —
on those rows: a model that does not has learned nothing about scenarios that holds up on new answers, and as the
loop's prior of young keys it would do harm (the first model, which has no current one to beat, included). Every
candidate carries a version number and its holdout metrics, so each model version can be recorded.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from npo.scoring import N_FEATURES, KeySpec, features, scenario_key
from npo.types import Prediction

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_ROWS = 20
MIN_HOLDOUT_ROWS = 5
MIN_GROUPS = 2  # scenario keys among the training answers: a model of one key knows nothing of the others
L2_BIAS = 1e-3  # prior b ~ N(0, 1000): negligible next to a few answers, but keeps b finite on one-class data


def _sigmoid(z: FloatArray) -> FloatArray:
    """σ(z) without overflow for any finite z."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _cross_entropy(z: FloatArray, y: FloatArray) -> FloatArray:
    """Per-row CE(y, σ(z)) = y·log(1 + e^−z) + (1 − y)·log(1 + e^z), in nats, stable for any finite z."""
    return y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)


@dataclass(frozen=True, slots=True)
class LogisticModel:
    """A fitted logistic regression: P(override | x) = σ(x·weights + bias).

    ``version`` counts model versions (1 = first); ``trained_at`` is Unix seconds; ``n_train`` the number of
    training rows of positive weight; ``metrics`` named numbers (e.g. ``holdout_log_loss``), read-only.
    """

    version: int
    weights: tuple[float, ...]
    bias: float
    trained_at: float
    n_train: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weights = tuple(float(w) for w in self.weights)
        if not all(math.isfinite(w) for w in weights) or not math.isfinite(float(self.bias)):
            raise ValueError("LogisticModel: weights and bias must be finite")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "metrics", MappingProxyType({str(k): float(v) for k, v in self.metrics.items()}))

    @property
    def n_features(self) -> int:
        return len(self.weights)

    def decision_function(self, X: npt.ArrayLike) -> FloatArray:  # noqa: N803
        """The logit x·w + b for features of shape (..., n_features); returns shape (...)."""
        x = _as_features(X, self.n_features)
        return np.asarray(x @ np.asarray(self.weights, dtype=np.float64) + self.bias, dtype=np.float64)

    def predict(self, X: npt.ArrayLike) -> FloatArray:  # noqa: N803
        """P(override) ∈ [0, 1] for features of shape (..., n_features); returns shape (...).

        Raises ValueError when the last dimension is not ``n_features`` or X holds NaN/inf. Does not clip the
        features or look at any other state.
        """
        return _sigmoid(self.decision_function(X))


def _as_features(features: npt.ArrayLike, n_features: int) -> FloatArray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != n_features:
        raise ValueError(f"features must have shape (..., {n_features}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values")
    return x


def _validate(
    features: npt.ArrayLike,
    y: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None,
    *,
    allow_empty: bool = False,
    allow_no_weight: bool = False,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features), got shape {x.shape}")
    if t.ndim != 1:
        raise ValueError(f"y must be 1-D (rows,), got shape {t.shape}")
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"X has {x.shape[0]} rows but y has {t.shape[0]}")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError("no data: X and y have 0 rows")
    if not np.all(np.isfinite(x)):
        raise ValueError("X contains NaN or infinite values")
    if not np.all(np.isfinite(t)):
        raise ValueError("y contains NaN or infinite values")
    if np.any((t < 0.0) | (t > 1.0)):
        raise ValueError("y must lie in [0, 1] (feedback codes)")
    if sample_weight is None:
        s = np.ones(t.shape[0], dtype=np.float64)
    else:
        s = np.asarray(sample_weight, dtype=np.float64)
        if s.shape != t.shape:
            raise ValueError(f"sample_weight must have shape {t.shape}, got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError("sample_weight contains NaN or infinite values")
        if np.any(s < 0.0):
            raise ValueError("sample_weight must be >= 0")
        top = float(s.max()) if t.shape[0] > 0 else 0.0
        if t.shape[0] > 0 and not top > 0.0 and not allow_no_weight:
            raise ValueError("sample_weight sums to 0: nothing to fit or evaluate")
        if top > 0.0:
            s = s / top  # only ratios matter: sums of weights near the float limits neither overflow nor lose digits
    return x, t, s


def _objective(x: FloatArray, t: FloatArray, s: FloatArray, theta: FloatArray, ridge: FloatArray) -> float:
    z = x @ theta[:-1] + theta[-1]
    return float(np.dot(s, _cross_entropy(z, t)) + 0.5 * np.dot(ridge, theta * theta))


def fit_logistic(
    X: npt.ArrayLike,  # noqa: N803 (the usual name of a design matrix)
    y: npt.ArrayLike,
    *,
    sample_weight: npt.ArrayLike | None = None,
    l2: float = 1e-2,
    l2_bias: float = L2_BIAS,
    max_iter: int = 50,
    tol: float = 1e-8,
    version: int,
    trained_at: float,
) -> LogisticModel:
    """Fit P(override | x) = σ(x·w + b) to targets ``y`` ∈ [0, 1] (soft targets allowed) by penalised Newton.

    ``X``: (n, d) features, rows in any order; ``y``: (n,) codes; ``sample_weight``: (n,) non-negative weights
    (default 1); ``l2`` ≥ 0: ridge penalty on w, ``l2_bias`` ≥ 0: a (much weaker) one on b, both against the
    summed loss; stops after
    ``max_iter`` Newton steps or when the largest parameter change is below ``tol``. Deterministic.
    ``metrics`` holds ``train_log_loss`` (weighted mean, nats), ``iterations`` and ``converged`` (1.0 / 0.0).

    Raises ValueError for shape mismatch, no rows, NaN/inf, y outside [0, 1], negative or all-zero weights.
    Does not standardise features, select features or hold out data (see :func:`propose_retraining`).
    """
    x, t, s = _validate(X, y, sample_weight)
    if not (math.isfinite(l2) and l2 >= 0.0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    if not (math.isfinite(l2_bias) and l2_bias >= 0.0):
        raise ValueError(f"l2_bias must be a finite number >= 0, got {l2_bias}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    n, d = x.shape
    s_norm = s / s.sum()
    s_unit = s / s.max()  # no underflow in Σs² for tiny weights
    s_eff = s_unit * (s_unit.sum() / np.dot(s_unit, s_unit))  # sums to Kish's effective n
    design = np.hstack([x, np.ones((n, 1))])
    ridge = np.full(d + 1, l2)
    ridge[-1] = l2_bias
    jitter = 1e-9  # keeps the Hessian invertible (e.g. l2 = 0 on separable or collinear data)
    # Start at the bias that matches the weighted mean target: a good, deterministic starting point.
    mean_t = float(np.clip(np.dot(s_norm, t), 1e-6, 1.0 - 1e-6))
    theta = np.zeros(d + 1)
    theta[-1] = math.log(mean_t / (1.0 - mean_t))
    current = _objective(x, t, s_eff, theta, ridge)
    converged = False
    iterations = 0
    for _ in range(max_iter):
        iterations += 1
        z = design @ theta
        p = _sigmoid(z)
        grad = design.T @ (s_eff * (p - t)) + ridge * theta
        curvature = s_eff * p * (1.0 - p)
        hessian = (design.T * curvature) @ design + np.diag(ridge + jitter)
        try:
            direction = np.linalg.solve(hessian, grad)
        except np.linalg.LinAlgError:
            direction = np.linalg.lstsq(hessian, grad, rcond=None)[0]
        step = 1.0
        while True:
            candidate = theta - step * direction
            value = _objective(x, t, s_eff, candidate, ridge)
            if value <= current + 1e-4 * step * float(np.dot(grad, -direction)) or step < 1e-10:
                break
            step *= 0.5
        change = float(np.max(np.abs(candidate - theta)))
        if value <= current:
            theta, current = candidate, value
        if change < tol or step < 1e-10:
            # A step too small to decrease J means we are at the optimum up to rounding.
            converged = True
            break
    train_loss = float(np.dot(s_norm, _cross_entropy(design @ theta, t)))
    return LogisticModel(
        version=version,
        weights=tuple(float(v) for v in theta[:-1]),
        bias=float(theta[-1]),
        trained_at=float(trained_at),
        n_train=int(np.count_nonzero(s > 0.0)),
        metrics={
            "train_log_loss": train_loss,
            "iterations": float(iterations),
            "converged": float(converged),
        },
    )


def log_loss(
    model: LogisticModel,
    X: npt.ArrayLike,  # noqa: N803
    y: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None = None,
) -> float:
    """Weighted mean cross-entropy of ``model`` on (X, y), in nats (0 = perfect; ln 2 ≈ 0.693 = a coin).

    Computed from the logit, so it is finite even for confident wrong predictions. Soft y allowed. Raises
    ValueError on bad input or no rows. Does not penalise the weights (unlike the fit objective).
    """
    x, t, s = _validate(X, y, sample_weight)
    z = model.decision_function(x)
    return float(np.dot(s, _cross_entropy(z, t)) / s.sum())


def brier(
    model: LogisticModel,
    X: npt.ArrayLike,  # noqa: N803
    y: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None = None,
) -> float:
    """Weighted mean squared error (p − y)² ∈ [0, 1] of the predicted probabilities.

    Raises like :func:`log_loss`. Does not penalise the weights."""
    x, t, s = _validate(X, y, sample_weight)
    p = model.predict(x)
    return float(np.dot(s, (p - t) ** 2) / s.sum())


def split_holdout(n: int, holdout_fraction: float = 0.2) -> tuple[IntArray, IntArray]:
    """Split row indices 0…n−1 (in time order) into (train, holdout); the holdout is the most recent rows.

    The holdout has ⌈n·holdout_fraction⌉ rows (so it is non-empty for n ≥ 1); ``holdout_fraction`` ∈ (0, 1).
    Does not shuffle.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    n_hold = min(int(n), math.ceil(int(n) * holdout_fraction - 1e-9))
    idx = np.arange(int(n), dtype=np.int64)
    return idx[: int(n) - n_hold], idx[int(n) - n_hold :]


@dataclass(frozen=True, slots=True)
class RetrainResult:
    """A retraining attempt: the ``candidate`` model, whether it was ``promoted``, both models' log loss on
    the held-back rows (``current_loss`` None without a current model; NaN when there were no held-back rows),
    a human-readable ``reason``, and the base rate's log loss on the same rows (``base_rate_loss``: every answer
    predicted at the training answers' mean code; None when there was nothing to fit or to compare on)."""

    candidate: LogisticModel
    promoted: bool
    current_loss: float | None
    candidate_loss: float
    reason: str
    base_rate_loss: float | None = None


_CODE_NAMES = {1.0: " (override)", 0.0: " (like)", 0.5: " (neutral)"}


def propose_retraining(
    current: LogisticModel | None,
    X: npt.ArrayLike,  # noqa: N803 (the usual name of a design matrix)
    y: npt.ArrayLike,
    *,
    sample_weight: npt.ArrayLike | None = None,
    holdout_fraction: float = 0.2,
    min_improvement: float = 0.0,
    now: float,
    l2: float = 1e-2,
    version: int | None = None,
    groups: Sequence[Hashable] | None = None,
) -> RetrainResult:
    """Fit a candidate on older rows, compare it with ``current`` on the most recent rows, decide promotion.

    ``X`` (n, d) and ``y`` (n,) are logged feedback in time order (oldest first). The candidate gets
    ``version`` — pass the number it will be recorded under (e.g. the highest recorded version + 1, counting
    versions that were not promoted), as ``reason`` names it; default ``current.version + 1``, or 1. It is
    promoted iff its weighted holdout log loss is below the current model's minus ``min_improvement`` (≥ 0,
    nats) — no such comparison when ``current`` is None — and below the base rate's (the constant model that
    predicts every held-back row at the weighted mean of the training targets). It is not promoted, with a
    ``reason`` saying why (the candidate is still fitted on what there is; the zero model σ(0) = 0.5 when there
    are no training rows), when there are fewer than 20 rows or fewer than 5 held-back rows of positive weight,
    when no training row carries weight, when every training target (of positive weight) is the
    same code — nothing to learn from, a fit would only push P(override) for every scenario towards that code
    — when ``groups`` (the scenario key of each row) are given and the training answers (of positive weight)
    are about fewer than 2 keys — a model of one key knows nothing of the others, whose scores it would still
    pull towards that key's rate through the model prior, while the key itself has its own m(k) — when every
    training answer (of positive weight) has the same features — the fit then predicts one P(override) for every
    scenario, about their mean code, and can beat the base rate only by its priors' pull towards ½ — or when the
    fit did not converge. ``metrics`` carry ``holdout_log_loss``, ``holdout_brier``,
    ``current_holdout_log_loss`` (when there is a current model), ``base_rate_holdout_log_loss``, ``n_holdout``
    (held-back rows of positive weight). Sample weights of 0 leave a row out; all-zero weights are allowed (a
    window of answers from operators NPO does not trust) and are not promoted.

    Raises ValueError for malformed data (shapes, NaN, y outside [0, 1], ``groups`` of another length), a current
    model with another number of features, or a ``version`` below 1 or not above ``current.version``. Does not
    store, post or re-initialise anything (the caller records the version and, when promoted, may reset m(k) and
    the bandit).
    """
    x, t, s = _validate(X, y, sample_weight, allow_empty=True, allow_no_weight=True)
    if not (math.isfinite(min_improvement) and min_improvement >= 0.0):
        raise ValueError(f"min_improvement must be a finite number >= 0, got {min_improvement}")
    n, d = x.shape
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries but X has {n} rows")
    if current is not None and current.n_features != d:
        raise ValueError(f"the current model uses {current.n_features} features but the data has {d}")
    if version is None:
        version = 1 if current is None else current.version + 1
    elif isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    elif current is not None and version <= current.version:
        raise ValueError(f"version {version} must be above the current model's v{current.version}")
    version = int(version)
    train_idx, hold_idx = split_holdout(n, holdout_fraction)
    trainable = train_idx.size > 0 and s[train_idx].sum() > 0.0
    if trainable:
        fitted = fit_logistic(
            x[train_idx], t[train_idx], sample_weight=s[train_idx], l2=l2, version=version, trained_at=now
        )
    else:
        fitted = LogisticModel(version=version, weights=(0.0,) * d, bias=0.0, trained_at=float(now), n_train=0)
    metrics: dict[str, float] = dict(fitted.metrics)
    n_holdout = int(np.count_nonzero(s[hold_idx] > 0.0))
    metrics["n_holdout"] = float(n_holdout)
    evaluable = n_holdout > 0
    candidate_loss = math.nan
    current_loss: float | None = None
    base_rate: float | None = None  # the training targets' weighted mean code
    base_loss: float | None = None
    if evaluable:
        xh, th, sh = x[hold_idx], t[hold_idx], s[hold_idx]
        candidate_loss = log_loss(fitted, xh, th, sh)
        metrics["holdout_log_loss"] = candidate_loss
        metrics["holdout_brier"] = brier(fitted, xh, th, sh)
        if current is not None:
            current_loss = log_loss(current, xh, th, sh)
            metrics["current_holdout_log_loss"] = current_loss
        if trainable:
            base_rate = float(np.dot(s[train_idx], t[train_idx]) / s[train_idx].sum())
            p0 = min(max(base_rate, 1e-6), 1.0 - 1e-6)  # finite even for one-class targets (refused below)
            constant = LogisticModel(
                version=version, weights=(0.0,) * d, bias=math.log(p0 / (1.0 - p0)), trained_at=0.0, n_train=0
            )
            base_loss = log_loss(constant, xh, th, sh)
            metrics["base_rate_holdout_log_loss"] = base_loss
    elif current is not None:
        current_loss = math.nan
    candidate = LogisticModel(
        version=fitted.version,
        weights=fitted.weights,
        bias=fitted.bias,
        trained_at=fitted.trained_at,
        n_train=fitted.n_train,
        metrics=metrics,
    )

    def result(promoted: bool, reason: str) -> RetrainResult:
        return RetrainResult(candidate, promoted, current_loss, candidate_loss, reason, base_loss)

    if n < MIN_ROWS:
        return result(False, f"not promoted: too little data ({n} rows < {MIN_ROWS})")
    if train_idx.size > 0 and not trainable and s.sum() == 0.0:
        return result(False, "not promoted: no training answer carries weight (NPO trusts none of their operators)")
    if n_holdout < MIN_HOLDOUT_ROWS or not trainable:
        return result(
            False,
            f"not promoted: holdout too small ({n_holdout} recent rows of positive weight < {MIN_HOLDOUT_ROWS}, "
            f"or no training row of positive weight)",
        )
    weighted = s[train_idx] > 0.0
    codes = np.unique(t[train_idx][weighted])
    if codes.size == 1:
        code = float(codes[0])
        return result(
            False,
            f"not promoted: all {int(weighted.sum())} training answers have the same feedback code "
            f"{code:g}{_CODE_NAMES.get(code, '')}, so there is no variation to learn from",
        )
    if groups is not None:
        seen = {groups[int(i)] for i in train_idx[weighted]}
        if len(seen) < MIN_GROUPS:
            return result(
                False,
                f"not promoted: all {int(weighted.sum())} training answers are about one scenario key, so the "
                f"model would only carry that key's override rate over to every new key",
            )
    trained = x[train_idx][weighted]
    if not np.any(trained != trained[0]):
        return result(
            False,
            f"not promoted: all {int(weighted.sum())} training answers have the same features φ(s), so v{version} "
            f"would predict one P(override) for every scenario (about their mean code): it knows nothing of "
            f"scenarios",
        )
    if not fitted.metrics["converged"]:
        return result(
            False,
            f"not promoted: the fit of v{version} did not converge in {fitted.metrics['iterations']:g} "
            f"iterations, so its predictions cannot be trusted",
        )
    base_loss = math.nan if base_loss is None else base_loss  # set whenever trainable and evaluable (above)
    if not candidate_loss < base_loss:
        return result(
            False,
            f"not promoted: v{version} holdout log loss {candidate_loss:.4f} is not below the base rate's "
            f"{base_loss:.4f} (every answer predicted at the training answers' mean code {base_rate or 0:.2g}) on "
            f"{n_holdout} recent rows: its features add nothing to the override rate",
        )
    base = f"base rate {base_loss:.4f}"
    if current is None or current_loss is None:
        return result(
            True,
            f"promoted: v{version} is the first promoted model, holdout log loss {candidate_loss:.4f} < {base} "
            f"on {n_holdout} recent rows",
        )
    if candidate_loss < current_loss - min_improvement:
        return result(
            True,
            f"promoted: v{version} holdout log loss {candidate_loss:.4f} < "
            f"v{current.version} {current_loss:.4f} − {min_improvement:g} and < {base} "
            f"on {n_holdout} recent rows",
        )
    return result(
        False,
        f"not promoted: v{version} holdout log loss {candidate_loss:.4f} is not below "
        f"v{current.version} {current_loss:.4f} − {min_improvement:g} on {n_holdout} recent rows",
    )


Answer = tuple[Prediction, float, float]  # (prediction, feedback code y, trust weight) of one effective answer


def retrain_on_answers(
    rows: Sequence[Answer], current: LogisticModel | None, *, key_spec: KeySpec, now: float, version: int
) -> RetrainResult:
    """Fit and compare a candidate on logged answers (oldest first), as Approve of a retraining proposal does:
    features φ(s), codes y, trust weights (0 for a distrusted operator); the answers of a held-back recommendation
    are kept out of the fit (several people answer one recommendation, so the comparison is on recommendations the
    candidate has not seen: the split :func:`propose_retraining` makes); each row's scenario key (``key_spec``) is
    its group. Promoted only if it beats ``current`` and the base rate on the held-back answers."""
    x = np.array([features(p) for p, _, _ in rows], dtype=np.float64).reshape(len(rows), N_FEATURES)
    y = np.array([code for _, code, _ in rows], dtype=np.float64)
    w = np.array([weight for _, _, weight in rows], dtype=np.float64)
    train, hold = split_holdout(len(rows))
    held = {rows[int(i)][0].id for i in hold}
    for i in train:
        if rows[int(i)][0].id in held:
            w[int(i)] = 0.0
    keys = [scenario_key(p, key_spec) for p, _, _ in rows]
    return propose_retraining(
        current, x, y, sample_weight=w if len(rows) else None, now=now, version=version, groups=keys
    )
