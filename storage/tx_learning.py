"""The learning state in one :class:`~storage.transaction.SQLiteTransaction`: each key's m(k), the bandit's arms
and each operator's trust, read once per transaction (or taken from the connection's snapshot) and written by row
id when the row is known to exist."""

from __future__ import annotations

import sqlite3

from npo.bandit import ThresholdBandit
from npo.misalignment import KeyAlignment
from npo.trust import OperatorTrust
from storage import codec
from storage.errors import StorageError
from storage.tx_base import TxBase

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


class TxLearning(TxBase):
    """``get_key``/``put_key``, ``get_bandit``/``put_bandit``, ``get_trust``/``put_trust``."""

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
