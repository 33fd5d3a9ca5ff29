"""Run an evaluation: predictor over every series, then every condition × seed through the loop, then figures.

Conditions:

* ``npo`` — the loop: m(k) learning, the bandit over the threshold grid, the Safety Policy Engine;
* ``fixed`` — one per τ of the grid: the conventional alerting rule, surface when confidence ≥ τ, no learning
  (:mod:`npo.evaluate.static`; what an on-call team without NPO would have seen, the paper's comparison);
* ``fixed_loop`` — one per τ of the grid: the ablation, the same loop (m(k) learning included) with the bandit's
  grid reduced to that τ (what the bandit adds on top of m(k));
* ``surface_all`` — every prediction the predictor emits.

All conditions of a seed face the same simulated engineers. With ``ReplaySettings.retrain`` every loop condition
(``npo`` and ``fixed_loop``) retrains on an approved proposal as production does (:mod:`npo.evaluate.replay`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from npo.bandit import DEFAULT_THRESHOLDS, BanditConfig
from npo.evaluate.counting import metrics
from npo.evaluate.data import Dataset
from npo.evaluate.engineers import EngineerConfig, draw_answers
from npo.evaluate.predictor import PredictorConfig, predict
from npo.evaluate.replay import ReplaySettings, Stream, build_stream, replay
from npo.evaluate.static import static_trace
from npo.loop import InMemoryStore, LoopConfig, LoopStore
from npo.policy import DEFAULT_POLICY, Policy
from npo.sim.metrics import summarise

SUMMARY_METRICS = (
    "precision",
    "recall",
    "f1",
    "override_rate",
    "surfaced",
    "windows_caught",
    "lead_time_median_min",
    "early_share",
    "l_align_first_quarter",
    "l_align_last_quarter",
    "true_l_align_first_quarter",
    "true_l_align_last_quarter",
    "f_monitor",
    "monitor_triggers",
    "proposals_approved",
    "models_promoted",
)
QUARTER_METRICS = ("l_align_quarters", "true_l_align_quarters", "tau_quarters")


MISS_WEIGHT = 10.0
PRIOR_EVENTS = 2.0
POOL_KEYS = False
POOL_STRENGTH = 2.0
RETRAIN = False  # measured and not adopted: README, "What was measured"


def evaluation_loop_config(
    *,
    full_information: bool | None = None,
    prior_events: float | None = None,
    pool_keys: bool | None = None,
    pool_strength: float | None = None,
    model_prior_strength: float | None = None,
) -> LoopConfig:
    """The loop's defaults, except the bandit's miss term and prior.

    A suppressed prediction that turns out a real fault counts as ``MISS_WEIGHT`` failed answers (the default 1
    treats it like one override). Missing a fault costs a whole window of recall, and on these data the feedback is
    too sparse for a weight-1 miss term to pull the bandit away from the thresholds that suppress everything.

    The bandit starts from the ignorance prior of ``PRIOR_EVENTS`` pseudo-predictions
    (:attr:`npo.bandit.BanditConfig.prior_events`): with a flat prior the first draws pick τ = 0.8 or 0.9 two
    times in five and suppress a stream's first predictions on a coin flip; the ignorance prior makes the costly
    miss term count before any evidence (README, "Evaluation on real fault data").

    Partial pooling of m(k) with its fault type's (:attr:`npo.loop.LoopConfig.pool_keys`, n₀ = ``POOL_STRENGTH``)
    is off: measured and not adopted (README, "What was measured").

    The promoted feature model's pseudo-count in m(k) (:attr:`npo.loop.LoopConfig.model_prior_strength`) is the
    loop's; it matters only when the replay retrains (:attr:`npo.evaluate.replay.ReplaySettings.retrain`).

    ``full_information`` / ``prior_events`` / ``pool_keys`` / ``pool_strength`` / ``model_prior_strength`` override
    those choices (:attr:`~npo.bandit.BanditConfig.full_information`: every answer updates every τ arm, not only the
    one drawn); None keeps them."""
    bandit = BanditConfig(miss_weight=MISS_WEIGHT, prior_events=PRIOR_EVENTS)
    if full_information is not None:
        bandit = replace(bandit, full_information=full_information)
    if prior_events is not None:
        bandit = replace(bandit, prior_events=prior_events)
    config = LoopConfig(
        bandit=bandit,
        pool_keys=POOL_KEYS if pool_keys is None else pool_keys,
        pool_strength=POOL_STRENGTH if pool_strength is None else pool_strength,
    )
    if model_prior_strength is not None:
        config = replace(config, model_prior_strength=model_prior_strength)
    return config


@dataclass(frozen=True, slots=True)
class EvaluationSettings:
    engineers: EngineerConfig = field(default_factory=EngineerConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loop: LoopConfig = field(default_factory=evaluation_loop_config)
    replay: ReplaySettings = field(default_factory=lambda: ReplaySettings(retrain=RETRAIN))
    policy: Policy = DEFAULT_POLICY
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    db_dir: Path | None = None


def conditions(thresholds: tuple[float, ...]) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Condition name → (``loop`` or ``static``, the threshold grid its bandit draws from / the rule's τ)."""
    out: dict[str, tuple[str, tuple[float, ...]]] = {"npo": ("loop", thresholds)}
    out.update({f"fixed_{t:g}": ("static", (t,)) for t in thresholds})
    out.update({f"fixed_loop_{t:g}": ("loop", (t,)) for t in thresholds})
    out["surface_all"] = ("static", (0.0,))
    return out


def tau_label(t: float) -> str:
    """The JSON key of a threshold: "0.5", "0.6", … (always one decimal at least)."""
    return f"{t:g}" if t != int(t) else f"{t:.1f}"


def _store(settings: EvaluationSettings, config: LoopConfig, label: str) -> AbstractContextManager[LoopStore]:
    disruptive = settings.policy.blast_radius.disruptive_actions
    stale_after_s = settings.policy.blast_radius.stale_after_seconds
    if settings.db_dir is None:
        return nullcontext(InMemoryStore(config, disruptive_actions=disruptive, stale_after_s=stale_after_s))
    from storage.store import SQLiteStore  # noqa: PLC0415 - only with --db

    settings.db_dir.mkdir(parents=True, exist_ok=True)
    path = settings.db_dir / f"evaluate-{label}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return SQLiteStore(path, config, disruptive_actions=disruptive, stale_after_s=stale_after_s)


def make_stream(dataset: Dataset, predictor: PredictorConfig) -> Stream:
    return build_stream(dataset, [predict(s, predictor) for s in dataset.series])


def evaluate(
    dataset: Dataset,
    settings: EvaluationSettings,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The full evaluation as a JSON-ready dict (see ``bot/evaluate/cli.py`` for its shape)."""
    started = time.monotonic()
    predictions = [predict(s, settings.predictor) for s in dataset.series]
    stream = build_stream(dataset, predictions)
    ready_at = {p.series: p.ready_at for p in predictions}
    # Windows closing before their series has the history the predictor needs: counted as missed by every condition.
    too_early = [w for w in dataset.windows if (at := ready_at[w.series]) is None or w.end < at]
    onsets = np.asarray([w.onset for w in dataset.windows])
    per_condition: dict[str, list[dict[str, Any]]] = {}
    conds = conditions(settings.thresholds)
    for seed in settings.seeds:
        answers = draw_answers(
            stream.real_fault,
            stream.series_index,
            len(dataset.series),
            settings.engineers,
            np.random.default_rng([seed, 1]),
        )
        for name, (kind, grid) in conds.items():
            if kind == "static":
                trace = static_trace(stream, answers, grid[0], settings.loop.codes)
            else:
                config = replace(settings.loop, bandit=replace(settings.loop.bandit, thresholds=grid))
                with _store(settings, config, f"{name}-seed{seed}") as store:
                    trace = replay(
                        dataset,
                        stream,
                        answers,
                        store=store,
                        config=config,
                        policy=settings.policy,
                        rng=np.random.default_rng([seed, 2]),
                        settings=settings.replay,
                    )
            per_condition.setdefault(name, []).append(metrics(stream, trace, onsets, len(dataset.windows)))
            if progress is not None:
                progress(f"seed {seed}: {name}")
    result: dict[str, Any] = {"npo": _aggregate(per_condition["npo"])}
    result["fixed"] = {tau_label(t): _aggregate(per_condition[f"fixed_{t:g}"]) for t in settings.thresholds}
    result["fixed_loop"] = {tau_label(t): _aggregate(per_condition[f"fixed_loop_{t:g}"]) for t in settings.thresholds}
    result["surface_all"] = _aggregate(per_condition["surface_all"])
    result["seeds"] = list(settings.seeds)
    result["data"] = {
        "name": dataset.name,
        "format": dataset.notes.get("format", ""),
        "series": len(dataset.series),
        "windows": len(dataset.windows),
        "predictions": len(stream),
        "predictions_inside_windows": int(stream.real_fault.sum()),
        "windows_flagged_by_predictor": int(np.unique(stream.memberships()[1]).size),
        "windows_before_predictor_ready": len(too_early),
        "series_of_windows_before_predictor_ready": sorted({w.series for w in too_early}),
        "horizon_s": dataset.horizon_s,
    }
    result["settings"] = {
        "noise": settings.engineers.noise,
        "skip_rate": settings.engineers.skip_rate,
        "adversarial": settings.engineers.adversarial,
        "thresholds": list(settings.thresholds),
        "store": "sqlite" if settings.db_dir is not None else "memory",
        "policy": settings.policy.name,
        "key_fields": list(settings.loop.key_spec.fields),
        "recency_s": settings.replay.recency_s,
        "miss_weight": settings.loop.bandit.miss_weight,
        "full_information": settings.loop.bandit.full_information,
        "prior_events": settings.loop.bandit.prior_events,
        "pool_keys": settings.loop.pool_keys,
        "pool_strength": settings.loop.pool_strength,
        "retrain": settings.replay.retrain,
        "model_prior_strength": settings.loop.model_prior_strength,
        "name_dimension": settings.replay.name_dimension,
        "even_odds_expected": settings.predictor.even_odds_expected,
    }
    result["elapsed_s"] = round(time.monotonic() - started, 2)
    return result


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds as the figures, with 95 % intervals and the per-seed values beside them."""
    out: dict[str, Any] = {}
    ci: dict[str, list[float]] = {}
    per_seed: dict[str, list[float]] = {}
    for metric in SUMMARY_METRICS:
        values = np.asarray([float(r[metric]) for r in runs], dtype=np.float64)
        s = summarise(values)
        out[metric] = s["mean"]
        ci[metric] = list(s["ci95"])  # type: ignore[arg-type]
        per_seed[metric] = values.tolist()
    for metric in QUARTER_METRICS:
        arr = np.asarray([r[metric] for r in runs], dtype=np.float64)
        out[metric] = [float(summarise(arr[:, q])["mean"]) for q in range(arr.shape[1])]  # type: ignore[arg-type]
    out["ci95"] = ci
    out["per_seed"] = per_seed
    return out


def finite(value: Any) -> Any:
    """NaN and infinities as None, so the output is strict JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
