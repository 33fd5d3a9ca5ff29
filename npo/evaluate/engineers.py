"""Simulated on-call engineers who answer from the labelled truth, with noise, skips and adversaries.

The same behaviour as the offline simulator's engineers (:mod:`npo.sim.world`): each series is owned by one
operator who answers ``owner_share`` of its recommendations (teams own services), anyone on call answers the
rest; an answer is flipped with probability ``noise`` (ε), nobody answers with probability ``skip_rate`` (q), a
neutral click with probability ``neutral``, and an ``adversarial`` share of the operators answers against the
truth (a whole number of the ``n_operators``: a share that is not a multiple of 1/``n_operators`` is refused).
Everything is drawn up front per prediction, so every condition of an evaluation faces exactly the same
engineers (common random numbers): differences between conditions are the policy's doing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from npo.types import FeedbackKind, InvalidRecord

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class EngineerConfig:
    """How the simulated engineers behave (see the module docstring)."""

    noise: float = 0.1
    skip_rate: float = 0.3
    adversarial: float = 0.0
    neutral: float = 0.0
    n_operators: int = 10
    owner_share: float = 0.8

    def __post_init__(self) -> None:
        for name in ("noise", "skip_rate", "adversarial", "neutral", "owner_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidRecord(name, f"must be in [0, 1], got {value}")
        if self.skip_rate + self.neutral > 1.0:
            raise InvalidRecord("skip_rate", "skip_rate + neutral must be <= 1")
        if isinstance(self.n_operators, bool) or not isinstance(self.n_operators, int) or self.n_operators < 1:
            raise InvalidRecord("n_operators", f"must be an integer >= 1, got {self.n_operators!r}")
        if not adversarial_share_fits(self.adversarial, self.n_operators):
            raise InvalidRecord(
                "adversarial",
                f"is a share of {self.n_operators} operators, so a multiple of 1/{self.n_operators}, "
                f"got {self.adversarial}",
            )

    @property
    def adversarial_operators(self) -> int:
        """How many of the operators answer against the truth."""
        return round(self.adversarial * self.n_operators)


def adversarial_share_fits(share: float, n_operators: int) -> bool:
    """Whether ``share`` of ``n_operators`` operators is a whole number of them (up to float rounding)."""
    count = share * n_operators
    return abs(count - round(count)) <= 1e-9


@dataclass(frozen=True, slots=True)
class Answers:
    """Pre-drawn answers, one per prediction: who would answer and what they would click if it were surfaced."""

    operator: IntArray
    kind: tuple[FeedbackKind, ...]
    adversarial_ops: BoolArray

    def operator_name(self, i: int) -> str:
        return f"op{int(self.operator[i]):02d}"


def draw_answers(
    real_fault: BoolArray, series_index: IntArray, n_series: int, config: EngineerConfig, rng: np.random.Generator
) -> Answers:
    """The answer each prediction would get: ``real_fault[i]`` is the truth (Like when True, Override when False),
    ``series_index[i]`` the series it is about (its owner answers most of them)."""
    truth = np.asarray(real_fault, dtype=bool)
    n = truth.size
    o = config.n_operators
    owner = rng.integers(0, o, n_series)
    by_owner = rng.random(n) < config.owner_share
    operator = np.where(by_owner, owner[np.asarray(series_index, dtype=np.int64)], rng.integers(0, o, n))
    adversarial_ops = np.zeros(o, dtype=bool)
    adversarial_ops[: config.adversarial_operators] = True
    u = rng.random(n)
    skipped = u < config.skip_rate
    neutral = (u >= config.skip_rate) & (u < config.skip_rate + config.neutral)
    flip = rng.random(n) < config.noise
    likes = truth ^ flip ^ adversarial_ops[operator]
    kinds = tuple(
        FeedbackKind.SKIPPED
        if skipped[i]
        else FeedbackKind.NEUTRAL
        if neutral[i]
        else FeedbackKind.LIKE
        if likes[i]
        else FeedbackKind.OVERRIDE
        for i in range(n)
    )
    return Answers(operator.astype(np.int64), kinds, adversarial_ops)
