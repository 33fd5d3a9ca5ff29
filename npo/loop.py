"""The NPO loop: ``ingest → score → guard → decide`` and ``feedback → update``, written against a store protocol.

Every loop step runs inside one store transaction (:meth:`LoopStore.transaction`), so a storage backend that
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

The modules (this one is the public entry point: every name below is imported from here):
``npo/loop_types.py`` :class:`LoopConfig`, the records and results, the errors; ``npo/store_protocol.py`` the
store protocol (:class:`LoopStore`, :class:`LoopTransaction`, :class:`BatchLoopTransaction`);
``npo/deciding.py`` :func:`decide` and :func:`decide_batch`; ``npo/learning.py`` :func:`record_feedback` and
:func:`record_outcome`; ``npo/memory_store.py`` :class:`InMemoryStore`.
"""

from __future__ import annotations

from npo.deciding import decide, decide_batch, effective_misalignment
from npo.learning import record_feedback, record_outcome
from npo.loop_types import (
    SYSTEM_OPERATOR,
    AppliedFeedback,
    ConflictingPrediction,
    DecideResult,
    FeedbackResult,
    FeedbackStatus,
    LoopConfig,
    LoopError,
    NotSurfaced,
    OutcomeResult,
    UnknownPrediction,
)
from npo.memory_store import InMemoryStore, InMemoryTransaction
from npo.store_protocol import (
    BatchContexts,
    BatchLoopTransaction,
    LoopStore,
    LoopTransaction,
    decision_audit_detail,
)

__all__ = [
    "SYSTEM_OPERATOR",
    "AppliedFeedback",
    "BatchContexts",
    "BatchLoopTransaction",
    "ConflictingPrediction",
    "DecideResult",
    "FeedbackResult",
    "FeedbackStatus",
    "InMemoryStore",
    "InMemoryTransaction",
    "LoopConfig",
    "LoopError",
    "LoopStore",
    "LoopTransaction",
    "NotSurfaced",
    "OutcomeResult",
    "UnknownPrediction",
    "decide",
    "decide_batch",
    "decision_audit_detail",
    "effective_misalignment",
    "record_feedback",
    "record_outcome",
]
