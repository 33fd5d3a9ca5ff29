"""The meta-monitor job (hourly by default): feed the new feedback codes to the Page–Hinkley detector, compute
L_align over the last window (and the window before), apply the trigger rules (threshold, drift alarm, one open
proposal, cooldown), and when they fire open a retraining proposal and queue its alert for the ops channel.

Everything happens in one transaction: the detector state, the feedback cursor, the run's log line, the proposal
and the queued alert (delivered by the outbox worker, so a Slack outage loses nothing) are stored together.

The detector sees every answer since the last run, one by one: an alarm raised by any of them counts for this run,
even when the statistic has fallen back below the threshold by the time the run reads it (a burst of overrides
between two runs). It sees the answers L_align counts — each person's current answer to a recommendation: an answer
replaced before the run (a changed click, a click after a skip) is not fed, and when one the detector had already
seen was replaced since, the run first replays the detector over the current answers after its last reset (it
cannot take a code back) — so a team whose late likes replace their skips does not look like a drift.
After a proposal both signals start again from the answers recorded after it: the detector is
reset (:func:`npo.monitor.evaluate_monitor`), and L_align is averaged over the answers since the proposal only (at
most the window, at least ``min_samples`` of them to trigger) — so once the cooldown is over, a new alert needs
new evidence, never the same answers an engineer has already approved or dismissed. A window of skips only (nobody
answered) never triggers on L_align, whatever the skip code λ: silence is no evidence that the model is wrong.

The cooldown is counted between the *scheduled* times of the runs (``slot``), not between the instants they happened
to start: with hourly runs and a 6 h cooldown, the run six slots after the one that opened a proposal may open the
next, however much later than its slot the earlier run got going.

Both signals leave out the answers of anyone **the outcomes contradict**: at least ``DISAGREE_MIN_OUTCOMES`` (5)
answers whose outcome is known, fewer than half of them agreeing with it — the rule that lists a person under
"Answers to look at" in the weekly summary (:mod:`bot.jobs.report`), counted here over all time. Such a person's
overrides would otherwise raise a retraining alert every cooldown for the team to dismiss. Trust weights
(:mod:`npo.trust`) are not used here: a weight can also fall to 0 from disagreeing with the peers' consensus alone,
and one person overriding a kind the others used to like is also how a real change first shows, before any outcome
says who is right — the monitor exists to notice that. Every other answer counts as one, as in L_align's definition.

A proposal stays open until someone answers its alert, or until it expires: ``config.proposal_expiry_s`` after the
slot of the run that raised it (the deadline is stored with the proposal and named in the alert). The first run at
or after the deadline records it as *expired* — neither approved nor dismissed, so F_monitor does not count it —
audits it, replaces the alert's buttons with a status line, and goes on as if no proposal were open: when the drift
persists (L_align over the answers since that proposal, or a drift alarm) it raises a new alert in the same run.
Until then, when the alert could not be delivered for good (the bot was removed from the ops channel, the channel
was archived), nobody can answer it, so each run queues it again until it arrives.

A drift alarm raised while a proposal is open or the cooldown holds alerts back is remembered (``held_alarm`` in the
job's state; :class:`npo.monitor.HeldAlarm`): the detector's statistic falls back on its own once its running mean
has caught up with a new level, so the first run free to alert might otherwise see no alarm although the change
persists. The run that first holds the alarm back notes the level of the answers before the change (replaying the
detector over the answers since its last reset); the alarm then stands while the answers after the detector was
last in alarm average more than δ above that level, and is forgotten when a run finds they do not, or an alert is
raised. Nor does it stand on skips alone: when every answer since the change point is a skip, or (at least
``page_hinkley.min_samples`` of them) every answer after the detector was last in alarm, it is no cause and is
forgotten, as a fresh alarm whose change is all skips is.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.jobs.report import DISAGREE_MIN_OUTCOMES
from bot.retraining import approval_pending
from bot.slack.monitor_blocks import (
    AlertFacts,
    KeyMisalignment,
    alert_blocks,
    alert_text,
    expired_line,
    resolved_blocks,
    resolved_text,
)
from npo.alignment import AlignmentSample, alignment_loss
from npo.monitor import (
    HeldAlarm,
    MonitorConfig,
    MonitorDecision,
    PageHinkleyState,
    evaluate_monitor,
    expire_proposal,
    held_alarm_observe,
    held_alarm_persists,
    monitor_fidelity,
    observe_feedback,
    page_hinkley_baseline,
    page_hinkley_update,
    proposal_expires_at,
)
from npo.monitor import page_hinkley_alarm as drift_alarm_of
from npo.types import InvalidRecord
from storage import SQLiteStore
from storage.monitoring import (
    Proposal,
    answers_replaced_since,
    contradicted_by_outcomes,
    delivered_alert,
    feedback_codes_after,
    get_job_state,
    key_states,
    last_feedback_id_at,
    last_feedback_id_before_last_proposal,
    monitor_window,
    open_proposal,
    pending_alert,
    put_job_state,
    replace_pending_payload,
    skipped_feedback_ids,
    undelivered_alert,
)
from storage.store import SQLiteTransaction
from storage.tx_monitor import MONITOR_RUNS_KEEP_S

log = logging.getLogger(__name__)

MONITOR_JOB = "meta_monitor"
STATE_NAME = "meta_monitor"
ALERT_KIND = "message"  # the delivery worker's plain post (text + blocks)
UPDATE_KIND = "message_update"  # the delivery worker's chat.update of a plain message (bot.retraining.UPDATE_KIND)
TREND_BARS = 20
TOP_KEYS = 5


@dataclass(frozen=True, slots=True)
class MonitorRun:
    decision: MonitorDecision
    proposal_id: int | None
    loss: float | None
    n_in_window: int
    # The detector itself: in alarm at one of the run's answers (without any, as the last run left it). The run's
    # record, alert and audit line state the alarm as counted: a held-back one included, one in skips only not.
    drift_alarm: bool
    new_samples: int
    resent_alert: int | None = None  # the open proposal whose undelivered alert this run queued again
    expired_proposal: int | None = None  # the proposal this run recorded as expired (nobody answered it in time)
    held_alarm: HeldAlarm | None = None  # the drift alarm held back, as the run leaves it (None: none)


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
    clock: Callable[[], float] | None = None,
) -> MonitorRun:
    """One monitor run at ``now`` (Unix seconds). Returns what it decided; posts nothing itself.

    ``slot``: the run's scheduled time (Unix seconds; default ``now``), from which the cooldown is counted — a
    proposal records it as its trigger time, and a run is held back while its slot is within the cooldown of that.
    Everything the run stores is dated ``now``; a proposal expires when the run's slot reaches its deadline.
    ``clock``: ``now`` is read from it again once the write transaction has begun (as an answer's time is), so that a
    proposal opened by a run that waited for the write lock across the weekly summary's slot is in the next summary,
    and is never dated before the answers it was computed from."""
    run_at = now if slot is None else slot
    with store.transaction() as tx:
        if clock is not None:
            now = max(now, clock())
        conn = tx.connection
        job = get_job_state(conn, STATE_NAME)
        cursor = int(job.get("feedback_id", 0))
        stream = feedback_codes_after(conn, cursor)
        # The answers of people the outcomes contradict are no evidence of misalignment (see the module docstring).
        unreliable = contradicted_by_outcomes(conn, DISAGREE_MIN_OUTCOMES)
        # The detector sees the answers L_align counts: each person's current answer (see the module docstring).
        codes = [(i, y) for i, y, person, current in stream if current and person not in unreliable]
        state = tx.get_monitor_state()
        since = _evidence_after(conn, job, state.last_trigger_at)
        if answers_replaced_since(conn, since or 0, cursor):
            state = replace(state, ph=_detector_over(conn, config, since, cursor, unreliable))
        held = _held_alarm(job.get("held_alarm"))
        expired = _expire_overdue_proposal(tx, config, run_at, now)
        if expired is not None:
            state = expire_proposal(state)
        resent = _resend_undelivered_alert(tx, channel, now) if state.open_proposal else None
        # Without new answers the alarm is the level the last run left; with them, an alarm at any of them counts.
        alarm = False if codes else drift_alarm_of(state.ph, config.page_hinkley)
        last_alarm = -1 if alarm else None  # the index in codes of the last answer the detector was in alarm at
        peak = state.ph.statistic
        for i, (_, y) in enumerate(codes):
            state, raised = observe_feedback(state, y, config)
            if held is not None:
                held = held_alarm_observe(held, y, raised)
            if raised:
                last_alarm = i
            alarm = alarm or raised
            peak = max(peak, state.ph.statistic)
        # A drift whose change is all skips (the team went quiet) is no evidence that the model is wrong, whether the
        # alarm is raised in this run or was held back by an earlier one — which, once the detector is out of alarm,
        # stands on the answers after it was last in alarm: no evidence either when they are all skips.
        held_stands = held is not None and held_alarm_persists(held, config)
        tail = held.n_after if held is not None and held_stands and not alarm else 0
        if tail < config.page_hinkley.min_samples:
            tail = 0  # fewer: the held alarm stands on the alarm itself (too few answers to say it is over)
        skips_only = (alarm or held_stands) and _drift_in_skips_only(conn, config, since, unreliable, last=tail)
        # The window: the last ``window`` answers of the last ``window_s`` (and since the last proposal); the window
        # before it: as many answers before those, of the ``window_s`` before that.
        recent, _ = monitor_window(
            conn, 0, 2 * config.window, not_before=now - 2 * config.window_s, excluding=unreliable
        )
        window, n_skipped = monitor_window(
            conn, since or 0, config.window, not_before=now - config.window_s, excluding=unreliable
        )
        previous = recent[: len(recent) - len(window)][-config.window :]
        loss = _loss(window)
        decision, new_state = evaluate_monitor(
            state,
            config,
            loss,
            len(window),
            alarm,
            run_at,
            since_last_proposal=since is not None,
            held_alarm=held,
            n_skipped=n_skipped,
            drift_in_skips_only=skips_only,
        )
        # The drift alarm as the run counts it, and as its record, the alert and the audit line all state it: one
        # raised since the last run or held back from an earlier one (and standing), unless its change is all skips.
        drift = (alarm or held_stands) and not skips_only
        tx.add_monitor_run(now, decision.trigger, decision.reason, loss, len(window), drift)
        tx.prune_monitor_runs(now - MONITOR_RUNS_KEEP_S)  # a record only: nothing reads it back
        proposal_id = None
        if decision.trigger:
            expires_at = proposal_expires_at(run_at, config)
            proposal_id = tx.open_proposal(now, decision.reason, expires_at=expires_at)
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
                drift_alarm=drift,
                f_monitor=monitor_fidelity(state),
                keys=[KeyMisalignment(k, y, n, states.get(k, (None, 0))[0]) for k, y, n in ranked],
                trend=trend,
                trend_chunk=chunk,
                expires_at=expires_at,
            )
            payload = {"text": alert_text(facts), "blocks": alert_blocks(facts), "proposal_id": proposal_id}
            tx.enqueue(channel, ALERT_KIND, payload, now)
            tx.audit(
                "retraining_proposed",
                str(proposal_id),
                {
                    "reason": decision.reason,
                    "window_loss": loss,
                    "n_in_window": len(window),
                    "drift_alarm": drift,
                },
                now,
            )
        tx.put_monitor_state(new_state)
        newest = stream[-1][0] if stream else cursor
        if decision.trigger or not decision.held_back:
            held = None  # the alert covers it (and the detector starts again), or it has not held
        elif held is None and last_alarm is not None and not skips_only:
            held = _hold_alarm(conn, config, codes, last_alarm, since, cursor, run_at, unreliable)
        job_state: dict[str, Any] = {"feedback_id": newest}
        if decision.trigger or since is not None:
            job_state["evidence_after"] = newest if decision.trigger else since
        if held is not None:
            job_state["held_alarm"] = {
                "raised_at": held.raised_at,
                "baseline": held.baseline,
                "n_after": held.n_after,
                "sum_after": held.sum_after,
            }
        put_job_state(conn, STATE_NAME, job_state, now)
    if expired is not None:
        log.warning("meta-monitor: retraining proposal #%d expired unanswered", expired)
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
    if proposal_id is not None or resent is not None or expired is not None:
        on_enqueue()
    return MonitorRun(
        decision, proposal_id, loss, len(window), alarm, len(codes), resent[0] if resent else None, expired, held
    )


def _held_alarm(value: object) -> HeldAlarm | None:
    """The held-back drift alarm the job stored (None when none, or unreadable: then it is forgotten)."""
    if not isinstance(value, dict):
        return None
    try:
        return HeldAlarm(
            raised_at=float(value["raised_at"]),
            baseline=float(value["baseline"]),
            n_after=int(value["n_after"]),
            sum_after=float(value["sum_after"]),
        )
    except (KeyError, TypeError, ValueError, InvalidRecord) as exc:
        log.warning("meta-monitor: ignoring the stored held-back drift alarm %r: %s", value, exc)
        return None


def _hold_alarm(
    conn: sqlite3.Connection,
    config: MonitorConfig,
    codes: Sequence[tuple[int, float]],
    last_alarm: int,
    since: int | None,
    cursor: int,
    run_at: float,
    unreliable: set[str],
) -> HeldAlarm:
    """Remember a drift alarm this run held back: the level before the change, from the detector's answers since its
    last reset (the answers after the last proposal) up to the last one it was in alarm at, and the answers after
    that one."""
    upto = codes[last_alarm][0] if last_alarm >= 0 else cursor
    before = [y for _, y in _detector_answers(conn, since, unreliable, upto_id=upto)]
    held = HeldAlarm(raised_at=float(run_at), baseline=page_hinkley_baseline(before, config.page_hinkley))
    for _, y in codes[last_alarm + 1 :]:
        held = held_alarm_observe(held, y, False)
    return held


def _detector_answers(
    conn: sqlite3.Connection, since: int | None, unreliable: set[str], *, upto_id: int | None = None
) -> list[tuple[int, float]]:
    """(row id, y) of the answers the detector sees after its last reset (the answers after the last proposal), up
    to ``upto_id``: each person's current answer, none of the people in ``unreliable``."""
    rows = feedback_codes_after(conn, since or 0, upto_id=upto_id)
    return [(i, y) for i, y, person, current in rows if current and person not in unreliable]


def _detector_over(
    conn: sqlite3.Connection, config: MonitorConfig, since: int | None, cursor: int, unreliable: set[str]
) -> PageHinkleyState:
    """The detector as it stands over the current answers after its last reset, up to row ``cursor``: replayed when
    an answer it had seen was replaced since (a changed answer, a click after a skip), which it cannot take back."""
    ph = PageHinkleyState()
    for _, y in _detector_answers(conn, since, unreliable, upto_id=cursor):
        ph, _ = page_hinkley_update(ph, y, config.page_hinkley)
    return ph


def _drift_in_skips_only(
    conn: sqlite3.Connection, config: MonitorConfig, since: int | None, unreliable: set[str], *, last: int = 0
) -> bool:
    """Whether every answer since the change the detector reacts to is a skip: replaying the detector's answers
    since its last reset (the answers after the last proposal), those after the last one at which the cumulative
    sum reached its minimum (the change point, as :func:`npo.monitor.page_hinkley_baseline` estimates it) as the
    detector stood when it was last in alarm: the sum can reach a new minimum after an alarm (a return to likes, a
    long run of skips), and the answers after that one are not what the alarm reacted to. With ``last`` > 0 (a
    held-back alarm that stands on the ``last`` answers after the detector was last in alarm), also when those are
    all skips."""
    answers = _detector_answers(conn, since, unreliable)
    ph, start, alarmed = PageHinkleyState(), 0, None
    for k, (_, y) in enumerate(answers):
        ph, raised = page_hinkley_update(ph, y, config.page_hinkley)
        if ph.cumulative <= ph.minimum:
            start = k + 1
        if raised:
            alarmed = start  # the change point the alarm reacts to
    if alarmed is not None:
        start = alarmed
    skipped = skipped_feedback_ids(conn, since or 0)
    tails = [answers[start:], answers[max(0, len(answers) - last) :] if last > 0 else []]
    return any(tail and all(i in skipped for i, _ in tail) for tail in tails)


def _expire_overdue_proposal(tx: SQLiteTransaction, config: MonitorConfig, run_at: float, now: float) -> int | None:
    """Record the open proposal as expired when the run's slot has reached its deadline (one stored before proposals
    had one: ``opened_at`` + the configured expiry); audit it and replace its alert's buttons with a status line.
    Returns its id when it expired."""
    proposal = open_proposal(tx.connection)
    if proposal is None or approval_pending(tx.connection, proposal.id):
        return None  # none open, or approved in time and being retrained (bot.retraining.begin_approval)
    deadline = proposal.expires_at
    if deadline is None:
        deadline = proposal_expires_at(proposal.opened_at, config)
    if run_at < deadline or not tx.expire_proposal(proposal.id, at=deadline):
        return None
    tx.audit(
        "retraining_expired",
        str(proposal.id),
        {"opened_at": proposal.opened_at, "expired_at": deadline, "reason": proposal.reason},
        now,
    )
    line = expired_line(deadline)
    alert = delivered_alert(tx.connection, proposal, ALERT_KIND)
    if alert is not None:
        original = alert.payload.get("blocks")
        blocks = resolved_blocks(original if isinstance(original, list) else [], line)
        text = resolved_text(proposal.id, line)
        tx.enqueue(alert.channel, UPDATE_KIND, {"ts": alert.ts, "text": text, "blocks": blocks}, now)
    else:
        # Still queued (Slack was down for the whole expiry): it will be posted as it now stands, without buttons.
        _rewrite_queued_alert(tx.connection, proposal, line)
    return proposal.id


def _rewrite_queued_alert(conn: sqlite3.Connection, proposal: Proposal, line: str) -> None:
    """The expired proposal's alert, when it is still waiting in the outbox, is posted without its buttons (and the
    hint under them), with the status line: a click on it could record nothing."""
    waiting = pending_alert(conn, proposal, ALERT_KIND)
    if waiting is None:
        return
    outbox_id, payload = waiting
    original = payload.get("blocks")
    blocks = resolved_blocks(original if isinstance(original, list) else [], line)
    replace_pending_payload(
        conn, outbox_id, {**payload, "text": f"{payload.get('text', '')}\n{line}", "blocks": blocks}
    )


def _evidence_after(conn: sqlite3.Connection, job: dict[str, object], last_trigger_at: float | None) -> int | None:
    """The feedback row id after which answers count as evidence for L_align: the newest answer the monitor had seen
    when it last opened a proposal (None before any proposal). A database whose last proposal predates this record
    uses the newest answer recorded before that proposal's audit line, written by the run that opened it (the
    answers' times are no guide: a version that stored no mark read its clock before waiting for the write lock, so
    an answer written before its run could be timed after the trigger, and would have counted twice); without that
    line, the newest answer recorded by the time of the proposal."""
    value = job.get("evidence_after")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if last_trigger_at is None:
        return None
    seen = last_feedback_id_before_last_proposal(conn)
    return last_feedback_id_at(conn, last_trigger_at) if seen is None else seen


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
