"""Scenario key k(s), features φ(s) and the score R(s) = p · (1 − m)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.scoring import (
    FEATURE_NAMES,
    N_FEATURES,
    KeySpec,
    confidence_band,
    features,
    scenario_key,
    score,
    score_array,
    target_class,
)
from npo.types import MAX_TEXT_LEN, InvalidRecord, Prediction, Severity


def _p(**kw: object) -> Prediction:
    base: dict[str, object] = {
        "id": "p1",
        "fault_type": "disk_failure",
        "target": "r12-n04",
        "action": "drain",
        "confidence": 0.8,
    }
    return Prediction(**{**base, **kw})  # type: ignore[arg-type]


def test_default_key_is_fault_action_target_class_and_band() -> None:
    assert scenario_key(_p()) == "disk_failure|drain|r#-n#|p0.7-0.9"


def test_key_is_stable_across_ids_times_and_hosts_of_the_same_shape() -> None:
    a = _p(id="a", target="r12-n04", received_at=1.0, confidence=0.71)
    b = _p(id="b", target="r3-n999", received_at=99.0, confidence=0.89, severity="critical")
    assert scenario_key(a) == scenario_key(b)
    assert scenario_key(a) == scenario_key(a)


def test_key_uses_target_class_label_when_present() -> None:
    p = _p(labels={"target_class": "storage-node"})
    assert target_class(p) == "storage-node"
    assert scenario_key(p) == "disk_failure|drain|storage-node|p0.7-0.9"
    assert scenario_key(_p(target="web-01")) != scenario_key(_p(target="r1-n1"))


def test_key_changes_with_the_confidence_band() -> None:
    keys = {scenario_key(_p(confidence=c)) for c in (0.1, 0.5, 0.7, 0.9)}
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("confidence", "band"),
    [
        (0.0, "p<0.5"),
        (0.4999, "p<0.5"),
        (0.5, "p0.5-0.7"),
        (0.6999, "p0.5-0.7"),
        (0.7, "p0.7-0.9"),
        (0.8999, "p0.7-0.9"),
        (0.9, "p>=0.9"),
        (1.0, "p>=0.9"),
    ],
)
def test_confidence_band_edges(confidence: float, band: str) -> None:
    assert confidence_band(confidence) == band


def test_configurable_key_fields() -> None:
    p = _p(severity=Severity.CRITICAL, labels={"cluster": "east"})
    assert scenario_key(p, KeySpec(("fault_type", "severity", "cluster"))) == "disk_failure|critical|east"
    assert scenario_key(p, KeySpec(("action",))) == "drain"
    with pytest.raises(InvalidRecord, match="key_fields"):
        KeySpec(())
    with pytest.raises(InvalidRecord, match="key_fields"):
        KeySpec(("fault_type", "colour"))


LONG = "https://api.example.com/v1/health?" + "&".join(f"param_{c}=value_{c}" for c in "abcdefghijklmnopqrstuvwxyzA")


@pytest.mark.parametrize(
    "spec", [KeySpec(), KeySpec(("fault_type", "action", "target_class", "confidence_band", "severity", "cluster"))]
)
def test_a_key_longer_than_a_stored_key_may_be_is_shortened_and_stays_distinct(spec: KeySpec) -> None:
    fault = "ProbeFailedHTTPEndpointDown"
    long_a, long_b = _p(fault_type=fault, target=LONG), _p(fault_type=fault, target=LONG + "&z=1")
    assert len(LONG) <= MAX_TEXT_LEN < len(f"{fault}|drain|{target_class(long_a)}|p0.7-0.9")  # every field fits
    key_a, key_b = scenario_key(long_a, spec), scenario_key(long_b, spec)
    assert len(key_a) <= MAX_TEXT_LEN and len(key_b) <= MAX_TEXT_LEN
    assert key_a != key_b  # the same first 483 characters, different keys
    assert scenario_key(_p(id="again", fault_type=fault, target=LONG), spec) == key_a  # the same one every time
    assert key_a.startswith(f"{fault}|") and key_a[-17] == "~"  # readable start, then the digest
    assert "~" not in scenario_key(_p(), spec)  # a key that fits is left as it is


def test_a_parent_key_is_shortened_like_any_key() -> None:
    spec = KeySpec()
    key = scenario_key(_p(fault_type="f" * MAX_TEXT_LEN), spec)
    parent = spec.parent(key)
    assert len(parent) <= MAX_TEXT_LEN and parent.startswith("^parent:fff") and parent != spec.parent("g|x")


@pytest.mark.parametrize("spec", [KeySpec(), KeySpec(("fault_type", "action", "severity"))])
def test_a_bar_or_backslash_inside_a_field_cannot_make_two_kinds_one_key(spec: KeySpec) -> None:
    """Fields are joined by "|": a "|" (or a "\\") inside one is escaped, so moving it across a field boundary
    gives another key, and the parent is still the whole first field."""
    pairs = [
        (_p(fault_type="disk|drain", action="x"), _p(fault_type="disk", action="drain|x")),
        (_p(fault_type="disk\\", action="x"), _p(fault_type="disk", action="\\x")),
        (_p(fault_type="disk\\|drain", action="x"), _p(fault_type="disk\\", action="drain|x")),
    ]
    for a, b in pairs:
        assert scenario_key(a, spec) != scenario_key(b, spec), (a.fault_type, a.action)
        assert spec.parent(scenario_key(a, spec)) != spec.parent(scenario_key(b, spec))
    key = scenario_key(_p(fault_type="disk|full", action="drain|now"), spec)
    assert key.startswith("disk\\|full|drain\\|now|")
    assert spec.parent(key) == "^parent:disk\\|full"
    assert scenario_key(_p(), spec) == scenario_key(_p(), spec).replace("\\", "")  # plain fields: as before


def test_score_is_confidence_times_agreement() -> None:
    assert score(0.8, 0.0) == pytest.approx(0.8)  # a new key starts from the predictor's confidence
    assert score(0.8, 0.25) == pytest.approx(0.6)
    assert score(0.8, 1.0) == 0.0
    assert np.allclose(score_array(np.array([0.8, 0.5]), np.array([0.25, 0.5])), [0.6, 0.25])


@settings(deadline=None)
@given(p=st.floats(0.0, 1.0), m=st.floats(0.0, 1.0))
def test_score_in_unit_interval_and_equals_product(p: float, m: float) -> None:
    r = score(p, m)
    assert 0.0 <= r <= 1.0
    assert r == pytest.approx(p * (1.0 - m))
    assert r <= p  # disagreement can only lower the score
    assert float(score_array(np.array([p]), np.array([m]))[0]) == pytest.approx(r)


@settings(max_examples=50, deadline=None)
@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
    m=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
)
def test_score_array_matches_scalar(p: list[float], m: list[float]) -> None:
    k = min(len(p), len(m))
    got = score_array(np.array(p[:k]), np.array(m[:k]))
    assert np.all((got >= 0.0) & (got <= 1.0))
    assert np.allclose(got, [score(a, b) for a, b in zip(p[:k], m[:k], strict=True)])


_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Cc", "Zl", "Zp")),
    min_size=1,
    max_size=30,
).filter(lambda t: t.strip() == t)


@settings(max_examples=200, deadline=None)
@given(
    fault=_text,
    target=_text,
    action=_text,
    confidence=st.floats(0.0, 1.0),
    severity=st.sampled_from(list(Severity)),
    ttf=st.none() | st.floats(0.0, 1e12),
)
def test_features_have_fixed_length_and_are_finite(
    fault: str, target: str, action: str, confidence: float, severity: Severity, ttf: float | None
) -> None:
    x = features(Prediction("p", fault, target, action, confidence, severity=severity, time_to_fault_s=ttf))
    assert x.shape == (N_FEATURES,) == (len(FEATURE_NAMES),)
    assert x.dtype == np.float64
    assert np.all(np.isfinite(x))
    assert x[0] == confidence
    # exactly one severity flag, one ttf slot in use, one hash bucket per categorical field
    sev = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("severity_")]
    assert x[sev].sum() == 1.0
    assert x[FEATURE_NAMES.index(f"severity_{severity.value}")] == 1.0
    assert x[FEATURE_NAMES.index("ttf_unknown")] == (1.0 if ttf is None else 0.0)
    for prefix in ("fault_type_h", "action_h", "target_class_h"):
        idx = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(prefix)]
        assert x[idx].sum() == 1.0


def test_features_are_deterministic_and_separate_fields() -> None:
    a = features(_p(time_to_fault_s=3600.0))
    assert np.array_equal(a, features(_p(id="other", time_to_fault_s=3600.0)))
    assert a[FEATURE_NAMES.index("log_hours_to_fault")] == pytest.approx(np.log(2.0) / 5.0)
    assert a[FEATURE_NAMES.index("logit_confidence")] == pytest.approx(np.log(0.8 / 0.2) / 5.0)
    assert not np.array_equal(a, features(_p(confidence=0.3, time_to_fault_s=3600.0)))


@pytest.mark.parametrize(
    ("p", "m", "field"),
    [
        (float("nan"), 0.0, "confidence"),
        (float("inf"), 0.0, "confidence"),
        (0.8, float("nan"), "misalignment"),
        (0.8, -float("inf"), "misalignment"),
    ],
)
def test_score_refuses_non_finite_inputs(p: float, m: float, field: str) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        score(p, m)  # was 0.0 or 1.0, silently
    assert excinfo.value.field == field
