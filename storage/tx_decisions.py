"""Predictions and decisions in one :class:`~storage.transaction.SQLiteTransaction`: the ``decisions`` row
(the prediction and its decision, which is also the decision's audit line) with its recommendation and outbox
rows, the duplicate look-ups, and the guardrails' policy context of one prediction."""

from __future__ import annotations

import sqlite3

from npo.policy import PolicyContext
from npo.types import Decision, Prediction
from storage import codec
from storage.errors import StorageError
from storage.statements import INSERT_DECISION, INSERT_RECOMMENDATION, IS_EFFECTIVE, STARTS_COOLDOWN
from storage.tx_base import TxBase

HOUR_S = 3600.0


class TxDecisions(TxBase):
    """Predictions and decisions, one at a time (``npo.loop.decide``)."""

    def find_duplicate(self, prediction: Prediction, window_s: float) -> Decision | None:
        earlier = self.get_decision(prediction.id)
        if earlier is not None:
            return earlier
        alias = self.alias_of(prediction.id)  # found a duplicate by fingerprint before: still that prediction
        if alias is not None and (earlier := self.get_decision(alias)) is not None:
            return earlier
        row = self._one(
            "SELECT prediction_id, received_at FROM decisions WHERE fingerprint = ? ORDER BY seq DESC LIMIT 1",
            (prediction.fingerprint(),),
        )
        if row is not None and prediction.received_at - row[1] < window_s:
            return self.get_decision(row[0])
        return None

    def add_decision(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        """Store the prediction and its decision as one ``decisions`` row (which is also the decision's audit
        line); a surfaced or digest decision also gets its recommendation row and a pending outbox message
        (payload ``{"prediction_id": …}``), in this same transaction."""
        pid = prediction.id
        if decision.prediction_id != pid:
            raise StorageError("decisions", decision.prediction_id, f"decision is for another prediction than {pid!r}")
        row = codec.decision_row(self._next_audit_id(), prediction, decision, channel)
        try:
            self._c.execute(INSERT_DECISION, row)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError) as exc:
            table = "predictions" if "prediction_id" in str(exc) else "decisions"  # the prediction's id
            raise StorageError(table, pid, str(exc)) from exc
        self._decisions[pid] = decision
        self._channel_target[pid] = (channel, prediction.target)
        if decision.surfaced:
            self._write(
                "recommendations",
                pid,
                INSERT_RECOMMENDATION,
                (
                    pid,
                    decision.verdict.value,
                    channel,
                    decision.key,
                    prediction.target,
                    prediction.action,
                    prediction.cluster,
                    decision.decided_at,
                    decision.decided_at + (prediction.time_to_fault_s or 0.0),
                ),
            )
            kind = "recommendation" if decision.verdict.value == "surface" else "digest_item"
            self.enqueue(channel, kind, {"prediction_id": pid}, decision.decided_at, prediction_id=pid)

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
        ``disruptive_actions``, not stale: predicted fault time ``due_at`` after now − ``stale_after_s``, not turned
        down: :data:`~storage.statements.COUNTS_TOWARD_BLAST_RADIUS`) in the prediction's cluster; the last
        *effective* override of its key and of its target that starts a cooldown
        (:data:`~storage.statements.STARTS_COOLDOWN`); recommendations surfaced (not digested) in ``channel`` after
        now − 1 h — those stamped later than ``now`` included: another process that read its clock after this one
        but took the write lock first, or this host's clock stepped back, must not make room under the cap.
        """
        cluster = prediction.cluster
        active: dict[str, int] = {}
        if self._disruptive:
            since = now - self._stale_after_s
            active[cluster] = int(self._one(self._sql.open_disruptive, (cluster, *self._disruptive, since))[0])
        overrides: dict[str, float] = {}
        by_key = self._one(
            f"SELECT MAX(f.at) FROM feedback f WHERE f.key = ? AND {STARTS_COOLDOWN} AND {IS_EFFECTIVE}",
            (key,),
        )[0]
        if by_key is not None:
            overrides[f"key:{key}"] = by_key
        by_target = self._one(
            f"SELECT MAX(f.at) FROM feedback f WHERE f.target = ? AND {STARTS_COOLDOWN} AND {IS_EFFECTIVE}",
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
