"""What every part of :class:`storage.transaction.SQLiteTransaction` shares. :class:`TxBase` declares the
transaction's state (its connection, its cursor, the reads it caches) for the mixins of ``storage/tx_*.py`` and
holds the small writes they all use (a checked write, the next audit id, an outbox message, a job claim, a request
id, an audit line); :class:`Snapshot` is that state kept, after a clean commit, for the connection's next
transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from npo.bandit import ThresholdBandit
from npo.loop import AppliedFeedback, LoopConfig
from npo.misalignment import KeyAlignment
from npo.trust import OperatorTrust
from npo.types import Decision
from storage import codec
from storage.errors import StorageError
from storage.migrations import NEXT_AUDIT_ID
from storage.statements import INSERT_AUDIT, INSERT_OUTBOX, Statements

MISSING: Any = object()  # a cached read not made yet (None is a value read: nothing stored)
_SNAPSHOT_LIMIT = 4096  # entries per cache a snapshot keeps (a larger one is dropped, not trimmed)


_CLAIM = "INSERT INTO job_claims (job, period, claimed_at, owner) VALUES (?,?,?,?) ON CONFLICT(job, period) DO NOTHING"
_CLAIM_OR_TAKE_OVER = (
    "INSERT INTO job_claims (job, period, claimed_at, owner) VALUES (?,?,?,?) ON CONFLICT(job, period) "
    "DO UPDATE SET claimed_at = excluded.claimed_at, owner = excluded.owner "
    "WHERE job_claims.done_at IS NULL AND job_claims.claimed_at <= ?"
)


class Snapshot:
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

    def __init__(self, tx: TxBase, data_version: int, changes: int) -> None:
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

    def renew(self, tx: TxBase, changes: int) -> None:
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


class SnapshotHolder(Protocol):
    snapshot: Snapshot | None


class TxBase:
    """The state of one :class:`~storage.transaction.SQLiteTransaction` (set by its ``__init__``), declared here
    for the mixins that make up the class, and the writes every one of them uses."""

    _c: sqlite3.Connection
    # One cursor for the statements whose results are read at once (the hot path): ``conn.execute`` makes a
    # new cursor per statement. Never hand a result of it on: the next statement resets it.
    _cur: sqlite3.Cursor
    _holder: SnapshotHolder | None  # where the connection's snapshot is kept (None: this transaction uses none)
    _data_version: int | None  # as seen by this transaction (prefetch_feedback reads it)
    _clean: bool  # False once the raw connection was handed out or a savepoint rolled back
    _stored_keys: dict[str, int]  # key → its learning_state row id, for rows known to exist
    _stored_trust: dict[str, int]  # operator → its learning_state row id, likewise
    _arm_ids: tuple[int, ...] | None  # the arms' learning_state row ids, when read
    _next_id: int | None  # the next id of the audit sequence, when known (see add_feedback)
    _adopted: Snapshot | None  # the snapshot this transaction continues, if any
    _config: LoopConfig
    _disruptive: tuple[str, ...]  # the store's disruptive actions
    _stale_after_s: float  # seconds after its due_at an open recommendation stops counting toward the blast radius
    _sql: Statements  # the statements of this configuration
    _keys: dict[str, KeyAlignment]
    _trust: dict[str, OperatorTrust | None]
    _bandit: ThresholdBandit | None
    _bandit_stored: ThresholdBandit | None  # the arms as stored
    _model: Any  # the promoted model (None: none), or MISSING before it is read
    _effective: dict[tuple[str, str], AppliedFeedback | None]
    _decisions: dict[str, Decision | None]
    # (prediction id, operator, request id) of answers known to be stored (True) or not (False)
    _seen: dict[tuple[str, str, str], bool]
    _outcome_known: dict[str, bool]  # prediction id → whether its outcome is recorded (read with the prefetch)
    _channel_target: dict[str, tuple[str, str]]  # prediction id → (decision channel, target)

    # -- helpers -------------------------------------------------------------------------------------------
    def _write(self, table: str, record: str, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        """Run one write; its cursor (rowcount, lastrowid, RETURNING row) is valid until the next statement."""
        try:
            return self._cur.execute(sql, params)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            raise StorageError(table, record, str(exc)) from exc

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        return self._cur.execute(sql, params).fetchone()

    def _next_audit_id(self) -> int:
        """The next id of the shared audit sequence (see storage/migrations.py); the caller is about to use it."""
        self._next_id = None
        return int(self._c.execute(NEXT_AUDIT_ID).fetchone()[0])

    # -- outbox, job claims, request ids, audit lines ------------------------------------------------------
    def enqueue(
        self, channel: str, kind: str, payload: Mapping[str, Any], now: float, *, prediction_id: str | None = None
    ) -> int:
        """Add a pending outbox message (due at ``now``); returns its id."""
        cur = self._write(
            "outbox",
            prediction_id or kind,
            INSERT_OUTBOX,
            (prediction_id, channel, kind, codec.dumps(dict(payload)), now, now),
        )
        return int(cur.lastrowid or 0)

    def claim_job(
        self, job: str, period: str, *, now: float, owner: str = "", stale_after_s: float | None = None
    ) -> bool:
        """True exactly once per (job, period) across every process sharing the file — or, with ``stale_after_s``,
        again when the claim's run never finished (``done_at`` unset: its process died mid-run) and it was taken
        at least ``stale_after_s`` before ``now``: the slot is taken over rather than lost."""
        params: tuple[object, ...] = (job, period, now, owner)
        if stale_after_s is None:
            sql = _CLAIM
        else:
            sql, params = _CLAIM_OR_TAKE_OVER, (*params, now - stale_after_s)
        return self._write("job_claims", f"{job}/{period}", sql, params).rowcount == 1

    def claim_request(self, request_id: str, kind: str, at: float) -> bool:
        """True the first time ``request_id`` is seen (Slack event ids, alert button clicks); False on a replay."""
        cur = self._write(
            "processed_requests",
            request_id,
            "INSERT INTO processed_requests (request_id, kind, at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            (request_id, kind, at),
        )
        return cur.rowcount == 1

    def remember_alias(self, kind: str, subject: str, detail: Mapping[str, object]) -> None:
        """A ``duplicate_prediction`` line whose id is not the first's: remember the id as an alias of the first
        (``prediction_aliases``), so the same id sent again after the dedupe window, or its outcome, finds it."""
        first = detail.get("first")
        if kind == "duplicate_prediction" and isinstance(first, str) and first != subject:
            self._c.execute(
                "INSERT INTO prediction_aliases (alias_id, prediction_id) VALUES (?,?) ON CONFLICT DO NOTHING",
                (subject, first),
            )

    def unended_alerts(
        self, prediction_id: str, *, prefix: str, ended: str, excluding: str, episode_sep: str | None = None
    ) -> list[str]:
        """The ids starting with ``prefix`` (an alert sender's: ``am:``) of ``prediction_id`` and of the predictions
        found duplicates of it by fingerprint, but ``excluding``, whose end was not recorded (no processed request
        ``ended`` + id): the alerts merged into the prediction that still fire. With ``episode_sep`` (``@``), an id
        is also ended by the end of one of its episodes (``id`` + ``episode_sep`` + …): an alert stored under its
        plain id, before episode ids, whose end is reported under its episode's id."""
        sep = episode_sep or ""
        past = sep[:-1] + chr(ord(sep[-1]) + 1) if sep else ""  # the first text after every ``id + sep + …``
        rows = self._c.execute(
            "SELECT id FROM (SELECT ? AS id UNION SELECT alias_id FROM prediction_aliases WHERE prediction_id = ?) "
            "WHERE substr(id, 1, length(?)) = ? AND id != ? "
            "AND NOT EXISTS (SELECT 1 FROM processed_requests WHERE request_id = ? || id) "
            "AND (? = '' OR NOT EXISTS (SELECT 1 FROM processed_requests "
            "WHERE request_id >= ? || id || ? AND request_id < ? || id || ?)) ORDER BY id",
            (prediction_id, prediction_id, prefix, prefix, excluding, ended, sep, ended, sep, ended, past),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def alias_of(self, prediction_id: str) -> str | None:
        """The prediction ``prediction_id`` was found a duplicate of by fingerprint (None if it was not)."""
        row = self._c.execute(
            "SELECT prediction_id FROM prediction_aliases WHERE alias_id = ?", (prediction_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def audit(self, kind: str, subject: str, detail: Mapping[str, object], at: float) -> None:
        self.remember_alias(kind, subject, detail)
        self._next_id = None
        self._write(
            "audit_log",
            subject,
            INSERT_AUDIT,
            (at, kind, subject, codec.dumps(detail if type(detail) is dict else dict(detail))),
        )
