"""The outbox's bookkeeping on :class:`storage.store.SQLiteStore`: enqueue a message, claim due ones (with a
lease), record each delivery attempt's result (sent, retry, deferred, failed) — each in a write transaction of
its own — and list the outbox. The delivery side's plain look-ups over a connection are ``storage/outbox.py``.

A post the database refuses to record as sent (locked for longer than the busy timeout) is noted in a small SQLite
file of its own next to the database (:meth:`StoreOutbox.keep_sent`, the database's name with ``-sent``), which
:meth:`StoreOutbox.claim_due` writes into the database before it claims anything, in this process or the next one:
a post Slack has is never claimed again because its result was refused and the process then stopped."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from storage.errors import LeaseLost, StorageError
from storage.outbox import REQUEUE_AUDIT_KIND, FailedMessage, plan_requeue, requeue
from storage.transaction import SQLiteTransaction

OutboxState = Literal["pending", "sent", "failed"]
KEPT_SENT_SUFFIX = "-sent"  # the file of posts the database refused to record: the database's name and this
# A message whose try may have reached Slack without its answer: the payload's ``unanswered_since`` (Unix seconds,
# the earliest such try; no earlier post of it can exist). The worker looks for that post before posting again.
UNANSWERED_KEY = "unanswered_since"
# The payload with ``unanswered_since`` set to the SQL expression ``{}``, unless it has one already.
_UNANSWERED = f"json_set(payload, '$.{UNANSWERED_KEY}', COALESCE(json_extract(payload, '$.{UNANSWERED_KEY}'), {{}}))"


def _unanswered(payload: Any, since: float) -> Any:
    """``payload`` (a claimed row's) as :data:`_UNANSWERED` with ``since`` makes it in the database."""
    if isinstance(payload, dict):
        payload.setdefault(UNANSWERED_KEY, since)
    return payload


def kept_sent_path(path: Path) -> Path:
    """The file next to the database at ``path`` where :meth:`StoreOutbox.keep_sent` notes refused results."""
    return path.with_name(path.name + KEPT_SENT_SUFFIX)


def _open_kept(path: Path, timeout_s: float) -> sqlite3.Connection:
    """The kept-results file (created when missing; a rollback journal, ``synchronous=FULL``: a note survives a
    crash and a power loss). Only ever written in short transactions, so its lock is not held for long."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS sent (note INTEGER PRIMARY KEY AUTOINCREMENT, outbox_id INTEGER NOT NULL, "
        "attempt INTEGER NOT NULL, created_at REAL NOT NULL, channel TEXT NOT NULL, ts TEXT NOT NULL, "
        "sent_at REAL NOT NULL)"
    )
    return conn


def _mark_sent_rows(
    c: sqlite3.Connection,
    sent: Sequence[tuple[int, int | None]],
    channel: str,
    ts: str,
    sent_at: float,
    created_at: float | None = None,
) -> int:
    """Mark ``sent`` ((outbox id, lease attempt or None) each) as posted as (``channel``, ``ts``) on ``c``, inside
    the caller's write transaction; returns how many were marked (not those whose lease another worker took).
    ``created_at``: only a message enqueued then (a note of :meth:`StoreOutbox.keep_sent` names no other database's
    message, should the file be replaced)."""
    marked = [
        (outbox_id,)
        for outbox_id, attempt in sent
        if c.execute(
            "UPDATE outbox SET state = 'sent', channel = ?, message_ts = ?, sent_at = ?, last_error = NULL "
            "WHERE id = ? AND state = 'pending' AND (? IS NULL OR attempts = ?) AND (? IS NULL OR created_at = ?)",
            (channel, ts, sent_at, outbox_id, attempt, attempt, created_at, created_at),
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


class StoreOutbox:
    """The outbox methods of :class:`storage.store.SQLiteStore`."""

    transaction: Callable[[], AbstractContextManager[SQLiteTransaction]]
    read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    path: Path
    busy_timeout_s: float

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
        message is delivered later (at least once, never lost). A claimed message's ``last_error`` is cleared in the
        database (the item returned still carries it): it is in flight, not waiting for another try, so newer posts
        do not wait behind it (:meth:`oldest_pending`) until its lease ends — a minute when its worker was killed.
        A message whose last claim left no result (tried, no error: its worker died, maybe with a post in flight)
        gets ``unanswered_since`` in its payload (its ``created_at``, unless it has one already), as
        :meth:`mark_retry` gives one whose answer was lost: it may be in Slack already. Posts :meth:`keep_sent` noted
        are recorded first, in the same transaction."""
        kept = kept_sent_path(self.path)
        with self.transaction() as tx:
            written = self._write_kept_sent(tx.connection, kept) if kept.exists() else 0
            rows = tx.connection.execute(
                "SELECT id, channel, kind, payload, prediction_id, attempts, next_attempt_at, created_at, last_error "
                "FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
            tx.connection.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = NULL, "
                f"payload = CASE WHEN attempts > 0 AND last_error IS NULL THEN {_UNANSWERED.format('created_at')} "
                "ELSE payload END WHERE id = ?",
                [(now + lease_s, r[0]) for r in rows],
            )
        if written:
            self._forget_kept_sent(kept, written)
        return [
            OutboxItem(
                id=r[0],
                channel=r[1],
                kind=r[2],
                payload=_unanswered(json.loads(r[3]), r[7]) if r[5] > 0 and r[8] is None else json.loads(r[3]),
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
            return _mark_sent_rows(tx.connection, sent, channel, ts, sent_at)

    def keep_sent(self, sent: Sequence[OutboxItem], channel: str, ts: str, *, at: float | None = None) -> None:
        """Note, outside the database, that the claimed messages ``sent`` (each under the lease its ``attempts``
        names) were posted as (``channel``, ``ts``): for a post Slack has whose :meth:`mark_sent` the database
        refused (locked, busy). The
        note is durable at once; :meth:`claim_due`, in this process or the next one on this file, records it in the
        database before claiming anything, so the messages are not posted again."""
        if not sent:
            return
        sent_at = time.time() if at is None else at
        conn = _open_kept(kept_sent_path(self.path), self.busy_timeout_s)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO sent (outbox_id, attempt, created_at, channel, ts, sent_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(item.id, item.attempts, item.created_at, channel, ts, sent_at) for item in sent],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _write_kept_sent(self, c: sqlite3.Connection, kept: Path) -> int:
        """Record the posts :meth:`keep_sent` noted in ``kept`` (inside the caller's write transaction on ``c``);
        returns the last note's number (0: none; never reused). Recording one again is harmless: it is no longer
        pending."""
        notes = _open_kept(kept, self.busy_timeout_s)
        try:
            rows = notes.execute(
                "SELECT note, outbox_id, attempt, created_at, channel, ts, sent_at FROM sent ORDER BY note"
            ).fetchall()
            last = 0
            for note, outbox_id, attempt, created_at, channel, ts, sent_at in rows:
                _mark_sent_rows(c, [(int(outbox_id), int(attempt))], str(channel), str(ts), sent_at, created_at)
                last = int(note)
            return last
        finally:
            notes.close()

    def _forget_kept_sent(self, kept: Path, last: int) -> None:
        """Drop the notes up to number ``last``, now in the database (a later note stays for the next claim)."""
        notes = _open_kept(kept, self.busy_timeout_s)
        try:
            notes.execute("DELETE FROM sent WHERE note <= ?", (last,))
        finally:
            notes.close()

    def mark_retry(
        self,
        outbox_id: int,
        next_attempt_at: float,
        error: str,
        unanswered_since: float | None = None,
        *,
        attempt: int | None = None,
    ) -> None:
        """Delivery failed temporarily: try again at ``next_attempt_at``. ``attempt``: the caller's lease.
        ``unanswered_since``: the try's answer was lost (a read timeout, a dropped connection), so the message may be
        in Slack already; kept in its payload (the earliest such time), for the next try to look for it first."""
        self._outbox_update(
            outbox_id,
            "UPDATE outbox SET next_attempt_at = ?, last_error = ?, "
            f"payload = CASE WHEN ? IS NULL THEN payload ELSE {_UNANSWERED.format('?')} END "
            "WHERE id = ? AND state = 'pending'",
            (next_attempt_at, error, unanswered_since, unanswered_since, outbox_id),
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

    def mark_failed(self, outbox_id: int, error: str, *, attempt: int | None = None, at: float | None = None) -> None:
        """Delivery failed for good (e.g. ``channel_not_found``): no more attempts; a recommendation's post (its own
        message, or its line in a digest) makes its recommendation ``failed``. ``attempt``: the caller's lease.
        ``next_attempt_at`` keeps when it failed (``at``, default now): ``npo-bot db requeue --since``."""
        failed_at = time.time() if at is None else at
        with self.transaction() as tx:
            self._outbox_update(
                outbox_id,
                "UPDATE outbox SET state = 'failed', last_error = ?, next_attempt_at = ? WHERE id = ? "
                "AND state = 'pending'",
                (error, failed_at, outbox_id),
                attempt,
            )
            tx.connection.execute(
                "UPDATE recommendations SET state = 'failed' WHERE state = 'pending' AND prediction_id = "
                "(SELECT prediction_id FROM outbox WHERE id = ? AND kind IN ('recommendation', 'digest_item'))",
                (outbox_id,),
            )

    def requeue_failed(
        self,
        now: float,
        *,
        since: float | None = None,
        codes: Sequence[str] = (),
        overdue: bool = False,
        dry_run: bool = False,
    ) -> list[FailedMessage]:
        """``npo-bot db requeue``: put the failed messages that failed at or after ``since`` and whose last error names
        one of ``codes`` back to pending, due at ``now``, with a fresh retry budget, in one write transaction; each
        one requeued leaves an audit line (``outbox_requeued``: its kind, channel, prediction, attempts, when it
        failed and its last error). Those that must stay failed are left so (:func:`storage.outbox.plan_requeue`
        says which and why; ``overdue``: also recommendations whose predicted fault time has passed). Returns the
        plan: what was (``dry_run``: would be) requeued, and what was skipped."""
        if dry_run:
            with self.read() as conn:
                return plan_requeue(conn, since, codes, now=now, overdue=overdue)
        with self.transaction() as tx:
            planned = plan_requeue(tx.connection, since, codes, now=now, overdue=overdue)
            chosen = [m for m in planned if not m.skip]
            requeue(tx.connection, [m.id for m in chosen], now)
            for m in chosen:
                detail = {
                    "kind": m.kind,
                    "channel": m.channel,
                    "prediction_id": m.prediction_id,
                    "attempts": m.attempts,
                    "failed_at": m.failed_at,
                    "last_error": m.last_error,
                }
                tx.audit(REQUEUE_AUDIT_KIND, str(m.id), detail, now)
        return planned

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
