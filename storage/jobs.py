"""SQL for the scheduled jobs (``bot/jobs``): job-claim bookkeeping, the skip sweeper's query and the weekly
report's aggregates. Plain functions over a ``sqlite3.Connection`` (use ``SQLiteStore.read()`` for reads and
``SQLiteStore.transaction()`` for writes); nothing here opens or commits a transaction itself.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage import codec

# Only posted, unresolved recommendations with no effective answer (anyone's, a skip included) qualify, and only
# those posted as a message of their own: a digest (an alert storm's, whose members are posted recommendations
# sharing one message) has no buttons, so nobody could have answered and silence says nothing.
# ``answered_at IS NULL`` (set by the first answer, m022) makes the sweep read only the partial index
# ``recommendations_unanswered`` (posted, open, never answered) instead of every open recommendation; the NOT EXISTS
# below stays the rule.
_SKIPPABLE = """r.state = 'posted' AND r.resolved_at IS NULL AND r.answered_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM effective_answers e WHERE e.prediction_id = r.prediction_id)
      AND NOT EXISTS (SELECT 1 FROM recommendations d WHERE d.channel = r.channel AND d.message_ts = r.message_ts
                      AND d.prediction_id <> r.prediction_id)"""
# A recommendation counts as shown from the moment its message was sent (its outbox row), else from when it was
# surfaced.
_UNANSWERED = f"""
SELECT r.prediction_id, r.channel, r.message_ts, shown_at FROM (
    SELECT r.prediction_id, r.channel, r.message_ts,
        COALESCE((SELECT MAX(o.sent_at) FROM outbox o WHERE o.prediction_id = r.prediction_id
                  AND o.kind IN ('recommendation', 'digest_item') AND o.state = 'sent'), r.surfaced_at) AS shown_at
    FROM recommendations r
    WHERE {_SKIPPABLE}
) AS r
WHERE shown_at <= ?
ORDER BY shown_at, r.prediction_id
LIMIT ?
"""


@dataclass(frozen=True, slots=True)
class Unanswered:
    """A posted recommendation nobody answered: where its message is and when it was shown."""

    prediction_id: str
    channel: str
    message_ts: str | None
    shown_at: float


RELEASED_AT = -1.0  # the ``claimed_at`` of a claim given back by its failed run (no real claim is this old): free
# to be claimed again at once


def last_claim(conn: sqlite3.Connection, job: str) -> str | None:
    """The latest claimed period of ``job`` (periods are ISO UTC strings, so they sort as text), or None."""
    row = conn.execute("SELECT MAX(period) FROM job_claims WHERE job = ?", (job,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def claim_count(conn: sqlite3.Connection, job: str, period: str | None = None) -> int:
    """How many claims ``job`` holds (for one ``period`` when given): one its failed run gave back
    (:func:`release_claim`) is not counted."""
    held = "job = ? AND NOT (done_at IS NULL AND claimed_at = ?)"
    if period is None:
        row = conn.execute(f"SELECT COUNT(*) FROM job_claims WHERE {held}", (job, RELEASED_AT)).fetchone()
    else:
        sql = f"SELECT COUNT(*) FROM job_claims WHERE {held} AND period = ?"
        row = conn.execute(sql, (job, RELEASED_AT, period)).fetchone()
    return int(row[0])


def release_claim(conn: sqlite3.Connection, job: str, period: str, owner: str) -> bool:
    """Give back a claim this ``owner`` took (its run failed), so a later run can retry the slot.

    The row is kept, unfinished and dated :data:`RELEASED_AT` (stale at once, so any claim with a stale limit takes
    it), rather than deleted: it records that the job has run on this database and that the slot is still owed, so a
    restart catches it up even when it was the job's first slot ever."""
    cur = conn.execute(
        "UPDATE job_claims SET claimed_at = ?, owner = '' WHERE job = ? AND period = ? AND owner = ? "
        "AND done_at IS NULL",
        (RELEASED_AT, job, period, owner),
    )
    return cur.rowcount == 1


def finish_claim(conn: sqlite3.Connection, job: str, period: str, owner: str, at: float) -> bool:
    """Record that this ``owner``'s run of ``job`` for ``period`` finished (``done_at``): the claim is never taken
    over. False when the claim is no longer this owner's (taken over meanwhile as stale)."""
    cur = conn.execute(
        "UPDATE job_claims SET done_at = ? WHERE job = ? AND period = ? AND owner = ?", (at, job, period, owner)
    )
    return cur.rowcount == 1


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim of one (job, period): who took it and when, and when its run finished (None: running, or died)."""

    owner: str
    claimed_at: float
    done_at: float | None

    @property
    def released(self) -> bool:
        """Given back by its failed run (:func:`release_claim`), not taken by a run since."""
        return self.done_at is None and self.claimed_at == RELEASED_AT


def claim_of(conn: sqlite3.Connection, job: str, period: str) -> Claim | None:
    """The claim of ``job`` for ``period``, or None."""
    row = conn.execute(
        "SELECT owner, claimed_at, done_at FROM job_claims WHERE job = ? AND period = ?", (job, period)
    ).fetchone()
    return None if row is None else Claim(str(row[0]), float(row[1]), None if row[2] is None else float(row[2]))


def prune_claims(conn: sqlite3.Connection, job: str, before: str) -> int:
    """Delete ``job``'s claims for periods before ``before`` (keeps the table small for per-minute jobs)."""
    return conn.execute("DELETE FROM job_claims WHERE job = ? AND period < ?", (job, before)).rowcount


# The ``processed_requests`` rows that stand only for a Slack request, by the prefix of their id: Events API
# deliveries (``event:``), slash commands (``command:``, ``command-signature:``), the override form (``override_form:``)
# and clicks that stored no answer (``slack:``). Other rows (``alert_resolved:<prediction>``, one per prediction, not
# sent by Slack) are kept.
REQUEST_ID_PREFIXES = ("event:", "command:", "command-signature:", "override_form:", "slack:")


def prune_requests(conn: sqlite3.Connection, before: float, *, limit: int = 10_000) -> int:
    """Delete the Slack request ids (:data:`REQUEST_ID_PREFIXES`) claimed before ``before``, at most ``limit`` of
    each kind (a long history is pruned over several runs, each write kept short); returns how many.

    Each prefix is a range of the primary key, so only Slack request ids are read, however many rows of other kinds
    the table holds. Only safe for a ``before`` well past the time a request can still be accepted again: see
    :data:`bot.jobs.build.REQUESTS_KEPT`."""
    sql = (
        "DELETE FROM processed_requests WHERE rowid IN (SELECT rowid FROM processed_requests "
        "WHERE request_id >= ? AND request_id < ? AND at < ? LIMIT ?)"
    )
    deleted = 0
    for prefix in REQUEST_ID_PREFIXES:
        past = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the first text after every id starting with the prefix
        deleted += conn.execute(sql, (prefix, past, before, limit)).rowcount
    return deleted


def unanswered_before(conn: sqlite3.Connection, cutoff: float, limit: int = 500) -> list[Unanswered]:
    """Posted recommendations with no effective answer, shown at or before ``cutoff`` (oldest first)."""
    rows = conn.execute(_UNANSWERED, (cutoff, limit)).fetchall()
    return [Unanswered(str(r[0]), str(r[1]), r[2], float(r[3])) for r in rows]


def still_skippable(conn: sqlite3.Connection, prediction_id: str) -> bool:
    """Whether the recommendation still qualifies for a skip (:func:`unanswered_before`'s rules): checked again
    inside the transaction that records the skip, because an answer or an outcome may have come since the list
    was read."""
    sql = f"SELECT 1 FROM recommendations r WHERE r.prediction_id = ? AND {_SKIPPABLE}"
    return conn.execute(sql, (prediction_id,)).fetchone() is not None


# -- weekly report aggregates ----------------------------------------------------------------------------------
_EFFECTIVE = codec.IS_EFFECTIVE


def answer_counts(conn: sqlite3.Connection, since: float, until: float) -> dict[str, int]:
    """Effective answers per kind (override, like, neutral, skipped) given in [since, until)."""
    rows = conn.execute(
        f"SELECT f.kind, COUNT(*) FROM feedback f WHERE f.at >= ? AND f.at < ? AND {_EFFECTIVE} GROUP BY f.kind",
        (since, until),
    ).fetchall()
    return {str(kind): int(n) for kind, n in rows}


def daily_codes(conn: sqlite3.Connection, since: float, until: float) -> list[tuple[float, float]]:
    """(at, y) of every effective answer in [since, until), oldest first (grouped by day by the caller)."""
    rows = conn.execute(
        f"SELECT f.at, f.y FROM feedback f WHERE f.at >= ? AND f.at < ? AND {_EFFECTIVE} ORDER BY f.at, f.id",
        (since, until),
    ).fetchall()
    return [(float(a), float(y)) for a, y in rows]


@dataclass(frozen=True, slots=True)
class OutcomeTally:
    """Outcomes recorded in the period (whenever their decision was made), by that decision: surfaced/suppressed ×
    real fault/false alarm. Counted by when NPO received the outcome (:data:`ARRIVED`), like :func:`repair_times`,
    so that each outcome is in exactly one period, and in one not yet reported: a recommendation answered on
    Sunday whose outcome (resolved on Sunday) arrives on Monday after the summary counts in the next week's."""

    surfaced_real: int = 0
    surfaced_false: int = 0
    suppressed_real: int = 0
    suppressed_false: int = 0

    @property
    def precision(self) -> float | None:
        n = self.surfaced_real + self.surfaced_false
        return self.surfaced_real / n if n else None

    @property
    def recall(self) -> float | None:
        n = self.surfaced_real + self.suppressed_real
        return self.surfaced_real / n if n else None


# When an outcome reached NPO: its recorded_at, or (stored before m011 noted it) its at.
ARRIVED = "COALESCE(o.recorded_at, o.at)"


def outcome_tally(conn: sqlite3.Connection, since: float, until: float) -> OutcomeTally:
    """Surfaced (surface or digest) vs not, by outcome, for the outcomes that arrived in [since, until)
    (:data:`ARRIVED`, whenever the decision was made)."""
    row = conn.execute(
        "SELECT "
        "COALESCE(SUM(d.verdict IN ('surface', 'digest') AND o.real_fault = 1), 0), "
        "COALESCE(SUM(d.verdict IN ('surface', 'digest') AND o.real_fault = 0), 0), "
        "COALESCE(SUM(d.verdict NOT IN ('surface', 'digest') AND o.real_fault = 1), 0), "
        "COALESCE(SUM(d.verdict NOT IN ('surface', 'digest') AND o.real_fault = 0), 0) "
        "FROM decisions d JOIN outcomes o ON o.prediction_id = d.prediction_id "
        f"WHERE {ARRIVED} >= ? AND {ARRIVED} < ?",
        (since, until),
    ).fetchone()
    return OutcomeTally(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


# When NPO recorded a proposal's close: the answer's time, or for an expired one the monitor run that recorded the
# expiry (its audit line) — which may be after the deadline its ``resolved_at`` keeps (the bot was down then, or the
# run that found it overdue came after the weekly summary's slot).
_CLOSED = "COALESCE(x.at, p.resolved_at)"


def proposal_counts(conn: sqlite3.Connection, since: float, until: float) -> dict[str, int]:
    """Retraining proposals in [since, until): ``raised`` (opened in the period) and, by how they were closed in the
    period, ``approved``, ``dismissed``, ``expired``. A close is counted when NPO recorded it (:data:`_CLOSED`: the
    answer, or the run that expired the proposal, not its earlier deadline), so that each close is in exactly one
    period, and one recorded after a summary is in the next rather than in none."""
    raised = conn.execute(
        "SELECT COUNT(*) FROM retraining_proposals WHERE opened_at >= ? AND opened_at < ?", (since, until)
    ).fetchone()
    rows = conn.execute(
        "SELECT p.state, COUNT(*) FROM retraining_proposals p LEFT JOIN ("
        "SELECT subject, MAX(at) AS at FROM audit_events WHERE kind = 'retraining_expired' GROUP BY subject"
        ") x ON p.state = 'expired' AND x.subject = CAST(p.id AS TEXT) "
        f"WHERE p.state <> 'open' AND {_CLOSED} >= ? AND {_CLOSED} < ? GROUP BY p.state",
        (since, until),
    ).fetchall()
    return {"raised": int(raised[0] or 0)} | {str(state): int(n) for state, n in rows}


def most_overridden(conn: sqlite3.Connection, since: float, until: float, limit: int = 5) -> list[tuple[str, int]]:
    """The keys with the most effective overrides in [since, until), most first (ties by key)."""
    rows = conn.execute(
        f"SELECT f.key, COUNT(*) AS n FROM feedback f WHERE f.kind = 'override' AND f.at >= ? AND f.at < ? "
        f"AND {_EFFECTIVE} GROUP BY f.key ORDER BY n DESC, f.key LIMIT ?",
        (since, until, limit),
    ).fetchall()
    return [(str(k), int(n)) for k, n in rows]


@dataclass(frozen=True, slots=True)
class RepairTimes:
    """Mean time to repair (seconds from the prediction to its real-fault outcome's ``at``) for the real-fault
    outcomes that arrived in the period, split by whether NPO surfaced a recommendation for them (surface or
    digest) or not."""

    with_recommendation: float | None
    n_with: int
    without_recommendation: float | None
    n_without: int


def repair_times(conn: sqlite3.Connection, since: float, until: float) -> RepairTimes:
    """MTTR with vs without a recommendation, over real-fault outcomes that arrived in [since, until) (the repair
    time itself runs to the outcome's ``at``)."""
    row = conn.execute(
        "SELECT "
        "AVG(CASE WHEN d.verdict IN ('surface', 'digest') THEN o.at - d.received_at END), "
        "COALESCE(SUM(d.verdict IN ('surface', 'digest')), 0), "
        "AVG(CASE WHEN d.verdict NOT IN ('surface', 'digest') THEN o.at - d.received_at END), "
        "COALESCE(SUM(d.verdict NOT IN ('surface', 'digest')), 0) "
        "FROM outcomes o JOIN decisions d ON d.prediction_id = o.prediction_id "
        f"WHERE o.real_fault = 1 AND {ARRIVED} >= ? AND {ARRIVED} < ? AND o.at >= d.received_at",
        (since, until),
    ).fetchone()
    return RepairTimes(
        None if row[0] is None else float(row[0]),
        int(row[1]),
        None if row[2] is None else float(row[2]),
        int(row[3]),
    )
