"""The weekly report: numbers from storage (L_align by day, answer rates, precision/recall, τ posteriors,
F_monitor, most overridden keys), as text for Slack and the terminal, and a PNG chart of the L_align trend."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from npo.alignment import alignment_loss
from npo.bandit import ThresholdBandit
from npo.monitor import monitor_fidelity
from storage import SQLiteStore
from storage.jobs import RepairTimes, answer_counts, daily_codes, most_overridden, outcome_tally, repair_times

KINDS = ("override", "like", "neutral", "skipped")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class DayLoss:
    day: date
    loss: float | None  # mean feedback code that day; None without answers
    answers: int


@dataclass(frozen=True, slots=True)
class ArmSummary:
    threshold: float
    mean: float
    low: float  # 2.5 % quantile of the Beta posterior
    high: float  # 97.5 %
    pulls: int


@dataclass(frozen=True, slots=True)
class WeeklyReport:
    since: datetime
    until: datetime
    days: tuple[DayLoss, ...]
    counts: dict[str, int]
    precision: float | None
    recall: float | None
    outcomes_known: int
    arms: tuple[ArmSummary, ...]
    f_monitor: float | None
    overridden: tuple[tuple[str, int], ...]
    repair: RepairTimes = field(default_factory=lambda: RepairTimes(None, 0, None, 0))

    @property
    def answers(self) -> int:
        return sum(self.counts.values())

    @property
    def rates(self) -> dict[str, float]:
        total = self.answers
        return {k: self.counts.get(k, 0) / total for k in KINDS} if total else {}

    @property
    def loss(self) -> float | None:
        ys = [d.loss * d.answers for d in self.days if d.loss is not None]
        n = sum(d.answers for d in self.days)
        return sum(ys) / n if n else None


def beta_interval(alpha: float, beta: float, *, draws: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """The central 95 % interval of Beta(alpha, beta), by quantiles of a seeded sample (no SciPy needed)."""
    sample = np.random.default_rng(seed).beta(alpha, beta, draws)
    low, high = np.quantile(sample, [0.025, 0.975])
    return float(low), float(high)


def arm_summaries(bandit: ThresholdBandit) -> tuple[ArmSummary, ...]:
    out = []
    for i, (a, b) in enumerate(zip(bandit.alpha, bandit.beta, strict=True)):
        low, high = beta_interval(a, b)
        out.append(ArmSummary(bandit.threshold(i), a / (a + b), low, high, bandit.pulls[i]))
    return tuple(out)


def _days(since: datetime, until: datetime, codes: Sequence[tuple[float, float]], tz: ZoneInfo) -> tuple[DayLoss, ...]:
    by_day: dict[date, list[float]] = {}
    for at, y in codes:
        by_day.setdefault(datetime.fromtimestamp(at, tz).date(), []).append(y)
    first, last = since.astimezone(tz).date(), (until - timedelta(microseconds=1)).astimezone(tz).date()
    out = []
    day = first
    while day <= last:
        ys = by_day.get(day, [])
        out.append(DayLoss(day, alignment_loss(ys), len(ys)))
        day += timedelta(days=1)
    return tuple(out)


def build_report(store: SQLiteStore, *, since: datetime, until: datetime, timezone: str) -> WeeklyReport:
    """The report for [since, until) (aware datetimes), days counted in ``timezone``. Read-only."""
    tz = ZoneInfo(timezone)
    lo, hi = since.timestamp(), until.timestamp()
    with store.read() as conn:
        counts = answer_counts(conn, lo, hi)
        codes = daily_codes(conn, lo, hi)
        tally = outcome_tally(conn, lo, hi)
        overridden = most_overridden(conn, lo, hi)
        repair = repair_times(conn, lo, hi)
    known = tally.surfaced_real + tally.surfaced_false + tally.suppressed_real + tally.suppressed_false
    return WeeklyReport(
        since=since.astimezone(tz),
        until=until.astimezone(tz),
        days=_days(since, until, codes, tz),
        counts=counts,
        precision=tally.precision,
        recall=tally.recall,
        outcomes_known=known,
        arms=arm_summaries(store.bandit()),
        f_monitor=monitor_fidelity(store.monitor_state()),
        overridden=tuple(overridden),
        repair=repair,
    )


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h"


def report_text(report: WeeklyReport) -> str:
    """The report as plain text (readable in a terminal, and as a Slack message)."""
    span = f"{report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} {report.until.tzname()}"
    lines = [f"NPO weekly summary · {span}", ""]
    lines.append(
        f"L_align (mean feedback code, lower is better): {_num(report.loss, '.3f')} over {report.answers} answers"
    )
    for d in report.days:
        lines.append(f"  {d.day:%a %Y-%m-%d}  {_num(d.loss, '.3f'):>5}  ({d.answers} answers)")
    rates = report.rates
    if rates:
        lines.append("Answers: " + ", ".join(f"{k} {rates[k]:.0%} ({report.counts.get(k, 0)})" for k in KINDS))
    else:
        lines.append("Answers: none this period")
    lines.append(
        f"Outcomes known: {report.outcomes_known} · precision {_num(report.precision)} · recall {_num(report.recall)}"
    )
    r = report.repair
    lines.append(
        f"MTTR (prediction → real fault resolved): with a recommendation {_hours(r.with_recommendation)} "
        f"({r.n_with} faults) · without {_hours(r.without_recommendation)} ({r.n_without} faults)"
    )
    lines.append("Threshold τ posteriors (mean [95 % interval], pulls):")
    for arm in report.arms:
        lines.append(f"  τ={arm.threshold:.2f}  {arm.mean:.3f} [{arm.low:.3f}, {arm.high:.3f}]  {arm.pulls}")
    lines.append(f"F_monitor: {_num(report.f_monitor)}")
    if report.overridden:
        lines.append("Most overridden keys: " + ", ".join(f"{key} ({n})" for key, n in report.overridden))
    else:
        lines.append("Most overridden keys: none")
    return "\n".join(lines)


def render_png(report: WeeklyReport) -> bytes:
    """A PNG line chart of L_align by day (matplotlib's Agg canvas; no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - slow import, only when drawn
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = [f"{d.day:%a %d}" for d in report.days]
    values = [np.nan if d.loss is None else d.loss for d in report.days]
    ax.plot(range(len(values)), values, marker="o", color="#1f77b4")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("L_align")
    ax.set_title(f"NPO alignment loss by day, {report.since:%Y-%m-%d} – {report.until:%Y-%m-%d}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
