"""Counting what an on-call team would have seen: precision, recall, F1, override rate, lead time, L_align.

The counting rules (the interface other tools rely on):

* **precision** = surfaced recommendations whose time lies inside a labelled window ÷ all surfaced;
* **recall** = labelled windows with at least one surfaced recommendation inside ÷ all windows (a window the
  predictor never flagged counts as missed for every condition alike);
* **F1** = 2·P·R / (P + R) (0 when both are 0);
* **override rate** = surfaced recommendations the engineer overrode ÷ all surfaced;
* **lead time** of a caught window = its onset − the time of its first surfaced recommendation (negative: after
  the onset); reported as the median over caught windows, in minutes;
* **L_align** by quarter of the prediction stream (time order): observed = mean feedback code of the surfaced
  recommendations in that quarter, true = the same with truthful codes (1 − precision of that quarter);
* **τ** by quarter: the mean threshold drawn.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from npo.evaluate.replay import ReplayTrace, Stream

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
QUARTERS = 4


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def precision_recall(surfaced: BoolArray, window: IntArray, n_windows: int) -> tuple[float, float, float]:
    """(precision, recall, F1) of the surfaced recommendations against the labelled windows (module docstring).

    ``window[i]`` is the window containing recommendation i (−1: none).
    """
    s = np.asarray(surfaced, dtype=bool)
    inside = np.asarray(window) >= 0
    precision = _ratio(float(np.sum(s & inside)), float(np.sum(s)))
    caught = np.unique(np.asarray(window)[s & inside]).size
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


def lead_times(times: FloatArray, surfaced: BoolArray, window: IntArray, onsets: FloatArray) -> FloatArray:
    """Per caught window: onset − time of its first surfaced recommendation (seconds), in window order."""
    hit = np.asarray(surfaced, dtype=bool) & (np.asarray(window) >= 0)
    out = []
    for w in np.unique(np.asarray(window)[hit]).tolist():
        first = float(np.min(np.asarray(times)[hit & (np.asarray(window) == w)]))
        out.append(float(onsets[w]) - first)
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
    precision, recall, f = precision_recall(trace.surfaced, stream.window, n_windows)
    n_surf = int(trace.surfaced.sum())
    overrides = int(np.sum(trace.y == 1.0))
    leads = lead_times(stream.times, trace.surfaced, stream.window, onsets)
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
    }
