"""``npo-bot simulate``: run the paper's experiments and write ``metrics.json``, PNG plots and a table."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from npo.sim.experiments import EPSILONS, ExperimentResult, run_experiments

HEADLINE_CONDITIONS = (
    "full",
    "fixed_0.7",
    "best_fixed",
    "skips_ignored",
    "no_monitor",
    "no_miss_term",
    "eta_constant",
    "eta_decaying",
    "no_trust",
    "discounted_bandit",
    "drawn_arm_only",
    "ignorance_prior",
    "miss_weight_10",
    "miss_weight_10_ignorance_prior",
    "pool_keys",
    "miss_weight_10_ignorance_prior_pool_keys",
)
PLOT_FILES = (
    "l_align_by_eta.png",
    "l_align_by_epsilon.png",
    "npo_vs_fixed.png",
    "drift_monitor.png",
    "chosen_tau.png",
)  # what write_plots writes, in order
TABLE_FILE = "table.md"
HEADLINE_METRICS = (
    "reward",
    "f1",
    "precision",
    "recall",
    "override_rate",
    "l_align_first10",
    "l_align_last10",
    "true_l_align",
    "recovery_episodes",
    "true_l_align_adversarial",
)


def _fmt(value: float, metric: str) -> str:
    if math.isnan(value):
        return "—"
    if metric in ("reward", "recovery_episodes"):
        return f"{value:,.0f}"
    return f"{value:.3f}"


def table(result: ExperimentResult, conditions: tuple[str, ...] = HEADLINE_CONDITIONS) -> str:
    """The headline table as GitHub-flavoured Markdown (mean over seeds; 95 % intervals are in metrics.json).

    A recovery some seeds never made counts them at the remaining horizon: the mean is a lower bound, shown "≥",
    and a line under the table says how many seeds of which rows did not recover."""
    short = {
        "l_align_first10": "L first10%",
        "l_align_last10": "L last10%",
        "true_l_align": "true L",
        "recovery_episodes": "recovery",
        "true_l_align_adversarial": "true L (20% adv.)",
        "override_rate": "override",
    }
    header = "| condition | " + " | ".join(short.get(m, m) for m in HEADLINE_METRICS) + " |"
    lines = [header, "|" + "---|" * (len(HEADLINE_METRICS) + 1)]
    censored: list[str] = []
    for name in conditions:
        row = result.conditions.get(name)
        if row is None:
            continue
        label = f"best_fixed ({result.best_fixed})" if name == "best_fixed" else name
        recovered = row.get("recovered")
        share = float(recovered["mean"]) if isinstance(recovered, dict) else 1.0  # type: ignore[arg-type]
        never = round((1.0 - share) * result.seeds) if math.isfinite(share) else 0
        cells = []
        for metric in HEADLINE_METRICS:
            value = row.get(metric)
            cell = _fmt(float(value["mean"]), metric) if isinstance(value, dict) else "—"  # type: ignore[arg-type]
            if metric == "recovery_episodes" and never > 0 and cell != "—":
                cell = "≥" + cell
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if never > 0:
            censored.append(f"{label} {never} of {result.seeds}")
    if censored and result.drift_episode is not None:
        remaining = result.episodes - result.drift_episode
        lines.append(
            f"\n≥ recovery: seeds whose L_align never came back near its pre-drift level count as the remaining "
            f"{remaining:,} episodes ({', '.join(censored)})."
        )
    return "\n".join(lines)


def write_plots(result: ExperimentResult, out: Path) -> list[Path]:
    """Write the five PNG plots (:data:`PLOT_FILES`); returns their paths. Uses matplotlib's non-interactive Agg
    backend."""
    import matplotlib  # noqa: PLC0415 - heavy import, only for this command

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    series = result.series
    x = np.arange(1, result.episodes + 1)
    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    def drift_line(ax: Any) -> None:
        if result.drift_episode is not None:
            ax.axvline(result.drift_episode, color="grey", linestyle=":", label="drift")

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (
        ("eta_decaying", "decaying (n+10)^-0.6"),
        ("eta_constant_0.05", "constant 0.05"),
        ("eta_constant", "constant 0.1"),
        ("eta_constant_0.3", "constant 0.3"),
    ):
        if f"l_align:{name}" in series:
            ax.plot(x, series[f"l_align:{name}"], label=f"η {label}")
    drift_line(ax)
    ax.set(
        title=f"Observed L_align by step size η (ε = {result.epsilon})",
        xlabel="episode",
        ylabel="L_align (trailing mean)",
    )
    ax.legend()
    save(fig, PLOT_FILES[0])

    fig, ax = plt.subplots(figsize=(7, 4))
    for eps in sorted({*EPSILONS, result.epsilon}):
        key = "l_align:full" if eps == result.epsilon else f"l_align:full@eps={eps}"
        if key in series:
            ax.plot(x, series[key], label=f"ε = {eps}")
    drift_line(ax)
    ax.set(
        title="Observed L_align by label noise ε (full NPO)",
        xlabel="episode",
        ylabel="L_align (trailing mean)",
    )
    ax.legend()
    save(fig, PLOT_FILES[1])

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (
        ("full", "NPO (bandit τ)"),
        ("fixed_0.7", "fixed τ = 0.7"),
        ("best_fixed", f"best fixed ({result.best_fixed})"),
    ):
        if f"l_align:{name}" in series:
            ax.plot(x, series[f"l_align:{name}"], label=label)
    drift_line(ax)
    ax.set(title="NPO vs fixed thresholds", xlabel="episode", ylabel="L_align (trailing mean)")
    ax.legend()
    save(fig, PLOT_FILES[2])

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("full", "with meta-monitor"), ("no_monitor", "without meta-monitor")):
        if f"l_align:{name}" in series:
            ax.plot(x, series[f"l_align:{name}"], label=label)
    drift_line(ax)
    ax.set(title="Recovery after drift", xlabel="episode", ylabel="L_align (trailing mean)")
    ax.legend()
    save(fig, PLOT_FILES[3])

    fig, ax = plt.subplots(figsize=(7, 4))
    if "tau:full" in series:
        width = max(1, result.episodes // 40)
        ax.plot(x, _moving_average(series["tau:full"], width), label=f"mean τ over seeds ({width}-episode average)")
        ax.fill_between(
            x,
            _moving_average(series["tau_p10:full"], width),
            _moving_average(series["tau_p90:full"], width),
            alpha=0.2,
            label="10–90 % of seeds",
        )
    drift_line(ax)
    ax.set(title="Threshold τ chosen by the bandit (full NPO)", xlabel="episode", ylabel="τ", ylim=(0.45, 0.95))
    ax.legend()
    save(fig, PLOT_FILES[4])
    return paths


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average of ``width`` points (shorter at the start), same length as the input."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(0, idx - width)
    return np.asarray((csum[idx] - csum[lo]) / (idx - lo), dtype=np.float64)


def simulate(
    episodes: int, seeds: int, out: Path, *, base_seed: int = 0, plots: bool = True, progress: Any = None
) -> tuple[ExperimentResult, float]:
    """Run the experiments and write ``out/metrics.json`` (+ plots) and ``out/table.md``, replacing those of an
    earlier run (one that left its ``metrics.json`` in ``out``): once ``metrics.json`` is written, that run's table
    and plots are deleted, even with ``plots=False``. Returns the result and elapsed seconds."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = run_experiments(episodes, seeds, base_seed=base_seed, progress=progress)
    payload = _finite(result.to_json())
    tmp = out / "metrics.json.tmp"
    earlier_run = (out / "metrics.json").is_file()
    try:
        tmp.write_text(json.dumps(payload, indent=1, allow_nan=False, default=_json_default) + "\n", encoding="utf-8")
        tmp.replace(out / "metrics.json")
    except BaseException:  # a full disk, a folder named metrics.json, Ctrl-C: no partial file left behind
        if tmp.is_file():
            tmp.unlink()
        raise
    if earlier_run:
        _remove_earlier_outputs(out)
    if plots:
        write_plots(result, out)
    (out / TABLE_FILE).write_text(table(result) + "\n", encoding="utf-8")
    return result, time.monotonic() - started


def _remove_earlier_outputs(out: Path) -> None:
    """Delete the table and the plots an earlier run left in ``out`` (this command's file names only, and only
    files: anything else in the folder stays), so that a run with ``plots=False``, or one that stops midway,
    never leaves charts or a table beside a ``metrics.json`` they were not drawn from. Only where an earlier run
    was (its ``metrics.json``: it writes that first), so pictures of those names in another folder are kept."""
    for name in (TABLE_FILE, *PLOT_FILES):
        path = out / name
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)


def _finite(value: Any) -> Any:
    """NaN and infinities become null, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    return value


def _json_default(value: object) -> object:
    if isinstance(value, np.floating | np.integer):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
