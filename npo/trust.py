"""Trust calibration of feedback sources (an open question the paper names): one weight per operator.

Each operator carries a Beta-like tally of agreement: ``agree`` and ``disagree`` start at the prior
pseudo-counts and grow with evidence.

* **Outcomes** (ground truth: did the fault really happen?). The truthful code is t = 0 for a real fault (the
  operator should have liked it) and t = 1 for a false alarm (should have overridden). Agreement
  a = 1 − |y − t| ∈ [0, 1]; agree += a, disagree += 1 − a. A neutral click (y = 0.5) counts half right.
* **Peers**: agreement with the side of the key's current consensus m (overridden-leaning if m ≥ ½, liked-
  leaning otherwise): a = 1 − |y − 1[m ≥ ½]|, counted with weight ``peer_weight`` (peers can be wrong;
  outcomes cannot). Comparing with the *side* rather than the raw value matters: a key's m mixes skips and
  neutral answers and rarely sits at 0 or 1, so a raw 1 − |y − m| would call every honest answer half wrong.

Weight = clip((mean − ½) / (``full_agreement`` − ½), floor, 1) with mean = agree / (agree + disagree): an
operator at chance (50 %) or worse gets weight ``floor`` (default 0) and cannot move any key's m(k); one who
agrees with the truth at least ``full_agreement`` (default 85 %) of the time gets the full weight 1. Outcomes
are themselves probabilistic (a real fault predicted at 90 % still fails to happen one time in ten), so even
a perfect operator does not reach 100 % agreement; demanding it would slow everyone's learning.

**(decision)** Prior Beta(4, 1): a new operator starts at mean agreement 0.8 → weight ≈ 0.86, i.e. is
believed but not fully; five pseudo-observations mean a handful of outcomes already moves the weight. Trust
is earned slowly and lost fast: until an operator has ``min_weight_evidence`` units of evidence (one outcome
= 1 unit, one peer comparison = ``peer_weight``), the weight is capped at the prior weight, so nobody gains
more influence than a newcomer from a few lucky clicks, while an operator clicking against the truth loses
weight at once.

Skips (operator ``"system"``) carry no opinion and must never update trust: callers must not call the update
functions for skips (they raise :class:`InvalidRecord` if the operator is ``"system"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import overload

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]
SYSTEM_OPERATOR = "system"
# Evidence is read back from float sums (ten peer comparisons at weight 0.3 add up to 2.9999999999999996): this much
# below ``min_weight_evidence`` still counts as reaching it.
_EVIDENCE_ROUNDING = 1e-9


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """Priors and weighting of trust calibration.

    ``prior_agree`` / ``prior_disagree`` (> 0): pseudo-counts of the prior; defaults 4 and 1 give a new
    operator mean agreement 0.8, weight ≈ 0.86. ``full_agreement`` ∈ (½, 1]: the agreement rate that earns
    the full weight 1. ``peer_weight`` ∈ [0, 1]: how much one peer comparison counts
    relative to one outcome. ``floor`` ∈ [0, 1): the smallest weight. ``min_weight_evidence`` ≥ 0: evidence
    units needed before the weight may exceed the prior weight (see the module docstring).
    """

    prior_agree: float = 4.0
    prior_disagree: float = 1.0
    peer_weight: float = 0.5
    floor: float = 0.0
    min_weight_evidence: float = 10.0
    full_agreement: float = 0.85

    def __post_init__(self) -> None:
        if not 0.5 < self.full_agreement <= 1.0:
            raise InvalidRecord("trust.full_agreement", f"must be in (0.5, 1], got {self.full_agreement}")
        for name in ("prior_agree", "prior_disagree"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise InvalidRecord(f"trust.{name}", f"must be a finite number > 0, got {value}")
        if not 0.0 <= self.peer_weight <= 1.0:
            raise InvalidRecord("trust.peer_weight", f"must be in [0, 1], got {self.peer_weight}")
        if not 0.0 <= self.floor < 1.0:
            raise InvalidRecord("trust.floor", f"must be in [0, 1), got {self.floor}")
        if not (math.isfinite(self.min_weight_evidence) and self.min_weight_evidence >= 0.0):
            raise InvalidRecord(
                "trust.min_weight_evidence", f"must be a finite number >= 0, got {self.min_weight_evidence}"
            )

    @property
    def prior_weight(self) -> float:
        """The weight of an operator with no evidence (see :func:`trust_weight`)."""
        mean = self.prior_agree / (self.prior_agree + self.prior_disagree)
        return min(1.0, max(self.floor, (mean - 0.5) / (self.full_agreement - 0.5)))


@dataclass(frozen=True, slots=True)
class OperatorTrust:
    """Agreement tally of one operator: ``agree`` / ``disagree`` (prior included), and how many outcome and
    peer comparisons went into it (``n_outcome``, ``n_peer``)."""

    operator: str
    agree: float
    disagree: float
    n_outcome: int = 0
    n_peer: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.operator, str) or not self.operator.strip():
            raise InvalidRecord("operator", "must be a non-empty string")
        for name in ("agree", "disagree"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidRecord(name, f"must be a finite number >= 0, got {value!r}")
        if self.agree + self.disagree <= 0.0:
            raise InvalidRecord("agree", "agree + disagree must be > 0")

    @property
    def mean(self) -> float:
        """Mean agreement agree / (agree + disagree) ∈ [0, 1]."""
        return self.agree / (self.agree + self.disagree)


# The slot descriptors of OperatorTrust's fields, in declaration order: setting through them skips the frozen check.
_SET_OPERATOR, _SET_AGREE, _SET_DISAGREE, _SET_N_OUTCOME, _SET_N_PEER = (
    getattr(OperatorTrust, f.name).__set__ for f in fields(OperatorTrust)
)


def _derive(trust: OperatorTrust, agree: float, disagree: float, n_outcome: int, n_peer: int) -> OperatorTrust:
    """A new tally from values the update rules keep valid (a valid tally plus non-negative finite increments):
    skips re-validation, like :func:`dataclasses.replace` without ``__post_init__``."""
    new: OperatorTrust = object.__new__(OperatorTrust)
    _SET_OPERATOR(new, trust.operator)
    _SET_AGREE(new, agree)
    _SET_DISAGREE(new, disagree)
    _SET_N_OUTCOME(new, n_outcome)
    _SET_N_PEER(new, n_peer)
    return new


def _check_code(y: float, name: str = "y") -> float:
    if type(y) is float and 0.0 <= y <= 1.0:  # the common case, decided without the general checks below
        return y
    if isinstance(y, bool) or not isinstance(y, int | float) or not 0.0 <= float(y) <= 1.0:
        raise InvalidRecord(name, f"must be a feedback code in [0, 1], got {y!r}")
    return float(y)


def _check_operator(trust: OperatorTrust) -> None:
    if trust.operator == SYSTEM_OPERATOR:
        raise InvalidRecord("operator", "skips (operator 'system') never update trust")


def new_trust(operator: str, config: TrustConfig) -> OperatorTrust:
    """A new operator at the prior (mean agreement 0.8, weight ≈ 0.86 with the defaults). Pure constructor."""
    return OperatorTrust(operator=operator, agree=config.prior_agree, disagree=config.prior_disagree)


@overload
def outcome_agreement(y: float, truth: bool) -> float: ...
@overload
def outcome_agreement(y: npt.ArrayLike, truth: npt.ArrayLike) -> FloatArray: ...
def outcome_agreement(y: npt.ArrayLike, truth: npt.ArrayLike) -> float | FloatArray:
    """Agreement a = 1 − |y − t| ∈ [0, 1] of feedback code y with the outcome (t = 0 if ``truth`` — the fault
    was real — else 1). Works on floats/bools and elementwise on broadcastable arrays. Does not validate y."""
    if isinstance(y, int | float) and isinstance(truth, bool | np.bool_):
        t = 0.0 if truth else 1.0
        return 1.0 - abs(float(y) - t)
    y_arr = np.asarray(y, dtype=np.float64)
    t_arr = np.where(np.asarray(truth, dtype=np.bool_), 0.0, 1.0)
    return np.asarray(1.0 - np.abs(y_arr - t_arr), dtype=np.float64)


def update_with_outcome(trust: OperatorTrust, y: float, real_fault: bool, config: TrustConfig) -> OperatorTrust:
    """Credit the operator's code ``y`` ∈ [0, 1] against the outcome: agree += a, disagree += 1 − a.

    Call once per (operator, prediction) with the operator's effective answer. Not for skips (raises for the
    ``"system"`` operator). Does not touch any key's m(k).
    """
    del config  # outcomes always count fully; kept for a uniform signature
    _check_operator(trust)
    a = outcome_agreement(_check_code(y), bool(real_fault))
    return _derive(trust, trust.agree + a, trust.disagree + (1.0 - a), trust.n_outcome + 1, trust.n_peer)


@overload
def peer_agreement(y: float, consensus: float) -> float: ...
@overload
def peer_agreement(y: npt.ArrayLike, consensus: npt.ArrayLike) -> FloatArray: ...
def peer_agreement(y: npt.ArrayLike, consensus: npt.ArrayLike) -> float | FloatArray:
    """Agreement a = 1 − |y − 1[consensus ≥ ½]| ∈ [0, 1] of a code with the side the consensus leans to.

    Works on floats and elementwise on arrays. Does not validate its inputs.
    """
    if (type(y) is float or isinstance(y, int | float)) and (
        type(consensus) is float or isinstance(consensus, int | float)
    ):
        return 1.0 - abs(float(y) - (1.0 if consensus >= 0.5 else 0.0))
    side = np.where(np.asarray(consensus, dtype=np.float64) >= 0.5, 1.0, 0.0)
    return np.asarray(1.0 - np.abs(np.asarray(y, dtype=np.float64) - side), dtype=np.float64)


def update_with_peers(trust: OperatorTrust, y: float, consensus: float, config: TrustConfig) -> OperatorTrust:
    """Credit the operator's code ``y`` against the trust-weighted ``consensus`` m ∈ [0, 1] of the key from
    other operators: a = :func:`peer_agreement`, agree += peer_weight·a, disagree += peer_weight·(1 − a).

    The consensus must not include this answer (else the operator agrees with themselves). Not for skips
    (raises for ``"system"``). Does not compute the consensus (see :func:`consensus`).
    """
    _check_operator(trust)
    a = peer_agreement(_check_code(y), _check_code(consensus, "consensus"))
    w = config.peer_weight
    return _derive(trust, trust.agree + w * a, trust.disagree + w * (1.0 - a), trust.n_outcome, trust.n_peer + 1)


def swap_peer_answer(
    trust: OperatorTrust, old_y: float, new_y: float, consensus: float, config: TrustConfig
) -> OperatorTrust:
    """Move the peer credit of an answer the operator has replaced: the agreement ``old_y`` earned against
    ``consensus`` is taken back and the agreement of ``new_y`` against it given instead (one person, one
    recommendation, one vote — the comparison count stays). Tallies never fall below 0. Not for skips."""
    _check_operator(trust)
    m = _check_code(consensus, "consensus")
    w = config.peer_weight
    delta = w * (peer_agreement(_check_code(new_y), m) - peer_agreement(_check_code(old_y, "old_y"), m))
    agree = max(0.0, trust.agree + delta)
    disagree = max(0.0, trust.disagree - delta)
    if agree + disagree <= 0.0:
        return trust
    return _derive(trust, agree, disagree, trust.n_outcome, trust.n_peer)


def _weight(agree: float, disagree: float, config: TrustConfig) -> float:
    # min/max written out (once per feedback event): the same results as
    # min(1, max(floor, x)) and min(weight, max(prior_weight, floor)), NaN included.
    floor = config.floor
    x = (agree / (agree + disagree) - 0.5) / (config.full_agreement - 0.5)
    weight = x if x > floor else floor
    if not weight < 1.0:
        weight = 1.0
    if agree + disagree - config.prior_agree - config.prior_disagree + _EVIDENCE_ROUNDING < config.min_weight_evidence:
        prior = config.prior_weight
        cap = prior if prior > floor else floor
        weight = cap if cap < weight else weight
    return weight


def trust_weight(trust: OperatorTrust, config: TrustConfig) -> float:
    """The operator's feedback weight ∈ [floor, 1]: clip((mean − ½) / (full_agreement − ½), floor, 1).

    Capped at the prior weight until ``min_weight_evidence`` units of evidence. Chance-level (50 %) or worse
    agreement gives ``floor``. Does not update anything.
    """
    return _weight(trust.agree, trust.disagree, config)


def trust_weight_array(agree: npt.ArrayLike, disagree: npt.ArrayLike, config: TrustConfig) -> FloatArray:
    """Vectorised :func:`trust_weight` over broadcastable arrays of tallies (e.g. (seeds, operators)).

    Evidence is read as agree + disagree − prior sum (every update adds 1 or ``peer_weight`` in total).
    Entries with agree + disagree ≤ 0 get the prior weight. Does not validate the tallies.
    """
    a = np.asarray(agree, dtype=np.float64)
    d = np.asarray(disagree, dtype=np.float64)
    total = a + d
    ok = total > 0.0
    mean = np.where(ok, a / np.where(ok, total, 1.0), config.prior_agree / (config.prior_agree + config.prior_disagree))
    weight = np.clip((mean - 0.5) / (config.full_agreement - 0.5), config.floor, 1.0)
    evidence = total - config.prior_agree - config.prior_disagree
    cap = max(config.prior_weight, config.floor)
    return np.asarray(
        np.where(evidence + _EVIDENCE_ROUNDING < config.min_weight_evidence, np.minimum(weight, cap), weight),
        dtype=np.float64,
    )


def consensus(codes: Sequence[float], weights: Sequence[float]) -> float | None:
    """Trust-weighted mean Σ wᵢ·yᵢ / Σ wᵢ of codes yᵢ ∈ [0, 1] with weights wᵢ ≥ 0; None when Σ wᵢ = 0.

    The caller passes the *other* operators' answers for the key (see :func:`update_with_peers`).
    """
    if len(codes) != len(weights):
        raise InvalidRecord("weights", f"need one weight per code, got {len(weights)} for {len(codes)}")
    total = 0.0
    acc = 0.0
    for y, w in zip(codes, weights, strict=True):
        _check_code(y)
        if not (math.isfinite(w) and w >= 0.0):
            raise InvalidRecord("weights", f"must be finite and >= 0, got {w}")
        total += w
        acc += w * y
    if total <= 0.0:
        return None
    return min(1.0, max(0.0, acc / total))
