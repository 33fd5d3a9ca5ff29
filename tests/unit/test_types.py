"""Domain records: invalid ones cannot be built, and the error names the offending field."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npo.types import Decision, FeedbackEvent, FeedbackKind, InvalidRecord, Outcome, Prediction, Severity, Verdict

BASE: dict[str, object] = {
    "id": "pred-1",
    "fault_type": "disk_failure",
    "target": "r12-n04",
    "action": "drain",
    "confidence": 0.8,
}


def _prediction(**overrides: object) -> Prediction:
    return Prediction(**{**BASE, **overrides})  # type: ignore[arg-type]


def _field_of(**overrides: object) -> str:
    with pytest.raises(InvalidRecord) as excinfo:
        _prediction(**overrides)
    return excinfo.value.field


def test_a_valid_prediction_is_normalised() -> None:
    p = _prediction(confidence=1, severity="critical", time_to_fault_s=60, labels={"cluster": "east"})
    assert p.confidence == 1.0 and isinstance(p.confidence, float)
    assert p.severity is Severity.CRITICAL
    assert p.time_to_fault_s == 60.0
    assert isinstance(p.labels, MappingProxyType)
    assert p.cluster == "east"
    assert _prediction().cluster == "r12"
    assert _prediction(target="db.prod").cluster == "db"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": -0.01}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"confidence": True}, "confidence"),
        ({"confidence": "0.5"}, "confidence"),
        ({"severity": "urgent"}, "severity"),
        ({"target": ""}, "target"),
        ({"target": "   "}, "target"),
        ({"target": 7}, "target"),
        ({"id": ""}, "id"),
        ({"id": "x" * 201}, "id"),
        ({"fault_type": ""}, "fault_type"),
        ({"action": None}, "action"),
        ({"labels": {"x": 1}}, "labels.x"),
        ({"labels": {"ok": "fine", "x": None}}, "labels.x"),
        ({"labels": ["x"]}, "labels"),
        ({"time_to_fault_s": -1.0}, "time_to_fault_s"),
        ({"time_to_fault_s": float("inf")}, "time_to_fault_s"),
        ({"time_to_fault_s": "soon"}, "time_to_fault_s"),
        ({"channel": ""}, "channel"),
        ({"received_at": float("nan")}, "received_at"),
    ],
)
def test_prediction_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    assert _field_of(**overrides) == field


def test_error_message_starts_with_the_field() -> None:
    with pytest.raises(InvalidRecord, match=r"^confidence: must be in \[0, 1\]"):
        _prediction(confidence=1.5)


def test_names_lose_surrounding_blanks() -> None:
    """fault_type, target and action are names the guardrails and the scenario key compare exactly."""
    p = _prediction(fault_type=" disk_failure\t", target="r12-n04\n", action="drain ")
    assert (p.fault_type, p.target, p.action) == ("disk_failure", "r12-n04", "drain")
    assert p.fingerprint() == _prediction().fingerprint()
    assert _prediction(target=" r12-n04").cluster == "r12"
    assert _field_of(action=" \n ") == "action"
    assert _prediction(id=" p-1\t").id == "p-1" and _field_of(id=" \n ") == "id"  # an id is compared exactly too
    assert _prediction(channel="C0INCIDENT ").channel == "C0INCIDENT" and _field_of(channel=" ") == "channel"


@given(st.text(alphabet="ab.-", min_size=1, max_size=8))
def test_cluster_of_a_target_is_its_first_non_empty_segment(target: str) -> None:
    """The blast-radius domain without a ``cluster`` label: the first non-empty dash/dot segment, else the target
    itself (``--`` is a cluster of its own); the fast path for the common shape agrees with the plain rule."""
    segments = [part for part in target.replace(".", "-").split("-") if part]
    expected = segments[0] if segments else target
    assert _prediction(target=target).cluster == expected


def test_time_to_fault_zero_is_allowed() -> None:
    assert _prediction(time_to_fault_s=0).time_to_fault_s == 0.0


def test_a_negative_zero_is_zero() -> None:
    """``-0.0`` passes the range checks, and was kept: shown as ``-0.000`` (confidence) and ``-0 s``."""
    p = _prediction(confidence=-0.0, time_to_fault_s=-0.0)
    assert str(p.confidence) == "0.0" and str(p.time_to_fault_s) == "0.0"


def test_labels_cannot_be_mutated_through_the_record() -> None:
    labels = {"cluster": "east"}
    p = _prediction(labels=labels)
    labels["cluster"] = "west"
    assert p.labels["cluster"] == "east"
    with pytest.raises(TypeError):
        p.labels["cluster"] = "west"  # type: ignore[index]


def test_fingerprint_ignores_id_and_confidence() -> None:
    a = _prediction(id="a", confidence=0.2)
    b = _prediction(id="b", confidence=0.9)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != _prediction(action="reboot").fingerprint()


def _decision(**overrides: object) -> Decision:
    base: dict[str, object] = {
        "prediction_id": "p",
        "key": "k",
        "verdict": "surface",
        "rule": "all_rules_passed",
        "reason": "",
        "confidence": 0.9,
        "misalignment": 0.0,
        "score": 0.9,
        "threshold": 0.5,
        "arm": 0,
        "decided_at": 0.0,
    }
    return Decision(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"score": 1.2}, "score"), ({"threshold": -1.0}, "threshold"), ({"arm": -1}, "arm"), ({"arm": True}, "arm")],
)
def test_decision_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        _decision(**overrides)
    assert excinfo.value.field == field


def test_decision_surfaced() -> None:
    assert _decision(verdict=Verdict.SURFACE).surfaced
    assert _decision(verdict=Verdict.DIGEST).surfaced
    assert not _decision(verdict=Verdict.SUPPRESS).surfaced
    assert not _decision(verdict=Verdict.BLOCK, arm=None, threshold=None).surfaced


def test_feedback_and_outcome_validation() -> None:
    ev = FeedbackEvent("p", "alice", "like", 1, "req-1")  # type: ignore[arg-type]
    assert ev.kind is FeedbackKind.LIKE and ev.at == 1.0
    with pytest.raises(InvalidRecord) as excinfo:
        FeedbackEvent("p", "alice", "love", 1.0, "req-1")  # type: ignore[arg-type]
    assert excinfo.value.field == "kind"
    with pytest.raises(InvalidRecord) as excinfo:
        FeedbackEvent("p", "", FeedbackKind.LIKE, 1.0, "req-1")
    assert excinfo.value.field == "operator"
    with pytest.raises(InvalidRecord) as excinfo:
        Outcome("p", 1, 0.0)  # type: ignore[arg-type]
    assert excinfo.value.field == "real_fault"
