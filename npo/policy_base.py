"""What every part of the Safety Policy shares: the rule names and defaults, :class:`PolicyError`,
:func:`name_key` (how rules compare names) and the value checks of the policy's records (they raise
``InvalidRecord``; the parser turns them into :class:`PolicyError`). ``npo.policy`` re-exports the public names."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, time, tzinfo
from typing import Literal, cast

from npo.types import MAX_TEXT_LEN, InvalidRecord

PolicyOutcome = Literal["allow", "block", "digest"]
CooldownScope = Literal["key", "target", "both"]
#: Resolves an IANA time-zone name (``"Europe/Berlin"``) to a tzinfo; raises ``LookupError`` (``KeyError``),
#: ``ValueError`` or ``OSError`` for a name it does not know. ``zoneinfo.ZoneInfo`` is one.
ZoneResolver = Callable[[str], tzinfo]

RULE_ALLOWED_ACTIONS = "allowed_actions"
RULE_DENY_TARGETS = "deny_targets"
RULE_FREEZE_WINDOW = "freeze_window"
RULE_BLAST_RADIUS = "blast_radius"
RULE_OVERRIDE_COOLDOWN = "override_cooldown"
RULE_CHANNEL_HOURLY_CAP = "channel_hourly_cap"
ALL_RULES_PASSED = "all_rules_passed"
RULE_MUTE = "mute"  # runtime rules (Policy.mutes), checked before the file's rules; not part of RULE_NAMES
#: Rule names as they appear in :attr:`~npo.policy_types.PolicyVerdict.rule`, in evaluation order.
RULE_NAMES: tuple[str, ...] = (
    RULE_ALLOWED_ACTIONS,
    RULE_DENY_TARGETS,
    RULE_FREEZE_WINDOW,
    RULE_BLAST_RADIUS,
    RULE_OVERRIDE_COOLDOWN,
    RULE_CHANNEL_HOURLY_CAP,
)

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_DISRUPTIVE_ACTIONS: tuple[str, ...] = ("drain", "reboot", "reimage", "power_cycle", "failover")
DEFAULT_MAX_CONCURRENT = 2
#: Seconds after its predicted fault time (when it was surfaced plus the prediction's ``time_to_fault_s``, or when it
#: was surfaced if the prediction gives none) after which a recommendation nobody closed stops counting as open for
#: the blast radius: a day.
DEFAULT_STALE_AFTER_SECONDS = 86400.0
#: The Override reasons that say the recommendation itself is wrong, so nobody acts on it: an answer whose reason
#: starts with one of them (the Slack modal stores "<reason>[: details]") turns its recommendation down, and it stops
#: counting toward the blast radius. The other reasons ("Already handled", "Maintenance", "Other") may well leave
#: the target out of service, so their recommendation keeps counting.
TURNED_DOWN_REASONS = ("False positive", "Wrong action")


def turns_down(reason: str) -> bool:
    """Whether an Override given for ``reason`` says nobody acts on its recommendation (:data:`TURNED_DOWN_REASONS`)."""
    return reason.startswith(TURNED_DOWN_REASONS)


DEFAULT_COOLDOWN_SECONDS = 3600.0
DEFAULT_COOLDOWN_SCOPE: CooldownScope = "both"
DEFAULT_MAX_PER_HOUR = 20
SUPPORTED_VERSION = 1


class PolicyError(ValueError):
    """A malformed policy. ``line`` is the 1-based line in the source (None when unknown), ``field`` the
    dotted path of the offending field (``rules.freeze_windows[0].start``) and ``message`` what is wrong."""

    def __init__(self, message: str, *, field_name: str, line: int | None, source: str = "policy.toml") -> None:
        where = source if line is None else f"{source} line {line}"
        super().__init__(f"{where}, field {field_name}: {message}")
        self.line = line
        self.field = field_name
        self.message = message
        self.source = source


# --------------------------------------------------------------------------------------------------------
# value checks shared by the dataclasses (raise InvalidRecord; the parser turns them into PolicyError)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRecord(name, f"must be a string, got {_type_name(value)}")
    if not value.strip():
        raise InvalidRecord(name, "must not be empty")
    return value


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        shown = repr(value) if isinstance(value, int | float) else _type_name(value)
        raise InvalidRecord(name, f"must be a positive integer, got {shown}")
    return value


def _non_negative_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord(name, f"must be a non-negative number of seconds, got {_type_name(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float (10**400)
        raise InvalidRecord(name, "must be a non-negative number of seconds, got an integer too large") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidRecord(name, f"must be a non-negative number of seconds, got {value!r}")
    return seconds


def _positive_seconds(name: str, value: object) -> float:
    try:
        seconds = _non_negative_seconds(name, value)
    except InvalidRecord as exc:
        raise InvalidRecord(name, exc.message.replace("a non-negative", "a positive", 1)) from None
    if seconds == 0:
        raise InvalidRecord(name, f"must be a positive number of seconds, got {value!r}")
    return seconds


def _name_problem(value: object) -> str | None:
    """What makes ``value`` unusable as a name that must equal a prediction's field exactly (None: nothing).

    A prediction's ``fault_type`` and ``action`` are non-empty strings without surrounding blanks of at most
    :data:`~npo.types.MAX_TEXT_LEN` characters, so a policy entry that is not one can never match anything."""
    if not isinstance(value, str):
        return f"{value!r} is {_type_name(value)}, not a string"
    if not value.strip():
        return f"{value!r} is {'blank' if value else 'empty'}"
    if value != value.strip():
        return f"{value!r} has leading or trailing whitespace"
    if len(value) > MAX_TEXT_LEN:
        return f"{value[:20]!r}… is longer than {MAX_TEXT_LEN} characters"
    return None


def _text_tuple(name: str, value: object, *, allow_empty: bool = True) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidRecord(name, f"must be a list of strings, got {_type_name(value)}")
    items: list[str] = []
    for position, item in enumerate(cast("list[object] | tuple[object, ...]", value), start=1):
        problem = _name_problem(item)
        if problem is not None or not isinstance(item, str):
            raise InvalidRecord(
                name, f"must be a list of non-empty strings without surrounding blanks: item {position}, {problem}"
            )
        if item not in items:
            items.append(item)
    if not items and not allow_empty:
        raise InvalidRecord(name, "must not be an empty list (omit it to use the default)")
    return tuple(items)


def _type_name(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list"}
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, time):
        return "a time"
    return names.get(type(value), type(value).__name__)


_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(name: str) -> str:
    """The form in which the rules compare action names and fault types: ASCII letters folded to lower case
    (``Reboot`` matches ``reboot``), every other character as it is. This is exactly SQLite's ``lower()``, so
    the store's count of open disruptive recommendations agrees with the rules."""
    return name.lower() if name.isascii() else name.translate(_ASCII_FOLD)
