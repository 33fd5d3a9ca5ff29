"""SQL for the meta-monitor, retraining, App Home and ``/npo why``: the jobs' small persistent state
(``job_state``), the feedback stream after a cursor, training rows, proposals, recent overrides and a key's
history. Plain functions over a ``sqlite3.Connection`` (``SQLiteStore.read()`` or a transaction's
``connection``); nothing here opens or commits a transaction.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from npo.alignment import AlignmentSample
from npo.types import Prediction
from storage import codec

_EFFECTIVE = codec.IS_EFFECTIVE
_PREDICTION = ", ".join(f"d.{c.strip()}" for c in codec.PREDICTION_COLS.split(","))


# -- job state ---------------------------------------------------------------------------------------------------
def get_job_state(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """The JSON object a job stored under ``name`` (empty when none)."""
    row = conn.execute("SELECT value FROM job_state WHERE name = ?", (name,)).fetchone()
    value = {} if row is None else json.loads(row[0])
    return value if isinstance(value, dict) else {}


def put_job_state(conn: sqlite3.Connection, name: str, value: dict[str, Any], at: float) -> None:
    conn.execute(
        "INSERT INTO job_state (name, value, updated_at) VALUES (?,?,?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (name, codec.dumps(value), at),
    )


# -- the feedback stream -----------------------------------------------------------------------------------------
def feedback_codes_after(
    conn: sqlite3.Connection, after_id: int, limit: int = 1_000_000, *, upto_id: int | None = None
) -> list[tuple[int, float, str, bool]]:
    """(feedback row id, y, operator, effective) of every applied answer after ``after_id`` (and at most
    ``upto_id``), in order; ``effective``: it is still its person's current answer (not replaced by a later click,
    nor, for a skip, by a click after it) — the answers L_align counts."""
    bound = "" if upto_id is None else " AND f.id <= ?"
    rows = conn.execute(
        f"SELECT f.id, f.y, f.operator, {_EFFECTIVE} FROM feedback f WHERE f.id > ?{bound} ORDER BY f.id LIMIT ?",
        (after_id, limit) if upto_id is None else (after_id, upto_id, limit),
    ).fetchall()
    return [(int(i), float(y), str(op), bool(e)) for i, y, op, e in rows]


def answers_replaced_since(conn: sqlite3.Connection, after_id: int, upto_id: int) -> bool:
    """Whether an answer recorded after ``upto_id`` replaces one recorded after ``after_id`` and at most ``upto_id``
    (a person who changed their answer, a click after a skip): read from the new rows only, each looking up the
    answer it names on its recommendation (the ``feedback_answers`` index)."""
    row = conn.execute(
        "SELECT 1 FROM feedback g JOIN feedback f ON f.prediction_id = g.prediction_id AND f.request_id = g.replaces "
        "WHERE g.id > ? AND g.replaces IS NOT NULL AND f.id > ? AND f.id <= ? LIMIT 1",
        (upto_id, after_id, upto_id),
    ).fetchone()
    return row is not None


def skipped_feedback_ids(conn: sqlite3.Connection, after_id: int) -> set[int]:
    """The row ids after ``after_id`` of the answers of kind ``skipped`` (nobody answered in time)."""
    rows = conn.execute("SELECT id FROM feedback WHERE id > ? AND kind = 'skipped'", (after_id,)).fetchall()
    return {int(i) for (i,) in rows}


def contradicted_by_outcomes(conn: sqlite3.Connection, min_outcomes: int) -> set[str]:
    """The people (never ``system``) whose effective answers with a known outcome number at least ``min_outcomes``
    and agree with it less than half the time (agreement 1 − |y − t|, t = 0 for a real fault and 1 for a false
    alarm; a neutral answer counts half), over all time. Read from the per-person tally ``outcome_agreement`` (schema
    m017, kept by triggers as answers and outcomes are written), so a run costs the same however long the history."""
    rows = conn.execute(
        "SELECT operator FROM outcome_agreement WHERE operator != 'system' AND answers >= ? "
        "AND agreement < answers / 2.0",
        (min_outcomes,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def monitor_window(
    conn: sqlite3.Connection,
    after_id: int,
    last_n: int,
    *,
    not_before: float = -math.inf,
    excluding: Collection[str] = (),
) -> tuple[list[AlignmentSample], int]:
    """The latest ``last_n`` effective answers recorded after feedback row ``after_id`` and at or after ``not_before``
    (Unix seconds) as alignment samples (key, y, at, trust weight, channel), oldest first — like
    ``SQLiteStore.alignment_samples(last_n=..., since=...)`` with only the answers newer than ``after_id``, and none
    by the people in ``excluding`` — and how many of them are skips (kind ``skipped``: nobody answered in time).

    Answers are read newest first by row id, and the read stops at the first one older than ``not_before`` (rows are
    written in time order), so a run costs the same however long the history behind the window: the time bound is
    not a condition SQLite would check on every older row (``feedback.at`` has no index)."""
    people = sorted(excluding)
    others = f" AND f.operator NOT IN ({','.join('?' * len(people))})" if people else ""
    cursor = conn.execute(
        f"SELECT f.key, f.y, f.at, f.weight, f.channel, f.kind FROM feedback f WHERE f.id > ? AND {_EFFECTIVE}"
        f"{others} ORDER BY f.id DESC LIMIT ?",
        (after_id, *people, last_n),
    )
    rows = []
    for row in cursor:
        if row[2] < not_before:
            break
        rows.append(row)
    cursor.close()
    samples = [AlignmentSample(r[0], r[1], r[2], min(1.0, r[3]), r[4]) for r in reversed(rows)]
    return samples, sum(1 for r in rows if r[5] == "skipped")


def last_feedback_id_before_last_proposal(conn: sqlite3.Connection) -> int | None:
    """The id of the newest feedback row recorded before the audit line ``retraining_proposed`` of the latest
    retraining proposal (0 when none), or None when there is no proposal or no such line. Exact whatever the rows'
    times: feedback rows and audit lines take their ids from one sequence (schema m003), and the run that opens a
    proposal writes that line in its transaction, after every answer it could read."""
    row = conn.execute(
        "SELECT (SELECT COALESCE(MAX(f.id), 0) FROM feedback f WHERE f.id < a.id) FROM audit_events a "
        "WHERE a.kind = 'retraining_proposed' AND a.subject = (SELECT CAST(MAX(id) AS TEXT) FROM retraining_proposals) "
        "ORDER BY a.id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else int(row[0])


def last_feedback_id_at(conn: sqlite3.Connection, at: float) -> int:
    """The id of the newest feedback row recorded at or before ``at`` (Unix seconds); 0 when none."""
    row = conn.execute("SELECT MAX(id) FROM feedback WHERE at <= ?", (at,)).fetchone()
    return int(row[0] or 0)


def training_rows(conn: sqlite3.Connection, limit: int) -> list[tuple[Prediction, float, float]]:
    """The latest ``limit`` effective answers as (prediction, y, trust weight), oldest first (time order)."""
    rows = conn.execute(
        f"SELECT {_PREDICTION}, f.y, f.weight FROM feedback f JOIN decisions d ON d.prediction_id = f.prediction_id "
        f"WHERE {_EFFECTIVE} ORDER BY f.id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [(codec.prediction_from_row(r[:10]), float(r[10]), float(r[11])) for r in reversed(rows)]


def max_model_version(conn: sqlite3.Connection) -> int:
    """The highest recorded model version, promoted or not (0 before any)."""
    row = conn.execute("SELECT MAX(version) FROM model_versions").fetchone()
    return int(row[0] or 0)


def key_states(conn: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[float, int]]:
    """m(k) and the update count n of each of ``keys`` that has a state."""
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    rows = conn.execute(f"SELECT key, m, n FROM key_alignment WHERE key IN ({marks})", keys).fetchall()
    return {str(k): (float(m), int(n)) for k, m, n in rows}


# -- proposals ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Proposal:
    """A retraining proposal. ``state``: open, approved, dismissed or expired (nobody answered it by
    ``expires_at``; then ``resolved_at`` is when it expired and ``resolved_by`` is None). ``expires_at`` is None for
    a proposal stored before proposals expired: its deadline is counted from ``opened_at``."""

    id: int
    opened_at: float
    reason: str
    state: str
    resolved_at: float | None
    resolved_by: str | None
    model_version: int | None
    expires_at: float | None = None


_PROPOSAL_COLS = "id, opened_at, reason, state, resolved_at, resolved_by, model_version, expires_at"


def _proposal(row: Any) -> Proposal:
    return Proposal(
        int(row[0]),
        float(row[1]),
        str(row[2]),
        str(row[3]),
        row[4],
        row[5],
        row[6],
        None if row[7] is None else float(row[7]),
    )


def get_proposal(conn: sqlite3.Connection, proposal_id: int) -> Proposal | None:
    row = conn.execute(f"SELECT {_PROPOSAL_COLS} FROM retraining_proposals WHERE id = ?", (proposal_id,)).fetchone()
    return None if row is None else _proposal(row)


def open_proposal(conn: sqlite3.Connection) -> Proposal | None:
    """The latest proposal still waiting for Approve / Dismiss, if any."""
    row = conn.execute(
        f"SELECT {_PROPOSAL_COLS} FROM retraining_proposals WHERE state = 'open' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else _proposal(row)


def _latest_alert(conn: sqlite3.Connection, proposal: Proposal, kind: str, columns: str, where: str = "") -> Any:
    """``columns`` of the latest outbox row (``kind``) carrying ``proposal``'s alert (and matching ``where``), or
    None. An alert names its proposal in its payload (``proposal_id``); one queued before alerts did is recognised by
    its time, which is the proposal's: the monitor queues it in the transaction that opens the proposal."""
    return conn.execute(
        f"SELECT {columns} FROM outbox WHERE prediction_id IS NULL AND kind = ? {where}"
        "AND (json_extract(payload, '$.proposal_id') = ? "
        "OR (json_extract(payload, '$.proposal_id') IS NULL AND created_at = ?)) ORDER BY id DESC LIMIT 1",
        (kind, proposal.id, proposal.opened_at),
    ).fetchone()


@dataclass(frozen=True, slots=True)
class UndeliveredAlert:
    """A proposal's alert whose delivery failed for good: its outbox row, what it was to post, and why it failed."""

    outbox_id: int
    payload: dict[str, Any]
    error: str


def undelivered_alert(conn: sqlite3.Connection, proposal: Proposal, kind: str) -> UndeliveredAlert | None:
    """The alert of ``proposal`` (outbox ``kind``) when its latest delivery failed for good — the bot is not in
    the channel, the channel is gone — else None (delivered, or still being tried)."""
    row = _latest_alert(conn, proposal, kind, "id, payload, state, COALESCE(last_error, '')")
    if row is None or row[2] != "failed":
        return None
    return UndeliveredAlert(int(row[0]), json.loads(row[1]), str(row[3]))


def pending_alert(conn: sqlite3.Connection, proposal: Proposal, kind: str) -> tuple[int, dict[str, Any]] | None:
    """(outbox id, payload) of the alert of ``proposal`` (outbox ``kind``) while it still waits to be delivered (a
    Slack outage, a retry due later), else None."""
    row = _latest_alert(conn, proposal, kind, "id, payload", "AND state = 'pending' ")
    if row is None:
        return None
    payload = json.loads(row[1])
    return int(row[0]), payload if isinstance(payload, dict) else {}


def replace_pending_payload(conn: sqlite3.Connection, outbox_id: int, payload: dict[str, Any]) -> bool:
    """Replace what a message still waiting in the outbox will post. True when it was still waiting."""
    cur = conn.execute(
        "UPDATE outbox SET payload = ? WHERE id = ? AND state = 'pending'", (codec.dumps(payload), outbox_id)
    )
    return cur.rowcount == 1


@dataclass(frozen=True, slots=True)
class DeliveredAlert:
    """A proposal's alert as it was posted: where (``channel``, ``ts``) and what (its outbox ``payload``)."""

    channel: str
    ts: str
    payload: dict[str, Any]


def delivered_alert(conn: sqlite3.Connection, proposal: Proposal, kind: str) -> DeliveredAlert | None:
    """The latest posted alert of ``proposal`` (outbox ``kind``, recognised as :func:`undelivered_alert` does), or
    None when none was posted (still being tried, or failed for good)."""
    row = _latest_alert(
        conn, proposal, kind, "channel, message_ts, payload", "AND state = 'sent' AND message_ts IS NOT NULL "
    )
    if row is None:
        return None
    payload = json.loads(row[2])
    return DeliveredAlert(str(row[0]), str(row[1]), payload if isinstance(payload, dict) else {})


# -- App Home and /npo why -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OverrideLine:
    prediction_id: str
    operator: str
    at: float
    reason: str
    key: str
    fault_type: str
    target: str


def recent_overrides(conn: sqlite3.Connection, limit: int = 10) -> list[OverrideLine]:
    """The latest effective overrides with their reasons, newest first."""
    rows = conn.execute(
        "SELECT f.prediction_id, f.operator, f.at, COALESCE(f.reason, ''), f.key, d.fault_type, d.target "
        f"FROM feedback f JOIN decisions d ON d.prediction_id = f.prediction_id WHERE f.kind = 'override' "
        f"AND {_EFFECTIVE} ORDER BY f.id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [OverrideLine(str(r[0]), str(r[1]), float(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6])) for r in rows]


@dataclass(frozen=True, slots=True)
class KeyHistory:
    """What NPO knows about one scenario key: m(k), answers by kind, decisions by verdict, latest answers."""

    key: str
    m: float | None
    n: int
    answers: dict[str, int]
    verdicts: dict[str, int]
    latest: tuple[tuple[str, str, float, str], ...]  # (operator, kind, at, reason), newest first


_KEY_ANSWERS = "decisions d JOIN feedback f ON f.prediction_id = d.prediction_id WHERE d.key = ?1 AND f.key = ?1"


def key_history(conn: sqlite3.Connection, key: str, latest: int = 5) -> KeyHistory:
    state = conn.execute("SELECT m, n FROM key_alignment WHERE key = ?", (key,)).fetchone()
    # A key's answers are those on its decisions (an answer carries its decision's key): found through the key's
    # decisions (decisions_by_key, m020) and each one's answers (feedback_answers), not by reading every answer.
    answers = conn.execute(
        f"SELECT f.kind, COUNT(*) FROM {_KEY_ANSWERS} AND {_EFFECTIVE} GROUP BY f.kind", (key,)
    ).fetchall()
    verdicts = conn.execute("SELECT verdict, COUNT(*) FROM decisions WHERE key = ? GROUP BY verdict", (key,)).fetchall()
    rows = conn.execute(
        f"SELECT f.operator, f.kind, f.at, COALESCE(f.reason, '') FROM {_KEY_ANSWERS} AND {_EFFECTIVE} "
        "ORDER BY f.id DESC LIMIT ?2",
        (key, latest),
    ).fetchall()
    return KeyHistory(
        key=key,
        m=None if state is None else float(state[0]),
        n=0 if state is None else int(state[1]),
        answers={str(k): int(n) for k, n in answers},
        verdicts={str(v): int(n) for v, n in verdicts},
        latest=tuple((str(r[0]), str(r[1]), float(r[2]), str(r[3])) for r in rows),
    )


def key_known(conn: sqlite3.Connection, key: str) -> bool:
    """Whether any decision was made for ``key``."""
    return conn.execute("SELECT 1 FROM decisions WHERE key = ? LIMIT 1", (key,)).fetchone() is not None
