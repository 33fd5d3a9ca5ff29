"""The results of ``npo-bot evaluate`` as a Markdown table (mean over seeds, ± half-width of the 95 % interval).

Rows: NPO; "fixed τ = t", the static rule (surface when confidence ≥ t, no learning); "surface everything"; then
the ablation rows "loop with τ = t" (NPO's loop, m(k) learning included, with the bandit pinned to t)."""

from __future__ import annotations

import math
from typing import Any

COLUMNS = (
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("override_rate", "override rate"),
    ("surfaced", "surfaced"),
    ("l_align_first_quarter", "L 1st ¼"),
    ("l_align_last_quarter", "L last ¼"),
    ("true_l_align_first_quarter", "true L 1st ¼"),
    ("true_l_align_last_quarter", "true L last ¼"),
    ("lead_time_median_min", "lead (min)"),
    ("f_monitor", "F_monitor"),
)


def _cell(m: dict[str, Any], metric: str) -> str:
    value = m.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    lo, hi = m.get("ci95", {}).get(metric, [math.nan, math.nan])
    half = (hi - lo) / 2 if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) else 0.0
    if metric in ("surfaced", "lead_time_median_min"):
        text = f"{value:.0f}"
        return text + (f" ± {half:.0f}" if half >= 0.5 else "")
    return f"{value:.3f}" + (f" ± {half:.3f}" if half >= 0.0005 else "")


def _tau(m: dict[str, Any]) -> str:
    """The mean τ drawn in each quarter of the stream, "–" for a quarter with no draw (every quarter keeps its
    place, so "0.60 → – → 0.50 → 0.50" is not read as three consecutive quarters); "—" when none has one."""
    taus = [None if t is None or math.isnan(t) else t for t in m.get("tau_quarters", [])]
    if all(t is None for t in taus):
        return "—"
    return " → ".join("–" if t is None else f"{t:.2f}" for t in taus)


def _retraining(result: dict[str, Any]) -> str:
    """The header's note on retraining: nothing when the replay did not retrain."""
    if not result.get("settings", {}).get("retrain"):
        return ""
    npo = result["npo"]
    return (
        f"; retraining on approval: {npo.get('proposals_approved', 0):.2g} proposals approved and "
        f"{npo.get('models_promoted', 0):.2g} models promoted per seed (NPO)"
    )


def table(result: dict[str, Any]) -> str:
    data = result.get("data", {})
    rows: list[tuple[str, dict[str, Any]]] = [("**NPO**", result["npo"])]
    rows += [(f"fixed τ = {t}", m) for t, m in result["fixed"].items()]
    rows.append(("surface everything", result["surface_all"]))
    rows += [(f"ablation: loop with τ = {t}", m) for t, m in result.get("fixed_loop", {}).items()]
    header = "| condition | " + " | ".join(label for _, label in COLUMNS) + " | τ by quarter |"
    lines = [
        f"{data.get('name', '')} ({data.get('format', '')}): {data.get('series', 0)} series, "
        f"{data.get('windows', 0)} labelled windows, {data.get('predictions', 0)} predictions "
        f"({data.get('predictions_inside_windows', 0)} inside a window; the predictor flags "
        f"{data.get('windows_flagged_by_predictor', 0)} of the windows); seeds {result.get('seeds')}; "
        f"{result.get('elapsed_s', 0):.1f} s{_retraining(result)}",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 2),
    ]
    for label, m in rows:
        tau = "—" if m is result["surface_all"] else _tau(m)  # no threshold at all (its τ is recorded as 0)
        lines.append(f"| {label} | " + " | ".join(_cell(m, metric) for metric, _ in COLUMNS) + f" | {tau} |")
    return "\n".join(lines)
