"""Reads and reports of :class:`storage.store.SQLiteStore`, each in one read snapshot: the learned state, a
prediction and its decision, the feedback and audit logs, alignment samples, and the row counts for metrics (the
append-only logs tallied incrementally)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

from sqlite_utils import Database

from npo.alignment import AlignmentSample
from npo.bandit import ThresholdBandit
from npo.loop import AppliedFeedback, LoopConfig
from npo.misalignment import KeyAlignment
from npo.monitor import MonitorState
from npo.retrain import LogisticModel
from npo.trust import OperatorTrust
from npo.types import Decision, FeedbackKind, Outcome, Prediction
from storage import codec
from storage.errors import StorageError
from storage.migrations import schema_version
from storage.statements import IS_EFFECTIVE
from storage.transaction import SQLiteTransaction


class StoreReads:
    """The read methods of :class:`storage.store.SQLiteStore`."""

    config: LoopConfig
    disruptive_actions: tuple[str, ...]
    _tally_lock: threading.Lock
    _tallies: dict[str, tuple[int, dict[tuple[str, int], int]]]
    read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _connection: Callable[[], Database]

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

    def alias_of(self, prediction_id: str) -> str | None:
        """The prediction ``prediction_id`` was found a duplicate of by fingerprint (None if it was not one)."""
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).alias_of(prediction_id)

    def decision(self, prediction_id: str) -> Decision | None:
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_decision(prediction_id)

    def outcome(self, prediction_id: str) -> Outcome | None:
        """The outcome recorded for ``prediction_id`` (the first one reported), None when there is none yet."""
        with self.read() as conn:
            return SQLiteTransaction(conn, self.config, self.disruptive_actions).get_outcome(prediction_id)

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
        excluding: Collection[str] = (),
    ) -> list[AlignmentSample]:
        """Alignment samples (key, y, at, trust weight, channel) in the order recorded, filtered like
        :func:`npo.alignment.window`: by key/channel, then ``at >= since``, then the last ``last_n``.

        By default only each person's current answer per recommendation counts (a replaced answer no longer
        does, as in :class:`npo.loop.InMemoryStore`); ``effective_only=False`` returns every applied event.
        ``excluding``: people whose answers are left out.
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
            clauses.append(IS_EFFECTIVE)
        if excluding:
            people = sorted(excluding)
            clauses.append(f"operator NOT IN ({','.join('?' * len(people))})")
            params.extend(people)
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
        so a dashboard or a metrics scrape costs the same on a day-old and on a year-old database. So are the
        outbox messages (never deleted); of them the pending and the failed ones, which stay few, are counted
        through their partial indexes (``outbox_due``, ``outbox_failed``) and the sent ones are the rest. The open
        recommendations are read from ``recommendations_open_count``, kept by triggers (m021). A state with no
        message has no ``outbox_<state>`` entry.
        """
        queries = {
            "outcomes": "SELECT 'outcomes', COUNT(*) FROM outcomes",
            "open": "SELECT 'recommendations_open', n FROM recommendations_open_count",
            "failed": "SELECT 'outbox_failed', COUNT(*) FROM outbox WHERE state = 'failed'",
            "pending": "SELECT 'outbox_pending', COUNT(*) FROM outbox WHERE state = 'pending'",
        }
        out: dict[str, int] = {}
        with self.read() as conn:
            tallies = self._log_tallies(conn)
            for sql in queries.values():
                out.update({str(name): int(n) for name, n in conn.execute(sql).fetchall()})
        outbox = sum(tallies["outbox"].values())
        out["outbox_sent"] = outbox - out["outbox_pending"] - out["outbox_failed"]
        for state in ("pending", "sent", "failed"):  # as GROUP BY state gave them: only the states present
            if not out[f"outbox_{state}"]:
                del out[f"outbox_{state}"]
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

    def _log_tallies(self, conn: sqlite3.Connection) -> dict[str, dict[tuple[str, int], int]]:
        """Counts of the append-only logs by (group, flag), and of the outbox messages, brought up to date with the
        rows added since the last call (inside the caller's read snapshot). The cache is per store and guarded by a
        lock."""
        sources = {
            "decisions": "SELECT MAX(seq), verdict, audited, COUNT(*) FROM decisions WHERE seq > ? GROUP BY 2, 3",
            "feedback": "SELECT MAX(id), kind, audit_m IS NOT NULL, COUNT(*) FROM feedback WHERE id > ? GROUP BY 2, 3",
            "audit_events": "SELECT MAX(id), '', 1, COUNT(*) FROM audit_events WHERE id > ? HAVING COUNT(*) > 0",
            # every message ever queued: outbox rows change state but are never deleted
            "outbox": "SELECT MAX(id), '', 1, COUNT(*) FROM outbox WHERE id > ? HAVING COUNT(*) > 0",
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
