"""Weekly freeze windows in a named time zone on the days the clocks change: each listed day's window is one
unbroken period, from the first instant the clock shows its start (the end of the gap for a skipped time, the first
occurrence of a repeated one) to the first instant it shows its end. Every case is walked minute by minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from npo.policy import FreezeWindow, PolicyError, parse_policy

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def hhmm(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def window(tz: ZoneInfo, day: str, start: str, end: str) -> FreezeWindow:
    return FreezeWindow("w", days=(day,), start_minute=hhmm(start), end_minute=hhmm(end), timezone=tz.key, tz=tz)


def frozen(w: FreezeWindow, since: datetime, hours: int = 30) -> list[tuple[str, str, int]]:
    """The periods ``w`` is open in the ``hours`` from ``since``, walked a minute at a time: (opened, closed) as the
    local clock shows them, with the zone's abbreviation, and the minutes between them."""
    assert w.tz is not None
    first = int(since.timestamp())
    periods: list[tuple[str, str, int]] = []
    opened: int | None = None
    for minute in range(hours * 60 + 1):
        instant = first + 60 * minute
        if w.is_open(instant) and opened is None:
            opened = instant
        elif not w.is_open(instant) and opened is not None:
            periods.append((show(w, opened), show(w, instant), (instant - opened) // 60))
            opened = None
    assert opened is None, "the walk must end outside the window"
    return periods


def show(w: FreezeWindow, instant: int) -> str:
    assert w.tz is not None
    return datetime.fromtimestamp(instant, UTC).astimezone(w.tz).strftime("%a %H:%M %Z")


def evening_before(tz: ZoneInfo, year: int, month: int, day: int) -> datetime:
    """18:00 local on the day before the given date."""
    return datetime(year, month, day, 18, tzinfo=tz) - timedelta(days=1)


# ---------------------------------------------------------------------------------------------- spring forward
# 2025-03-30 Europe/Berlin: 02:00 CET is followed by 03:00 CEST; 2025-03-09 America/New_York: 02:00 EST by 03:00 EDT


SPRING = [
    pytest.param(BERLIN, (2025, 3, 30), "CET", "CEST", id="berlin"),
    pytest.param(NEW_YORK, (2025, 3, 9), "EST", "EDT", id="new-york"),
]


@pytest.mark.parametrize(("tz", "change", "winter", "summer"), SPRING)
def test_a_start_the_clocks_skip_opens_the_window_at_the_end_of_the_gap(
    tz: ZoneInfo, change: tuple[int, int, int], winter: str, summer: str
) -> None:
    since = evening_before(tz, *change)
    assert frozen(window(tz, "sun", "02:30", "04:00"), since) == [(f"Sun 03:00 {summer}", f"Sun 04:00 {summer}", 60)]


@pytest.mark.parametrize(("tz", "change", "winter", "summer"), SPRING)
def test_an_end_the_clocks_skip_closes_the_window_at_the_end_of_the_gap(
    tz: ZoneInfo, change: tuple[int, int, int], winter: str, summer: str
) -> None:
    since = evening_before(tz, *change)
    assert frozen(window(tz, "sun", "01:00", "02:30"), since) == [(f"Sun 01:00 {winter}", f"Sun 03:00 {summer}", 60)]


@pytest.mark.parametrize(("tz", "change", "winter", "summer"), SPRING)
def test_a_window_wholly_inside_the_gap_is_not_in_force_that_day(
    tz: ZoneInfo, change: tuple[int, int, int], winter: str, summer: str
) -> None:
    w = window(tz, "sun", "02:15", "02:45")
    since = evening_before(tz, *change)
    assert frozen(w, since) == []
    assert frozen(w, since + timedelta(days=7)) == [(f"Sun 02:15 {summer}", f"Sun 02:45 {summer}", 30)]


@pytest.mark.parametrize(("tz", "change", "winter", "summer"), SPRING)
def test_a_night_window_across_the_spring_change_is_one_period_an_hour_short(
    tz: ZoneInfo, change: tuple[int, int, int], winter: str, summer: str
) -> None:
    since = evening_before(tz, *change)
    assert frozen(window(tz, "sat", "22:00", "06:00"), since) == [
        (f"Sat 22:00 {winter}", f"Sun 06:00 {summer}", 7 * 60)
    ]


# ---------------------------------------------------------------------------------------------- autumn back
# 2025-10-26 Europe/Berlin: 03:00 CEST is followed by 02:00 CET (02:00-03:00 shown twice);
# 2025-11-02 America/New_York: 02:00 EDT by 01:00 EST (01:00-02:00 shown twice)

AUTUMN = [
    pytest.param(BERLIN, (2025, 10, 26), 2, "CEST", "CET", id="berlin"),
    pytest.param(NEW_YORK, (2025, 11, 2), 1, "EDT", "EST", id="new-york"),
]


@pytest.mark.parametrize(("tz", "change", "hour", "summer", "winter"), AUTUMN)
def test_a_window_inside_the_repeated_hour_is_frozen_once_at_its_first_occurrence(
    tz: ZoneInfo, change: tuple[int, int, int], hour: int, summer: str, winter: str
) -> None:
    since = evening_before(tz, *change)
    w = window(tz, "sun", f"{hour:02d}:00", f"{hour:02d}:45")
    assert frozen(w, since) == [(f"Sun {hour:02d}:00 {summer}", f"Sun {hour:02d}:45 {summer}", 45)]
    # the end of the repeated hour first shows on the clock after its second pass: both passes, one period
    w = window(tz, "sun", f"{hour:02d}:00", f"{hour + 1:02d}:00")
    assert frozen(w, since) == [(f"Sun {hour:02d}:00 {summer}", f"Sun {hour + 1:02d}:00 {winter}", 120)]


@pytest.mark.parametrize(("tz", "change", "hour", "summer", "winter"), AUTUMN)
def test_a_window_ending_in_the_repeated_hour_is_not_frozen_again_by_its_second_pass(
    tz: ZoneInfo, change: tuple[int, int, int], hour: int, summer: str, winter: str
) -> None:
    since = evening_before(tz, *change)
    w = window(tz, "sun", f"{hour - 1:02d}:30", f"{hour:02d}:30")
    assert frozen(w, since) == [(f"Sun {hour - 1:02d}:30 {summer}", f"Sun {hour:02d}:30 {summer}", 60)]


@pytest.mark.parametrize(("tz", "change", "hour", "summer", "winter"), AUTUMN)
def test_a_window_starting_in_the_repeated_hour_is_not_lifted_when_the_clock_goes_back(
    tz: ZoneInfo, change: tuple[int, int, int], hour: int, summer: str, winter: str
) -> None:
    since = evening_before(tz, *change)
    w = window(tz, "sun", f"{hour:02d}:30", f"{hour + 2:02d}:00")
    assert frozen(w, since) == [(f"Sun {hour:02d}:30 {summer}", f"Sun {hour + 2:02d}:00 {winter}", 150)]


@pytest.mark.parametrize(("tz", "change", "hour", "summer", "winter"), AUTUMN)
def test_a_night_window_across_the_autumn_change_is_one_period_an_hour_long(
    tz: ZoneInfo, change: tuple[int, int, int], hour: int, summer: str, winter: str
) -> None:
    since = evening_before(tz, *change)
    assert frozen(window(tz, "sat", "22:00", "06:00"), since) == [
        (f"Sat 22:00 {summer}", f"Sun 06:00 {winter}", 9 * 60)
    ]
    assert frozen(window(tz, "sun", "00:00", "06:00"), since) == [
        (f"Sun 00:00 {summer}", f"Sun 06:00 {winter}", 7 * 60)
    ]


# ------------------------------------------------------------------------------ changes at midnight, half hours


def test_a_change_at_midnight_america_santiago() -> None:
    """Santiago changes at 24:00: on 2025-04-05 24:00 -03 is 23:00 -04 (Saturday 23:00-24:00 shown twice); on
    2025-09-06 24:00 -04 is 01:00 -03 (Sunday 00:00-01:00 skipped)."""
    autumn = datetime(2025, 4, 5, 12, tzinfo=SANTIAGO)
    assert frozen(window(SANTIAGO, "sat", "22:00", "24:00"), autumn) == [("Sat 22:00 -03", "Sun 00:00 -04", 180)]
    assert frozen(window(SANTIAGO, "sat", "23:00", "23:30"), autumn) == [("Sat 23:00 -03", "Sat 23:30 -03", 30)]
    assert frozen(window(SANTIAGO, "sat", "23:30", "00:30"), autumn) == [("Sat 23:30 -03", "Sun 00:30 -04", 120)]
    spring = datetime(2025, 9, 6, 12, tzinfo=SANTIAGO)
    assert frozen(window(SANTIAGO, "sat", "22:00", "24:00"), spring) == [("Sat 22:00 -04", "Sun 01:00 -03", 120)]
    assert frozen(window(SANTIAGO, "sun", "00:00", "02:00"), spring) == [("Sun 01:00 -03", "Sun 02:00 -03", 60)]
    assert frozen(window(SANTIAGO, "sun", "00:15", "00:45"), spring) == []


def test_a_half_hour_change_australia_lord_howe() -> None:
    """Lord Howe moves its clocks by half an hour: on 2025-04-06 02:00 +11 is 01:30 +1030."""
    since = datetime(2025, 4, 5, 18, tzinfo=LORD_HOWE)
    assert frozen(window(LORD_HOWE, "sun", "01:30", "01:50"), since) == [("Sun 01:30 +11", "Sun 01:50 +11", 20)]
    # 02:00 first shows after the repeated half hour, so a window ending then covers both passes
    assert frozen(window(LORD_HOWE, "sun", "01:30", "02:00"), since) == [("Sun 01:30 +11", "Sun 02:00 +1030", 60)]
    assert frozen(window(LORD_HOWE, "sun", "01:45", "03:00"), since) == [("Sun 01:45 +11", "Sun 03:00 +1030", 105)]


# ------------------------------------------------------------------------------------ absolute windows


def test_an_absolute_window_with_a_naive_time_is_refused_even_with_a_policy_zone() -> None:
    """Absolute windows carry their own offset: a local date-time is not read in the policy's zone (which would
    be ambiguous on an autumn night), it is refused with the line at fault."""
    for start in ("2025-10-26T02:30:00", '"2025-10-26T02:30"'):
        text = (
            'timezone = "Europe/Berlin"\n[[rules.freeze_windows]]\nname = "w"\n'
            f"start = {start}\nend = 2025-10-27T00:00:00+01:00\n"
        )
        with pytest.raises(PolicyError, match=r"line 4, field rules\.freeze_windows\[0\]\.start: .*UTC offset"):
            parse_policy(text, zone=ZoneInfo)
    # with the offset written, the window is exactly the instants between start and end
    policy = parse_policy(
        '[[rules.freeze_windows]]\nname = "w"\nstart = 2025-10-26T02:30:00+02:00\nend = 2025-10-26T02:30:00+01:00\n'
    )
    w = policy.freeze_windows[0]
    opens = datetime(2025, 10, 26, 0, 30, tzinfo=UTC).timestamp()
    assert not w.is_open(opens - 1) and w.is_open(opens) and w.is_open(opens + 3599) and not w.is_open(opens + 3600)


class _Unhashable(tzinfo):
    """+01:00 all year, a tzinfo that defines equality and so cannot be hashed."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "+01"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable)

    __hash__ = None  # type: ignore[assignment]  # what defining __eq__ alone does


def test_a_zone_whose_tzinfo_cannot_be_hashed_is_taken_too() -> None:
    tz = _Unhashable()
    w = FreezeWindow("w", days=("sun",), start_minute=hhmm("22:00"), end_minute=hhmm("06:00"), timezone="X/Y", tz=tz)
    sunday = datetime(2025, 6, 15, 22, tzinfo=tz)
    assert not w.is_open(sunday.timestamp() - 1)
    assert w.is_open(sunday.timestamp()) and w.is_open(sunday.timestamp() + 8 * 3600 - 1)
    assert not w.is_open(sunday.timestamp() + 8 * 3600)
