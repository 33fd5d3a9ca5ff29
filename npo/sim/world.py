"""The simulated world: scenario keys, fault rates, a miscalibrated predictor and engineers who click.

Everything random is drawn up front from the seed, so every condition replays the *same* predictions, faults
and engineer behaviour (common random numbers): differences between conditions are the policy's doing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# What an adversarial operator does with every recommendation they answer: invert the truthful answer, or give
# one answer whatever the truth (override everything, like everything).
AdversaryKind = Literal["invert", "override_all", "like_all"]
ADVERSARY_KINDS: tuple[AdversaryKind, ...] = ("invert", "override_all", "like_all")


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """Parameters of the simulated data center (defaults follow the protocol in the paper notes).

    ``good_share`` of the keys fault often when predicted (true rate in ``good_rate``); the rest are mostly
    false alarms (``bad_rate``) and fire ``bad_frequency`` times as often. The predictor's confidence is
    informative but over-confident: f + (1 − f)·rate (f = ``confidence_floor``) plus a per-key bias in
    [``bias_low``, ``bias_high``], plus per-prediction noise. Engineers answer truthfully except for label noise
    ``epsilon`` (flip), skips (probability ``skip``), neutral answers (``neutral``) and an ``adversarial`` share of
    operators who invert (``adversary`` = "invert"), or who override ("override_all") or like ("like_all") every
    recommendation they answer, neutral ones included (skips stay skips). Each key has an owning operator who
    answers ``owner_share`` of its recommendations (teams own subsystems); anyone on call answers the rest. At
    ``drift_at`` (a fraction of the horizon; None for none) the true rates are reshuffled among the keys while the
    predictor keeps its habits. Key k belongs to family k mod ``n_families`` (its parent key for partial pooling);
    the rates are drawn independently of the families, so siblings share nothing but their parent: the world in
    which pooling has most to lose.
    """

    episodes: int = 2000
    n_keys: int = 50
    good_share: float = 0.2
    good_rate: tuple[float, float] = (0.85, 0.99)
    bad_rate: tuple[float, float] = (0.0, 0.15)
    bad_frequency: float = 1.0
    confidence_floor: float = 0.7
    bias_low: float = 0.0
    bias_high: float = 0.3
    confidence_noise: float = 0.05
    epsilon: float = 0.1
    skip: float = 0.3
    neutral: float = 0.03
    n_operators: int = 10
    owner_share: float = 0.8
    adversarial: float = 0.0
    adversary: AdversaryKind = "invert"
    drift_at: float | None = 0.5
    outcome_delay: int = 10
    n_families: int = 10

    def __post_init__(self) -> None:
        if self.episodes < 10:
            raise InvalidRecord("episodes", f"must be >= 10, got {self.episodes}")
        if self.n_keys < 2:
            raise InvalidRecord("n_keys", f"must be >= 2, got {self.n_keys}")
        for name in (
            "owner_share",
            "good_share",
            "epsilon",
            "skip",
            "neutral",
            "adversarial",
            "confidence_noise",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidRecord(name, f"must be in [0, 1], got {value}")
        for name in ("good_rate", "bad_rate"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise InvalidRecord(name, f"must be an interval within [0, 1], got {(lo, hi)}")
        if self.adversary not in ADVERSARY_KINDS:
            raise InvalidRecord("adversary", f"must be one of {ADVERSARY_KINDS}, got {self.adversary!r}")
        if self.bad_frequency <= 0:
            raise InvalidRecord("bad_frequency", f"must be positive, got {self.bad_frequency}")
        if self.skip + self.neutral > 1.0:
            raise InvalidRecord("skip", "skip + neutral must be <= 1")
        if self.drift_at is not None and not 0.0 < self.drift_at < 1.0:
            raise InvalidRecord("drift_at", f"must be in (0, 1) or None, got {self.drift_at}")
        if self.n_families < 1:
            raise InvalidRecord("n_families", f"must be >= 1, got {self.n_families}")
        if self.outcome_delay < 0:
            raise InvalidRecord("outcome_delay", f"must be >= 0, got {self.outcome_delay}")

    @property
    def drift_episode(self) -> int | None:
        return None if self.drift_at is None else int(self.episodes * self.drift_at)


@dataclass(frozen=True, slots=True)
class World:
    """Pre-drawn randomness for S seeds × T episodes (arrays of shape (S, T) unless noted)."""

    config: WorldConfig
    key: IntArray  # scenario key of each episode's prediction
    confidence: FloatArray  # predictor confidence p(s)
    real_fault: BoolArray  # ground truth
    operator: IntArray  # who answers if it is surfaced
    flip: BoolArray  # label noise: the answer is flipped
    skipped: BoolArray  # nobody answers in time
    neutral: BoolArray  # a neutral answer
    adversarial_ops: BoolArray  # (S, O): adversarial operators (see WorldConfig.adversary)
    owner: IntArray  # (S, K): the operator owning each key
    true_rate: FloatArray  # (S, 2, K): true fault rate per key before / after the drift

    @property
    def seeds(self) -> int:
        return int(self.key.shape[0])

    @property
    def family(self) -> IntArray:
        """(K,): the family (parent key) of each scenario key, k mod ``n_families``."""
        return np.arange(self.config.n_keys, dtype=np.int64) % self.config.n_families


def make_world(config: WorldConfig, seeds: int, seed: int = 0) -> World:
    """Draw the world for ``seeds`` independent replications from one base ``seed``."""
    rng = np.random.default_rng(seed)
    s, t, k, o = seeds, config.episodes, config.n_keys, config.n_operators
    good = rng.random((s, k)) < config.good_share
    rate = np.where(good, rng.uniform(*config.good_rate, (s, k)), rng.uniform(*config.bad_rate, (s, k)))
    after = np.stack([rng.permutation(row) for row in rate]) if config.drift_at is not None else rate
    true_rate = np.stack([rate, after], axis=1)
    bias = rng.uniform(config.bias_low, config.bias_high, (s, k))
    freq = np.where(good, 1.0, config.bad_frequency)
    cdf = np.cumsum(freq / freq.sum(axis=1, keepdims=True), axis=1)
    key = np.minimum((rng.random((s, t))[:, :, None] > cdf[:, None, :]).sum(axis=2), k - 1).astype(np.int64)
    phase = np.zeros((s, t), dtype=np.int64)
    if config.drift_episode is not None:
        phase[:, config.drift_episode :] = 1
    rows = np.arange(s)[:, None]
    p_fault = true_rate[rows, phase, key]
    real_fault = rng.random((s, t)) < p_fault
    floor = config.confidence_floor
    base_conf = np.clip(
        floor + (1.0 - floor) * rate + bias, 0.05, 0.99
    )  # the predictor was tuned before the drift and keeps its habits
    confidence = np.clip(base_conf[rows, key] + rng.normal(0.0, config.confidence_noise, (s, t)), 0.01, 0.999)
    owner = rng.integers(0, o, (s, k))
    by_owner = rng.random((s, t)) < config.owner_share
    operator = np.where(by_owner, owner[rows, key], rng.integers(0, o, (s, t)))
    n_adv = round(config.adversarial * o)
    adversarial_ops = np.zeros((s, o), dtype=bool)
    adversarial_ops[:, :n_adv] = True
    u = rng.random((s, t))
    skipped = u < config.skip
    neutral = (u >= config.skip) & (u < config.skip + config.neutral)
    flip = rng.random((s, t)) < config.epsilon
    return World(
        config,
        key,
        confidence,
        real_fault,
        operator,
        flip,
        skipped,
        neutral,
        adversarial_ops,
        owner,
        true_rate,
    )
