"""The meta-monitor job (hourly by default): feed the new feedback codes to the Page–Hinkley detector, compute
L_align over the last window (and the window before), apply the trigger rules (threshold, drift alarm, one open
proposal, cooldown), and when they fire open a retraining proposal and queue its alert for the ops channel.

Everything happens in one transaction: the detector state, the feedback cursor, the run's log line, the proposal
and the queued alert (delivered by the outbox worker, so a Slack outage loses nothing) are stored together.

The detector sees every answer since the last run, one by one: an alarm raised by any of them counts for this run,
even when the statistic has fallen back below the threshold by the time the run reads it (a burst of overrides
between two runs). After a proposal both signals start again from the answers recorded after it: the detector is
reset (:func:`npo.monitor.evaluate_monitor`), and L_align is averaged over the answers since the proposal only (at
most the window, at least ``min_samples`` of them to trigger) — so once the cooldown is over, a new alert needs
new evidence, never the same answers an engineer has already approved or dismissed.

The cooldown is counted between the *scheduled* times of the runs (``slot``), not between the instants they happened
to start: with hourly runs and a 6 h cooldown, the run six slots after the one that opened a proposal may open the
next, however much later than its slot the earlier run got going.

A proposal stays open until someone answers its alert. When the alert could not be delivered for good (the bot was
removed from the ops channel, the channel was archived), nobody can, so each run queues it again until it arrives:
the monitor never waits for ever on an alert nobody saw.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.slack.monitor_blocks import AlertFacts, KeyMisalignment, alert_blocks, alert_text
from npo.alignment import AlignmentSample, alignment_loss
from npo.monitor import MonitorConfig, MonitorDecision, evaluate_monitor, monitor_fidelity, observe_feedback
from npo.monitor import page_hinkley_alarm as drift_alarm_of
from storage import SQLiteStore
from storage.monitoring import (
    alignment_samples_after,
    feedback_codes_after,
    get_job_state,
    key_states,
    last_feedback_id_at,
    open_proposal,
    put_job_state,
    undelivered_alert,
)
from storage.store import SQLiteTransaction

log = logging.getLogger(__name__)

MONITOR_JOB = "meta_monitor"
STATE_NAME = "meta_monitor"
ALERT_KIND = "message"  # the delivery worker's plain post (text + blocks)
TREND_BARS = 20
TOP_KEYS = 5


@dataclass(frozen=True, slots=True)
class MonitorRun:
    decision: MonitorDecision
    proposal_id: int | None
    loss: float | None
    n_in_window: int
    drift_alarm: bool
    new_samples: int
    resent_alert: int | None = None  # the open proposal whose undelivered alert this run queued again


def _loss(samples: Sequence[AlignmentSample]) -> float | None:
    return alignment_loss([s.y for s in samples]) if samples else None


def _keys(window: Sequence[AlignmentSample]) -> list[tuple[str, float, int]]:
    by_key: dict[str, list[float]] = defaultdict(list)
    for s in window:
        by_key[s.key].append(s.y)
    ranked = sorted(((k, sum(ys) / len(ys), len(ys)) for k, ys in by_key.items()), key=lambda t: (-t[1], -t[2], t[0]))
    return [t for t in ranked if t[1] > 0][:TOP_KEYS]


def _trend(samples: Sequence[AlignmentSample], bars: int) -> tuple[list[float | None], int]:
    chunk = max(1, len(samples) // bars) if samples else 1
    values: list[float | None] = []
    start = len(samples) % chunk if len(samples) >= chunk else 0
    for i in range(start, len(samples), chunk):
        values.append(_loss(samples[i : i + chunk]))
    return values[-bars:], chunk


def run_monitor(
    store: SQLiteStore,
    config: MonitorConfig,
    *,
    now: float,
    channel: str,
    on_enqueue: Callable[[], None] = lambda: None,
    slot: float | None = None,
) -> MonitorRun:
    """One monitor run at ``now`` (Unix seconds). Returns what it decided; posts nothing itself.

    ``slot``: the run's scheduled time (Unix seconds; default ``now``), from which the cooldown is counted — a
    proposal records it as its trigger time, and a run is held back while its slot is within the cooldown of that.
    Everything the run stores is dated ``now``."""
    with store.transaction() as tx:
        conn = tx.connection
        job = get_job_state(conn, STATE_NAME)
        cursor = int(job.get("feedback_id", 0))
        codes = feedback_codes_after(conn, cursor)
        state = tx.get_monitor_state()
        since = _evidence_after(conn, job, state.last_trigger_at)
        resent = _resend_undelivered_alert(tx, channel, now) if state.open_proposal else None
        # Without new answers the alarm is the level the last run left; with them, an alarm at any of them counts.
        alarm = False if codes else drift_alarm_of(state.ph, config.page_hinkley)
        peak = state.ph.statistic
        for _, y in codes:
            state, raised = observe_feedback(state, y, config)
            alarm = alarm or raised
            peak = max(peak, state.ph.statistic)
        recent = store.alignment_samples(last_n=2 * config.window)
        window = recent[-config.window :] if since is None else alignment_samples_after(conn, since, config.window)
        previous = recent[: len(recent) - len(window)][-config.window :]
        loss = _loss(window)
        decision, new_state = evaluate_monitor(
            state,
            config,
            loss,
            len(window),
            alarm,
            now if slot is None else slot,
            since_last_proposal=since is not None,
        )
        tx.add_monitor_run(now, decision.trigger, decision.reason, loss, len(window), alarm)
        proposal_id = None
        if decision.trigger:
            proposal_id = tx.open_proposal(now, decision.reason)
            ranked = _keys(window)
            states = key_states(conn, [k for k, _, _ in ranked])
            trend, chunk = _trend(recent, TREND_BARS)
            facts = AlertFacts(
                proposal_id=proposal_id,
                reason=decision.reason,
                loss=loss,
                n_in_window=len(window),
                previous_loss=_loss(previous),
                n_previous=len(previous),
                threshold=config.loss_threshold,
                ph_statistic=state.ph.statistic,
                ph_threshold=config.page_hinkley.threshold,
                ph_samples=state.ph.n,
                ph_peak=peak,
                drift_alarm=alarm,
                f_monitor=monitor_fidelity(state),
                keys=[KeyMisalignment(k, y, n, states.get(k, (None, 0))[0]) for k, y, n in ranked],
                trend=trend,
                trend_chunk=chunk,
            )
            payload = {"text": alert_text(facts), "blocks": alert_blocks(facts), "proposal_id": proposal_id}
            tx.enqueue(channel, ALERT_KIND, payload, now)
            tx.audit(
                "retraining_proposed",
                str(proposal_id),
                {"reason": decision.reason, "window_loss": loss, "n_in_window": len(window), "drift_alarm": alarm},
                now,
            )
        tx.put_monitor_state(new_state)
        newest = codes[-1][0] if codes else cursor
        job_state: dict[str, int] = {"feedback_id": newest}
        if decision.trigger or since is not None:
            job_state["evidence_after"] = newest if decision.trigger else since
        put_job_state(conn, STATE_NAME, job_state, now)
    if resent is not None:
        log.warning(
            "meta-monitor: the alert of retraining proposal #%d could not be delivered (%s); queued again",
            resent[0],
            resent[1],
        )
    if proposal_id is not None:
        log.warning("meta-monitor: retraining proposal #%d opened: %s", proposal_id, decision.reason)
    else:
        log.info("meta-monitor: %s", decision.reason)
    if proposal_id is not None or resent is not None:
        on_enqueue()
    return MonitorRun(decision, proposal_id, loss, len(window), alarm, len(codes), resent[0] if resent else None)


def _evidence_after(conn: sqlite3.Connection, job: dict[str, object], last_trigger_at: float | None) -> int | None:
    """The feedback row id after which answers count as evidence for L_align: the newest answer the monitor had seen
    when it last opened a proposal (None before any proposal). A database whose last proposal predates this record
    uses the newest answer recorded by the time of that proposal."""
    value = job.get("evidence_after")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None if last_trigger_at is None else last_feedback_id_at(conn, last_trigger_at)


def _resend_undelivered_alert(tx: SQLiteTransaction, channel: str, now: float) -> tuple[int, str] | None:
    """Queue the open proposal's alert again (to ``channel``) when its delivery failed for good; (proposal id, the
    delivery error) when it did."""
    proposal = open_proposal(tx.connection)
    if proposal is None:
        return None
    failed = undelivered_alert(tx.connection, proposal, ALERT_KIND)
    if failed is None:
        return None
    tx.enqueue(channel, ALERT_KIND, {**failed.payload, "proposal_id": proposal.id}, now)
    tx.audit(
        "retraining_alert_resent", str(proposal.id), {"failed_outbox_id": failed.outbox_id, "error": failed.error}, now
    )
    return proposal.id, failed.error
