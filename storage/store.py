"""``SQLiteStore``: the loop's state in one SQLite file, implementing :class:`npo.loop.LoopStore`.

Every :meth:`SQLiteStore.transaction` is ``BEGIN IMMEDIATE … COMMIT`` on the calling thread's own connection
(rolled back when the block raises), so each loop step (``decide``, ``record_feedback``, ``record_outcome``)
is one atomic read-modify-write even when several threads and processes share the file. Writers inside one
process are also serialised by a lock, so they queue on the lock rather than on SQLite's busy handler; other
processes are waited for up to the busy timeout, and ``BEGIN IMMEDIATE`` is retried a few times with backoff
before :class:`StorageBusy` is raised.

Writes go straight to the database (prepared statements through the ``sqlite3`` connection; no sqlite-utils
table API on the hot path), so a constraint violation is reported at the write that caused it, as a
:class:`StorageError` naming the table and record; the transaction is then rolled back. Reads of keys, the
bandit, trust and the model are cached for the life of one transaction (this connection is the only writer
while it is open); a feedback transaction's keys, trust, bandit and decisions are also kept for the
connection's next one and reused while ``PRAGMA data_version`` and the connection's ``total_changes`` show that
nothing else has written in between (see :class:`_Snapshot`).

Idempotency rules (see ``storage/README.md``): a prediction id is stored once (and the loop treats a same
fingerprint within the dedupe window as a duplicate); a feedback request id is stored once per person and
recommendation (UNIQUE index ``feedback_answers``); a person has at most one *effective* answer per
recommendation, their newest there (the ``effective_answers`` view) — a second answer must name the first in
``replaces`` (a trigger refuses it otherwise) and replaces it in the learning state, while both rows stay in the
append-only ``feedback`` log and in the ``audit_log`` view; an outcome per prediction is stored once (the first
wins); a job claim per (job, period) once.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol

import numpy as np
from sqlite_utils import Database

from npo.alignment import AlignmentSample
from npo.bandit import ThresholdBandit
from npo.loop import SYSTEM_OPERATOR, AppliedFeedback, DecideResult, LoopConfig, decide_batch
from npo.misalignment import KeyAlignment
from npo.monitor import MonitorState
from npo.policy import DEFAULT_DISRUPTIVE_ACTIONS, Policy, PolicyContext, name_key
from npo.retrain import LogisticModel
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackEvent, FeedbackKind, Outcome, Prediction, Severity, Verdict
from storage import codec
from storage.connection import DEFAULT_BUSY_TIMEOUT_S, Synchronous, connect
from storage.errors import LeaseLost, StorageBusy, StorageError
from storage.migrations import LATEST_SCHEMA_VERSION, NEXT_AUDIT_ID, migrate, newer_schema_message, schema_version

OutboxState = Literal["pending", "sent", "failed"]
HOUR_S = 3600.0


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting to be delivered to Slack. ``payload`` is the decoded JSON object."""

    id: int
    channel: str
    kind: str
    payload: Mapping[str, Any]
    prediction_id: str | None
    attempts: int
    next_attempt_at: float
    created_at: float
    state: OutboxState = "pending"
    last_error: str | None = None


_MISSING: Any = object()
_INSERT_DECISION = (
    "INSERT INTO decisions (seq, prediction_id, fault_type, target, action, confidence, severity, time_to_fault_s, "
    "labels, prediction_channel, received_at, fingerprint, cluster, key, verdict, rule, reason, decision_confidence, "
    "misalignment, score, threshold, arm, decided_at, channel) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_NEXT = f"({NEXT_AUDIT_ID})"
_INSERT_RECOMMENDATION = (
    "INSERT INTO recommendations (prediction_id, verdict, channel, key, target, action, cluster, surfaced_at) "
    "VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (prediction_id, channel, kind, payload, next_attempt_at, created_at) VALUES (?,?,?,?,?,?)"
)
_VERDICT_TEXT: Mapping[Verdict, str] = MappingProxyType({v: v.value for v in Verdict})
_SEVERITY_TEXT: Mapping[Severity, str] = MappingProxyType({v: v.value for v in Severity})
_KIND_TEXT: Mapping[FeedbackKind, str] = MappingProxyType({k: k.value for k in FeedbackKind})
_json_str: Callable[[str], str] = json.encoder.encode_basestring  # a JSON string literal, as codec.dumps writes it
_IN_CHUNK = 500  # values per IN (…) list: well under SQLite's limit on bound parameters
_EMPTY: Mapping[Any, Any] = MappingProxyType({})
_FEEDBACK_INSERT = (
    "INSERT INTO feedback (id, request_id, prediction_id, operator, kind, at, reason, key, y, weight, key_n_before, "
    f"arm, reward, replaces, audit_weight, audit_m, channel, target) VALUES ({_NEXT},?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
)
_INSERT_AUDIT = f"INSERT INTO audit_events (id, at, kind, subject, detail) VALUES ({_NEXT},?,?,?,?)"
# The learning state (m(k), the bandit's arms, trust) is one small table, ``learning_state`` (id, kind, name, …),
# so an event dirties one page of it rather than three (storage/migrations.py m006); ``key_alignment``,
# ``bandit_arms`` and ``operator_trust`` are views of it for readers. An arm's name is its index as text. A row
# known to exist is updated by its row id (the cheapest lookup) and kind: the id read in this transaction, or in a
# snapshot nothing has written since; handing out the raw connection forgets the ids (SQLiteTransaction.connection).
_UPDATE_KEY = "UPDATE learning_state SET m = ?, n = ?, weight_sum = ?, updated_at = ? WHERE id = ? AND kind = 'key'"
_UPSERT_KEY = (
    "INSERT INTO learning_state (kind, name, m, n, weight_sum, updated_at) VALUES ('key',?,?,?,?,?) "
    "ON CONFLICT DO UPDATE SET m = excluded.m, n = excluded.n, weight_sum = excluded.weight_sum, "
    "updated_at = excluded.updated_at RETURNING id"
)
_UPDATE_TRUST = (
    "UPDATE learning_state SET agree = ?, disagree = ?, n_outcome = ?, n_peer = ? WHERE id = ? AND kind = 'operator'"
)
_UPSERT_TRUST = (
    "INSERT INTO learning_state (kind, name, agree, disagree, n_outcome, n_peer) VALUES ('operator',?,?,?,?,?) "
    "ON CONFLICT DO UPDATE SET agree = excluded.agree, disagree = excluded.disagree, n_outcome = excluded.n_outcome, "
    "n_peer = excluded.n_peer RETURNING id"
)
_UPSERT_ARM = (
    "INSERT INTO learning_state (kind, name, threshold, alpha, beta, pulls) VALUES ('arm',CAST(? AS TEXT),?,?,?,?) "
    "ON CONFLICT DO UPDATE SET threshold = excluded.threshold, alpha = excluded.alpha, "
    "beta = excluded.beta, pulls = excluded.pulls"
)
# By row id alone (and kind): the ids are those read in this transaction, or in a snapshot nothing has written
# since, with the thresholds checked against the configuration on that read; handing out the raw connection
# forgets them (SQLiteTransaction.connection), so no write this store did not make can have moved them.
_UPDATE_ARM = "UPDATE learning_state SET alpha = ?, beta = ?, pulls = ? WHERE id = ? AND kind = 'arm'"
_SELECT_ARMS = "SELECT CAST(name AS INTEGER), threshold, alpha, beta, pulls, id FROM learning_state WHERE kind = 'arm'"
# The last override of a key or target that is still someone's effective answer and counted with a trust weight
# above zero — a distrusted person's overrides do not start a cooldown (newest first, by the partial override
# indexes; each candidate checked with the rule of the ``effective_answers`` view, codec.IS_EFFECTIVE, which reads
# only that person's entries of the ``feedback_answers`` index).
_IS_EFFECTIVE = codec.IS_EFFECTIVE
_FEEDBACK_AUDIT_KEYS = frozenset(("operator", "kind", "y", "weight", "status", "m"))
_EFFECTIVE_FEEDBACK = (
    f"SELECT {', '.join('f.' + c.strip() for c in codec.FEEDBACK_COLS.split(','))} FROM effective_answers e "
    "JOIN feedback f ON f.id = e.feedback_id"
)


def _feedback_audit(applied: AppliedFeedback, audit: Mapping[str, object]) -> tuple[float, float] | None:
    """(weight, m) when ``audit`` is exactly the loop's feedback detail for ``applied`` (so the ``audit_log`` view
    can rebuild it from the row), else None."""
    ev = applied.event
    if audit.keys() != _FEEDBACK_AUDIT_KEYS:
        return None
    weight, m, y = audit["weight"], audit["m"], audit["y"]
    if (
        audit["operator"] != ev.operator
        or audit["kind"] != ev.kind.value
        or audit["status"] != ("recorded" if applied.replaces is None else "replaced")
        or type(y) is not float
        or y != applied.y
        or type(weight) is not float
        or type(m) is not float
        or not (weight >= 0 and 0.0 <= m <= 1.0)  # NaN fails these too
        or weight == math.inf
    ):
        return None
    return weight, m


def _prefixed(alias: str, cols: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in cols.split(","))


@dataclass(frozen=True, slots=True)
class _Statements:
    """SQL that depends on the store's configuration (number of arms, disruptive actions), built once."""

    prefetch: str
    open_disruptive: str
    # The warm prefetch (see SQLiteTransaction.prefetch_feedback): request seen, the row ids of the operator's and
    # the system's effective answers; ``warm_decision`` adds the decision's columns.
    warm: str = (
        "SELECT EXISTS(SELECT 1 FROM feedback WHERE prediction_id = ?2 AND operator = ?3 AND request_id = ?1), "
        "(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = ?3), "
        f"(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = '{SYSTEM_OPERATOR}')"
    )
    warm_decision: str = (
        "SELECT EXISTS(SELECT 1 FROM feedback WHERE prediction_id = ?2 AND operator = ?3 AND request_id = ?1), "
        "(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = ?3), "
        f"(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = '{SYSTEM_OPERATOR}'), "
        "d.key, d.verdict, d.rule, d.reason, d.decision_confidence, d.misalignment, d.score, d.threshold, d.arm, "
        "d.decided_at, d.channel, d.target FROM (SELECT 1) AS one LEFT JOIN decisions d ON d.prediction_id = ?2"
    )
    insert_feedback: str = _FEEDBACK_INSERT + (
        "COALESCE((SELECT channel FROM decisions WHERE prediction_id = ?), ''), "
        "COALESCE((SELECT target FROM decisions WHERE prediction_id = ?), ''))"
    )
    insert_feedback_known: str = _FEEDBACK_INSERT + "?,?)"
    insert_feedback_id: str = _FEEDBACK_INSERT.replace(_NEXT, "?", 1) + "?,?)"  # the audit id given


@functools.lru_cache(maxsize=32)
def _statements(n_arms: int, n_disruptive: int) -> _Statements:
    arms_match = " AND ".join(f"b{i}.threshold = ?{4 + i}" for i in range(n_arms))
    arms = ", ".join(f"b{i}.alpha, b{i}.beta, b{i}.pulls" for i in range(n_arms))
    arm_ids = ", ".join(f"b{i}.id" for i in range(n_arms))
    arm_joins = " ".join(
        f"LEFT JOIN learning_state b{i} ON b{i}.kind = 'arm' AND b{i}.name = '{i}'" for i in range(n_arms)
    )
    # Parameters: ?1 request id, ?2 prediction id, ?3 operator, ?4… the configured thresholds. Columns (see
    # SQLiteTransaction.prefetch_feedback): 0 request seen; 1-10 the decision after its prediction id; 11 its
    # channel, 12 its target; 13-16 the key's state after its name; 17-20 the operator's trust after the name;
    # 21, 22 the row ids of the operator's and the system's effective answers; 23 the arms' state (0 none
    # stored, 1 as configured, -1 anything else); 24… α, β, pulls per arm; then the learning_state row ids of
    # the key, the trust and each arm; last, the connection's data_version.
    # Few columns: each costs ~0.15 µs.
    prefetch = (
        "SELECT EXISTS(SELECT 1 FROM feedback WHERE prediction_id = ?2 AND operator = ?3 AND request_id = ?1), "
        "d.key, d.verdict, d.rule, d.reason, d.decision_confidence, d.misalignment, d.score, d.threshold, d.arm, "
        "d.decided_at, d.channel, d.target, k.m, k.n, k.weight_sum, k.updated_at, "
        "t.agree, t.disagree, t.n_outcome, t.n_peer, "
        "(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = ?3), "
        f"(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = '{SYSTEM_OPERATOR}'), "
        "CASE (SELECT COUNT(*) FROM learning_state WHERE kind = 'arm') WHEN 0 THEN 0 "
        f"WHEN {n_arms} THEN CASE WHEN {arms_match} THEN 1 ELSE -1 END ELSE -1 END, {arms}, k.id, t.id, {arm_ids}, "
        "(SELECT data_version FROM pragma_data_version) "
        "FROM (SELECT ?2 AS pid) AS q "
        "LEFT JOIN decisions d ON d.prediction_id = q.pid "
        "LEFT JOIN learning_state k ON k.kind = 'key' AND k.name = d.key "
        "LEFT JOIN learning_state t ON t.kind = 'operator' AND t.name = ?3 "
        f"{arm_joins}"
    )
    marks = ", ".join("?" * n_disruptive)
    open_disruptive = (
        f"SELECT COUNT(*) FROM recommendations WHERE cluster = ? AND resolved_at IS NULL AND lower(action) IN ({marks})"
    )
    return _Statements(prefetch=prefetch, open_disruptive=open_disruptive)


_SET_NOW, _SET_ACTIVE, _SET_OVERRIDES, _SET_SURFACED = (
    getattr(PolicyContext, name).__set__
    for name in ("now", "active_disruptive_by_cluster", "last_override_at", "surfaced_last_hour_by_channel")
)
_new_context = functools.partial(object.__new__, PolicyContext)


class _BatchContexts:
    """:class:`npo.loop.BatchContexts` of :class:`SQLiteTransaction`: the snapshot read before a batch plus the
    batch's own decisions, counted the way :meth:`SQLiteTransaction.policy_context` counts stored ones — a
    surfaced or digest decision with a disruptive action is an open recommendation of its cluster, a surfaced one
    (decided at ``now``) counts for its channel's last hour.

    :meth:`context` returns one shared :class:`PolicyContext` whose maps are read-only views of the batch's
    counts: :func:`npo.policy.evaluate` reads only the prediction's own cluster, key, target and channel from them,
    so it sees exactly the single-entry maps :meth:`SQLiteTransaction.policy_context` would build, as of the
    batch's earlier decisions (the loop evaluates a prediction before :meth:`decided` counts it)."""

    __slots__ = ("_active", "_context", "_disruptive", "_surfaced")

    def __init__(
        self,
        now: float,
        active: dict[str, int] | None,
        overrides: dict[str, float],
        surfaced: dict[str, int],
        disruptive: frozenset[str],
    ) -> None:
        self._active = active  # None: the store counts no action as disruptive
        self._surfaced = surfaced
        self._disruptive = disruptive
        # Counts from COUNT(*), times from validated feedback, ``now`` checked by the loop: no re-validation.
        context: PolicyContext = _new_context()
        _SET_NOW(context, now)
        _SET_ACTIVE(context, _EMPTY if active is None else MappingProxyType(active))
        _SET_OVERRIDES(context, MappingProxyType(overrides) if overrides else _EMPTY)
        _SET_SURFACED(context, MappingProxyType(surfaced))
        self._context = context

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext:
        return self._context

    def decided(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        verdict = decision.verdict
        if verdict is Verdict.SURFACE:
            self._surfaced[channel] = self._surfaced.get(channel, 0) + 1
        elif verdict is not Verdict.DIGEST:
            return
        active = self._active
        if active is not None and name_key(prediction.action) in self._disruptive:
            cluster = prediction.cluster
            active[cluster] = active.get(cluster, 0) + 1


_SNAPSHOT_LIMIT = 4096  # entries per cache a snapshot keeps (a larger one is dropped, not trimmed)


class _Snapshot:
    """What one connection's last committed feedback transaction had read and written (keys, trust, bandit,
    decisions with their channel and target, which key and trust rows exist, the next audit id), for its next
    transaction. Kept only after a clean commit: no raw ``connection`` handed out, no savepoint rolled back;
    each cache holds at most ``_SNAPSHOT_LIMIT`` entries (a larger snapshot starts again empty).

    Valid only while nothing else has changed the database: SQLite's ``data_version`` (it changes when *another*
    connection, in this process or any other, commits) must be the one that transaction saw, and the connection's
    ``total_changes`` the one it left (any other write on this connection, outside such a transaction, moves it).
    :meth:`SQLiteTransaction.prefetch_feedback` checks both inside ``BEGIN IMMEDIATE``, where nobody else can
    commit, before reusing it; otherwise the reads are made again. Every entry, found or not found, is then
    exactly what the database holds."""

    __slots__ = (
        "arm_ids",
        "bandit",
        "bandit_stored",
        "changes",
        "channel_target",
        "data_version",
        "decisions",
        "keys",
        "next_id",
        "stored_keys",
        "stored_trust",
        "trust",
    )

    def __init__(self, tx: SQLiteTransaction, data_version: int, changes: int) -> None:
        self.data_version = data_version
        self.changes = changes
        self.keys = tx._keys
        self.stored_keys = tx._stored_keys
        self.trust = tx._trust
        self.stored_trust = tx._stored_trust
        self.bandit = tx._bandit
        self.bandit_stored = tx._bandit_stored
        self.arm_ids = tx._arm_ids
        self.decisions = tx._decisions
        self.channel_target = tx._channel_target
        self.next_id = tx._next_id
        self._bound()

    def renew(self, tx: SQLiteTransaction, changes: int) -> None:
        """After a clean commit of ``tx``, which continued this snapshot (same dicts, same data_version)."""
        self.changes = changes
        self.bandit = tx._bandit
        self.bandit_stored = tx._bandit_stored
        self.arm_ids = tx._arm_ids
        self.next_id = tx._next_id
        self._bound()

    def _bound(self) -> None:
        if (
            len(self.decisions) > _SNAPSHOT_LIMIT
            or len(self.keys) > _SNAPSHOT_LIMIT
            or len(self.trust) > _SNAPSHOT_LIMIT
        ):
            self.keys, self.stored_keys, self.trust, self.stored_trust = {}, {}, {}, {}
            self.decisions, self.channel_target = {}, {}


class _SnapshotHolder(Protocol):
    snapshot: _Snapshot | None


class SQLiteTransaction:
    """One ``BEGIN IMMEDIATE`` transaction: implements :class:`npo.loop.LoopTransaction` plus the writes the bot
    needs to make atomically with a loop step (outbox, job claims, monitor state, model versions).

    Use only inside ``with store.transaction() as tx:`` on the thread that opened it.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: LoopConfig,
        disruptive_actions: tuple[str, ...],
        holder: _SnapshotHolder | None = None,
        cursor: sqlite3.Cursor | None = None,
    ) -> None:
        self._c = conn
        # One cursor for the statements whose results are read at once (the hot path): ``conn.execute`` makes a
        # new cursor per statement. Never hand a result of it on: the next statement resets it.
        self._cur = conn.cursor() if cursor is None else cursor
        self._holder = holder  # where the connection's snapshot is kept (None: this transaction uses none)
        self._data_version: int | None = None  # as seen by this transaction (prefetch_feedback reads it)
        self._clean = True  # False once the raw connection was handed out or a savepoint rolled back
        self._stored_keys: dict[str, int] = {}  # key → its learning_state row id, for rows known to exist
        self._stored_trust: dict[str, int] = {}  # operator → its learning_state row id, likewise
        self._arm_ids: tuple[int, ...] | None = None  # the arms' learning_state row ids, when read
        self._next_id: int | None = None  # the next id of the audit sequence, when known (see add_feedback)
        self._adopted: _Snapshot | None = None  # the snapshot this transaction continues, if any
        self._config = config
        self._disruptive = disruptive_actions
        self._sql = _statements(config.bandit.n_arms, len(disruptive_actions))
        self._keys: dict[str, KeyAlignment] = {}
        self._trust: dict[str, OperatorTrust | None] = {}
        self._bandit: ThresholdBandit | None = None
        self._bandit_stored: ThresholdBandit | None = None
        self._model: Any = _MISSING
        self._effective: dict[tuple[str, str], AppliedFeedback | None] = {}
        self._decisions: dict[str, Decision | None] = {}
        # (prediction id, operator, request id) of answers known to be stored (True) or not (False)
        self._seen: dict[tuple[str, str, str], bool] = {}
        self._channel_target: dict[str, tuple[str, str]] = {}  # prediction id → (decision channel, target)

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection (for reads the store does not wrap). Writes through it bypass the caches (this
        transaction's cached reads are then not kept for the next one, and the arms' row ids are read again)."""
        self._clean = False
        self._arm_ids = None
        self._stored_keys, self._stored_trust = {}, {}
        return self._c

    def invalidate(self) -> None:
        """Forget the cached reads (after a savepoint was rolled back)."""
        self._clean = False
        self._next_id = None
        self._stored_keys = {}
        self._stored_trust = {}
        self._arm_ids = None
        self._keys.clear()
        self._trust.clear()
        self._bandit = self._bandit_stored = None
        self._model = _MISSING
        self._effective.clear()
        self._decisions.clear()
        self._seen.clear()
        self._channel_target.clear()

    def _after_commit(self) -> None:
        """Keep this transaction's reads for the connection's next one when they are known to be exact: no raw
        connection handed out, no savepoint rolled back, and the ``data_version`` it ran under known."""
        holder = self._holder
        if holder is None:
            return
        if self._clean and self._data_version is not None:
            snap = self._adopted
            if snap is not None:
                snap.renew(self, self._c.total_changes)
                holder.snapshot = snap
            else:
                holder.snapshot = _Snapshot(self, self._data_version, self._c.total_changes)
        elif not self._clean:
            holder.snapshot = None

    def _after_rollback(self) -> None:
        if self._holder is not None:
            self._holder.snapshot = None

    # -- helpers -------------------------------------------------------------------------------------------
    def _write(self, table: str, record: str, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        """Run one write; its cursor (rowcount, lastrowid, RETURNING row) is valid until the next statement."""
        try:
            return self._cur.execute(sql, params)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            raise StorageError(table, record, str(exc)) from exc

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        return self._cur.execute(sql, params).fetchone()

    # -- predictions and decisions ---------------------------------------------------------------------------
    def find_duplicate(self, prediction: Prediction, window_s: float) -> Decision | None:
        earlier = self.get_decision(prediction.id)
        if earlier is not None:
            return earlier
        row = self._one(
            "SELECT prediction_id, received_at FROM decisions WHERE fingerprint = ? ORDER BY seq DESC LIMIT 1",
            (prediction.fingerprint(),),
        )
        if row is not None and prediction.received_at - row[1] < window_s:
            return self.get_decision(row[0])
        return None

    def _next_audit_id(self) -> int:
        """The next id of the shared audit sequence (see storage/migrations.py); the caller is about to use it."""
        self._next_id = None
        return int(self._c.execute(NEXT_AUDIT_ID).fetchone()[0])

    def add_decision(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        """Store the prediction and its decision as one ``decisions`` row (which is also the decision's audit
        line); a surfaced or digest decision also gets its recommendation row and a pending outbox message
        (payload ``{"prediction_id": …}``), in this same transaction."""
        pid = prediction.id
        if decision.prediction_id != pid:
            raise StorageError("decisions", decision.prediction_id, f"decision is for another prediction than {pid!r}")
        row = codec.decision_row(self._next_audit_id(), prediction, decision, channel)
        try:
            self._c.execute(_INSERT_DECISION, row)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            table = "predictions" if "prediction_id" in str(exc) else "decisions"  # the prediction's id
            raise StorageError(table, pid, str(exc)) from exc
        self._decisions[pid] = decision
        self._channel_target[pid] = (channel, prediction.target)
        if decision.surfaced:
            self._write(
                "recommendations",
                pid,
                _INSERT_RECOMMENDATION,
                (
                    pid,
                    decision.verdict.value,
                    channel,
                    decision.key,
                    prediction.target,
                    prediction.action,
                    prediction.cluster,
                    decision.decided_at,
                ),
            )
            kind = "recommendation" if decision.verdict.value == "surface" else "digest_item"
            self.enqueue(channel, kind, {"prediction_id": pid}, decision.decided_at, prediction_id=pid)

    # -- batches (npo.loop.BatchLoopTransaction) --------------------------------------------------------------
    def _in_chunks(self, sql: str, values: Sequence[Any], *before: Any) -> list[Any]:
        """Rows of ``sql`` (containing ``IN ({marks})``) for ``values``, in chunks of at most ``_IN_CHUNK``."""
        rows: list[Any] = []
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows += self._c.execute(sql.format(marks=marks), (*before, *chunk)).fetchall()
        return rows

    def lookup_predictions(
        self, predictions: Sequence[Prediction]
    ) -> tuple[dict[str, Decision], dict[str, tuple[str, float]]]:
        """Stored decisions for the ids of ``predictions``, and the latest stored prediction (id, received_at) per
        fingerprint of theirs (the rules of :meth:`find_duplicate`, for a whole batch in two queries)."""
        decisions = {
            r[0]: codec.decision_from_row(r)
            for r in self._in_chunks(
                f"SELECT {codec.DECISION_COLS} FROM decisions WHERE prediction_id IN ({{marks}})",
                [p.id for p in predictions],
            )
        }
        latest = {
            r[0]: (r[1], r[2])
            for r in self._in_chunks(
                "SELECT fingerprint, prediction_id, received_at, MAX(seq) FROM decisions "
                "WHERE fingerprint IN ({marks}) GROUP BY fingerprint",
                [p.fingerprint() for p in predictions],
            )
        }
        return decisions, latest

    def get_keys(self, keys: Sequence[str]) -> dict[str, KeyAlignment]:
        """The stored state of each of ``keys`` that has one (the loop starts the others from a new state)."""
        return {
            r[0]: codec.key_from_row(r)
            for r in self._in_chunks(f"SELECT {codec.KEY_COLS} FROM key_alignment WHERE key IN ({{marks}})", keys)
        }

    def policy_contexts(
        self, predictions: Sequence[Prediction], keys: Sequence[str], channels: Sequence[str], now: float
    ) -> _BatchContexts:
        """:meth:`policy_context` for a whole batch: the database is read once (open disruptive recommendations
        per cluster, last effective override per key and target, surfaced per channel in the last hour), and
        the batch's own decisions are counted in as they are made (see :class:`_BatchContexts`)."""
        active: dict[str, int] | None = None
        if self._disruptive:
            active = dict(
                self._in_chunks(
                    "SELECT cluster, COUNT(*) FROM recommendations WHERE resolved_at IS NULL AND lower(action) IN "
                    f"({','.join('?' * len(self._disruptive))}) AND cluster IN ({{marks}}) GROUP BY cluster",
                    [p.cluster for p in predictions],
                    *self._disruptive,
                )
            )
        overrides: dict[str, float] = {}
        for column, values in (("key", keys), ("target", [p.target for p in predictions])):
            rows = self._in_chunks(
                f"SELECT f.{column}, MAX(f.at) FROM feedback f WHERE f.kind = 'override' AND f.weight > 0 "
                f"AND f.{column} IN ({{marks}}) AND {_IS_EFFECTIVE} GROUP BY f.{column}",
                values,
            )
            overrides.update((f"{column}:{name}", float(at)) for name, at in rows)
        surfaced = dict(
            self._in_chunks(
                "SELECT channel, COUNT(*) FROM decisions WHERE verdict = 'surface' AND decided_at > ? "
                "AND channel IN ({marks}) GROUP BY channel",
                channels,
                now - HOUR_S,
            )
        )
        return _BatchContexts(float(now), active, overrides, surfaced, frozenset(self._disruptive))

    def add_decisions(self, decided: Sequence[tuple[Prediction, Decision, str]]) -> None:
        """:meth:`add_decision` for each (prediction, decision, channel), one ``executemany`` per table. When a
        row is refused, the batch's rows are undone (savepoint) and written again one by one, so the
        :class:`StorageError` names the table and record that failed."""
        if not decided:
            return
        decisions, recommendations, outbox = [], [], []
        seq = self._next_audit_id()
        verdict_text, severity_text, dumps = _VERDICT_TEXT, _SEVERITY_TEXT, codec.dumps
        surface, digest = Verdict.SURFACE, Verdict.DIGEST
        for prediction, decision, channel in decided:
            pid = prediction.id
            if decision.prediction_id != pid:
                raise StorageError(
                    "decisions", decision.prediction_id, f"decision is for another prediction than {pid!r}"
                )
            # codec.decision_row, inlined (one row per prediction is the batch's hot loop)
            labels = prediction.labels
            cluster = prediction.cluster
            verdict = decision.verdict
            decisions.append(
                (
                    seq,
                    pid,
                    prediction.fault_type,
                    prediction.target,
                    prediction.action,
                    prediction.confidence,
                    severity_text[prediction.severity],
                    prediction.time_to_fault_s,
                    dumps(dict(labels)) if labels else "{}",
                    prediction.channel,
                    prediction.received_at,
                    prediction.fingerprint(),
                    cluster,
                    decision.key,
                    verdict_text[verdict],
                    decision.rule,
                    decision.reason,
                    decision.confidence,
                    decision.misalignment,
                    decision.score,
                    decision.threshold,
                    decision.arm,
                    decision.decided_at,
                    channel,
                )
            )
            seq += 1
            if verdict is surface or verdict is digest:
                at = decision.decided_at
                recommendations.append(
                    (
                        pid,
                        verdict_text[verdict],
                        channel,
                        decision.key,
                        prediction.target,
                        prediction.action,
                        cluster,
                        at,
                    )
                )
                outbox.append(
                    (
                        pid,
                        channel,
                        "recommendation" if verdict is surface else "digest_item",
                        f'{{"prediction_id":{_json_str(pid)}}}',  # = codec.dumps({"prediction_id": pid})
                        at,
                        at,
                    )
                )
        c = self._c
        c.execute("SAVEPOINT npo_bulk")
        try:
            c.executemany(_INSERT_DECISION, decisions)
            if recommendations:
                c.executemany(_INSERT_RECOMMENDATION, recommendations)
                c.executemany(_INSERT_OUTBOX, outbox)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            c.execute("ROLLBACK TO npo_bulk")
            c.execute("RELEASE npo_bulk")
            for prediction, decision, channel in decided:
                self.add_decision(prediction, decision, channel)  # raises the StorageError naming the record
            raise StorageError("decisions", decided[0][0].id, f"a batch of {len(decided)} refused: {exc}") from exc
        c.execute("RELEASE npo_bulk")
        cached, channel_target = self._decisions, self._channel_target
        for prediction, decision, channel in decided:
            pid = prediction.id
            cached[pid] = decision
            channel_target[pid] = (channel, prediction.target)

    def audit_many(self, entries: Sequence[tuple[str, str, Mapping[str, object], float]]) -> None:
        """:meth:`audit` for each (kind, subject, detail, at), in order, in one ``executemany``."""
        if not entries:
            return
        dumps = codec.dumps
        first = self._next_audit_id()
        rows = [
            (first + i, at, kind, subject, dumps(detail if type(detail) is dict else dict(detail)))
            for i, (kind, subject, detail, at) in enumerate(entries)
        ]
        c = self._c
        c.execute("SAVEPOINT npo_bulk")
        try:
            c.executemany("INSERT INTO audit_events (id, at, kind, subject, detail) VALUES (?,?,?,?,?)", rows)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            c.execute("ROLLBACK TO npo_bulk")
            c.execute("RELEASE npo_bulk")
            for kind, subject, detail, at in entries:
                self.audit(kind, subject, detail, at)
            raise StorageError("audit_log", entries[0][1], f"a batch of {len(entries)} refused: {exc}") from exc
        c.execute("RELEASE npo_bulk")

    def get_prediction(self, prediction_id: str) -> Prediction | None:
        row = self._one(f"SELECT {codec.PREDICTION_COLS} FROM decisions WHERE prediction_id = ?", (prediction_id,))
        return None if row is None else codec.prediction_from_row(row)

    def get_decision(self, prediction_id: str) -> Decision | None:
        if prediction_id in self._decisions:
            return self._decisions[prediction_id]
        row = self._one(f"SELECT {codec.DECISION_COLS} FROM decisions WHERE prediction_id = ?", (prediction_id,))
        decision = None if row is None else codec.decision_from_row(row)
        self._decisions[prediction_id] = decision
        return decision

    def policy_context(self, prediction: Prediction, key: str, channel: str, now: float) -> PolicyContext:
        """The guardrails' view of the world for this prediction, computed from the database:

        open disruptive recommendations (surfaced or digest, no outcome yet, action in the store's
        ``disruptive_actions``) in the prediction's cluster; the last *effective* override of its key and of its
        target; recommendations surfaced (not digested) in ``channel`` after now − 1 h — those stamped later than
        ``now`` included: another process that read its clock after this one but took the write lock first, or
        this host's clock stepped back, must not make room under the cap.
        """
        cluster = prediction.cluster
        active: dict[str, int] = {}
        if self._disruptive:
            active[cluster] = int(self._one(self._sql.open_disruptive, (cluster, *self._disruptive))[0])
        overrides: dict[str, float] = {}
        by_key = self._one(
            f"SELECT MAX(f.at) FROM feedback f WHERE f.key = ? AND f.kind = 'override' AND f.weight > 0 "
            f"AND {_IS_EFFECTIVE}",
            (key,),
        )[0]
        if by_key is not None:
            overrides[f"key:{key}"] = by_key
        by_target = self._one(
            f"SELECT MAX(f.at) FROM feedback f WHERE f.target = ? AND f.kind = 'override' AND f.weight > 0 "
            f"AND {_IS_EFFECTIVE}",
            (prediction.target,),
        )[0]
        if by_target is not None:
            overrides[f"target:{prediction.target}"] = by_target
        surfaced = self._one(
            "SELECT COUNT(*) FROM decisions WHERE channel = ? AND verdict = 'surface' AND decided_at > ?",
            (channel, now - HOUR_S),
        )[0]
        return PolicyContext(
            now=now,
            active_disruptive_by_cluster=active,
            last_override_at=overrides,
            surfaced_last_hour_by_channel={channel: int(surfaced)},
        )

    # -- learning state ------------------------------------------------------------------------------------
    def get_key(self, key: str) -> KeyAlignment:
        cached = self._keys.get(key)
        if cached is not None:
            return cached
        row = self._one(
            "SELECT name, m, n, weight_sum, updated_at, id FROM learning_state WHERE kind = 'key' AND name = ?", (key,)
        )
        if row is None:
            state = KeyAlignment(key=key)
        else:
            state = codec.key_from_row(row[:5])
            self._stored_keys[key] = row[5]
        self._keys[key] = state
        return state

    def put_key(self, state: KeyAlignment) -> None:
        key = state.key
        row_id = self._stored_keys.get(key)
        if row_id is not None:  # a plain UPDATE when the row is known to exist (cheaper than an upsert)
            params = (state.m, state.n, state.weight_sum, state.updated_at, row_id)
            if self._write("key_alignment", key, _UPDATE_KEY, params).rowcount == 1:
                self._keys[key] = state
                return
        self._stored_keys[key] = self._write("key_alignment", key, _UPSERT_KEY, codec.key_params(state)).fetchone()[0]
        self._keys[key] = state

    def get_bandit(self) -> ThresholdBandit:
        if self._bandit is not None:
            return self._bandit
        cfg = self._config.bandit
        rows = self._c.execute(f"{_SELECT_ARMS} ORDER BY 1").fetchall()
        if not rows:
            bandit = ThresholdBandit(cfg)
        else:
            stored = tuple(r[1] for r in rows)
            if [r[0] for r in rows] != list(range(cfg.n_arms)) or stored != cfg.thresholds:
                raise StorageError(
                    "bandit_arms",
                    "thresholds",
                    f"the database holds arms with thresholds {list(stored)} but the configuration has "
                    f"{list(cfg.thresholds)}; reset the bandit (npo-bot) or fix the configuration",
                )
            bandit = codec.trusted_row(
                ThresholdBandit,
                (cfg, tuple(r[2] for r in rows), tuple(r[3] for r in rows), tuple(r[4] for r in rows)),
            )
            self._bandit_stored = bandit
            self._arm_ids = tuple(r[5] for r in rows)
        self._bandit = bandit
        return bandit

    def put_bandit(self, bandit: ThresholdBandit) -> None:
        """Write the arms that differ from the stored ones (all of them when nothing is stored yet)."""
        cfg = bandit.config
        if cfg is not self._config.bandit and cfg != self._config.bandit:
            raise StorageError(
                "bandit_arms", "config", "the bandit's configuration differs from the store's LoopConfig.bandit"
            )
        old = self._bandit_stored
        if old is bandit:
            return
        alpha, beta, pulls = bandit.alpha, bandit.beta, bandit.pulls
        ids = self._arm_ids
        if old is not None and ids is not None:
            # The common case (once per answer): the stored arms and their row ids are known (read in this
            # transaction or an unchanged snapshot, thresholds checked on that read): UPDATE the changed ones by id.
            params = [
                (a, b, n, i)
                for a, b, n, i, oa, ob, on in zip(alpha, beta, pulls, ids, old.alpha, old.beta, old.pulls, strict=True)
                if a != oa or b != ob or n != on
            ]
            if params:
                try:
                    if len(params) == 1:
                        updated = self._cur.execute(_UPDATE_ARM, params[0]).rowcount
                    else:
                        updated = self._cur.executemany(_UPDATE_ARM, params).rowcount
                except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
                    raise StorageError("bandit_arms", "bandit", str(exc)) from exc
                if updated != len(params):  # a row went missing: write them all the general way
                    self._arm_ids = None
                    self._bandit_stored = None
                    self.put_bandit(bandit)
                    return
            self._bandit = self._bandit_stored = bandit
            return
        if old is None:
            rows = list(zip(range(cfg.n_arms), cfg.thresholds, alpha, beta, pulls, strict=True))
        else:
            old_alpha, old_beta, old_pulls = old.alpha, old.beta, old.pulls
            thresholds = cfg.thresholds
            rows = [
                (arm, thresholds[arm], alpha[arm], beta[arm], pulls[arm])
                for arm in range(len(thresholds))
                if alpha[arm] != old_alpha[arm] or beta[arm] != old_beta[arm] or pulls[arm] != old_pulls[arm]
            ]
        sql = _UPSERT_ARM
        try:
            ids = self._arm_ids
            if rows and old is not None and ids is not None:
                # The stored arms were read in this transaction (or a snapshot of it): the rows exist, and their
                # thresholds were checked against the configuration, so plain UPDATEs by row id do the same (a
                # full-information update changes several arms per event). Any row not matched: upsert them all.
                params = [(a, b, n, ids[arm]) for arm, _, a, b, n in rows]
                if len(params) == 1:
                    updated = self._cur.execute(_UPDATE_ARM, params[0]).rowcount
                else:
                    updated = self._cur.executemany(_UPDATE_ARM, params).rowcount
                if updated != len(rows):
                    self._c.executemany(sql, rows)
            elif len(rows) == 1:
                self._c.execute(sql, rows[0])
            elif rows:
                self._c.executemany(sql, rows)
            if self._arm_ids is None and rows:  # the arms were just created: note their row ids once
                self._arm_ids = tuple(r[5] for r in self._c.execute(f"{_SELECT_ARMS} ORDER BY 1"))
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            raise StorageError("bandit_arms", "bandit", str(exc)) from exc
        self._bandit = self._bandit_stored = bandit

    def get_trust(self, operator: str) -> OperatorTrust | None:
        if operator in self._trust:
            return self._trust[operator]
        row = self._one(
            "SELECT name, agree, disagree, n_outcome, n_peer, id FROM learning_state "
            "WHERE kind = 'operator' AND name = ?",
            (operator,),
        )
        trust = None if row is None else codec.trust_from_row(row[:5])
        if row is not None:
            self._stored_trust[operator] = row[5]
        self._trust[operator] = trust
        return trust

    def put_trust(self, trust: OperatorTrust) -> None:
        operator = trust.operator
        row_id = self._stored_trust.get(operator)
        if row_id is not None:  # a plain UPDATE when the row is known to exist
            params = (trust.agree, trust.disagree, trust.n_outcome, trust.n_peer, row_id)
            if self._write("operator_trust", operator, _UPDATE_TRUST, params).rowcount == 1:
                self._trust[operator] = trust
                return
        upsert = self._write("operator_trust", operator, _UPSERT_TRUST, codec.trust_params(trust))
        self._stored_trust[operator] = upsert.fetchone()[0]
        self._trust[operator] = trust

    # -- feedback and outcomes -----------------------------------------------------------------------------
    def prefetch_feedback(self, prediction_id: str, operator: str, request_id: str) -> None:
        """Load everything :func:`npo.loop.record_feedback` reads, in one query, into this transaction's caches:
        whether ``request_id`` is stored, the decision (with its channel and target), its key's state, the
        operator's trust, the operator's and the system's effective answers (a second query, only when there
        is one), and the bandit. Entries already cached (this transaction's own writes) are kept. A bandit that
        does not match the configuration is left for :meth:`get_bandit` to report.

        When this is the transaction's first read and the connection's previous feedback transaction left a
        :class:`_Snapshot` that is still exact (nothing else committed since: same ``data_version``, same
        ``total_changes``), its keys, trust, bandit and decisions are reused and only the per-event part is read
        (request seen, effective answers, and the decision when it is not among the snapshot's)."""
        holder = self._holder
        snap = None if holder is None else holder.snapshot
        if (
            snap is not None
            and self._c.total_changes == snap.changes
            and not (self._decisions or self._keys or self._trust or self._seen or self._effective)
            and self._bandit is None
        ):
            assert holder is not None
            holder.snapshot = None  # taken: given back (updated) by a clean commit
            if self._cur.execute("PRAGMA data_version").fetchone()[0] == snap.data_version:
                self._data_version = snap.data_version
                known = prediction_id in snap.decisions
                r = self._cur.execute(
                    self._sql.warm if known else self._sql.warm_decision, (request_id, prediction_id, operator)
                ).fetchone()
                self._keys, self._stored_keys = snap.keys, snap.stored_keys
                self._trust, self._stored_trust = snap.trust, snap.stored_trust
                self._bandit, self._bandit_stored, self._arm_ids = snap.bandit, snap.bandit_stored, snap.arm_ids
                self._decisions, self._channel_target = snap.decisions, snap.channel_target
                self._next_id = snap.next_id
                self._adopted = snap
                self._seen[(prediction_id, operator, request_id)] = bool(r[0])
                if not known:
                    if r[3] is None:
                        self._decisions[prediction_id] = None
                        return
                    self._decisions[prediction_id] = codec.decision_from_values(prediction_id, r, 3)
                    self._channel_target[prediction_id] = (r[13], r[14])
                self._load_effective(prediction_id, operator, r[1], r[2])
                return
        self._prefetch_all(prediction_id, operator, request_id)

    def _load_effective(self, prediction_id: str, operator: str, own_id: int | None, system_id: int | None) -> None:
        own, system = (prediction_id, operator), (prediction_id, SYSTEM_OPERATOR)
        if own not in self._effective and system not in self._effective:
            self._effective[own] = self._effective[system] = None
            if own_id is not None or system_id is not None:
                rows = self._c.execute(
                    f"SELECT {codec.FEEDBACK_COLS} FROM feedback WHERE id IN (?, ?)", (own_id, system_id)
                ).fetchall()
                for row in rows:
                    self._effective[(prediction_id, row[1])] = codec.feedback_from_row(row)

    def _prefetch_all(self, prediction_id: str, operator: str, request_id: str) -> None:
        cfg = self._config.bandit
        r = self._cur.execute(self._sql.prefetch, (request_id, prediction_id, operator, *cfg.thresholds)).fetchone()
        self._data_version = r[-1]
        self._seen.setdefault((prediction_id, operator, request_id), bool(r[0]))
        if r[1] is None:
            self._decisions.setdefault(prediction_id, None)
            return
        decision = self._decisions.get(prediction_id, _MISSING)
        if decision is _MISSING:
            decision = codec.decision_from_values(prediction_id, r, 1)
            self._decisions[prediction_id] = decision
        self._channel_target.setdefault(prediction_id, (r[11], r[12]))
        if decision is None:
            return
        key = decision.key
        ids = 24 + 3 * cfg.n_arms  # the row ids of the key, the trust and the arms
        if key not in self._keys:
            if r[14] is None:
                self._keys[key] = KeyAlignment(key=key)
            else:
                self._keys[key] = codec.key_from_row((key, r[13], r[14], r[15], r[16]))
                self._stored_keys[key] = r[ids]
        if operator not in self._trust:
            if r[17] is None:
                self._trust[operator] = None
            else:
                self._trust[operator] = codec.trust_from_row((operator, r[17], r[18], r[19], r[20]))
                self._stored_trust[operator] = r[ids + 1]
        self._load_effective(prediction_id, operator, r[21], r[22])
        if self._bandit is None and r[23] >= 0:
            if r[23] == 0:
                self._bandit = ThresholdBandit(cfg)
            else:
                arms = r[24:ids]
                self._bandit = self._bandit_stored = codec.trusted_row(
                    ThresholdBandit, (cfg, tuple(arms[0::3]), tuple(arms[1::3]), tuple(arms[2::3]))
                )
                self._arm_ids = r[ids + 2 : ids + 2 + cfg.n_arms]

    def has_request(self, event: FeedbackEvent) -> bool:
        answer = (event.prediction_id, event.operator, event.request_id)
        seen = self._seen.get(answer)
        if seen is None:
            seen = (
                self._one("SELECT 1 FROM feedback WHERE prediction_id = ? AND operator = ? AND request_id = ?", answer)
                is not None
            )
            self._seen[answer] = seen
        return seen

    def effective_feedback(self, prediction_id: str, operator: str) -> AppliedFeedback | None:
        """The person's current answer; the skip (operator ``system``) is fetched in the same query, because
        the loop asks for it next."""
        wanted = (prediction_id, operator)
        if wanted in self._effective:
            return self._effective[wanted]
        rows = self._c.execute(
            f"{_EFFECTIVE_FEEDBACK} WHERE e.prediction_id = ? AND e.operator IN (?, ?)",
            (prediction_id, operator, SYSTEM_OPERATOR),
        ).fetchall()
        self._effective[wanted] = self._effective[(prediction_id, SYSTEM_OPERATOR)] = None
        for row in rows:
            self._effective[(prediction_id, row[1])] = codec.feedback_from_row(row)
        return self._effective[wanted]

    def add_feedback(self, applied: AppliedFeedback, audit: Mapping[str, object] | None = None) -> None:
        """Append the event to the (append-only) feedback log as the person's effective answer: it replaces the
        answer with request id ``applied.replaces``, which stays in the log (the ``feedback_one_effective_answer``
        trigger refuses an answer that does not name the current one). ``audit`` of the loop's shape (operator,
        kind, y, weight, status, m) is kept in the row itself (``audit_weight``, ``audit_m``: the ``audit_log``
        view shows it); any other detail becomes an ``audit_events`` line."""
        ev = applied.event
        request_id = ev.request_id
        self._effective.clear()
        answer = (ev.prediction_id, ev.operator, request_id)
        self._seen.pop(answer, None)
        audited = None if audit is None else _feedback_audit(applied, audit)
        weight, m = (None, None) if audited is None else audited
        known = self._channel_target.get(ev.prediction_id)
        next_id = self._next_id
        self._next_id = None
        # the columns of _FEEDBACK_INSERT after its id: codec.feedback_params(applied), audit_weight, audit_m
        row = (
            request_id,
            ev.prediction_id,
            ev.operator,
            _KIND_TEXT[ev.kind],
            ev.at,
            ev.reason,
            applied.key,
            applied.y,
            applied.weight,
            applied.key_n_before,
            applied.arm,
            applied.reward,
            applied.replaces,
            weight,
            m,
        )
        if known is not None and next_id is not None:
            # The next audit id is known exactly (this transaction, or the snapshot it continues, made the last
            # allocation and nothing else has written since): given directly instead of computed by NEXT_AUDIT_ID.
            cur = self._write("feedback", request_id, self._sql.insert_feedback_id, (next_id, *row, *known))
        elif known is not None:
            cur = self._write("feedback", request_id, self._sql.insert_feedback_known, (*row, *known))
        else:
            cur = self._write(
                "feedback", request_id, self._sql.insert_feedback, (*row, ev.prediction_id, ev.prediction_id)
            )
        self._next_id = None if cur.lastrowid is None else cur.lastrowid + 1
        self._seen[answer] = True
        if audit is not None and audited is None:
            self.audit("feedback", ev.prediction_id, audit, ev.at)

    def feedback_for(self, prediction_id: str) -> Sequence[AppliedFeedback]:
        rows = self._c.execute(
            f"{_EFFECTIVE_FEEDBACK} WHERE e.prediction_id = ? ORDER BY f.id", (prediction_id,)
        ).fetchall()
        return [codec.feedback_from_row(r) for r in rows]

    def add_outcome(self, outcome: Outcome) -> bool:
        cur = self._write(
            "outcomes",
            outcome.prediction_id,
            f"INSERT INTO outcomes ({codec.OUTCOME_COLS}) VALUES (?,?,?,?,?) ON CONFLICT(prediction_id) DO NOTHING",
            (outcome.prediction_id, int(outcome.real_fault), outcome.at, outcome.source, outcome.recorded_at),
        )
        if cur.rowcount != 1:
            return False
        self._c.execute(
            "UPDATE recommendations SET state = 'resolved', resolved_at = ? WHERE prediction_id = ?",
            (outcome.at, outcome.prediction_id),
        )
        return True

    def close_recommendation(self, prediction_id: str, at: float) -> bool:
        """Close the prediction's recommendation *without* an outcome (its alert resolved without saying whether
        the fault was real): from ``at`` it no longer counts as open — toward the blast radius, the skip sweeper,
        the open count — while nothing is learnt and no outcome row is written, so a later outcome (first one wins)
        is still recorded, learnt from and moves ``resolved_at`` to its own time, as :meth:`add_outcome` does.
        False when there was no open recommendation: never surfaced, or already closed (an outcome, an earlier
        call)."""
        cur = self._write(
            "recommendations",
            prediction_id,
            "UPDATE recommendations SET state = 'resolved', resolved_at = ? WHERE prediction_id = ? "
            "AND resolved_at IS NULL",
            (at, prediction_id),
        )
        return cur.rowcount == 1

    def get_outcome(self, prediction_id: str) -> Outcome | None:
        row = self._one(f"SELECT {codec.OUTCOME_COLS} FROM outcomes WHERE prediction_id = ?", (prediction_id,))
        return None if row is None else codec.outcome_from_row(row)

    # -- models, monitor -----------------------------------------------------------------------------------
    def get_model(self) -> LogisticModel | None:
        """The promoted model with the highest version (None before any promotion)."""
        if self._model is _MISSING:
            row = self._one(
                f"SELECT {codec.MODEL_COLS} FROM model_versions WHERE promoted = 1 ORDER BY version DESC LIMIT 1",
                (),
            )
            self._model = None if row is None else codec.model_from_row(row)
        model: LogisticModel | None = self._model
        return model

    def save_model(self, model: LogisticModel, *, promoted: bool, recorded_at: float) -> None:
        """Record a model version (every candidate, promoted or not). A version is recorded once."""
        self._write(
            "model_versions",
            str(model.version),
            f"INSERT INTO model_versions ({codec.MODEL_COLS}, promoted, recorded_at) VALUES (?,?,?,?,?,?,?,?)",
            (*codec.model_params(model), int(promoted), recorded_at),
        )
        self._model = _MISSING

    def get_model_version(self, version: int) -> LogisticModel | None:
        row = self._one(f"SELECT {codec.MODEL_COLS} FROM model_versions WHERE version = ?", (version,))
        return None if row is None else codec.model_from_row(row)

    def get_monitor_state(self) -> MonitorState:
        row = self._one(f"SELECT {codec.MONITOR_COLS} FROM monitor_state WHERE id = 1", ())
        return MonitorState() if row is None else codec.monitor_from_row(row)

    def put_monitor_state(self, state: MonitorState) -> None:
        cols = codec.MONITOR_COLS
        updates = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in cols.split(","))
        self._write(
            "monitor_state",
            "1",
            f"INSERT INTO monitor_state (id, {cols}) VALUES (1,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            codec.monitor_params(state),
        )

    def add_monitor_run(
        self, at: float, triggered: bool, reason: str, window_loss: float | None, n_in_window: int, drift_alarm: bool
    ) -> int:
        cur = self._write(
            "monitor_runs",
            str(at),
            "INSERT INTO monitor_runs (at, triggered, reason, window_loss, n_in_window, drift_alarm) "
            "VALUES (?,?,?,?,?,?)",
            (at, int(triggered), reason, window_loss, n_in_window, int(drift_alarm)),
        )
        return int(cur.lastrowid or 0)

    def open_proposal(self, at: float, reason: str, *, expires_at: float | None = None) -> int:
        """Record a new retraining proposal (state ``open``; unanswered, it expires at ``expires_at``, or when the
        monitor's configured expiry after ``at`` says so if None); returns its id."""
        cur = self._write(
            "retraining_proposals",
            reason[:60],
            "INSERT INTO retraining_proposals (opened_at, reason, expires_at) VALUES (?,?,?)",
            (at, reason, expires_at),
        )
        return int(cur.lastrowid or 0)

    def resolve_proposal(
        self, proposal_id: int, *, approved: bool, by: str, at: float, model_version: int | None = None
    ) -> bool:
        """Close an open proposal (Approve / Dismiss). False when it was already resolved (a repeated click)."""
        cur = self._write(
            "retraining_proposals",
            str(proposal_id),
            "UPDATE retraining_proposals SET state = ?, resolved_at = ?, resolved_by = ?, model_version = ? "
            "WHERE id = ? AND state = 'open'",
            ("approved" if approved else "dismissed", at, by, model_version, proposal_id),
        )
        return cur.rowcount == 1

    def expire_proposal(self, proposal_id: int, *, at: float) -> bool:
        """Close an open proposal nobody answered (state ``expired``, ``resolved_at`` = ``at``, when it expired; no
        ``resolved_by``). False when it was no longer open."""
        cur = self._write(
            "retraining_proposals",
            str(proposal_id),
            "UPDATE retraining_proposals SET state = 'expired', resolved_at = ? WHERE id = ? AND state = 'open'",
            (at, proposal_id),
        )
        return cur.rowcount == 1

    # -- outbox, job claims, request ids -------------------------------------------------------------------
    def enqueue(
        self, channel: str, kind: str, payload: Mapping[str, Any], now: float, *, prediction_id: str | None = None
    ) -> int:
        """Add a pending outbox message (due at ``now``); returns its id."""
        cur = self._write(
            "outbox",
            prediction_id or kind,
            _INSERT_OUTBOX,
            (prediction_id, channel, kind, codec.dumps(dict(payload)), now, now),
        )
        return int(cur.lastrowid or 0)

    def claim_job(self, job: str, period: str, *, now: float, owner: str = "") -> bool:
        """True exactly once per (job, period) across every process sharing the file."""
        cur = self._write(
            "job_claims",
            f"{job}/{period}",
            "INSERT INTO job_claims (job, period, claimed_at, owner) VALUES (?,?,?,?) "
            "ON CONFLICT(job, period) DO NOTHING",
            (job, period, now, owner),
        )
        return cur.rowcount == 1

    def claim_request(self, request_id: str, kind: str, at: float) -> bool:
        """True the first time ``request_id`` is seen (Slack event ids, alert button clicks); False on a replay."""
        cur = self._write(
            "processed_requests",
            request_id,
            "INSERT INTO processed_requests (request_id, kind, at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            (request_id, kind, at),
        )
        return cur.rowcount == 1

    def audit(self, kind: str, subject: str, detail: Mapping[str, object], at: float) -> None:
        self._next_id = None
        self._write(
            "audit_log",
            subject,
            _INSERT_AUDIT,
            (at, kind, subject, codec.dumps(detail if type(detail) is dict else dict(detail))),
        )


class _Scope:
    """The context manager behind :meth:`SQLiteStore.transaction` (a class rather than a generator: it runs once
    per feedback event, so its overhead counts)."""

    __slots__ = ("_savepoint", "_store", "_tx")

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._tx: SQLiteTransaction | None = None
        self._savepoint: str | None = None

    def __enter__(self) -> SQLiteTransaction:
        store = self._store
        local = store._local
        outer = local.tx
        if outer is not None:
            name = f"npo_sp_{local.depth}"
            outer._c.execute(f"SAVEPOINT {name}")
            local.depth += 1
            self._savepoint = name
            self._tx = outer
            return outer
        conn = store._connection().conn
        cursor = local.cursor
        assert cursor is not None, "a connection is opened with its cursor"
        store._write_lock.acquire()
        try:
            store._begin_immediate(cursor)
        except BaseException:
            store._write_lock.release()
            raise
        tx = SQLiteTransaction(conn, store.config, store.disruptive_actions, local, cursor)
        local.tx = self._tx = tx
        return tx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        tx = self._tx
        assert tx is not None, "transaction scope exited without being entered"
        conn = tx._c
        name = self._savepoint
        if name is not None:
            local = self._store._local
            try:
                if exc_type is None:
                    conn.execute(f"RELEASE {name}")
                else:
                    if conn.in_transaction:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    tx.invalidate()
            finally:
                local.depth -= 1
            return
        store = self._store
        try:
            if exc_type is not None:
                tx._after_rollback()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return
            try:
                tx._cur.execute("COMMIT")
            except BaseException:
                tx._after_rollback()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            tx._after_commit()
        finally:
            store._local.tx = None
            store._write_lock.release()


class _Local(threading.local):
    db: Database | None = None
    cursor: sqlite3.Cursor | None = None  # of db's connection, for the transactions' hot statements
    tx: SQLiteTransaction | None = None
    depth: int = 0
    snapshot: _Snapshot | None = None  # see _Snapshot


class SQLiteStore:
    """The loop's state in the SQLite file at ``path`` (created and migrated to the latest schema on open).

    ``config``: the loop configuration (its bandit thresholds must match the stored arms).
    ``disruptive_actions``: actions counted as open disruptive recommendations by the policy context (pass the
    policy's ``blast_radius.disruptive_actions``). ``synchronous``: ``"NORMAL"`` (survives process crashes) or
    ``"FULL"`` (also power loss). ``busy_timeout_s``: how long one ``BEGIN IMMEDIATE`` waits for another
    process's write lock; ``lock_retries``: how many more times it is tried (with exponential backoff) before
    :class:`StorageBusy`. ``migrate``: apply pending migrations on open (otherwise the schema must be current).

    Thread-safe: each thread gets its own connection (kept until :meth:`close` or the thread ends).
    """

    def __init__(
        self,
        path: str | Path,
        config: LoopConfig | None = None,
        *,
        disruptive_actions: Iterable[str] = DEFAULT_DISRUPTIVE_ACTIONS,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        lock_retries: int = 3,
        migrate: bool = True,
    ) -> None:
        self.path = Path(path)
        self.config = config or LoopConfig()
        # compared as the policy compares them (npo.policy.name_key = SQLite's lower(); the index is on it)
        self.disruptive_actions = tuple(dict.fromkeys(name_key(a) for a in disruptive_actions))
        self.synchronous: Synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.lock_retries = lock_retries
        self._local = _Local()
        self._write_lock = threading.Lock()
        self._registry_lock = threading.Lock()
        self._open: list[tuple[weakref.ref[threading.Thread], Database]] = []
        self._closed = False
        self._tally_lock = threading.Lock()
        self._tallies: dict[str, tuple[int, dict[tuple[str, int], int]]] = {}
        db = self._connection()
        self._file = _file_identity(self.path)  # see health(): the file this store has open
        version = _migrate(db) if migrate else schema_version(db)
        if version != LATEST_SCHEMA_VERSION:
            newer = newer_schema_message(db)
            raise StorageError(
                "_sqlite_migrations",
                str(self.path),
                newer or f"schema version {version}, this code needs {LATEST_SCHEMA_VERSION}: run `npo-bot db migrate`",
            )

    # -- connections ---------------------------------------------------------------------------------------
    def _connection(self) -> Database:
        if self._closed:
            raise StorageError("connection", str(self.path), "the store is closed")
        db = self._local.db
        if db is None:
            db = connect(
                self.path, synchronous=self.synchronous, busy_timeout_s=self.busy_timeout_s, check_same_thread=False
            )
            with self._registry_lock:
                alive = []
                for ref, other in self._open:
                    thread = ref()
                    if thread is None or not thread.is_alive():
                        other.close()
                    else:
                        alive.append((ref, other))
                alive.append((weakref.ref(threading.current_thread()), db))
                self._open = alive
            self._local.db = db
            self._local.cursor = db.conn.cursor()
        return db

    def close(self) -> None:
        """Close every connection this store opened. Call when no thread is using the store any more."""
        with self._registry_lock:
            for _, db in self._open:
                db.close()
            self._open = []
            self._closed = True

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin_immediate(self, conn: sqlite3.Connection | sqlite3.Cursor) -> None:
        delay = 0.05
        for attempt in range(self.lock_retries + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if attempt == self.lock_retries:
                    raise StorageBusy(
                        "database",
                        str(self.path),
                        f"could not start a write transaction: the database stayed locked by another "
                        f"connection for {self.lock_retries + 1} attempts of {self.busy_timeout_s:g} s each",
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay *= 2

    # -- transactions --------------------------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[SQLiteTransaction]:
        """``BEGIN IMMEDIATE … COMMIT`` on this thread's connection; rolled back if the block raises.

        Nested use on the same thread runs the inner block in a SAVEPOINT of the outer transaction (an inner
        failure undoes only the inner block's writes). Raises :class:`StorageBusy` when the write lock cannot be
        had after the retries.
        """
        return _Scope(self)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read-only snapshot (deferred ``BEGIN`` … ``ROLLBACK``) on this thread's connection;
        inside a write transaction, that transaction's connection (so reads see its writes)."""
        tx = self._local.tx
        if tx is not None:
            yield tx.connection
            return
        conn = self._connection().conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def run(self, step: Callable[[SQLiteTransaction], Any]) -> Any:
        """``step(tx)`` in one transaction; returns its result."""
        with self.transaction() as tx:
            return step(tx)

    # -- batch decisions -----------------------------------------------------------------------------------
    def decide_many(
        self, predictions: Iterable[Prediction], *, policy: Policy, rng: np.random.Generator, now: float
    ) -> list[DecideResult]:
        """Decide and persist many predictions in one transaction (one commit), in order, with
        :func:`npo.loop.decide_batch`: the decisions :func:`npo.loop.decide` would make one by one (the bandit's
        τ draws come from one vectorised draw, so the random stream differs), with the state read once and each
        table written once. All or nothing: an error rolls back the whole batch."""
        with self.transaction() as tx:
            return decide_batch(tx, predictions, config=self.config, policy=policy, rng=rng, now=now)

    # -- outbox --------------------------------------------------------------------------------------------
    def enqueue(
        self, channel: str, kind: str, payload: Mapping[str, Any], now: float, *, prediction_id: str | None = None
    ) -> int:
        """Add a pending message (alerts, summaries; recommendations are enqueued by ``add_decision``)."""
        with self.transaction() as tx:
            return tx.enqueue(channel, kind, payload, now, prediction_id=prediction_id)

    def claim_due(self, now: float, limit: int = 10, *, lease_s: float = 60.0) -> list[OutboxItem]:
        """Take up to ``limit`` pending messages due at ``now`` (oldest first), counting an attempt for each and
        leasing them for ``lease_s`` seconds (their ``next_attempt_at`` moves to now + lease_s), so a second
        worker does not take them meanwhile; a worker that dies before ``mark_*`` lets the lease expire and the
        message is delivered later (at least once, never lost)."""
        with self.transaction() as tx:
            rows = tx.connection.execute(
                "SELECT id, channel, kind, payload, prediction_id, attempts, next_attempt_at, created_at, last_error "
                "FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
            tx.connection.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ? WHERE id = ?",
                [(now + lease_s, r[0]) for r in rows],
            )
        return [
            OutboxItem(
                id=r[0],
                channel=r[1],
                kind=r[2],
                payload=json.loads(r[3]),
                prediction_id=r[4],
                attempts=r[5] + 1,
                next_attempt_at=now + lease_s,
                created_at=r[7],
                last_error=r[8],
            )
            for r in rows
        ]

    def _outbox_update(self, outbox_id: int, sql: str, params: Sequence[Any], attempt: int | None = None) -> None:
        """Run ``sql`` (ending in ``WHERE id = ? AND state = 'pending'``) for one message. ``attempt``: the attempt
        number :meth:`claim_due` gave the caller, its lease: when another worker has claimed the message since,
        nothing changes and :class:`LeaseLost` is raised."""
        if attempt is not None:
            sql, params = f"{sql} AND attempts = ?", (*params, attempt)
        with self.transaction() as tx:
            cur = tx.connection.execute(sql, params)
            if cur.rowcount != 1:
                row = tx.connection.execute("SELECT attempts FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
                if attempt is not None and row is not None and row[0] != attempt:
                    raise LeaseLost("outbox", str(outbox_id), "another worker claimed the message since this lease")
                raise StorageError("outbox", str(outbox_id), "no such message, or it is no longer pending")

    def mark_sent(
        self, outbox_id: int, channel: str, ts: str, *, at: float | None = None, attempt: int | None = None
    ) -> None:
        """The message was posted as (``channel``, ``ts``); its recommendation, if any, becomes ``posted``.
        ``attempt``: the caller's lease (see :meth:`_outbox_update`)."""
        sent_at = time.time() if at is None else at
        with self.transaction() as tx:
            self._outbox_update(
                outbox_id,
                "UPDATE outbox SET state = 'sent', channel = ?, message_ts = ?, sent_at = ?, last_error = NULL "
                "WHERE id = ? AND state = 'pending'",
                (channel, ts, sent_at, outbox_id),
                attempt,
            )
            tx.connection.execute(
                "UPDATE recommendations SET channel = ?, message_ts = ?, "
                "state = CASE WHEN state = 'resolved' THEN state ELSE 'posted' END "
                "WHERE prediction_id = (SELECT prediction_id FROM outbox WHERE id = ? AND kind = 'recommendation')",
                (channel, ts, outbox_id),
            )
            # Updates that were waiting for this post are due now (they wait with a long back-off otherwise).
            tx.connection.execute(
                "UPDATE outbox SET next_attempt_at = MIN(next_attempt_at, ?) WHERE state = 'pending' "
                "AND kind = 'update' AND prediction_id = (SELECT prediction_id FROM outbox WHERE id = ? "
                "AND kind IN ('recommendation', 'digest_item'))",
                (sent_at, outbox_id),
            )

    def mark_sent_many(
        self, sent: Sequence[tuple[int, int | None]], channel: str, ts: str, *, at: float | None = None
    ) -> int:
        """:meth:`mark_sent` for the messages one post carried (a digest), in one transaction: (outbox id, the caller's
        lease — its attempt number, or None) each. Returns how many were marked: fewer when another worker has
        claimed some since (their lease was lost: they are left as the new owner has them)."""
        if not sent:
            return 0
        sent_at = time.time() if at is None else at
        with self.transaction() as tx:
            c = tx.connection
            marked = [
                (outbox_id,)
                for outbox_id, attempt in sent
                if c.execute(
                    "UPDATE outbox SET state = 'sent', channel = ?, message_ts = ?, sent_at = ?, last_error = NULL "
                    "WHERE id = ? AND state = 'pending' AND (? IS NULL OR attempts = ?)",
                    (channel, ts, sent_at, outbox_id, attempt, attempt),
                ).rowcount
                == 1
            ]
            c.executemany(
                "UPDATE recommendations SET channel = ?, message_ts = ?, "
                "state = CASE WHEN state = 'resolved' THEN state ELSE 'posted' END "
                "WHERE prediction_id = (SELECT prediction_id FROM outbox WHERE id = ? AND kind = 'recommendation')",
                [(channel, ts, outbox_id) for (outbox_id,) in marked],
            )
            c.executemany(
                "UPDATE outbox SET next_attempt_at = MIN(next_attempt_at, ?) WHERE state = 'pending' "
                "AND kind = 'update' AND prediction_id = (SELECT prediction_id FROM outbox WHERE id = ? "
                "AND kind IN ('recommendation', 'digest_item'))",
                [(sent_at, outbox_id) for (outbox_id,) in marked],
            )
        return len(marked)

    def mark_retry(self, outbox_id: int, next_attempt_at: float, error: str, *, attempt: int | None = None) -> None:
        """Delivery failed temporarily: try again at ``next_attempt_at``. ``attempt``: the caller's lease."""
        self._outbox_update(
            outbox_id,
            "UPDATE outbox SET next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
            (next_attempt_at, error, outbox_id),
            attempt,
        )

    def defer_many(self, deferrals: Sequence[tuple[int, float, str, int | None]]) -> int:
        """Messages not tried this time (waiting for a channel's pace, a rate limit, an older post), in one
        transaction: (outbox id, due again at, reason, the caller's lease — its attempt number, or None) each. The
        claim is not counted as an attempt (the back-off counts real tries only). A delivery pass defers up to a
        whole claimed batch (a backlog waiting for a channel's pace); one write transaction for all of them keeps
        the write lock free for clicks. Returns how many were deferred: fewer when another worker has claimed some
        since (their lease was lost: they are left as the new owner has them) or they are no longer pending."""
        if not deferrals:
            return 0
        with self.transaction() as tx:
            cur = tx.connection.executemany(
                "UPDATE outbox SET next_attempt_at = ?, last_error = ?, attempts = MAX(0, attempts - 1) "
                "WHERE id = ? AND state = 'pending' AND (? IS NULL OR attempts = ?)",
                [(at, reason, outbox_id, attempt, attempt) for outbox_id, at, reason, attempt in deferrals],
            )
            return int(cur.rowcount)

    def oldest_pending(self, kinds: Sequence[str]) -> dict[str, tuple[int, float]]:
        """Per channel, the oldest pending message of ``kinds`` that is waiting for another try (a failed or deferred
        one: ``last_error`` set) — its id and when it is due. A newer post waits for it, so that posts reach a
        channel in outbox order. One leased without an error yet is left out: it is in flight with another worker
        (or with one that stopped: its lease may run a minute), and order cannot be kept against a call in flight."""
        marks = ",".join("?" * len(kinds))
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT channel, MIN(id) FROM outbox WHERE state = 'pending' AND kind IN ({marks}) "
                "AND last_error IS NOT NULL GROUP BY channel",
                tuple(kinds),
            ).fetchall()
            due = {
                int(r[0]): float(r[1])
                for r in conn.execute(
                    f"SELECT id, next_attempt_at FROM outbox WHERE id IN ({','.join('?' * len(rows))})",
                    tuple(r[1] for r in rows),
                )
            }
        return {str(channel): (int(first), due[int(first)]) for channel, first in rows}

    def mark_failed(self, outbox_id: int, error: str, *, attempt: int | None = None) -> None:
        """Delivery failed for good (e.g. ``channel_not_found``): no more attempts. ``attempt``: the caller's
        lease."""
        with self.transaction() as tx:
            self._outbox_update(
                outbox_id,
                "UPDATE outbox SET state = 'failed', last_error = ? WHERE id = ? AND state = 'pending'",
                (error, outbox_id),
                attempt,
            )
            tx.connection.execute(
                "UPDATE recommendations SET state = 'failed' WHERE state = 'pending' AND prediction_id = "
                "(SELECT prediction_id FROM outbox WHERE id = ? AND kind = 'recommendation')",
                (outbox_id,),
            )

    def outbox(self, state: OutboxState | None = None) -> list[OutboxItem]:
        """Outbox messages (optionally in one state), oldest first. Read-only."""
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        with self.read() as conn:
            rows = conn.execute(
                "SELECT id, channel, kind, payload, prediction_id, attempts, next_attempt_at, created_at, state, "
                f"last_error FROM outbox {where} ORDER BY id",
                params,
            ).fetchall()
        return [OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows]

    # -- job claims and request ids ------------------------------------------------------------------------
    def claim_job(self, job: str, period: str, *, now: float | None = None, owner: str = "") -> bool:
        """Claim scheduled ``job`` for ``period`` (e.g. ``"weekly_summary", "2025-W13"``): True exactly once."""
        with self.transaction() as tx:
            return tx.claim_job(job, period, now=time.time() if now is None else now, owner=owner)

    def claim_request(self, request_id: str, kind: str, at: float) -> bool:
        """True the first time ``request_id`` is seen; False for a replay or retry."""
        with self.transaction() as tx:
            return tx.claim_request(request_id, kind, at)

    # -- reads ---------------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.read():
            return schema_version(self._connection())

    def keys(self) -> dict[str, KeyAlignment]:
        """Every key's learned misalignment state."""
        with self.read() as conn:
            rows = conn.execute(f"SELECT {codec.KEY_COLS} FROM key_alignment ORDER BY key").fetchall()
        return {r[0]: codec.key_from_row(r) for r in rows}

    def bandit(self) -> ThresholdBandit:
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_bandit()

    def trust(self) -> dict[str, OperatorTrust]:
        with self.read() as conn:
            rows = conn.execute(f"SELECT {codec.TRUST_COLS} FROM operator_trust ORDER BY operator").fetchall()
        return {r[0]: codec.trust_from_row(r) for r in rows}

    def model(self) -> LogisticModel | None:
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_model()

    def monitor_state(self) -> MonitorState:
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_monitor_state()

    def prediction(self, prediction_id: str) -> Prediction | None:
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_prediction(prediction_id)

    def decision(self, prediction_id: str) -> Decision | None:
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_decision(prediction_id)

    def feedback_log(self, *, prediction_id: str | None = None) -> list[AppliedFeedback]:
        """Every applied feedback event (replaced ones included), in the order recorded."""
        where, params = ("WHERE prediction_id = ?", (prediction_id,)) if prediction_id else ("", ())
        with self.read() as conn:
            rows = conn.execute(f"SELECT {codec.FEEDBACK_COLS} FROM feedback {where} ORDER BY id", params).fetchall()
        return [codec.feedback_from_row(r) for r in rows]

    def alignment_samples(
        self,
        *,
        last_n: int | None = None,
        since: float | None = None,
        key: str | None = None,
        channel: str | None = None,
        effective_only: bool = True,
    ) -> list[AlignmentSample]:
        """Alignment samples (key, y, at, trust weight, channel) in the order recorded, filtered like
        :func:`npo.alignment.window`: by key/channel, then ``at >= since``, then the last ``last_n``.

        By default only each person's current answer per recommendation counts (a replaced answer no longer
        does, as in :class:`npo.loop.InMemoryStore`); ``effective_only=False`` returns every applied event.
        """
        if last_n is not None and last_n <= 0:
            raise StorageError("feedback", "last_n", f"must be positive, got {last_n}")
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("key", key), ("channel", channel)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        if effective_only:
            clauses.append(_IS_EFFECTIVE)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = ""
        if last_n is not None:
            limit = " LIMIT ?"
            params.append(last_n)
        sql = f"SELECT f.key, f.y, f.at, f.weight, f.channel FROM feedback f {where} ORDER BY f.id DESC{limit}"
        with self.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [AlignmentSample(r[0], r[1], r[2], min(1.0, r[3]), r[4]) for r in reversed(rows)]

    def audit_entries(
        self, *, kind: str | None = None, after_id: int = 0
    ) -> list[tuple[int, float, str, str, dict[str, Any]]]:
        """Audit lines (id, at, kind, subject, detail) with id > ``after_id``, oldest first."""
        where = "WHERE id > ?" + (" AND kind = ?" if kind else "")
        params: tuple[Any, ...] = (after_id, kind) if kind else (after_id,)
        with self.read() as conn:
            rows = conn.execute(f"SELECT id, at, kind, subject, detail FROM audit_log {where} ORDER BY id", params)
            return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        """Row counts for metrics: predictions, decisions per verdict, feedback rows per kind
        (``feedback_<kind>``: every answer given, changed ones included), effective answers in all and per kind
        (``feedback_effective``, ``feedback_effective_<kind>``: each person's current answer, a skip until someone
        answers), outcomes, open recommendations, outbox per state, audit lines.

        The append-only logs (decisions, feedback, audit events) are tallied incrementally: each call counts only
        the rows added since the previous call (ids grow in commit order and rows are never updated or deleted),
        so a dashboard or a metrics scrape costs the same on a day-old and on a year-old database.
        """
        queries = {
            "outcomes": "SELECT 'outcomes', COUNT(*) FROM outcomes",
            "open": "SELECT 'recommendations_open', COUNT(*) FROM recommendations WHERE resolved_at IS NULL",
            "outbox": "SELECT 'outbox_' || state, COUNT(*) FROM outbox GROUP BY state",
        }
        out: dict[str, int] = {}
        with self.read() as conn:
            tallies = self._log_tallies(conn)
            for sql in queries.values():
                out.update({str(name): int(n) for name, n in conn.execute(sql).fetchall()})
        decisions, feedback, events = tallies["decisions"], tallies["feedback"], tallies["audit_events"]
        out["predictions"] = sum(n for (verdict, _), n in decisions.items())
        for (verdict, _), n in decisions.items():
            out[f"decisions_{verdict}"] = out.get(f"decisions_{verdict}", 0) + n
        for (kind, _), n in feedback.items():
            out[f"feedback_{kind}"] = out.get(f"feedback_{kind}", 0) + n
        # Every answer is effective until one names it in ``replaces`` — the feedback_one_effective_answer trigger
        # makes every replacement name the person's (or the skip's) current answer, and m009 checked the rows it
        # found — so the effective answers are the answers minus the replacing ones.
        replaced = tallies["feedback_replacing"]
        out["feedback_effective"] = sum(feedback.values()) - sum(replaced.values())
        for kind in FeedbackKind:  # effective answers per kind: the answers of that kind minus those replaced
            given = sum(n for (k, _), n in feedback.items() if k == kind.value)
            out[f"feedback_effective_{kind.value}"] = given - replaced.get((kind.value, 1), 0)
        # The audit_log view: every audit event, audited decisions and feedback rows carrying their audit line.
        audited = sum(n for (_, flag), n in decisions.items() if flag) + sum(n for (_, f), n in feedback.items() if f)
        out["audit_log"] = sum(events.values()) + audited
        return out

    def health(self) -> int:
        """What ``GET /healthz`` checks; returns the pending outbox messages. Costs the same on a year of history
        as on a day's: a look at the file and an index search of the pending messages (the backlog, not the
        history).

        Raises :class:`StorageError` saying what is wrong when the file at ``path`` is no longer the one this store
        opened — deleted or replaced while the process runs: its connections keep working on the old file, and
        everything written from then on is gone at the next restart — or when the database cannot be read
        (a malformed page, an I/O error)."""
        if self._file is not None:
            try:
                now = _file_identity(self.path)
            except FileNotFoundError:
                now = None
            except OSError as exc:
                raise StorageError("database", str(self.path), f"the file cannot be examined: {exc}") from exc
            if now is None:
                raise StorageError(
                    "database",
                    str(self.path),
                    "the file no longer exists (deleted while the bot runs?): what is written now is lost at the "
                    "next restart; restore the file and restart the bot",
                )
            if now != self._file:
                raise StorageError(
                    "database",
                    str(self.path),
                    "the file was replaced while the bot runs (this process still writes to the old one): "
                    "restart the bot",
                )
        try:
            with self.read() as conn:
                return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])
        except sqlite3.Error as exc:
            raise StorageError("database", str(self.path), f"cannot be read: {exc}") from exc

    def _log_tallies(self, conn: sqlite3.Connection) -> dict[str, dict[tuple[str, int], int]]:
        """Counts of the append-only logs by (group, flag), brought up to date with the rows added since the last
        call (inside the caller's read snapshot). The cache is per store and guarded by a lock."""
        sources = {
            "decisions": "SELECT MAX(seq), verdict, audited, COUNT(*) FROM decisions WHERE seq > ? GROUP BY 2, 3",
            "feedback": "SELECT MAX(id), kind, audit_m IS NOT NULL, COUNT(*) FROM feedback WHERE id > ? GROUP BY 2, 3",
            "audit_events": "SELECT MAX(id), '', 1, COUNT(*) FROM audit_events WHERE id > ? HAVING COUNT(*) > 0",
            # by the kind of the answer each replacing row ends (the person's own, or the system's skip)
            "feedback_replacing": (
                "SELECT MAX(r.id), COALESCE(o.kind, ''), 1, COUNT(o.id) FROM feedback r LEFT JOIN feedback o "
                "ON r.replaces IS NOT NULL AND o.prediction_id = r.prediction_id AND o.request_id = r.replaces "
                "AND o.operator IN (r.operator, 'system') AND o.id < r.id WHERE r.id > ? GROUP BY 2 "
                "HAVING COUNT(*) > 0"
            ),
        }
        with self._tally_lock:
            result: dict[str, dict[tuple[str, int], int]] = {}
            for table, sql in sources.items():
                last, counts = self._tallies.get(table, (0, {}))
                counts = dict(counts)
                newest = last
                for top, group, flag, n in conn.execute(sql, (last,)).fetchall():
                    counts[(str(group), int(flag))] = counts.get((str(group), int(flag)), 0) + int(n)
                    newest = max(newest, int(top))
                self._tallies[table] = (newest, counts)
                result[table] = counts
            return result


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, which stays the same however the file is written; None for an
    in-memory database."""
    if str(path) == ":memory:":
        return None
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _migrate(db: Database) -> int:
    return migrate(db)
