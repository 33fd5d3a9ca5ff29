"""Read-only views of the loop for people: the App Home data, ``/npo why`` and ``/npo summary``. Each function
reads the store (snapshots) and returns plain data for the Block Kit / text builders; nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.jobs.report import ArmSummary, arm_summaries, build_report, report_text
from bot.retraining import expired_at, pending_approval
from bot.service import ALIGNMENT_WINDOW, NpoService
from bot.slack.blocks import Dashboard
from npo.alignment import alignment_loss
from npo.monitor import monitor_fidelity
from npo.policy import Mute
from npo.types import Decision, Prediction
from storage.monitoring import KeyHistory, OverrideLine, Proposal, key_history, open_proposal, recent_overrides
from storage.mutes import active_mutes, key_mutes

TREND_BARS = 20


@dataclass(frozen=True, slots=True)
class HomeData:
    dashboard: Dashboard
    trend: tuple[float | None, ...]  # L_align of consecutive chunks of the last answers, oldest first
    trend_chunk: int
    previous_loss: float | None  # the window before the current one
    arms: tuple[ArmSummary, ...]
    f_monitor: float | None
    overrides: tuple[OverrideLine, ...]
    proposal: Proposal | None
    mutes: tuple[Mute, ...]
    proposal_expired_at: float | None = None  # the open proposal's deadline, once it has passed (nobody answered)
    proposal_approved_by: str | None = None  # the open proposal's approval, recorded and being carried out: by whom


def home_data(service: NpoService, *, recent: int = 10, overrides: int = 8) -> HomeData:
    store = service.store
    dashboard = service.dashboard(recent=recent)
    samples = store.alignment_samples(last_n=2 * ALIGNMENT_WINDOW)
    ys = [s.y for s in samples]
    previous = ys[:-ALIGNMENT_WINDOW] if len(ys) > ALIGNMENT_WINDOW else []
    chunk = max(1, len(ys) // TREND_BARS)
    start = len(ys) % chunk
    trend = tuple(alignment_loss(ys[i : i + chunk]) for i in range(start, len(ys), chunk))[-TREND_BARS:]
    with store.read() as conn:
        lines = tuple(recent_overrides(conn, overrides))
        proposal = open_proposal(conn)
        approval = None if proposal is None else pending_approval(conn, proposal.id)
        now = service.clock()
        mutes = tuple(active_mutes(conn, now))
    return HomeData(
        dashboard=dashboard,
        trend=trend,
        trend_chunk=chunk,
        previous_loss=alignment_loss(previous) if previous else None,
        arms=arm_summaries(store.bandit()),
        f_monitor=monitor_fidelity(store.monitor_state()),
        overrides=lines,
        proposal=proposal,
        mutes=mutes,
        # An approval recorded in time is carried out past the deadline too (the meta-monitor does not expire it).
        proposal_expired_at=None if proposal is None or approval is not None else expired_at(proposal, now),
        proposal_approved_by=None if approval is None else str(approval.get("by") or ""),
    )


@dataclass(frozen=True, slots=True)
class Why:
    prediction: Prediction
    decision: Decision
    history: KeyHistory
    mutes: tuple[tuple[Mute, float | None], ...]
    answers: tuple[tuple[str, str, float, str], ...]  # this recommendation's effective answers


def why(service: NpoService, prediction_id: str) -> Why | None:
    """Everything behind one decision, or None for an unknown id."""
    store = service.store
    prediction, decision = store.prediction(prediction_id), store.decision(prediction_id)
    if prediction is None or decision is None:
        return None
    with store.read() as conn:
        history = key_history(conn, decision.key)
        mutes = tuple(key_mutes(conn, decision.key))
    view = service.recommendation(prediction_id)
    answers = () if view is None else tuple((a.operator, a.kind.value, a.at, a.reason) for a in view.answers)
    return Why(prediction, decision, history, mutes, answers)


def summary_text(service: NpoService, timezone: str, *, now: float | None = None, days: int = 7) -> str:
    """The weekly report's text for the last ``days`` days up to ``now`` (default: the clock)."""
    until = datetime.fromtimestamp(service.clock() if now is None else now, ZoneInfo(timezone))
    since = until - timedelta(days=days)  # local wall time: whole days, also across a daylight-saving change
    return report_text(build_report(service.store, since=since, until=until, timezone=timezone))
