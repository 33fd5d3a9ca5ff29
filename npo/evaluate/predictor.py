"""The baseline fault predictor: a rolling robust z-score per series, turned into predictions with confidences.

For each row t of a series the predictor compares the value with a baseline of the rows before it:

    z_t[j] = |x_t[j] − median_j| / scale_j,   scale_j = max(1.4826·MAD_j, spread_j / spread_divisor, abs_floor)

over the trailing ``baseline_s`` seconds (refreshed every ``refresh_s``; only rows strictly before the refresh
point are used, so the predictor never sees the future). ``spread_j`` is the 1–99 % inter-quantile range of the
baseline, a floor for metrics that sit still most of the time (MAD 0) and burst now and then. For a series of
several dimensions the row's score is the ``k``-th largest z over its dimensions (k = ``top_k``, at most d): one
noisy dimension alone does not raise an alarm. The score is then smoothed over ``smooth`` rows (the mean of the
last rows' scores) so that a single glitch counts less than a sustained deviation.

Each score is then judged against the series' own score history (:func:`rarity`, peaks over threshold): e = how
many times per ``rare_s`` (a week) the series produces such a score routinely. A prediction is emitted where
e ≤ ``max_expected`` (once a week) and the series has had no prediction for ``refractory_s`` seconds (a predictor
that re-raises the same alarm every minute would be muted in practice).

Its confidence is p = 1 / (1 + e/e½) (:func:`confidence`), e½ = ``even_odds_expected`` = 3: a score that happens
routinely three times a week is even odds, the trigger (once a week) is 0.75, a score thirty times rarer 0.99. Why
e½ = 3 and not 1 (the trigger at p = 0.5): NPO surfaces when R = p·(1 − m) ≥ τ with τ ∈ {0.5 … 0.9}, and m of even
a perfectly aligned key cannot fall below the feedback's own noise floor, (1 − q)·ε + q·λ ≈ 0.16 at the nominal
ε = 0.1, q = 0.3, λ = 0.3. With the trigger at p = 0.5 the weakest emitted predictions could pass no threshold at
all once their key has any answers; p ≥ 0.6/0.84 ≈ 0.71 at the trigger lets an aligned key pass the lower half of
the grid (τ ≤ 0.6). e½ is chosen from that arithmetic, not from the labels. The confidence ranks predictions, it
is not a probability of a labelled fault: measured precision per band is in the README.

The predictor never sees a label.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from npo.evaluate.data import Series
from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


@dataclass(frozen=True, slots=True)
class PredictorConfig:
    """Parameters of the rolling robust z-score predictor (see the module docstring).

    Defaults: a one-day baseline (covers the daily cycle of server load) refreshed hourly; a prediction where the
    score is expected at most once a week from the series' own history, even odds at three times a week; one
    prediction per series per hour; for multivariate series the 2nd-largest z across dimensions; a 3-row mean
    against single glitches.
    """

    baseline_s: float = 86400.0
    refresh_s: float = 3600.0
    min_baseline_rows: int = 24
    rare_s: float = 7 * 86400.0
    max_expected: float = 1.0
    even_odds_expected: float = 3.0
    tail_quantile: float = 0.95
    min_history_s: float = 86400.0
    refractory_s: float = 3600.0
    top_k: int = 2
    smooth: int = 3
    spread_divisor: float = 20.0
    abs_floor: float = 1e-9
    max_z: float = 100.0

    def __post_init__(self) -> None:
        for name in (
            "baseline_s",
            "refresh_s",
            "rare_s",
            "max_expected",
            "even_odds_expected",
            "min_history_s",
            "spread_divisor",
            "max_z",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidRecord(f"predictor.{name}", f"must be a positive number, got {value}")
        if not 0.5 <= self.tail_quantile < 1.0:
            raise InvalidRecord("predictor.tail_quantile", f"must be in [0.5, 1), got {self.tail_quantile}")
        if self.refractory_s < 0 or self.abs_floor < 0:
            raise InvalidRecord("predictor.refractory_s", "refractory_s and abs_floor must be >= 0")
        for name in ("min_baseline_rows", "top_k", "smooth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRecord(f"predictor.{name}", f"must be an integer >= 1, got {value!r}")


_HALF_MAX = float(np.finfo(np.float64).max) / 2


def dimension_scores(series: Series, config: PredictorConfig) -> FloatArray:
    """The robust z of every row and dimension of ``series``, shape (n, d) (NaN where the baseline is not yet long
    enough); see the module docstring."""
    t = series.times
    x = series.values
    # A difference of two values beyond half the float range overflows (and so would a median or a quantile that
    # interpolates between them); z is the same in any unit, so such a series is measured in halves.
    unit = 0.5 if x.size and float(np.max(np.abs(x))) > _HALF_MAX else 1.0
    if unit != 1.0:
        x = x * unit
    n, d = x.shape
    z = np.full((n, d), np.nan)
    # Refresh points: the first row of each refresh period; each period uses the baseline before its first row.
    period = np.floor((t - t[0]) / config.refresh_s).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, period[1:] != period[:-1]])
    ends = np.r_[starts[1:], n]
    lo_all = np.searchsorted(t, t[starts] - config.baseline_s, side="left")
    for a, b, lo in zip(starts.tolist(), ends.tolist(), lo_all.tolist(), strict=True):
        if a - lo < config.min_baseline_rows:
            continue
        base = x[lo:a]
        med = np.median(base, axis=0)
        mad = np.median(np.abs(base - med), axis=0)
        q_lo, q_hi = np.quantile(base, [0.01, 0.99], axis=0)
        scale = np.maximum(
            np.maximum(MAD_TO_SIGMA * mad, (q_hi - q_lo) / config.spread_divisor),
            config.abs_floor * np.maximum(unit, np.abs(med)),
        )
        z[a:b] = np.minimum(np.abs(x[a:b] - med) / scale, config.max_z)
    return z


def row_scores(z: FloatArray, config: PredictorConfig) -> FloatArray:
    """The smoothed anomaly score of every row from its per-dimension z (:func:`dimension_scores`): the ``top_k``-th
    largest z of the row, averaged over the last ``smooth`` rows."""
    d = z.shape[1]
    k = min(config.top_k, d)
    row = z[:, 0] if d == 1 else -np.partition(-np.nan_to_num(z, nan=-np.inf), k - 1, axis=1)[:, k - 1]
    row = np.where(np.isnan(z).any(axis=1), np.nan, row)
    return _trailing_mean(row, config.smooth)


def robust_scores(series: Series, config: PredictorConfig) -> FloatArray:
    """The smoothed anomaly score of every row of ``series`` (NaN where the baseline is not yet long enough)."""
    return row_scores(dimension_scores(series, config), config)


def dominant_dimension(z: FloatArray, rows: IntArray, config: PredictorConfig) -> IntArray:
    """For each of ``rows``: the dimension (0-based) with the largest z averaged over the same ``smooth`` rows the
    score is averaged over — the metric that deviated most, which a multivariate prediction names as its kind of
    fault. Always 0 for a univariate series."""
    out = np.zeros(rows.size, dtype=np.int64)
    if z.shape[1] == 1:
        return out
    for j, r in enumerate(rows.tolist()):
        part = z[max(0, r - config.smooth + 1) : r + 1]
        out[j] = int(np.argmax(np.nan_to_num(part, nan=0.0).mean(axis=0)))
    return out


def _trailing_mean(values: FloatArray, width: int) -> FloatArray:
    """Mean of the last ``width`` values (NaN while any of them is NaN)."""
    if width == 1:
        return values
    out = np.full(values.shape, np.nan)
    if values.size < width:
        return out
    window = np.lib.stride_tricks.sliding_window_view(values, width)
    out[width - 1 :] = window.mean(axis=1)
    return out


class _PrefixRanks:
    """Order statistics of the prefixes of a sequence of distinct ranks 0 … N−1 (a series' scores in time order,
    each replaced by its position among them sorted), for many prefixes at once: a wavelet matrix (one bit of the
    rank per level, the highest first), built level by level while the queries descend it. Time O((N + queries)
    log N) in O(log N) numpy operations, memory O(N + queries). Sorting the whole past again at every refresh point
    took time quadratic in the length of the series."""

    def __init__(self, ranks: IntArray, ranked: FloatArray) -> None:
        self.ranks = ranks  # a permutation of 0 … N−1, in time order
        self.ranked = ranked  # the scores, ascending: ``ranked[ranks]`` in time order
        self.levels = max(1, (ranks.size - 1).bit_length())

    def _levels(self) -> Iterator[tuple[int, IntArray, npt.NDArray[np.longdouble]]]:
        """Per level: the bit's shift, the number of zero bits before each position (N + 1 entries) and the sum of
        the values whose bit is one before each position, in the level's order (a stable partition, zeros first)."""
        ranks, values = self.ranks, self.ranked[self.ranks]
        for level in range(self.levels):
            shift = self.levels - 1 - level
            one = ((ranks >> shift) & 1).astype(bool)
            zeros_before = np.r_[0, np.cumsum(~one)]
            ones_sum = np.r_[0.0, np.cumsum(np.where(one, values, 0.0), dtype=np.longdouble)]
            yield shift, zeros_before, ones_sum
            ranks, values = np.r_[ranks[~one], ranks[one]], np.r_[values[~one], values[one]]

    def kth(self, count: IntArray, k: IntArray) -> IntArray:
        """The rank of the k-th smallest (0-based) of the first ``count`` entries, for each pair."""
        lo, hi, k = np.zeros_like(count), count.copy(), k.copy()
        rank = np.zeros_like(count)
        for shift, zeros_before, _ in self._levels():
            zeros = int(zeros_before[-1])
            z_lo, z_hi = zeros_before[lo], zeros_before[hi]
            right = k >= z_hi - z_lo  # among the ones of the range
            k = np.where(right, k - (z_hi - z_lo), k)
            lo, hi = np.where(right, zeros + lo - z_lo, z_lo), np.where(right, zeros + hi - z_hi, z_hi)
            rank |= right.astype(np.int64) << shift
        return rank

    def below_and_sum_from(self, count: IntArray, rank: IntArray) -> tuple[IntArray, npt.NDArray[np.longdouble]]:
        """For each pair: how many of the first ``count`` entries have a rank below ``rank`` (0 … N), and the sum of
        the values of those at or above it, in extended precision (prefix sums are subtracted: a sum of a few large
        scores out of the whole past keeps the precision of numpy's own sum of them)."""
        full = rank >= self.ranks.size
        r = np.minimum(rank, self.ranks.size - 1)
        lo, hi = np.zeros_like(count), count.copy()
        below, above_sum = np.zeros_like(count), np.zeros(count.shape, dtype=np.longdouble)
        for shift, zeros_before, ones_sum in self._levels():
            zeros = int(zeros_before[-1])
            z_lo, z_hi = zeros_before[lo], zeros_before[hi]
            one = ((r >> shift) & 1).astype(bool)
            below += np.where(one, z_hi - z_lo, 0)  # bit one: the range's zeros are below
            above_sum += np.where(one, 0.0, ones_sum[hi] - ones_sum[lo])  # bit zero: its ones are above
            lo, hi = np.where(one, zeros + lo - z_lo, z_lo), np.where(one, zeros + hi - z_hi, z_hi)
        above_sum += (hi - lo) * self.ranked[r]  # what is left is the entry of rank r, if it is in the prefix
        return np.where(full, count, below), np.where(full, 0.0, above_sum)


def _quantiles(ranked: FloatArray, prefixes: _PrefixRanks, count: IntArray, q: float) -> FloatArray:
    """``np.quantile(past, q)`` (linear interpolation, its default) of the first ``count`` scores, for each count:
    the two order statistics it interpolates, combined as numpy combines them (the same float)."""
    virtual = (count - 1) * q
    before = np.floor(virtual)
    gamma = virtual - before
    below = np.minimum(before.astype(np.int64), count - 1)
    lo = ranked[prefixes.kth(count, below)]
    hi = ranked[prefixes.kth(count, np.minimum(below + 1, count - 1))]
    diff = hi - lo
    return np.asarray(np.where(gamma >= 0.5, hi - diff * (1 - gamma), lo + diff * gamma), dtype=np.float64)


def rarity(series: Series, scores: FloatArray, config: PredictorConfig) -> FloatArray:
    """Expected number of scores at least this high per ``rare_s`` seconds of this series' own history.

    Peaks over threshold (the SPOT idea of extreme-value anomaly detection): at each refresh point, u = the
    ``tail_quantile`` quantile of the series' past scores, β = their mean excess over u; a score s > u has tail
    probability (1 − tail_quantile)·exp(−(s − u)/β) (exponential tail), a lower one its empirical tail. Times the
    number of rows in ``rare_s`` this is how often the series produces such a score routinely: a spiky metric needs
    a far larger z than a quiet one to count as rare. NaN until ``min_history_s`` of scores exist.
    """
    t = series.times
    n = t.size
    out = np.full(n, np.nan)
    finite = np.isfinite(scores)
    period = np.floor((t - t[0]) / config.refresh_s).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, period[1:] != period[:-1]])
    ends = np.r_[starts[1:], n]
    step = float(np.median(np.diff(t))) if n > 1 else config.refresh_s
    rows_per_rare = config.rare_s / max(step, 1e-9)
    first_finite = int(np.argmax(finite)) if finite.any() else n
    q = config.tail_quantile
    scored = np.flatnonzero(finite)  # the rows with a score, in time order
    count = np.searchsorted(scored, starts)  # the past of each refresh point: the scores of the rows before it
    # The refresh points with enough history; the conditions only grow true as time goes on, so these are the last.
    ready = (starts > first_finite) & (count >= 20)
    ready &= t[starts] - t[min(first_finite, n - 1)] >= config.min_history_s
    if not ready.any():
        return out
    first = int(np.argmax(ready))
    starts, ends, count = starts[first:], ends[first:], count[first:]
    order = np.argsort(scores[scored], kind="stable")
    ranked = scores[scored][order]  # every score of the series, ascending
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    prefixes = _PrefixRanks(rank, ranked)
    u = _quantiles(ranked, prefixes, count, q)
    below_u, sum_above = prefixes.below_and_sum_from(count, np.searchsorted(ranked, u, side="right"))
    above = count - below_u
    excess = np.asarray(sum_above - above * u.astype(np.longdouble), dtype=np.float64)  # summed over u, per point
    beta = np.maximum(np.where(above > 0, excess / np.maximum(above, 1), 0.0), 1e-3)
    # Each row of a refresh period is judged against the past of its refresh point.
    rows = np.arange(starts[0], n)
    of_row = np.repeat(np.arange(starts.size), ends - starts)
    cur, u_row, past = scores[rows], u[of_row], count[of_row]
    # How many past scores are at least each current one: comparing every pair took rows-per-hour × rows-so-far
    # memory (gigabytes on a few days of one-second data).
    at_least = past - prefixes.below_and_sum_from(past, np.searchsorted(ranked, cur, side="left"))[0]
    emp = (1.0 + at_least) / (past + 1.0)
    pot = (1.0 - q) * np.exp(-(cur - u_row) / beta[of_row])
    # A row without a score (its baseline too thin, as after a gap in the data) has no rarity either: its
    # empirical tail would otherwise be the smallest possible, a routine-looking prediction made of nothing.
    out[rows] = np.where(np.isfinite(cur), np.where(cur > u_row, pot, emp) * rows_per_rare, np.nan)
    return out


def flag(series: Series, expected: FloatArray, config: PredictorConfig) -> IntArray:
    """Rows at which a prediction is emitted: the score is rare (expected at most ``max_expected`` times per
    ``rare_s``), after the warm-up, at least ``refractory_s`` after the series' previous prediction."""
    t = series.times
    candidates = np.flatnonzero(np.nan_to_num(expected, nan=np.inf) <= config.max_expected)
    candidates = candidates[candidates >= series.warmup]
    chosen: list[int] = []
    last = -math.inf
    for i in candidates.tolist():
        if t[i] - last >= config.refractory_s:
            chosen.append(i)
            last = float(t[i])
    return np.asarray(chosen, dtype=np.int64)


def confidence(expected: FloatArray | float, config: PredictorConfig) -> FloatArray:
    """Confidence from rarity: p = 1 / (1 + e/e½) with e½ = ``even_odds_expected`` — even odds for a score that
    occurs routinely e½ times per ``rare_s``, 0.75 at the trigger (e = 1 of the defaults), 0.9 for a score three
    times rarer than the trigger; monotone, in (0, 1). See the module docstring for why e½ = 3."""
    e = np.asarray(expected, dtype=np.float64)
    p = 1.0 / (1.0 + e / config.even_odds_expected)
    return np.asarray(np.clip(p, 0.001, 0.999), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SeriesPredictions:
    """The predictions on one series: row indices, times, scores, calibrated confidences and, for a series of
    several dimensions, the dimension that deviated most at each (0-based; None: univariate). ``ready_at``: the time
    of the first row after the warm-up at which the predictor had the history to predict (None: no such row), so a
    window that closes before it can never be caught."""

    series: str
    rows: IntArray
    times: FloatArray
    scores: FloatArray
    confidence: FloatArray
    dimension: IntArray | None = None
    ready_at: float | None = None


def predict(series: Series, config: PredictorConfig) -> SeriesPredictions:
    """Run the predictor over one series."""
    z = dimension_scores(series, config)
    scores = row_scores(z, config)
    expected = rarity(series, scores, config)
    rows = flag(series, expected, config)
    dims = dominant_dimension(z, rows, config) if series.values.shape[1] > 1 else None
    ready = np.flatnonzero(np.isfinite(expected[series.warmup :]))
    ready_at = float(series.times[series.warmup + ready[0]]) if ready.size else None
    return SeriesPredictions(
        series.name, rows, series.times[rows], scores[rows], confidence(expected[rows], config), dims, ready_at
    )
