"""Scenarios: the key k(s) alignment is learned at, the feature encoding φ(s), and the score R(s).

R(s) = p(s) · (1 − m(k(s))): the predictor's confidence discounted by how often engineers have disagreed with
this kind of recommendation. With m₀ = 0 a new key starts from the predictor's own confidence, so a new kind of
fault is never stuck below every threshold.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from npo.types import MAX_TEXT_LEN, InvalidRecord, Prediction, Severity

KEY_FIELDS = ("fault_type", "action", "target_class", "confidence_band", "severity", "cluster")
DEFAULT_KEY_FIELDS = ("fault_type", "action", "target_class", "confidence_band")
CONFIDENCE_BANDS = (0.5, 0.7, 0.9)  # band edges: <0.5, 0.5–0.7, 0.7–0.9, ≥0.9
PARENT_PREFIX = "^parent:"  # reserved: the key rows of parent keys (partial pooling, ``LoopConfig.pool_keys``)
_DIGEST_LEN = 16  # hex digits of the digest that ends a shortened key


def bounded_key(key: str) -> str:
    """``key`` itself when it fits the stored key's :data:`~npo.types.MAX_TEXT_LEN` characters, else its start and a
    digest of the whole, ``<start>~<16 hex digits>``, no longer than that.

    Every field of a prediction fits that limit on its own, but a key joins several (a probed URL as the target can
    take most of it): two different long keys stay two keys, the same one always shortens the same way, and the
    start keeps it readable."""
    if len(key) <= MAX_TEXT_LEN:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LEN]
    return f"{key[: MAX_TEXT_LEN - _DIGEST_LEN - 1].rstrip()}~{digest}"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Which attributes of a prediction form its scenario key (configurable granularity).

    Every key has a *parent*: its first field (with the default fields, the fault type), the family of keys that
    partial pooling (``LoopConfig.pool_keys``) lets a new or thin key borrow its misalignment from. The parent's
    state is stored as one more key row, named :data:`PARENT_PREFIX` + that field (``^parent:disk_full``).
    """

    fields: tuple[str, ...] = DEFAULT_KEY_FIELDS

    def __post_init__(self) -> None:
        if not self.fields:
            raise InvalidRecord("key_fields", "must name at least one field")
        unknown = [f for f in self.fields if f not in KEY_FIELDS]
        if unknown:
            raise InvalidRecord("key_fields", f"unknown field(s) {unknown}; choose from {list(KEY_FIELDS)}")

    def parent(self, key: str) -> str:
        """The parent key of ``key`` (a key this spec formed): :data:`PARENT_PREFIX` + its first field (as written
        in the key, escapes and all)."""
        first = _FIRST_FIELD.match(key)  # always matches, if only the empty start
        return bounded_key(PARENT_PREFIX + (first.group() if first else ""))


_FIRST_FIELD = re.compile(r"(?:[^\\|]|\\.)*", re.DOTALL)  # up to the first "|" that is not escaped


def key_field(text: str) -> str:
    """``text`` as one field of a key: a "\\" or "|" inside it escaped with "\\", so that no field's content can
    pass for a boundary between two fields ("disk|drain" + "x" and "disk" + "drain|x" are two keys). Text without
    either is unchanged, so the keys of ordinary fields read as they always have."""
    if "|" not in text and "\\" not in text:
        return text
    return text.replace("\\", "\\\\").replace("|", "\\|")


_DIGITS = re.compile(r"\d+")


def target_class(prediction: Prediction) -> str:
    """The kind of target: the ``target_class`` label, else the target's shape with digits folded.

    "r12-n04" → "r#-n#": hosts of the same naming pattern share a key.
    """
    explicit = prediction.labels.get("target_class")
    if explicit:
        return explicit
    return _DIGITS.sub("#", prediction.target)


def _band_labels() -> tuple[str, ...]:
    labels, lo = [], 0.0
    for edge in CONFIDENCE_BANDS:
        labels.append("p<0.5" if lo == 0.0 else f"p{lo}-{edge}")
        lo = edge
    return tuple(labels)


_BANDS = tuple(zip(CONFIDENCE_BANDS, _band_labels(), strict=True))
_TOP_BAND = f"p>={CONFIDENCE_BANDS[-1]}"


def confidence_band(confidence: float) -> str:
    """The confidence band label of p ∈ [0, 1]: "p<0.5", "p0.5-0.7", "p0.7-0.9" or "p>=0.9"."""
    for edge, label in _BANDS:
        if confidence < edge:
            return label
    return _TOP_BAND


def _default_key(prediction: Prediction) -> str:
    """:func:`scenario_key` for :data:`DEFAULT_KEY_FIELDS` (the hot path), the same text in one format."""
    labels = prediction.labels
    explicit = labels.get("target_class") if labels else None
    shape = explicit or _DIGITS.sub("#", prediction.target)
    fields = f"{prediction.fault_type}|{prediction.action}|{shape}"
    if "\\" in fields or fields.count("|") != 2:  # rare: a field to escape
        fields = f"{key_field(prediction.fault_type)}|{key_field(prediction.action)}|{key_field(shape)}"
    key = f"{fields}|{confidence_band(prediction.confidence)}"
    return key if len(key) <= MAX_TEXT_LEN else bounded_key(key)


def scenario_key(prediction: Prediction, spec: KeySpec = KeySpec()) -> str:
    """The scenario key k(s): the chosen attributes joined by "|", each as a :func:`key_field` (stable,
    human-readable; shortened by :func:`bounded_key` in the rare case it would be longer than a stored key may be)."""
    if spec.fields == DEFAULT_KEY_FIELDS:
        return _default_key(prediction)
    parts: list[str] = []
    for name in spec.fields:
        if name == "target_class":
            parts.append(target_class(prediction))
        elif name == "confidence_band":
            parts.append(confidence_band(prediction.confidence))
        elif name == "severity":
            parts.append(prediction.severity.value)
        elif name == "cluster":
            parts.append(prediction.cluster)
        else:
            parts.append(str(getattr(prediction, name)))
    return bounded_key("|".join(key_field(part) for part in parts))


def score(confidence: float, misalignment: float) -> float:
    """R(s) = p · (1 − m), in [0, 1] (clipped). Raises :class:`InvalidRecord` for a NaN or infinite p or m."""
    r = confidence * (1.0 - misalignment)
    if 0.0 <= r <= 1.0:  # the common case; a NaN or an infinity among the inputs never lands here
        return r
    if not math.isfinite(confidence):
        raise InvalidRecord("confidence", f"must be a finite number in [0, 1], got {confidence}")
    if not math.isfinite(misalignment):
        raise InvalidRecord("misalignment", f"must be a finite number in [0, 1], got {misalignment}")
    return min(1.0, max(0.0, r))


def score_array(confidence: npt.NDArray[np.float64], misalignment: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Vectorised :func:`score`."""
    return np.clip(confidence * (1.0 - misalignment), 0.0, 1.0)


HASH_BUCKETS = 8
_SEVERITIES = tuple(Severity)
FEATURE_NAMES: tuple[str, ...] = (
    "confidence",
    "logit_confidence",
    *(f"severity_{s.value}" for s in _SEVERITIES),
    "log_hours_to_fault",
    "ttf_unknown",
    *(f"fault_type_h{i}" for i in range(HASH_BUCKETS)),
    *(f"action_h{i}" for i in range(HASH_BUCKETS)),
    *(f"target_class_h{i}" for i in range(HASH_BUCKETS)),
)
N_FEATURES = len(FEATURE_NAMES)


def _bucket(text: str) -> int:
    return zlib.crc32(text.encode("utf-8")) % HASH_BUCKETS


def features(prediction: Prediction) -> npt.NDArray[np.float64]:
    """φ(s): a fixed-length float vector (see :data:`FEATURE_NAMES`); categorical fields are feature-hashed (CRC32)."""
    x = np.zeros(N_FEATURES, dtype=np.float64)
    p = min(max(prediction.confidence, 1e-4), 1 - 1e-4)
    x[0] = prediction.confidence
    x[1] = math.log(p / (1 - p)) / 5.0
    x[2 + _SEVERITIES.index(prediction.severity)] = 1.0
    base = 2 + len(_SEVERITIES)
    if prediction.time_to_fault_s is None:
        x[base + 1] = 1.0
    else:
        x[base] = math.log1p(prediction.time_to_fault_s / 3600.0) / 5.0
    base += 2
    x[base + _bucket(prediction.fault_type)] = 1.0
    x[base + HASH_BUCKETS + _bucket(prediction.action)] = 1.0
    x[base + 2 * HASH_BUCKETS + _bucket(target_class(prediction))] = 1.0
    return x
