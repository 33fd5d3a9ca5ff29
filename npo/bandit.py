"""The threshold bandit: Thompson sampling over decision thresholds τ.

One Beta(α, β) posterior per τ in the grid (default {0.5, 0.6, 0.7, 0.8, 0.9}). Each prediction samples every
arm and uses the τ with the largest draw. Rewards are fractional (α += w·r, β += w·(1 − r)):

* surfaced and liked 1, overridden 0, neutral 0.5, skipped 1 − λ;
* the **miss term**: suppressed (R < τ) and later confirmed a real fault 0, suppressed and expired without a
  fault 1, each with a configurable weight. Without it the bandit only hears about what it surfaced, drifts to
  the highest τ and recall collapses.

Discounting (γ < 1) pulls every arm's evidence back toward the prior by a factor γ per update, so the bandit
forgets stale evidence after a drift; with γ = 1 updates commute (order-independent).

The same arithmetic is available vectorised (:func:`choose_batch`, :func:`update_batch`) over leading batch
dimensions of shape (..., K).
"""

from __future__ import annotations

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

    @property
    def n_arms(self) -> int:
        return len(self.thresholds)


@dataclass(frozen=True, slots=True)
class ThresholdBandit:
    """Posterior state of the threshold bandit. Immutable: every update returns a new bandit."""

    config: BanditConfig = field(default_factory=BanditConfig)
    alpha: tuple[float, ...] = ()
    beta: tuple[float, ...] = ()
    pulls: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        k = self.config.n_arms
        if not self.alpha:
            object.__setattr__(self, "alpha", (self.config.prior_alpha,) * k)
        if not self.beta:
            object.__setattr__(self, "beta", (self.config.prior_beta,) * k)
        if not self.pulls:
            object.__setattr__(self, "pulls", (0,) * k)
        for name in ("alpha", "beta", "pulls"):
            values = getattr(self, name)
            if len(values) != k:
                raise InvalidRecord(name, f"must have {k} entries (one per threshold), got {len(values)}")
        if any(a <= 0 for a in self.alpha) or any(b <= 0 for b in self.beta):
            raise InvalidRecord("posterior", "Beta parameters must be positive")

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
        cfg = self.config
        g = cfg.gamma
        alpha = [cfg.prior_alpha + g * (a - cfg.prior_alpha) for a in self.alpha]
        beta = [cfg.prior_beta + g * (b - cfg.prior_beta) for b in self.beta]
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
        cfg = self.config
        alpha = list(self.alpha)
        beta = list(self.beta)
        w_new = weight if new_weight is None else new_weight
        if w_new < 0.0:
            raise InvalidRecord("weight", f"must be >= 0, got {w_new}")
        alpha[arm] = max(cfg.prior_alpha, alpha[arm] + w_new * new_reward - weight * old_reward)
        beta[arm] = max(cfg.prior_beta, beta[arm] + w_new * (1.0 - new_reward) - weight * (1.0 - old_reward))
        return self._derive(tuple(alpha), tuple(beta), self.pulls)

    def miss_update(self, arm: int, real_fault: bool) -> ThresholdBandit:
        """The miss term for a prediction suppressed by ``arm``'s τ whose outcome is now known."""
        cfg = self.config
        if real_fault:
            return self.update(arm, 0.0, cfg.miss_weight) if cfg.miss_weight > 0 else self
        return self.update(arm, 1.0, cfg.quiet_weight) if cfg.quiet_weight > 0 else self

    def reset(self) -> ThresholdBandit:
        """Back to the prior (e.g. after a promoted retraining), keeping the pull counts."""
        return replace(self, alpha=(), beta=(), pulls=self.pulls)

    def _derive(self, alpha: tuple[float, ...], beta: tuple[float, ...], pulls: tuple[int, ...]) -> ThresholdBandit:
        """A new state from values the update rules keep valid (α ≥ prior > 0, same arity): skips re-validation."""
        new = object.__new__(ThresholdBandit)
        object.__setattr__(new, "config", self.config)
        object.__setattr__(new, "alpha", alpha)
        object.__setattr__(new, "beta", beta)
        object.__setattr__(new, "pulls", pulls)
        return new

    def _check(self, arm: int, reward: float, weight: float) -> None:
        if not 0 <= arm < self.config.n_arms:
            raise InvalidRecord("arm", f"must be in [0, {self.config.n_arms}), got {arm}")
        if not 0.0 <= reward <= 1.0:
            raise InvalidRecord("reward", f"must be in [0, 1], got {reward}")
        if weight < 0.0:
            raise InvalidRecord("weight", f"must be >= 0, got {weight}")


# -- vectorised form ------------------------------------------------------------------------------------
def new_batch(shape: Sequence[int], config: BanditConfig) -> tuple[FloatArray, FloatArray]:
    """Prior (α, β) arrays of shape (*shape, K)."""
    full = (*shape, config.n_arms)
    return np.full(full, config.prior_alpha), np.full(full, config.prior_beta)


def choose_batch(alpha: FloatArray, beta: FloatArray, rng: np.random.Generator) -> IntArray:
    """Thompson choices for a batch of independent bandits: α, β of shape (..., K) → arm indices of shape (...)."""
    return np.asarray(np.argmax(rng.beta(alpha, beta), axis=-1), dtype=np.int64)


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
    active = (w > 0)[..., None]
    g = config.gamma
    if g < 1.0:
        alpha = np.where(active, config.prior_alpha + g * (alpha - config.prior_alpha), alpha)
        beta = np.where(active, config.prior_beta + g * (beta - config.prior_beta), beta)
    else:
        alpha = alpha.copy()
        beta = beta.copy()
    onehot = np.arange(config.n_arms) == arms[..., None]
    alpha = alpha + onehot * (w * rewards)[..., None]
    beta = beta + onehot * (w * (1.0 - rewards))[..., None]
    return alpha, beta


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
