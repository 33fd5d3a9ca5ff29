"""Metrics of a simulated run, per seed, and their aggregation (mean with a 95 % interval over seeds)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from npo.sim.engine import Trace

FloatArray = npt.NDArray[np.float64]

# Two-sided 97.5 % quantiles of Student's t, to three decimals, for 1–20 degrees of freedom.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
}
_Z975 = 1.959963984540054  # the normal distribution's 97.5 % quantile


def t_quantile(dof: int) -> float:
    """t_{0.975, dof}: from the table up to 20 degrees of freedom, beyond by the Cornish–Fisher expansion of the
    t quantile in powers of 1/dof up to the fourth (within 5e-5 of the exact value from 8 degrees of freedom on,
    so well within the table's rounding beyond 20); NaN for ``dof`` < 1."""
    if dof <= 0:
        return math.nan
    if dof in _T975:
        return _T975[dof]
    z, n = _Z975, float(dof)
    return (
        z
        + (z**3 + z) / (4 * n)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4)
    )


def summarise(values: FloatArray) -> dict[str, float | list[float]]:
    """Mean and 95 % confidence interval (Student t) of per-seed values; NaNs are dropped. One value has no
    interval (NaN, not a zero-width one that would claim the mean holds exactly)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": math.nan, "ci95": [math.nan, math.nan]}
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "ci95": [math.nan, math.nan]}
    half = t_quantile(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def _nanmean_rows(a: FloatArray) -> FloatArray:
    count = np.sum(~np.isnan(a), axis=1)
    total = np.nansum(a, axis=1)
    out = np.full(a.shape[0], np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def per_seed(trace: Trace, *, drift_episode: int | None, recovery_window: int = 150) -> dict[str, FloatArray]:
    """Every metric as an array over seeds.

    * ``reward``: cumulative reward — surfaced: 1 − y (observed answer); suppressed: 1 if no fault, else 0.
    * ``precision`` / ``recall`` / ``f1`` of what was surfaced against the real faults (F1 0 when nothing was
      surfaced but faults happened; NaN, like recall, in a seed without a real fault).
    * ``override_rate``: share of surfaced recommendations that were overridden (y = 1).
    * ``l_align_first10`` / ``l_align_last10``: observed L_align over the first / last 10 % of episodes.
    * ``true_l_align``: the alignment loss against ground truth over *every* decision — what a truthful engineer
      who saw everything would have said: a surfaced false alarm 1, a surfaced real fault 0, a suppressed real
      fault (a miss) 1, a correct suppression 0. Silence that hides a real fault is as misaligned as spam.
    * ``true_l_align_surfaced``: the same over surfaced recommendations only (= 1 − precision).
    * ``recovery_episodes``: episodes after the drift until the trailing observed L_align (post-drift samples
      only, ``recovery_window`` episodes) is back within 10 % of its pre-drift level (the steady state over the
      second half of the pre-drift phase); the remaining horizon if never — so where a seed never recovers, the mean
      over seeds is a lower bound (the table marks it "≥").
    * ``recovered``: 1 where the seed's trailing L_align came back within the horizon, else 0 (its mean: the share
      of seeds that recovered; a recovery the horizon cannot show — fewer episodes after the drift than the
      window — counts as not recovered).
    * ``f_monitor``: share of monitor checks whose action matched the ideal response.
    """
    s, t = trace.surfaced.shape
    surf = trace.surfaced
    real = trace.real_fault
    tp = np.sum(surf & real, axis=1).astype(np.float64)
    n_surf = np.sum(surf, axis=1).astype(np.float64)
    n_real = np.sum(real, axis=1).astype(np.float64)
    precision = np.divide(tp, n_surf, out=np.full(s, np.nan), where=n_surf > 0)
    recall = np.divide(tp, n_real, out=np.full(s, np.nan), where=n_real > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(s), where=denom > 0)
    f1[np.isnan(recall)] = np.nan  # no real fault: recall, and so F1, is undefined (not 0)
    overridden = np.sum(trace.y == 1.0, axis=1).astype(np.float64)
    tenth = max(1, t // 10)
    out: dict[str, FloatArray] = {
        "reward": trace.reward.sum(axis=1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "override_rate": np.divide(overridden, n_surf, out=np.full(s, np.nan), where=n_surf > 0),
        "l_align_first10": _nanmean_rows(trace.y[:, :tenth]),
        "l_align_last10": _nanmean_rows(trace.y[:, t - tenth :]),
        "true_l_align": np.mean(np.where(surf, ~real, real), axis=1).astype(np.float64),
        "true_l_align_surfaced": _nanmean_rows(trace.truthful_y),
        "surfaced_share": n_surf / t,
    }
    if drift_episode is not None:
        episodes = recovery(trace.y, drift_episode, recovery_window)
        out["recovery_episodes"] = episodes
        out["recovered"] = (episodes < t - drift_episode).astype(np.float64)
    if trace.condition.monitor and trace.triggers.size:
        out["f_monitor"] = np.mean(trace.triggers == trace.ideal, axis=1).astype(np.float64)
    return out


def recovery(y: FloatArray, drift_episode: int, window: int) -> FloatArray:
    """Episodes after ``drift_episode`` until trailing L_align ≤ 1.1 × pre-drift level (see :func:`per_seed`)."""
    pre = _nanmean_rows(y[:, drift_episode // 2 : drift_episode])
    post = y[:, drift_episode:]
    valid = ~np.isnan(post)
    csum = np.cumsum(np.where(valid, post, 0.0), axis=1)
    ccount = np.cumsum(valid, axis=1)
    idx = np.arange(post.shape[1])
    lo = idx - window
    prev_sum = np.where(lo >= 0, csum[:, np.maximum(lo, 0)], 0.0)
    prev_count = np.where(lo >= 0, ccount[:, np.maximum(lo, 0)], 0)
    count = ccount - prev_count
    loss = np.divide(csum - prev_sum, count, out=np.full(post.shape, np.inf), where=count > 0)
    ok = (loss <= 1.1 * pre[:, None]) & (idx >= window - 1)[None, :]  # full from the window-th episode on
    horizon = post.shape[1]
    first = np.where(ok.any(axis=1), np.argmax(ok, axis=1), horizon)
    return np.asarray(first, dtype=np.float64)
