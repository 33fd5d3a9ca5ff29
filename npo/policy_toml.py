"""The Safety Policy's TOML form: :func:`parse_policy` (the text of a policy file into a checked :class:`Policy`,
or a :class:`PolicyError` naming the line and field) and :func:`policy_to_dict` (a policy back as TOML-shaped
data). ``npo.policy`` re-exports them."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime, time, tzinfo
from typing import Any, TypeVar, cast

from npo.freeze_window import FreezeWindow, _check_zone, _format_minute, _format_offset
from npo.policy_base import (
    SUPPORTED_VERSION,
    PolicyError,
    ZoneResolver,
    _name_problem,
    _text,
    _text_tuple,
    _type_name,
    name_key,
)
from npo.policy_types import BlastRadiusRule, ChannelHourlyCapRule, DenyTargetsRule, OverrideCooldownRule, Policy
from npo.toml_locator import _Locator, _Path
from npo.types import InvalidRecord

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
            "deny_targets": {
                "patterns": list(policy.deny_targets.patterns),
                **({"actions": list(policy.deny_targets.actions)} if policy.deny_targets.actions else {}),
            },
            "blast_radius": {
                "max_concurrent": policy.blast_radius.max_concurrent,
                "disruptive_actions": list(policy.blast_radius.disruptive_actions),
                "stale_after_seconds": policy.blast_radius.stale_after_seconds,
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
    "deny_targets": ("patterns", "actions"),
    "blast_radius": ("max_concurrent", "disruptive_actions", "stale_after_seconds"),
    "freeze_windows": ("name", "start", "end", "days", "utc_offset", "timezone", "allow_severities", "actions"),
    "override_cooldown": ("seconds", "scope"),
    "channel_hourly_cap": ("max_per_hour",),
}
_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$|\s*\(at end of document\)\s*$")
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_BOTH_ZONE_AND_OFFSET = "set either timezone (a named zone) or utc_offset (a fixed offset), not both"
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_DIGITS_RE = re.compile(r"[0-9][0-9_]*")

_Rule = TypeVar("_Rule", BlastRadiusRule, OverrideCooldownRule, ChannelHourlyCapRule, DenyTargetsRule)


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
            for rule in ("deny_targets", "blast_radius", "override_cooldown", "channel_hourly_cap")
            if rule in rules
        }
        for rule, body in sections.items():
            self.check_known(body, _RULE_FIELDS[rule], ("rules", rule), None)
        if sections.get("deny_targets", {}).get("actions") == []:  # as a freeze window's: [] reads as "no action"
            message = "must not be an empty list (omit it to deny every action on the matching targets)"
            raise self.fail(("rules", "deny_targets"), None, "actions", message)
        allowed = self.allowed_actions(rules.get("allowed_actions", {}))
        windows = self.freeze_windows(rules.get("freeze_windows", []), offset, zone)
        deny = self.construct(DenyTargetsRule, sections.get("deny_targets", {}), ("rules", "deny_targets"))
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
            deny_targets=deny,
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

    Every rule and field is optional (defaults as in :data:`~npo.policy.DEFAULT_POLICY_TEXT`). A leading byte-order mark
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
