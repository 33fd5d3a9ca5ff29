"""Batches in one :class:`~storage.transaction.SQLiteTransaction` (:class:`npo.loop.BatchLoopTransaction`, for
:func:`npo.loop.decide_batch`): the store is read once per batch (``lookup_predictions``, ``get_keys``,
``policy_contexts``) and each table written once per run of decisions (``add_decisions``, then ``audit_many``)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from npo.misalignment import KeyAlignment
from npo.policy import PolicyContext, name_key
from npo.types import Decision, Prediction, Severity, Verdict
from storage import codec
from storage.errors import StorageError
from storage.statements import (
    COUNTS_TOWARD_BLAST_RADIUS,
    INSERT_DECISION,
    INSERT_OUTBOX,
    INSERT_RECOMMENDATION,
    IS_EFFECTIVE,
    STARTS_COOLDOWN,
)
from storage.tx_decisions import HOUR_S, TxDecisions

_VERDICT_TEXT: Mapping[Verdict, str] = MappingProxyType({v: v.value for v in Verdict})
_SEVERITY_TEXT: Mapping[Severity, str] = MappingProxyType({v: v.value for v in Severity})
_json_str: Callable[[str], str] = json.encoder.encode_basestring  # a JSON string literal, as codec.dumps writes it
_IN_CHUNK = 500  # values per IN (…) list: well under SQLite's limit on bound parameters
_EMPTY: Mapping[Any, Any] = MappingProxyType({})


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


class TxBatches(TxDecisions):
    """Batch reads and writes; a refused batch is replayed through :meth:`TxDecisions.add_decision` and
    :meth:`TxBase.audit`, one by one, so the :class:`StorageError` names the record."""

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
        aliases = dict(
            self._in_chunks(
                "SELECT alias_id, prediction_id FROM prediction_aliases WHERE alias_id IN ({marks})",
                [p.id for p in predictions if p.id not in decisions],
            )
        )
        for alias, first in aliases.items():  # an id found a duplicate by fingerprint before: that prediction's
            earlier = decisions.get(first) or self.get_decision(first)
            if earlier is not None:
                decisions[alias] = earlier
        latest = {
            r[0]: (r[1], r[2])
            for r in self._in_chunks(
                "SELECT fingerprint, prediction_id, received_at, MAX(seq) FROM decisions "
                "WHERE fingerprint IN ({marks}) GROUP BY fingerprint",
                [p.fingerprint() for p in predictions],
            )
        }
        return decisions, latest

    def get_predictions(self, prediction_ids: Sequence[str]) -> dict[str, Prediction]:
        """The stored predictions of ``prediction_ids`` (a batch's ids sent before: their bodies are compared)."""
        return {
            r[0]: codec.prediction_from_row(r)
            for r in self._in_chunks(
                f"SELECT {codec.PREDICTION_COLS} FROM decisions WHERE prediction_id IN ({{marks}})", prediction_ids
            )
        }

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
                    "SELECT r.cluster, COUNT(*) FROM recommendations r WHERE r.resolved_at IS NULL "
                    f"AND lower(r.action) IN ({','.join('?' * len(self._disruptive))}) AND r.due_at > ? "
                    f"AND r.cluster IN ({{marks}}) AND {COUNTS_TOWARD_BLAST_RADIUS} GROUP BY r.cluster",
                    [p.cluster for p in predictions],
                    *self._disruptive,
                    now - self._stale_after_s,
                )
            )
        overrides: dict[str, float] = {}
        for column, values in (("key", keys), ("target", [p.target for p in predictions])):
            rows = self._in_chunks(
                f"SELECT f.{column}, MAX(f.at) FROM feedback f WHERE {STARTS_COOLDOWN} "
                f"AND f.{column} IN ({{marks}}) AND {IS_EFFECTIVE} GROUP BY f.{column}",
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
                        at + (prediction.time_to_fault_s or 0.0),
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
            c.executemany(INSERT_DECISION, decisions)
            if recommendations:
                c.executemany(INSERT_RECOMMENDATION, recommendations)
                c.executemany(INSERT_OUTBOX, outbox)
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
        for kind, subject, detail, _at in entries:
            self.remember_alias(kind, subject, detail)
