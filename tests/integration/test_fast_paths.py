"""The hot-path shortcuts of decide_batch give the same values as the general definitions."""

from __future__ import annotations

import pytest

from npo.scoring import CONFIDENCE_BANDS, DEFAULT_KEY_FIELDS, KeySpec, confidence_band, scenario_key, target_class
from npo.types import Prediction


def _reference_band(confidence: float) -> str:
    lo = 0.0
    for edge in CONFIDENCE_BANDS:
        if confidence < edge:
            return "p<0.5" if lo == 0.0 else f"p{lo}-{edge}"
        lo = edge
    return f"p>={CONFIDENCE_BANDS[-1]}"


def _reference_cluster(p: Prediction) -> str:
    explicit = (p.labels.get("cluster") or "").strip()
    if explicit:
        return explicit
    segments = [part for part in p.target.replace(".", "-").split("-") if part]
    return segments[0] if segments else p.target


@pytest.mark.parametrize("confidence", [0.0, 0.1, 0.4999, 0.5, 0.69, 0.7, 0.8999, 0.9, 1.0])
@pytest.mark.parametrize(
    ("target", "labels"),
    [
        ("r12-n04", {}),
        ("-lead", {}),
        ("db.7.x", {"cluster": "c9"}),
        ("host9", {"target_class": "gpu"}),
        ("a-b", {"target_class": "", "cluster": ""}),
        ("..x-y", {"cluster": " "}),
        ("--", {}),
    ],
)
def test_default_key_cluster_and_band_match_the_definitions(
    confidence: float, target: str, labels: dict[str, str]
) -> None:
    p = Prediction(id="p", fault_type="disk", target=target, action="drain", confidence=confidence, labels=labels)
    general = KeySpec(fields=(*DEFAULT_KEY_FIELDS, "cluster"))
    parts = ["disk", "drain", target_class(p), _reference_band(confidence)]
    assert confidence_band(confidence) == _reference_band(confidence)
    assert scenario_key(p) == "|".join(parts)
    assert scenario_key(p, KeySpec(fields=DEFAULT_KEY_FIELDS)) == "|".join(parts)
    assert scenario_key(p, general) == "|".join([*parts, _reference_cluster(p)])
    assert p.cluster == _reference_cluster(p) == p.cluster  # memoised on the second call
