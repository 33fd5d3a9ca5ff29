"""Safety Policy Engine (SPE): declarative guardrails evaluated before a recommendation is surfaced.

Rules are data: a TOML policy (see ``default_policy.toml``, embedded here as :data:`DEFAULT_POLICY_TEXT`)
parsed by :func:`parse_policy` into an immutable :class:`Policy`. :func:`evaluate` checks one prediction
against it, given a :class:`PolicyContext` snapshot supplied by the caller, and returns a
:class:`PolicyVerdict` that always names the rule behind it.

Evaluation order: ``mute`` (a scenario key muted by an engineer until a time, e.g. ``/npo mute``; these rules
live in the database, not the file, and are passed in as :attr:`Policy.mutes`), ``allowed_actions``,
``freeze_window``, ``blast_radius``, ``override_cooldown`` (hard blocks; the first one wins), then
``channel_hourly_cap`` (outcome ``"digest"``: folded into a digest message,
never dropped). Nothing here reads files, the clock or the environment: the caller reads the policy file and
passes its text, passes "now" inside the context, and resolves IANA time-zone names (``timezone =
"Europe/Berlin"``) with the ``zone`` callable given to :func:`parse_policy` (the bot passes
``zoneinfo.ZoneInfo``, which reads the system's zone files).
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast

from npo.types import MAX_TEXT_LEN, InvalidRecord, Prediction, Severity

PolicyOutcome = Literal["allow", "block", "digest"]
CooldownScope = Literal["key", "target", "both"]
#: Resolves an IANA time-zone name (``"Europe/Berlin"``) to a tzinfo; raises ``LookupError`` (``KeyError``),
#: ``ValueError`` or ``OSError`` for a name it does not know. ``zoneinfo.ZoneInfo`` is one.
ZoneResolver = Callable[[str], tzinfo]

RULE_ALLOWED_ACTIONS = "allowed_actions"
RULE_FREEZE_WINDOW = "freeze_window"
RULE_BLAST_RADIUS = "blast_radius"
RULE_OVERRIDE_COOLDOWN = "override_cooldown"
RULE_CHANNEL_HOURLY_CAP = "channel_hourly_cap"
ALL_RULES_PASSED = "all_rules_passed"
RULE_MUTE = "mute"  # runtime rules (Policy.mutes), checked before the file's rules; not part of RULE_NAMES
#: Rule names as they appear in :attr:`PolicyVerdict.rule`, in evaluation order.
RULE_NAMES: tuple[str, ...] = (
    RULE_ALLOWED_ACTIONS,
    RULE_FREEZE_WINDOW,
    RULE_BLAST_RADIUS,
    RULE_OVERRIDE_COOLDOWN,
    RULE_CHANNEL_HOURLY_CAP,
)

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_DISRUPTIVE_ACTIONS: tuple[str, ...] = ("drain", "reboot", "reimage", "power_cycle", "failover")
DEFAULT_MAX_CONCURRENT = 2
DEFAULT_COOLDOWN_SECONDS = 3600.0
DEFAULT_COOLDOWN_SCOPE: CooldownScope = "both"
DEFAULT_MAX_PER_HOUR = 20
SUPPORTED_VERSION = 1

_MINUTES_PER_DAY = 24 * 60
_SECONDS_PER_DAY = 86_400
_SECONDS_PER_WEEK = 7 * _SECONDS_PER_DAY
# 1970-01-01 (Unix second 0) was a Thursday: weekday index 3 counting from Monday.
_EPOCH_WEEKDAY = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The instants a datetime can hold (a day inside year 1 and year 9999, so a zone's offset still fits): a time
# zone's offset is looked up at "now" clamped to this range.
_FIRST_INSTANT = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH).total_seconds()
_LAST_INSTANT = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH).total_seconds()
_COOLDOWN_SCOPES: tuple[str, ...] = ("key", "target", "both")


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


def _format_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _check_zone(name: str, zone_name: object, tz: object) -> None:
    """A named time zone: its IANA name and the tzinfo the caller's resolver gave for it."""
    if not isinstance(zone_name, str) or not zone_name or zone_name != zone_name.strip():
        raise InvalidRecord(name, f'must be an IANA time zone name like "Europe/Berlin", got {zone_name!r}')
    if not isinstance(tz, tzinfo):
        raise InvalidRecord(name, f"needs the tzinfo of {zone_name!r}, got {_type_name(tz)}")
    try:
        offset = _EPOCH.astimezone(tz).utcoffset()
    except (ValueError, TypeError, OverflowError):
        offset = None
    if offset is None:
        raise InvalidRecord(name, f"the tzinfo of {zone_name!r} gives no UTC offset")


def _zone_offset_seconds(tz: tzinfo, now: float) -> float:
    """The zone's UTC offset (seconds east) at the instant ``now`` (Unix seconds; clamped to what a datetime holds)."""
    instant = _EPOCH + timedelta(seconds=min(max(now, _FIRST_INSTANT), _LAST_INSTANT))
    offset = instant.astimezone(tz).utcoffset()
    return 0.0 if offset is None else offset.total_seconds()


def _format_minute(minute: int) -> str:
    hours, mins = divmod(minute, 60)
    return f"{hours:02d}:{mins:02d}"


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.1f}"


# --------------------------------------------------------------------------------------------------------
# the policy


_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(name: str) -> str:
    """The form in which the rules compare action names and fault types: ASCII letters folded to lower case
    (``Reboot`` matches ``reboot``), every other character as it is. This is exactly SQLite's ``lower()``, so
    the store's count of open disruptive recommendations agrees with the rules."""
    return name.lower() if name.isascii() else name.translate(_ASCII_FOLD)


@dataclass(frozen=True, slots=True)
class FreezeWindow:
    """A period during which recommendations are held back (blocked).

    Absolute form: ``start``/``end`` are timezone-aware datetimes; the window is ``start <= now < end``.
    Weekly form (``days`` non-empty): the window opens on each listed day (``"mon"`` … ``"sun"``) at
    ``start_minute`` minutes after local midnight and closes at ``end_minute`` (1440 = 24:00); an end before
    the start wraps past midnight into the next day. Local time is either UTC shifted by the fixed
    ``utc_offset_minutes`` (no daylight-saving rules), or, when ``timezone`` names an IANA zone, the wall-clock
    time in that zone (``tz``, its tzinfo, supplied by the caller's resolver; ``utc_offset_minutes`` is then 0).
    With a zone the window is in force whenever the local clock shows a time inside it, so it keeps its local
    times across a daylight-saving change: a time skipped when clocks go forward opens (or closes) the window
    at the first minute after the gap, and an hour repeated when clocks go back is inside the window both times
    if its clock times are. ``allow_severities`` are exempt from the freeze; ``actions``, when non-empty,
    limits the freeze to those actions.
    """

    name: str
    start: datetime | None = None
    end: datetime | None = None
    days: tuple[str, ...] = ()
    start_minute: int = 0
    end_minute: int = 0
    utc_offset_minutes: int = 0
    allow_severities: tuple[Severity, ...] = ()
    actions: tuple[str, ...] = ()
    timezone: str = ""  # an IANA zone name; "" = the fixed utc_offset_minutes
    tz: tzinfo | None = field(default=None, compare=False, repr=False)  # the tzinfo of ``timezone``
    action_keys: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)  # name_key

    def __post_init__(self) -> None:
        _text("name", self.name)
        if self.days:
            days = _text_tuple("days", self.days, allow_empty=False)
            for day in days:
                if day not in WEEKDAYS:
                    raise InvalidRecord("days", f"must be day names from {', '.join(WEEKDAYS)}, got {day!r}")
            object.__setattr__(self, "days", days)
            if self.start is not None or self.end is not None:
                raise InvalidRecord("start", "a weekly window takes start/end minutes, not date-times")
            for name, minute, top in (("start", self.start_minute, 1439), ("end", self.end_minute, 1440)):
                if isinstance(minute, bool) or not isinstance(minute, int) or not 0 <= minute <= top:
                    raise InvalidRecord(name, f"must be a minute of the day in [0, {top}], got {minute!r}")
            if self.start_minute == self.end_minute:
                raise InvalidRecord("end", "must differ from start (use 00:00 to 24:00 for a whole day)")
        else:
            for name, moment in (("start", self.start), ("end", self.end)):
                if not isinstance(moment, datetime) or moment.utcoffset() is None:
                    raise InvalidRecord(name, "must be a date-time with a UTC offset")
            start, end = self._span()
            if end <= start:
                raise InvalidRecord("end", f"must be after start ({start.isoformat()}), got {end.isoformat()}")
        offset = self.utc_offset_minutes
        if isinstance(offset, bool) or not isinstance(offset, int) or not -1440 < offset < 1440:
            raise InvalidRecord("utc_offset", f"must be less than 24 hours from UTC, got {offset!r} minutes")
        if self.timezone or self.tz is not None:
            if not self.days:
                raise InvalidRecord(
                    "timezone", "only applies to weekly windows (absolute start/end carry their own offset)"
                )
            _check_zone("timezone", self.timezone, self.tz)
            if offset != 0:
                raise InvalidRecord("timezone", "set either timezone or utc_offset, not both")
        severities = _text_tuple("allow_severities", self.allow_severities)
        try:
            object.__setattr__(self, "allow_severities", tuple(Severity(s) for s in severities))
        except ValueError:
            allowed = ", ".join(s.value for s in Severity)
            raise InvalidRecord(
                "allow_severities", f"must be severities from {allowed}, got {list(severities)!r}"
            ) from None
        object.__setattr__(self, "actions", _text_tuple("actions", self.actions))
        object.__setattr__(self, "action_keys", frozenset(name_key(a) for a in self.actions))

    def _span(self) -> tuple[datetime, datetime]:
        if self.start is None or self.end is None:
            raise InvalidRecord("start", "an absolute window needs both start and end")
        return self.start, self.end

    @property
    def weekly(self) -> bool:
        """True for a weekly recurring window, False for an absolute one."""
        return bool(self.days)

    def is_open(self, now: float) -> bool:
        """Whether the window covers ``now`` (Unix seconds, UTC). Ignores severities and actions."""
        if not self.weekly:
            start, end = self._span()
            return start.timestamp() <= now < end.timestamp()
        shift = self.utc_offset_minutes * 60 if self.tz is None else _zone_offset_seconds(self.tz, now)
        # local wall-clock time as seconds into the week, Monday 00:00 = 0
        local = (now + shift + _EPOCH_WEEKDAY * _SECONDS_PER_DAY) % _SECONDS_PER_WEEK
        minutes = self.end_minute - self.start_minute
        duration = (minutes if minutes > 0 else minutes + _MINUTES_PER_DAY) * 60
        for day in self.days:
            opens = WEEKDAYS.index(day) * _SECONDS_PER_DAY + self.start_minute * 60
            if (local - opens) % _SECONDS_PER_WEEK < duration:
                return True
        return False

    def holds_back(self, action: str, severity: Severity) -> bool:
        """Whether the freeze applies to this action (compared by :func:`name_key`) and severity (not whether the
        window is open)."""
        if self.action_keys and name_key(action) not in self.action_keys:
            return False
        return Severity(severity) not in self.allow_severities

    def describe(self) -> str:
        """A short human-readable description, e.g. ``weekly sat, sun 00:00-24:00 UTC+01:00`` or
        ``weekly fri 22:00-06:00 Europe/Berlin``."""
        if not self.weekly:
            start, end = self._span()
            return f"{start.isoformat()} to {end.isoformat()}"
        zone = self.timezone or f"UTC{_format_offset(self.utc_offset_minutes)}"
        return (
            f"weekly {', '.join(self.days)} {_format_minute(self.start_minute)}-"
            f"{_format_minute(self.end_minute)} {zone}"
        )


@dataclass(frozen=True, slots=True)
class BlastRadiusRule:
    """At most ``max_concurrent`` open disruptive recommendations per cluster; empty actions = rule off."""

    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    disruptive_actions: tuple[str, ...] = DEFAULT_DISRUPTIVE_ACTIONS
    disruptive_keys: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)  # name_key

    def __post_init__(self) -> None:
        _positive_int("max_concurrent", self.max_concurrent)
        object.__setattr__(self, "disruptive_actions", _text_tuple("disruptive_actions", self.disruptive_actions))
        object.__setattr__(self, "disruptive_keys", frozenset(name_key(a) for a in self.disruptive_actions))


@dataclass(frozen=True, slots=True)
class OverrideCooldownRule:
    """No surfacing within ``seconds`` after an override of the same key and/or target (0 = rule off)."""

    seconds: float = DEFAULT_COOLDOWN_SECONDS
    scope: CooldownScope = DEFAULT_COOLDOWN_SCOPE

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", _non_negative_seconds("seconds", self.seconds))
        if self.scope not in _COOLDOWN_SCOPES:
            raise InvalidRecord("scope", f"must be one of key, target, both, got {self.scope!r}")


@dataclass(frozen=True, slots=True)
class ChannelHourlyCapRule:
    """At most ``max_per_hour`` recommendations surfaced per channel per hour; the excess is digested."""

    max_per_hour: int = DEFAULT_MAX_PER_HOUR

    def __post_init__(self) -> None:
        _positive_int("max_per_hour", self.max_per_hour)


@dataclass(frozen=True, slots=True)
class Mute:
    """A runtime rule: predictions with scenario ``key`` are blocked from ``since`` until ``until`` (Unix seconds,
    ``since`` inclusive, ``until`` exclusive). ``by`` and ``reason`` are shown in the verdict."""

    key: str
    since: float
    until: float
    by: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        _text("mute.key", self.key)
        for name in ("since", "until"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
                raise InvalidRecord(f"mute.{name}", f"must be a finite number of Unix seconds, got {value!r}")
        if self.until <= self.since:
            raise InvalidRecord("mute.until", f"must be after since ({self.since}), got {self.until}")

    def active(self, now: float) -> bool:
        return self.since <= now < self.until


@dataclass(frozen=True, slots=True)
class Policy:
    """All SPE rules. Built by :func:`parse_policy`; ``Policy()`` equals the default policy.

    ``allowed_actions`` maps a fault type (or the ``"*"`` fallback) to its allowed actions; it is opt-in
    (an unlisted fault type with no ``"*"`` may take any action). ``utc_offset_minutes``, or the IANA zone
    ``timezone`` when set, is the policy's default local time for weekly freeze windows (already resolved into
    each window; shown by :func:`policy_to_dict`).
    """

    name: str = "default"
    version: int = SUPPORTED_VERSION
    utc_offset_minutes: int = 0
    timezone: str = ""
    allowed_actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    blast_radius: BlastRadiusRule = field(default_factory=BlastRadiusRule)
    freeze_windows: tuple[FreezeWindow, ...] = ()
    override_cooldown: OverrideCooldownRule = field(default_factory=OverrideCooldownRule)
    channel_hourly_cap: ChannelHourlyCapRule = field(default_factory=ChannelHourlyCapRule)
    mutes: tuple[Mute, ...] = ()  # runtime rules from the database (not in the file; see RULE_MUTE)
    # allowed_actions by name_key(fault type): (the fault type as written, name_key of each allowed action)
    allowed_keys: Mapping[str, tuple[str, frozenset[str]]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        _text("name", self.name)
        if self.version != SUPPORTED_VERSION or isinstance(self.version, bool):
            raise InvalidRecord("version", f"unsupported policy version {self.version!r} (supported: 1)")
        if self.timezone and (not isinstance(self.timezone, str) or self.timezone != self.timezone.strip()):
            raise InvalidRecord(
                "timezone", f'must be an IANA time zone name like "Europe/Berlin", got {self.timezone!r}'
            )
        if self.timezone and self.utc_offset_minutes != 0:
            raise InvalidRecord("timezone", "set either timezone or utc_offset, not both")
        if not isinstance(self.allowed_actions, Mapping):
            raise InvalidRecord("allowed_actions", "must be a table of fault type -> list of actions")
        table: dict[str, tuple[str, ...]] = {}
        keys: dict[str, tuple[str, frozenset[str]]] = {}
        for fault_type, actions in self.allowed_actions.items():
            problem = _name_problem(fault_type)
            if problem is not None:
                raise InvalidRecord("allowed_actions", f"fault type {problem}")
            table[fault_type] = _text_tuple(fault_type, actions)
            folded = name_key(fault_type)
            if folded in keys:
                raise InvalidRecord(
                    "allowed_actions",
                    f"fault types {keys[folded][0]!r} and {fault_type!r} differ only in case: rules compare names "
                    "without case, so merge them into one entry",
                )
            keys[folded] = (fault_type, frozenset(name_key(a) for a in table[fault_type]))
        object.__setattr__(self, "allowed_actions", MappingProxyType(table))
        object.__setattr__(self, "allowed_keys", MappingProxyType(keys))
        object.__setattr__(self, "freeze_windows", tuple(self.freeze_windows))
        object.__setattr__(self, "mutes", tuple(self.mutes))


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """A snapshot of the state the rules need, supplied by the caller.

    ``now`` is Unix seconds (UTC). ``active_disruptive_by_cluster``: open (surfaced, unresolved) disruptive
    recommendations per cluster. ``last_override_at``: Unix seconds of the last override, keyed
    ``"key:<scenario key>"`` and ``"target:<target>"`` in one map. ``surfaced_last_hour_by_channel``:
    recommendations surfaced per channel in the last hour. Missing entries count as zero / never.
    """

    now: float
    active_disruptive_by_cluster: Mapping[str, int] = field(default_factory=dict)
    last_override_at: Mapping[str, float] = field(default_factory=dict)
    surfaced_last_hour_by_channel: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.now, bool) or not isinstance(self.now, int | float) or not math.isfinite(float(self.now)):
            raise InvalidRecord("now", f"must be a finite number of Unix seconds, got {self.now!r}")
        object.__setattr__(self, "now", float(self.now))
        for name in ("active_disruptive_by_cluster", "surfaced_last_hour_by_channel"):
            counts = getattr(self, name)
            if not isinstance(counts, Mapping):
                raise InvalidRecord(name, f"must be a mapping, got {_type_name(counts)}")
            for k, v in counts.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise InvalidRecord(f"{name}.{k}", f"must be a non-negative integer, got {v!r}")
            object.__setattr__(self, name, MappingProxyType(dict(counts)))
        if not isinstance(self.last_override_at, Mapping):
            raise InvalidRecord("last_override_at", "must be a mapping")
        times: dict[str, float] = {}
        for k, v in self.last_override_at.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                raise InvalidRecord(f"last_override_at.{k}", f"must be a finite number of seconds, got {v!r}")
            times[k] = float(v)
        object.__setattr__(self, "last_override_at", MappingProxyType(times))


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """The SPE's answer for one prediction.

    ``rule`` always names a rule (see :data:`RULE_NAMES`), or ``"all_rules_passed"`` when the outcome is
    ``"allow"``; ``reason`` explains it with the values involved.
    """

    outcome: PolicyOutcome
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        """True when the prediction may be surfaced now (outcome ``"allow"``)."""
        return self.outcome == "allow"


# --------------------------------------------------------------------------------------------------------
# evaluation


_ALLOW = PolicyVerdict("allow", ALL_RULES_PASSED, "all rules passed")  # frozen: one shared instance


def evaluate(policy: Policy, prediction: Prediction, key: str, channel: str, context: PolicyContext) -> PolicyVerdict:
    """Check one prediction against every rule, in order, and return the first hard block, else a digest
    when the channel is over its hourly cap, else ``allow`` (rule ``"all_rules_passed"``).

    ``key`` is the prediction's scenario key and ``channel`` the channel it would be posted to. Pure: it
    does not read the clock (``context.now`` is "now"), does not update any counters in ``context`` and
    does not look at the score or threshold.
    """
    action = prediction.action
    fault_type = prediction.fault_type
    action_key = name_key(action)

    # 0. runtime mutes (``/npo mute``)
    for mute in policy.mutes:
        if mute.key == key and mute.active(context.now):
            until = datetime.fromtimestamp(mute.until, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
            by = f" by {mute.by}" if mute.by else ""
            why = f" ({mute.reason})" if mute.reason else ""
            return PolicyVerdict("block", RULE_MUTE, f"scenario key {key!r} is muted{by} until {until}{why}")

    # 1. allowed_actions (names compared by name_key: without ASCII case)
    table = policy.allowed_keys
    entry = table.get(name_key(fault_type)) if table else None
    via = ""
    if entry is None and "*" in table:
        entry = table["*"]
        via = "the '*' fallback "
    if entry is not None and action_key not in entry[1]:
        allowed = policy.allowed_actions[entry[0]]
        listed = ", ".join(allowed) if allowed else "no actions"
        return PolicyVerdict(
            "block",
            RULE_ALLOWED_ACTIONS,
            f"action {action!r} is not allowed for fault_type {fault_type!r} ({via}allows: {listed})"
            if via
            else f"action {action!r} is not allowed for fault_type {fault_type!r} (allowed: {listed})",
        )

    # 2. freeze windows
    for window in policy.freeze_windows:
        if window.is_open(context.now) and window.holds_back(action, prediction.severity):
            exempt = ", ".join(window.allow_severities) if window.allow_severities else "none"
            scope = f"actions {', '.join(window.actions)}" if window.actions else "all actions"
            return PolicyVerdict(
                "block",
                RULE_FREEZE_WINDOW,
                f"freeze window {window.name!r} is in force ({window.describe()}; applies to {scope}); "
                f"severity {prediction.severity.value!r} is not exempt (allow_severities: {exempt})",
            )

    # 3. blast radius
    blast = policy.blast_radius
    if action_key in blast.disruptive_keys:
        cluster = prediction.cluster
        active = context.active_disruptive_by_cluster.get(cluster, 0)
        if active >= blast.max_concurrent:
            return PolicyVerdict(
                "block",
                RULE_BLAST_RADIUS,
                f"cluster {cluster!r} already has {active} open disruptive recommendation(s) "
                f"(max_concurrent {blast.max_concurrent}); action {action!r} is disruptive",
            )

    # 4. override cooldown
    cooldown = policy.override_cooldown
    if cooldown.seconds > 0 and context.last_override_at:  # no override on record: nothing to look up
        subjects: list[tuple[str, str, str]] = []
        if cooldown.scope in ("key", "both"):
            subjects.append(("scenario key", key, f"key:{key}"))
        if cooldown.scope in ("target", "both"):
            subjects.append(("target", prediction.target, f"target:{prediction.target}"))
        for label, value, map_key in subjects:
            last = context.last_override_at.get(map_key)
            if last is None:
                continue
            elapsed = context.now - last
            if elapsed < cooldown.seconds:
                when = (
                    f"{_format_seconds(elapsed)} s ago"
                    if elapsed >= 0
                    else f"{_format_seconds(-elapsed)} s in the future"
                )
                return PolicyVerdict(
                    "block",
                    RULE_OVERRIDE_COOLDOWN,
                    f"{label} {value!r} was overridden {when}; cooldown is "
                    f"{_format_seconds(cooldown.seconds)} s (scope {cooldown.scope})",
                )

    # 5. channel hourly cap (soft: digest)
    cap = policy.channel_hourly_cap.max_per_hour
    surfaced = context.surfaced_last_hour_by_channel.get(channel, 0)
    if surfaced >= cap:
        return PolicyVerdict(
            "digest",
            RULE_CHANNEL_HOURLY_CAP,
            f"channel {channel!r} already had {surfaced} recommendation(s) surfaced in the last hour "
            f"(max_per_hour {cap}); folded into the digest",
        )

    return _ALLOW


# --------------------------------------------------------------------------------------------------------
# serialisation


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The policy as plain TOML-shaped data (str, int, float, lists, dicts) for display and audit.

    Re-serialised as TOML and parsed again (with a zone resolver when it names a ``timezone``) it gives an equal
    :class:`Policy`. Date-times become ISO-8601 strings with their offset; weekly times become ``"HH:MM"``; a
    weekly window has either ``utc_offset`` or ``timezone``, and so has the policy. It does not include comments
    or the source.
    """
    windows: list[dict[str, Any]] = []
    for w in policy.freeze_windows:
        entry: dict[str, Any] = {"name": w.name}
        if w.weekly:
            entry["days"] = list(w.days)
            entry["start"] = _format_minute(w.start_minute)
            entry["end"] = _format_minute(w.end_minute)
            if w.timezone:
                entry["timezone"] = w.timezone
            else:
                entry["utc_offset"] = _format_offset(w.utc_offset_minutes)
        else:
            start, end = w._span()
            entry["start"] = start.isoformat()
            entry["end"] = end.isoformat()
        if w.allow_severities:
            entry["allow_severities"] = [s.value for s in w.allow_severities]
        if w.actions:
            entry["actions"] = list(w.actions)
        windows.append(entry)
    local_time = (
        {"timezone": policy.timezone} if policy.timezone else {"utc_offset": _format_offset(policy.utc_offset_minutes)}
    )
    return {
        "version": policy.version,
        "name": policy.name,
        **local_time,
        "rules": {
            "allowed_actions": {k: list(v) for k, v in policy.allowed_actions.items()},
            "blast_radius": {
                "max_concurrent": policy.blast_radius.max_concurrent,
                "disruptive_actions": list(policy.blast_radius.disruptive_actions),
            },
            "freeze_windows": windows,
            "override_cooldown": {
                "seconds": policy.override_cooldown.seconds,
                "scope": policy.override_cooldown.scope,
            },
            "channel_hourly_cap": {"max_per_hour": policy.channel_hourly_cap.max_per_hour},
        },
    }


# --------------------------------------------------------------------------------------------------------
# parsing

_TOP_LEVEL_FIELDS = ("version", "name", "utc_offset", "timezone", "rules")
_RULE_FIELDS: dict[str, tuple[str, ...]] = {
    "allowed_actions": (),  # free-form: fault type -> actions
    "blast_radius": ("max_concurrent", "disruptive_actions"),
    "freeze_windows": ("name", "start", "end", "days", "utc_offset", "timezone", "allow_severities", "actions"),
    "override_cooldown": ("seconds", "scope"),
    "channel_hourly_cap": ("max_per_hour",),
}
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE_RE = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=""")
_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$|\s*\(at end of document\)\s*$")
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_BOTH_ZONE_AND_OFFSET = "set either timezone (a named zone) or utc_offset (a fixed offset), not both"
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_DIGITS_RE = re.compile(r"[0-9][0-9_]*")

_Path = tuple[str, ...]
_Rule = TypeVar("_Rule", BlastRadiusRule, OverrideCooldownRule, ChannelHourlyCapRule)


def _split_key(raw: str) -> _Path:
    return tuple(part.strip().strip("\"'") for part in raw.split("."))


class _Locator:
    """Finds the source line of a field by scanning the text (tomllib reports no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (0-based line index, header path, is array-of-tables)
        self.headers: list[tuple[int, _Path, bool]] = []
        for i, line in enumerate(self.lines):
            match = _HEADER_RE.match(line)
            if match:
                self.headers.append((i, _split_key(match.group(2)), match.group(1) == "[["))

    def _section(self, path: _Path, index: int | None) -> tuple[int | None, range] | None:
        """The header line index (None for the root) and the body lines of a section, if it exists."""
        if not path:
            end = self.headers[0][0] if self.headers else len(self.lines)
            return None, range(end)
        seen = 0
        for n, (i, header, is_array) in enumerate(self.headers):
            if header != path or (index is not None) != is_array:
                continue
            if index is not None and seen < index:
                seen += 1
                continue
            end = self.headers[n + 1][0] if n + 1 < len(self.headers) else len(self.lines)
            return i, range(i + 1, end)
        return None

    def _key_line(self, body: range, key: str, *, prefix: bool = False) -> int | None:
        for i in body:
            match = _KEY_LINE_RE.match(self.lines[i])
            if match:
                parts = _split_key(match.group(1))
                if parts == (key,) or (prefix and parts[0] == key):
                    return i
        return None

    def line_of(self, path: _Path, index: int | None, key: str | None) -> int | None:
        """1-based line of ``key`` in section ``path`` (the ``index``-th one for arrays of tables); falls
        back to the section header, then to the line that names the section in its parent."""
        section = self._section(path, index)
        if section is not None and key is not None:
            found = self._key_line(section[1], key)
            if found is not None:
                return found + 1
        if key is not None and index is None:
            # the field may itself be a table: [rules.unknown_rule] or [[rules.blast_radius]]
            for i, header, _ in self.headers:
                if header[: len(path) + 1] == (*path, key):
                    return i + 1
        if section is not None:
            return None if section[0] is None else section[0] + 1
        if not path:
            return None
        parent = self._section(path[:-1], None)
        if parent is not None:
            found = self._key_line(parent[1], path[-1], prefix=True)
            if found is not None:
                return found + 1
        return self.line_of(path[:-1], None, None)

    def field_at(self, line: int) -> str:
        """The dotted field named on a 1-based line (for TOML syntax errors), or its section."""
        i = line - 1
        section: _Path = ()
        array_index: dict[_Path, int] = {}
        label = ""
        for h, header, is_array in self.headers:
            if h > i:
                break
            section = header
            label = ".".join(header)
            if is_array:
                array_index[header] = array_index.get(header, -1) + 1
                label = f"{label}[{array_index[header]}]"
        if 0 <= i < len(self.lines):
            match = _KEY_LINE_RE.match(self.lines[i])
            if match and not _HEADER_RE.match(self.lines[i]):
                key = ".".join(_split_key(match.group(1)))
                return f"{label}.{key}" if section else key
        return label or "(document)"


_Zone = tuple[str, tzinfo]  # an IANA name and its tzinfo


class _Builder:
    def __init__(self, text: str, source: str, resolver: ZoneResolver | None) -> None:
        self.locator = _Locator(text)
        self.source = source
        self.resolver = resolver

    def fail(self, path: _Path, index: int | None, key: str | None, message: str) -> PolicyError:
        name = ".".join(path)
        if index is not None:
            name = f"{name}[{index}]"
        if key is not None:
            name = f"{name}.{key}" if name else key
        return PolicyError(message, field_name=name, line=self.locator.line_of(path, index, key), source=self.source)

    def check_known(self, table: Mapping[str, object], known: tuple[str, ...], path: _Path, index: int | None) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                what = "rule" if path == ("rules",) else "field"
                raise self.fail(path, index, key, f"unknown {what} {key!r} ({hint}known: {', '.join(known)})")

    def table(self, value: object, path: _Path, index: int | None = None) -> Mapping[str, object]:
        if not isinstance(value, dict):
            if index is None:
                raise self.fail(path[:-1], None, path[-1], f"must be a table, got {_type_name(value)}")
            raise self.fail(path, index, None, f"must be a table, got {_type_name(value)}")
        return cast("dict[str, object]", value)

    def build(self, data: Mapping[str, object]) -> Policy:
        self.check_known(data, _TOP_LEVEL_FIELDS, (), None)
        version = data.get("version", SUPPORTED_VERSION)
        if type(version) is not int or version != SUPPORTED_VERSION:  # not 1.0 or true
            raise self.fail((), None, "version", f"unsupported policy version {version!r} (supported: 1)")
        name = data.get("name", "default")
        try:
            _text("name", name)
        except InvalidRecord as exc:
            raise self.fail((), None, "name", exc.message) from None
        if "utc_offset" in data and "timezone" in data:
            raise self.fail((), None, "timezone", _BOTH_ZONE_AND_OFFSET)
        offset = self.offset(data.get("utc_offset", "+00:00"), (), None)
        zone = self.zone(data["timezone"], (), None) if "timezone" in data else None
        rules = self.table(data.get("rules", {}), ("rules",))
        self.check_known(rules, tuple(_RULE_FIELDS), ("rules",), None)
        sections = {
            rule: self.table(rules[rule], ("rules", rule))
            for rule in ("blast_radius", "override_cooldown", "channel_hourly_cap")
            if rule in rules
        }
        for rule, body in sections.items():
            self.check_known(body, _RULE_FIELDS[rule], ("rules", rule), None)
        allowed = self.allowed_actions(rules.get("allowed_actions", {}))
        windows = self.freeze_windows(rules.get("freeze_windows", []), offset, zone)
        blast = self.construct(BlastRadiusRule, sections.get("blast_radius", {}), ("rules", "blast_radius"))
        cooldown = self.construct(
            OverrideCooldownRule, sections.get("override_cooldown", {}), ("rules", "override_cooldown")
        )
        cap = self.construct(
            ChannelHourlyCapRule, sections.get("channel_hourly_cap", {}), ("rules", "channel_hourly_cap")
        )
        return Policy(
            name=cast("str", name),
            version=SUPPORTED_VERSION,
            utc_offset_minutes=offset,
            timezone=zone[0] if zone is not None else "",
            allowed_actions=allowed,
            blast_radius=blast,
            freeze_windows=windows,
            override_cooldown=cooldown,
            channel_hourly_cap=cap,
        )

    def construct(self, cls: type[_Rule], body: Mapping[str, object], path: _Path) -> _Rule:
        try:
            return cls(**cast("Mapping[str, Any]", body))
        except InvalidRecord as exc:
            raise self.fail(path, None, exc.field, exc.message) from None

    def allowed_actions(self, value: object) -> dict[str, tuple[str, ...]]:
        path = ("rules", "allowed_actions")
        table = self.table(value, path)
        result: dict[str, tuple[str, ...]] = {}
        seen: dict[str, str] = {}  # name_key -> the fault type as written
        for fault_type, actions in table.items():
            problem = _name_problem(fault_type)
            if problem is not None:
                raise self.fail(path, None, fault_type, f"the fault type {problem}")
            earlier = seen.setdefault(name_key(fault_type), fault_type)
            if earlier != fault_type:
                message = f"differs from {earlier!r} only in case: names are compared without case, merge the two"
                raise self.fail(path, None, fault_type, message)
            try:
                result[fault_type] = _text_tuple(fault_type, actions)
            except InvalidRecord as exc:
                raise self.fail(path, None, fault_type, exc.message) from None
        return result

    def freeze_windows(
        self, value: object, default_offset: int, default_zone: _Zone | None
    ) -> tuple[FreezeWindow, ...]:
        path = ("rules", "freeze_windows")
        if not isinstance(value, list):
            raise self.fail(("rules",), None, "freeze_windows", "must be an array of tables ([[rules.freeze_windows]])")
        windows: list[FreezeWindow] = []
        names: set[str] = set()
        for index, raw in enumerate(cast("list[object]", value)):
            body = self.table(raw, path, index)
            self.check_known(body, _RULE_FIELDS["freeze_windows"], path, index)
            for required in ("name", "start", "end"):
                if required not in body:
                    raise self.fail(path, index, required, "is required")
            kwargs: dict[str, Any] = {
                "name": body["name"],
                "allow_severities": body.get("allow_severities", ()),
                "actions": body.get("actions", ()),
            }
            if "actions" in body and body["actions"] == []:
                raise self.fail(path, index, "actions", "must not be an empty list (omit it to freeze every action)")
            if "days" in body:
                days = body["days"]
                if not isinstance(days, list) or not days:
                    raise self.fail(path, index, "days", f"must be a non-empty list of day names, got {days!r}")
                kwargs["days"] = [d.lower() if isinstance(d, str) else d for d in cast("list[object]", days)]
                kwargs["start_minute"] = self.clock(body["start"], path, index, "start", allow_24=False)
                kwargs["end_minute"] = self.clock(body["end"], path, index, "end", allow_24=True)
                if "utc_offset" in body and "timezone" in body:
                    raise self.fail(path, index, "timezone", _BOTH_ZONE_AND_OFFSET)
                zone = self.zone(body["timezone"], path, index) if "timezone" in body else default_zone
                if "utc_offset" in body:  # the window's own offset wins over the policy's timezone
                    kwargs["utc_offset_minutes"] = self.offset(body["utc_offset"], path, index)
                elif zone is not None:
                    kwargs["timezone"], kwargs["tz"] = zone
                else:
                    kwargs["utc_offset_minutes"] = default_offset
            else:
                for key in ("utc_offset", "timezone"):
                    if key in body:
                        raise self.fail(
                            path,
                            index,
                            key,
                            "only applies to weekly windows (absolute start/end carry their own offset)",
                        )
                kwargs["start"] = self.moment(body["start"], path, index, "start")
                kwargs["end"] = self.moment(body["end"], path, index, "end")
            try:
                window = FreezeWindow(**kwargs)
            except InvalidRecord as exc:
                raise self.fail(path, index, exc.field, exc.message) from None
            if window.name in names:
                raise self.fail(path, index, "name", f"duplicate freeze window name {window.name!r}")
            names.add(window.name)
            windows.append(window)
        return tuple(windows)

    def clock(self, value: object, path: _Path, index: int | None, key: str, *, allow_24: bool) -> int:
        """Minutes after midnight from "HH:MM" (or a TOML local time with zero seconds)."""
        if isinstance(value, time) and value.tzinfo is None and value.second == 0 and value.microsecond == 0:
            return value.hour * 60 + value.minute
        match = _HHMM_RE.match(value) if isinstance(value, str) else None
        if match:
            hours, minutes = int(match.group(1)), int(match.group(2))
            if (hours < 24 and minutes < 60) or (allow_24 and hours == 24 and minutes == 0):
                return hours * 60 + minutes
        top = "24:00" if allow_24 else "23:59"
        raise self.fail(path, index, key, f'must be a time "HH:MM" from 00:00 to {top}, got {value!r}')

    def moment(self, value: object, path: _Path, index: int | None, key: str) -> datetime:
        """An aware datetime from a TOML offset date-time or an ISO-8601 string with an offset."""
        hint = "must be a date-time with a UTC offset, e.g. 2025-12-24T00:00:00+01:00"
        parsed: datetime | None = None
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            if _HHMM_RE.match(value):
                raise self.fail(path, index, key, f"{hint} (for a weekly window add days = [...]), got {value!r}")
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(path, index, key, f"{hint}, got {value!r}") from None
        if parsed is None or parsed.utcoffset() is None:
            shown = parsed.isoformat() if parsed is not None else value
            raise self.fail(path, index, key, f"{hint}, got {shown!r}")
        return parsed

    def offset(self, value: object, path: _Path, index: int | None) -> int:
        """Minutes east of UTC from "+HH:MM" / "-HH:MM" (or "Z")."""
        if value == "Z":
            return 0
        match = _OFFSET_RE.match(value) if isinstance(value, str) else None
        if match and int(match.group(2)) < 24 and int(match.group(3)) < 60:
            minutes = int(match.group(2)) * 60 + int(match.group(3))
            return -minutes if match.group(1) == "-" else minutes
        hint = ' (for a named time zone use timezone = "...")' if isinstance(value, str) and "/" in value else ""
        raise self.fail(path, index, "utc_offset", f'must be a fixed offset "+HH:MM" or "-HH:MM", got {value!r}{hint}')

    def zone(self, value: object, path: _Path, index: int | None) -> _Zone:
        """An IANA time-zone name and its tzinfo from the resolver."""
        example = 'an IANA time zone name like "Europe/Berlin" or "America/New_York"'
        if not isinstance(value, str) or not value.strip():
            shown = repr(value) if isinstance(value, str) else _type_name(value)
            raise self.fail(path, index, "timezone", f"must be {example}, got {shown}")
        if value != value.strip():
            raise self.fail(path, index, "timezone", f"must be {example} without surrounding blanks, got {value!r}")
        if value == "Z" or _OFFSET_RE.match(value):
            raise self.fail(
                path, index, "timezone", f'must be {example}, got {value!r} (for a fixed offset use utc_offset = "...")'
            )
        if self.resolver is None:
            raise self.fail(
                path,
                index,
                "timezone",
                f"cannot resolve the time zone {value!r}: named time zones need a zone resolver "
                "(parse_policy(..., zone=zoneinfo.ZoneInfo))",
            )
        try:
            tz = self.resolver(value)
        except (LookupError, ValueError, OSError):
            raise self.fail(path, index, "timezone", f"unknown time zone {value!r}: must be {example}") from None
        try:
            _check_zone("timezone", value, tz)
        except InvalidRecord as exc:
            raise self.fail(path, index, "timezone", exc.message) from None
        return value, tz


def parse_policy(text: str, source: str = "policy.toml", *, zone: ZoneResolver | None = None) -> Policy:
    """Parse a TOML policy (the file's text; ``source`` is its name for messages) into a :class:`Policy`.

    Every rule and field is optional (defaults as in :data:`DEFAULT_POLICY_TEXT`). A leading byte-order mark
    is ignored. ``zone`` resolves the IANA names of ``timezone`` fields (e.g. ``zoneinfo.ZoneInfo``); without
    it a policy that names a zone is refused. Raises :class:`PolicyError` naming the line and field for TOML
    syntax errors, wrong types, out-of-range values, bad times, unknown time zones, malformed fault-type or
    action names (empty, not strings, surrounding blanks) and unknown top-level keys, rules or fields. It
    does not read the file and does not check that fault types or actions exist anywhere.
    """
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors save it
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line: int | None = getattr(exc, "lineno", None)
        locator = _Locator(text)
        match = _TOML_POSITION_RE.search(message)
        if match:
            message = message[: match.start()]
            if line is None:
                # "(at end of document)": report the last line
                line = int(match.group(1)) if match.group(1) else max(len(locator.lines), 1)
        field_name = locator.field_at(line) if line is not None else "(document)"
        raise PolicyError(f"invalid TOML: {message}", field_name=field_name, line=line, source=source) from None
    except ValueError:  # not a TOMLDecodeError: an integer beyond Python's digit limit (4300), which has no position
        locator = _Locator(text)
        lengths = [max(map(len, _DIGITS_RE.findall(row)), default=0) for row in locator.lines]
        line = lengths.index(max(lengths)) + 1  # the line with the longest number
        message = "invalid TOML: an integer with too many digits"
        raise PolicyError(message, field_name=locator.field_at(line), line=line, source=source) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        message = "invalid TOML: arrays or inline tables nested too deeply"
        raise PolicyError(message, field_name="(document)", line=None, source=source) from None
    return _Builder(text, source, zone).build(data)


DEFAULT_POLICY_TEXT = """# NPO Safety Policy Engine: the default policy.
#
# Hard guardrails evaluated before any recommendation is surfaced, in this order:
#   allowed_actions, freeze_windows, blast_radius, override_cooldown -> "block" (the first one wins)
#   channel_hourly_cap                                              -> "digest" (folded in, never dropped)
# Every verdict names the rule that produced it ("all_rules_passed" when none did).
# Every section and field is optional; an omitted one takes the default shown here. Unknown sections and
# fields are an error, so a typo cannot silently disable a guardrail.

version = 1
name = "default"

# Local time for weekly freeze windows that do not set their own: either a fixed UTC offset, utc_offset =
# "+HH:MM" or "-HH:MM" (no daylight-saving rules), or an IANA time zone name such as timezone = "Europe/Berlin"
# (its daylight-saving changes are followed); one or the other, not both. Default utc_offset = "+00:00".
utc_offset = "+00:00"

# Actions allowed per fault type. A "*" entry is the fallback for fault types that are not listed. A fault
# type with no entry (and no "*") may take any action: the rule is opt-in. Default: no entries, so every
# action is allowed.
# Fault types and action names, here and in every other rule, are compared with the predictions' "fault_type"
# and "action" without case ("Reboot" matches "reboot"; ASCII letters only, other characters as they are).
# They are not checked against a list (a predictor may send any action), so a misspelt name is accepted and
# simply never matches; an empty name, one with leading or trailing blanks, one that is not a string, or two
# fault types differing only in case are refused. Example:
#   disk_failure = ["drain", "replace_disk", "migrate_vms", "investigate", "none"]
#   "*" = ["drain", "replace_disk", "reboot", "restart_service", "migrate_vms", "failover", "reimage",
#          "power_cycle", "investigate", "none"]
[rules.allowed_actions]

# Blast radius: a disruptive action is blocked while its cluster already has max_concurrent open (surfaced,
# unresolved) disruptive recommendations. The cluster is the prediction's "cluster" label, else the first
# non-empty dash/dot segment of its target ("r12-n04" -> "r12"). Actions are compared without surrounding
# blanks and without case ("Drain" is disruptive too). max_concurrent is a positive integer; an empty
# disruptive_actions list turns the rule off. Defaults shown.
[rules.blast_radius]
max_concurrent = 2
disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]

# Freeze windows: inside a window nothing is surfaced (or, with `actions`, only those actions are held back)
# unless the prediction's severity is listed in allow_severities. Default: no windows. Two forms:
#
#   [[rules.freeze_windows]]            # absolute: date-times with a UTC offset; end is exclusive
#   name = "year-end change freeze"
#   start = 2025-12-24T00:00:00+01:00   # a TOML date-time or an ISO-8601 string; the offset is required
#   end = 2026-01-02T00:00:00+01:00
#   allow_severities = ["critical"]     # info, warning, critical; default: none exempt
#
#   [[rules.freeze_windows]]            # weekly: opens on each listed day; end < start wraps past midnight
#   name = "weekend"
#   days = ["sat", "sun"]               # mon tue wed thu fri sat sun
#   start = "00:00"                     # "HH:MM", local time
#   end = "24:00"                       # "24:00" is the end of the day
#   utc_offset = "+01:00"               # default: the top-level utc_offset or timezone
#   actions = ["reboot", "reimage", "power_cycle"]   # default: every action
#
#   [[rules.freeze_windows]]
#   name = "nights"
#   days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#   start = "22:00"
#   end = "06:00"
#   timezone = "Europe/Berlin"          # instead of utc_offset: 22:00-06:00 on the local clock all year
#
# With a timezone a weekly window is in force whenever the local clock shows a time inside it: when clocks
# go forward a skipped time opens (or closes) the window at the end of the gap; when they go back, a repeated
# hour inside the window is frozen both times.

# After an engineer overrides a recommendation, nothing with the same scenario key and/or target is surfaced
# for `seconds` (a non-negative number; 0 turns the rule off). scope is "key", "target" or "both".
# Defaults shown.
[rules.override_cooldown]
seconds = 3600
scope = "both"

# At most max_per_hour (a positive integer) recommendations are surfaced per channel per hour; the excess
# goes into a digest message (outcome "digest"), never dropped. Default shown.
[rules.channel_hourly_cap]
max_per_hour = 20
"""

DEFAULT_POLICY: Policy = parse_policy(DEFAULT_POLICY_TEXT, "default_policy.toml")
