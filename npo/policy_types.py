"""The Safety Policy's records: the rules (:class:`BlastRadiusRule`, :class:`OverrideCooldownRule`,
:class:`ChannelHourlyCapRule`, the runtime :class:`Mute`; freeze windows are in :mod:`npo.freeze_window`), the
whole :class:`Policy`, and what evaluation takes and gives (:class:`PolicyContext`, :class:`PolicyVerdict`).
Each checks its values when built. ``npo.policy`` re-exports them."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from npo.freeze_window import FreezeWindow
from npo.policy_base import (
    DEFAULT_COOLDOWN_SCOPE,
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_DISRUPTIVE_ACTIONS,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_PER_HOUR,
    DEFAULT_STALE_AFTER_SECONDS,
    SUPPORTED_VERSION,
    CooldownScope,
    PolicyOutcome,
    _name_problem,
    _non_negative_seconds,
    _positive_int,
    _positive_seconds,
    _text,
    _text_tuple,
    _type_name,
    name_key,
)
from npo.types import InvalidRecord

_COOLDOWN_SCOPES: tuple[str, ...] = ("key", "target", "both")


@dataclass(frozen=True, slots=True)
class BlastRadiusRule:
    """At most ``max_concurrent`` open disruptive recommendations per cluster; empty actions = rule off.

    A recommendation is open from when it is surfaced (or digested) until it is closed (an outcome, a resolved
    alert) or stale: ``stale_after_seconds`` after its predicted fault time (surfaced + the prediction's
    ``time_to_fault_s``; surfaced, when the prediction gives none). One turned down is not counted: overridden as
    wrong (:func:`~npo.policy_base.turns_down`: "False positive", "Wrong action") by someone whose override starts
    the cooldown (trust weight above zero; whether or not the cooldown rule is on), liked by nobody. The stores
    count them (``PolicyContext.active_disruptive_by_cluster``) with the ``disruptive_actions`` and
    ``stale_after_seconds`` they are built with."""

    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    disruptive_actions: tuple[str, ...] = DEFAULT_DISRUPTIVE_ACTIONS
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS
    disruptive_keys: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)  # name_key

    def __post_init__(self) -> None:
        _positive_int("max_concurrent", self.max_concurrent)
        object.__setattr__(
            self, "stale_after_seconds", _positive_seconds("stale_after_seconds", self.stale_after_seconds)
        )
        object.__setattr__(self, "disruptive_actions", _text_tuple("disruptive_actions", self.disruptive_actions))
        object.__setattr__(self, "disruptive_keys", frozenset(name_key(a) for a in self.disruptive_actions))


@dataclass(frozen=True, slots=True)
class DenyTargetsRule:
    """Never surface a prediction whose target matches one of ``patterns`` (shell-style globs: ``*``, ``?``,
    ``[…]``; compared without case, for every script: ``DB-*`` matches ``db-03`` and ``ÜBUNG-*`` matches ``übung-1``,
    each character folded on its own, so ``?`` is still one character). With ``actions``, only those actions are
    denied there (compared by :func:`~npo.policy_base.name_key`, as names are); empty ``patterns`` = rule off (the
    default)."""

    patterns: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, compare=False, repr=False)
    action_keys: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        patterns = _text_tuple("patterns", self.patterns)
        object.__setattr__(self, "patterns", patterns)
        object.__setattr__(self, "actions", _text_tuple("actions", self.actions))
        # Targets are compared only here, never in SQL, so not as names (ASCII, as SQLite's lower()) but with
        # Unicode's simple case folding (re.IGNORECASE on a str pattern).
        compiled = tuple(re.compile(fnmatch.translate(p), re.IGNORECASE) for p in patterns)
        object.__setattr__(self, "compiled", compiled)
        object.__setattr__(self, "action_keys", frozenset(name_key(a) for a in self.actions))

    def match(self, target: str, action: str) -> str | None:
        """The first pattern ``target`` matches when ``action`` is denied there, else None."""
        if self.action_keys and name_key(action) not in self.action_keys:
            return None
        for pattern, compiled in zip(self.patterns, self.compiled, strict=True):
            if compiled.match(target):
                return pattern
        return None


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
    """All SPE rules. Built by :func:`~npo.policy_toml.parse_policy`; ``Policy()`` equals the default policy.

    ``allowed_actions`` maps a fault type (or the ``"*"`` fallback) to its allowed actions; it is opt-in
    (an unlisted fault type with no ``"*"`` may take any action). ``utc_offset_minutes``, or the IANA zone
    ``timezone`` when set, is the policy's default local time for weekly freeze windows (already resolved into
    each window; shown by :func:`~npo.policy_toml.policy_to_dict`).
    """

    name: str = "default"
    version: int = SUPPORTED_VERSION
    utc_offset_minutes: int = 0
    timezone: str = ""
    allowed_actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    deny_targets: DenyTargetsRule = field(default_factory=DenyTargetsRule)
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

    ``now`` is Unix seconds (UTC). ``active_disruptive_by_cluster``: open (surfaced, neither closed, stale nor
    turned down: see :class:`BlastRadiusRule`) disruptive recommendations per cluster. ``last_override_at``: Unix
    seconds of the last override, keyed ``"key:<scenario key>"`` and ``"target:<target>"`` in one map.
    ``surfaced_last_hour_by_channel``: recommendations surfaced per channel in the last hour. Missing entries count
    as zero / never.
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

    ``rule`` always names a rule (see :data:`~npo.policy_base.RULE_NAMES`), or ``"all_rules_passed"`` when the
    outcome is ``"allow"``; ``reason`` explains it with the values involved.
    """

    outcome: PolicyOutcome
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        """True when the prediction may be surfaced now (outcome ``"allow"``)."""
        return self.outcome == "allow"
