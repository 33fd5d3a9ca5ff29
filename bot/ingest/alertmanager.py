"""Alertmanager (webhook ``version: "4"``) and Grafana alerting webhooks → predictions and outcomes.

Both send ``{"status", "alerts": [{"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint", …}]}``;
Grafana adds ``orgId``, ``title``, ``state``, ``message`` and per-alert ``values``/``valueString``, which are
ignored. Each *firing* alert becomes one prediction; each *resolved* alert is a :class:`ResolvedAlert` of the
prediction of the same episode.

A resolved alert is not, by itself, a real fault: NPO's alerts are predictions ("the disk will fail within 6 h"),
and an alert resolves when its condition clears — after the predicted fault happened and was fixed, or when a false
alarm went away. Every alert resolves in the end, so taking each one for a real fault would count every suppressed
prediction as a missed fault and every Override as a wrong answer. A resolved alert therefore states its truth
only when it says so, in the annotation ``npo_outcome`` (:data:`OUTCOME_ANNOTATION`): ``real_fault`` or
``false_alarm``, in any case (``commonAnnotations`` fill a gap, as for a firing alert's fields). An annotation, not
a label: the labels are the alert's identity (its fingerprint), fixed from the moment it fires, while annotations
may be templated and a sender that posts alerts to Alertmanager's API may set them when it resolves the alert (the
newest annotations win). An empty value says nothing (a template such as ``{{ if … }}real_fault{{ end }}`` that
did not know); any other value is not taken — the alert is used without a truth, and
:attr:`ResolvedAlert.problem` says why (it is not refused: Alertmanager does not retry, and refusing it would
leave its recommendation open for ever). A resolved alert that does not say gets the truth ``unstated`` given to
:func:`parse_webhook` (``NPO_ALERTMANAGER_RESOLVED``: none by default; ``True`` for teams whose resolved alerts do
mean that the predicted fault happened).

An alert's fingerprint names the alert (a hash of its labels) for as long as it exists: the same disk on the same
host fires under the same fingerprint on Monday and, after resolving, again on Thursday. What tells the two
episodes apart is ``startsAt``, which stays the same while one episode fires (every re-sent notification and the
resolved one carry it) and is new when the alert fires again. The prediction id is therefore the fingerprint *and*
the episode's start: a re-sent notification is the same prediction (recorded once), a new episode is a new one.
A resolved alert whose episode id is unknown falls back to the plain ``am:<fingerprint>`` id that versions
before episode ids gave (:attr:`ResolvedAlert.fallback_id`), so an alert that fired before an upgrade can still
resolve.

Alerts are taken one by one: a malformed alert (no target label, a label or annotation that is not a string, an
unparsable ``confidence`` or ``time_to_fault``, an unknown ``status``, …) is refused on its own and listed in
:attr:`AlertBatch.errors` with the field at fault, while the other alerts of the notification are used —
Alertmanager groups unrelated alerts into one notification and does not retry a 4xx, so refusing the whole
notification would lose them. Only when *no* alert is usable (every alert is malformed) or the body itself is (not
an object, ``alerts`` not a list, ``commonLabels`` not an object of strings) does :func:`parse_webhook` raise
:class:`InvalidRecord` naming the (first) field, and nothing is stored. Each refused alert is logged once, at
warning level: the first :data:`LOGGED_ERRORS` of a notification one by one, the rest counted in one line, so a
huge malformed notification cannot flood the log. An empty ``alerts`` list is not an error: nothing to do.

With ``max_alerts`` in its webhook_config, Alertmanager (and Grafana) sends only the first alerts of a group and
counts the others in ``truncatedAlerts``. Those never reach NPO — the predictions of the firing ones, the
resolutions of the resolved ones — so a positive count is logged at warning level with the group's key and given in
:attr:`AlertBatch.truncated`; a value that is not a count (absent, ``null``, negative, not an integer) is taken as 0,
not refused, since refusing the notification would lose the alerts it does carry.

Field mapping (first match wins; ``commonLabels``/``commonAnnotations`` fill gaps in an alert's own):

============== ==========================================================================================
prediction      from
============== ==========================================================================================
id              ``am:<fingerprint>@<startsAt as YYYYMMDDTHHMMSSZ>``; without a fingerprint, a hash of the
                sorted labels stands in for it; without a usable ``startsAt``, ``am:<fingerprint>``
fault_type      label ``fault_type``, else label ``alertname``
target          label ``target``, else ``instance``, ``host``, ``node``, ``pod`` (a ``:port`` suffix is kept)
action          label ``action``, else annotation ``action``, else ``investigate``
confidence      annotation ``confidence``, else label ``confidence`` (``0.87`` or ``87%``); default by
                severity: critical 0.9, warning 0.7, info 0.5
severity        label ``severity``: critical/page/error/high → critical, warning/warn/medium → warning,
                info/low/none → info; anything else → warning
time_to_fault_s annotation (or label) ``time_to_fault_s`` in seconds, or ``time_to_fault`` like ``90s``,
                ``30m``, ``6h``, ``2d``, or several units largest first: ``1h30m``, ``1h30m0s``, ``2d 3h``
labels          every label (strings), so ``cluster`` reaches the blast-radius rule
channel         label ``slack_channel`` (a channel id), else the default incident channel
============== ==========================================================================================
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from npo.types import InvalidRecord, Outcome, Prediction, Severity

log = logging.getLogger(__name__)
DEFAULT_ACTION = "investigate"
DEFAULT_CONFIDENCE = {"critical": 0.9, "warning": 0.7, "info": 0.5}
_SEVERITY = {
    "critical": "critical",
    "page": "critical",
    "error": "critical",
    "high": "critical",
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "info": "info",
    "low": "info",
    "none": "info",
}
_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")
# Units largest first, each at most once: ``6h``, ``1h30m``, Go's ``1h30m0s``, Prometheus's ``humanizeDuration``
# (``2d 3h 4m 5s``, ``500ms``). Matched against the stripped text, blanks only after a unit: linear time.
_N = r"(\d+(?:\.\d+)?)\s*"
_DURATION_RE = re.compile(rf"(?:{_N}d\s*)?(?:{_N}h\s*)?(?:{_N}m(?!s)\s*)?(?:{_N}s\s*)?(?:{_N}ms)?")
_DURATION_UNITS_S = (86_400, 3600, 60, 1, 0.001)


OUTCOME_ANNOTATION = "npo_outcome"  # a resolved alert's statement of its truth (module docstring)
_TRUTH = {"real_fault": True, "false_alarm": False}
SOURCE = "alertmanager"  # the source of the outcomes of resolved alerts
ID_PREFIX = "am:"  # every prediction id made from an alert starts so
EPISODE_SEP = "@"  # between the plain id and the episode's start: am:<fingerprint>@<start>


@dataclass(frozen=True, slots=True)
class ResolvedAlert:
    """One resolved alert: the prediction of its episode, when it ended and what it says about the fault.

    ``real_fault``: the truth it states (annotation ``npo_outcome``), else the ``unstated`` truth given to
    :func:`parse_webhook`; None when neither says — then it is no outcome, only the end of the alert.
    ``fallback_id``: the plain ``am:<fingerprint>`` id to try when no prediction has ``prediction_id`` (one stored
    before episode ids), None when ``prediction_id`` is that id already. ``problem``: why an ``npo_outcome`` that
    was given was not taken (an unknown value), else None. ``at``: its ``endsAt`` (else when it arrived);
    ``received_at``: when it arrived."""

    prediction_id: str
    at: float
    received_at: float
    real_fault: bool | None
    fallback_id: str | None = None
    problem: str | None = None

    def outcome(self, prediction_id: str | None = None) -> Outcome:
        """The outcome it states, for ``prediction_id`` (default: its own). Only for a known truth."""
        if self.real_fault is None:
            raise ValueError(f"resolved alert {self.prediction_id!r} states no outcome")
        pid = self.prediction_id if prediction_id is None else prediction_id
        return Outcome(pid, self.real_fault, self.at, SOURCE, recorded_at=self.received_at)


@dataclass(frozen=True, slots=True)
class AlertBatch:
    """What one webhook call carried: predictions from firing alerts, :class:`ResolvedAlert` from resolved ones
    (each list in the notification's order).

    ``errors``: the alerts refused, each naming its field (``alerts[1].labels.instance``), when the others were
    usable (module docstring). ``truncated``: the alerts the sender left out of the notification (its
    ``truncatedAlerts``; ``max_alerts`` in Alertmanager's webhook_config), which NPO never saw."""

    predictions: list[Prediction]
    resolved: list[ResolvedAlert]
    errors: list[InvalidRecord] = field(default_factory=list)
    truncated: int = 0


def _strings(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRecord(where, "must be an object of strings")
    for k, v in value.items():
        if v is not None and not isinstance(v, str):  # str() would turn [1] or {"a": 1} into a target or a label
            raise InvalidRecord(f"{where}.{k}", f"must be a string, got {type(v).__name__}")
    return {str(k): v for k, v in value.items() if v is not None}


def _first(sources: dict[str, Mapping[str, str]], *names: str) -> tuple[str | None, str]:
    """The first non-blank value of ``names`` in ``sources`` (each name in every source before the next name) and
    where it was found (``labels.instance``); (None, "") when none is."""
    for name in names:
        for kind, source in sources.items():
            value = source.get(name, "").strip()
            if value:
                return value, f"{kind}.{name}"
    return None, ""


def _confidence(text: str | None, severity: str, where: str) -> float:
    if text is None:
        return DEFAULT_CONFIDENCE[severity]
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InvalidRecord(where, f"confidence must be a number in [0, 1] or a percentage, got {text!r}") from None
    return value


def _time_to_fault(seconds: str | None, text: str | None, where: str) -> float | None:
    raw = seconds if seconds is not None else text
    if raw is None:
        return None
    text = raw.strip()
    if _SECONDS_RE.fullmatch(text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if match is None or not any(match.groups()):
        message = "time to fault must look like 3600, 90s, 30m, 6h, 2d or 1h30m (units largest first)"
        raise InvalidRecord(where, f"{message}, got {raw!r}")
    return sum(float(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS_S, strict=True) if n is not None)


def _timestamp(text: object, fallback: float) -> float:
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return fallback
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return fallback


def alert_id(alert: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The prediction id of one episode of an alert: ``am:<fingerprint>@<start>`` (module docstring)."""
    plain = plain_alert_id(alert, labels)
    started = _timestamp(alert.get("startsAt"), math.nan)
    if not math.isfinite(started):
        return plain
    try:
        return f"{plain}{EPISODE_SEP}{datetime.fromtimestamp(int(started), UTC):%Y%m%dT%H%M%SZ}"
    except (ValueError, OverflowError, OSError):  # a start beyond the calendar in UTC (9999-12-31T23:59-14:00)
        return f"{plain}{EPISODE_SEP}{int(started)}"


def plain_alert_id(alert: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """``am:<fingerprint>`` (``am:`` + a hash of the sorted labels without one): the alert, whatever its episode."""
    fingerprint = alert.get("fingerprint")
    if isinstance(fingerprint, str) and fingerprint.strip():
        return f"{ID_PREFIX}{fingerprint.strip()}"
    digest = hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16]
    return f"{ID_PREFIX}{digest}"


def prediction_from_alert(
    alert: Mapping[str, Any], common: tuple[dict[str, str], dict[str, str]], *, index: int, now: float
) -> Prediction:
    """One firing alert → a prediction (see the module docstring for the mapping)."""
    where = f"alerts[{index}]"
    own = {
        "labels": _strings(alert.get("labels"), f"{where}.labels"),
        "annotations": _strings(alert.get("annotations"), f"{where}.annotations"),
    }
    labels, annotations = {**common[0], **own["labels"]}, {**common[1], **own["annotations"]}

    def sent(found: str) -> str:
        """The field a value found at ``found`` (``labels.instance``) was sent in: the alert's own labels or
        annotations, else the notification's common ones (``commonLabels.instance``)."""
        kind, _, name = found.partition(".")
        return f"{where}.{found}" if name in own[kind] else f"common{kind.capitalize()}.{name}"

    severity = _SEVERITY.get((labels.get("severity") or "warning").strip().lower(), "warning")
    fault_type, fault_type_at = _first({"labels": labels}, "fault_type", "alertname")
    target, target_at = _first({"labels": labels}, "target", "instance", "host", "node", "pod")
    if fault_type is None:
        raise InvalidRecord(f"{where}.labels.alertname", "an alert needs an alertname or fault_type label")
    if target is None:
        raise InvalidRecord(f"{where}.labels.instance", "an alert needs a target, instance, host, node or pod label")
    action, action_at = _first({"labels": labels, "annotations": annotations}, "action")
    # the confidence and the time to fault: from the annotations, else the labels
    confidence, confidence_at = _first({"annotations": annotations, "labels": labels}, "confidence")
    ttf_s, ttf_s_at = _first({"annotations": annotations, "labels": labels}, "time_to_fault_s")
    ttf, ttf_at = _first({"annotations": annotations, "labels": labels}, "time_to_fault")
    # A value Prediction refuses is named by the field the sender sent it in, which the sender can change.
    fields = {
        "id": f"{where}.fingerprint",  # the id is made of the fingerprint (the rest of it is short)
        "fault_type": sent(fault_type_at),
        "target": sent(target_at),
        "action": sent(action_at) if action_at else f"{where}.labels.action",
        "confidence": sent(confidence_at) if confidence_at else f"{where}.annotations.confidence",
        "time_to_fault_s": sent(ttf_s_at or ttf_at) if ttf_s_at or ttf_at else f"{where}.annotations.time_to_fault",
        "channel": sent("labels.slack_channel"),
    }
    try:
        return Prediction(
            id=alert_id(alert, labels),
            fault_type=fault_type,
            target=target,
            action=action or DEFAULT_ACTION,
            confidence=_confidence(confidence, severity, fields["confidence"]),
            severity=Severity(severity),
            time_to_fault_s=_time_to_fault(ttf_s, ttf, fields["time_to_fault_s"]),
            labels=labels,
            channel=labels.get("slack_channel") or None,
            received_at=now,
        )
    except InvalidRecord as exc:
        if exc.field in fields.values():
            raise
        raise InvalidRecord(fields.get(exc.field, f"{where}.{exc.field}"), exc.message) from None


def _stated_truth(
    alert: Mapping[str, Any], common_annotations: Mapping[str, str], where: str
) -> tuple[bool | None, str | None]:
    """The truth a resolved alert states in its ``npo_outcome`` annotation (its own, else the common one): True,
    False or None (not said), and why a value that was given is not taken (else None). Only this annotation is
    read: the others of a resolved alert are not used, so a malformed one does not refuse the alert."""
    own = alert.get("annotations")
    value: object = own.get(OUTCOME_ANNOTATION) if isinstance(own, Mapping) else None
    field_name = f"{where}.annotations.{OUTCOME_ANNOTATION}"
    if value is None or (isinstance(value, str) and not value.strip()):
        value = common_annotations.get(OUTCOME_ANNOTATION)
        field_name = f"commonAnnotations.{OUTCOME_ANNOTATION}"
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"{field_name} must be real_fault or false_alarm (a string), got {type(value).__name__}"
    text = value.strip()
    if not text:
        return None, None  # a template that did not know: nothing said
    truth = _TRUTH.get(text.lower())
    if truth is None:
        return None, f"{field_name} must be real_fault or false_alarm, got {text[:100]!r}"
    return truth, None


def _resolved(
    alert: Mapping[str, Any],
    common: tuple[dict[str, str], dict[str, str]],
    *,
    index: int,
    now: float,
    unstated: bool | None,
) -> ResolvedAlert:
    """One resolved alert → the :class:`ResolvedAlert` of its episode (module docstring)."""
    where = f"alerts[{index}]"
    labels = {**common[0], **_strings(alert.get("labels"), f"{where}.labels")}
    prediction_id, plain = alert_id(alert, labels), plain_alert_id(alert, labels)
    # When it ended, as a fact about the past: an end ahead of the clock (another host's clock) is now, and one before
    # the episode started (1970, a template's placeholder) is its start. The outcome is dated so; trust counts only
    # the answers given before it.
    ended = min(_timestamp(alert.get("endsAt"), now), now)
    started = _timestamp(alert.get("startsAt"), math.nan)
    if math.isfinite(started) and ended < started:
        ended = min(started, now)
    try:  # checked as the outcome it may become, here: the route records it without checking again
        Outcome(prediction_id, False, ended, SOURCE, recorded_at=now)
    except InvalidRecord as exc:  # an over-long fingerprint: name it, not the derived prediction_id
        raise InvalidRecord(f"{where}.fingerprint", exc.message) from None
    stated, problem = _stated_truth(alert, common[1], where)
    truth = stated if stated is not None or problem is not None else unstated
    return ResolvedAlert(prediction_id, ended, now, truth, plain if plain != prediction_id else None, problem)


LOGGED_ERRORS = 20  # refused alerts logged one by one per notification; the rest in one line (bounded log volume)


def _truncated(body: Mapping[str, Any]) -> int:
    """The notification's ``truncatedAlerts`` when it is a positive count, else 0 (module docstring)."""
    count = body.get("truncatedAlerts")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        return 0
    group = body.get("groupKey")
    log.warning(
        "Alertmanager webhook: %d alerts were left out of this notification by the sender (max_alerts of its "
        "webhook_config): NPO never sees them, neither the firing ones nor the resolved ones; raise max_alerts or "
        "set it to 0 (groupKey=%r)",
        count,
        (group if isinstance(group, str) else "?")[:300],
    )
    return count


def parse_webhook(body: object, *, now: float, unstated: bool | None = None) -> AlertBatch:
    """Parse an Alertmanager v4 or Grafana webhook body, alert by alert (see the module docstring).

    ``unstated``: the truth of a resolved alert that does not state one (``NPO_ALERTMANAGER_RESOLVED``): None (not
    known: no outcome) or True (a resolved alert means that the predicted fault happened). Malformed alerts are
    listed in :attr:`AlertBatch.errors` when at least one alert was usable; raises :class:`InvalidRecord` naming the
    field when none was, or when the body itself is malformed. A ``npo_outcome`` that is not taken is logged."""
    if not isinstance(body, Mapping):
        raise InvalidRecord("(body)", "must be a JSON object (an Alertmanager or Grafana webhook)")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidRecord("alerts", "must be a list")
    common = (
        _strings(body.get("commonLabels"), "commonLabels"),
        _strings(body.get("commonAnnotations"), "commonAnnotations"),
    )
    batch = AlertBatch([], [], truncated=_truncated(body))
    for index, alert in enumerate(alerts):
        try:
            if not isinstance(alert, Mapping):
                raise InvalidRecord(f"alerts[{index}]", "must be an object")
            status = alert.get("status", body.get("status"))
            if status == "resolved":
                batch.resolved.append(_resolved(alert, common, index=index, now=now, unstated=unstated))
            elif status == "firing":
                batch.predictions.append(prediction_from_alert(alert, common, index=index, now=now))
            else:
                raise InvalidRecord(f"alerts[{index}].status", f"must be firing or resolved, got {status!r}")
        except InvalidRecord as exc:
            batch.errors.append(exc)
    usable = bool(batch.predictions or batch.resolved)
    problems = [r.problem for r in batch.resolved if r.problem is not None]
    for problem in problems[:LOGGED_ERRORS]:
        log.warning("Alertmanager webhook: a resolved alert's outcome was not taken (no outcome recorded): %s", problem)
    if len(problems) > LOGGED_ERRORS:
        log.warning(
            "Alertmanager webhook: %d more resolved alerts of this notification had an npo_outcome that was not taken",
            len(problems) - LOGGED_ERRORS,
        )
    fate = "the other alerts were used" if usable else "no alert was usable, nothing was stored"
    for refused in batch.errors[:LOGGED_ERRORS]:
        log.warning(
            "Alertmanager webhook: alert refused (%s): field=%r message=%r", fate, refused.field, refused.message[:300]
        )
    if len(batch.errors) > LOGGED_ERRORS:
        log.warning(
            "Alertmanager webhook: %d more alerts of this notification refused (%s); not logged one by one",
            len(batch.errors) - LOGGED_ERRORS,
            fate,
        )
    if batch.errors and not usable:
        raise batch.errors[0]
    return batch
