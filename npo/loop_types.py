"""The loop's records and settings: :class:`LoopConfig`, what the loop steps return (:class:`DecideResult`,
:class:`FeedbackResult`, :class:`OutcomeResult`), the feedback log's :class:`AppliedFeedback`, and the errors a
loop step raises. Imported by the store protocol, the loop steps and the stores (``npo.loop`` re-exports them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from npo.bandit import BanditConfig
from npo.feedback import FeedbackCodes
from npo.misalignment import EtaSchedule, KeyAlignment
from npo.scoring import KeySpec
from npo.trust import TrustConfig
from npo.types import Decision, FeedbackEvent, InvalidRecord, Verdict

SYSTEM_OPERATOR = "system"


class LoopError(InvalidRecord):
    """A loop operation that cannot apply to the current state (the state is left unchanged)."""


class UnknownPrediction(LoopError):
    def __init__(self, prediction_id: str) -> None:
        super().__init__("prediction_id", f"no prediction with id {prediction_id!r}")


class ConflictingPrediction(LoopError):
    """A prediction sent again under an id already taken, with another body (``fields``: those that differ). An id
    names one prediction: the first one stays, and a changed prediction needs an id of its own. ``index``: its
    place in the batch it came in."""

    def __init__(self, prediction_id: str, fields: tuple[str, ...], index: int = 0) -> None:
        differs = ", ".join(fields)
        super().__init__(
            fields[0],
            f"prediction {prediction_id!r} was received before with another {differs}: an id names one prediction "
            "(the first one is kept); send a changed prediction under a new id",
        )
        self.prediction_id = prediction_id
        self.fields = fields
        self.index = index


class NotSurfaced(LoopError):
    def __init__(self, prediction_id: str, verdict: Verdict) -> None:
        super().__init__("prediction_id", f"prediction {prediction_id!r} was not surfaced (verdict {verdict.value})")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Everything the loop needs to know besides the state. All defaults are documented in the README."""

    key_spec: KeySpec = field(default_factory=KeySpec)
    codes: FeedbackCodes = field(default_factory=FeedbackCodes)
    eta: EtaSchedule = field(default_factory=EtaSchedule)
    bandit: BanditConfig = field(default_factory=BanditConfig)
    trust: TrustConfig | None = field(default_factory=TrustConfig)
    default_channel: str = "incident"
    dedupe_window_s: float = 3600.0
    suppressed_outcome_weight: float = 0.5  # how much a suppressed prediction's outcome moves m(k)
    peer_min_updates: int = 5  # a key needs this many updates before its consensus calibrates trust
    model_prior_strength: float = 5.0  # pseudo-count of the promoted feature model in m(k) for young keys
    # Partial pooling: every update of m(k) also updates m(parent) (KeySpec.parent), and the score uses
    # (w·m(k) + c·m(parent)) / (w + c) with c = min(pool_strength, w_parent) (npo.misalignment.pooled).
    pool_keys: bool = False
    pool_strength: float = 2.0  # n₀: the parent counts as at most this many answers

    def __post_init__(self) -> None:
        if not 0 < self.pool_strength < math.inf:
            raise InvalidRecord("pool_strength", f"must be a positive number of answers, got {self.pool_strength}")
        # NaN compares false everywhere: a NaN weight turned the suppressed outcomes' learning off without a word.
        for name in ("dedupe_window_s", "suppressed_outcome_weight", "model_prior_strength"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise InvalidRecord(name, f"must be a finite number >= 0, got {value!r}")
        peers = self.peer_min_updates
        if isinstance(peers, bool) or not isinstance(peers, int) or peers < 0:
            raise InvalidRecord("peer_min_updates", f"must be a whole number >= 0, got {peers!r}")


@dataclass(frozen=True, slots=True)
class AppliedFeedback:
    """A feedback event as the learning state saw it (what a later replacement must undo)."""

    event: FeedbackEvent
    key: str
    y: float
    weight: float
    key_n_before: float  # effective sample size of the key when this answer was applied
    arm: int | None
    reward: float
    replaces: str | None = None  # request id of the answer this one replaced
    # Whether the person's answer on this recommendation holds peer credit (its agreement with the key's consensus,
    # given once per person and recommendation while the key had ``peer_min_updates`` updates): a changed answer
    # moves that credit only when there is some. None for answers stored before it was recorded.
    peer_credited: bool | None = None


@dataclass(frozen=True, slots=True)
class DecideResult:
    """``duplicate``: the prediction was received before (same id, or same fingerprint within the dedupe window);
    ``decision`` is then the first one's. ``conflict``: for a duplicate by id, the fields in which this body differs
    from the one on record (empty for an identical re-send)."""

    decision: Decision
    duplicate: bool
    conflict: tuple[str, ...] = ()


FeedbackStatus = Literal["recorded", "replaced", "duplicate"]


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    status: FeedbackStatus
    applied: AppliedFeedback | None
    key_state: KeyAlignment | None


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    recorded: bool
    missed_fault: bool  # suppressed, then it turned out real
    not_trusted: bool = False  # not recorded: the person who reported it has trust weight 0
