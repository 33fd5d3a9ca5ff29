"""Freeze windows of the Safety Policy: :class:`FreezeWindow` (absolute or weekly, at a fixed UTC offset or in
an IANA time zone) and the time-zone and clock-time helpers it shares with the policy's TOML form.
``npo.policy`` re-exports :class:`FreezeWindow`."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from npo.policy_base import WEEKDAYS, _text, _text_tuple, _type_name, name_key
from npo.types import InvalidRecord, Severity

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
# A weekly window in a named zone is placed on the calendar (its opening and closing instants worked out from the
# local dates around ``now``) between these instants; outside them, by the zone's offset at the nearest of them.
_CALENDAR_FIRST = _FIRST_INSTANT + _SECONDS_PER_WEEK
_CALENDAR_LAST = _LAST_INSTANT - _SECONDS_PER_WEEK


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


def _wall(tz: tzinfo, instant: float) -> datetime:
    """The local wall-clock time (naive) of the zone at ``instant`` (Unix seconds)."""
    return (_EPOCH + timedelta(seconds=instant)).astimezone(tz).replace(tzinfo=None)


def _first_instant(tz: tzinfo, wall: datetime) -> float:
    """The first instant (Unix seconds) at which the zone's clock shows ``wall`` (a naive local time) or later:
    ``wall`` itself; its first occurrence when the clocks going back show it twice; the end of the gap (the instant
    of the change) when the clocks going forward skip it."""
    candidates = [wall.replace(tzinfo=tz, fold=fold).timestamp() for fold in (0, 1)]
    shown = [instant for instant in candidates if _wall(tz, instant) == wall]
    if shown:
        return min(shown)
    # skipped: the clock is before ``wall`` at the earlier candidate and past it at the later one, with the change
    # in between (a whole second, as zone rules are); bisect for the instant of the change
    before, after = math.floor(min(candidates)), math.ceil(max(candidates))
    if _wall(tz, before) >= wall or _wall(tz, after) < wall:
        return min(candidates)  # not reached with a zone whose changes are at least a gap apart
    while after - before > 1:
        middle = (before + after) // 2
        if _wall(tz, middle) >= wall:
            after = middle
        else:
            before = middle
    return float(after)


def _day_span(tz: tzinfo, ordinal: int, start_minute: int, end_minute: int) -> tuple[float, float]:
    """The instants (Unix seconds) a weekly window in ``tz`` opens and closes on the day ``ordinal``
    (:meth:`date.toordinal`): the first instants the clock shows its start and its end (the next day's for an end
    before the start)."""
    midnight = datetime.fromordinal(ordinal)
    end = end_minute if end_minute > start_minute else end_minute + _MINUTES_PER_DAY
    opens = _first_instant(tz, midnight + timedelta(minutes=start_minute))
    return opens, _first_instant(tz, midnight + timedelta(minutes=end))


# a pure function of its arguments, asked for the same few days over and over (a policy is evaluated for every
# prediction); a tzinfo that cannot be hashed is worked out each time
_day_span_cached = functools.lru_cache(maxsize=1024)(_day_span)


def _format_minute(minute: int) -> str:
    hours, mins = divmod(minute, 60)
    return f"{hours:02d}:{mins:02d}"


@dataclass(frozen=True, slots=True)
class FreezeWindow:
    """A period during which recommendations are held back (blocked).

    Absolute form: ``start``/``end`` are timezone-aware datetimes; the window is ``start <= now < end``.
    Weekly form (``days`` non-empty): the window opens on each listed day (``"mon"`` … ``"sun"``) at
    ``start_minute`` minutes after local midnight and closes at ``end_minute`` (1440 = 24:00); an end before
    the start wraps past midnight into the next day. Local time is either UTC shifted by the fixed
    ``utc_offset_minutes`` (no daylight-saving rules), or, when ``timezone`` names an IANA zone, the wall-clock
    time in that zone (``tz``, its tzinfo, supplied by the caller's resolver; ``utc_offset_minutes`` is then 0).
    With a zone each listed day's window is one unbroken period of instants, from the first instant the local clock
    shows the start time (or a later one) to the first instant it shows the end time (or a later one), so it keeps
    the wall-clock period written across a daylight-saving change (shorter or longer by the change in elapsed time):

    * a time the clocks going forward skip is taken at the end of the gap: with 02:00 followed by 03:00, a window
      02:30-04:00 opens at 03:00 and one 01:00-02:30 closes at 03:00; one wholly inside the gap (02:15-02:45) is
      not in force that day;
    * a time the clocks going back show twice is taken at its first occurrence: with 02:00 summer time followed by
      01:00 winter time, a window 01:00-01:45 is frozen once, 01:00-01:45 summer time (not again when the clock
      shows 01:00-01:45 a second time); 01:30-03:00 is frozen from 01:30 summer time to 03:00 winter time without
      a break, and 00:00-06:00 for seven hours.

    No instant is frozen by a second pass of the clock over the window, and none is lifted partway through it
    (the weekly summary's trigger also takes a repeated time at its first occurrence). A window that wraps past
    midnight (22:00-06:00) is likewise one period when the change falls in that night.

    ``allow_severities`` are exempt from the freeze; ``actions``, when non-empty, limits the freeze to those actions.
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
        if self.tz is not None and _CALENDAR_FIRST <= now <= _CALENDAR_LAST:
            return self._open_in_zone(self.tz, now)
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

    def _open_in_zone(self, tz: tzinfo, now: float) -> bool:
        """Whether one listed day's window, placed on the calendar of ``tz`` (class docstring), covers ``now``.
        A window lasts less than a day on the clock and the clock steps back by hours at most, so the day it
        opened on is the local date at ``now``, the day before, or the day after."""
        today = (_EPOCH + timedelta(seconds=now)).astimezone(tz).toordinal()
        span = _day_span if type(tz).__hash__ is None else _day_span_cached
        for ordinal in (today - 1, today, today + 1):
            if WEEKDAYS[(ordinal + 6) % 7] in self.days:  # ordinal 1 (0001-01-01) was a Monday
                opens, closes = span(tz, ordinal, self.start_minute, self.end_minute)
                if opens <= now < closes:
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
