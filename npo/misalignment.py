"""Learned misalignment m(k) per scenario key: the paper's stochastic-approximation rule.

    m(k) ← m(k) + η_n · w · (y − m(k))

y is the feedback code (override 1, like 0, neutral 0.5, skipped λ), w ∈ [0, 1] an optional trust weight of
the source, and η_n either constant (tracks drift; steady-state std σ·√(η/(2 − η))) or Robbins–Monro decaying,
η_n = (n + n₀)^−κ with ½ < κ ≤ 1 (Σ η = ∞, Σ η² < ∞: converges to E[y] under i.i.d. feedback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EtaSchedule:
    """Step size η_n as a function of the number of updates n a key has seen.

    ``kind="constant"`` gives η_n = ``eta``; ``kind="decaying"`` gives η_n = (n + n0)^−kappa, ½ < kappa ≤ 1.
    """

    kind: Literal["constant", "decaying"] = "decaying"
    eta: float = 0.1
    n0: float = 10.0
    kappa: float = 0.6

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "decaying"):
            raise InvalidRecord("eta.kind", f"must be 'constant' or 'decaying', got {self.kind!r}")
        if not 0.0 < self.eta <= 1.0:
            raise InvalidRecord("eta.eta", f"must be in (0, 1], got {self.eta}")
        if not (math.isfinite(self.n0) and self.n0 >= 1.0):
            raise InvalidRecord("eta.n0", f"must be a finite number >= 1 so that 0 < η ≤ 1, got {self.n0}")
        if not 0.5 < self.kappa <= 1.0:
            raise InvalidRecord("eta.kappa", f"must be in (0.5, 1] (Robbins–Monro), got {self.kappa}")

    def rate(self, n: float) -> float:
        """η for a key that has already had ``n`` updates (n ≥ 0). Always in (0, 1]. Raises :class:`InvalidRecord`
        for a negative or non-finite ``n`` (a NaN η would reach :func:`step`, which clips it to m = 0)."""
        if not 0.0 <= n < math.inf:  # NaN included
            raise InvalidRecord("n", f"must be a finite number >= 0 (the updates a key has seen), got {n}")
        if self.kind == "constant":
            return self.eta
        return float((n + self.n0) ** -self.kappa)

    def rates(self, n: FloatArray) -> FloatArray:
        """Vectorised :meth:`rate` over an array of update counts ≥ 0. Does not validate them (the simulation's hot
        loop; its counts are sums of weights in [0, 1])."""
        if self.kind == "constant":
            return np.full_like(n, self.eta, dtype=np.float64)
        return np.asarray((n + self.n0) ** -self.kappa, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class KeyAlignment:
    """Learned misalignment of one scenario key.

    ``m`` ∈ [0, 1] is the running estimate of the feedback code (1 = always overridden); ``n`` counts updates;
    ``weight_sum`` is the effective number of samples (the sum of the trust weights applied), which drives the
    decaying η — feedback from a distrusted source neither moves m nor uses up step size; ``updated_at`` is the
    time of the last update (Unix seconds, 0 when never updated).
    """

    key: str
    m: float = 0.0
    n: int = 0
    weight_sum: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise InvalidRecord("key", "must be a non-empty string")
        if not 0.0 <= self.m <= 1.0:
            raise InvalidRecord("m", f"must be in [0, 1], got {self.m}")
        if not self.n >= 0:  # NaN included
            raise InvalidRecord("n", f"must be >= 0, got {self.n}")
        if not (math.isfinite(self.weight_sum) and self.weight_sum >= 0):
            raise InvalidRecord("weight_sum", f"must be a finite number >= 0, got {self.weight_sum}")
        if not math.isfinite(self.updated_at):
            raise InvalidRecord("updated_at", f"must be a finite number of seconds, got {self.updated_at}")


# The slot descriptors of KeyAlignment's fields, in declaration order: setting through them skips the frozen check.
_SET_KEY, _SET_M, _SET_N, _SET_WEIGHT_SUM, _SET_UPDATED_AT = (
    getattr(KeyAlignment, f.name).__set__ for f in fields(KeyAlignment)
)


def _derive(state: KeyAlignment, m: float, n: int, weight_sum: float, updated_at: float) -> KeyAlignment:
    """A new key state from values the update rules keep valid (m clipped to [0, 1]): skips re-validation."""
    new: KeyAlignment = object.__new__(KeyAlignment)
    _SET_KEY(new, state.key)
    _SET_M(new, m)
    _SET_N(new, n)
    _SET_WEIGHT_SUM(new, weight_sum)
    _SET_UPDATED_AT(new, updated_at)
    return new


def step(m: float, y: float, eta: float) -> float:
    """One Robbins–Monro step m + η(y − m), clipped to [0, 1]. Pure arithmetic; η outside (0, 1] is the caller's bug."""
    v = m + eta * (y - m)
    v = v if v > 0.0 else 0.0  # = min(1, max(0, v)), NaN included, without two builtin calls (once per answer)
    return v if v < 1.0 else 1.0


def update_key(
    state: KeyAlignment, y: float, schedule: EtaSchedule, *, weight: float = 1.0, at: float = 0.0
) -> KeyAlignment:
    """Apply one feedback code ``y`` ∈ [0, 1] with trust ``weight`` ∈ [0, 1] to a key.

    A like (y = 0) never raises m, an override (y = 1) never lowers it. Does not touch the bandit or the store.
    """
    if not 0.0 <= y <= 1.0:
        raise InvalidRecord("y", f"must be in [0, 1], got {y}")
    if not 0.0 <= weight <= 1.0:
        raise InvalidRecord("weight", f"must be in [0, 1], got {weight}")
    if not math.isfinite(at):
        raise InvalidRecord("at", f"must be a finite number of seconds, got {at}")
    eta = schedule.rate(state.weight_sum) * weight
    return _derive(state, step(state.m, y, eta), state.n + 1, state.weight_sum + weight, at)


def replace_feedback(
    state: KeyAlignment,
    old_y: float,
    new_y: float,
    schedule: EtaSchedule,
    *,
    old_n: float,
    weight: float = 1.0,
    new_weight: float | None = None,
    at: float = 0.0,
) -> KeyAlignment:
    """Replace an earlier feedback code ``old_y`` (applied at effective sample size ``old_n``) by ``new_y``.

    The rule for a second click by the same person on the same recommendation: the first answer's step is
    swapped for the second's, m ← m + η_old·w·(new_y − old_y), exact when no other update came in between. The
    update count is not incremented: one person, one recommendation, one vote. When the new answer carries a
    different weight (a person's click replacing a skip), the old step is undone, m₀ = (m − η_old·w·old_y) /
    (1 − η_old·w), and the new one applied in its place, m ← m₀ + η_old·w_new·(new_y − m₀): again exact when
    nothing came in between, so a click by someone the loop does not trust (w_new = 0) leaves m where it was
    before the skip. The effective sample size moves by w_new − w. Raises :class:`InvalidRecord` for codes or
    weights outside [0, 1], a negative or non-finite ``old_n`` or a non-finite ``at``.
    """
    for name, value in (("old_y", old_y), ("new_y", new_y), ("weight", weight), ("new_weight", new_weight)):
        if value is not None and not 0.0 <= value <= 1.0:  # NaN included
            raise InvalidRecord(name, f"must be in [0, 1], got {value}")
    if not (math.isfinite(old_n) and old_n >= 0.0):
        raise InvalidRecord("old_n", f"must be a finite number >= 0, got {old_n}")
    if not math.isfinite(at):
        raise InvalidRecord("at", f"must be a finite number of seconds, got {at}")
    rate = schedule.rate(old_n)
    if new_weight is None or new_weight == weight:
        m = state.m + rate * weight * (new_y - old_y)
        return _derive(state, min(1.0, max(0.0, m)), state.n, state.weight_sum, at)
    keep = 1.0 - rate * weight  # the share of the earlier m the old step kept
    if keep > 1e-9:
        before = (state.m - rate * weight * old_y) / keep
        m = before + rate * new_weight * (new_y - before)
    else:  # η·w = 1: the old step set m to old_y and forgot the earlier m; swap the steps around the current m
        m = state.m + rate * (new_weight * (new_y - state.m) - weight * (old_y - state.m))
    weight_sum = max(0.0, state.weight_sum + new_weight - weight)
    return _derive(state, min(1.0, max(0.0, m)), state.n, weight_sum, at)


def reset_key(state: KeyAlignment, *, m: float | None = None, effective_samples: float = 0.0) -> KeyAlignment:
    """Restart a key's step size (after an approved retraining): the decaying η starts again from
    ``effective_samples``; optionally a new ``m`` (clipped to [0, 1]; NaN is refused). The update count ``n`` is
    history and is kept."""
    if m is not None and math.isnan(m):
        raise InvalidRecord("m", "must be in [0, 1], got nan")
    return replace(state, m=state.m if m is None else min(1.0, max(0.0, m)), weight_sum=effective_samples)


def update_batch(
    m: FloatArray,
    weight_sum: FloatArray,
    y: FloatArray,
    mask: npt.NDArray[np.bool_],
    schedule: EtaSchedule,
    weight: FloatArray | float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`update_key` over arrays of keys (m, effective sample size); only entries where ``mask``
    is True move. Returns new (m, weight_sum) arrays."""
    eta = schedule.rates(weight_sum) * weight
    new_m = np.where(mask, np.clip(m + eta * (y - m), 0.0, 1.0), m)
    new_w = np.where(mask, weight_sum + weight, weight_sum)
    return new_m, new_w


def pooled(m: float, weight_sum: float, parent_m: float, parent_weight_sum: float, strength: float) -> float:
    """Partial pooling of a key's m with its parent's (a hierarchical back-off estimate):

        m̃ = (w·m + c·m_parent) / (w + c),   c = min(strength, w_parent)

    with w the key's effective sample size. The parent counts as at most ``strength`` answers, and never as more
    than it has seen: a key without evidence scores with its parent's m, one with much evidence with its own, and
    a parent that has seen nothing leaves m unchanged (m(k) is not shrunk toward 0)."""
    c = min(strength, parent_weight_sum)
    total = weight_sum + c
    if total <= 0.0:
        return m
    return min(1.0, max(0.0, (weight_sum * m + c * parent_m) / total))


def pooled_array(
    m: FloatArray, weight_sum: FloatArray, parent_m: FloatArray, parent_weight_sum: FloatArray, strength: float
) -> FloatArray:
    """Vectorised :func:`pooled`."""
    c = np.minimum(strength, parent_weight_sum)
    total = weight_sum + c
    mixed = np.divide(weight_sum * m + c * parent_m, total, out=np.array(m, dtype=np.float64), where=total > 0.0)
    return np.asarray(np.clip(mixed, 0.0, 1.0), dtype=np.float64)
