"""Feedback and outcomes in one :class:`~storage.transaction.SQLiteTransaction`: everything
:func:`npo.loop.record_feedback` reads, in one query (or only the per-event part, when the connection's
:class:`~storage.tx_base.Snapshot` is still exact), the append-only feedback row (which is also the click's audit
line), outcomes and closed recommendations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from npo.bandit import ThresholdBandit
from npo.loop import SYSTEM_OPERATOR, AppliedFeedback
from npo.misalignment import KeyAlignment
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import codec
from storage.tx_base import MISSING, TxBase

_KIND_TEXT: Mapping[FeedbackKind, str] = MappingProxyType({k: k.value for k in FeedbackKind})
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


class TxFeedback(TxBase):
    """Feedback (``prefetch_feedback``, ``has_request``, ``effective_feedback``, ``add_feedback``,
    ``feedback_for``) and outcomes (``add_outcome``, ``close_recommendation``, ``get_outcome``)."""

    def prefetch_feedback(self, prediction_id: str, operator: str, request_id: str) -> None:
        """Load everything :func:`npo.loop.record_feedback` reads, in one query, into this transaction's caches:
        whether ``request_id`` is stored, the decision (with its channel and target), its key's state, the
        operator's trust, the operator's and the system's effective answers (a second query, only when there
        is one), and the bandit. Entries already cached (this transaction's own writes) are kept. A bandit that
        does not match the configuration is left for :meth:`get_bandit` to report.

        When this is the transaction's first read and the connection's previous feedback transaction left a
        :class:`Snapshot` that is still exact (nothing else committed since: same ``data_version``, same
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
                self._seen[(prediction_id, operator, request_id)] = bool(r[0] & 1)
                self._outcome_known.setdefault(prediction_id, bool(r[0] & 2))
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
        self._seen.setdefault((prediction_id, operator, request_id), bool(r[0] & 1))
        self._outcome_known.setdefault(prediction_id, bool(r[0] & 2))
        if r[1] is None:
            self._decisions.setdefault(prediction_id, None)
            return
        decision = self._decisions.get(prediction_id, MISSING)
        if decision is MISSING:
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
            applied.peer_credited,
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
        self._outcome_known[outcome.prediction_id] = True
        if cur.rowcount != 1:
            return False
        self._c.execute(
            "UPDATE recommendations SET state = 'resolved', resolved_at = ? WHERE prediction_id = ?",
            (outcome.at, outcome.prediction_id),
        )
        return True

    def has_outcome(self, prediction_id: str) -> bool:
        known = self._outcome_known.get(prediction_id)
        if known is None:
            known = self._one("SELECT 1 FROM outcomes WHERE prediction_id = ?", (prediction_id,)) is not None
            self._outcome_known[prediction_id] = known
        return known

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
