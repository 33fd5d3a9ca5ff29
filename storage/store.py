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
nothing else has written in between (see :class:`storage.tx_base.Snapshot`).

Idempotency rules (see ``storage/README.md``): a prediction id is stored once (and the loop treats a same
fingerprint within the dedupe window as a duplicate); a feedback request id is stored once per person and
recommendation (UNIQUE index ``feedback_answers``); a person has at most one *effective* answer per
recommendation, their newest there (the ``effective_answers`` view) — a second answer must name the first in
``replaces`` (a trigger refuses it otherwise) and replaces it in the learning state, while both rows stay in the
append-only ``feedback`` log and in the ``audit_log`` view; an outcome per prediction is stored once (the first
wins); a job claim per (job, period) once.

The modules: this one holds :class:`SQLiteStore` (connections, transactions, batch decisions, job claims, health)
and the transaction scope; ``storage/transaction.py`` :class:`SQLiteTransaction`, made of the mixins of
``storage/tx_*.py`` (one per concern) over the SQL text of ``storage/statements.py``; ``storage/store_outbox.py``
and ``storage/store_reads.py`` the store's outbox bookkeeping and its reads. Every name other code imports from
here still is here.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from npo.loop import DecideResult, LoopConfig, decide_batch
from npo.policy import DEFAULT_DISRUPTIVE_ACTIONS, DEFAULT_STALE_AFTER_SECONDS, Policy, name_key
from npo.types import Prediction
from storage.connection import DEFAULT_BUSY_TIMEOUT_S, Synchronous, connect, connect_readonly
from storage.errors import StorageBusy, StorageError, is_locked
from storage.migrations import (
    LATEST_SCHEMA_VERSION,
    MIGRATION_LOCK_WAIT_S,
    migrate,
    newer_schema_message,
    schema_version,
)
from storage.store_outbox import OutboxItem, OutboxState, StoreOutbox
from storage.store_reads import StoreReads
from storage.transaction import SQLiteTransaction
from storage.tx_base import Snapshot
from storage.tx_decisions import HOUR_S

__all__ = ["HOUR_S", "OutboxItem", "OutboxState", "SQLiteStore", "SQLiteTransaction"]


#: How long :meth:`SQLiteStore.close` waits for a write transaction still running on another thread.
CLOSE_WAIT_S = 10.0


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
            if store._closed:  # closed while this thread waited for the lock: its connection is gone
                raise StorageError("connection", str(store.path), "the store is closed")
            store._begin_immediate(cursor)
        except BaseException:
            store._write_lock.release()
            raise
        tx = SQLiteTransaction(conn, store.config, store.disruptive_actions, local, cursor, store.stale_after_s)
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
    snapshot: Snapshot | None = None  # see storage.tx_base.Snapshot


class SQLiteStore(StoreOutbox, StoreReads):
    """The loop's state in the SQLite file at ``path`` (created and migrated to the latest schema on open).

    ``config``: the loop configuration (its bandit thresholds must match the stored arms).
    ``disruptive_actions``: actions counted as open disruptive recommendations by the policy context (pass the
    policy's ``blast_radius.disruptive_actions``); ``stale_after_s``: seconds after its predicted fault time such
    a recommendation stops counting (pass the policy's ``blast_radius.stale_after_seconds``). ``synchronous``:
    ``"NORMAL"`` (survives process crashes) or ``"FULL"`` (also power loss). ``busy_timeout_s``: how long one
    ``BEGIN IMMEDIATE`` waits for another process's write lock; ``lock_retries``: how many more times it is tried
    (with exponential backoff) before :class:`StorageBusy`. ``migrate``: apply pending migrations on open
    (otherwise the schema must be current); ``migration_wait_s``: how long, in all, to wait for the write lock to
    migrate (another process upgrading a large file holds it for longer than one busy timeout). ``read_only``: open
    the existing file for reading only
    (:func:`storage.connection.connect_readonly`, never migrated): nothing is written, not even the journal mode,
    so a backup stays one file and a file the process may not write can be read; a write raises.

    Thread-safe: each thread gets its own connection (kept until :meth:`close` or the thread ends).

    The outbox bookkeeping (``claim_due``, ``mark_*``, …) is :class:`storage.store_outbox.StoreOutbox`'s, the reads
    and reports (``keys``, ``counts``, ``audit_entries``, …) :class:`storage.store_reads.StoreReads`'s.
    """

    def __init__(
        self,
        path: str | Path,
        config: LoopConfig | None = None,
        *,
        disruptive_actions: Iterable[str] = DEFAULT_DISRUPTIVE_ACTIONS,
        stale_after_s: float = DEFAULT_STALE_AFTER_SECONDS,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        lock_retries: int = 3,
        migrate: bool = True,
        read_only: bool = False,
        migration_wait_s: float = MIGRATION_LOCK_WAIT_S,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.config = config or LoopConfig()
        # compared as the policy compares them (npo.policy.name_key = SQLite's lower(); the index is on it)
        self.disruptive_actions = tuple(dict.fromkeys(name_key(a) for a in disruptive_actions))
        self.stale_after_s = float(stale_after_s)
        self.synchronous: Synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.lock_retries = lock_retries
        self._local = _Local()
        self._write_lock = threading.RLock()  # reentrant: see try_hold_writes
        self._registry_lock = threading.Lock()
        self._open: list[tuple[weakref.ref[threading.Thread], Database]] = []
        self._closed = False
        self._tally_lock = threading.Lock()
        self._tallies: dict[str, tuple[int, dict[tuple[str, int], int]]] = {}
        db = self._connection()
        self._file = _file_identity(self.path)  # see health(): the file this store has open
        version = _migrate(db, migration_wait_s) if migrate and not read_only else schema_version(db)
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
            if self.read_only:
                db = connect_readonly(self.path, busy_timeout_s=self.busy_timeout_s, check_same_thread=False)
            else:
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

    def close(self, wait_s: float = CLOSE_WAIT_S) -> bool:
        """Close every connection this store opened; True when closed. Call when no thread should use the store
        any more: from then on a transaction or read raises :class:`StorageError` ("the store is closed").

        A write transaction still running on another thread (a large batch when a forced stop cancelled the request
        that started it) is waited for, up to ``wait_s``, so it commits or rolls back first: closing a connection
        while another thread runs a statement on it is undefined in SQLite's Python binding (the process could
        crash). When it outlasts ``wait_s`` the connections are left open for the process's exit to end (SQLite
        rolls an unfinished transaction back at the next open), and False is returned."""
        if not self._write_lock.acquire(timeout=max(0.0, wait_s)):
            self._closed = True
            return False
        try:
            self._closed = True  # a transaction waiting for the lock now finds the store closed
            with self._registry_lock:
                for _, db in self._open:
                    db.close()
                self._open = []
        finally:
            self._write_lock.release()
        return True

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
                if not is_locked(exc):
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
    def try_hold_writes(self) -> bool:
        """Take this process's write lock for the calling thread if no other thread holds it, without waiting:
        True when taken, and until :meth:`release_writes` this thread's transactions start without waiting for
        another thread's (one in progress elsewhere, a large batch, would hold a caller up until it commits).
        For a thread that must not block, the event loop; another process's write lock is not covered."""
        return self._write_lock.acquire(blocking=False)

    def release_writes(self) -> None:
        """Give back the write lock a :meth:`try_hold_writes` that returned True took."""
        self._write_lock.release()

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
        self,
        predictions: Iterable[Prediction],
        *,
        policy: Policy,
        rng: np.random.Generator,
        now: float,
        refuse_conflicts: bool = False,
    ) -> list[DecideResult]:
        """Decide and persist many predictions in one transaction (one commit), in order, with
        :func:`npo.loop.decide_batch`: the decisions :func:`npo.loop.decide` would make one by one (the bandit's
        τ draws come from one vectorised draw, so the random stream differs), with the state read once and each
        table written once. All or nothing: an error rolls back the whole batch — with ``refuse_conflicts``, also
        :class:`~npo.loop.ConflictingPrediction` (an id sent again with another body)."""
        with self.transaction() as tx:
            return decide_batch(
                tx, predictions, config=self.config, policy=policy, rng=rng, now=now, refuse_conflicts=refuse_conflicts
            )

    # -- job claims and request ids ------------------------------------------------------------------------
    def claim_job(
        self, job: str, period: str, *, now: float | None = None, owner: str = "", stale_after_s: float | None = None
    ) -> bool:
        """Claim scheduled ``job`` for ``period`` (e.g. ``"weekly_summary", "2025-W13"``): True exactly once — or
        again once an unfinished claim is ``stale_after_s`` old (:meth:`SQLiteTransaction.claim_job`)."""
        with self.transaction() as tx:
            return tx.claim_job(
                job, period, now=time.time() if now is None else now, owner=owner, stale_after_s=stale_after_s
            )

    def claim_request(self, request_id: str, kind: str, at: float) -> bool:
        """True the first time ``request_id`` is seen; False for a replay or retry."""
        with self.transaction() as tx:
            return tx.claim_request(request_id, kind, at)

    # -- health --------------------------------------------------------------------------------------------
    def health(self, *, writable: bool = True) -> int:
        """What ``GET /healthz`` checks; returns the pending outbox messages. Costs the same on a year of history
        as on a day's: a look at the files and an index search of the pending messages (the backlog, not the
        history).

        Raises :class:`StorageError` saying what is wrong when the file at ``path`` is no longer the one this store
        opened — deleted or replaced while the process runs: its connections keep working on the old file, and
        everything written from then on is gone at the next restart — when the database cannot be read
        (a malformed page, an I/O error), or, with ``writable`` (and a store not opened read-only), when this
        process cannot write it (a read-only mount, a file owned by another user): SQLite then opens it read-only
        and refuses every write, though every read works."""
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
            unwritable = _unwritable(self.path) if writable and not self.read_only else None
            if unwritable is not None:
                raise StorageError(
                    "database",
                    str(self.path),
                    f"{unwritable} cannot be written by this process (a read-only file system, or a file owned by "
                    "another user?): every write is refused; make it writable and restart the bot",
                )
        try:
            with self.read() as conn:
                return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])
        except sqlite3.Error as exc:
            raise StorageError("database", str(self.path), f"cannot be read: {exc}") from exc


def _unwritable(path: Path) -> str | None:
    """The first of the database's files (the file, its ``-wal`` and ``-shm``, or the folder a missing one is
    created in) this process may not write, as SQLite would find on opening it; None when all may be written."""
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        if os.path.exists(name):
            if not os.access(name, os.W_OK):
                return f"the file {name}"
        elif not os.access(os.path.dirname(os.path.abspath(name)), os.W_OK | os.X_OK):
            return f"the folder of {name}"
    return None


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, which stays the same however the file is written; None for an
    in-memory database."""
    if str(path) == ":memory:":
        return None
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _migrate(db: Database, lock_wait_s: float) -> int:
    return migrate(db, lock_wait_s=lock_wait_s)
