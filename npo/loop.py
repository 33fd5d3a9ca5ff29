"""The NPO loop: ``ingest → score → guard → decide`` and ``feedback → update``, written against a store protocol.

Every function here runs inside one store transaction (:meth:`LoopStore.transaction`), so a storage backend that
implements the transaction as ``BEGIN IMMEDIATE … COMMIT`` makes each step an atomic read-modify-write.
:class:`InMemoryStore` is the reference implementation used by tests and the simulation.

The rules the loop applies, in one place:

* a prediction whose id, or whose fingerprint (fault type, target, action) within ``dedupe_window_s``, was seen
  before is a duplicate: the first decision is returned and nothing changes;
* the Safety Policy Engine runs first; a blocked prediction does not consult the bandit;
* the bandit draws τ; R(s) < τ is suppressed (rule ``threshold``); otherwise it is surfaced, or put into a digest
  when the channel cap says so;
* a feedback request id is recorded once (replays and retries are no-ops);
* a second answer by the same person on the same recommendation *replaces* their first in the learning state
  (m(k), bandit arm) while both stay in the feedback log; a person's click after a recorded skip replaces the skip;
* an outcome for a suppressed prediction feeds the bandit's miss term and (weighted) m(k), so a key that was
  wrongly silenced can come back; outcomes also calibrate the trust of the people who answered;
* with ``BanditConfig.full_information`` an answer or a suppressed prediction's outcome updates every arm of the
  bandit through the decision's score R(s) (what each τ would have done with it), and a replaced answer is
  replaced on every arm.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from npo.alignment import AlignmentSample
from npo.bandit import BanditConfig, ThresholdBandit, choose_batch
from npo.feedback import FeedbackCodes
from npo.misalignment import EtaSchedule, KeyAlignment, pooled, replace_feedback, update_key
from npo.policy import DEFAULT_DISRUPTIVE_ACTIONS, Policy, PolicyContext, evaluate, name_key
from npo.retrain import LogisticModel
from npo.scoring import KeySpec, features, scenario_key, score
from npo.trust import (
    OperatorTrust,
    TrustConfig,
    new_trust,
    trust_weight,
    update_with_outcome,
    update_with_peers,
)
from npo.types import (
    Decision,
    FeedbackEvent,
    FeedbackKind,
    InvalidRecord,
    Outcome,
    Prediction,
    Verdict,
    _require_text,
    _require_time,
    trusted_decision,
)

SYSTEM_OPERATOR = "system"


class LoopError(InvalidRecord):
    """A loop operation that cannot apply to the current state (the state is left unchanged)."""


class UnknownPrediction(LoopError):
    def __init__(self, prediction_id: str) -> None:
        super().__init__("prediction_id", f"no prediction with id {prediction_id!r}")


class NotSurfaced(LoopError):
    def __init__(self, prediction_id: str, verdict: Verdict) -> None:
        super().__init__("prediction_id", f"prediction {prediction_id!r} was not surfaced (verdict {verdict.value})")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Everything the loop needs to know besides the state. All defaults are documented in the README."""

    key_spec: KeySpec = field(default_factory=KeySpec)
    codes: FeedbackCodes = field(default_factory=FeedbackCodes)
    eta: EtaSchedule = field(default_factory=EtaSchedule)
    bandit: BanditConfig = field(default_factory=BanditConfig)
    trust: TrustConfig | None = field(default_factory=TrustConfig)
    default_channel: str = "incident"
    dedupe_window_s: float = 3600.0
    suppressed_outcome_weight: float = 0.5  # how much a suppressed prediction's outcome moves m(k)
    peer_min_updates: int = 5  # a key needs this many updates before its consensus calibrates trust
    model_prior_strength: float = 5.0  # pseudo-count of the promoted feature model in m(k) for young keys
    # Partial pooling: every update of m(k) also updates m(parent) (KeySpec.parent), and the score uses
    # (w·m(k) + c·m(parent)) / (w + c) with c = min(pool_strength, w_parent) (npo.misalignment.pooled).
    pool_keys: bool = False
    pool_strength: float = 2.0  # n₀: the parent counts as at most this many answers

    def __post_init__(self) -> None:
        if not self.pool_strength > 0:
            raise InvalidRecord("pool_strength", f"must be a positive number of answers, got {self.pool_strength}")


@dataclass(frozen=True, slots=True)
class AppliedFeedback:
    """A feedback event as the learning state saw it (what a later replacement must undo)."""

    event: FeedbackEvent
    key: str
    y: float
    weight: float
    key_n_before: float  # effective sample size of the key when this answer was applied
    arm: int | None
    reward: float
    replaces: str | None = None  # request id of the answer this one replaced


@dataclass(frozen=True, slots=True)
class DecideResult:
    decision: Decision
    duplicate: bool


FeedbackStatus = Literal["recorded", "replaced", "duplicate"]


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    status: FeedbackStatus
    applied: AppliedFeedback | None
    key_state: KeyAlignment | None


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    recorded: bool
    missed_fault: bool  # suppressed, then it turned out real


class LoopTransaction(Protocol):
    """One atomic unit of work over the loop's state. Reads see this transaction's own writes."""

    def find_duplicate(self, prediction: Prediction, window_s: float) -> Decision | None: ...
    def add_decision(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        """Record the prediction and its decision, and the decision's audit line (kind ``decision``, subject the
        prediction id, detail :func:`decision_audit_detail`, at ``decided_at``): a decision is always audited."""
        ...

    def get_prediction(self, prediction_id: str) -> Prediction | None: ...
    def get_decision(self, prediction_id: str) -> Decision | None: ...
    def policy_context(self, prediction: Prediction, key: str, channel: str, now: float) -> PolicyContext: ...
    def get_key(self, key: str) -> KeyAlignment: ...
    def put_key(self, state: KeyAlignment) -> None: ...
    def get_bandit(self) -> ThresholdBandit: ...
    def put_bandit(self, bandit: ThresholdBandit) -> None: ...
    def get_trust(self, operator: str) -> OperatorTrust | None: ...
    def put_trust(self, trust: OperatorTrust) -> None: ...
    def has_request(self, event: FeedbackEvent) -> bool:
        """Whether ``event``'s interaction is recorded already: its request id, for its person and
        recommendation (a Slack interaction belongs to one of each)."""
        ...

    def prefetch_feedback(self, prediction_id: str, operator: str, request_id: str) -> None:
        """A hint that :func:`record_feedback` is about to read the request id, the decision, its key, the
        operator's trust, the operator's and the system's effective answers and the bandit: a store may load
        them together (one query) instead of one read each. Must not change any state; may do nothing."""
        ...

    def effective_feedback(self, prediction_id: str, operator: str) -> AppliedFeedback | None: ...
    def add_feedback(self, applied: AppliedFeedback, audit: Mapping[str, object] | None = None) -> None:
        """Append ``applied`` to the feedback log as the person's effective answer (replacing ``applied.replaces``)
        and, when ``audit`` is given, its audit line (kind ``feedback``, subject the prediction id, at the event's
        time) in the same step."""
        ...

    def feedback_for(self, prediction_id: str) -> Sequence[AppliedFeedback]: ...
    def add_outcome(self, outcome: Outcome) -> bool: ...
    def get_model(self) -> LogisticModel | None: ...
    def audit(self, kind: str, subject: str, detail: Mapping[str, object], at: float) -> None: ...


class LoopStore(Protocol):
    """Where the loop's state lives. ``transaction()`` commits on normal exit and rolls back on an exception."""

    def transaction(self) -> AbstractContextManager[LoopTransaction]: ...


# -- the loop ------------------------------------------------------------------------------------------------
def effective_misalignment(
    key_state: KeyAlignment,
    prediction: Prediction,
    model: LogisticModel | None,
    config: LoopConfig,
    parent: KeyAlignment | None = None,
) -> float:
    """m used for scoring: m(k) — pooled with its ``parent``'s when ``config.pool_keys`` (and the parent's state is
    given) — shrunk toward the promoted feature model's P(override | φ(s)) for young keys."""
    m = key_state.m
    if parent is not None and config.pool_keys:
        m = pooled(m, key_state.weight_sum, parent.m, parent.weight_sum, config.pool_strength)
    if model is None or config.model_prior_strength <= 0:
        return m
    q = float(model.predict(features(prediction)[None, :])[0])
    c = config.model_prior_strength
    return (key_state.n * m + c * q) / (key_state.n + c)


def decide(
    tx: LoopTransaction,
    prediction: Prediction,
    *,
    config: LoopConfig,
    policy: Policy,
    rng: np.random.Generator,
    now: float,
) -> DecideResult:
    """Score, guard and decide one prediction; record the decision (and the audit line) in ``tx``."""
    earlier = tx.find_duplicate(prediction, config.dedupe_window_s)
    if earlier is not None:
        tx.audit("duplicate_prediction", prediction.id, {"first": earlier.prediction_id}, now)
        return DecideResult(earlier, duplicate=True)
    channel = prediction.channel or config.default_channel
    key = scenario_key(prediction, config.key_spec)
    key_state = tx.get_key(key)
    parent = tx.get_key(config.key_spec.parent(key)) if config.pool_keys else None
    m = min(1.0, max(0.0, effective_misalignment(key_state, prediction, tx.get_model(), config, parent)))
    r = score(prediction.confidence, m)
    verdict = evaluate(policy, prediction, key, channel, tx.policy_context(prediction, key, channel, now))
    arm: int | None = None
    tau: float | None = None
    if verdict.outcome == "block":
        outcome, rule, reason = Verdict.BLOCK, verdict.rule, verdict.reason
    else:
        bandit = tx.get_bandit()
        arm = bandit.choose(rng)
        tau = bandit.threshold(arm)
        if r < tau:
            outcome, rule, reason = Verdict.SUPPRESS, "threshold", f"R(s)={r:.3f} < τ={tau:.2f}"
        elif verdict.outcome == "digest":
            outcome, rule, reason = Verdict.DIGEST, verdict.rule, verdict.reason
        else:
            outcome, rule = Verdict.SURFACE, verdict.rule
            reason = f"R(s)={r:.3f} ≥ τ={tau:.2f}; {verdict.reason}"
    decision = Decision(
        prediction_id=prediction.id,
        key=key,
        verdict=outcome,
        rule=rule,
        reason=reason,
        confidence=prediction.confidence,
        misalignment=m,
        score=r,
        threshold=tau,
        arm=arm,
        decided_at=now,
    )
    tx.add_decision(prediction, decision, channel)  # with its audit line
    return DecideResult(decision, duplicate=False)


def decision_audit_detail(decision: Decision) -> dict[str, object]:
    """The detail of a decision's audit line."""
    return {
        "verdict": decision.verdict.value,
        "rule": decision.rule,
        "reason": decision.reason,
        "score": decision.score,
        "threshold": decision.threshold,
    }


# -- batches of decisions ------------------------------------------------------------------------------------
class BatchContexts(Protocol):
    """The Safety Policy Engine's view of the world for the predictions of one batch, as a store computes it: a
    snapshot taken before the batch plus the effect of the batch's earlier decisions (blast radius, channel cap).

    :func:`decide_batch` passes each context straight to :func:`npo.policy.evaluate` before the prediction's own
    :meth:`decided`; a context need only be right for that call (a store may return one shared context whose
    maps are live views of its counts)."""

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext: ...
    def decided(self, prediction: Prediction, decision: Decision, channel: str) -> None: ...


@runtime_checkable
class BatchLoopTransaction(LoopTransaction, Protocol):
    """Optional bulk reads and writes a store can offer so that :func:`decide_batch` reads its state once per batch
    and writes each table once. A transaction without them is driven one prediction at a time."""

    def lookup_predictions(
        self, predictions: Sequence[Prediction]
    ) -> tuple[Mapping[str, Decision], Mapping[str, tuple[str, float]]]:
        """Stored decisions by prediction id, and the latest stored prediction (id, received_at) per fingerprint,
        for the ids and fingerprints of ``predictions`` (missing ones are absent)."""
        ...

    def get_keys(self, keys: Sequence[str]) -> Mapping[str, KeyAlignment]:
        """The state of each of ``keys`` (a new :class:`KeyAlignment` for an unknown one)."""
        ...

    def policy_contexts(
        self, predictions: Sequence[Prediction], keys: Sequence[str], channels: Sequence[str], now: float
    ) -> BatchContexts: ...
    def add_decisions(self, decided: Sequence[tuple[Prediction, Decision, str]]) -> None:
        """:meth:`LoopTransaction.add_decision` for each (prediction, decision, channel), in order (with their
        audit lines)."""
        ...

    def audit_many(self, entries: Sequence[tuple[str, str, Mapping[str, object], float]]) -> None:
        """:meth:`LoopTransaction.audit` for each (kind, subject, detail, at), in order."""
        ...


class _OneByOne:
    """:func:`decide_batch` over the plain :class:`LoopTransaction`: every read goes to the transaction and every
    write is applied at once, so each prediction sees the earlier ones exactly as with :func:`decide`."""

    def __init__(self, tx: LoopTransaction, window_s: float, now: float) -> None:
        self._tx = tx
        self._window_s = window_s
        self._now = now

    def duplicate(self, prediction: Prediction) -> Decision | None:
        return self._tx.find_duplicate(prediction, self._window_s)

    def key_state(self, key: str) -> KeyAlignment:
        return self._tx.get_key(key)

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext:
        return self._tx.policy_context(prediction, key, channel, self._now)

    def add(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        self._tx.add_decision(prediction, decision, channel)

    def audit(self, kind: str, subject: str, detail: dict[str, object], at: float) -> None:
        self._tx.audit(kind, subject, detail, at)

    def finish(self) -> None:
        pass


class _Bulk:
    """:func:`decide_batch` over a :class:`BatchLoopTransaction`: the store's state is read once before the batch,
    the batch's own decisions are tracked here (duplicates by id and fingerprint) and in the store's
    :class:`BatchContexts` (policy), and the writes go to the store in one call per table at the end."""

    def __init__(
        self,
        tx: BatchLoopTransaction,
        predictions: Sequence[Prediction],
        keys: Sequence[str],
        channels: Sequence[str],
        window_s: float,
        now: float,
        parents: Sequence[str] = (),
    ) -> None:
        self._tx = tx
        self._window_s = window_s
        self._stored, self._stored_fingerprints = tx.lookup_predictions(predictions)
        self._keys = dict(tx.get_keys([*keys, *dict.fromkeys(parents)] if parents else keys))
        self._fingerprint = ""  # of the prediction duplicate() last looked at (add() follows for the same one)
        self._contexts = tx.policy_contexts(predictions, keys, channels, now)
        self._decided = self._contexts.decided
        self._added: dict[str, Decision] = {}
        self._fingerprints: dict[str, tuple[str, float]] = {}
        # The writes in order, as runs of decisions and runs of other audit lines (duplicates), so the store can
        # keep the order of decide() in its log with one bulk call per run (usually one or two runs).
        self._runs: list[
            tuple[list[tuple[Prediction, Decision, str]], list[tuple[str, str, Mapping[str, object], float]]]
        ] = [([], [])]
        # decisions of the current run; None after an audit line (the next decision starts a new run)
        self._run: list[tuple[Prediction, Decision, str]] | None = self._runs[0][0]

    def duplicate(self, prediction: Prediction) -> Decision | None:
        # The rules of find_duplicate over "stored, then this batch's earlier decisions": the id first, then the
        # latest prediction with the same fingerprint (one of this batch, when there is one) within the window.
        pid = prediction.id
        earlier = self._added.get(pid) or self._stored.get(pid)
        if earlier is not None:
            return earlier
        fingerprint = self._fingerprint = prediction.fingerprint()
        seen = self._fingerprints.get(fingerprint) or self._stored_fingerprints.get(fingerprint)
        if seen is None or prediction.received_at - seen[1] >= self._window_s:
            return None
        return self._added.get(seen[0]) or self._stored.get(seen[0]) or self._tx.get_decision(seen[0])

    def key_state(self, key: str) -> KeyAlignment:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyAlignment(key=key)  # frozen: shared by the batch's predictions of key
        return state

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext:
        return self._contexts.context(prediction, key, channel)

    def add(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        pid = prediction.id
        self._added[pid] = decision
        self._fingerprints[self._fingerprint] = (pid, prediction.received_at)
        self._decided(prediction, decision, channel)
        run = self._run
        if run is None:
            run = self._run = []
            self._runs.append((run, []))
        run.append((prediction, decision, channel))

    def audit(self, kind: str, subject: str, detail: dict[str, object], at: float) -> None:
        self._runs[-1][1].append((kind, subject, detail, at))
        self._run = None

    def finish(self) -> None:
        for decided, audit in self._runs:
            self._tx.add_decisions(decided)
            self._tx.audit_many(audit)


_SET_RESULT_DECISION, _SET_RESULT_DUPLICATE = (getattr(DecideResult, f.name).__set__ for f in fields(DecideResult))
_new_result = functools.partial(object.__new__, DecideResult)


def _decision(
    prediction: Prediction,
    key: str,
    verdict: Verdict,
    rule: str,
    reason: str,
    m: float,
    r: float,
    tau: float | None,
    arm: int | None,
    now: float,
) -> Decision:
    """A :class:`Decision` from values valid by construction (a checked prediction, m and R clipped to [0, 1], τ and
    the arm from the bandit's validated grid, ``now`` checked once per batch) without re-running every check. The
    two fields the construction does not guarantee (``key``, ``rule``) must have been checked by the caller as
    :class:`Decision` checks them (:func:`decide_batch` checks each distinct value once per batch)."""
    return trusted_decision(prediction.id, key, verdict, rule, reason, prediction.confidence, m, r, tau, arm, now)


def decide_batch(
    tx: LoopTransaction,
    predictions: Iterable[Prediction],
    *,
    config: LoopConfig,
    policy: Policy,
    rng: np.random.Generator,
    now: float,
) -> list[DecideResult]:
    """:func:`decide` for each prediction, in order, in one transaction: the same duplicates (by id and by
    fingerprint, within the batch and against the store), the same policy verdicts (a prediction sees the blast
    radius and channel cap left by the batch's earlier decisions), the same scores and keys, the same audit lines.

    The bandit's τ draws are made for the whole batch at once with :func:`npo.bandit.choose_batch` (the bandit does
    not change while deciding), so the random stream, and with it which τ a given prediction draws, differs from
    calling :func:`decide` in a loop; the rules applied to the draws are the same.

    A transaction implementing :class:`BatchLoopTransaction` is read once and written once per table; any other
    :class:`LoopTransaction` is driven one prediction at a time. An exception leaves the batch to the
    transaction's rollback (nothing of the batch is kept).
    """
    batch = list(predictions)
    if not batch:
        return []
    now = _checked_now(now)
    spec = config.key_spec
    keys = [scenario_key(p, spec) for p in batch]
    channels = [p.channel or config.default_channel for p in batch]
    pool = config.pool_keys
    parents = [spec.parent(k) for k in keys] if pool else []
    world: _OneByOne | _Bulk
    if isinstance(tx, BatchLoopTransaction):
        world = _Bulk(tx, batch, keys, channels, config.dedupe_window_s, now, parents)
    else:
        world = _OneByOne(tx, config.dedupe_window_s, now)
    model = tx.get_model()
    arms: list[int] | None = None
    tau_text: list[str] = []
    thresholds = config.bandit.thresholds
    results: list[DecideResult] = []
    checked: set[str] = set()  # keys and rules that passed Decision's text check in this batch
    checked_rules: set[str] = set()
    duplicate, key_state_of, context_of, add = world.duplicate, world.key_state, world.context, world.add
    append = results.append
    for i, prediction in enumerate(batch):
        earlier = duplicate(prediction)
        if earlier is not None:
            world.audit("duplicate_prediction", prediction.id, {"first": earlier.prediction_id}, now)
            append(DecideResult(earlier, duplicate=True))
            continue
        key, channel = keys[i], channels[i]
        key_state = key_state_of(key)
        if pool:
            parent = key_state_of(parents[i])
            m = float(min(1.0, max(0.0, effective_misalignment(key_state, prediction, model, config, parent))))
        elif model is None:
            m = key_state.m  # usually a float in (0, 1] already: then the clip below would return it unchanged
            if type(m) is not float or not 0.0 < m <= 1.0:
                m = float(min(1.0, max(0.0, m)))
        else:
            m = float(min(1.0, max(0.0, effective_misalignment(key_state, prediction, model, config))))
        r = score(prediction.confidence, m)
        verdict = evaluate(policy, prediction, key, channel, context_of(prediction, key, channel))
        arm: int | None = None
        tau: float | None = None
        if verdict.outcome == "block":
            outcome, rule, reason = Verdict.BLOCK, verdict.rule, verdict.reason
        else:
            if arms is None:
                bandit = tx.get_bandit()
                thresholds = bandit.config.thresholds
                shape = (len(batch), bandit.config.n_arms)
                alpha = np.broadcast_to(np.asarray(bandit.alpha, dtype=np.float64), shape)
                beta = np.broadcast_to(np.asarray(bandit.beta, dtype=np.float64), shape)
                arms = choose_batch(alpha, beta, rng).tolist()
                tau_text = [f"{t:.2f}" for t in thresholds]  # τ as the reason prints it, formatted once per arm
            arm = arms[i]
            tau = thresholds[arm]
            if r < tau:
                outcome, rule, reason = Verdict.SUPPRESS, "threshold", f"R(s)={r:.3f} < τ={tau_text[arm]}"
            elif verdict.outcome == "digest":
                outcome, rule, reason = Verdict.DIGEST, verdict.rule, verdict.reason
            else:
                outcome, rule = Verdict.SURFACE, verdict.rule
                reason = f"R(s)={r:.3f} ≥ τ={tau_text[arm]}; {verdict.reason}"
        if key not in checked:
            _require_text("key", key)
            checked.add(key)
        if rule not in checked_rules:
            _require_text("rule", rule)
            checked_rules.add(rule)
        decision = _decision(prediction, key, outcome, rule, reason, m, r, tau, arm, now)
        add(prediction, decision, channel)  # with its audit line
        result: DecideResult = _new_result()
        _SET_RESULT_DECISION(result, decision)
        _SET_RESULT_DUPLICATE(result, False)
        append(result)
    world.finish()
    return results


def _checked_now(now: float) -> float:
    """``now`` as :class:`Decision` stores ``decided_at`` (a finite float), checked once for a whole batch."""
    return _require_time("decided_at", now)


(
    _SET_APPLIED_EVENT,
    _SET_APPLIED_KEY,
    _SET_APPLIED_Y,
    _SET_APPLIED_WEIGHT,
    _SET_APPLIED_KEY_N_BEFORE,
    _SET_APPLIED_ARM,
    _SET_APPLIED_REWARD,
    _SET_APPLIED_REPLACES,
) = tuple(getattr(AppliedFeedback, f.name).__set__ for f in fields(AppliedFeedback))
_new_applied = functools.partial(object.__new__, AppliedFeedback)


def _applied(
    event: FeedbackEvent,
    key: str,
    y: float,
    weight: float,
    key_n_before: float,
    arm: int | None,
    reward: float,
    replaces: str | None,
) -> AppliedFeedback:
    """``AppliedFeedback(...)`` through the slot setters (the record has no checks of its own to skip; this only
    avoids the frozen dataclass's per-field ``object.__setattr__``)."""
    applied: AppliedFeedback = _new_applied()
    _SET_APPLIED_EVENT(applied, event)
    _SET_APPLIED_KEY(applied, key)
    _SET_APPLIED_Y(applied, y)
    _SET_APPLIED_WEIGHT(applied, weight)
    _SET_APPLIED_KEY_N_BEFORE(applied, key_n_before)
    _SET_APPLIED_ARM(applied, arm)
    _SET_APPLIED_REWARD(applied, reward)
    _SET_APPLIED_REPLACES(applied, replaces)
    return applied


def _weight_for(tx: LoopTransaction, operator: str, config: LoopConfig) -> tuple[float, OperatorTrust | None]:
    if config.trust is None or operator == SYSTEM_OPERATOR:
        return 1.0, None
    trust = tx.get_trust(operator) or new_trust(operator, config.trust)
    return trust_weight(trust, config.trust), trust


def record_feedback(tx: LoopTransaction, event: FeedbackEvent, *, config: LoopConfig) -> FeedbackResult:
    """Apply one feedback event: m(k) of its key, the bandit arm that let it through, the operator's trust.

    Raises :class:`UnknownPrediction` / :class:`NotSurfaced` (nothing changes). A request id seen before returns
    status ``duplicate`` and changes nothing.
    """
    tx.prefetch_feedback(event.prediction_id, event.operator, event.request_id)
    if tx.has_request(event):
        return FeedbackResult("duplicate", None, None)
    decision = tx.get_decision(event.prediction_id)
    if decision is None:
        raise UnknownPrediction(event.prediction_id)
    if not decision.surfaced:
        raise NotSurfaced(event.prediction_id, decision.verdict)
    y = config.codes.code(event.kind)
    reward = 1.0 - y
    weight, trust = _weight_for(tx, event.operator, config)
    previous = tx.effective_feedback(event.prediction_id, event.operator)
    if previous is None and event.kind is not FeedbackKind.SKIPPED:
        previous = tx.effective_feedback(event.prediction_id, SYSTEM_OPERATOR)
    if previous is None and event.kind is FeedbackKind.SKIPPED:
        previous = next(iter(tx.feedback_for(event.prediction_id)), None)  # anyone's answer makes a skip moot
    if previous is not None and event.kind is FeedbackKind.SKIPPED:
        # A skip after a real answer (or a second skip) carries no information: log it, learn nothing.
        applied = AppliedFeedback(
            event,
            decision.key,
            previous.y,
            previous.weight,
            previous.key_n_before,
            previous.arm,
            previous.reward,
            replaces=None,
        )
        tx.audit(
            "feedback_ignored",
            event.prediction_id,
            {"operator": event.operator, "kind": event.kind.value, "why": "already answered"},
            event.at,
        )
        return FeedbackResult("duplicate", applied, tx.get_key(decision.key))
    key_state = tx.get_key(decision.key)
    consensus_before = key_state.m
    bandit = tx.get_bandit()
    first_answer = previous is None or previous.event.operator == SYSTEM_OPERATOR
    if previous is not None:
        # A person changing their answer keeps the weight it was given; a click replacing a skip counts with the
        # clicker's own trust weight (a distrusted clicker must not move m(k) by answering late).
        new_weight = weight if previous.event.operator == SYSTEM_OPERATOR else previous.weight
        new_state = replace_feedback(
            key_state,
            previous.y,
            y,
            config.eta,
            old_n=previous.key_n_before,
            weight=previous.weight,
            new_weight=new_weight,
            at=event.at,
        )
        if decision.arm is not None:
            bandit = bandit.replace_surfaced(
                decision.arm, decision.score, previous.reward, reward, previous.weight, new_weight
            )
        applied = AppliedFeedback(
            event,
            decision.key,
            y,
            new_weight,
            previous.key_n_before,
            decision.arm,
            reward,
            replaces=previous.event.request_id,
        )
        status: FeedbackStatus = "replaced"
        if config.pool_keys:
            parent = tx.get_key(config.key_spec.parent(decision.key))
            # The parent's effective sample size when the first answer was applied is not recorded: its step is
            # taken at the size before this person's answer, exact when no other answer of the family came since.
            tx.put_key(
                replace_feedback(
                    parent,
                    previous.y,
                    y,
                    config.eta,
                    old_n=max(0.0, parent.weight_sum - previous.weight),
                    weight=previous.weight,
                    new_weight=new_weight,
                    at=event.at,
                )
            )
    else:
        new_state = update_key(key_state, y, config.eta, weight=weight, at=event.at)
        if config.pool_keys:
            parent = tx.get_key(config.key_spec.parent(decision.key))
            tx.put_key(update_key(parent, y, config.eta, weight=weight, at=event.at))
        if decision.arm is not None:
            bandit = bandit.observe_surfaced(decision.arm, decision.score, reward, weight)
        applied = _applied(event, decision.key, y, weight, key_state.weight_sum, decision.arm, reward, None)
        status = "recorded"
    if trust is not None and config.trust is not None and first_answer and key_state.n >= config.peer_min_updates:
        # Peer credit once per person and recommendation: re-clicking must not earn trust.
        tx.put_trust(update_with_peers(trust, y, consensus_before, config.trust))
    elif trust is not None and tx.get_trust(event.operator) is None:
        tx.put_trust(trust)
    tx.put_key(new_state)
    tx.put_bandit(bandit)
    tx.add_feedback(
        applied,
        {
            "operator": event.operator,
            "kind": event.kind.value,
            "y": y,
            "weight": weight,
            "status": status,
            "m": new_state.m,
        },
    )
    return FeedbackResult(status, applied, new_state)


def record_outcome(tx: LoopTransaction, outcome: Outcome, *, config: LoopConfig) -> OutcomeResult:
    """Record whether a prediction's fault was real; feed the miss term, m(k) for suppressed ones, and trust.

    Raises :class:`UnknownPrediction`. A second outcome for the same prediction is ignored (first one wins).
    """
    decision = tx.get_decision(outcome.prediction_id)
    if decision is None:
        raise UnknownPrediction(outcome.prediction_id)
    if not tx.add_outcome(outcome):
        return OutcomeResult(recorded=False, missed_fault=False)
    missed = decision.verdict is Verdict.SUPPRESS and outcome.real_fault
    if decision.verdict is Verdict.SUPPRESS and decision.arm is not None:
        tx.put_bandit(tx.get_bandit().observe_suppressed(decision.arm, decision.score, outcome.real_fault))
        if config.suppressed_outcome_weight > 0:
            truth = 0.0 if outcome.real_fault else 1.0
            learn = (decision.key, config.key_spec.parent(decision.key)) if config.pool_keys else (decision.key,)
            for key in learn:
                tx.put_key(
                    update_key(
                        tx.get_key(key), truth, config.eta, weight=config.suppressed_outcome_weight, at=outcome.at
                    )
                )
    if config.trust is not None:
        for applied in tx.feedback_for(outcome.prediction_id):
            operator = applied.event.operator
            if operator == SYSTEM_OPERATOR or applied.event.kind is FeedbackKind.SKIPPED:
                continue
            trust = tx.get_trust(operator) or new_trust(operator, config.trust)
            tx.put_trust(update_with_outcome(trust, applied.y, outcome.real_fault, config.trust))
    tx.audit(
        "outcome",
        outcome.prediction_id,
        {"real_fault": outcome.real_fault, "source": outcome.source, "missed_fault": missed},
        outcome.at,
    )
    return OutcomeResult(recorded=True, missed_fault=missed)


# -- reference store -----------------------------------------------------------------------------------------
@dataclass
class _State:
    predictions: dict[str, Prediction] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    fingerprints: dict[str, tuple[str, float]] = field(default_factory=dict)
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
    # and their number per cluster
    open_disruptive: dict[str, str] = field(default_factory=dict)
    active_disruptive: dict[str, int] = field(default_factory=dict)
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

    def __init__(self, state: _State, config: LoopConfig, disruptive_actions: frozenset[str] = frozenset()) -> None:
        self._s = state
        self._config = config
        self._disruptive = disruptive_actions  # name_key'd, as InMemoryStore keeps them
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
            self._open_disruptive(pid, prediction.cluster)
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

    def _open_disruptive(self, prediction_id: str, cluster: str) -> None:
        s = self._s
        self._remember(s.open_disruptive, prediction_id)
        s.open_disruptive[prediction_id] = cluster
        self._remember(s.active_disruptive, cluster)
        s.active_disruptive[cluster] = s.active_disruptive.get(cluster, 0) + 1

    def _resolve(self, prediction_id: str) -> None:
        """An outcome resolves the prediction's recommendation: it no longer counts against its cluster."""
        s = self._s
        cluster = s.open_disruptive.get(prediction_id)
        if cluster is None:
            return
        self._remember(s.open_disruptive, prediction_id)
        del s.open_disruptive[prediction_id]
        self._remember(s.active_disruptive, cluster)
        s.active_disruptive[cluster] -= 1

    def get_prediction(self, prediction_id: str) -> Prediction | None:
        return self._s.predictions.get(prediction_id)

    def get_decision(self, prediction_id: str) -> Decision | None:
        return self._s.decisions.get(prediction_id)

    def policy_context(self, prediction: Prediction, key: str, channel: str, now: float) -> PolicyContext:
        """The guardrails' view of the world for this prediction, with the same maps and counts as
        :meth:`storage.store.SQLiteTransaction.policy_context`: open disruptive recommendations (surfaced or digest,
        action in the store's ``disruptive_actions`` compared by :func:`npo.policy.name_key`, no outcome yet) in the
        prediction's cluster; the last override of its key and of its target that is still someone's effective
        answer and was counted with a trust weight above zero; recommendations surfaced (not digested) in
        ``channel`` after now − 1 h, those stamped later than ``now`` included."""
        s = self._s
        cluster = prediction.cluster
        active = {cluster: s.active_disruptive.get(cluster, 0)} if self._disruptive else {}
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

    def _override_subjects(self, applied: AppliedFeedback) -> tuple[str, ...]:
        """The cooldown entries an answer counts in: its key and its prediction's target, when it is an override
        with a trust weight above zero (the condition of the SQLite store's query)."""
        if applied.event.kind is not FeedbackKind.OVERRIDE or not applied.weight > 0:
            return ()
        prediction = self._s.predictions.get(applied.event.prediction_id)
        key = f"key:{applied.key}"
        return (key,) if prediction is None else (key, f"target:{prediction.target}")

    def _add_override(self, applied: AppliedFeedback) -> None:
        s = self._s
        answer, at = (applied.event.prediction_id, applied.event.operator), applied.event.at
        for subject in self._override_subjects(applied):
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
        if applied.replaces is not None:
            # The replaced answer is this person's own, or the system's skip (see record_feedback).
            for operator in (ev.operator, SYSTEM_OPERATOR):
                old = answers.get(operator)
                if old is not None and old.event.request_id == applied.replaces:
                    self._remember(answers, operator)
                    del answers[operator]
                    self._remember(s.samples, old.event.request_id)
                    s.samples.pop(old.event.request_id, None)
                    self._drop_override(old)
        earlier = answers.get(ev.operator)
        if earlier is not None:  # a later answer of the same person ends the earlier one's effect (SQLite's rule)
            self._drop_override(earlier)
        self._remember(answers, ev.operator)
        answers[ev.operator] = applied
        self._add_override(applied)
        self._remember(s.samples, ev.request_id)
        s.samples[ev.request_id] = AlignmentSample(
            applied.key, applied.y, ev.at, applied.weight, s.channels.get(ev.prediction_id, "")
        )
        if audit is not None:
            self.audit("feedback", ev.prediction_id, audit, ev.at)

    def feedback_for(self, prediction_id: str) -> Sequence[AppliedFeedback]:
        return list(self._s.effective.get(prediction_id, {}).values())

    def add_outcome(self, outcome: Outcome) -> bool:
        if outcome.prediction_id in self._s.outcomes:
            return False
        self._remember(self._s.outcomes, outcome.prediction_id)
        self._s.outcomes[outcome.prediction_id] = outcome
        self._resolve(outcome.prediction_id)
        return True

    def get_model(self) -> LogisticModel | None:
        return self._s.model

    def audit(self, kind: str, subject: str, detail: Mapping[str, object], at: float) -> None:
        log = self._s.audit_log
        log.append((kind, subject, dict(detail), at))

        def undo() -> None:
            log.pop()

        self._undo.append(undo)


class InMemoryStore:
    """Thread-safe in-memory implementation of :class:`LoopStore` (tests, simulation, benchmarks).

    A transaction holds a lock (one writer at a time, like ``BEGIN IMMEDIATE``) and rolls back through its undo
    log when the block raises. The Safety Policy sees the same world as with the SQLite store
    (:meth:`InMemoryTransaction.policy_context`); ``disruptive_actions`` are the actions whose open
    recommendations count against a cluster's blast radius, as ``SQLiteStore``'s argument of that name (pass the
    policy's ``blast_radius.disruptive_actions``).
    """

    def __init__(
        self, config: LoopConfig | None = None, *, disruptive_actions: Iterable[str] = DEFAULT_DISRUPTIVE_ACTIONS
    ) -> None:
        self.config = config or LoopConfig()
        self.disruptive_actions = tuple(dict.fromkeys(name_key(a) for a in disruptive_actions))
        self._disruptive = frozenset(self.disruptive_actions)
        self._state = _State(bandit=ThresholdBandit(self.config.bandit))
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[InMemoryTransaction]:
        with self._lock:
            tx = InMemoryTransaction(self._state, self.config, self._disruptive)
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
