"""Evaluation of the Safety Policy: :func:`evaluate` checks one prediction against a :class:`Policy` given a
:class:`PolicyContext` and returns the :class:`PolicyVerdict` (mutes, then the file's rules in order).
``npo.policy`` re-exports it."""

from __future__ import annotations

from datetime import UTC, datetime

from npo.policy_base import (
    ALL_RULES_PASSED,
    RULE_ALLOWED_ACTIONS,
    RULE_BLAST_RADIUS,
    RULE_CHANNEL_HOURLY_CAP,
    RULE_DENY_TARGETS,
    RULE_FREEZE_WINDOW,
    RULE_MUTE,
    RULE_OVERRIDE_COOLDOWN,
    name_key,
)
from npo.policy_types import Policy, PolicyContext, PolicyVerdict
from npo.types import Prediction


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.1f}"


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

    # 1b. deny_targets (shell-style patterns on the target, compared without case in any script)
    denied = policy.deny_targets.match(prediction.target, action)
    if denied is not None:
        scope = f"actions {', '.join(policy.deny_targets.actions)}" if policy.deny_targets.actions else "every action"
        return PolicyVerdict(
            "block",
            RULE_DENY_TARGETS,
            f"target {prediction.target!r} matches the denied pattern {denied!r} (applies to {scope})",
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
