"""Feedback codes: how an engineer's click becomes a number.

The per-event alignment loss y: override 1.0, like 0.0, neutral 0.5, skipped λ ∈ [0.2, 0.4]. The bandit's
reward for a surfaced recommendation is 1 − y (a like is a success, an override a failure).
"""

from __future__ import annotations

from dataclasses import dataclass

from npo.types import FeedbackKind, InvalidRecord

SKIP_LAMBDA_MIN = 0.2
SKIP_LAMBDA_MAX = 0.4
DEFAULT_SKIP_LAMBDA = 0.3


def validate_skip_lambda(skip_lambda: float) -> float:
    """Return λ as a float, or raise :class:`InvalidRecord` when it lies outside [0.2, 0.4]."""
    if isinstance(skip_lambda, bool) or not isinstance(skip_lambda, int | float):
        raise InvalidRecord("skip_lambda", f"must be a number in [0.2, 0.4], got {skip_lambda!r}")
    if not SKIP_LAMBDA_MIN <= float(skip_lambda) <= SKIP_LAMBDA_MAX:
        raise InvalidRecord(
            "skip_lambda",
            f"must be in [{SKIP_LAMBDA_MIN}, {SKIP_LAMBDA_MAX}] (the paper's range), got {skip_lambda}",
        )
    return float(skip_lambda)


@dataclass(frozen=True, slots=True)
class FeedbackCodes:
    """The mapping from feedback kinds to alignment-loss targets y ∈ [0, 1]."""

    skip_lambda: float = DEFAULT_SKIP_LAMBDA

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_lambda", validate_skip_lambda(self.skip_lambda))

    def code(self, kind: FeedbackKind | str) -> float:
        """The alignment-loss target y for ``kind`` (override 1, like 0, neutral 0.5, skipped λ)."""
        if type(kind) is not FeedbackKind:  # (an enum call costs more than the rest: skip it when not needed)
            kind = FeedbackKind(kind)
        if kind is FeedbackKind.OVERRIDE:
            return 1.0
        if kind is FeedbackKind.LIKE:
            return 0.0
        if kind is FeedbackKind.NEUTRAL:
            return 0.5
        return self.skip_lambda

    def reward(self, kind: FeedbackKind | str) -> float:
        """The bandit reward 1 − y for a surfaced recommendation (like 1, override 0, neutral 0.5, skip 1 − λ)."""
        return 1.0 - self.code(kind)


def feedback_code(kind: FeedbackKind | str, skip_lambda: float = DEFAULT_SKIP_LAMBDA) -> float:
    """Shorthand for ``FeedbackCodes(skip_lambda).code(kind)``."""
    return FeedbackCodes(skip_lambda).code(kind)
