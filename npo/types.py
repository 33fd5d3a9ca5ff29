"""Domain records shared by every part of NPO: predictions, decisions, feedback and outcomes.

All records are frozen dataclasses validated on construction, so an invalid one cannot exist. Times are
Unix seconds (float, UTC) supplied by the caller; nothing here reads the clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeGuard


class InvalidRecord(ValueError):
    """A record failed validation. ``field`` names the offending field (dotted for nested ones)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class FeedbackKind(StrEnum):
    """What an engineer did with a surfaced recommendation."""

    OVERRIDE = "override"
    LIKE = "like"
    NEUTRAL = "neutral"
    SKIPPED = "skipped"


class Verdict(StrEnum):
    """What the loop decided for one prediction."""

    SURFACE = "surface"  # posted to the channel
    SUPPRESS = "suppress"  # R(s) < tau: below the threshold drawn by the bandit
    BLOCK = "block"  # a Safety Policy Engine rule refused it
    DIGEST = "digest"  # allowed, but folded into a digest (channel cap); never dropped
    DUPLICATE = "duplicate"  # same id or fingerprint as an earlier prediction


MAX_ID_LEN = 200
MAX_TEXT_LEN = 500
# The fields of a prediction its sender gives (all but ``id`` and NPO's ``received_at``), in declaration order
# Labels NPO reads as names: ``cluster`` (the blast-radius domain) and ``target_class`` (part of the scenario key).
# Like the other names (:func:`_require_name`) their values may hold no control character: one is refused naming the
# label, where a NUL in ``target_class`` used to fail the decision's key check later (a 500).
NAME_LABELS = ("cluster", "target_class")
SENT_FIELDS = ("fault_type", "target", "action", "confidence", "severity", "time_to_fault_s", "labels", "channel")


# Control characters: C0 (tab and line feed included), DEL, C1, and the line and paragraph separators. A name holding
# one writes a line of its own into a log, a terminal escape (``\x1b[2J``), a bell, or breaks the line it is shown on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _plain(value: object, max_len: int) -> TypeGuard[str]:
    """The common case, which needs no other check: a non-empty string of at most ``max_len`` characters, with no
    surrounding blanks and only printable characters (so no NUL and no other control character)."""
    return (
        type(value) is str
        and 0 < len(value) <= max_len
        and not value[0].isspace()
        and not value[-1].isspace()
        and value.isprintable()
    )


def _require_text(name: str, value: object, *, max_len: int = MAX_TEXT_LEN) -> str:
    if _plain(value, max_len):
        return value
    if not isinstance(value, str):
        raise InvalidRecord(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRecord(name, "must not be empty")
    if len(value) > max_len:
        raise InvalidRecord(name, f"must be at most {max_len} characters, got {len(value)}")
    if "\0" in value:
        # SQLite's length() and every C string stop at a NUL: "\u0000p-1" is 0 characters long to the database,
        # whose CHECK then refuses it (and the whole batch with it) as a write error, retried in vain
        raise InvalidRecord(name, "must not contain a NUL character (\\u0000)")
    return value


def _require_name(name: str, value: object, *, max_len: int = MAX_TEXT_LEN) -> str:
    """:func:`_require_text` for a name that rules, keys and lookups compare exactly (a prediction's id, fault type,
    target, action, channel): surrounding blanks are dropped, so ``"reboot "`` is the action ``reboot`` for every
    guardrail that names it, and ``" p-1"`` is the prediction ``p-1`` (the same id, not a second prediction). What
    is left must hold no control character (:data:`_CONTROL`): a name is shown in Slack and written to logs as it is.
    """
    if _plain(value, max_len):
        return value
    text = _require_text(name, value, max_len=max_len).strip()
    if (control := _CONTROL.search(text)) is not None:
        shown = f"\\u{ord(control.group()):04x}"
        raise InvalidRecord(name, f"must not contain a control character ({shown} at position {control.start()})")
    return text


def _require_unit(name: str, value: object) -> float:
    """A number in [0, 1] as a float; ``-0.0`` (JSON ``-0.0``) is 0.0, so that it is never shown as ``-0.000``."""
    if type(value) is float and 0.0 <= value <= 1.0:  # the common case, checked cheaply (NaN fails the range)
        return value or 0.0  # -0.0 is false: 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord(name, f"must be a number in [0, 1], got {type(value).__name__}")
    number = _float(name, value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise InvalidRecord(name, f"must be in [0, 1], got {value!r}")
    return number or 0.0


def _require_time(name: str, value: object) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(_float(name, value)):
        raise InvalidRecord(name, f"must be a finite number of seconds, got {value!r}")
    return float(value)


def _float(name: str, value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float (10**400)
        raise InvalidRecord(name, f"must be a finite number, got an integer of {len(str(value))} digits") from None


# Prediction.cluster of a target without a ``cluster`` label (a pure function of the target string), memoised: the
# loop asks for it several times per prediction. Bounded: cleared when full.
_CLUSTER_OF_TARGET: dict[str, str] = {}
_CLUSTER_MEMO_SIZE = 65536


def _first_segment(target: str) -> str:
    """The first non-empty dash/dot segment of ``target`` (``target`` itself when it has none)."""
    text = target.replace(".", "-") if "." in target else target
    head, dash, _ = text.partition("-")
    if head or not dash:  # the common case: the segment before the first separator
        return head or target
    return next((part for part in text.split("-") if part), target)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One fault prediction as emitted by a predictor.

    ``confidence`` is the predictor's probability p(s) in [0, 1]; ``time_to_fault_s`` is the predicted time
    until the fault in seconds (None when unknown); ``received_at`` is when NPO received it (Unix seconds).
    ``labels`` are free-form string pairs (``cluster`` is used by the blast-radius rule, ``target_class``
    by the scenario key when present).
    """

    id: str
    fault_type: str
    target: str
    action: str
    confidence: float
    severity: Severity = Severity.WARNING
    time_to_fault_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    channel: str | None = None
    received_at: float = 0.0

    def __post_init__(self) -> None:
        for name in ("id", "fault_type", "target", "action"):
            value = getattr(self, name)
            text = _require_name(name, value, max_len=MAX_ID_LEN if name == "id" else MAX_TEXT_LEN)
            if text is not value:
                object.__setattr__(self, name, text)
        object.__setattr__(self, "confidence", _require_unit("confidence", self.confidence))
        try:
            object.__setattr__(self, "severity", Severity(self.severity))
        except ValueError:
            allowed = ", ".join(s.value for s in Severity)
            raise InvalidRecord("severity", f"must be one of {allowed}, got {self.severity!r}") from None
        if self.time_to_fault_s is not None:
            ttf = _require_time("time_to_fault_s", self.time_to_fault_s)
            if ttf < 0:
                raise InvalidRecord("time_to_fault_s", f"must be >= 0, got {ttf}")
            object.__setattr__(self, "time_to_fault_s", ttf or 0.0)  # -0.0 (shown as "-0 s") is 0.0
        if not isinstance(self.labels, Mapping):
            raise InvalidRecord("labels", f"must be an object of strings, got {type(self.labels).__name__}")
        for k, v in self.labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidRecord(f"labels.{k}", "label keys and values must be strings")
        for name in NAME_LABELS:  # labels read as names: no control character, as in the other names
            value = self.labels.get(name)
            if value and not value.isprintable() and (control := _CONTROL.search(value.strip())) is not None:
                shown = f"\\u{ord(control.group()):04x}"
                raise InvalidRecord(
                    f"labels.{name}", f"must not contain a control character ({shown} at position {control.start()})"
                )
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        if self.channel is not None:  # a Slack channel id, which Slack does not trim (channel_not_found)
            channel = _require_name("channel", self.channel, max_len=MAX_ID_LEN)
            if channel is not self.channel:
                object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "received_at", _require_time("received_at", self.received_at))

    @property
    def cluster(self) -> str:
        """The blast-radius domain: the ``cluster`` label (without surrounding blanks), else the target's first
        non-empty dash/dot segment."""
        explicit = self.labels.get("cluster")
        if explicit and not explicit.isspace():
            return explicit.strip()
        target = self.target
        cluster = _CLUSTER_OF_TARGET.get(target)
        if cluster is None:  # the first non-empty segment: ".web-1" is in cluster "web", not a cluster of its own
            cluster = _first_segment(target)
            if len(_CLUSTER_OF_TARGET) >= _CLUSTER_MEMO_SIZE:
                _CLUSTER_OF_TARGET.clear()
            _CLUSTER_OF_TARGET[target] = cluster
        return cluster

    def fingerprint(self) -> str:
        """Identity of "the same prediction" regardless of id: fault type, target and action."""
        return f"{self.fault_type}\x1f{self.target}\x1f{self.action}"

    def differs_from(self, other: Prediction) -> tuple[str, ...]:
        """The fields the sender gave that differ between this prediction and ``other`` (in declaration order; empty
        when they say the same): an id sent again with another body is a conflict, not a duplicate.
        ``received_at`` is NPO's, not the sender's, and is not compared."""
        return tuple(name for name in SENT_FIELDS if getattr(self, name) != getattr(other, name))


@dataclass(frozen=True, slots=True)
class Decision:
    """The loop's decision for one prediction, with everything needed to explain it later.

    ``arm`` is the index of the threshold drawn by the bandit (None when the SPE blocked first);
    ``rule`` names the policy rule behind a block or digest, ``"threshold"`` for a suppression,
    and ``"all_rules_passed"`` otherwise.
    """

    prediction_id: str
    key: str
    verdict: Verdict
    rule: str
    reason: str
    confidence: float
    misalignment: float
    score: float
    threshold: float | None
    arm: int | None
    decided_at: float

    def __post_init__(self) -> None:
        _require_text("prediction_id", self.prediction_id, max_len=MAX_ID_LEN)
        _require_text("key", self.key)
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        _require_text("rule", self.rule)
        for name in ("confidence", "misalignment", "score"):
            object.__setattr__(self, name, _require_unit(name, getattr(self, name)))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", _require_unit("threshold", self.threshold))
        if self.arm is not None and (isinstance(self.arm, bool) or not isinstance(self.arm, int) or self.arm < 0):
            raise InvalidRecord("arm", f"must be a non-negative integer, got {self.arm!r}")
        object.__setattr__(self, "decided_at", _require_time("decided_at", self.decided_at))

    @property
    def surfaced(self) -> bool:
        return self.verdict in (Verdict.SURFACE, Verdict.DIGEST)


# The slot descriptors of Decision's fields, in declaration order: setting through them skips the frozen check.
(
    _SET_PREDICTION_ID,
    _SET_KEY,
    _SET_VERDICT,
    _SET_RULE,
    _SET_REASON,
    _SET_CONFIDENCE,
    _SET_MISALIGNMENT,
    _SET_SCORE,
    _SET_THRESHOLD,
    _SET_ARM,
    _SET_DECIDED_AT,
) = tuple(getattr(Decision, name).__set__ for name in Decision.__dataclass_fields__)


def trusted_decision(
    prediction_id: str,
    key: str,
    verdict: Verdict,
    rule: str,
    reason: str,
    confidence: float,
    misalignment: float,
    score: float,
    threshold: float | None,
    arm: int | None,
    decided_at: float,
) -> Decision:
    """A :class:`Decision` built without ``__post_init__``'s checks, for values that are valid by construction:
    computed by the loop from validated inputs, or read back from the store that validated them on the way in.
    Anything else goes through ``Decision(...)``. (Hot: one decision per prediction, hence no loop here.)"""
    decision: Decision = object.__new__(Decision)
    _SET_PREDICTION_ID(decision, prediction_id)
    _SET_KEY(decision, key)
    _SET_VERDICT(decision, verdict)
    _SET_RULE(decision, rule)
    _SET_REASON(decision, reason)
    _SET_CONFIDENCE(decision, confidence)
    _SET_MISALIGNMENT(decision, misalignment)
    _SET_SCORE(decision, score)
    _SET_THRESHOLD(decision, threshold)
    _SET_ARM(decision, arm)
    _SET_DECIDED_AT(decision, decided_at)
    return decision


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One engineer's answer to one surfaced recommendation.

    ``request_id`` identifies the source request (a hash of the signed Slack request, or ``skip:<id>``);
    the same request id is recorded once. ``operator`` is the engineer's id (``"system"`` for skips).
    """

    prediction_id: str
    operator: str
    kind: FeedbackKind
    at: float
    request_id: str
    reason: str = ""

    def __post_init__(self) -> None:
        _require_text("prediction_id", self.prediction_id, max_len=MAX_ID_LEN)
        _require_text("operator", self.operator, max_len=MAX_ID_LEN)
        try:
            object.__setattr__(self, "kind", FeedbackKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in FeedbackKind)
            raise InvalidRecord("kind", f"must be one of {allowed}, got {self.kind!r}") from None
        object.__setattr__(self, "at", _require_time("at", self.at))
        _require_text("request_id", self.request_id, max_len=MAX_ID_LEN)
        if not isinstance(self.reason, str) or len(self.reason) > 3000:
            raise InvalidRecord("reason", "must be a string of at most 3000 characters")


@dataclass(frozen=True, slots=True)
class Outcome:
    """Whether a predicted fault really happened (``real_fault``), known at ``at`` (Unix seconds: when the fault
    was resolved or ruled out, as its source reports). ``recorded_at``: when NPO received it (None: not noted,
    taken as ``at``) — an outcome may arrive long after its ``at``, and the weekly summary counts each outcome in
    the period it arrived, so that one arriving after its week's summary was posted is in the next one."""

    prediction_id: str
    real_fault: bool
    at: float
    source: str = "api"
    recorded_at: float | None = None

    def __post_init__(self) -> None:
        _require_text("prediction_id", self.prediction_id, max_len=MAX_ID_LEN)
        if not isinstance(self.real_fault, bool):
            raise InvalidRecord("real_fault", f"must be true or false, got {self.real_fault!r}")
        object.__setattr__(self, "at", _require_time("at", self.at))
        _require_text("source", self.source, max_len=MAX_ID_LEN)
        if self.recorded_at is not None:
            object.__setattr__(self, "recorded_at", _require_time("recorded_at", self.recorded_at))
