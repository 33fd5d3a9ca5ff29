"""``SQLiteTransaction``: one ``BEGIN IMMEDIATE`` transaction of :class:`storage.store.SQLiteStore`, made of one
mixin per concern — ``storage/tx_decisions.py`` (predictions and decisions), ``tx_batches.py`` (batches),
``tx_learning.py`` (keys, bandit, trust), ``tx_feedback.py`` (feedback and outcomes), ``tx_monitor.py`` (models,
monitor, proposals) — over ``tx_base.py`` (the state they share and the small writes: audit line, outbox message,
job claim, request id). This module holds its life cycle: the state it starts with, the raw connection, and what
is kept for the connection's next transaction after a commit or a rollback.

The mixins cost nothing per call: their methods are the class's own, found once through the method cache."""

from __future__ import annotations

import sqlite3

from npo.loop import LoopConfig
from npo.policy import DEFAULT_STALE_AFTER_SECONDS
from storage.statements import statements_for
from storage.tx_base import MISSING, Snapshot, SnapshotHolder
from storage.tx_batches import TxBatches
from storage.tx_feedback import TxFeedback
from storage.tx_learning import TxLearning
from storage.tx_monitor import TxMonitor


class SQLiteTransaction(TxBatches, TxFeedback, TxLearning, TxMonitor):
    """One ``BEGIN IMMEDIATE`` transaction: implements :class:`npo.loop.LoopTransaction` plus the writes the bot
    needs to make atomically with a loop step (outbox, job claims, monitor state, model versions).

    Use only inside ``with store.transaction() as tx:`` on the thread that opened it.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: LoopConfig,
        disruptive_actions: tuple[str, ...],
        holder: SnapshotHolder | None = None,
        cursor: sqlite3.Cursor | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_SECONDS,
    ) -> None:
        # Each attribute is declared, and explained, in storage.tx_base.TxBase.
        self._c = conn
        self._cur = conn.cursor() if cursor is None else cursor
        self._holder = holder
        self._data_version = None
        self._clean = True
        self._stored_keys = {}
        self._stored_trust = {}
        self._arm_ids = None
        self._next_id = None
        self._adopted = None
        self._config = config
        self._disruptive = disruptive_actions
        self._stale_after_s = stale_after_s
        self._sql = statements_for(config.bandit.n_arms, len(disruptive_actions))
        self._keys = {}
        self._trust = {}
        self._bandit = None
        self._bandit_stored = None
        self._model = MISSING
        self._effective = {}
        self._decisions = {}
        self._seen = {}
        self._outcome_known = {}
        self._channel_target = {}

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection (for reads the store does not wrap). Writes through it bypass the caches (this
        transaction's cached reads are then not kept for the next one, and the arms' row ids are read again)."""
        self._clean = False
        self._arm_ids = None
        self._next_id = None  # a raw write may take the next audit id (an INSERT into the audit_log view)
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
        self._model = MISSING
        self._effective.clear()
        self._decisions.clear()
        self._seen.clear()
        self._outcome_known.clear()
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
                holder.snapshot = Snapshot(self, self._data_version, self._c.total_changes)
        elif not self._clean:
            holder.snapshot = None

    def _after_rollback(self) -> None:
        if self._holder is not None:
            self._holder.snapshot = None
