"""The store protocol the loop is written against: :class:`LoopStore` and its :class:`LoopTransaction`, the
optional bulk :class:`BatchLoopTransaction` (with its :class:`BatchContexts`) that ``decide_batch`` uses when a
store offers it, and :func:`decision_audit_detail`, the audit line every store writes with a decision.
Implemented by :class:`npo.memory_store.InMemoryStore` and ``storage.store.SQLiteStore``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from npo.bandit import ThresholdBandit
from npo.loop_types import AppliedFeedback
from npo.misalignment import KeyAlignment
from npo.policy_types import PolicyContext
from npo.retrain import LogisticModel
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, Outcome, Prediction


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
        """A hint that :func:`~npo.learning.record_feedback` is about to read the request id, the decision, its key, the
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
    def has_outcome(self, prediction_id: str) -> bool:
        """Whether the prediction's outcome is recorded (:meth:`prefetch_feedback` may have read it)."""
        ...

    def get_model(self) -> LogisticModel | None: ...
    def audit(self, kind: str, subject: str, detail: Mapping[str, object], at: float) -> None: ...


class LoopStore(Protocol):
    """Where the loop's state lives. ``transaction()`` commits on normal exit and rolls back on an exception."""

    def transaction(self) -> AbstractContextManager[LoopTransaction]: ...


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

    :func:`~npo.deciding.decide_batch` passes each context straight to :func:`npo.policy.evaluate` before the
    prediction's own :meth:`decided`; a context need only be right for that call (a store may return one shared
    context whose maps are live views of its counts)."""

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext: ...
    def decided(self, prediction: Prediction, decision: Decision, channel: str) -> None: ...


@runtime_checkable
class BatchLoopTransaction(LoopTransaction, Protocol):
    """Optional bulk reads and writes a store can offer so that :func:`~npo.deciding.decide_batch` reads its state
    once per batch and writes each table once. A transaction without them is driven one prediction at a time."""

    def lookup_predictions(
        self, predictions: Sequence[Prediction]
    ) -> tuple[Mapping[str, Decision], Mapping[str, tuple[str, float]]]:
        """Stored decisions by prediction id, and the latest stored prediction (id, received_at) per fingerprint,
        for the ids and fingerprints of ``predictions`` (missing ones are absent)."""
        ...

    def get_predictions(self, prediction_ids: Sequence[str]) -> Mapping[str, Prediction]:
        """The stored predictions of ``prediction_ids`` by id (missing ones are absent)."""
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
