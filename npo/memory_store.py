"""The reference store: :class:`InMemoryStore` and its :class:`InMemoryTransaction`, the in-memory
implementation of the store protocol (:mod:`npo.store_protocol`) used by tests, the simulation and the
benchmarks. ``npo.loop`` re-exports them."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from npo.alignment import AlignmentSample
from npo.bandit import ThresholdBandit
from npo.loop_types import SYSTEM_OPERATOR, AppliedFeedback, LoopConfig
from npo.misalignment import KeyAlignment
from npo.policy_base import DEFAULT_DISRUPTIVE_ACTIONS, DEFAULT_STALE_AFTER_SECONDS, name_key, turns_down
from npo.policy_types import PolicyContext
from npo.retrain import LogisticModel
from npo.store_protocol import decision_audit_detail
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome, Prediction, Verdict


@dataclass
class _State:
    predictions: dict[str, Prediction] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    fingerprints: dict[str, tuple[str, float]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # id found a duplicate by fingerprint -> the first's
    keys: dict[str, KeyAlignment] = field(default_factory=dict)
    bandit: ThresholdBandit | None = None
    trust: dict[str, OperatorTrust] = field(default_factory=dict)
    requests: set[tuple[str, str, str]] = field(default_factory=set)  # (prediction, operator, request id)
    feedback_log: list[AppliedFeedback] = field(default_factory=list)
    effective: dict[str, dict[str, AppliedFeedback]] = field(default_factory=dict)  # prediction → operator → answer
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    samples: dict[str, AlignmentSample] = field(default_factory=dict)  # by request id; effective answers only
    model: LogisticModel | None = None
    audit_log: list[tuple[str, str, dict[str, object], float]] = field(default_factory=list)
    # The Safety Policy's view of the world, kept as the SQLite store reads it from its tables
    # (storage/tx_decisions.py, SQLiteTransaction.policy_context), so both stores decide alike:
    # open disruptive recommendations: prediction → cluster (surfaced or digest, action disruptive, no outcome yet),
    # and per cluster, prediction → its predicted fault time (decided_at + time_to_fault_s; the SQLite store's
    # recommendations.due_at): one counts until it is stale_after_s past it
    open_disruptive: dict[str, str] = field(default_factory=dict)
    active_disruptive: dict[str, dict[str, float]] = field(default_factory=dict)
    # channel → decided_at of its surfaced (not digest) decisions, ascending
    surfaced_at: dict[str, list[float]] = field(default_factory=dict)
    # "key:<scenario key>" / "target:<target>" → (prediction, operator) → at: the effective overrides counted with
    # a trust weight above zero; and the newest of them per key / target
    overrides: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    last_override: dict[str, float] = field(default_factory=dict)


_MISSING = object()
_HOUR_S = 3600.0  # the channel cap's window, as the SQLite store counts it
_SET_CONTEXT_NOW, _SET_CONTEXT_ACTIVE, _SET_CONTEXT_OVERRIDES, _SET_CONTEXT_SURFACED = (
    getattr(PolicyContext, name).__set__
    for name in ("now", "active_disruptive_by_cluster", "last_override_at", "surfaced_last_hour_by_channel")
)
_new_context = functools.partial(object.__new__, PolicyContext)
_NO_ENTRIES: Mapping[str, Any] = MappingProxyType({})


def _after(times: list[float], bound: float) -> int:
    """The index of the first of the ascending ``times`` above ``bound`` (``bisect.bisect_right``)."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] > bound:
            hi = mid
        else:
            lo = mid + 1
    return lo


class InMemoryTransaction:
    """A transaction over :class:`InMemoryStore`: writes go to the live state and an undo log replays them
    backwards if the transaction fails, so a failed step changes nothing."""

    def __init__(
        self,
        state: _State,
        config: LoopConfig,
        disruptive_actions: frozenset[str] = frozenset(),
        stale_after_s: float = DEFAULT_STALE_AFTER_SECONDS,
    ) -> None:
        self._s = state
        self._config = config
        self._disruptive = disruptive_actions  # name_key'd, as InMemoryStore keeps them
        self._stale_after_s = stale_after_s
        self._undo: list[Callable[[], None]] = []

    def _remember(self, mapping: dict[Any, Any], key: Any) -> None:
        old = mapping.get(key, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old

        self._undo.append(undo)

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def find_duplicate(self, prediction: Prediction, window_s: float) -> Decision | None:
        if prediction.id in self._s.decisions:
            return self._s.decisions[prediction.id]
        alias = self._s.aliases.get(prediction.id)  # found a duplicate by fingerprint before: still that prediction
        if alias is not None:
            return self._s.decisions[alias]
        seen = self._s.fingerprints.get(prediction.fingerprint())
        if seen is not None and prediction.received_at - seen[1] < window_s:
            return self._s.decisions[seen[0]]
        return None

    def add_decision(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        pid = prediction.id
        self._remember(self._s.predictions, pid)
        self._s.predictions[pid] = prediction
        self._remember(self._s.decisions, pid)
        self._s.decisions[pid] = decision
        self._remember(self._s.channels, pid)
        self._s.channels[pid] = channel
        self._remember(self._s.fingerprints, prediction.fingerprint())
        self._s.fingerprints[prediction.fingerprint()] = (pid, prediction.received_at)
        if decision.verdict is Verdict.SURFACE:
            self._count_surfaced(channel, decision.decided_at)
        if decision.surfaced and name_key(prediction.action) in self._disruptive:
            self._open_disruptive(pid, prediction.cluster, decision.decided_at + (prediction.time_to_fault_s or 0.0))
        self.audit("decision", pid, decision_audit_detail(decision), decision.decided_at)

    def _count_surfaced(self, channel: str, at: float) -> None:
        times = self._s.surfaced_at.get(channel)
        if times is None:
            self._remember(self._s.surfaced_at, channel)
            times = self._s.surfaced_at[channel] = []
        if not times or at >= times[-1]:
            times.append(at)
        else:  # stamped before a decision already counted (another clock): kept in order
            times.insert(_after(times, at), at)

        def undo() -> None:
            times.remove(at)

        self._undo.append(undo)

    def _open_disruptive(self, prediction_id: str, cluster: str, due_at: float) -> None:
        s = self._s
        self._remember(s.open_disruptive, prediction_id)
        s.open_disruptive[prediction_id] = cluster
        entries = s.active_disruptive.get(cluster)
        if entries is None:
            self._remember(s.active_disruptive, cluster)
            entries = s.active_disruptive[cluster] = {}
        self._remember(entries, prediction_id)
        entries[prediction_id] = due_at

    def _resolve(self, prediction_id: str) -> None:
        """An outcome resolves the prediction's recommendation: it no longer counts against its cluster."""
        s = self._s
        cluster = s.open_disruptive.get(prediction_id)
        if cluster is None:
            return
        self._remember(s.open_disruptive, prediction_id)
        del s.open_disruptive[prediction_id]
        entries = s.active_disruptive[cluster]
        self._remember(entries, prediction_id)
        del entries[prediction_id]

    def _turned_down(self, prediction_id: str) -> bool:
        """Someone's effective Override starts a cooldown on the recommendation and gives a reason saying it is wrong
        (:func:`npo.policy_base.turns_down`), and nobody's effective answer is a Like: no one is acting on it, so it
        is not counted toward its cluster's blast radius (as ``storage.statements.COUNTS_TOWARD_BLAST_RADIUS``)."""
        s = self._s
        answers = s.effective.get(prediction_id)
        if not answers or any(a.event.kind is FeedbackKind.LIKE for a in answers.values()):
            return False
        target = s.predictions[prediction_id].target
        counted = s.overrides.get(f"target:{target}")
        return counted is not None and any(
            (prediction_id, operator) in counted and turns_down(answer.event.reason)
            for operator, answer in answers.items()
        )

    def get_prediction(self, prediction_id: str) -> Prediction | None:
        return self._s.predictions.get(prediction_id)

    def get_decision(self, prediction_id: str) -> Decision | None:
        return self._s.decisions.get(prediction_id)

    def policy_context(self, prediction: Prediction, key: str, channel: str, now: float) -> PolicyContext:
        """The guardrails' view of the world for this prediction, with the same maps and counts as
        :meth:`storage.store.SQLiteTransaction.policy_context`: open disruptive recommendations (surfaced or digest,
        action in the store's ``disruptive_actions`` compared by :func:`npo.policy.name_key`, no outcome yet, not
        stale: predicted fault time after now − ``stale_after_s``, not turned down: :meth:`_turned_down`) in the
        prediction's cluster; the last override of its key and of its target that is still someone's effective
        answer and was counted with a trust weight above zero; recommendations surfaced (not digested) in
        ``channel`` after now − 1 h, those stamped later than ``now`` included."""
        s = self._s
        cluster = prediction.cluster
        active: dict[str, int] = {}
        if self._disruptive:
            entries = s.active_disruptive.get(cluster)
            since = now - self._stale_after_s
            active[cluster] = (
                sum(1 for pid, due_at in entries.items() if due_at > since and not self._turned_down(pid))
                if entries
                else 0
            )
        overrides: dict[str, float] = {}
        for subject in (f"key:{key}", f"target:{prediction.target}"):
            at = s.last_override.get(subject)
            if at is not None:
                overrides[subject] = at
        times = s.surfaced_at.get(channel)
        surfaced = len(times) - _after(times, now - _HOUR_S) if times else 0
        if type(now) is not float or not math.isfinite(now):  # PolicyContext converts an int, refuses the rest
            return PolicyContext(
                now=now,
                active_disruptive_by_cluster=active,
                last_override_at=overrides,
                surfaced_last_hour_by_channel={channel: surfaced},
            )
        # Counts kept here, times of validated feedback, ``now`` just checked: built without re-validation (as the
        # SQLite store's batch contexts are).
        context: PolicyContext = _new_context()
        _SET_CONTEXT_NOW(context, now)
        _SET_CONTEXT_ACTIVE(context, MappingProxyType(active) if active else _NO_ENTRIES)
        _SET_CONTEXT_OVERRIDES(context, MappingProxyType(overrides) if overrides else _NO_ENTRIES)
        _SET_CONTEXT_SURFACED(context, MappingProxyType({channel: surfaced}))
        return context

    def _override_subjects(self, applied: AppliedFeedback, given: float | None = None) -> tuple[str, ...]:
        """The cooldown entries an answer counts in: its key and its prediction's target, when it is an override
        with a trust weight above zero given by a person whose weight was above zero then (``given``, the weight of
        the loop's audit detail: a changed answer keeps the first one's weight; the condition of the SQLite store's
        query)."""
        if applied.event.kind is not FeedbackKind.OVERRIDE or not applied.weight > 0:
            return ()
        if given is not None and not given > 0:
            return ()
        prediction = self._s.predictions.get(applied.event.prediction_id)
        key = f"key:{applied.key}"
        return (key,) if prediction is None else (key, f"target:{prediction.target}")

    def _add_override(self, applied: AppliedFeedback, given: float | None) -> None:
        s = self._s
        answer, at = (applied.event.prediction_id, applied.event.operator), applied.event.at
        for subject in self._override_subjects(applied, given):
            entries = s.overrides.get(subject)
            if entries is None:
                self._remember(s.overrides, subject)
                entries = s.overrides[subject] = {}
            self._remember(entries, answer)
            entries[answer] = at
            last = s.last_override.get(subject)
            if last is None or at > last:
                self._remember(s.last_override, subject)
                s.last_override[subject] = at

    def _drop_override(self, applied: AppliedFeedback) -> None:
        """``applied`` is no longer an effective answer: its override stops counting (the newest one left counts)."""
        s = self._s
        answer = (applied.event.prediction_id, applied.event.operator)
        for subject in self._override_subjects(applied):
            entries = s.overrides.get(subject)
            if entries is None or answer not in entries:
                continue
            self._remember(entries, answer)
            at = entries.pop(answer)
            if s.last_override.get(subject) == at:
                self._remember(s.last_override, subject)
                if entries:
                    s.last_override[subject] = max(entries.values())
                else:
                    del s.last_override[subject]

    def get_key(self, key: str) -> KeyAlignment:
        return self._s.keys.get(key) or KeyAlignment(key=key)

    def put_key(self, state: KeyAlignment) -> None:
        self._remember(self._s.keys, state.key)
        self._s.keys[state.key] = state

    def get_bandit(self) -> ThresholdBandit:
        return self._s.bandit or ThresholdBandit(self._config.bandit)

    def put_bandit(self, bandit: ThresholdBandit) -> None:
        old = self._s.bandit

        def undo() -> None:
            self._s.bandit = old

        self._undo.append(undo)
        self._s.bandit = bandit

    def get_trust(self, operator: str) -> OperatorTrust | None:
        return self._s.trust.get(operator)

    def put_trust(self, trust: OperatorTrust) -> None:
        self._remember(self._s.trust, trust.operator)
        self._s.trust[trust.operator] = trust

    def has_request(self, event: FeedbackEvent) -> bool:
        return (event.prediction_id, event.operator, event.request_id) in self._s.requests

    def prefetch_feedback(self, prediction_id: str, operator: str, request_id: str) -> None:
        """Nothing to load: every read is a dictionary lookup."""

    def effective_feedback(self, prediction_id: str, operator: str) -> AppliedFeedback | None:
        answers = self._s.effective.get(prediction_id)
        return None if answers is None else answers.get(operator)

    def add_feedback(self, applied: AppliedFeedback, audit: Mapping[str, object] | None = None) -> None:
        ev = applied.event
        s = self._s
        s.requests.add((ev.prediction_id, ev.operator, ev.request_id))
        s.feedback_log.append(applied)

        def undo_append() -> None:
            s.requests.discard((ev.prediction_id, ev.operator, ev.request_id))
            s.feedback_log.pop()

        self._undo.append(undo_append)
        answers = s.effective.get(ev.prediction_id)
        if answers is None:
            answers = s.effective[ev.prediction_id] = {}

            def undo_answers() -> None:
                s.effective.pop(ev.prediction_id, None)

            self._undo.append(undo_answers)
        else:
            # Undone as a whole, so a rolled-back replacement leaves the answers in their order of recording (the
            # order of feedback_for, which SQLite gives by row id): an entry deleted and put back would move last.
            kept = dict(answers)

            def undo_order() -> None:
                answers.clear()
                answers.update(kept)

            self._undo.append(undo_order)
        if applied.replaces is not None:
            # The replaced answer is this person's own, or the system's skip (see record_feedback).
            for operator in (ev.operator, SYSTEM_OPERATOR):
                old = answers.get(operator)
                if old is not None and old.event.request_id == applied.replaces:
                    del answers[operator]
                    self._drop_sample(old.event.request_id)
                    self._drop_override(old)
        earlier = answers.get(ev.operator)
        if earlier is not None:  # a later answer of the same person ends the earlier one's effect (SQLite's rule)
            self._drop_override(earlier)
        answers[ev.operator] = applied
        given = audit.get("weight") if audit is not None else None  # the person's weight when they gave it
        self._add_override(applied, given if type(given) is float else None)
        self._remember(s.samples, ev.request_id)
        s.samples[ev.request_id] = AlignmentSample(
            applied.key, applied.y, ev.at, applied.weight, s.channels.get(ev.prediction_id, "")
        )
        if audit is not None:
            self.audit("feedback", ev.prediction_id, audit, ev.at)

    def _drop_sample(self, request_id: str) -> None:
        """A replaced answer's sample leaves ``samples``; undone in its place (the order recorded, as SQLite keeps
        it by row id): a sample put back at the end would move the meta-monitor's window."""
        s = self._s
        sample = s.samples.pop(request_id, None)
        if sample is None:
            return

        def undo() -> None:
            s.samples[request_id] = sample
            rank = {a.event.request_id: i for i, a in enumerate(s.feedback_log)}
            ordered = sorted(s.samples.items(), key=lambda item: rank.get(item[0], -1))
            s.samples.clear()
            s.samples.update(ordered)

        self._undo.append(undo)

    def feedback_for(self, prediction_id: str) -> Sequence[AppliedFeedback]:
        return list(self._s.effective.get(prediction_id, {}).values())

    def add_outcome(self, outcome: Outcome) -> bool:
        if outcome.prediction_id in self._s.outcomes:
            return False
        self._remember(self._s.outcomes, outcome.prediction_id)
        self._s.outcomes[outcome.prediction_id] = outcome
        self._resolve(outcome.prediction_id)
        return True

    def has_outcome(self, prediction_id: str) -> bool:
        return prediction_id in self._s.outcomes

    def get_model(self) -> LogisticModel | None:
        return self._s.model

    def alias_of(self, prediction_id: str) -> str | None:
        return self._s.aliases.get(prediction_id)

    def audit(self, kind: str, subject: str, detail: Mapping[str, object], at: float) -> None:
        log = self._s.audit_log
        log.append((kind, subject, dict(detail), at))
        first = detail.get("first")
        if kind == "duplicate_prediction" and isinstance(first, str) and first != subject:
            # as SQLite's prediction_aliases: the id of a prediction found a duplicate by fingerprint stays that one
            aliases = self._s.aliases
            if subject not in aliases and subject not in self._s.decisions:
                aliases[subject] = first

                def undo_alias() -> None:
                    aliases.pop(subject, None)

                self._undo.append(undo_alias)

        def undo() -> None:
            log.pop()

        self._undo.append(undo)


class InMemoryStore:
    """Thread-safe in-memory implementation of :class:`~npo.store_protocol.LoopStore` (tests, simulation, benchmarks).

    A transaction holds a lock (one writer at a time, like ``BEGIN IMMEDIATE``) and rolls back through its undo
    log when the block raises. The Safety Policy sees the same world as with the SQLite store
    (:meth:`InMemoryTransaction.policy_context`); ``disruptive_actions`` are the actions whose open
    recommendations count against a cluster's blast radius, as ``SQLiteStore``'s argument of that name (pass the
    policy's ``blast_radius.disruptive_actions``), and one stops counting ``stale_after_s`` after its predicted
    fault time, as ``SQLiteStore``'s (pass the policy's ``blast_radius.stale_after_seconds``).
    """

    def __init__(
        self,
        config: LoopConfig | None = None,
        *,
        disruptive_actions: Iterable[str] = DEFAULT_DISRUPTIVE_ACTIONS,
        stale_after_s: float = DEFAULT_STALE_AFTER_SECONDS,
    ) -> None:
        self.config = config or LoopConfig()
        self.disruptive_actions = tuple(dict.fromkeys(name_key(a) for a in disruptive_actions))
        self._disruptive = frozenset(self.disruptive_actions)
        self.stale_after_s = float(stale_after_s)
        self._state = _State(bandit=ThresholdBandit(self.config.bandit))
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[InMemoryTransaction]:
        with self._lock:
            tx = InMemoryTransaction(self._state, self.config, self._disruptive, self.stale_after_s)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise

    # Read-only views for tests, reports and the CLI.
    @property
    def keys(self) -> Mapping[str, KeyAlignment]:
        return dict(self._state.keys)

    @property
    def bandit(self) -> ThresholdBandit:
        return self._state.bandit or ThresholdBandit(self.config.bandit)

    @property
    def samples(self) -> Sequence[AlignmentSample]:
        """Alignment samples of the effective answers (a replaced answer no longer counts), in order recorded."""
        return list(self._state.samples.values())

    @property
    def feedback_log(self) -> Sequence[AppliedFeedback]:
        return list(self._state.feedback_log)

    @property
    def audit_log(self) -> Sequence[tuple[str, str, dict[str, object], float]]:
        return list(self._state.audit_log)

    @property
    def trust(self) -> Mapping[str, OperatorTrust]:
        return dict(self._state.trust)

    def set_model(self, model: LogisticModel | None) -> None:
        with self._lock:
            self._state.model = model
