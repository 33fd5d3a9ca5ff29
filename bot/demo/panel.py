"""The demo page's learning panel: L_align over the answers, the threshold bandit's posterior, F_monitor.

Read-only: every number comes from the bot's SQLite store through its public read methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from storage import SQLiteStore

__all__ = ["QuarterLoss", "alignment_by_quarter", "panel_data", "rolling_loss"]

ROLLING_WINDOW = 20
MAX_POINTS = 150
Z90 = 1.645


def rolling_loss(ys: Sequence[float], window: int = ROLLING_WINDOW, max_points: int = MAX_POINTS) -> list[list[float]]:
    """``[[answer number, mean of the last ≤ window answers], …]``, thinned to at most ``max_points`` points."""
    points: list[list[float]] = []
    total = 0.0
    for i, y in enumerate(ys):
        total += y
        if i >= window:
            total -= ys[i - window]
        points.append([i + 1, total / min(i + 1, window)])
    if len(points) > max_points:
        step = len(points) / max_points
        points = [points[int(k * step)] for k in range(max_points - 1)] + [points[-1]]
    return points


@dataclass(frozen=True, slots=True)
class QuarterLoss:
    """L_align (mean y) of the answers given in one quarter of a run, and how many there were."""

    loss: float | None
    n: int


def alignment_by_quarter(store: SQLiteStore, start: float, end: float) -> list[QuarterLoss]:
    """L_align in each quarter of ``[start, end]`` (Unix seconds) over the answers given then (read-only)."""
    span = max(end - start, 1e-9)
    buckets: list[list[float]] = [[], [], [], []]
    for sample in store.alignment_samples(since=start):
        if sample.at <= end:
            buckets[min(3, int((sample.at - start) / span * 4))].append(sample.y)
    return [QuarterLoss(sum(b) / len(b) if b else None, len(b)) for b in buckets]


def panel_data(store: SQLiteStore, status: Callable[[], str] = lambda: "") -> dict[str, Any]:
    """The panel's JSON (see ``bot/standin/live_page.py`` for how it is drawn)."""
    ys = [s.y for s in store.alignment_samples(last_n=5000)]
    series = rolling_loss(ys)
    bandit = store.bandit()
    taus = []
    for tau, a, b, pulls in zip(bandit.config.thresholds, bandit.alpha, bandit.beta, bandit.pulls, strict=True):
        mean = a / (a + b)
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        taus.append(
            {
                "tau": tau,
                "mean": mean,
                "lo": max(0.0, mean - Z90 * sd),
                "hi": min(1.0, mean + Z90 * sd),
                "pulls": pulls,
            }
        )
    monitor = store.monitor_state()
    counts = store.counts()
    surfaced = counts.get("decisions_surface", 0)
    shown = {
        "predictions": counts.get("predictions", 0),
        "surfaced": surfaced,
        "suppressed": counts.get("decisions_suppress", 0),
        "blocked by policy": counts.get("decisions_block", 0),
        "to digest": counts.get("decisions_digest", 0),
        # each person's current answer, as L_align counts them (a changed answer or a taken-over skip once)
        "likes": counts.get("feedback_effective_like", 0),
        "overrides": counts.get("feedback_effective_override", 0),
        "neutral": counts.get("feedback_effective_neutral", 0),
        "skipped": counts.get("feedback_effective_skipped", 0),
        "outcomes": counts.get("outcomes", 0),
    }
    return {
        "status": status(),
        "l_align": {
            "current": series[-1][1] if series else None,
            "series": series,
            "samples": len(ys),
            "note": f"mean of the last {ROLLING_WINDOW} answers (override 1, neutral 0.5, skipped λ, like 0); "
            f"{len(ys)} answers",
        },
        "tau": taus,
        "f_monitor": {
            "value": monitor.matches / monitor.decisions if monitor.decisions else None,
            "decisions": monitor.decisions,
            "open_proposal": monitor.open_proposal,
        },
        "counts": shown,
    }
