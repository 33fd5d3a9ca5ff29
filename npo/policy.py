"""Safety Policy Engine (SPE): declarative guardrails evaluated before a recommendation is surfaced.

Rules are data: a TOML policy (see ``default_policy.toml``, embedded here as :data:`DEFAULT_POLICY_TEXT`)
parsed by :func:`parse_policy` into an immutable :class:`Policy`. :func:`evaluate` checks one prediction
against it, given a :class:`PolicyContext` snapshot supplied by the caller, and returns a
:class:`PolicyVerdict` that always names the rule behind it.

Evaluation order: ``mute`` (a scenario key muted by an engineer until a time, e.g. ``/npo mute``; these rules
live in the database, not the file, and are passed in as :attr:`Policy.mutes`), ``allowed_actions``,
``deny_targets``, ``freeze_window``, ``blast_radius``, ``override_cooldown`` (hard blocks; the first one wins), then
``channel_hourly_cap`` (outcome ``"digest"``: folded into a digest message,
never dropped). Nothing here reads files, the clock or the environment: the caller reads the policy file and
passes its text, passes "now" inside the context, and resolves IANA time-zone names (``timezone =
"Europe/Berlin"``) with the ``zone`` callable given to :func:`parse_policy` (the bot passes
``zoneinfo.ZoneInfo``, which reads the system's zone files).

The modules (this one is the public entry point: every name below is imported from here, and it holds the
default policy): ``npo/policy_base.py`` the rule names and defaults, :class:`PolicyError`, :func:`name_key` and
the value checks; ``npo/freeze_window.py`` :class:`FreezeWindow`; ``npo/policy_types.py`` the other rules,
:class:`Policy`, :class:`PolicyContext` and :class:`PolicyVerdict`; ``npo/policy_eval.py`` :func:`evaluate`;
``npo/policy_toml.py`` :func:`parse_policy` and :func:`policy_to_dict` (over ``npo/toml_locator.py``, which
finds a field's line).
"""

from __future__ import annotations

from npo.freeze_window import FreezeWindow
from npo.policy_base import (
    ALL_RULES_PASSED,
    DEFAULT_COOLDOWN_SCOPE,
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_DISRUPTIVE_ACTIONS,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_PER_HOUR,
    DEFAULT_STALE_AFTER_SECONDS,
    RULE_ALLOWED_ACTIONS,
    RULE_BLAST_RADIUS,
    RULE_CHANNEL_HOURLY_CAP,
    RULE_DENY_TARGETS,
    RULE_FREEZE_WINDOW,
    RULE_MUTE,
    RULE_NAMES,
    RULE_OVERRIDE_COOLDOWN,
    SUPPORTED_VERSION,
    WEEKDAYS,
    CooldownScope,
    PolicyError,
    PolicyOutcome,
    ZoneResolver,
    name_key,
)
from npo.policy_eval import evaluate
from npo.policy_toml import parse_policy, policy_to_dict
from npo.policy_types import (
    BlastRadiusRule,
    ChannelHourlyCapRule,
    DenyTargetsRule,
    Mute,
    OverrideCooldownRule,
    Policy,
    PolicyContext,
    PolicyVerdict,
)

__all__ = [
    "ALL_RULES_PASSED",
    "DEFAULT_COOLDOWN_SCOPE",
    "DEFAULT_COOLDOWN_SECONDS",
    "DEFAULT_DISRUPTIVE_ACTIONS",
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_PER_HOUR",
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_TEXT",
    "DEFAULT_STALE_AFTER_SECONDS",
    "RULE_ALLOWED_ACTIONS",
    "RULE_BLAST_RADIUS",
    "RULE_CHANNEL_HOURLY_CAP",
    "RULE_DENY_TARGETS",
    "RULE_FREEZE_WINDOW",
    "RULE_MUTE",
    "RULE_NAMES",
    "RULE_OVERRIDE_COOLDOWN",
    "SUPPORTED_VERSION",
    "WEEKDAYS",
    "BlastRadiusRule",
    "ChannelHourlyCapRule",
    "CooldownScope",
    "DenyTargetsRule",
    "FreezeWindow",
    "Mute",
    "OverrideCooldownRule",
    "Policy",
    "PolicyContext",
    "PolicyError",
    "PolicyOutcome",
    "PolicyVerdict",
    "ZoneResolver",
    "evaluate",
    "name_key",
    "parse_policy",
    "policy_to_dict",
]

DEFAULT_POLICY_TEXT = """# NPO Safety Policy Engine: the default policy.
#
# Hard guardrails evaluated before any recommendation is surfaced, in this order:
#   allowed_actions, deny_targets, freeze_windows, blast_radius, override_cooldown -> "block" (first one wins)
#   channel_hourly_cap                                                            -> "digest" (never dropped)
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

# Denied targets: never surface a prediction whose target matches one of `patterns`, shell-style globs
# ("*" any run of characters, "?" one, "[...]" one of a set), compared without case in any script ("DB-*" matches
# "db-03", "ÜBUNG-*" matches "übung-1"; action names fold ASCII letters only, see above).
# With `actions` (not empty: omit it for every action), only those actions are held back on such targets.
# Default: no patterns (rule off). Example:
#   patterns = ["db-*", "*-canary"]
#   actions = ["reboot", "reimage", "power_cycle"]   # default: every action
[rules.deny_targets]
patterns = []

# Blast radius: a disruptive action is blocked while its cluster already has max_concurrent open disruptive
# recommendations. The cluster is the prediction's "cluster" label, else the first non-empty dash/dot segment of
# its target ("r12-n04" -> "r12"). Actions are compared without surrounding blanks and without case ("Drain" is
# disruptive too). max_concurrent is a positive integer; an empty disruptive_actions list turns the rule off.
# A recommendation is open from when it is surfaced (or digested) until it is closed (its outcome is recorded, or
# its Alertmanager alert resolves) or stale: stale_after_seconds (a positive number) after its predicted fault
# time, which is when it was surfaced plus the prediction's time_to_fault_s (when it was surfaced, if the
# prediction gives no time to fault). So a team that reports no outcomes does not have its clusters blocked for
# good. One turned down does not count either: someone overrode it as a "False positive" or the "Wrong action"
# and nobody liked it; the override must be one that counts (a person NPO trusts: trust weight above zero when they
# gave it, as for the override cooldown), whether or not override_cooldown is on. Overridden for "Maintenance", as
# "Already handled" or "Other", it still counts (the node may be out of service); a Like from anyone counts it
# again. A change of disruptive_actions or stale_after_seconds needs a restart (a reload refuses it). Defaults shown.
[rules.blast_radius]
max_concurrent = 2
disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]
stale_after_seconds = 86400

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
# With a timezone each day's window is one period, from the first time the local clock shows its start to the
# first time it shows its end: when clocks go forward a skipped time opens (or closes) the window at the end of
# the gap (a window wholly inside the gap is not in force that day); when they go back a time shown twice counts
# at its first occurrence, so a window inside the repeated hour is frozen once, and one that starts or ends in it
# is not lifted partway nor frozen again by the clock's second pass.

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
