"""Safety Policy Engine: parsing (with line/field errors), each rule, evaluation order, and properties."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.policy import (
    ALL_RULES_PASSED,
    DEFAULT_POLICY,
    DEFAULT_POLICY_TEXT,
    RULE_NAMES,
    BlastRadiusRule,
    ChannelHourlyCapRule,
    FreezeWindow,
    OverrideCooldownRule,
    Policy,
    PolicyContext,
    PolicyError,
    PolicyVerdict,
    evaluate,
    parse_policy,
    policy_to_dict,
)
from npo.types import InvalidRecord, Prediction, Severity

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TYPICAL_ACTIONS = [
    "drain",
    "replace_disk",
    "reboot",
    "restart_service",
    "migrate_vms",
    "failover",
    "reimage",
    "power_cycle",
    "investigate",
    "none",
]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, offset_minutes: int = 0) -> float:
    """Unix seconds of a wall-clock time at a fixed UTC offset."""
    tz = timezone(timedelta(minutes=offset_minutes))
    return datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


# 2025-06-11 is a Wednesday; 13 Fri, 14 Sat, 15 Sun, 16 Mon.
NOW = at(2025, 6, 11, 12, 0)


def pred(
    fault_type: str = "disk_failure",
    action: str = "drain",
    target: str = "r12-n04",
    severity: str = "warning",
    labels: dict[str, str] | None = None,
) -> Prediction:
    return Prediction(
        id="p1",
        fault_type=fault_type,
        target=target,
        action=action,
        confidence=0.9,
        severity=Severity(severity),
        labels=labels or {},
        channel="#oncall",
    )


def ctx(now: float = NOW, **kwargs: Any) -> PolicyContext:
    return PolicyContext(now=now, **kwargs)


def check(
    policy: Policy,
    prediction: Prediction | None = None,
    context: PolicyContext | None = None,
    *,
    key: str = "k1",
    channel: str = "#oncall",
) -> PolicyVerdict:
    return evaluate(policy, prediction or pred(), key, channel, context or ctx())


# ----------------------------------------------------------------------------------- default


def test_default_policy_file_equals_embedded_text() -> None:
    path = Path(__file__).parents[2] / "npo" / "default_policy.toml"
    assert path.read_text(encoding="utf-8") == DEFAULT_POLICY_TEXT


def test_default_policy_parses_and_matches_documented_defaults() -> None:
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    assert policy == DEFAULT_POLICY == Policy() == parse_policy("")
    assert policy.name == "default"
    assert policy.version == 1
    assert dict(policy.allowed_actions) == {}
    assert policy.freeze_windows == ()
    assert policy.blast_radius.max_concurrent == 2
    assert policy.blast_radius.disruptive_actions == ("drain", "reboot", "reimage", "power_cycle", "failover")
    assert policy.blast_radius.stale_after_seconds == 86400  # an open recommendation counts a day past its fault
    assert policy.override_cooldown.seconds == 3600
    assert policy.override_cooldown.scope == "both"
    assert policy.channel_hourly_cap.max_per_hour == 20


def test_default_policy_allows_the_reference_prediction() -> None:
    prediction = Prediction(
        id="p1",
        fault_type="disk_failure",
        target="r12-n04",
        action="drain",
        confidence=0.99,
        severity=Severity.CRITICAL,
    )
    verdict = evaluate(DEFAULT_POLICY, prediction, "disk_failure|drain", "#oncall", PolicyContext(now=NOW))
    assert verdict == PolicyVerdict("allow", ALL_RULES_PASSED, "all rules passed")
    assert verdict.allowed


@pytest.mark.parametrize("action", TYPICAL_ACTIONS)
@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_default_policy_allows_typical_actions(action: str, severity: str) -> None:
    for fault_type in ("disk_failure", "memory_ecc", "network_flap"):
        verdict = check(DEFAULT_POLICY, pred(fault_type=fault_type, action=action, severity=severity))
        assert verdict.outcome == "allow", verdict


# --------------------------------------------------------------------------- allowed_actions

ALLOWED = parse_policy(
    """
[rules.allowed_actions]
disk_failure = ["drain", "replace_disk"]
memory_ecc = []
"""
)
ALLOWED_WITH_FALLBACK = parse_policy(
    """
[rules.allowed_actions]
disk_failure = ["drain", "replace_disk"]
"*" = ["investigate", "none"]
"""
)


def test_allowed_actions_blocks_an_action_not_listed_for_the_fault_type() -> None:
    verdict = check(ALLOWED, pred(action="reboot"))
    assert verdict == PolicyVerdict(
        "block",
        "allowed_actions",
        "action 'reboot' is not allowed for fault_type 'disk_failure' (allowed: drain, replace_disk)",
    )


@pytest.mark.parametrize("action", ["drain", "replace_disk"])
def test_allowed_actions_allows_listed_actions(action: str) -> None:
    assert check(ALLOWED, pred(action=action)).outcome == "allow"


def test_allowed_actions_is_opt_in_for_unlisted_fault_types_without_fallback() -> None:
    assert check(ALLOWED, pred(fault_type="psu_failure", action="power_cycle")).outcome == "allow"


def test_allowed_actions_empty_list_allows_nothing() -> None:
    verdict = check(ALLOWED, pred(fault_type="memory_ecc", action="investigate"))
    assert verdict.outcome == "block"
    assert verdict.rule == "allowed_actions"
    assert "(allowed: no actions)" in verdict.reason


def test_allowed_actions_star_is_the_fallback_for_unlisted_fault_types() -> None:
    assert check(ALLOWED_WITH_FALLBACK, pred(fault_type="psu_failure", action="investigate")).allowed
    verdict = check(ALLOWED_WITH_FALLBACK, pred(fault_type="psu_failure", action="power_cycle"))
    assert verdict.outcome == "block"
    assert verdict.rule == "allowed_actions"
    assert "'power_cycle'" in verdict.reason
    assert "'psu_failure'" in verdict.reason
    assert "'*' fallback" in verdict.reason
    assert "investigate, none" in verdict.reason
    # a listed fault type uses its own entry, not the fallback
    assert check(ALLOWED_WITH_FALLBACK, pred(fault_type="disk_failure", action="drain")).allowed
    assert check(ALLOWED_WITH_FALLBACK, pred(fault_type="disk_failure", action="investigate")).outcome == "block"


# ------------------------------------------------------------------------------ blast_radius

BLAST = parse_policy(
    """
[rules.blast_radius]
max_concurrent = 2
disruptive_actions = ["drain", "reboot"]
"""
)


def test_blast_radius_blocks_disruptive_action_at_the_cluster_limit() -> None:
    verdict = check(BLAST, pred(action="drain", target="r12-n04"), ctx(active_disruptive_by_cluster={"r12": 2}))
    assert verdict.outcome == "block"
    assert verdict.rule == "blast_radius"
    assert verdict.reason == (
        "cluster 'r12' already has 2 open disruptive recommendation(s) (max_concurrent 2); action 'drain' is disruptive"
    )


def test_blast_radius_allows_below_the_limit_and_other_clusters() -> None:
    assert check(BLAST, pred(action="drain"), ctx(active_disruptive_by_cluster={"r12": 1})).allowed
    assert check(BLAST, pred(action="drain"), ctx(active_disruptive_by_cluster={"r13": 9})).allowed


def test_an_action_with_surrounding_blanks_is_the_same_action_for_every_guardrail() -> None:
    """``"reboot "`` (a stray space, a YAML block scalar's trailing newline) passed the blast radius and action-scoped
    freeze windows that name ``reboot``: the guardrails compared the text as sent."""
    full = ctx(active_disruptive_by_cluster={"r12": 2})
    for action in ("reboot ", " reboot", "reboot\n", "\treboot\r\n"):
        verdict = check(BLAST, pred(action=action, target="r12-n04"), full)
        assert (verdict.outcome, verdict.rule) == ("block", "blast_radius"), action


def test_a_blank_cluster_label_or_an_empty_first_segment_does_not_make_a_cluster_of_one() -> None:
    """A cluster of one host is a blast radius of one host: the limit would never bind."""
    full = ctx(active_disruptive_by_cluster={"web": 2})
    for target, labels in ((".web-1", {}), ("-web-2", {}), ("web-3", {"cluster": " "})):
        verdict = check(BLAST, pred(action="drain", target=target, labels=labels), full)
        assert verdict.rule == "blast_radius", (target, labels)


def test_blast_radius_ignores_non_disruptive_actions() -> None:
    context = ctx(active_disruptive_by_cluster={"r12": 9})
    assert check(BLAST, pred(action="replace_disk"), context).allowed
    assert check(BLAST, pred(action="reimage"), context).allowed  # not in this policy's list


def test_blast_radius_uses_the_cluster_label_when_present() -> None:
    prediction = pred(action="reboot", target="r12-n04", labels={"cluster": "east"})
    assert check(BLAST, prediction, ctx(active_disruptive_by_cluster={"r12": 5})).allowed
    verdict = check(BLAST, prediction, ctx(active_disruptive_by_cluster={"east": 2}))
    assert verdict.rule == "blast_radius"
    assert "'east'" in verdict.reason


def test_blast_radius_with_no_disruptive_actions_is_off() -> None:
    policy = parse_policy("[rules.blast_radius]\ndisruptive_actions = []\n")
    assert check(policy, pred(action="drain"), ctx(active_disruptive_by_cluster={"r12": 99})).allowed


# ---------------------------------------------------------------------------- freeze windows

ABSOLUTE = parse_policy(
    """
[[rules.freeze_windows]]
name = "year-end"
start = 2025-12-24T00:00:00+01:00
end = "2026-01-02T00:00:00+01:00"
"""
)


@pytest.mark.parametrize(
    ("now", "blocked"),
    [
        (at(2025, 12, 23, 22, 59), False),  # 23:59 on the 23rd at +01:00
        (at(2025, 12, 23, 23, 0), True),  # start is inclusive: 00:00 +01:00
        (at(2025, 12, 28, 12, 0), True),
        (at(2026, 1, 1, 22, 59), True),
        (at(2026, 1, 1, 23, 0), False),  # end is exclusive
    ],
)
def test_absolute_freeze_window(now: float, blocked: bool) -> None:
    verdict = check(ABSOLUTE, pred(), ctx(now))
    assert (verdict.outcome == "block") is blocked
    if blocked:
        assert verdict.rule == "freeze_window"
        assert "'year-end'" in verdict.reason
        assert "2025-12-24T00:00:00+01:00 to 2026-01-02T00:00:00+01:00" in verdict.reason
        assert "severity 'warning' is not exempt" in verdict.reason


WEEKEND = parse_policy(
    """
[[rules.freeze_windows]]
name = "weekend"
days = ["sat", "SUN"]
start = "00:00"
end = "24:00"
"""
)


@pytest.mark.parametrize(
    ("now", "blocked"),
    [
        (at(2025, 6, 13, 23, 59), False),  # Friday
        (at(2025, 6, 14, 0, 0), True),  # Saturday
        (at(2025, 6, 15, 23, 59), True),  # Sunday
        (at(2025, 6, 16, 0, 0), False),  # Monday
        (at(2025, 6, 21, 12, 0), True),  # next Saturday
    ],
)
def test_weekly_freeze_window(now: float, blocked: bool) -> None:
    verdict = check(WEEKEND, pred(), ctx(now))
    assert (verdict.outcome == "block") is blocked
    if blocked:
        assert verdict.rule == "freeze_window"
        assert "weekly sat, sun 00:00-24:00 UTC+00:00" in verdict.reason


OVERNIGHT = parse_policy(
    """
[[rules.freeze_windows]]
name = "friday night"
days = ["fri", "sun"]
start = "22:00"
end = "06:00"
"""
)


@pytest.mark.parametrize(
    ("now", "blocked"),
    [
        (at(2025, 6, 13, 21, 59), False),  # Fri 21:59
        (at(2025, 6, 13, 22, 0), True),  # Fri 22:00
        (at(2025, 6, 14, 5, 59), True),  # Sat 05:59: wrapped past midnight
        (at(2025, 6, 14, 6, 0), False),  # Sat 06:00
        (at(2025, 6, 14, 23, 0), False),  # Sat 23:00: Saturday is not listed
        (at(2025, 6, 16, 3, 0), True),  # Mon 03:00: Sunday's window wraps past the end of the week
        (at(2025, 6, 12, 3, 0), False),  # Thu 03:00
    ],
)
def test_weekly_freeze_window_wraps_past_midnight(now: float, blocked: bool) -> None:
    assert (check(OVERNIGHT, pred(), ctx(now)).outcome == "block") is blocked


def test_weekly_freeze_window_honours_its_utc_offset() -> None:
    policy = parse_policy(
        """
[[rules.freeze_windows]]
name = "berlin business hours"
days = ["wed"]
start = "09:00"
end = "17:00"
utc_offset = "+02:00"
"""
    )
    # 09:00 at +02:00 is 07:00 UTC; 17:00 at +02:00 is 15:00 UTC.
    assert check(policy, pred(), ctx(at(2025, 6, 11, 6, 59))).allowed
    assert check(policy, pred(), ctx(at(2025, 6, 11, 7, 0))).outcome == "block"
    assert check(policy, pred(), ctx(at(2025, 6, 11, 9, 0, offset_minutes=120))).outcome == "block"
    assert check(policy, pred(), ctx(at(2025, 6, 11, 14, 59))).outcome == "block"
    assert check(policy, pred(), ctx(at(2025, 6, 11, 15, 0))).allowed
    assert "UTC+02:00" in check(policy, pred(), ctx(at(2025, 6, 11, 8, 0))).reason


def test_weekly_freeze_window_uses_policy_offset_by_default_and_negative_offsets() -> None:
    policy = parse_policy(
        """
utc_offset = "-05:00"

[[rules.freeze_windows]]
name = "monday morning"
days = ["mon"]
start = "00:00"
end = "02:00"
"""
    )
    assert policy.freeze_windows[0].utc_offset_minutes == -300
    # Monday 00:00 at -05:00 is Monday 05:00 UTC.
    assert check(policy, pred(), ctx(at(2025, 6, 16, 4, 59))).allowed
    assert check(policy, pred(), ctx(at(2025, 6, 16, 5, 0))).outcome == "block"
    assert check(policy, pred(), ctx(at(2025, 6, 16, 7, 0))).allowed


FILTERED = parse_policy(
    """
[[rules.freeze_windows]]
name = "weekend"
days = ["sat", "sun"]
start = "00:00"
end = "24:00"
allow_severities = ["critical"]
actions = ["reboot", "reimage"]
"""
)
SATURDAY = at(2025, 6, 14, 12, 0)


def test_freeze_window_allow_severities_exempts_listed_severities() -> None:
    assert check(FILTERED, pred(action="reboot", severity="critical"), ctx(SATURDAY)).allowed
    verdict = check(FILTERED, pred(action="reboot", severity="warning"), ctx(SATURDAY))
    assert verdict.outcome == "block"
    assert verdict.rule == "freeze_window"
    assert "severity 'warning' is not exempt (allow_severities: critical)" in verdict.reason
    assert "applies to actions reboot, reimage" in verdict.reason


def test_freeze_window_actions_filter_limits_the_freeze() -> None:
    assert check(FILTERED, pred(action="drain", severity="info"), ctx(SATURDAY)).allowed
    assert check(FILTERED, pred(action="reimage", severity="info"), ctx(SATURDAY)).outcome == "block"


def test_first_matching_freeze_window_is_named() -> None:
    policy = parse_policy(
        """
[[rules.freeze_windows]]
name = "only reboots"
days = ["sat"]
start = "00:00"
end = "24:00"
actions = ["reboot"]

[[rules.freeze_windows]]
name = "everything"
days = ["sat"]
start = "10:00"
end = "14:00"
"""
    )
    assert "'only reboots'" in check(policy, pred(action="reboot"), ctx(SATURDAY)).reason
    assert "'everything'" in check(policy, pred(action="drain"), ctx(SATURDAY)).reason


def test_freeze_window_accepts_toml_local_times() -> None:
    policy = parse_policy('[[rules.freeze_windows]]\nname = "n"\ndays = ["wed"]\nstart = 11:30:00\nend = 12:30:00\n')
    assert policy.freeze_windows[0].start_minute == 11 * 60 + 30
    assert check(policy, pred(), ctx(NOW)).outcome == "block"


# ------------------------------------------------------------------------------ named time zones

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
EVERY_DAY = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'


def nights(zone_line: str) -> str:
    """A policy freezing every night 22:00-06:00 local time, the zone set by ``zone_line``."""
    return (
        f'[[rules.freeze_windows]]\nname = "nights"\ndays = {EVERY_DAY}\nstart = "22:00"\nend = "06:00"\n{zone_line}\n'
    )


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> float:
    """Unix seconds of a wall-clock time in a named zone."""
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).timestamp()


# The 2025 daylight-saving changes (the day the clocks change) in both zones.
DST_CHANGES_2025 = [
    pytest.param(BERLIN, date(2025, 3, 30), id="berlin-spring-forward"),
    pytest.param(BERLIN, date(2025, 10, 26), id="berlin-fall-back"),
    pytest.param(NEW_YORK, date(2025, 3, 9), id="new-york-spring-forward"),
    pytest.param(NEW_YORK, date(2025, 11, 2), id="new-york-fall-back"),
]
# (days after the change, hour, minute, frozen) on the local clock, from the evening before to the morning after
AROUND_THE_CHANGE = [
    (-1, 21, 59, False),
    (-1, 22, 0, True),
    (0, 1, 30, True),
    (0, 5, 0, True),
    (0, 5, 59, True),
    (0, 6, 0, False),
    (0, 12, 0, False),
    (0, 21, 59, False),
    (0, 22, 0, True),
    (1, 5, 59, True),
    (1, 6, 0, False),
]


@pytest.mark.parametrize(("tz", "change"), DST_CHANGES_2025)
@pytest.mark.parametrize("where", ["window", "policy"])
def test_a_named_zone_keeps_the_window_on_local_time_across_both_dst_changes(
    tz: ZoneInfo, change: date, where: str
) -> None:
    zone_line = f'timezone = "{tz.key}"'
    text = nights(zone_line) if where == "window" else f"{zone_line}\n\n{nights('')}"
    policy = parse_policy(text, zone=ZoneInfo)
    assert policy.freeze_windows[0].timezone == tz.key
    assert policy.timezone == ("" if where == "window" else tz.key)
    offsets = {tz.utcoffset(datetime.combine(change + timedelta(days=d), time(12))) for d in (-1, 1)}
    assert len(offsets) == 2, "the dates must straddle a change of the zone's offset"
    for days, hour, minute, frozen in AROUND_THE_CHANGE:
        day = change + timedelta(days=days)
        now = local(tz, day.year, day.month, day.day, hour, minute)
        verdict = check(policy, pred(), ctx(now))
        assert (verdict.outcome == "block") is frozen, (day, hour, minute, verdict)
        if frozen:
            assert verdict.rule == "freeze_window"
            assert f"22:00-06:00 {tz.key}" in verdict.reason


def test_a_fixed_offset_does_not_follow_daylight_saving() -> None:
    """utc_offset keeps its meaning: a fixed offset, so in Berlin's summer the window is an hour late."""
    policy = parse_policy(nights('utc_offset = "+01:00"'))
    assert parse_policy(nights('utc_offset = "+01:00"'), zone=ZoneInfo) == policy  # a resolver changes nothing
    window = policy.freeze_windows[0]
    assert (window.timezone, window.tz, window.utc_offset_minutes) == ("", None, 60)
    # 2025-03-30 06:00 CEST is 05:00 at +01:00: still inside 22:00-06:00 +01:00
    assert check(policy, pred(), ctx(local(BERLIN, 2025, 3, 30, 6, 0))).outcome == "block"
    assert check(policy, pred(), ctx(local(BERLIN, 2025, 3, 30, 6, 59))).outcome == "block"
    assert check(policy, pred(), ctx(local(BERLIN, 2025, 3, 30, 7, 0))).allowed
    assert "22:00-06:00 UTC+01:00" in check(policy, pred(), ctx(at(2025, 3, 29, 23, 0, offset_minutes=60))).reason
    assert policy_to_dict(policy)["rules"]["freeze_windows"][0]["utc_offset"] == "+01:00"
    assert "timezone" not in policy_to_dict(policy)


def test_a_zone_gap_opens_the_window_after_the_gap_and_a_repeated_hour_is_frozen_once() -> None:
    spring = parse_policy(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["sun"]\nstart = "02:30"\nend = "04:00"\n'
        'timezone = "Europe/Berlin"\n',
        zone=ZoneInfo,
    )
    # 2025-03-30: 02:00 CET is followed by 03:00 CEST; 02:30 never shows on the clock
    assert check(spring, pred(), ctx(local(BERLIN, 2025, 3, 30, 1, 59))).allowed
    assert check(spring, pred(), ctx(local(BERLIN, 2025, 3, 30, 1, 59) + 60)).outcome == "block"  # 03:00 CEST
    assert check(spring, pred(), ctx(local(BERLIN, 2025, 3, 30, 3, 59))).outcome == "block"
    assert check(spring, pred(), ctx(local(BERLIN, 2025, 3, 30, 4, 0))).allowed
    autumn = parse_policy(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["sun"]\nstart = "02:15"\nend = "02:45"\n'
        'timezone = "Europe/Berlin"\n',
        zone=ZoneInfo,
    )
    # 2025-10-26: 02:00-03:00 is lived twice, first in CEST (fold 0) then in CET (fold 1); the window is the first
    assert check(autumn, pred(), ctx(local(BERLIN, 2025, 10, 26, 2, 14))).allowed
    assert check(autumn, pred(), ctx(local(BERLIN, 2025, 10, 26, 2, 15))).outcome == "block"
    assert check(autumn, pred(), ctx(local(BERLIN, 2025, 10, 26, 2, 44))).outcome == "block"
    assert check(autumn, pred(), ctx(local(BERLIN, 2025, 10, 26, 2, 45))).allowed
    for minute in (14, 15, 30, 44, 45):  # the clock's second pass is not frozen again
        assert check(autumn, pred(), ctx(local(BERLIN, 2025, 10, 26, 2, minute, fold=1))).allowed


def test_a_window_setting_overrides_the_policy_default() -> None:
    windows = (("new york", ""), ("fixed", 'utc_offset = "+00:00"'), ("berlin", 'timezone = "Europe/Berlin"'))
    text = 'timezone = "America/New_York"\n' + "".join(
        f'[[rules.freeze_windows]]\nname = "{name}"\ndays = ["mon"]\nstart = "09:00"\nend = "10:00"\n{zone}\n'
        for name, zone in windows
    )
    policy = parse_policy(text, zone=ZoneInfo)
    zones = [(w.name, w.timezone, w.utc_offset_minutes) for w in policy.freeze_windows]
    assert zones == [("new york", "America/New_York", 0), ("fixed", "", 0), ("berlin", "Europe/Berlin", 0)]
    assert "'berlin'" in check(policy, pred(), ctx(local(BERLIN, 2025, 6, 16, 9, 30))).reason
    assert "'fixed'" in check(policy, pred(), ctx(at(2025, 6, 16, 9, 30))).reason
    assert "'new york'" in check(policy, pred(), ctx(local(NEW_YORK, 2025, 6, 16, 9, 30))).reason
    data = policy_to_dict(policy)
    assert data["timezone"] == "America/New_York" and "utc_offset" not in data
    assert [w.get("timezone", w.get("utc_offset")) for w in data["rules"]["freeze_windows"]] == [
        "America/New_York",
        "+00:00",
        "Europe/Berlin",
    ]
    assert parse_policy(to_toml(data), zone=ZoneInfo) == policy


WINDOW = '[[rules.freeze_windows]]\nname = "w"\ndays = ["mon"]\nstart = "01:00"\nend = "02:00"\n'
BAD_ZONES = [
    pytest.param('timezone = "Mars/Olympus"\n', 1, "timezone", "unknown time zone 'Mars/Olympus'", id="unknown"),
    pytest.param(
        WINDOW + 'timezone = "Europe/Berlni"\n', 6, "rules.freeze_windows[0].timezone", "Europe/Berlni", id="typo"
    ),
    pytest.param('name = "p"\ntimezone = "Europe"\n', 2, "timezone", "unknown time zone 'Europe'", id="a-folder"),
    pytest.param('timezone = "../../etc/passwd"\n', 1, "timezone", "unknown time zone", id="a-path"),
    pytest.param('timezone = "europe/berlin"\n', 1, "timezone", "unknown time zone", id="case-sensitive"),
    pytest.param('timezone = ""\n', 1, "timezone", "IANA time zone name", id="empty"),
    pytest.param('timezone = " Europe/Berlin"\n', 1, "timezone", "surrounding blanks", id="blanks"),
    pytest.param("timezone = 1\n", 1, "timezone", "got an integer", id="not-a-string"),
    pytest.param('timezone = "+02:00"\n', 1, "timezone", "for a fixed offset use utc_offset", id="an-offset"),
    pytest.param('utc_offset = "Europe/Paris"\n', 1, "utc_offset", "use timezone", id="zone-as-offset"),
    pytest.param(
        'utc_offset = "+01:00"\ntimezone = "Europe/Berlin"\n', 2, "timezone", "not both", id="both-at-top-level"
    ),
    pytest.param(
        WINDOW + 'utc_offset = "+01:00"\ntimezone = "Europe/Berlin"\n',
        7,
        "rules.freeze_windows[0].timezone",
        "not both",
        id="both-in-a-window",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\nstart = 2025-12-24T00:00:00+01:00\nend = 2025-12-25T00:00:00+01:00\n'
        'timezone = "Europe/Berlin"\n',
        5,
        "rules.freeze_windows[0].timezone",
        "only applies to weekly windows",
        id="absolute-window",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "fragment"), BAD_ZONES)
def test_a_bad_time_zone_is_refused_naming_the_field(text: str, line: int, field: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, zone=ZoneInfo)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert fragment in error.message, error.message


def test_a_named_zone_needs_a_resolver() -> None:
    with pytest.raises(PolicyError, match="zone resolver") as caught:
        parse_policy('timezone = "Europe/Berlin"\n')
    assert caught.value.field == "timezone"

    def not_a_zone(name: str) -> Any:
        return name

    with pytest.raises(PolicyError, match="tzinfo") as caught:
        parse_policy(WINDOW + 'timezone = "Europe/Berlin"\n', zone=not_a_zone)
    assert caught.value.field == "rules.freeze_windows[0].timezone"


def test_freeze_window_records_check_their_zone() -> None:
    with pytest.raises(InvalidRecord, match="tzinfo"):
        FreezeWindow(name="w", days=("mon",), start_minute=0, end_minute=60, timezone="Europe/Berlin")
    with pytest.raises(InvalidRecord, match="not both"):
        FreezeWindow(
            name="w", days=("mon",), start_minute=0, end_minute=60, utc_offset_minutes=60, timezone="X", tz=BERLIN
        )
    with pytest.raises(InvalidRecord, match="weekly"):
        FreezeWindow(name="w", start=datetime(2025, 1, 1, tzinfo=UTC), end=datetime(2025, 1, 2, tzinfo=UTC), tz=BERLIN)
    window = FreezeWindow(name="w", days=("mon",), start_minute=0, end_minute=60, timezone="Europe/Berlin", tz=BERLIN)
    assert window.is_open(local(BERLIN, 2025, 6, 16, 0, 30))
    assert not window.is_open(at(2025, 6, 16, 0, 30))  # 02:30 in Berlin
    for far in (1e300, -1e300, 253_402_300_800.0):  # instants a datetime cannot hold do not raise
        window.is_open(far)
    assert "Europe/Berlin" in window.describe()


# --------------------------------------------------------------------------------- byte-order mark


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    assert parse_policy("\ufeff" + DEFAULT_POLICY_TEXT) == DEFAULT_POLICY
    assert parse_policy("\ufeff") == DEFAULT_POLICY
    policy = parse_policy("\ufeff" + nights('timezone = "Europe/Berlin"'), zone=ZoneInfo)
    assert policy.freeze_windows[0].timezone == "Europe/Berlin"
    with pytest.raises(PolicyError) as caught:  # line numbers are unchanged
        parse_policy("\ufeffname = 'p'\n[rules.blast_radius]\nmax_concurrent = 0\n")
    assert (caught.value.line, caught.value.field) == (3, "rules.blast_radius.max_concurrent")
    with pytest.raises(PolicyError):  # only a leading one
        parse_policy("name = 'p'\n\ufeff[rules.blast_radius]\n")


# ---------------------------------------------------------------------------------- action names

BAD_NAMES = [
    pytest.param(
        '[rules.blast_radius]\ndisruptive_actions = ["drain", " reboot"]\n',
        2,
        "rules.blast_radius.disruptive_actions",
        "item 2, ' reboot' has leading or trailing whitespace",
        id="disruptive-leading-blank",
    ),
    pytest.param(
        '[rules.blast_radius]\nmax_concurrent = 2\ndisruptive_actions = ["drain\\t"]\n',
        3,
        "rules.blast_radius.disruptive_actions",
        "item 1, 'drain\\t' has leading or trailing whitespace",
        id="disruptive-trailing-tab",
    ),
    pytest.param(
        '[rules.blast_radius]\ndisruptive_actions = ["drain", ""]\n',
        2,
        "rules.blast_radius.disruptive_actions",
        "item 2, '' is empty",
        id="disruptive-empty",
    ),
    pytest.param(
        '[rules.blast_radius]\ndisruptive_actions = ["drain", 7]\n',
        2,
        "rules.blast_radius.disruptive_actions",
        "item 2, 7 is an integer, not a string",
        id="disruptive-not-a-string",
    ),
    pytest.param(
        '[rules.blast_radius]\ndisruptive_actions = [["drain"]]\n',
        2,
        "rules.blast_radius.disruptive_actions",
        "is a list, not a string",
        id="disruptive-nested-list",
    ),
    pytest.param(
        '[rules.allowed_actions]\ndisk_failure = ["drain", "replace_disk "]\n',
        2,
        "rules.allowed_actions.disk_failure",
        "item 2, 'replace_disk ' has leading or trailing whitespace",
        id="allowed-trailing-blank",
    ),
    pytest.param(
        '[rules.allowed_actions]\n"*" = ["   "]\n',
        2,
        "rules.allowed_actions.*",
        "item 1, '   ' is blank",
        id="allowed-blank",
    ),
    pytest.param(
        '[rules.allowed_actions]\n"disk_failure " = ["drain"]\n',
        2,
        "rules.allowed_actions.disk_failure ",
        "the fault type 'disk_failure ' has leading or trailing whitespace",
        id="fault-type-trailing-blank",
    ),
    pytest.param(
        '[rules.allowed_actions]\n"" = ["drain"]\n',
        2,
        "rules.allowed_actions.",
        "the fault type '' is empty",
        id="fault-type-empty",
    ),
    pytest.param(
        WINDOW + 'actions = ["reboot", " reimage"]\n',
        6,
        "rules.freeze_windows[0].actions",
        "item 2, ' reimage' has leading or trailing whitespace",
        id="freeze-window-action",
    ),
    pytest.param(
        '[rules.allowed_actions]\ndisk_failure = ["' + "x" * 501 + '"]\n',
        2,
        "rules.allowed_actions.disk_failure",
        "longer than 500 characters",
        id="too-long-to-be-an-action",
    ),
]


def test_unknown_action_names_are_accepted_and_compared_without_case() -> None:
    """Any well-formed name is accepted (a predictor may send any action); names match without ASCII case, in
    every rule: a predictor spelling ``Reboot`` must not slip past a blast radius listing ``reboot``."""
    policy = parse_policy(
        '[rules.allowed_actions]\ndisk_failure = ["Drain", "replace-disk", "über_reboot", "a b"]\n'
        '[rules.blast_radius]\ndisruptive_actions = ["Reboot"]\n'
    )
    assert policy.allowed_actions["disk_failure"] == ("Drain", "replace-disk", "über_reboot", "a b")  # as written
    for action in ("Drain", "drain", "DRAIN", "Replace-Disk", "über_REBOOT", "A B"):
        assert check(policy, pred(action=action)).allowed, action
    assert check(policy, pred(action="Über_reboot")).rule == "allowed_actions"  # only ASCII letters are folded
    assert check(policy, pred(action="drain ", fault_type="DISK_FAILURE")).allowed  # blanks stripped on input
    refused = check(policy, pred(action="reimage", fault_type="Disk_Failure"))
    assert refused.rule == "allowed_actions" and "Drain, replace-disk" in refused.reason  # listed as written
    busy = ctx(active_disruptive_by_cluster={"r12": 5})
    assert check(policy, pred(action="Drain"), busy).allowed  # "Reboot" is disruptive, "Drain" is not listed
    blast = Policy(blast_radius=BlastRadiusRule(disruptive_actions=("Reboot",)))
    for action in ("reboot", "REBOOT", "Reboot"):
        assert check(blast, pred(action=action), busy).rule == "blast_radius", action


def test_freeze_window_actions_are_compared_without_case() -> None:
    window = FreezeWindow(name="w", days=("wed",), start_minute=0, end_minute=1440, actions=("Reboot",))
    policy = Policy(freeze_windows=(window,))
    assert check(policy, pred(action="reboot")).rule == "freeze_window"
    assert check(policy, pred(action="REBOOT")).rule == "freeze_window"
    assert check(policy, pred(action="drain")).allowed


def test_fault_types_differing_only_in_case_are_refused() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy('[rules.allowed_actions]\ndisk_failure = ["drain"]\nDisk_Failure = ["reboot"]\n')
    assert "differs from 'disk_failure' only in case" in str(info.value)
    assert info.value.field == "rules.allowed_actions.Disk_Failure" and info.value.line == 3
    with pytest.raises(InvalidRecord, match="differ only in case"):  # built directly
        Policy(allowed_actions={"disk_failure": ("drain",), "DISK_failure": ("drain",)})


def test_rule_records_refuse_malformed_action_names_when_built_directly() -> None:
    with pytest.raises(InvalidRecord, match="whitespace"):
        BlastRadiusRule(disruptive_actions=("drain", "reboot "))
    with pytest.raises(InvalidRecord, match="whitespace"):
        FreezeWindow(name="w", days=("mon",), start_minute=0, end_minute=60, actions=(" drain",))
    with pytest.raises(InvalidRecord, match="fault type"):
        Policy(allowed_actions={" disk_failure": ("drain",)})
    with pytest.raises(InvalidRecord, match="is empty"):
        Policy(allowed_actions={"disk_failure": ("drain", "")})


# ---------------------------------------------------------------------------------- cooldown


@pytest.mark.parametrize(
    ("scope", "override_key", "blocked"),
    [
        ("both", "key:k1", True),
        ("both", "target:r12-n04", True),
        ("key", "key:k1", True),
        ("key", "target:r12-n04", False),
        ("target", "target:r12-n04", True),
        ("target", "key:k1", False),
        ("both", "key:k2", False),
        ("both", "target:r12-n05", False),
    ],
)
def test_override_cooldown_scope(scope: str, override_key: str, blocked: bool) -> None:
    policy = parse_policy(f'[rules.override_cooldown]\nseconds = 600\nscope = "{scope}"\n')
    verdict = check(policy, pred(), ctx(last_override_at={override_key: NOW - 120}), key="k1")
    assert (verdict.outcome == "block") is blocked
    if blocked:
        assert verdict.rule == "override_cooldown"
        subject = "scenario key 'k1'" if override_key.startswith("key:") else "target 'r12-n04'"
        assert verdict.reason == f"{subject} was overridden 120 s ago; cooldown is 600 s (scope {scope})"


def test_override_cooldown_expires_after_exactly_its_seconds() -> None:
    policy = parse_policy("[rules.override_cooldown]\nseconds = 600.5\n")
    assert check(policy, pred(), ctx(last_override_at={"key:k1": NOW - 600})).outcome == "block"
    assert check(policy, pred(), ctx(last_override_at={"key:k1": NOW - 600.5})).allowed


def test_override_cooldown_default_is_one_hour_and_zero_turns_it_off() -> None:
    context = ctx(last_override_at={"target:r12-n04": NOW - 3599})
    assert check(DEFAULT_POLICY, pred(), context).rule == "override_cooldown"
    assert check(DEFAULT_POLICY, pred(), ctx(last_override_at={"target:r12-n04": NOW - 3600})).allowed
    off = parse_policy("[rules.override_cooldown]\nseconds = 0\n")
    assert check(off, pred(), ctx(last_override_at={"target:r12-n04": NOW})).allowed


def test_override_recorded_in_the_future_still_blocks() -> None:
    verdict = check(DEFAULT_POLICY, pred(), ctx(last_override_at={"key:k1": NOW + 5}))
    assert verdict.rule == "override_cooldown"
    assert "5 s in the future" in verdict.reason


# ------------------------------------------------------------------------------- channel cap


def test_channel_hourly_cap_digests_at_the_cap() -> None:
    policy = parse_policy("[rules.channel_hourly_cap]\nmax_per_hour = 3\n")
    verdict = check(policy, pred(), ctx(surfaced_last_hour_by_channel={"#oncall": 3}), channel="#oncall")
    assert verdict == PolicyVerdict(
        "digest",
        "channel_hourly_cap",
        "channel '#oncall' already had 3 recommendation(s) surfaced in the last hour (max_per_hour 3); "
        "folded into the digest",
    )
    assert not verdict.allowed


def test_channel_hourly_cap_allows_below_the_cap_and_other_channels() -> None:
    policy = parse_policy("[rules.channel_hourly_cap]\nmax_per_hour = 3\n")
    counts = {"#oncall": 2, "#storage": 50}
    assert check(policy, pred(), ctx(surfaced_last_hour_by_channel=counts), channel="#oncall").allowed
    assert check(policy, pred(), ctx(surfaced_last_hour_by_channel=counts), channel="#other").allowed


def test_a_hard_block_wins_over_the_digest() -> None:
    context = ctx(surfaced_last_hour_by_channel={"#oncall": 100}, active_disruptive_by_cluster={"r12": 9})
    verdict = check(DEFAULT_POLICY, pred(action="drain"), context)
    assert (verdict.outcome, verdict.rule) == ("block", "blast_radius")


# ------------------------------------------------------------------------------------- order


def test_rules_are_evaluated_in_the_documented_order() -> None:
    policy = parse_policy(
        """
[rules.allowed_actions]
disk_failure = ["reboot", "drain"]

[rules.blast_radius]
max_concurrent = 1
disruptive_actions = ["reboot", "drain"]

[[rules.freeze_windows]]
name = "always"
start = 2000-01-01T00:00:00Z
end = 2100-01-01T00:00:00Z
actions = ["reboot", "drain"]

[rules.override_cooldown]
seconds = 60

[rules.channel_hourly_cap]
max_per_hour = 1
"""
    )
    everything = ctx(
        active_disruptive_by_cluster={"r12": 1},
        last_override_at={"key:k1": NOW},
        surfaced_last_hour_by_channel={"#oncall": 1},
    )
    assert check(policy, pred(action="replace_disk"), everything).rule == "allowed_actions"
    assert check(policy, pred(action="drain"), everything).rule == "freeze_window"
    assert check(policy, pred(action="drain", severity="critical"), everything).rule == "freeze_window"
    unfrozen = parse_policy(DEFAULT_POLICY_TEXT.replace("max_concurrent = 2", "max_concurrent = 1"))
    assert check(unfrozen, pred(action="drain"), everything).rule == "blast_radius"
    assert check(unfrozen, pred(action="investigate"), everything).rule == "override_cooldown"
    assert check(unfrozen, pred(action="investigate"), ctx(surfaced_last_hour_by_channel={"#oncall": 20})).rule == (
        "channel_hourly_cap"
    )
    assert RULE_NAMES == (
        "allowed_actions",
        "deny_targets",
        "freeze_window",
        "blast_radius",
        "override_cooldown",
        "channel_hourly_cap",
    )


# --------------------------------------------------------------------------------- malformed

MALFORMED = [
    pytest.param(
        'name = "p"\n\n[rules.blast_radius]\nmax_concurrent = = 3\n',
        4,
        "rules.blast_radius.max_concurrent",
        "invalid TOML",
        id="toml-syntax",
    ),
    pytest.param(
        '[rules.override_cooldown]\nscope = "key"\nseconds = [1,\n',
        3,
        "rules.override_cooldown.seconds",
        "invalid TOML",
        id="toml-unterminated-array",
    ),
    pytest.param(
        '[rules.channel_hourly_cap]\n# a comment\nmax_per_hour = "lots"\n',
        3,
        "rules.channel_hourly_cap.max_per_hour",
        "must be a positive integer, got a string",
        id="wrong-type",
    ),
    pytest.param(
        "[rules.channel_hourly_cap]\nmax_per_hour = true\n",
        2,
        "rules.channel_hourly_cap.max_per_hour",
        "must be a positive integer",
        id="bool-is-not-int",
    ),
    pytest.param(
        '[rules.blast_radius]\ndisruptive_actions = ["drain"]\nmax_concurrent = -1\n',
        3,
        "rules.blast_radius.max_concurrent",
        "must be a positive integer, got -1",
        id="negative-cap",
    ),
    pytest.param(
        "[rules.blast_radius]\nmax_concurrent = 0\n",
        2,
        "rules.blast_radius.max_concurrent",
        "must be a positive integer, got 0",
        id="zero-cap",
    ),
    pytest.param(
        "[rules.blast_radius]\nstale_after_seconds = 0\n",
        2,
        "rules.blast_radius.stale_after_seconds",
        "must be a positive number of seconds, got 0",
        id="zero-stale-age",
    ),
    pytest.param(
        '[rules.blast_radius]\nmax_concurrent = 2\nstale_after_seconds = "1d"\n',
        3,
        "rules.blast_radius.stale_after_seconds",
        "must be a positive number of seconds, got a string",
        id="stale-age-not-a-number",
    ),
    pytest.param(
        "[rules.override_cooldown]\n\nseconds = -5\n",
        3,
        "rules.override_cooldown.seconds",
        "non-negative",
        id="negative-seconds",
    ),
    pytest.param(
        '[rules.override_cooldown]\nscope = "everything"\n',
        2,
        "rules.override_cooldown.scope",
        "must be one of key, target, both",
        id="bad-scope",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["sat"]\nstart = "25:00"\nend = "06:00"\n',
        4,
        "rules.freeze_windows[0].start",
        "25:00",
        id="bad-time",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "a"\ndays = ["sat"]\nstart = "01:00"\nend = "02:00"\n\n'
        '[[rules.freeze_windows]]\nname = "b"\ndays = ["sun"]\nstart = "01:00"\nend = "24:30"\n',
        11,
        "rules.freeze_windows[1].end",
        "24:30",
        id="bad-time-second-window",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["funday"]\nstart = "01:00"\nend = "02:00"\n',
        3,
        "rules.freeze_windows[0].days",
        "'funday'",
        id="bad-day",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["mon"]\nstart = "01:00"\nend = "01:00"\n',
        5,
        "rules.freeze_windows[0].end",
        "must differ from start",
        id="empty-weekly-window",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["mon"]\nstart = "01:00"\nend = "02:00"\nutc_offset = "+2"\n',
        6,
        "rules.freeze_windows[0].utc_offset",
        "+HH:MM",
        id="bad-offset",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\nstart = 2025-12-24T00:00:00\nend = 2025-12-25T00:00:00Z\n',
        3,
        "rules.freeze_windows[0].start",
        "UTC offset",
        id="absolute-without-offset",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\nstart = "2025-12-24T00:00:00+01:00"\n'
        'end = "2025-12-23T00:00:00+01:00"\n',
        4,
        "rules.freeze_windows[0].end",
        "must be after start",
        id="absolute-end-before-start",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\nstart = "09:00"\nend = "17:00"\n',
        3,
        "rules.freeze_windows[0].start",
        "days",
        id="weekly-without-days",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["mon"]\nstart = "01:00"\nend = "02:00"\n'
        'allow_severities = ["urgent"]\n',
        6,
        "rules.freeze_windows[0].allow_severities",
        "urgent",
        id="bad-severity",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\ndays = ["mon"]\nstart = "01:00"\nend = "02:00"\n',
        1,
        "rules.freeze_windows[0].name",
        "is required",
        id="window-without-name",
    ),
    pytest.param(
        "[rules.blast_radius]\nmax_concurrent = 3\nmax_concurent = 3\n",
        3,
        "rules.blast_radius.max_concurent",
        "did you mean 'max_concurrent'",
        id="unknown-field",
    ),
    pytest.param(
        '[[rules.freeze_windows]]\nname = "w"\ndays = ["mon"]\nstart = "01:00"\nend = "02:00"\nseverity = 1\n',
        6,
        "rules.freeze_windows[0].severity",
        "unknown field",
        id="unknown-window-field",
    ),
    pytest.param(
        "version = 1\n\n[rules.maintenance]\nevery = 3\n",
        3,
        "rules.maintenance",
        "unknown rule 'maintenance'",
        id="unknown-rule",
    ),
    pytest.param(
        "[rules]\nblast_radius = { max_concurrent = 1 }\nfreze_windows = []\n",
        3,
        "rules.freze_windows",
        "did you mean 'freeze_windows'",
        id="unknown-rule-dotted",
    ),
    pytest.param(
        'name = "p"\nowner = "sre"\n',
        2,
        "owner",
        "unknown field 'owner'",
        id="unknown-top-level-key",
    ),
    pytest.param("version = 2\n", 1, "version", "unsupported policy version 2", id="bad-version"),
    pytest.param("version = 1.0\n", 1, "version", "unsupported policy version 1.0", id="version-not-an-integer"),
    pytest.param(
        "[rules.override_cooldown]\nseconds = 1" + "0" * 400 + "\n",
        2,
        "rules.override_cooldown.seconds",
        "too large",
        id="seconds-beyond-any-float",
    ),
    pytest.param(
        "[rules.blast_radius]\nmax_concurrent = 2\n\n[rules.channel_hourly_cap]\nmax_per_hour = 1" + "0" * 5000 + "\n",
        5,
        "rules.channel_hourly_cap.max_per_hour",
        "too many digits",
        id="integer-beyond-pythons-digit-limit",
    ),
    pytest.param(
        '[rules.allowed_actions]\ndisk_failure = ["drain"]\n"*" = "drain"\n',
        3,
        "rules.allowed_actions.*",
        "must be a list of strings",
        id="allowed-actions-not-a-list",
    ),
    pytest.param(
        "[rules]\nblast_radius = { max_concurrent = -2 }\n",
        2,
        "rules.blast_radius.max_concurrent",
        "got -2",
        id="inline-table-falls-back-to-its-line",
    ),
    pytest.param(
        "version = 1\nrules.blast_radius.max_concurrent = 2\nrules.deny_targets.actions = [1]\n",
        3,
        "rules.deny_targets.actions",
        "1 is an integer",
        id="a-dotted-key-at-the-root-is-found-on-its-own-line",
    ),
    pytest.param(
        '[rules]\ndeny_targets.patterns = ["db-*"]\ndeny_targets.actions = [1]\n',
        3,
        "rules.deny_targets.actions",
        "1 is an integer",
        id="a-dotted-key-in-a-table-is-found-on-its-own-line",
    ),
    pytest.param(
        "[[rules.blast_radius]]\nmax_concurrent = 1\n",
        1,
        "rules.blast_radius",
        "must be a table",
        id="array-instead-of-table",
    ),
    pytest.param(
        '[rules.allowed_actions]\ndisk_failure = ["drain"]\n"k8s.node_not_ready" = ["drain", ""]\n',
        3,
        "rules.allowed_actions.k8s.node_not_ready",
        "'' is empty",
        id="a-quoted-fault-type-with-a-dot-is-found-on-its-line",
    ),
    pytest.param(
        '[rules.allowed_actions]\ndisk_failure = ["drain"]\n"\\u00d6lwechsel" = 1\n',
        3,
        "rules.allowed_actions.\u00d6lwechsel",
        "must be a list of strings",
        id="an-escaped-quoted-fault-type-is-found-on-its-line",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "fragment"), MALFORMED + BAD_NAMES)
def test_malformed_policy_names_line_and_field(text: str, line: int, field: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert fragment in error.message
    assert str(error) == f"policy.toml line {line}, field {field}: {error.message}"
    assert isinstance(error, ValueError)


def test_arrays_nested_too_deeply_are_refused_not_raised() -> None:
    """tomllib parses nested arrays recursively: a file nested beyond the stack is a PolicyError, so a reload
    refuses it and says why (before: a RecursionError escaped the reload)."""
    with pytest.raises(PolicyError, match="nested too deeply") as caught:
        parse_policy("[rules.allowed_actions]\ndisk_failure = " + "[" * 5000 + "]" * 5000 + "\n")
    assert caught.value.field == "(document)"


def test_policy_error_message_format() -> None:
    text = 'version = 1\nname = "prod"\n\n[rules.channel_hourly_cap]\nmax_per_hour = 5\n\n'
    text += "[rules.blast_radius]\nmax_concurrent = -1\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="prod.toml")
    assert str(caught.value) == (
        "prod.toml line 8, field rules.blast_radius.max_concurrent: must be a positive integer, got -1"
    )


def test_a_typo_in_a_rule_name_does_not_silently_disable_it() -> None:
    with pytest.raises(PolicyError, match="channel_hourly_cap"):
        parse_policy("[rules.channel_hourly_caps]\nmax_per_hour = 1\n")


# ----------------------------------------------------------------------------------- records


def test_context_rejects_bad_values_and_is_immutable() -> None:
    with pytest.raises(InvalidRecord):
        PolicyContext(now=float("nan"))
    with pytest.raises(InvalidRecord):
        PolicyContext(now=NOW, active_disruptive_by_cluster={"r12": -1})
    with pytest.raises(InvalidRecord):
        PolicyContext(now=NOW, last_override_at={"key:k": float("inf")})
    counts = {"r12": 1}
    context = PolicyContext(now=NOW, active_disruptive_by_cluster=counts)
    counts["r12"] = 99
    assert context.active_disruptive_by_cluster["r12"] == 1
    with pytest.raises(TypeError):
        context.active_disruptive_by_cluster["r12"] = 5  # type: ignore[index]


def test_rule_records_validate_when_built_directly() -> None:
    with pytest.raises(InvalidRecord):
        BlastRadiusRule(max_concurrent=0)
    with pytest.raises(InvalidRecord):
        OverrideCooldownRule(seconds=-1)
    with pytest.raises(InvalidRecord):
        ChannelHourlyCapRule(max_per_hour=0)
    with pytest.raises(InvalidRecord):
        FreezeWindow(name="w", start=datetime(2025, 1, 1), end=datetime(2025, 1, 2))  # naive
    with pytest.raises(InvalidRecord):
        FreezeWindow(name="w", days=("mon",), start_minute=60, end_minute=60)


# ----------------------------------------------------------------------------------- to_dict


def to_toml(data: dict[str, Any]) -> str:
    """A minimal TOML writer for policy_to_dict's output (JSON scalars and arrays are valid TOML)."""
    lines = [f"{k} = {json.dumps(data[k])}" for k in ("version", "name", "utc_offset", "timezone") if k in data]
    rules = data["rules"]
    lines.append("[rules.allowed_actions]")
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in rules["allowed_actions"].items()]
    for section in ("blast_radius", "override_cooldown", "channel_hourly_cap"):
        lines.append(f"[rules.{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in rules[section].items()]
    for window in rules["freeze_windows"]:
        lines.append("[[rules.freeze_windows]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in window.items()]
    return "\n".join(lines) + "\n"


def test_policy_to_dict_round_trips() -> None:
    text = """
name = "prod"
utc_offset = "+05:30"

[rules.allowed_actions]
disk_failure = ["drain", "replace_disk"]
"*" = ["investigate"]

[rules.blast_radius]
max_concurrent = 3
disruptive_actions = ["drain"]
stale_after_seconds = 7200

[[rules.freeze_windows]]
name = "year-end"
start = 2025-12-24T00:00:00-08:00
end = 2026-01-02T00:00:00-08:00
allow_severities = ["critical"]

[[rules.freeze_windows]]
name = "nights"
days = ["mon", "tue"]
start = "22:00"
end = "06:00"
actions = ["reboot"]

[rules.override_cooldown]
seconds = 90.5
scope = "target"

[rules.channel_hourly_cap]
max_per_hour = 7
"""
    policy = parse_policy(text)
    data = policy_to_dict(policy)
    assert json.loads(json.dumps(data)) == data  # plain data only
    assert data["rules"]["freeze_windows"][1] == {
        "name": "nights",
        "days": ["mon", "tue"],
        "start": "22:00",
        "end": "06:00",
        "utc_offset": "+05:30",
        "actions": ["reboot"],
    }
    assert data["rules"]["freeze_windows"][0]["start"] == "2025-12-24T00:00:00-08:00"
    assert parse_policy(to_toml(data)) == policy
    assert parse_policy(to_toml(policy_to_dict(DEFAULT_POLICY))) == DEFAULT_POLICY


# -------------------------------------------------------------------------------- properties

FAULTS = ["disk_failure", "memory_ecc", "psu_failure"]
ACTIONS = ["drain", "reboot", "replace_disk", "investigate", "none"]
CLUSTERS = ["a", "b", "c"]
TARGETS = ["a-n1", "a-n2", "b-n1", "c.n7"]
KEYS = ["k1", "k2"]
CHANNELS = ["#a", "#b"]
BASE = int(at(2025, 6, 11))
SPAN = 10 * 86_400
# "now" is drawn around BASE or around a 2025 daylight-saving change of one of the ZONES
BASES = [
    BASE,
    int(at(2025, 3, 30, 1)),  # Europe/Berlin
    int(at(2025, 10, 26, 1)),
    int(at(2025, 3, 9, 7)),  # America/New_York
    int(at(2025, 11, 2, 6)),
    int(at(2025, 4, 5, 15)),  # Australia/Lord_Howe (a half-hour change)
    int(at(2025, 10, 4, 15, 30)),
]
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kolkata", "UTC"]

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60)
subsets = st.lists(st.sampled_from(ACTIONS), unique=True, max_size=3).map(tuple)


@st.composite
def freeze_windows(draw: st.DrawFn, index: int) -> FreezeWindow:
    severities = tuple(draw(st.lists(st.sampled_from(list(Severity)), unique=True, max_size=2)))
    actions = draw(subsets)
    if draw(st.booleans()):
        tz = timezone(timedelta(minutes=draw(offsets)))
        start = datetime.fromtimestamp(draw(st.integers(BASE - SPAN, BASE + SPAN)), tz)
        end = start + timedelta(seconds=draw(st.integers(1, 3 * 86_400)))
        return FreezeWindow(f"w{index}", start=start, end=end, allow_severities=severities, actions=actions)
    start_minute = draw(st.integers(0, 1439))
    end_minute = draw(st.integers(0, 1440).filter(lambda m: m != start_minute))
    days = tuple(draw(st.lists(st.sampled_from(DAY_NAMES), unique=True, min_size=1, max_size=3)))
    zone = draw(st.sampled_from([None, *ZONES]))
    return FreezeWindow(
        f"w{index}",
        days=days,
        start_minute=start_minute,
        end_minute=end_minute,
        utc_offset_minutes=draw(offsets) if zone is None else 0,
        allow_severities=severities,
        actions=actions,
        timezone=zone or "",
        tz=None if zone is None else ZoneInfo(zone),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    n_windows = draw(st.integers(0, 3))
    zone = draw(st.sampled_from(["", *ZONES]))
    return Policy(
        name=draw(st.sampled_from(["p", "prod policy"])),
        utc_offset_minutes=0 if zone else draw(offsets),
        timezone=zone,
        allowed_actions=draw(st.dictionaries(st.sampled_from([*FAULTS, "*"]), subsets, max_size=3)),
        blast_radius=BlastRadiusRule(draw(st.integers(1, 3)), draw(subsets)),
        freeze_windows=tuple(draw(freeze_windows(i)) for i in range(n_windows)),
        override_cooldown=OverrideCooldownRule(
            draw(st.sampled_from([0, 60, 3600, 1.5])), draw(st.sampled_from(["key", "target", "both"]))
        ),
        channel_hourly_cap=ChannelHourlyCapRule(draw(st.integers(1, 4))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Prediction, str, str, PolicyContext]:
    labels = draw(st.sampled_from([{}, {"cluster": "b"}]))
    prediction = Prediction(
        id="p",
        fault_type=draw(st.sampled_from(FAULTS)),
        target=draw(st.sampled_from(TARGETS)),
        action=draw(st.sampled_from(ACTIONS)),
        confidence=draw(st.floats(0, 1)),
        severity=draw(st.sampled_from(list(Severity))),
        labels=labels,
    )
    base = draw(st.sampled_from(BASES))
    now = draw(st.integers(base - SPAN, base + SPAN))
    override_keys = [f"key:{k}" for k in KEYS] + [f"target:{t}" for t in TARGETS]
    context = PolicyContext(
        now=now,
        active_disruptive_by_cluster=draw(st.dictionaries(st.sampled_from(CLUSTERS), st.integers(0, 4))),
        last_override_at={
            k: now - ago
            for k, ago in draw(st.dictionaries(st.sampled_from(override_keys), st.integers(-10, 4000))).items()
        },
        surfaced_last_hour_by_channel=draw(st.dictionaries(st.sampled_from(CHANNELS), st.integers(0, 5))),
    )
    return prediction, draw(st.sampled_from(KEYS)), draw(st.sampled_from(CHANNELS)), context


def first_shown(tz: tzinfo, wall: datetime) -> datetime:
    """The first instant the zone's clock shows ``wall`` (naive) or later, found with datetime arithmetic: the
    earlier of its occurrences, or, when the clocks skip it, the first whole minute after the change."""
    shown = [
        moment
        for fold in (0, 1)
        if (moment := wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)).astimezone(tz).replace(tzinfo=None) == wall
    ]
    if shown:
        return min(shown)
    moment = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # the clock before the change: earlier than wall
    while moment.astimezone(tz).replace(tzinfo=None) < wall:
        moment += timedelta(minutes=1)
    return moment


def window_open(window: FreezeWindow, now: float) -> bool:
    """Independent check with datetime arithmetic (the engine uses seconds-of-week arithmetic, and bisection for a
    gap): a weekly window at a fixed offset is open when the local wall-clock time (a naive datetime) is inside it;
    one in a named zone from the first instant its start shows on the clock to the first its end shows."""
    instant = datetime.fromtimestamp(now, UTC)
    if window.start is not None and window.end is not None:
        return window.start <= instant < window.end
    length = timedelta(minutes=(window.end_minute - window.start_minute) % 1440 or 1440)
    if window.tz is not None:
        today = instant.astimezone(window.tz).date()
        for days in range(-2, 3):
            day = today + timedelta(days=days)
            if DAY_NAMES[day.weekday()] in window.days:
                opens = datetime.combine(day, time(0, 0)) + timedelta(minutes=window.start_minute)
                if first_shown(window.tz, opens) <= instant < first_shown(window.tz, opens + length):
                    return True
        return False
    wall = instant.astimezone(timezone(timedelta(minutes=window.utc_offset_minutes))).replace(tzinfo=None)
    for back in (0, 1):
        day = wall.date() - timedelta(days=back)
        if DAY_NAMES[day.weekday()] in window.days:
            opens = datetime.combine(day, time(0, 0)) + timedelta(minutes=window.start_minute)
            if opens <= wall < opens + length:
                return True
    return False


def hard_rules_that_hold(policy: Policy, p: Prediction, key: str, context: PolicyContext) -> list[str]:
    """Each hard rule's own condition, computed from the policy data without calling the engine."""
    holding = []
    table = dict(policy.allowed_actions)
    entry = table.get(p.fault_type, table.get("*"))
    if entry is not None and p.action not in entry:
        holding.append("allowed_actions")
    if any(
        window_open(w, context.now)
        and (not w.actions or p.action in w.actions)
        and p.severity not in w.allow_severities
        for w in policy.freeze_windows
    ):
        holding.append("freeze_window")
    cluster = p.labels.get("cluster") or p.target.replace(".", "-").split("-")[0]
    if (
        p.action in policy.blast_radius.disruptive_actions
        and context.active_disruptive_by_cluster.get(cluster, 0) >= policy.blast_radius.max_concurrent
    ):
        holding.append("blast_radius")
    cooldown = policy.override_cooldown
    watched = {"key": [f"key:{key}"], "target": [f"target:{p.target}"]}
    watched["both"] = watched["key"] + watched["target"]
    if cooldown.seconds > 0 and any(
        k in context.last_override_at and context.now - context.last_override_at[k] < cooldown.seconds
        for k in watched[cooldown.scope]
    ):
        holding.append("override_cooldown")
    return holding


@settings(max_examples=400, deadline=None)
@given(policy=policies(), scenario=scenarios())
def test_no_prediction_is_allowed_when_a_hard_rule_holds(
    policy: Policy, scenario: tuple[Prediction, str, str, PolicyContext]
) -> None:
    prediction, key, channel, context = scenario
    verdict = evaluate(policy, prediction, key, channel, context)
    holding = hard_rules_that_hold(policy, prediction, key, context)
    over_cap = context.surfaced_last_hour_by_channel.get(channel, 0) >= policy.channel_hourly_cap.max_per_hour
    if holding:
        assert verdict.outcome != "allow"
        assert verdict.outcome == "block"
        assert verdict.rule == holding[0]  # the first rule in evaluation order wins
    elif over_cap:
        assert (verdict.outcome, verdict.rule) == ("digest", "channel_hourly_cap")
    else:
        assert verdict == PolicyVerdict("allow", ALL_RULES_PASSED, "all rules passed")
    assert verdict.rule in (*RULE_NAMES, ALL_RULES_PASSED)
    assert verdict.reason


@settings(max_examples=200, deadline=None)
@given(policy=policies())
def test_policy_to_dict_round_trips_for_random_policies(policy: Policy) -> None:
    data = policy_to_dict(policy)
    assert json.loads(json.dumps(data)) == data
    assert parse_policy(to_toml(data), zone=ZoneInfo) == policy
