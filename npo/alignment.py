"""Alignment loss L_align: the mean feedback code over a window of surfaced recommendations.

L_align = Σ wᵢ·yᵢ / Σ wᵢ over the samples in the window (wᵢ = 1 unless trust weights are used). Windows are by
count (the last N samples) and/or by time (samples at or after ``since``), globally or for one key or channel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord


@dataclass(frozen=True, slots=True)
class AlignmentSample:
    """One feedback code ``y`` ∈ [0, 1] for a surfaced recommendation of ``key`` at time ``at`` (Unix s)."""

    key: str
    y: float
    at: float
    weight: float = 1.0
    channel: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.y <= 1.0:
            raise InvalidRecord("y", f"must be in [0, 1], got {self.y}")
        if not 0.0 <= self.weight <= 1.0:
            raise InvalidRecord("weight", f"must be in [0, 1], got {self.weight}")
        if not math.isfinite(self.at):  # a NaN time would fall out of every time window without a word
            raise InvalidRecord("at", f"must be a finite number of seconds, got {self.at}")


def alignment_loss(
    ys: Sequence[float] | npt.ArrayLike, weights: Sequence[float] | npt.ArrayLike | None = None
) -> float | None:
    """Weighted mean of feedback codes; None when there is nothing (or zero total weight) to average.

    Raises :class:`InvalidRecord` for codes outside [0, 1] (NaN included) and weights that are negative or not
    finite."""
    y = np.asarray(ys, dtype=np.float64)
    if y.size == 0:
        return None
    if not np.all((y >= 0.0) & (y <= 1.0)):
        raise InvalidRecord("ys", "feedback codes must be in [0, 1] (no NaN)")
    if weights is None:
        return float(y.mean())
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != y.shape:
        raise InvalidRecord("weights", f"shape {w.shape} does not match feedback shape {y.shape}")
    if not np.all((w >= 0.0) & np.isfinite(w)):
        raise InvalidRecord("weights", "must be finite and >= 0")
    total = float(w.sum())
    if total <= 0.0:
        return None
    return float((w * y).sum() / total)


def window(
    samples: Iterable[AlignmentSample],
    *,
    last_n: int | None = None,
    since: float | None = None,
    key: str | None = None,
    channel: str | None = None,
) -> list[AlignmentSample]:
    """The samples of a window, in input order (assumed time order): filter by key/channel, then time, then count.

    Raises :class:`InvalidRecord` for a ``last_n`` below 1 and a non-finite ``since`` (a NaN would compare false with
    every time: an empty window)."""
    if since is not None and not math.isfinite(since):
        raise InvalidRecord("since", f"must be a finite number of seconds or None, got {since}")
    chosen = [
        s
        for s in samples
        if (key is None or s.key == key)
        and (channel is None or s.channel == channel)
        and (since is None or s.at >= since)
    ]
    if last_n is not None:
        if last_n <= 0:
            raise InvalidRecord("last_n", f"must be positive, got {last_n}")
        chosen = chosen[-last_n:]
    return chosen


def windowed_loss(
    samples: Iterable[AlignmentSample],
    *,
    last_n: int | None = None,
    since: float | None = None,
    key: str | None = None,
    channel: str | None = None,
    weighted: bool = False,
) -> float | None:
    """L_align over one window (see :func:`window`); trust-weighted when ``weighted``. None for an empty window."""
    chosen = window(samples, last_n=last_n, since=since, key=key, channel=channel)
    ys = [s.y for s in chosen]
    return alignment_loss(ys, [s.weight for s in chosen] if weighted else None)


def loss_by_key(samples: Iterable[AlignmentSample], *, weighted: bool = False) -> dict[str, float]:
    """L_align per key over all given samples (keys with zero total weight are omitted)."""
    sums: dict[str, list[float]] = {}
    for s in samples:
        w = s.weight if weighted else 1.0
        acc = sums.setdefault(s.key, [0.0, 0.0])
        acc[0] += w * s.y
        acc[1] += w
    return {k: num / den for k, (num, den) in sums.items() if den > 0}


def rolling_loss(ys: npt.ArrayLike, width: int) -> npt.NDArray[np.float64]:
    """Trailing moving average of a feedback-code series (NaNs ignored); element i averages ys[max(0,i-width+1):i+1]."""
    y = np.asarray(ys, dtype=np.float64)
    if width <= 0:
        raise InvalidRecord("width", f"must be positive, got {width}")
    valid = ~np.isnan(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(valid, y, 0.0))])
    ccount = np.concatenate([[0.0], np.cumsum(valid)])
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(0, idx - width)
    count = ccount[idx] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[idx] - csum[lo]) / np.maximum(count, 1), np.nan)
