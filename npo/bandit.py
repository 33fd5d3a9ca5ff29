"""The threshold bandit: Thompson sampling over decision thresholds τ.

One Beta(α, β) posterior per τ in the grid (default {0.5, 0.6, 0.7, 0.8, 0.9}). Each prediction samples every
arm and uses the τ with the largest draw. Rewards are fractional (α += w·r, β += w·(1 − r)):

* surfaced and liked 1, overridden 0, neutral 0.5, skipped 1 − λ;
* the **miss term**: suppressed (R < τ) and later confirmed a real fault 0, suppressed and expired without a
  fault 1, each with a configurable weight. Without it the bandit only hears about what it surfaced, drifts to
  the highest τ and recall collapses.

**Full information** (``full_information``, the default): R(s) of every decision is known, so one answer or outcome says
what *every* arm would have earned, not only the arm drawn. For a prediction with score R, an arm with τ ≤ R would
have surfaced it and earns the surfaced reward r (from the answer: 1 − y; from the outcome of a suppressed one: 1
for a real fault, 0 for a false alarm) with the event's weight; an arm with τ > R would have suppressed it and
earns the miss term's credit, 1 − r, counted as ``quiet_weight`` on the success side and ``miss_weight`` on the
failure side (suppressing a liked recommendation is a miss, suppressing an overridden one a quiet expiry). Every
event then updates all arms (:meth:`ThresholdBandit.observe_surfaced`, :meth:`ThresholdBandit.observe_suppressed`),
so exploring a poor τ costs nothing in learning; Thompson sampling still picks the τ in force.

**The ignorance prior** (``prior_events`` = n > 0): before any evidence, every arm is credited with n
pseudo-predictions of unknown truth — even odds of a real fault — whose score R is spread uniformly over the
grid's range [τ₁, 1]. Arm τ would suppress a share s = (τ − τ₁)/(1 − τ₁) of them, so its prior is

    α = α₀ + n·½·((1 − s) + s·quiet_weight),   β = β₀ + n·½·((1 − s) + s·miss_weight)

— the expected full-information credit of one such prediction (:meth:`ThresholdBandit.credit` with reward ½),
in the bandit's own currency. The lowest τ starts at even odds; an arm that suppresses more starts lower by as
much as the miss term says a suppressed real fault costs, so with no evidence the bandit does not suppress on a
coin flip, and the tilt scales with ``miss_weight`` (none when misses cost what quiet expiries earn). n = 0 is
the flat Beta(α₀, β₀) of every arm (the paper's).

Discounting (γ < 1) pulls every arm's evidence back toward its prior by a factor γ per update, so the bandit
forgets stale evidence after a drift; with γ = 1 updates commute (order-independent).

The same arithmetic is available vectorised (:func:`choose_batch`, :func:`update_batch`) over leading batch
dimensions of shape (..., K).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True, slots=True)
class BanditConfig:
    """Arms, prior, discount and miss-term weights of a :class:`ThresholdBandit`."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    gamma: float = 1.0
    miss_weight: float = 1.0  # weight of "suppressed, then a real fault" (reward 0)
    quiet_weight: float = 0.2  # weight of "suppressed, expired without a fault" (reward 1)
    full_information: bool = True  # every answer / outcome updates every arm through its known score R(s)
    prior_events: float = 0.0  # the ignorance prior's pseudo-predictions (module docstring); 0: flat prior

    def __post_init__(self) -> None:
        ts = tuple(float(t) for t in self.thresholds)
        if not ts:
            raise InvalidRecord("thresholds", "must hold at least one threshold")
        if any(not 0.0 <= t <= 1.0 for t in ts):
            raise InvalidRecord("thresholds", f"must all be in [0, 1], got {list(ts)}")
        if list(ts) != sorted(set(ts)):
            raise InvalidRecord("thresholds", f"must be strictly increasing, got {list(ts)}")
        object.__setattr__(self, "thresholds", ts)
        if not (math.isfinite(self.prior_alpha) and self.prior_alpha > 0) or not (
            math.isfinite(self.prior_beta) and self.prior_beta > 0
        ):
            raise InvalidRecord("prior", f"Beta prior must be positive, got ({self.prior_alpha}, {self.prior_beta})")
        if not 0.0 < self.gamma <= 1.0:
            raise InvalidRecord("gamma", f"must be in (0, 1], got {self.gamma}")
        for name in ("miss_weight", "quiet_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 10.0:
                raise InvalidRecord(name, f"must be in [0, 10], got {value}")
        if not isinstance(self.full_information, bool):
            raise InvalidRecord("full_information", f"must be true or false, got {self.full_information!r}")
        if not (math.isfinite(self.prior_events) and 0.0 <= self.prior_events <= 100.0):
            raise InvalidRecord("prior_events", f"must be in [0, 100], got {self.prior_events}")

    @property
    def n_arms(self) -> int:
        return len(self.thresholds)

    @property
    def arm_prior(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(α, β) of every arm before any evidence: the flat prior plus the ignorance prior (module docstring)."""
        return _arm_prior(self)


@functools.lru_cache(maxsize=64)
def _arm_prior(config: BanditConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    n = config.prior_events
    if n == 0.0:
        k = config.n_arms
        return (config.prior_alpha,) * k, (config.prior_beta,) * k
    lo = config.thresholds[0]
    alpha, beta = [], []
    for t in config.thresholds:
        s = (t - lo) / (1.0 - lo) if lo < 1.0 else 0.0
        alpha.append(config.prior_alpha + n * 0.5 * ((1.0 - s) + s * config.quiet_weight))
        beta.append(config.prior_beta + n * 0.5 * ((1.0 - s) + s * config.miss_weight))
    return tuple(alpha), tuple(beta)


@dataclass(frozen=True, slots=True)
class ThresholdBandit:
    """Posterior state of the threshold bandit. Immutable: every update returns a new bandit."""

    config: BanditConfig = field(default_factory=BanditConfig)
    alpha: tuple[float, ...] = ()
    beta: tuple[float, ...] = ()
    # Per arm, the events credited to it as the τ drawn: each new answer (not a changed one) to a prediction decided
    # with it, and each outcome of one it suppressed — not how often it was drawn. Kept by :meth:`reset`.
    pulls: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        k = self.config.n_arms
        if not self.alpha or not self.beta:
            prior_alpha, prior_beta = self.config.arm_prior
            if not self.alpha:
                object.__setattr__(self, "alpha", prior_alpha)
            if not self.beta:
                object.__setattr__(self, "beta", prior_beta)
        if not self.pulls:
            object.__setattr__(self, "pulls", (0,) * k)
        for name in ("alpha", "beta", "pulls"):
            values = getattr(self, name)
            if len(values) != k:
                raise InvalidRecord(name, f"must have {k} entries (one per threshold), got {len(values)}")
        if not all(0.0 < a < math.inf for a in self.alpha) or not all(0.0 < b < math.inf for b in self.beta):
            raise InvalidRecord("posterior", "Beta parameters must be positive and finite")

    # -- reading -----------------------------------------------------------------------------------------
    def threshold(self, arm: int) -> float:
        """τ of ``arm``."""
        return self.config.thresholds[arm]

    def posterior_means(self) -> tuple[float, ...]:
        """E[reward] per arm, α / (α + β), each in (0, 1)."""
        return tuple(a / (a + b) for a, b in zip(self.alpha, self.beta, strict=True))

    def choose(self, rng: np.random.Generator) -> int:
        """Thompson choice: draw one sample per arm from its posterior and return the arm with the largest draw."""
        # One scalar draw per arm: the same stream and first-maximum tie-break as ``rng.beta`` on arrays, without
        # the per-call argument checks that make the array form ~3x slower for five arms.
        draws = [rng.beta(a, b) for a, b in zip(self.alpha, self.beta, strict=True)]
        return draws.index(max(draws))

    # -- learning ----------------------------------------------------------------------------------------
    def update(self, arm: int, reward: float, weight: float = 1.0) -> ThresholdBandit:
        """Fold one fractional ``reward`` ∈ [0, 1] (with ``weight`` ≥ 0) into ``arm``; discount all arms by γ first."""
        self._check(arm, reward, weight)
        g = self.config.gamma
        if g < 1.0:
            pa, pb = self.config.arm_prior
            alpha = [p + g * (a - p) for a, p in zip(self.alpha, pa, strict=True)]
            beta = [p + g * (b - p) for b, p in zip(self.beta, pb, strict=True)]
        else:
            alpha, beta = list(self.alpha), list(self.beta)
        alpha[arm] += weight * reward
        beta[arm] += weight * (1.0 - reward)
        pulls = list(self.pulls)
        pulls[arm] += 1
        return self._derive(tuple(alpha), tuple(beta), tuple(pulls))

    def replace_reward(
        self, arm: int, old_reward: float, new_reward: float, weight: float = 1.0, new_weight: float | None = None
    ) -> ThresholdBandit:
        """Swap an earlier reward of ``arm`` for a new one (a person changing their answer); no discount, no new pull.

        ``new_weight`` (default ``weight``) is the weight of the new answer when it differs from the old one's (a
        person's click replacing a skip). Parameters never fall below the prior (the evidence removed may already
        have been discounted).
        """
        self._check(arm, old_reward, weight)
        self._check(arm, new_reward, weight)
        pa, pb = self.config.arm_prior
        alpha = list(self.alpha)
        beta = list(self.beta)
        w_new = weight if new_weight is None else new_weight
        if not 0.0 <= w_new < math.inf:  # NaN included
            raise InvalidRecord("weight", f"must be a finite number >= 0, got {w_new}")
        alpha[arm] = max(pa[arm], alpha[arm] + w_new * new_reward - weight * old_reward)
        beta[arm] = max(pb[arm], beta[arm] + w_new * (1.0 - new_reward) - weight * (1.0 - old_reward))
        return self._derive(tuple(alpha), tuple(beta), self.pulls)

    def miss_update(self, arm: int, real_fault: bool) -> ThresholdBandit:
        """The miss term for a prediction suppressed by ``arm``'s τ whose outcome is now known."""
        cfg = self.config
        if real_fault:
            return self.update(arm, 0.0, cfg.miss_weight) if cfg.miss_weight > 0 else self
        return self.update(arm, 1.0, cfg.quiet_weight) if cfg.quiet_weight > 0 else self

    # -- learning from the score: every arm (full information) or the drawn arm only -------------------------
    def observe_surfaced(self, arm: int, score: float, reward: float, weight: float = 1.0) -> ThresholdBandit:
        """The answer (reward 1 − y, trust ``weight``) to a prediction of score ``score`` surfaced by ``arm``.

        Without full information this is :meth:`update` of ``arm``; with it, every arm learns what it would have
        earned (module docstring) and ``arm`` counts the pull. A ``weight`` of 0 is no event (only the pull counts):
        the arms are not discounted, as in :func:`observe_batch`.
        """
        cfg = self.config
        self._check_score(score)
        self._check(arm, reward, weight)
        if weight == 0.0 and cfg.gamma < 1.0:
            # No evidence (an operator NPO does not trust): no event, as in observe_batch / update_batch — the arms
            # are not discounted (else every click of a distrusted account would erase a share of what the bandit
            # learned), only the pull is counted.
            pulls = self.pulls
            return self._derive(self.alpha, self.beta, (*pulls[:arm], pulls[arm] + 1, *pulls[arm + 1 :]))
        if not cfg.full_information:
            return self.update(arm, reward, weight)
        if cfg.gamma < 1.0:
            d_alpha, d_beta = self.credit(score, reward, weight)
            return self._add(arm, d_alpha, d_beta)
        # γ = 1 (the default), once per answer: :meth:`credit` and :meth:`_add` in one pass, the same arithmetic
        # in the same order (so the same floats), without the intermediate lists.
        good, bad = weight * reward, weight * (1.0 - reward)
        quiet, miss = weight * cfg.quiet_weight * (1.0 - reward), weight * cfg.miss_weight * reward
        alpha: list[float] = []
        beta: list[float] = []
        for a, b, t in zip(self.alpha, self.beta, cfg.thresholds, strict=True):  # one loop for both: ~0.8 µs less
            if t <= score:
                alpha.append(a + good)
                beta.append(b + bad)
            else:
                alpha.append(a + quiet)
                beta.append(b + miss)
        pulls = self.pulls
        return self._derive(tuple(alpha), tuple(beta), (*pulls[:arm], pulls[arm] + 1, *pulls[arm + 1 :]))

    def observe_suppressed(self, arm: int, score: float, real_fault: bool) -> ThresholdBandit:
        """The outcome of a prediction of score ``score`` that ``arm`` suppressed.

        Without full information this is the miss term of ``arm`` (:meth:`miss_update`); with it, the arms that
        would have suppressed it get the miss term and the arms that would have surfaced it the reward of surfacing
        a real fault (1) or a false alarm (0), with weight 1.
        """
        self._check_score(score)
        if not self.config.full_information:
            return self.miss_update(arm, real_fault)
        self._check(arm, 0.0, 0.0)
        d_alpha, d_beta = self.credit(score, 1.0 if real_fault else 0.0, 1.0)
        return self._add(arm, d_alpha, d_beta)

    def replace_surfaced(
        self,
        arm: int,
        score: float,
        old_reward: float,
        new_reward: float,
        weight: float = 1.0,
        new_weight: float | None = None,
    ) -> ThresholdBandit:
        """:meth:`replace_reward` for an answer applied with :meth:`observe_surfaced`: on every arm it touched.

        The credit of the old answer is taken back and the new one's added on each arm, so answering A then B
        leaves the same posterior as answering B alone (while nothing clamps at the prior).
        """
        self._check_score(score)
        if not self.config.full_information:
            return self.replace_reward(arm, old_reward, new_reward, weight, new_weight)
        self._check(arm, old_reward, weight)
        self._check(arm, new_reward, weight)
        w_new = weight if new_weight is None else new_weight
        if not 0.0 <= w_new < math.inf:  # NaN included
            raise InvalidRecord("weight", f"must be a finite number >= 0, got {w_new}")
        pa, pb = self.config.arm_prior
        old_a, old_b = self.credit(score, old_reward, weight)
        new_a, new_b = self.credit(score, new_reward, w_new)
        alpha = tuple(max(p, a + n - o) for p, a, n, o in zip(pa, self.alpha, new_a, old_a, strict=True))
        beta = tuple(max(p, b + n - o) for p, b, n, o in zip(pb, self.beta, new_b, old_b, strict=True))
        return self._derive(alpha, beta, self.pulls)

    def credit(self, score: float, reward: float, weight: float) -> tuple[list[float], list[float]]:
        """(Δα, Δβ) per arm for one prediction of score R whose surfacing earned ``reward`` with ``weight``: arms
        with τ ≤ R get (w·r, w·(1 − r)), arms with τ > R (w·quiet·(1 − r), w·miss·r)."""
        cfg = self.config
        wq = weight * cfg.quiet_weight
        wm = weight * cfg.miss_weight
        good, bad = weight * reward, weight * (1.0 - reward)
        quiet, miss = wq * (1.0 - reward), wm * reward
        d_alpha = [good if t <= score else quiet for t in cfg.thresholds]
        d_beta = [bad if t <= score else miss for t in cfg.thresholds]
        return d_alpha, d_beta

    def _add(self, arm: int, d_alpha: list[float], d_beta: list[float]) -> ThresholdBandit:
        """Discount every arm by γ, add the increments, count a pull of ``arm``."""
        g = self.config.gamma
        if g < 1.0:
            pa, pb = self.config.arm_prior
            alpha = [p + g * (a - p) + d for p, a, d in zip(pa, self.alpha, d_alpha, strict=True)]
            beta = [p + g * (b - p) + d for p, b, d in zip(pb, self.beta, d_beta, strict=True)]
        else:
            alpha = [a + d for a, d in zip(self.alpha, d_alpha, strict=True)]
            beta = [b + d for b, d in zip(self.beta, d_beta, strict=True)]
        pulls = list(self.pulls)
        pulls[arm] += 1
        return self._derive(tuple(alpha), tuple(beta), tuple(pulls))

    def reset(self) -> ThresholdBandit:
        """Back to the prior (e.g. after a promoted retraining), keeping the pull counts."""
        return replace(self, alpha=(), beta=(), pulls=self.pulls)

    def _derive(self, alpha: tuple[float, ...], beta: tuple[float, ...], pulls: tuple[int, ...]) -> ThresholdBandit:
        """A new state from values the update rules keep valid (α ≥ prior > 0, same arity): skips re-validation
        (and the frozen dataclass's per-field ``object.__setattr__``, through the slots' own setters)."""
        new: ThresholdBandit = _new_bandit(ThresholdBandit)
        _SET_CONFIG(new, self.config)
        _SET_ALPHA(new, alpha)
        _SET_BETA(new, beta)
        _SET_PULLS(new, pulls)
        return new

    def _check(self, arm: int, reward: float, weight: float) -> None:
        if not 0 <= arm < self.config.n_arms:
            raise InvalidRecord("arm", f"must be in [0, {self.config.n_arms}), got {arm}")
        if not 0.0 <= reward <= 1.0:
            raise InvalidRecord("reward", f"must be in [0, 1], got {reward}")
        if not 0.0 <= weight < math.inf:  # NaN included
            raise InvalidRecord("weight", f"must be a finite number >= 0, got {weight}")

    @staticmethod
    def _check_score(score: float) -> None:
        if not 0.0 <= score <= 1.0:  # NaN included: it would compare as below every τ
            raise InvalidRecord("score", f"must be in [0, 1], got {score}")


_SET_CONFIG, _SET_ALPHA, _SET_BETA, _SET_PULLS = (
    getattr(ThresholdBandit, name).__set__ for name in ("config", "alpha", "beta", "pulls")
)
_new_bandit = object.__new__


# -- vectorised form ------------------------------------------------------------------------------------
def new_batch(shape: Sequence[int], config: BanditConfig) -> tuple[FloatArray, FloatArray]:
    """Prior (α, β) arrays of shape (*shape, K): every arm's :attr:`BanditConfig.arm_prior`."""
    full = (*shape, config.n_arms)
    pa, pb = config.arm_prior
    return np.broadcast_to(np.asarray(pa), full).copy(), np.broadcast_to(np.asarray(pb), full).copy()


def choose_batch(alpha: FloatArray, beta: FloatArray, rng: np.random.Generator) -> IntArray:
    """Thompson choices for a batch of independent bandits: α, β of shape (..., K) → arm indices of shape (...)."""
    return np.asarray(np.argmax(rng.beta(alpha, beta), axis=-1), dtype=np.int64)


def _discount_batch(
    alpha: FloatArray, beta: FloatArray, active: npt.NDArray[np.bool_], config: BanditConfig
) -> tuple[FloatArray, FloatArray]:
    """Every arm of the bandits with an event (``active``, shape (..., 1)) pulled back toward its prior by γ; the
    inputs themselves when γ = 1 (callers copy before changing them in place)."""
    g = config.gamma
    if g >= 1.0:
        return alpha, beta
    pa, pb = (np.asarray(p) for p in config.arm_prior)
    return np.where(active, pa + g * (alpha - pa), alpha), np.where(active, pb + g * (beta - pb), beta)


def update_batch(
    alpha: FloatArray,
    beta: FloatArray,
    arms: IntArray,
    rewards: FloatArray,
    weights: FloatArray | float,
    config: BanditConfig,
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :meth:`ThresholdBandit.update` for a batch of independent bandits (one event each).

    ``arms``, ``rewards`` and ``weights`` have the batch shape (...); a weight of 0 means "no event" for that
    bandit (its arms are then not discounted either). Returns new arrays; inputs are not modified.
    """
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), arms.shape)
    alpha, beta = _discount_batch(alpha, beta, (w > 0)[..., None], config)
    alpha, beta = alpha.copy(), beta.copy()
    onehot = np.arange(config.n_arms) == arms[..., None]
    alpha = alpha + onehot * (w * rewards)[..., None]
    beta = beta + onehot * (w * (1.0 - rewards))[..., None]
    return alpha, beta


def credit_batch(
    scores: FloatArray, rewards: FloatArray, weights: FloatArray | float, config: BanditConfig
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :meth:`ThresholdBandit.credit`: (Δα, Δβ) of shape (..., K) for scores, rewards, weights (...)."""
    surf = np.asarray(config.thresholds) <= scores[..., None]
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), scores.shape)
    wq = w * config.quiet_weight
    wm = w * config.miss_weight
    good, bad = (w * rewards)[..., None], (w * (1.0 - rewards))[..., None]
    quiet, miss = (wq * (1.0 - rewards))[..., None], (wm * rewards)[..., None]
    return np.where(surf, good, quiet), np.where(surf, bad, miss)


def observe_batch(
    alpha: FloatArray,
    beta: FloatArray,
    arms: IntArray,
    scores: FloatArray,
    rewards: FloatArray,
    weights: FloatArray | float,
    config: BanditConfig,
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :meth:`ThresholdBandit.observe_surfaced`: one answer per bandit (a weight of 0: no event).

    Without full information this is :func:`update_batch` of the drawn ``arms``; with it every arm gets its
    :func:`credit_batch`. Returns new arrays; inputs are not modified.
    """
    if not config.full_information:
        return update_batch(alpha, beta, arms, rewards, weights, config)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), arms.shape)
    alpha, beta = _discount_batch(alpha, beta, (w > 0)[..., None], config)
    d_alpha, d_beta = credit_batch(scores, rewards, w, config)
    return alpha + d_alpha, beta + d_beta


def observe_suppressed_batch(
    alpha: FloatArray,
    beta: FloatArray,
    arms: IntArray,
    scores: FloatArray,
    real_fault: npt.NDArray[np.bool_],
    suppressed: npt.NDArray[np.bool_],
    config: BanditConfig,
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :meth:`ThresholdBandit.observe_suppressed` for the bandits whose ``suppressed`` is true."""
    rewards = np.where(real_fault, 1.0, 0.0)
    if not config.full_information:
        weights = np.where(suppressed, np.where(real_fault, config.miss_weight, config.quiet_weight), 0.0)
        return update_batch(alpha, beta, arms, 1.0 - rewards, weights, config)
    return observe_batch(alpha, beta, arms, scores, rewards, np.where(suppressed, 1.0, 0.0), config)


def decide_and_update_batch(
    alpha: FloatArray,
    beta: FloatArray,
    reward_probability: FloatArray,
    rng: np.random.Generator,
    config: BanditConfig,
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """One Bernoulli round for a batch of bandits: choose, draw reward with P(arm), update. Used by benchmarks/tests.

    ``reward_probability`` has shape (..., K). Returns (α, β, arms, rewards).
    """
    arms = choose_batch(alpha, beta, rng)
    p = np.take_along_axis(reward_probability, arms[..., None], axis=-1)[..., 0]
    rewards = (rng.random(arms.shape) < p).astype(np.float64)
    alpha, beta = update_batch(alpha, beta, arms, rewards, 1.0, config)
    return alpha, beta, arms, rewards
