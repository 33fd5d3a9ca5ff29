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
that the monitor was wrong. Either answer closes the proposal, counts toward F_monitor, is audited, and queues a
thread reply under the alert and an update of the alert (its buttons replaced by the result) — in one transaction.
A proposal already resolved changes nothing, and says who resolved it. So does an expired one — the meta-monitor
closed it unanswered (``bot.jobs.monitor``), or its deadline has passed and the next run will — and the answer
says when it expired.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.service import MessageRef
from bot.slack.monitor_blocks import resolved_blocks, resolved_text
from bot.slack.text import escape, slack_time
from npo.misalignment import reset_key
from npo.monitor import monitor_fidelity, record_ground_truth
from npo.monitor import resolve_proposal as close_proposal
from npo.retrain import RetrainResult, retrain_on_answers
from storage import SQLiteStore
from storage.monitoring import Proposal, get_proposal, max_model_version, training_rows

log = logging.getLogger(__name__)

TRAINING_ROWS = 20_000
THREAD_KIND = "thread_reply"
UPDATE_KIND = "message_update"
Status = Literal["approved", "dismissed", "already_resolved", "expired", "unknown"]


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
) -> Resolution:
    """Approve or dismiss ``proposal_id`` on behalf of ``by``; see the module docstring. ``clock``: ``now`` (the
    click's time) is read from it again once the write transaction has begun — after the fit of an approval, which
    takes a while — so that an answer written after the weekly summary read its week is in the next summary."""
    with store.read() as conn:
        proposal = get_proposal(conn, proposal_id)
    if proposal is None:
        return Resolution("unknown", proposal_id, f"There is no retraining proposal #{proposal_id}.")
    if (expired := expired_at(proposal, now)) is not None:
        return _expired(proposal, expired)
    if proposal.state != "open":
        return Resolution("already_resolved", proposal_id, _already(proposal))
    result = fit_candidate(store, now=now) if approved else None
    keys_reset = 0
    with store.transaction() as tx:
        if clock is not None:
            now = max(now, clock())
        current = get_proposal(tx.connection, proposal_id)  # under the write lock: no other answer can slip in
        if current is not None and (expired := expired_at(current, now)) is not None:
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
        state = record_ground_truth(close_proposal(tx.get_monitor_state(), approved), acted=True, ideal=approved)
        tx.put_monitor_state(state)
        f_monitor = monitor_fidelity(state)
        detail: dict[str, object] = {"approved": approved, "by": by, "f_monitor": f_monitor}
        if result is not None:
            tx.put_bandit(tx.get_bandit().reset())  # the world changed: τ is learned again from the prior
            if result.promoted:
                for key_state in store.keys().values():
                    tx.put_key(reset_key(key_state))
                    keys_reset += 1
            text = _retrain_text(result, by, keys_reset, compared_version)
            detail |= {"model_version": version, "promoted": result.promoted, "reason": result.reason}
        else:
            text = f"Dismissed by <@{by}>: recorded as a false alarm of the meta-monitor."
        text += f" F_monitor is now {f_monitor:.2f}." if f_monitor is not None else ""
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
                )
                text_of_update = resolved_text(proposal_id, line)
                payload = {"ts": message.ts, "text": text_of_update, "blocks": resolved_blocks(original_blocks, line)}
                tx.enqueue(message.channel, UPDATE_KIND, payload, now)
        elif fallback_channel:
            tx.enqueue(fallback_channel, "message", {"text": f"Proposal #{proposal_id}: {text}"}, now)
    on_enqueue()
    log.info("retraining proposal #%d %s by %s", proposal_id, "approved" if approved else "dismissed", by)
    return Resolution("approved" if approved else "dismissed", proposal_id, text, result, keys_reset)
