"""The loop's learning half, ``feedback → update``: :func:`record_feedback` (an answer moves m(k) of its key, the
bandit arm that let the recommendation through and the operator's trust; a second answer replaces the first)
and :func:`record_outcome` (the miss term, m(k) of suppressed predictions, trust calibration), over the store
protocol (:mod:`npo.store_protocol`). ``npo.loop`` re-exports them."""

from __future__ import annotations

import functools
from dataclasses import fields

from npo.loop_types import (
    SYSTEM_OPERATOR,
    AppliedFeedback,
    FeedbackResult,
    FeedbackStatus,
    LoopConfig,
    NotSurfaced,
    OutcomeResult,
    UnknownPrediction,
)
from npo.misalignment import replace_feedback, update_key
from npo.store_protocol import LoopTransaction
from npo.trust import (
    OperatorTrust,
    new_trust,
    swap_peer_answer,
    trust_weight,
    update_with_outcome,
    update_with_peers,
)
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Verdict

(
    _SET_APPLIED_EVENT,
    _SET_APPLIED_KEY,
    _SET_APPLIED_Y,
    _SET_APPLIED_WEIGHT,
    _SET_APPLIED_KEY_N_BEFORE,
    _SET_APPLIED_ARM,
    _SET_APPLIED_REWARD,
    _SET_APPLIED_REPLACES,
    _SET_APPLIED_PEER_CREDITED,
) = tuple(getattr(AppliedFeedback, f.name).__set__ for f in fields(AppliedFeedback))
_new_applied = functools.partial(object.__new__, AppliedFeedback)


def _applied(
    event: FeedbackEvent,
    key: str,
    y: float,
    weight: float,
    key_n_before: float,
    arm: int | None,
    reward: float,
    replaces: str | None,
    peer_credited: bool,
) -> AppliedFeedback:
    """``AppliedFeedback(...)`` through the slot setters (the record has no checks of its own to skip; this only
    avoids the frozen dataclass's per-field ``object.__setattr__``)."""
    applied: AppliedFeedback = _new_applied()
    _SET_APPLIED_EVENT(applied, event)
    _SET_APPLIED_KEY(applied, key)
    _SET_APPLIED_Y(applied, y)
    _SET_APPLIED_WEIGHT(applied, weight)
    _SET_APPLIED_KEY_N_BEFORE(applied, key_n_before)
    _SET_APPLIED_ARM(applied, arm)
    _SET_APPLIED_REWARD(applied, reward)
    _SET_APPLIED_REPLACES(applied, replaces)
    _SET_APPLIED_PEER_CREDITED(applied, peer_credited)
    return applied


def _weight_for(tx: LoopTransaction, operator: str, config: LoopConfig) -> tuple[float, OperatorTrust | None]:
    if config.trust is None or operator == SYSTEM_OPERATOR:
        return 1.0, None
    trust = tx.get_trust(operator) or new_trust(operator, config.trust)
    return trust_weight(trust, config.trust), trust


def record_feedback(tx: LoopTransaction, event: FeedbackEvent, *, config: LoopConfig) -> FeedbackResult:
    """Apply one feedback event: m(k) of its key, the bandit arm that let it through, the operator's trust.

    Raises :class:`UnknownPrediction` / :class:`NotSurfaced` (nothing changes). A request id seen before returns
    status ``duplicate`` and changes nothing.
    """
    tx.prefetch_feedback(event.prediction_id, event.operator, event.request_id)
    if tx.has_request(event):
        return FeedbackResult("duplicate", None, None)
    decision = tx.get_decision(event.prediction_id)
    if decision is None:
        raise UnknownPrediction(event.prediction_id)
    if not decision.surfaced:
        raise NotSurfaced(event.prediction_id, decision.verdict)
    y = config.codes.code(event.kind)
    reward = 1.0 - y
    weight, trust = _weight_for(tx, event.operator, config)
    previous = tx.effective_feedback(event.prediction_id, event.operator)
    if previous is None and event.kind is not FeedbackKind.SKIPPED:
        previous = tx.effective_feedback(event.prediction_id, SYSTEM_OPERATOR)
    if previous is None and event.kind is FeedbackKind.SKIPPED:
        previous = next(iter(tx.feedback_for(event.prediction_id)), None)  # anyone's answer makes a skip moot
    if previous is not None and event.kind is FeedbackKind.SKIPPED:
        # A skip after a real answer (or a second skip) carries no information: log it, learn nothing.
        applied = AppliedFeedback(
            event,
            decision.key,
            previous.y,
            previous.weight,
            previous.key_n_before,
            previous.arm,
            previous.reward,
            replaces=None,
            peer_credited=previous.peer_credited,
        )
        tx.audit(
            "feedback_ignored",
            event.prediction_id,
            {"operator": event.operator, "kind": event.kind.value, "why": "already answered"},
            event.at,
        )
        return FeedbackResult("duplicate", applied, tx.get_key(decision.key))
    key_state = tx.get_key(decision.key)
    consensus_before = key_state.m
    bandit = tx.get_bandit()
    first_answer = previous is None or previous.event.operator == SYSTEM_OPERATOR
    peer_check = trust is not None and config.trust is not None
    if previous is None or previous.event.operator == SYSTEM_OPERATOR:
        # Peer credit once per person and recommendation, for an answer given while the key has enough updates to
        # be a consensus: re-clicking must not earn trust; nor may agreeing after the outcome is known (the
        # consensus then mostly says what the outcome did).
        peer_credited = (
            peer_check and key_state.n >= config.peer_min_updates and not tx.has_outcome(event.prediction_id)
        )
    else:
        # A changed answer holds the credit its first answer earned, and only that: an answer given while the key
        # was young earned none, so changing it once the key has grown moves none (an answer stored before the
        # flag was kept is taken to hold credit when the key has enough updates now, as then).
        peer_credited = (
            previous.peer_credited
            if previous.peer_credited is not None
            else peer_check and key_state.n >= config.peer_min_updates
        )
    if previous is not None:
        # A person changing their answer keeps the weight it was given; a click replacing a skip counts with the
        # clicker's own trust weight (a distrusted clicker must not move m(k) by answering late).
        new_weight = weight if previous.event.operator == SYSTEM_OPERATOR else previous.weight
        new_state = replace_feedback(
            key_state,
            previous.y,
            y,
            config.eta,
            old_n=previous.key_n_before,
            weight=previous.weight,
            new_weight=new_weight,
            at=event.at,
        )
        if decision.arm is not None:
            bandit = bandit.replace_surfaced(
                decision.arm, decision.score, previous.reward, reward, previous.weight, new_weight
            )
        applied = AppliedFeedback(
            event,
            decision.key,
            y,
            new_weight,
            previous.key_n_before,
            decision.arm,
            reward,
            replaces=previous.event.request_id,
            peer_credited=peer_credited,
        )
        status: FeedbackStatus = "replaced"
        if config.pool_keys:
            parent = tx.get_key(config.key_spec.parent(decision.key))
            # The parent's effective sample size when the first answer was applied is not recorded: its step is
            # taken at the size before this person's answer, exact when no other answer of the family came since.
            tx.put_key(
                replace_feedback(
                    parent,
                    previous.y,
                    y,
                    config.eta,
                    old_n=max(0.0, parent.weight_sum - previous.weight),
                    weight=previous.weight,
                    new_weight=new_weight,
                    at=event.at,
                )
            )
    else:
        # An answer of weight 0 (an operator NPO does not trust) moves nothing: not m(k), not the step size, and not
        # the update count n either, which the promoted model's prior of young keys reads as the key's evidence
        # (effective_misalignment) and the peer check as its consensus's (peer_min_updates).
        new_state = update_key(key_state, y, config.eta, weight=weight, at=event.at) if weight > 0.0 else key_state
        if config.pool_keys and weight > 0.0:
            parent = tx.get_key(config.key_spec.parent(decision.key))
            tx.put_key(update_key(parent, y, config.eta, weight=weight, at=event.at))
        if decision.arm is not None:
            bandit = bandit.observe_surfaced(decision.arm, decision.score, reward, weight)
        applied = _applied(
            event, decision.key, y, weight, key_state.weight_sum, decision.arm, reward, None, peer_credited
        )
        status = "recorded"
    if trust is not None and config.trust is not None and first_answer and peer_credited:
        tx.put_trust(update_with_peers(trust, y, consensus_before, config.trust))
    elif (
        trust is not None
        and config.trust is not None
        and previous is not None
        and not first_answer
        and peer_credited
        and not tx.has_outcome(event.prediction_id)
    ):
        # A changed answer takes its peer credit with it: the first answer's agreement with the consensus it was
        # compared with (the key's m with this person's answer taken out) is moved to the new answer, so clicking
        # the consensus side first and then the other one does not keep the agreement of the side left.
        without = replace_feedback(
            key_state, previous.y, 0.0, config.eta, old_n=previous.key_n_before, weight=previous.weight, new_weight=0.0
        )
        tx.put_trust(swap_peer_answer(trust, previous.y, y, without.m, config.trust))
    elif trust is not None and tx.get_trust(event.operator) is None:
        tx.put_trust(trust)
    tx.put_key(new_state)
    tx.put_bandit(bandit)
    tx.add_feedback(
        applied,
        {
            "operator": event.operator,
            "kind": event.kind.value,
            "y": y,
            "weight": weight,
            "status": status,
            "m": new_state.m,
        },
    )
    return FeedbackResult(status, applied, new_state)


def record_outcome(
    tx: LoopTransaction, outcome: Outcome, *, config: LoopConfig, reporter: str | None = None
) -> OutcomeResult:
    """Record whether a prediction's fault was real; feed the miss term, m(k) for suppressed ones, and trust.

    Raises :class:`UnknownPrediction`. A second outcome for the same prediction is ignored (first one wins).
    ``reporter``: the person who reported it (an outcome button), None for a machine source (Alertmanager, the
    API). An outcome a person of trust weight 0 reports is not recorded (``not_trusted``; audited as
    ``outcome_not_trusted``): it would calibrate the trust of everyone who answered, their own included, and stand
    as the first outcome in place of the one still to come.
    """
    decision = tx.get_decision(outcome.prediction_id)
    if decision is None:
        raise UnknownPrediction(outcome.prediction_id)
    if reporter is not None and _weight_for(tx, reporter, config)[0] <= 0.0:
        detail = {"operator": reporter, "real_fault": outcome.real_fault, "weight": 0.0}
        tx.audit("outcome_not_trusted", outcome.prediction_id, detail, outcome.recorded_at or outcome.at)
        return OutcomeResult(recorded=False, missed_fault=False, not_trusted=True)
    if not tx.add_outcome(outcome):
        return OutcomeResult(recorded=False, missed_fault=False)
    missed = decision.verdict is Verdict.SUPPRESS and outcome.real_fault
    if decision.verdict is Verdict.SUPPRESS and decision.arm is not None:
        tx.put_bandit(tx.get_bandit().observe_suppressed(decision.arm, decision.score, outcome.real_fault))
        if config.suppressed_outcome_weight > 0:
            truth = 0.0 if outcome.real_fault else 1.0
            learn = (decision.key, config.key_spec.parent(decision.key)) if config.pool_keys else (decision.key,)
            for key in learn:
                tx.put_key(
                    update_key(
                        tx.get_key(key), truth, config.eta, weight=config.suppressed_outcome_weight, at=outcome.at
                    )
                )
    if config.trust is not None:
        for applied in tx.feedback_for(outcome.prediction_id):
            operator = applied.event.operator
            if operator == SYSTEM_OPERATOR or applied.event.kind is FeedbackKind.SKIPPED:
                continue
            trust = tx.get_trust(operator) or new_trust(operator, config.trust)
            tx.put_trust(update_with_outcome(trust, applied.y, outcome.real_fault, config.trust))
    tx.audit(
        "outcome",
        outcome.prediction_id,
        {"real_fault": outcome.real_fault, "source": outcome.source, "missed_fault": missed},
        outcome.at,
    )
    return OutcomeResult(recorded=True, missed_fault=missed)
