"""Rows ↔ ``npo`` records. Pure functions; the column order of each SELECT is defined here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from npo.loop import AppliedFeedback
from npo.misalignment import KeyAlignment
from npo.monitor import MonitorState, PageHinkleyState
from npo.retrain import LogisticModel
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome, Prediction, Severity, Verdict

Row = tuple[Any, ...]

PREDICTION_COLS = "id, fault_type, target, action, confidence, severity, time_to_fault_s, labels, channel, received_at"
DECISION_COLS = "prediction_id, key, verdict, rule, reason, confidence, misalignment, score, threshold, arm, decided_at"
FEEDBACK_COLS = (
    "prediction_id, operator, kind, at, request_id, reason, key, y, weight, key_n_before, arm, reward, replaces"
)
KEY_COLS = "key, m, n, weight_sum, updated_at"
TRUST_COLS = "operator, agree, disagree, n_outcome, n_peer"
OUTCOME_COLS = "prediction_id, real_fault, at, source"
MODEL_COLS = "version, weights, bias, trained_at, n_train, metrics"
MONITOR_COLS = "last_trigger_at, open_proposal, matches, decisions, ph_n, ph_mean, ph_cumulative, ph_minimum"


def dumps(value: object) -> str:
    """Compact JSON (non-JSON values such as enums fall back to ``str``)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def prediction_params(p: Prediction) -> Row:
    return (
        p.id,
        p.fault_type,
        p.target,
        p.action,
        p.confidence,
        p.severity.value,
        p.time_to_fault_s,
        dumps(dict(p.labels)),
        p.channel,
        p.received_at,
        p.fingerprint(),
        p.cluster,
    )


def prediction_from_row(r: Row) -> Prediction:
    labels: Mapping[str, str] = json.loads(r[7])
    return Prediction(
        id=r[0],
        fault_type=r[1],
        target=r[2],
        action=r[3],
        confidence=r[4],
        severity=Severity(r[5]),
        time_to_fault_s=r[6],
        labels=labels,
        channel=r[8],
        received_at=r[9],
    )


def decision_params(d: Decision, channel: str) -> Row:
    return (
        d.prediction_id,
        d.key,
        d.verdict.value,
        d.rule,
        d.reason,
        d.confidence,
        d.misalignment,
        d.score,
        d.threshold,
        d.arm,
        d.decided_at,
        channel,
    )


def decision_from_row(r: Row) -> Decision:
    return Decision(
        prediction_id=r[0],
        key=r[1],
        verdict=Verdict(r[2]),
        rule=r[3],
        reason=r[4],
        confidence=r[5],
        misalignment=r[6],
        score=r[7],
        threshold=r[8],
        arm=r[9],
        decided_at=r[10],
    )


def feedback_params(a: AppliedFeedback) -> Row:
    e = a.event
    return (
        e.request_id,
        e.prediction_id,
        e.operator,
        e.kind.value,
        e.at,
        e.reason,
        a.key,
        a.y,
        a.weight,
        a.key_n_before,
        a.arm,
        a.reward,
        a.replaces,
    )


def feedback_from_row(r: Row) -> AppliedFeedback:
    event = FeedbackEvent(
        prediction_id=r[0], operator=r[1], kind=FeedbackKind(r[2]), at=r[3], request_id=r[4], reason=r[5]
    )
    return AppliedFeedback(
        event=event, key=r[6], y=r[7], weight=r[8], key_n_before=r[9], arm=r[10], reward=r[11], replaces=r[12]
    )


def key_from_row(r: Row) -> KeyAlignment:
    return KeyAlignment(key=r[0], m=r[1], n=r[2], weight_sum=r[3], updated_at=r[4])


def key_params(k: KeyAlignment) -> Row:
    return (k.key, k.m, k.n, k.weight_sum, k.updated_at)


def trust_from_row(r: Row) -> OperatorTrust:
    return OperatorTrust(operator=r[0], agree=r[1], disagree=r[2], n_outcome=r[3], n_peer=r[4])


def trust_params(t: OperatorTrust) -> Row:
    return (t.operator, t.agree, t.disagree, t.n_outcome, t.n_peer)


def outcome_from_row(r: Row) -> Outcome:
    return Outcome(prediction_id=r[0], real_fault=bool(r[1]), at=r[2], source=r[3])


def model_params(m: LogisticModel) -> Row:
    return (m.version, dumps(list(m.weights)), m.bias, m.trained_at, m.n_train, dumps(dict(m.metrics)))


def model_from_row(r: Row) -> LogisticModel:
    return LogisticModel(
        version=r[0],
        weights=tuple(json.loads(r[1])),
        bias=r[2],
        trained_at=r[3],
        n_train=r[4],
        metrics=json.loads(r[5]),
    )


def monitor_params(s: MonitorState) -> Row:
    return (
        s.last_trigger_at,
        int(s.open_proposal),
        s.matches,
        s.decisions,
        s.ph.n,
        s.ph.mean,
        s.ph.cumulative,
        s.ph.minimum,
    )


def monitor_from_row(r: Row) -> MonitorState:
    return MonitorState(
        last_trigger_at=r[0],
        open_proposal=bool(r[1]),
        matches=r[2],
        decisions=r[3],
        ph=PageHinkleyState(n=r[4], mean=r[5], cumulative=r[6], minimum=r[7]),
    )
