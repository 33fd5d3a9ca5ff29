"""Counting what an on-call team would have seen: precision, recall, F1, override rate, lead time, L_align.

The counting rules (the interface other tools rely on):

* **precision** = surfaced recommendations whose time lies inside a labelled window ÷ all surfaced;
* **recall** = labelled windows with at least one surfaced recommendation inside ÷ all windows (a window the
  predictor never flagged counts as missed for every condition alike);
* **F1** = 2·P·R / (P + R) (0 when both are 0);
* **override rate** = surfaced recommendations the engineer overrode ÷ all surfaced;
* **lead time** of a caught window = its onset − the time of its first surfaced recommendation inside it
  (negative: after the onset); reported as the median over caught windows, in minutes;

Windows may overlap (an SMD event's window opens a horizon before it, a NAB list may repeat a window): a
recommendation inside several windows is one true recommendation for precision and catches each of them for recall.
* **L_align** by quarter of the prediction stream (time order): observed = mean feedback code of the surfaced
  recommendations in that quarter, true = the same with truthful codes (1 − precision of that quarter);
* **τ** by quarter: the mean threshold drawn;
* **monitor**: proposals raised (``monitor_triggers``), approved (``proposals_approved``: the ideal response) and
  the retrained models promoted on approval (``models_promoted``: 0 unless the replay retrains).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from npo.evaluate.replay import ReplayTrace, Stream

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
Members = tuple[IntArray, IntArray]  # (prediction index, window index) of every prediction inside every window
QUARTERS = 4


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _members(window: IntArray, members: Members | None) -> Members:
    """(prediction, window) pairs: ``members`` when given, else each prediction in its ``window`` (−1: none)."""
    if members is not None:
        return np.asarray(members[0], dtype=np.int64), np.asarray(members[1], dtype=np.int64)
    w = np.asarray(window, dtype=np.int64)
    inside = np.flatnonzero(w >= 0)
    return inside, w[inside]


def precision_recall(
    surfaced: BoolArray, window: IntArray, n_windows: int, members: Members | None = None
) -> tuple[float, float, float]:
    """(precision, recall, F1) of the surfaced recommendations against the labelled windows (module docstring).

    ``window[i]`` is a window containing recommendation i (−1: none); ``members`` every (recommendation, window)
    pair with the recommendation inside the window (None: each recommendation in its ``window`` only), so a window
    counts as caught when any surfaced recommendation lies inside it, whatever other window that one is also in.
    """
    s = np.asarray(surfaced, dtype=bool)
    inside = np.asarray(window) >= 0
    precision = _ratio(float(np.sum(s & inside)), float(np.sum(s)))
    pred, win = _members(window, members)
    caught = np.unique(win[s[pred]]).size
    recall = _ratio(float(caught), float(n_windows))
    return precision, recall, f1(precision, recall)


def f1(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall; nothing surfaced counts as precision 0, no windows as NaN."""
    if math.isnan(recall):
        return math.nan
    if math.isnan(precision):
        precision = 0.0
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def lead_times(
    times: FloatArray, surfaced: BoolArray, window: IntArray, onsets: FloatArray, members: Members | None = None
) -> FloatArray:
    """Per caught window: onset − time of the first surfaced recommendation inside it (seconds), in window order
    (``window`` / ``members`` as in :func:`precision_recall`)."""
    pred, win = _members(window, members)
    hit = np.asarray(surfaced, dtype=bool)[pred]
    pred, win = pred[hit], win[hit]
    t = np.asarray(times, dtype=np.float64)[pred]
    out = [float(onsets[w]) - float(np.min(t[win == w])) for w in np.unique(win).tolist()]
    return np.asarray(out, dtype=np.float64)


def quarter_means(values: FloatArray) -> list[float]:
    """NaN-ignoring mean of each quarter of ``values`` (by position); NaN for a quarter with no value."""
    v = np.asarray(values, dtype=np.float64)
    out = []
    for part in np.array_split(v, QUARTERS):
        ok = part[~np.isnan(part)]
        out.append(float(ok.mean()) if ok.size else math.nan)
    return out


def metrics(stream: Stream, trace: ReplayTrace, onsets: FloatArray, n_windows: int) -> dict[str, object]:
    """Every figure of one replay (one condition, one seed); lists are per quarter of the stream."""
    members = stream.memberships()
    precision, recall, f = precision_recall(trace.surfaced, stream.window, n_windows, members)
    n_surf = int(trace.surfaced.sum())
    overrides = int(np.sum(trace.y == 1.0))
    leads = lead_times(stream.times, trace.surfaced, stream.window, onsets, members)
    true_y = np.where(trace.surfaced, trace.y_true, np.nan)
    l_obs = quarter_means(trace.y)
    l_true = quarter_means(true_y)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f,
        "override_rate": _ratio(float(overrides), float(n_surf)),
        "surfaced": n_surf,
        "predictions": len(stream),
        "windows_caught": int(leads.size),
        "lead_time_median_min": float(np.median(leads)) / 60.0 if leads.size else math.nan,
        "early_share": float(np.mean(leads > 0)) if leads.size else math.nan,
        "l_align_first_quarter": l_obs[0],
        "l_align_last_quarter": l_obs[-1],
        "l_align_quarters": l_obs,
        "true_l_align_first_quarter": l_true[0],
        "true_l_align_last_quarter": l_true[-1],
        "true_l_align_quarters": l_true,
        "tau_quarters": quarter_means(trace.tau),
        "f_monitor": trace.f_monitor,
        "monitor_triggers": trace.monitor_triggers,
        "proposals_approved": trace.approved,
        "models_promoted": trace.promotions,
    }
