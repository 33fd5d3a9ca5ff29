"""The weekly report: numbers from storage (L_align by day, answer rates, precision/recall, τ posteriors,
F_monitor, most overridden keys, the people whose answers need a look), as text for Slack and the terminal, and a
PNG chart of the L_align trend.

A person is flagged (:func:`operator_flags`) when, in the period, their answers were **one-sided** (at least
``ONE_SIDED_MIN_ANSWERS`` answers, ``ONE_SIDED_SHARE`` or more of them the same — override or like — while everyone
else's share of that answer is at least ``ONE_SIDED_MARGIN`` lower), when their **trust weight** is now below
``LOW_TRUST_WEIGHT`` (they agree with outcomes and peers little; their clicks count for little or nothing), when
they **disagreed with the outcomes** of most of their answers whose outcome is known (at least
``DISAGREE_MIN_OUTCOMES``), or when they made **clicks over the rate limit**.

Outcome-based figures (outcomes known, precision, recall and MTTR) count the outcomes that *arrived* in the period
(``recorded_at``, when NPO received them; ``at`` for outcomes stored before that was kept), whenever their
recommendation was decided: each outcome is counted in exactly one week, and one that arrives after its week's
summary was posted (an Alertmanager "resolved" sent a few minutes after ``endsAt``, across the weekly slot) is in
the next summary rather than in none. MTTR itself still runs from the prediction to the outcome's ``at``.

:func:`report_text` gives Slack mrkdwn by default (the weekly post, ``/npo summary``): keys and operator ids come
from predictions and clicks, so they are escaped (no injected mentions or links) and shortened to
``MAX_NAME_IN_SLACK`` characters (their full text is in ``/npo why``, the exports and ``npo-bot report``). With
``slack=False`` (the terminal) they are printed as they are. *Answers to look at* lists the people worst first
(:func:`worst_first`); in Slack only the first ``MAX_FLAGGED_IN_SLACK``, then how many more ``npo-bot report``
lists, so the summary stays readable and well within the 40,000 characters Slack keeps of a message's text (the
chart's ``initial_comment`` included) however many people are flagged.

Days run from the period's local time of day to the same time the next day (:func:`_days`): a summary posted on
Monday at 09:00 has seven days, Monday 09:00 to Tuesday 09:00 first, and shares none with the summary before or after
it. The chart has one point per day, its x axis named after the zone the days are counted in; for spans longer than
``CHART_MAX_TICKS`` days only every n-th day is labelled (dates as ``17 Mar``), so the labels never overlap. A
period without answers is an empty chart that says so.
``npo-bot report`` allows any period from 1970 on.

The τ posteriors and F_monitor have no history in storage (the bandit keeps one state, α, β and a count per arm,
put back to its prior by an approved retraining; F_monitor one running count): the report shows them as they stand
when it is made, and says so ("now, as of …"; F_monitor "all time"), whatever the period.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from bot.slack.text import escape, truncate
from npo.alignment import alignment_loss
from npo.bandit import ThresholdBandit
from npo.monitor import monitor_fidelity
from npo.trust import TrustConfig, trust_weight
from storage import SQLiteStore
from storage.jobs import (
    RepairTimes,
    answer_counts,
    daily_codes,
    most_overridden,
    outcome_tally,
    proposal_counts,
    repair_times,
)
from storage.operators import OperatorActivity, operator_activity

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KINDS = ("override", "like", "neutral", "skipped")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONE_SIDED_MIN_ANSWERS = 10
ONE_SIDED_SHARE = 0.9
ONE_SIDED_MARGIN = 0.3
LOW_TRUST_WEIGHT = 0.5
DISAGREE_MIN_OUTCOMES = 5
MAX_NAME_IN_SLACK = 80  # characters of a key or an operator id in the Slack text (ellipsis included)
MAX_FLAGGED_IN_SLACK = 20  # people listed under "Answers to look at" in the Slack text; the rest are counted
CHART_MAX_TICKS = 10  # day labels at most on the chart's x axis


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
    pulls: int  # all time: answers to recommendations surfaced at this τ + outcomes of predictions it suppressed


@dataclass(frozen=True, slots=True)
class OperatorFlag:
    """A person whose answers need a look, with the numbers behind each reason (see the module docstring)."""

    operator: str
    answers: int  # effective answers in the period (skips excluded)
    side: str | None  # "override" or "like" when one-sided
    side_share: float | None  # their share of that answer
    others_share: float | None  # everyone else's share of it (None when nobody else answered)
    weight: float | None  # trust weight now (None: trust off, or no tally yet)
    agreement: float | None  # their tally's mean agreement with outcomes and peers, prior included
    with_outcome: int  # answers in the period whose outcome is known...
    agreed: float  # ...and how many of them agreed with it (neutral counts half)
    rate_limited: int  # clicks over the rate limit in the period
    reasons: tuple[str, ...]  # "one-sided", "low trust", "disagrees with outcomes", "rate-limited"


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
    flagged: tuple[OperatorFlag, ...] = ()
    monitor_answered: int = 0  # the approved and dismissed alerts F_monitor is the share of (all time)
    proposals: dict[str, int] = field(default_factory=dict)  # the period's: raised, approved, dismissed, expired
    day_start: time = time(0)  # the local time of day each of ``days`` starts at (the period's start)
    # When the current state was read — the τ posteriors (the bandit as it stands, learned since its last reset, not
    # from the period alone) and F_monitor (all time); None: at ``until``.
    as_of: datetime | None = None

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


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    """``moment`` in ``tz``: kept as the wall time it is when it already is in that zone (a slot the clocks skip
    stays the slot's time of day), else converted."""
    return moment.replace(tzinfo=tz) if getattr(moment.tzinfo, "key", None) == tz.key else moment.astimezone(tz)


def _days(since: datetime, until: datetime, codes: Sequence[tuple[float, float]], tz: ZoneInfo) -> tuple[DayLoss, ...]:
    """One bucket a day, each from ``since``'s local time of day to the same time the next day (midnight to
    midnight for a period that starts at midnight; 23 or 25 hours across a daylight-saving change), the last one
    ending at ``until``. A week from Monday 09:00 to Monday 09:00 has seven buckets from Monday, and the next week's
    first bucket starts where this week's last one ends: no day is split between two summaries."""
    start = _local(since, tz)
    end = until.timestamp()
    starts = [start]  # the wall time as given (fold included): a summary's slot, even one the clocks skip
    while (nxt := datetime.combine(starts[-1].date() + timedelta(days=1), start.timetz())).timestamp() < end:
        starts.append(nxt)
    edges = [s.timestamp() for s in starts]
    by_day: list[list[float]] = [[] for _ in starts]
    for at, y in codes:
        if (i := bisect.bisect_right(edges, at) - 1) >= 0:
            by_day[i].append(y)
    return tuple(DayLoss(s.date(), alignment_loss(ys), len(ys)) for s, ys in zip(starts, by_day, strict=True))


def _one_sided(person: OperatorActivity, everyone: Sequence[OperatorActivity]) -> tuple[str, float, float | None]:
    """(answer, their share, everyone else's share) of the person's most frequent of override / like."""
    side = max(("override", "like"), key=lambda k: (person.counts.get(k, 0), k))
    share = person.counts.get(side, 0) / person.answers if person.answers else 0.0
    others = [a for a in everyone if a.operator != person.operator]
    total = sum(a.answers for a in others)
    others_share = sum(a.counts.get(side, 0) for a in others) / total if total else None
    return side, share, others_share


def operator_flags(activity: Sequence[OperatorActivity], trust_config: TrustConfig | None) -> tuple[OperatorFlag, ...]:
    """The people to flag among ``activity`` (one period's), by operator id; see the module docstring."""
    flags = []
    answering = [a for a in activity if a.answers]
    for person in activity:
        reasons = []
        side, share, others_share = _one_sided(person, answering)
        one_sided = (
            person.answers >= ONE_SIDED_MIN_ANSWERS
            and share >= ONE_SIDED_SHARE
            and others_share is not None
            and others_share <= share - ONE_SIDED_MARGIN
        )
        if one_sided:
            reasons.append("one-sided")
        weight = agreement = None
        if person.trust is not None and trust_config is not None:
            weight, agreement = trust_weight(person.trust, trust_config), person.trust.mean
            if weight < LOW_TRUST_WEIGHT:
                reasons.append("low trust")
        if person.with_outcome >= DISAGREE_MIN_OUTCOMES and person.outcome_agreement < person.with_outcome / 2:
            reasons.append("disagrees with outcomes")
        if person.rate_limited:
            reasons.append("rate-limited")
        if reasons:
            flags.append(
                OperatorFlag(
                    person.operator,
                    person.answers,
                    side if one_sided else None,
                    share if one_sided else None,
                    others_share if one_sided else None,
                    weight,
                    agreement,
                    person.with_outcome,
                    person.outcome_agreement,
                    person.rate_limited,
                    tuple(reasons),
                )
            )
    return tuple(flags)


def build_report(
    store: SQLiteStore, *, since: datetime, until: datetime, timezone: str, now: datetime | None = None
) -> WeeklyReport:
    """The report for [since, until) (aware datetimes), days counted in ``timezone``. Read-only.

    The τ posteriors and F_monitor are not kept per period: they are the state as it stands when the report is made,
    ``now`` (aware; default ``until``, which it is for a report up to now), and the report says so."""
    tz = ZoneInfo(timezone)
    lo, hi = since.timestamp(), until.timestamp()
    with store.read() as conn:
        counts = answer_counts(conn, lo, hi)
        codes = daily_codes(conn, lo, hi)
        tally = outcome_tally(conn, lo, hi)
        overridden = most_overridden(conn, lo, hi)
        repair = repair_times(conn, lo, hi)
        activity = operator_activity(conn, lo, hi)
        proposals = proposal_counts(conn, lo, hi)
    monitor = store.monitor_state()
    known = tally.surfaced_real + tally.surfaced_false + tally.suppressed_real + tally.suppressed_false
    return WeeklyReport(
        since=_local(since, tz),  # as the days count it: a start the clocks skip keeps its time of day
        until=_local(until, tz),
        days=_days(since, until, codes, tz),
        counts=counts,
        precision=tally.precision,
        recall=tally.recall,
        outcomes_known=known,
        arms=arm_summaries(store.bandit()),
        f_monitor=monitor_fidelity(monitor),
        overridden=tuple(overridden),
        repair=repair,
        flagged=operator_flags(activity, store.config.trust),
        monitor_answered=monitor.decisions,
        proposals=proposals,
        day_start=_local(since, tz).time(),
        as_of=None if now is None else _local(now, tz),
    )


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _duration(seconds: float | None) -> str:
    """A repair time: minutes under an hour (5 and 2 minutes both read "0.1 h" / "0.0 h" in hours), else hours."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return "< 1 min"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _faults(n: int) -> str:
    return f"{n} fault" if n == 1 else f"{n} faults"


def _user_text(text: str, slack: bool) -> str:
    """A key or an operator id as the report shows it: for Slack escaped and shortened, else as it is."""
    return escape(truncate(text, MAX_NAME_IN_SLACK)) if slack else text


def flag_line(flag: OperatorFlag, *, slack: bool = True) -> str:
    """One flagged person, with the numbers behind each reason (for Slack, or the terminal: ``slack=False``)."""
    parts = []
    if flag.side is not None and flag.side_share is not None:
        others = "" if flag.others_share is None else f", everyone else {flag.others_share:.0%}"
        parts.append(f"one-sided: {flag.side} {flag.side_share:.0%} of {flag.answers} answers{others}")
    if flag.weight is not None and "low trust" in flag.reasons:
        agreement = "" if flag.agreement is None else f", agreement with outcomes and peers {flag.agreement:.0%}"
        parts.append(f"trust weight {flag.weight:.2f}{agreement}")
    if "disagrees with outcomes" in flag.reasons:
        parts.append(f"agreed with {flag.agreed:g} of {flag.with_outcome} outcomes")
    if flag.rate_limited:
        parts.append(f"{flag.rate_limited} click{'s' if flag.rate_limited != 1 else ''} over the rate limit")
    return f"  {_user_text(flag.operator, slack)}: " + "; ".join(parts)


def worst_first(flags: Sequence[OperatorFlag]) -> list[OperatorFlag]:
    """The flagged people, those with the most reasons first, then those with the most answers (by id on a tie)."""
    return sorted(flags, key=lambda f: (-len(f.reasons), -f.answers, f.operator))


def _day_span(report: WeeklyReport) -> str:
    """How the report's days run when they do not start at midnight (days from the summary's time of day)."""
    if report.day_start == time(0):
        return ""
    return f"; days from {report.day_start:%H:%M} to {report.day_start:%H:%M} the next day"


def _span(report: WeeklyReport) -> str:
    """The period as the header shows it: its start and end in the zone the days are counted in, with the start's
    abbreviation too when it differs from the end's (a clock change in between), so each end names its instant.
    A start or end the clocks skip is shown as set, with the offset before the change (``02:30 CET`` on the day
    summer time starts: the instant the clocks show as 03:30 CEST), as the days line counts from it."""
    since, until = report.since, report.until
    start = f"{since:%Y-%m-%d %H:%M}" + ("" if since.tzname() == until.tzname() else f" {since.tzname()}")
    return f"{start} – {until:%Y-%m-%d %H:%M} {until.tzname()}"


def _moment(moment: datetime) -> str:
    """An instant as the report shows it: its date and time in the zone the days are counted in, with the zone's
    abbreviation."""
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()}"


def report_text(report: WeeklyReport, *, slack: bool = True) -> str:
    """The report as text: Slack mrkdwn (keys and operator ids escaped and shortened, at most
    ``MAX_FLAGGED_IN_SLACK`` flagged people), or with ``slack=False`` plain text for a terminal (everyone flagged,
    full keys and ids, unescaped)."""
    lines = [f"NPO weekly summary · {_span(report)}", ""]
    lines.append(
        f"L_align (mean feedback code, lower is better): {_num(report.loss, '.3f')} over {report.answers} "
        f"answer{'' if report.answers == 1 else 's'}" + _day_span(report)
    )
    for d in report.days:
        lines.append(
            f"  {d.day:%a %Y-%m-%d}  {_num(d.loss, '.3f'):>5}  ({d.answers} answer{'' if d.answers == 1 else 's'})"
        )
    rates = report.rates
    if rates:
        lines.append("Answers: " + ", ".join(f"{k} {rates[k]:.0%} ({report.counts.get(k, 0)})" for k in KINDS))
    else:
        lines.append("Answers: none this period")
    lines.append(
        f"Outcomes known (recorded in the period): {report.outcomes_known} · "
        f"precision {_num(report.precision)} · recall {_num(report.recall)}"
    )
    r = report.repair
    lines.append(
        f"MTTR (prediction → real fault resolved): with a recommendation {_duration(r.with_recommendation)} "
        f"({_faults(r.n_with)}) · without {_duration(r.without_recommendation)} ({_faults(r.n_without)})"
    )
    lines.append(
        f"Threshold τ posteriors now, as of {_moment(report.as_of or report.until)} (learned since the bandit's last "
        "reset, not in this period alone) — mean [95 % interval], then, all time, the answers to the recommendations "
        "surfaced at that τ plus the outcomes of the predictions it suppressed:"
    )
    for arm in report.arms:
        lines.append(f"  τ={arm.threshold:.2f}  {arm.mean:.3f} [{arm.low:.3f}, {arm.high:.3f}]  {arm.pulls}")
    answered = report.monitor_answered
    p = report.proposals
    lines.append(
        f"F_monitor (share of answered retraining alerts approved, all time): {_num(report.f_monitor)} over "
        f"{answered} answered alert{'' if answered == 1 else 's'} · this period: {p.get('raised', 0)} raised, "
        f"{p.get('approved', 0)} approved, {p.get('dismissed', 0)} dismissed, {p.get('expired', 0)} expired"
    )
    if report.overridden:
        lines.append(
            "Most overridden keys: " + ", ".join(f"{_user_text(key, slack)} ({n})" for key, n in report.overridden)
        )
    else:
        lines.append("Most overridden keys: none")
    if report.flagged:
        n = len(report.flagged)
        lines.append(f"Answers to look at ({n} {'person' if n == 1 else 'people'}):")
        shown = worst_first(report.flagged)[: MAX_FLAGGED_IN_SLACK if slack else None]
        lines.extend(flag_line(flag, slack=slack) for flag in shown)
        if len(shown) < n:
            lines.append(f"  … and {n - len(shown)} more: see `npo-bot report`")
    else:
        lines.append(
            "Answers to look at: none (no one-sided answers, low trust, answers the outcomes contradict or "
            "rate-limited clicks)"
        )
    return "\n".join(lines)


def chart_ticks(days: Sequence[date]) -> tuple[list[int], list[str]]:
    """Positions and labels of the chart's x ticks: every day (``Mon 17``) up to ``CHART_MAX_TICKS`` days, else
    every n-th day (``17 Mar``) so that at most ``CHART_MAX_TICKS`` labels are drawn and none overlap."""
    if len(days) <= CHART_MAX_TICKS:
        return list(range(len(days))), [f"{d:%a %d}" for d in days]
    step = -(-len(days) // CHART_MAX_TICKS)  # ceiling division
    positions = list(range(0, len(days), step))
    return positions, [f"{days[i]:%d %b}" for i in positions]


def chart_figure(report: WeeklyReport) -> Figure:
    """The L_align-by-day line chart as a matplotlib figure on an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - slow import, only when drawn
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = [np.nan if d.loss is None else d.loss for d in report.days]
    dense = len(values) > CHART_MAX_TICKS
    ax.plot(range(len(values)), values, marker="o", markersize=3 if dense else 6, color="#1f77b4")
    positions, labels = chart_ticks([d.day for d in report.days])
    ax.set_xticks(positions, labels)
    # A margin round 0..1 and the days: a line at 0 (every answer a Like) or 1 is drawn above the frame, not under it.
    ax.set_xlim(-0.5, max(len(values), 1) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("L_align")
    if all(d.loss is None for d in report.days):  # an empty frame alone would look like a line that failed to draw
        ax.text(0.5, 0.5, "no answers in this period", transform=ax.transAxes, ha="center", va="center", color="0.4")
    # The zone the days are counted in (its IANA name), and their start when not midnight.
    start = "" if report.day_start == time(0) else f" from {report.day_start:%H:%M}"
    ax.set_xlabel(f"day{start} ({report.until.tzinfo})")
    ax.set_title(f"NPO alignment loss by day, {report.since:%Y-%m-%d} – {report.until:%Y-%m-%d}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


ALT_TEXT_MAX = 1000  # Slack's limit for a file's alt text


def chart_alt_text(report: WeeklyReport) -> str:
    """What the chart shows, in words, for a screen reader (the uploaded file's alt text): the days with answers,
    the first and last day's L_align, and the lowest and highest."""
    title = f"Line chart of NPO's alignment loss L_align by day, {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}"
    days = [d for d in report.days if d.loss is not None]
    if not days:
        return f"{title}: no answers in this period, so no values."
    loss = report.loss
    low = min(days, key=lambda d: d.loss or 0.0)
    high = max(days, key=lambda d: d.loss or 0.0)
    text = (
        f"{title} (lower is better; 0 to 1). {len(days)} of {len(report.days)} days had answers. "
        f"First: {days[0].loss:.2f} on {days[0].day:%a %d %b}; last: {days[-1].loss:.2f} on {days[-1].day:%a %d %b}; "
        f"lowest {low.loss:.2f} ({low.day:%a}), highest {high.loss:.2f} ({high.day:%a})"
        + (f"; {loss:.2f} over the period's {sum(d.answers for d in days)} answers." if loss is not None else ".")
    )
    return text[:ALT_TEXT_MAX]


def render_png(report: WeeklyReport) -> bytes:
    """A PNG line chart of L_align by day (see :func:`chart_figure`)."""
    buffer = io.BytesIO()
    chart_figure(report).savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
