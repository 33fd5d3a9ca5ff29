"""The paper's experiments: every condition × metric, over seeds, plus the series the plots need.

``run_experiments`` is pure: it returns numbers and arrays; writing ``metrics.json`` and PNGs is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from npo.bandit import BanditConfig
from npo.misalignment import EtaSchedule
from npo.sim.engine import Condition, Trace, run
from npo.sim.metrics import per_seed, summarise
from npo.sim.world import WorldConfig, make_world

FloatArray = npt.NDArray[np.float64]
FIXED_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
EPSILONS = (0.0, 0.1, 0.2, 0.3)
HEADLINE_EPSILON = 0.1
ADVERSARIAL_SHARE = 0.2


def conditions() -> dict[str, Condition]:
    """The named conditions of the experiment (``full`` is NPO as shipped)."""
    full = Condition("full")
    return {
        "full": full,
        **{f"fixed_{t}": replace(full, name=f"fixed_{t}", fixed_threshold=t) for t in FIXED_GRID},
        "skips_ignored": replace(full, name="skips_ignored", skips_count=False),
        "no_monitor": replace(full, name="no_monitor", monitor=False),
        "no_miss_term": replace(full, name="no_miss_term", miss_term=False),
        "eta_constant": replace(full, name="eta_constant", eta=EtaSchedule("constant", eta=0.1)),
        "eta_decaying": replace(full, name="eta_decaying", eta=EtaSchedule("decaying", n0=10, kappa=0.6)),
        "no_trust": replace(full, name="no_trust", trust=False),
        "discounted_bandit": replace(full, name="discounted_bandit", bandit=BanditConfig(gamma=0.995)),
        "drawn_arm_only": replace(full, name="drawn_arm_only", bandit=replace(full.bandit, full_information=False)),
        "ignorance_prior": replace(full, name="ignorance_prior", bandit=replace(full.bandit, prior_events=2.0)),
        "miss_weight_10": replace(full, name="miss_weight_10", bandit=replace(full.bandit, miss_weight=10.0)),
        "miss_weight_10_ignorance_prior": replace(
            full, name="miss_weight_10_ignorance_prior", bandit=replace(full.bandit, miss_weight=10.0, prior_events=2.0)
        ),
        "pool_keys": replace(full, name="pool_keys", pool_keys=True),
        "miss_weight_10_ignorance_prior_pool_keys": replace(
            full,
            name="miss_weight_10_ignorance_prior_pool_keys",
            bandit=replace(full.bandit, miss_weight=10.0, prior_events=2.0),
            pool_keys=True,
        ),
    }


@dataclass
class ExperimentResult:
    """Aggregated metrics and per-episode series for plotting."""

    episodes: int
    seeds: int
    conditions: dict[str, dict[str, dict[str, float | list[float]]]] = field(default_factory=dict)
    series: dict[str, FloatArray] = field(default_factory=dict)  # name → mean curve over seeds (T,)
    drift_episode: int | None = None
    best_fixed: str = ""
    epsilon: float = HEADLINE_EPSILON  # the label noise of the headline conditions (``series["l_align:full"]``)

    def to_json(self) -> dict[str, object]:
        return {
            "episodes": self.episodes,
            "seeds": self.seeds,
            "drift_episode": self.drift_episode,
            "best_fixed": self.best_fixed,
            "conditions": self.conditions,
        }


def _smooth_mean(y: FloatArray, window: int) -> FloatArray:
    """Mean over seeds of the trailing observed L_align (NaN-aware) — one curve per condition."""
    valid = ~np.isnan(y)
    csum = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(np.where(valid, y, 0.0), axis=1)], axis=1)
    ccount = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(valid, axis=1)], axis=1)
    idx = np.arange(1, y.shape[1] + 1)
    lo = np.maximum(0, idx - window)
    count = ccount[:, idx] - ccount[:, lo]
    loss = np.divide(csum[:, idx] - csum[:, lo], count, out=np.zeros((y.shape[0], idx.size)), where=count > 0)
    seeds_with_data = np.sum(count > 0, axis=0)
    total = np.sum(np.where(count > 0, loss, 0.0), axis=0)
    return np.asarray(np.divide(total, seeds_with_data, out=np.full(idx.size, np.nan), where=seeds_with_data > 0))


def run_experiments(
    episodes: int = 2000,
    seeds: int = 20,
    *,
    base_seed: int = 0,
    world: WorldConfig | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExperimentResult:
    """Run every condition on ``world`` (the default world, ε = 0.1, if None) over ``episodes`` episodes, plus
    adversarial and ε/η sweeps, and aggregate over ``seeds``. The world's label noise ε is the headline
    conditions'; the ε sweep runs the other levels of :data:`EPSILONS`."""
    base = replace(world or WorldConfig(epsilon=HEADLINE_EPSILON), episodes=episodes)
    adversarial = replace(base, adversarial=ADVERSARIAL_SHARE)
    conds = conditions()
    smooth = max(20, episodes // 20)
    jobs: list[tuple[str, WorldConfig, Condition]] = []
    for name, cond in conds.items():
        jobs.append((name, base, cond))
        jobs.append((f"{name}@adversarial", adversarial, cond))
    for eps in EPSILONS:
        if eps != base.epsilon:
            jobs.append((f"full@eps={eps}", replace(base, epsilon=eps), conds["full"]))
    for eta in (0.05, 0.3):
        jobs.append(
            (
                f"eta_constant_{eta}",
                base,
                replace(conds["full"], name=f"eta_constant_{eta}", eta=EtaSchedule("constant", eta=eta)),
            )
        )
    jobs.append(("full@skip=0.6", replace(base, skip=0.6), conds["full"]))

    worlds: dict[WorldConfig, object] = {}
    result = ExperimentResult(episodes=episodes, seeds=seeds, drift_episode=base.drift_episode, epsilon=base.epsilon)
    raw: dict[str, dict[str, FloatArray]] = {}
    for i, (name, wcfg, cond) in enumerate(jobs):
        if progress is not None:
            progress(i, len(jobs), name)
        w = worlds.get(wcfg)
        if w is None:
            w = worlds[wcfg] = make_world(wcfg, seeds, base_seed)
        trace: Trace = run(w, cond, seed=base_seed + 1)  # type: ignore[arg-type]
        raw[name] = per_seed(trace, drift_episode=wcfg.drift_episode)
        if "@" not in name or name.startswith("full@eps") or name.startswith("full@skip"):
            result.series[f"l_align:{name}"] = _smooth_mean(trace.y, smooth)
        if name == "full":
            result.series["tau:full"] = trace.threshold.mean(axis=0)
            result.series["tau_p90:full"] = np.quantile(trace.threshold, 0.9, axis=0)
            result.series["tau_p10:full"] = np.quantile(trace.threshold, 0.1, axis=0)
    if progress is not None:
        progress(len(jobs), len(jobs), "done")

    fixed = {f"fixed_{t}": float(np.mean(raw[f"fixed_{t}"]["reward"])) for t in FIXED_GRID}
    best = max(fixed, key=lambda k: fixed[k])
    result.best_fixed = best
    raw["best_fixed"] = raw[best]
    raw["best_fixed@adversarial"] = raw[f"{best}@adversarial"]
    result.series["l_align:best_fixed"] = result.series[f"l_align:{best}"]

    for name, metrics in raw.items():
        if "@" in name and not (name.startswith("full@eps") or name.startswith("full@skip")):
            continue
        row = {m: summarise(v) for m, v in metrics.items()}
        adv = raw.get(f"{name}@adversarial")
        if adv is not None:
            row["true_l_align_adversarial"] = summarise(adv["true_l_align"])
            row["recall_adversarial"] = summarise(adv["recall"])
        result.conditions[name] = row
    return result
