"""Rows ↔ ``npo`` records. Pure functions; the column order of each SELECT is defined here.

Rows read back from our own database were validated when they were written (by the record's constructor and
by the schema's CHECK constraints), so they are decoded with :func:`trusted`, which builds the frozen record
without running its validation again; the Hypothesis round-trip tests (``tests/integration/test_roundtrip.py``)
prove that the records come back equal. Records built from anything else (requests, files, other programs)
must go through their validating constructors.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from npo.loop import AppliedFeedback
from npo.misalignment import KeyAlignment
from npo.monitor import MonitorState, PageHinkleyState
from npo.retrain import LogisticModel
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome, Prediction, Severity, Verdict, trusted_decision

Row = tuple[Any, ...]
T = TypeVar("T")

# Columns of the ``decisions`` table (one row per prediction and its decision, see storage/migrations.py).
PREDICTION_COLS = (
    "prediction_id, fault_type, target, action, confidence, severity, time_to_fault_s, labels, prediction_channel, "
    "received_at"
)
DECISION_COLS = (
    "prediction_id, key, verdict, rule, reason, decision_confidence, misalignment, score, threshold, arm, decided_at"
)
FEEDBACK_COLS = (
    "prediction_id, operator, kind, at, request_id, reason, key, y, weight, key_n_before, arm, reward, replaces, "
    "peer_credited"
)
KEY_COLS = "key, m, n, weight_sum, updated_at"
# The condition that the feedback row ``f`` is a person's effective answer (schema m009; the ``effective_answers``
# view is the same rule): no later answer of the same person on its recommendation, and for the system's skip, no
# later answer naming it in ``replaces``. Both run on the ``feedback_answers`` index (prediction, operator, …).
IS_EFFECTIVE = (
    "NOT EXISTS (SELECT 1 FROM feedback g WHERE g.prediction_id = f.prediction_id AND g.operator = f.operator "
    "AND g.id > f.id) AND (f.operator <> 'system' OR NOT EXISTS (SELECT 1 FROM feedback g "
    "WHERE g.prediction_id = f.prediction_id AND g.id > f.id AND g.replaces = f.request_id))"
)
TRUST_COLS = "operator, agree, disagree, n_outcome, n_peer"
OUTCOME_COLS = "prediction_id, real_fault, at, source, recorded_at"
MODEL_COLS = "version, weights, bias, trained_at, n_train, metrics"
MONITOR_COLS = "last_trigger_at, open_proposal, matches, decisions, ph_n, ph_mean, ph_cumulative, ph_minimum"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
_SETTERS: dict[type, dict[str, Callable[[object, object], None]]] = {}
_ORDERED: dict[type, tuple[Callable[[object, object], None], ...]] = {}
VERDICTS: Mapping[str, Verdict] = MappingProxyType({v.value: v for v in Verdict})
FEEDBACK_KINDS: Mapping[str, FeedbackKind] = MappingProxyType({k.value: k for k in FeedbackKind})
SEVERITIES: Mapping[str, Severity] = MappingProxyType({s.value: s for s in Severity})


_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # what the encoder uses for ensure_ascii=False


def dumps(value: object) -> str:
    """Compact JSON (non-JSON values such as enums fall back to ``str``): the same text as
    ``json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)``. A flat dict of strings, finite
    floats, ints, booleans and None (every audit detail the loop writes) is formatted directly; anything else
    goes through one shared encoder."""
    if type(value) is dict:
        parts: list[str] = []
        for k, v in value.items():
            t = type(v)
            if type(k) is not str:
                return _ENCODER.encode(value)
            if t is str:
                text = _encode_str(v)
            elif t is float:
                if not math.isfinite(v):
                    return _ENCODER.encode(value)
                text = float.__repr__(v)
            elif v is None:
                text = "null"
            elif t is bool:
                text = "true" if v else "false"
            elif t is int:
                text = int.__repr__(v)
            else:
                return _ENCODER.encode(value)
            parts.append(f"{_encode_str(k)}:{text}")
        return "{" + ",".join(parts) + "}"
    return _ENCODER.encode(value)


def _setters(cls: type) -> dict[str, Callable[[object, object], None]]:
    setters = _SETTERS.get(cls)
    if setters is None:
        if not dataclasses.is_dataclass(cls) or not hasattr(cls, "__slots__"):
            raise TypeError(f"trusted() needs a slotted dataclass, got {cls.__name__}")
        setters = {f.name: getattr(cls, f.name).__set__ for f in dataclasses.fields(cls)}
        _SETTERS[cls] = setters
        _ORDERED[cls] = tuple(setters.values())
    return setters


def trusted(cls: type[T], **fields: object) -> T:
    """Build the frozen, slotted dataclass ``cls`` from already-valid ``fields`` without running ``__init__`` /
    ``__post_init__`` (no validation, no normalisation). Every field must be given, already in its normalised
    form (enums as enum members, mappings read-only). Only for rows read back from our own database."""
    setters = _setters(cls)
    if len(fields) != len(setters):
        missing = sorted(set(setters) - set(fields)) or sorted(set(fields) - set(setters))
        raise TypeError(f"trusted({cls.__name__}) needs exactly its fields; mismatch on {missing}")
    obj: T = object.__new__(cls)
    for name, value in fields.items():
        setters[name](obj, value)
    return obj


def trusted_row(cls: type[T], values: Sequence[object]) -> T:
    """:func:`trusted` with the field values in declaration order (the hot path: no keyword dict)."""
    ordered = _ORDERED.get(cls)
    if ordered is None:
        _setters(cls)
        ordered = _ORDERED[cls]
    if len(values) != len(ordered):
        raise TypeError(f"trusted_row({cls.__name__}) needs {len(ordered)} values, got {len(values)}")
    obj: T = object.__new__(cls)
    for setter, value in zip(ordered, values, strict=True):
        setter(obj, value)
    return obj


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
    labels: dict[str, str] = json.loads(r[7])
    return trusted_row(
        Prediction, (r[0], r[1], r[2], r[3], r[4], SEVERITIES[r[5]], r[6], MappingProxyType(labels), r[8], r[9])
    )


def decision_row(seq: int, p: Prediction, d: Decision, channel: str) -> Row:
    """The ``decisions`` row of ``p`` and its decision ``d`` (see ``storage.statements.INSERT_DECISION``)."""
    return (
        seq,
        p.id,
        p.fault_type,
        p.target,
        p.action,
        p.confidence,
        p.severity.value,
        p.time_to_fault_s,
        dumps(dict(p.labels)) if p.labels else "{}",
        p.channel,
        p.received_at,
        p.fingerprint(),
        p.cluster,
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


def decision_from_values(prediction_id: str, r: Row, at: int) -> Decision:
    """The :class:`Decision` of ``prediction_id`` from ``r[at:at + 10]`` (the columns of :data:`DECISION_COLS`
    after ``prediction_id``), unchecked: the values were checked on the way in (feedback hot path)."""
    return trusted_decision(
        prediction_id, r[at], VERDICTS[r[at + 1]], r[at + 2], r[at + 3], r[at + 4], r[at + 5], r[at + 6],
        r[at + 7], r[at + 8], r[at + 9],
    )  # fmt: skip


def decision_from_row(r: Row) -> Decision:
    return decision_from_values(r[0], r, 1)


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
        a.peer_credited,
    )


def feedback_from_row(r: Row) -> AppliedFeedback:
    event = trusted_row(FeedbackEvent, (r[0], r[1], FEEDBACK_KINDS[r[2]], r[3], r[4], r[5]))
    credited = r[13]  # stored 0/1, NULL for an answer stored before schema m018
    return trusted_row(
        AppliedFeedback,
        (event, r[6], r[7], r[8], r[9], r[10], r[11], r[12], None if credited is None else bool(credited)),
    )


def key_from_row(r: Row) -> KeyAlignment:
    return trusted_row(KeyAlignment, r)


def key_params(k: KeyAlignment) -> Row:
    return (k.key, k.m, k.n, k.weight_sum, k.updated_at)


def trust_from_row(r: Row) -> OperatorTrust:
    return trusted_row(OperatorTrust, r)


def trust_params(t: OperatorTrust) -> Row:
    return (t.operator, t.agree, t.disagree, t.n_outcome, t.n_peer)


def outcome_from_row(r: Row) -> Outcome:
    return trusted_row(Outcome, (r[0], bool(r[1]), r[2], r[3], r[4]))


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
