"""What the engineers last said about a target: the recency part of an evaluation's scenario key.

Consecutive predictions on the same series are not independent: a fault lasts, and so does a noisy stretch of a
metric. On the development data a prediction that follows one *inside* a labelled window on the same series within
a day is itself inside a window 84 % of the time (NAB; SMD 77 %), one that follows a false alarm 5 % (SMD 28 %),
and the rest 15 % (SMD 53 %). The loop cannot see labels, but it sees the engineers' answers, so the evaluation
puts the last answer on the target into the scenario key: ``liked`` or ``overridden`` when a person answered a
recommendation on this target within ``memory_s`` seconds, ``quiet`` otherwise (no answer, only skips or neutral
clicks, or an older one). m(k) then learns, pooled across every series, how often each of these is overridden.

Only answers count, never outcomes: an outcome's timing would leak the labels (a false alarm is known one horizon
after it, a real fault only when its window ends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from npo.types import FeedbackKind, InvalidRecord

LIKED, OVERRIDDEN, QUIET = "liked", "overridden", "quiet"
STATES = (LIKED, OVERRIDDEN, QUIET)


@dataclass
class TargetMemory:
    """The last person's answer per target (mutable: one per replay)."""

    memory_s: float = 86400.0
    _last: dict[str, tuple[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.memory_s) and self.memory_s > 0):
            raise InvalidRecord("recency.memory_s", f"must be a positive number of seconds, got {self.memory_s}")

    def observe(self, target: str, kind: FeedbackKind, at: float) -> None:
        """Remember a person's Like or Override on ``target`` at ``at``; skips and neutral clicks say nothing."""
        if kind is FeedbackKind.LIKE:
            self._last[target] = (LIKED, at)
        elif kind is FeedbackKind.OVERRIDE:
            self._last[target] = (OVERRIDDEN, at)

    def state(self, target: str, now: float) -> str:
        """``liked`` / ``overridden`` when the target's last answer is at most ``memory_s`` old, else ``quiet``."""
        last = self._last.get(target)
        if last is None or now - last[1] > self.memory_s:
            return QUIET
        return last[0]
