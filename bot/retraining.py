"""Approve / Dismiss of a retraining proposal, shared by the Slack buttons (and usable from a script).

Approve fits a candidate model on the logged feedback (``npo.retrain.propose_retraining``: older answers to fit,
the most recent ones held back to compare — an older answer to a held-back recommendation is left out of the fit
too), records it as a new model version (the next free number, which the
reply and the audit line name), promotes it only if it beats the current one and the base rate (the training
answers' mean code for every scenario) on the held-back answers — never a fit that did not converge, one trained on
answers that all have the same code, on the answers of a single scenario key or whose features φ(s) are all the
same, or on answers that carry no trust
weight (each answer is weighted by its operator's trust, as in m(k)) — and on promotion restarts every key's step
size (``npo.misalignment.reset_key``; m(k) is kept) so the loop re-learns the changed world quickly. Approve, promoted
or not, also puts the threshold bandit back to its prior (``ThresholdBandit.reset``; pull counts kept): an engineer
has confirmed that the world changed, so what the arms learned before is stale (measured in the simulation with a
drift: README, *What the experiments show*). Dismiss records
that the monitor was wrong. Either answer closes the proposal, counts toward F_monitor (but see a Dismiss after a
given-up approval, below), is audited, and queues a
thread reply under the alert and an update of the alert (its buttons replaced by the result) — in one transaction.
A proposal already resolved changes nothing, and says who resolved it. So does an expired one — the meta-monitor
closed it unanswered (``bot.jobs.monitor``), or its deadline has passed and the next run will — and the answer
says when it expired.

The fit takes seconds on a large database (20,000 answers read and fitted: about 3 s), longer than Slack waits for a
click to be answered, so Approve from Slack is carried out in two steps: :func:`begin_approval`, before the click is
answered, records the approval as pending (``job_state`` ``retraining_approvals``: who, when, the alert) in one short
transaction — a second click, or a Dismiss, is then told that it is being approved, and the meta-monitor does not
expire it meanwhile —; :class:`ApprovalRunner`, a thread of the bot, then fits and resolves it
(:func:`complete_approvals`), removing the pending entry in the transaction that records the result. A pending approval
left by a process that stopped before carrying it out is carried out when the runner next starts.

Two processes may share the database, and each runs its own runner (at start, on its own clicks, every minute): a
runner carries out a pending approval only once it has claimed it (``job_claims``, job :data:`APPROVAL_JOB`, one
claim per approval: the same exactly-once claim as the scheduled jobs'), so one process fits and replies, and the
other leaves it alone. A claim whose process died mid-way is taken over once :data:`APPROVAL_LEASE_S` old. A runner
carries out only the approval it claimed: one given up meanwhile and clicked again is a new approval, claimed anew.

An attempt that fails because the database is locked (another process held its write lock past the busy timeout and
the store's own retries: :func:`storage.is_locked`) is repeated after a
back-off (:data:`RETRY_DELAYS_S`, while the claim is less than half its lease old); any other failure — the fit
itself, a refused record, a full disk — would fail again, and gives the approval up at once, as does a locked
database once the retries are spent (:func:`_give_up`: its approver is told privately, and until when to click again).
An approval given up was given in time — the failure is NPO's — so a deadline less than :data:`GIVE_UP_GRACE_S` (an
hour, the shortest expiry there is) away, or already passed while the retraining ran, is moved to an hour after the
give-up: the approver's next click is answered rather than refused as expired, and the meta-monitor does not expire
the proposal meanwhile; the alert, which named the old deadline, is updated to name the new one. Not clicked again
by then, it expires — uncounted in F_monitor, as any proposal without a recorded answer. One whose deadline cannot
be moved (the database refuses it) is said to have expired, not to be open.

A Dismiss after an approval was given up (in the hour the deadline was moved on, or before a deadline that was not)
is taken — the approval was never carried out, and the person on call now says the alert was a false alarm — but
when the given-up approval was someone else's, the alert has two answers that disagree and no ground truth: it is
closed without counting toward F_monitor (as an expired one), and the reply, the alert's status line and the audit
line (``counted: false``, ``approved_in_time_by``) say so. The approver's own Dismiss replaces their answer and
counts; an Approve agrees with theirs and counts. Who saw an approval given up is kept in ``job_state``
:data:`GIVEN_UP_STATE` for the open proposal only.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.service import MessageRef
from bot.slack.monitor_blocks import extended_blocks, extended_line, resolved_blocks, resolved_text
from bot.slack.text import escape, slack_time
from npo.misalignment import reset_key
from npo.monitor import monitor_fidelity, record_ground_truth
from npo.monitor import resolve_proposal as close_proposal
from npo.retrain import RetrainResult, retrain_on_answers
from storage import SQLiteStore, StorageError, is_locked
from storage.jobs import finish_claim, release_claim
from storage.monitoring import (
    Proposal,
    get_job_state,
    get_proposal,
    max_model_version,
    put_job_state,
    training_rows,
)

log = logging.getLogger(__name__)

TRAINING_ROWS = 20_000
THREAD_KIND = "thread_reply"
UPDATE_KIND = "message_update"
PENDING_STATE = "retraining_approvals"  # job_state: proposal id → an approval recorded and not yet carried out
GIVEN_UP_STATE = "retraining_given_up"  # job_state: the open proposal's id → who approved it in time, given up
APPROVAL_JOB = "retraining_approval"  # job_claims: the claim of one pending approval (period: approval_period)
APPROVAL_LEASE_S = 300.0  # a claim of an approval not carried out this long after it was taken: its process died
# (the fit takes seconds), so another runner takes it over
RETRY_DELAYS_S = (2.0, 8.0, 30.0)  # the back-off before each new attempt of an approval the database was locked for
# (each attempt may itself wait for the write lock: 4 × 5 s by default); not after the claim is half its lease old
Status = Literal["approved", "dismissed", "pending", "already_resolved", "expired", "unknown"]
NOT_CARRIED_OUT_TEXT = (
    "NPO could not carry out your approval of retraining proposal #{id} (the retraining failed or its result could "
    "not be stored; the bot's log has the error), so it was not recorded and the proposal is still open{until}. "
    "Please click again in a minute."
)
NOT_CARRIED_OUT_EXPIRED_TEXT = (
    "NPO could not carry out your approval of retraining proposal #{id} (the retraining failed or its result could "
    "not be stored; the bot's log has the error), so it was not recorded, and the proposal's deadline ({at}) has "
    "passed: it can no longer be approved. The meta-monitor raises a new alert if the drift persists."
)
GIVE_UP_GRACE_S = 3600.0  # an approval given up leaves its approver at least this long to click again: the proposal's
# deadline is moved to then when it is sooner (the approval was given in time; the failure was NPO's)


@dataclass(frozen=True, slots=True)
class Resolution:
    status: Status
    proposal_id: int
    text: str  # what the thread reply says (or why nothing happened)
    retrain: RetrainResult | None = None
    keys_reset: int = 0


def fit_candidate(store: SQLiteStore, *, now: float, limit: int = TRAINING_ROWS) -> RetrainResult:
    """Fit and compare a candidate on the latest ``limit`` effective answers (read-only).

    The candidate is numbered with the next free model version (the highest recorded one + 1, promoted or not),
    so its ``reason`` names the version it will be recorded under."""
    with store.read() as conn:
        rows = training_rows(conn, limit)
        version = max_model_version(conn) + 1
    # Read after the version: a model recorded in between is either the current one now (numbered past it here)
    # or leaves this version stale, which resolve() notices under the write lock.
    current = store.model()
    if current is not None:
        version = max(version, current.version + 1)
    return retrain_on_answers(rows, current, key_spec=store.config.key_spec, now=now, version=version)


def _loss(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _retrain_text(result: RetrainResult, user: str, keys_reset: int, current_version: int | None) -> str:
    c = result.candidate
    if result.promoted:
        verdict = "promoted :white_check_mark:"
    elif current_version is None:
        verdict = "not promoted (scores stay with each key's learned m(k); there is no model yet)"
    else:
        verdict = f"not promoted (the current model v{current_version} stays)"
    current = "none yet" if current_version is None else f"v{current_version} {_loss(result.current_loss)}"
    extra = f" Step sizes of {keys_reset} key(s) restarted." if result.promoted else ""
    extra += " The threshold bandit starts again from its prior (τ is learned again)."
    return (
        f"Retraining approved by <@{user}>: model *v{c.version}* {verdict}.\n"
        f"Holdout log loss on the {int(c.metrics.get('n_holdout', 0))} most recent answers (lower is better; a coin "
        f"scores 0.693): v{c.version} {_loss(result.candidate_loss)}, current model {current}, base rate (every "
        f"answer predicted at the answers' mean code) {_loss(result.base_rate_loss)}; trained on {c.n_train} older "
        f"answers. {escape(result.reason)}.{extra}"  # "… 0.40 < base rate 0.69": mrkdwn needs < escaped
    )


def _already(proposal: Proposal) -> str:
    by = f" by <@{proposal.resolved_by}>" if proposal.resolved_by else ""
    return f"Proposal #{proposal.id} was already {proposal.state}{by}."


def expired_at(proposal: Proposal, now: float) -> float | None:
    """When ``proposal`` expired, if it has by ``now``: recorded as expired, or still open past its deadline (the
    monitor records it at its next run). None otherwise."""
    if proposal.state == "expired":
        return proposal.resolved_at if proposal.resolved_at is not None else proposal.expires_at or proposal.opened_at
    if proposal.state == "open" and proposal.expires_at is not None and now >= proposal.expires_at:
        return proposal.expires_at
    return None


def not_recorded_status(store: SQLiteStore, proposal_id: int, now: float) -> str:
    """What a person whose answer to ``proposal_id`` could not be stored is told of the proposal as it stands at
    ``now`` (read-only): open and until when — its deadline may be a minute away, so "still open, click again" alone
    may be untrue by the next click —, past its deadline, or answered meanwhile. When it cannot be read, the
    deadline the alert names."""
    try:
        with store.read() as conn:
            proposal = get_proposal(conn, proposal_id)
            waiting = _pending_entry(conn, proposal_id)
    except Exception:
        log.exception("could not read retraining proposal #%d", proposal_id)
        proposal, waiting = None, None
    if proposal is None:
        return "Please click again in a minute, before the deadline the alert names."
    if waiting is not None:
        return _being_approved(proposal_id, waiting)
    if (expired := expired_at(proposal, now)) is not None:
        return (
            f"The proposal's deadline ({slack_time(expired)}) has passed: it can no longer be approved or dismissed. "
            "The meta-monitor raises a new alert if the drift persists."
        )
    if proposal.state != "open":
        return _already(proposal)
    if proposal.expires_at is None:
        return "The proposal is still open: please click again in a minute."
    return f"The proposal is still open until {slack_time(proposal.expires_at)}: please click again before then."


def _expired(proposal: Proposal, at: float) -> Resolution:
    text = (
        f"Retraining proposal #{proposal.id} expired unanswered at {slack_time(at)}, so it can no longer be "
        "approved or dismissed (an expired proposal does not count toward F_monitor); the meta-monitor raises a new "
        "alert if the drift persists."
    )
    return Resolution("expired", proposal.id, text)


def resolve(
    store: SQLiteStore,
    proposal_id: int,
    *,
    approved: bool,
    by: str,
    now: float,
    message: MessageRef | None,
    original_blocks: Sequence[Mapping[str, Any]] = (),
    fallback_channel: str = "",
    on_enqueue: Callable[[], None] = lambda: None,
    clock: Callable[[], float] | None = None,
    pending: bool = False,
) -> Resolution:
    """Approve or dismiss ``proposal_id`` on behalf of ``by``; see the module docstring. ``clock``: ``now`` (the
    click's time) is read from it again once the write transaction has begun — after the fit of an approval, which
    takes a while — so that an answer written after the weekly summary read its week is in the next summary.
    ``pending``: this carries out the approval :func:`begin_approval` recorded (its entry is removed with the
    result, and the deadline is checked at the click's time, when it was recorded); otherwise a pending approval of
    the proposal makes this change nothing."""
    with store.read() as conn:
        proposal = get_proposal(conn, proposal_id)
        waiting = _pending_entry(conn, proposal_id)
    if proposal is None:
        return Resolution("unknown", proposal_id, f"There is no retraining proposal #{proposal_id}.")
    if pending and not _same_approval(waiting, by, now):  # carried out (or given up) by another runner
        return _not_this_approval(proposal, waiting)
    if not pending and waiting is not None:
        return Resolution("already_resolved", proposal_id, _being_approved(proposal_id, waiting))
    if not pending and (expired := expired_at(proposal, now)) is not None:
        return _expired(proposal, expired)
    if proposal.state != "open":
        return Resolution("already_resolved", proposal_id, _already(proposal))
    result = fit_candidate(store, now=now) if approved else None
    keys_reset = 0
    with store.transaction() as tx:
        clicked_at = now
        if clock is not None:
            now = max(now, clock())
        current = get_proposal(tx.connection, proposal_id)  # under the write lock: no other answer can slip in
        waiting = _pending_entry(tx.connection, proposal_id)
        if pending:
            if not _same_approval(waiting, by, clicked_at):  # another runner carried it out (or gave it up) meanwhile
                return _not_this_approval(current or proposal, waiting)
            _drop_pending(tx.connection, proposal_id, now)
        elif waiting is not None:
            return Resolution("already_resolved", proposal_id, _being_approved(proposal_id, waiting))
        if current is not None and (expired := expired_at(current, clicked_at if pending else now)) is not None:
            return _expired(current, expired)  # the monitor closed it while the candidate was fitted
        if current is None or current.state != "open":
            return Resolution("already_resolved", proposal_id, _already(current or proposal))
        version = None
        if result is not None:
            if result.candidate.version != max_model_version(tx.connection) + 1:
                # Another model was recorded since the fit (and may be the current one now): its comparison and
                # its version number are stale. Fit again, under the write lock, against what is stored now.
                result = fit_candidate(store, now=now)
            version = result.candidate.version
            compared = tx.get_model()  # the model the candidate was compared with (none recorded since the fit)
            compared_version = None if compared is None else compared.version
            tx.save_model(result.candidate, promoted=result.promoted, recorded_at=now)
        tx.resolve_proposal(proposal_id, approved=approved, by=by, at=now, model_version=version)
        # Dismissed after someone else's approval was given up: the answers disagree, no ground truth to count.
        overruled = [] if approved else [a for a in _given_up_by(tx.connection, proposal_id) if a != by]
        _forget_given_up(tx.connection, now)
        state = close_proposal(tx.get_monitor_state(), approved)
        if not overruled:
            state = record_ground_truth(state, acted=True, ideal=approved)
        tx.put_monitor_state(state)
        f_monitor = monitor_fidelity(state)
        detail: dict[str, object] = {"approved": approved, "by": by, "f_monitor": f_monitor}
        if overruled:
            detail |= {"counted": False, "approved_in_time_by": overruled}
        if result is not None:
            tx.put_bandit(tx.get_bandit().reset())  # the world changed: τ is learned again from the prior
            if result.promoted:
                for key_state in store.keys().values():
                    tx.put_key(reset_key(key_state))
                    keys_reset += 1
            text = _retrain_text(result, by, keys_reset, compared_version)
            detail |= {"model_version": version, "promoted": result.promoted, "reason": result.reason}
        elif overruled:
            text = (
                f"Dismissed by <@{by}> after the approval by {_mentions(overruled)}, given in time, could not be "
                "carried out: the answers disagree, so this alert does not count toward F_monitor."
            )
        else:
            text = f"Dismissed by <@{by}>: recorded as a false alarm of the meta-monitor."
        text += f" F_monitor is {'still' if overruled else 'now'} {f_monitor:.2f}." if f_monitor is not None else ""
        tx.audit("retraining_approved" if approved else "retraining_dismissed", str(proposal_id), detail, now)
        if message is not None:
            tx.enqueue(message.channel, THREAD_KIND, {"thread_ts": message.ts, "text": text}, now)
            if original_blocks:
                line = (
                    ("Approved" if approved else "Dismissed")
                    + f" by <@{by}>"
                    + (
                        f" → model v{version} {'promoted' if result and result.promoted else 'not promoted'}"
                        if approved
                        else ""
                    )
                    + (f" after {_mentions(overruled)} approved: not counted toward F_monitor" if overruled else "")
                )
                text_of_update = resolved_text(proposal_id, line)
                payload = {"ts": message.ts, "text": text_of_update, "blocks": resolved_blocks(original_blocks, line)}
                tx.enqueue(message.channel, UPDATE_KIND, payload, now)
        elif fallback_channel:
            tx.enqueue(fallback_channel, "message", {"text": f"Proposal #{proposal_id}: {text}"}, now)
    on_enqueue()
    log.info("retraining proposal #%d %s by %s", proposal_id, "approved" if approved else "dismissed", by)
    return Resolution("approved" if approved else "dismissed", proposal_id, text, result, keys_reset)


# -- Approve from Slack: recorded before the click is answered, carried out after -------------------------------------
def _given_up_by(conn: Any, proposal_id: int) -> list[str]:
    """Who approved ``proposal_id`` in time and saw the approval given up (:func:`_give_up`), first first."""
    names = get_job_state(conn, GIVEN_UP_STATE).get(str(proposal_id))
    return [str(name) for name in names] if isinstance(names, list) else []


def _note_given_up(conn: Any, proposal_id: int, by: str, now: float) -> None:
    """Remember that ``by``'s approval of ``proposal_id`` was given up. Only the open proposal is kept (there is at
    most one open; an older one's entry is dropped here), so the state stays one short list."""
    names = _given_up_by(conn, proposal_id)
    if by and by not in names:
        put_job_state(conn, GIVEN_UP_STATE, {str(proposal_id): [*names, by]}, now)


def _forget_given_up(conn: Any, now: float) -> None:
    if get_job_state(conn, GIVEN_UP_STATE):
        put_job_state(conn, GIVEN_UP_STATE, {}, now)


def _mentions(users: Sequence[str]) -> str:
    return ", ".join(f"<@{escape(user)}>" for user in users)


def _pending_entry(conn: Any, proposal_id: int) -> dict[str, Any] | None:
    entry = get_job_state(conn, PENDING_STATE).get(str(proposal_id))
    return entry if isinstance(entry, dict) else None


def _drop_pending(conn: Any, proposal_id: int, now: float) -> None:
    pending = get_job_state(conn, PENDING_STATE)
    if pending.pop(str(proposal_id), None) is not None:
        put_job_state(conn, PENDING_STATE, pending, now)


def _same_approval(entry: Mapping[str, Any] | None, by: str, at: float) -> bool:
    """Whether the pending ``entry`` is the approval by ``by`` recorded at ``at`` (not one given up since, its
    proposal approved again)."""
    return entry is not None and str(entry.get("by") or "") == by and _entry_at(entry) in (at, None)


def _not_this_approval(proposal: Proposal, entry: Mapping[str, Any] | None) -> Resolution:
    if entry is not None:  # given up meanwhile and approved again: that approval is carried out on its own
        return Resolution("already_resolved", proposal.id, _being_approved(proposal.id, entry))
    return Resolution("already_resolved", proposal.id, _already(proposal))


def _entry_at(entry: Mapping[str, Any]) -> float | None:
    at = entry.get("at")
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None


def approval_period(proposal_id: int, entry: Mapping[str, Any]) -> str:
    """The claim period (``job_claims``, job :data:`APPROVAL_JOB`) of the pending approval ``entry`` of
    ``proposal_id``: the proposal and the click's time, so an approval given up and clicked again is claimed anew."""
    return f"{proposal_id}@{entry.get('at')!r}"


def pending_approval(conn: Any, proposal_id: int) -> Mapping[str, Any] | None:
    """The approval of ``proposal_id`` recorded and not yet carried out (``by``, ``at``, …), or None."""
    return _pending_entry(conn, proposal_id)


def _being_approved(proposal_id: int, entry: Mapping[str, Any]) -> str:
    by = entry.get("by")
    who = f" by <@{escape(str(by))}>" if by else ""
    return f"Proposal #{proposal_id} is already being approved{who}: its retraining is running."


def approval_pending(conn: Any, proposal_id: int) -> bool:
    """Whether an approval of ``proposal_id`` is recorded and not yet carried out (the meta-monitor does not expire
    such a proposal: it was answered in time)."""
    return _pending_entry(conn, proposal_id) is not None


def begin_approval(
    store: SQLiteStore,
    proposal_id: int,
    *,
    by: str,
    now: float,
    message: MessageRef | None,
    original_blocks: Sequence[Mapping[str, Any]] = (),
    fallback_channel: str = "",
) -> Resolution:
    """Record ``by``'s approval of ``proposal_id`` as pending, in one short transaction (no fit): status
    ``pending``, carried out by :func:`complete_approvals`. An unknown, expired or resolved proposal, or one
    already being approved, records nothing and says why."""
    with store.transaction() as tx:
        conn = tx.connection
        proposal = get_proposal(conn, proposal_id)
        if proposal is None:
            return Resolution("unknown", proposal_id, f"There is no retraining proposal #{proposal_id}.")
        if (waiting := _pending_entry(conn, proposal_id)) is not None:
            return Resolution("already_resolved", proposal_id, _being_approved(proposal_id, waiting))
        if (expired := expired_at(proposal, now)) is not None:
            return _expired(proposal, expired)
        if proposal.state != "open":
            return Resolution("already_resolved", proposal_id, _already(proposal))
        pending = get_job_state(conn, PENDING_STATE)
        pending[str(proposal_id)] = {
            "by": by,
            "at": now,
            "message": None if message is None else [message.channel, message.ts],
            "blocks": [dict(block) for block in original_blocks],
            "fallback_channel": fallback_channel,
        }
        put_job_state(conn, PENDING_STATE, pending, now)
    log.info("retraining proposal #%d approved by %s; retraining pending", proposal_id, by)
    return Resolution("pending", proposal_id, f"Approved by <@{by}>: retraining.")


def _message_of(entry: Mapping[str, Any]) -> MessageRef | None:
    ref = entry.get("message")
    if isinstance(ref, list) and len(ref) == 2 and all(isinstance(part, str) for part in ref):
        return MessageRef(ref[0], ref[1])
    return None


def _give_up(
    store: SQLiteStore, proposal_id: int, entry: Mapping[str, Any], now: float, *, period: str, owner: str
) -> None:
    """An approval that could not be carried out: its entry is removed (the proposal stays open, Approve works
    again) and its person told (ephemeral) to click again, and until when; its claim is finished (nobody carries it
    out now). The approval was given in time, so a deadline less than :data:`GIVE_UP_GRACE_S` away — or already
    passed, the retraining having run past it — is moved to ``now`` + that (audited ``retraining_extended``): a
    click in that time is answered, where the meta-monitor would otherwise expire the proposal at its next run. The
    alert, which named the old deadline, is updated (through the outbox) to name the new one and keeps its buttons."""
    message = _message_of(entry)
    channel = message.channel if message is not None else str(entry.get("fallback_channel") or "")
    with store.transaction() as tx:
        finish_claim(tx.connection, APPROVAL_JOB, period, owner, now)
        if not _same_approval(_pending_entry(tx.connection, proposal_id), str(entry.get("by") or ""), _at(entry)):
            return  # carried out, or given up, by another runner meanwhile
        _drop_pending(tx.connection, proposal_id, now)
        by = str(entry.get("by") or "")
        _note_given_up(tx.connection, proposal_id, by, now)
        proposal = get_proposal(tx.connection, proposal_id)
        deadline = None if proposal is None else proposal.expires_at
        if deadline is not None and deadline < now + GIVE_UP_GRACE_S and _extend(store, proposal_id, by, entry, now):
            deadline = now + GIVE_UP_GRACE_S
            blocks = [b for b in entry.get("blocks") or [] if isinstance(b, dict)]
            if message is not None and blocks:  # the alert named the old deadline: it names the new one
                line = extended_line(by, deadline)
                text, shown = resolved_text(proposal_id, line), extended_blocks(blocks, deadline, line)
                tx.enqueue(message.channel, UPDATE_KIND, {"ts": message.ts, "text": text, "blocks": shown}, now)
        if channel and by:
            tx.enqueue(channel, "ephemeral", {"user": by, "text": _not_carried_out(proposal_id, deadline, now)}, now)


def _extend(store: SQLiteStore, proposal_id: int, by: str, entry: Mapping[str, Any], now: float) -> bool:
    """Move the deadline of ``proposal_id``, whose approval was given up, to ``now`` + :data:`GIVE_UP_GRACE_S`, and
    audit it, inside the give-up's transaction (a savepoint); False when it could not be (the database refused the
    write: the rest of the give-up stands)."""
    until = now + GIVE_UP_GRACE_S
    try:
        with store.transaction() as tx:
            if not tx.extend_proposal(proposal_id, until=until):
                return False
            detail = {"approved_by": by, "approved_at": _at(entry), "until": until}
            tx.audit("retraining_extended", str(proposal_id), detail, now)
    except (StorageError, sqlite3.Error):
        log.exception("could not move the deadline of retraining proposal #%d", proposal_id)
        return False
    log.info("retraining proposal #%d: its approval given up, its deadline is moved to %.0f", proposal_id, until)
    return True


def _not_carried_out(proposal_id: int, deadline: float | None, now: float) -> str:
    """What the approver of ``proposal_id`` is told when their approval is given up."""
    if deadline is not None and deadline <= now:  # its deadline could not be moved
        return NOT_CARRIED_OUT_EXPIRED_TEXT.format(id=proposal_id, at=slack_time(deadline))
    until = "" if deadline is None else f" until {slack_time(deadline)}"
    return NOT_CARRIED_OUT_TEXT.format(id=proposal_id, until=until)


def _at(entry: Mapping[str, Any]) -> float:
    return _entry_at(entry) or 0.0


def new_owner() -> str:
    """Who holds a claim: this process (host, pid) and one runner in it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def complete_approvals(
    store: SQLiteStore,
    *,
    on_enqueue: Callable[[], None] = lambda: None,
    clock: Callable[[], float],
    owner: str | None = None,
    wait: Callable[[float], bool] = _sleep,
) -> list[Resolution]:
    """Carry out every pending approval this runner (``owner``) claims (fit, compare, promote or not, reply): see
    :func:`resolve`. One claimed by another runner (another process sharing the database) is left to it, until its
    claim is :data:`APPROVAL_LEASE_S` old unfinished. An attempt the database was locked for is made again after
    ``wait(delay)`` (:data:`RETRY_DELAYS_S`; ``wait`` returns True when the runner is stopping: the approval then
    stays pending, its claim given back, and nothing more is carried out); one that fails otherwise, or still after
    the retries, is given up (:func:`_give_up`); one the database cannot be written for stays pending, its claim
    given back, for the next run."""
    owner = owner or new_owner()
    with store.read() as conn:
        pending = get_job_state(conn, PENDING_STATE)
    done: list[Resolution] = []
    for key, entry in sorted(pending.items(), key=lambda item: str(item[0])):
        if not isinstance(entry, dict) or not str(key).isdigit():
            continue
        proposal_id = int(key)
        period = approval_period(proposal_id, entry)
        claimed_at = clock()
        try:
            if not store.claim_job(APPROVAL_JOB, period, now=claimed_at, owner=owner, stale_after_s=APPROVAL_LEASE_S):
                continue  # another runner is carrying it out (or has)
        except Exception:  # the database cannot be written: the next wake or poll tries again
            log.exception("could not claim the approval of proposal #%d; it stays pending", proposal_id)
            continue
        try:
            resolution = _carry_out(
                store, proposal_id, entry, claimed_at=claimed_at, on_enqueue=on_enqueue, clock=clock, wait=wait
            )
        except Exception:
            log.exception("the retraining approved for proposal #%d failed; given up, its approver told", proposal_id)
            try:
                _give_up(store, proposal_id, entry, clock(), period=period, owner=owner)
                on_enqueue()
            except Exception:
                log.exception("could not give up the approval of proposal #%d; it stays pending", proposal_id)
                _release(store, period, owner)
            continue
        if resolution is None:  # the runner is stopping: carried out when the bot starts again
            _release(store, period, owner)
            break
        done.append(resolution)
        try:
            with store.transaction() as tx:
                finish_claim(tx.connection, APPROVAL_JOB, period, owner, clock())
        except Exception:  # carried out all the same; its entry is gone, so nobody claims it again
            log.exception("could not record that the approval of proposal #%d was carried out", proposal_id)
    return done


def _carry_out(
    store: SQLiteStore,
    proposal_id: int,
    entry: Mapping[str, Any],
    *,
    claimed_at: float,
    on_enqueue: Callable[[], None],
    clock: Callable[[], float],
    wait: Callable[[float], bool],
) -> Resolution | None:
    """Carry out the pending approval ``entry`` of ``proposal_id``, claimed at ``claimed_at``: an attempt the
    database was locked for is made again after each delay of :data:`RETRY_DELAYS_S` in turn, as long as the next
    attempt begins within half the claim's lease (another runner takes over a stale claim). Raises what gives the
    approval up: any other failure at once, a locked database once the retries are spent. None when ``wait`` says
    the runner is stopping."""
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
        begun = clock()
        try:
            return _attempt(store, proposal_id, entry, on_enqueue=on_enqueue, clock=clock)
        except Exception as exc:
            now = clock()
            if delay is None or not is_locked(exc) or now + delay - claimed_at >= APPROVAL_LEASE_S / 2:
                raise
            log.warning(
                "attempt %d at the retraining approved for proposal #%d met a locked database after %.1f s (%s); "
                "trying again in %g s",
                attempt,
                proposal_id,
                now - begun,
                exc,
                delay,
            )
        if wait(delay):
            return None
    raise AssertionError("the last attempt returns or raises")


def _attempt(
    store: SQLiteStore,
    proposal_id: int,
    entry: Mapping[str, Any],
    *,
    on_enqueue: Callable[[], None],
    clock: Callable[[], float],
) -> Resolution:
    """One attempt at carrying out the pending approval ``entry`` of ``proposal_id`` (:func:`resolve`)."""
    return resolve(
        store,
        proposal_id,
        approved=True,
        by=str(entry.get("by") or ""),
        now=_entry_at(entry) or clock(),
        message=_message_of(entry),
        original_blocks=[b for b in entry.get("blocks") or [] if isinstance(b, dict)],
        fallback_channel=str(entry.get("fallback_channel") or ""),
        on_enqueue=on_enqueue,
        clock=clock,
        pending=True,
    )


def _release(store: SQLiteStore, period: str, owner: str) -> None:
    """Give back a claim (its approval stays pending), so the next run — of any process — tries again at once."""
    try:
        with store.transaction() as tx:
            release_claim(tx.connection, APPROVAL_JOB, period, owner)
    except Exception:  # taken over once stale (APPROVAL_LEASE_S)
        log.exception("could not give back the claim of approval %s", period)


class ApprovalRunner:
    """A thread that carries out pending approvals (:func:`complete_approvals`): at start (what a stopped process
    left), whenever :meth:`wake` is called (a click recorded one), and every ``poll_s`` (what another process
    left, or a claim of a process that died). Each approval is carried out by the one runner that claims it."""

    def __init__(
        self,
        store: SQLiteStore,
        *,
        on_enqueue: Callable[[], None] = lambda: None,
        clock: Callable[[], float],
        poll_s: float = 60.0,
    ) -> None:
        self.store = store
        self.on_enqueue = on_enqueue
        self.clock = clock
        self.poll_s = poll_s
        self.owner = new_owner()  # the holder of this runner's claims (job_claims)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._wake.set()  # what a stopped process left
        self._thread = threading.Thread(target=self._run, name="npo-retraining", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop once the approval being carried out is done (an approval not begun stays pending)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> list[Resolution]:
        """Carry out the pending approvals; a back-off between attempts ends early when the runner is stopped."""
        return complete_approvals(
            self.store, on_enqueue=self.on_enqueue, clock=self.clock, owner=self.owner, wait=self._stop.wait
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:  # the database could not be read: the next wake or poll tries again
                log.exception("carrying out pending retraining approvals failed; retrying later")
