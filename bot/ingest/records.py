"""JSON objects → :class:`~npo.types.Prediction` / :class:`~npo.types.Outcome`, with errors that name the field.

Accepted prediction fields: ``id``, ``fault_type``, ``target``, ``action``, ``confidence`` (required) and
``severity``, ``time_to_fault_s``, ``labels``, ``channel`` (optional). Unknown fields are refused, so a typo
cannot silently drop information. ``received_at`` is set by NPO, not by the sender. Outcome fields:
``prediction_id``, ``real_fault`` (required), ``at`` (default now), ``source`` (default ``api``). The identifying
fields lose surrounding blanks — ``id``, ``fault_type``, ``target``, ``action``, ``channel`` and an outcome's
``prediction_id`` — so that ``" p-1"`` is the prediction ``p-1``, not a second one — and may hold no control
character inside (:class:`~npo.types.Prediction` refuses it, naming the field); labels are free text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

from npo.types import InvalidRecord, Outcome, Prediction, Severity

PREDICTION_FIELDS = (
    "id",
    "fault_type",
    "target",
    "action",
    "confidence",
    "severity",
    "time_to_fault_s",
    "labels",
    "channel",
)
PREDICTION_REQUIRED = ("id", "fault_type", "target", "action", "confidence")
OUTCOME_FIELDS = ("prediction_id", "real_fault", "at", "source")
OUTCOME_CLOCK_SKEW_S = 300.0  # how far an outcome's ``at`` may be ahead of the bot's clock (hosts' clocks differ)


def _check_keys(obj: object, allowed: Sequence[str], required: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise InvalidRecord("(record)", f"must be a JSON object, got {type(obj).__name__}")
    for name in obj:
        if name not in allowed:
            raise InvalidRecord(str(name) or '""', f"unknown field (allowed: {', '.join(allowed)})")
    for name in required:
        if name not in obj or obj[name] is None:
            raise InvalidRecord(name, "is required")
    return obj


def _or_default(data: Mapping[str, Any], name: str, default: Any) -> Any:
    """``data[name]``, or ``default`` when the field is absent or null — never for another falsy value (``""``,
    ``0``, ``false``, ``[]``), which goes on to be validated, and refused, as given."""
    value = data.get(name)
    return default if value is None else value


def utf8_encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: ``json.loads`` lets a lone UTF-16 surrogate (``"\\ud800"``)
    through, and no UTF-8 column, log line or Slack message can carry one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_unicode(prediction: Prediction) -> Prediction:
    """Refuse a lone UTF-16 surrogate (``"\\ud800"``, which ``json.loads`` lets through): no UTF-8 column, log line
    or Slack message can carry it, and storing it would fail the whole batch it came in."""
    texts = [(name, getattr(prediction, name)) for name in ("id", "fault_type", "target", "action", "channel")]
    texts += [(f"labels.{key}", key + value) for key, value in prediction.labels.items()]
    for name, text in texts:
        if text is not None and not utf8_encodable(text):
            where = name.encode("utf-8", "backslashreplace").decode()
            raise InvalidRecord(where, "holds a lone UTF-16 surrogate (not valid Unicode text)")
    return prediction


def prediction_from_json(obj: object, *, received_at: float) -> Prediction:
    """One prediction from a decoded JSON object. Raises :class:`InvalidRecord` naming the offending field."""
    data = _check_keys(obj, PREDICTION_FIELDS, PREDICTION_REQUIRED)
    prediction = Prediction(
        id=data["id"],
        fault_type=data["fault_type"],
        target=data["target"],
        action=data["action"],
        confidence=data["confidence"],
        severity=cast(Severity, _or_default(data, "severity", "warning")),  # validated (and named) by Prediction
        time_to_fault_s=data.get("time_to_fault_s"),
        labels=_or_default(data, "labels", {}),
        channel=data.get("channel"),
        received_at=received_at,
    )
    return _require_unicode(prediction)


def outcome_from_json(obj: object, *, now: float) -> Outcome:
    """One outcome from a decoded JSON object. Raises :class:`InvalidRecord` naming the offending field."""
    data = _check_keys(obj, OUTCOME_FIELDS, ("prediction_id", "real_fault"))
    at = _or_default(data, "at", now)
    try:
        seconds = float(at) if type(at) in (int, float) else math.nan  # Outcome names any other kind of value
    except OverflowError:  # an integer beyond any float: Outcome names it
        seconds = math.nan
    if math.isfinite(seconds) and seconds > now + OUTCOME_CLOCK_SKEW_S:
        # an outcome is a fact about the past: a time ahead of the clock is a wrong unit or a wrong clock
        hint = " (milliseconds? send Unix seconds)" if seconds > 100 * max(now, 1.0) else ""
        ahead = f"is {seconds - now:,.0f} s ahead of the bot's clock{hint}"
        raise InvalidRecord("at", f"{ahead}: send when the outcome happened")
    prediction_id = data["prediction_id"]
    if isinstance(prediction_id, str):  # the id as stored: a prediction's id loses surrounding blanks (Prediction)
        prediction_id = prediction_id.strip() or prediction_id  # a blank one is refused as empty by Outcome
    return Outcome(
        prediction_id=prediction_id,
        real_fault=data["real_fault"],
        at=at,
        source=_or_default(data, "source", "api"),
        recorded_at=now,
    )


def many(body: object, parse: Any, **kwargs: Any) -> tuple[list[Any], bool]:
    """Parse one object or a list of them; returns (records, was_list). A list error names ``[i].field``."""
    if isinstance(body, list):
        if not body:
            raise InvalidRecord("(body)", "must not be an empty list")
        out = []
        for i, item in enumerate(body):
            try:
                out.append(parse(item, **kwargs))
            except InvalidRecord as exc:
                raise InvalidRecord(f"[{i}].{exc.field}", exc.message) from None
        return out, True
    return [parse(body, **kwargs)], False
