"""SQL for the per-person limit on feedback clicks: one token bucket per operator (table ``feedback_rate_limits``).

A bucket holds at most ``burst`` tokens and refills at ``per_minute`` tokens a minute; a click that would change
the learning state takes one token, and a click finding less than one token is over the limit. The bucket lives in
the database and is read and written inside the click's own ``BEGIN IMMEDIATE`` transaction, so the limit holds
across the service's threads and across every process sharing the file, and a click rolled back leaves its token
in the bucket. Plain functions over a ``sqlite3.Connection`` inside the caller's transaction; the audit line is the
caller's (``SQLiteTransaction.audit`` in the same transaction).

A request id refused for the rate limit is remembered in ``processed_requests`` (kind :data:`RATE_LIMITED`), so a
retried or replayed copy of it is recognised (:func:`was_remembered`) and neither audited nor charged again. So
is a click that stored nothing because it repeated the person's current answer (kind :data:`UNCHANGED`): replayed
after the person changed their answer, it would otherwise be applied then and undo the change.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

RATE_LIMITED = "feedback_rate_limited"  # the audit kind and the processed_requests kind of a refused click
UNCHANGED = "feedback_unchanged"  # the processed_requests kind of a click that repeated the current answer


@dataclass(frozen=True, slots=True)
class ClickLimit:
    """``per_minute`` tokens a minute refill each person's bucket of at most ``burst`` tokens; ``per_minute`` = 0
    turns the limit off. A person may make ``burst`` clicks at once and ``per_minute`` a minute after that."""

    per_minute: float = 30.0
    burst: int = 30

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_minute) and self.per_minute >= 0):
            raise ValueError(f"per_minute must be a finite number >= 0, got {self.per_minute!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {self.burst!r}")

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0


@dataclass(frozen=True, slots=True)
class Take:
    """The answer of the bucket to one click: ``allowed``, the tokens left after it, and how many seconds until
    the next token (0 when allowed)."""

    allowed: bool
    tokens: float
    retry_after_s: float


def refill(tokens: float, updated_at: float, now: float, limit: ClickLimit) -> float:
    """The tokens in a bucket that held ``tokens`` at ``updated_at``, at ``now`` (a clock that went back adds
    nothing)."""
    elapsed = max(0.0, now - updated_at)
    return min(float(limit.burst), tokens + elapsed * limit.per_minute / 60.0)


def take(conn: sqlite3.Connection, operator: str, now: float, limit: ClickLimit) -> Take:
    """Take one token from ``operator``'s bucket at ``now`` if there is one; the bucket is stored either way.

    A person without a bucket starts full. Call inside a write transaction (the read and the write must be one
    atomic step). With the limit off, every click is allowed and nothing is read or written.
    """
    if not limit.enabled:
        return Take(True, float(limit.burst), 0.0)
    row = conn.execute("SELECT tokens, updated_at FROM feedback_rate_limits WHERE operator = ?", (operator,)).fetchone()
    tokens = float(limit.burst) if row is None else refill(float(row[0]), float(row[1]), now, limit)
    allowed = tokens >= 1.0
    if allowed:
        tokens -= 1.0
    conn.execute(
        "INSERT INTO feedback_rate_limits (operator, tokens, updated_at) VALUES (?,?,?) "
        "ON CONFLICT(operator) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
        (operator, tokens, now),
    )
    retry_after = 0.0 if allowed else (1.0 - tokens) * 60.0 / limit.per_minute
    return Take(allowed, tokens, retry_after)


def remember_rate_limited(conn: sqlite3.Connection, request_id: str, at: float) -> None:
    """Remember that ``request_id`` was refused for the rate limit (its retries are then duplicates)."""
    conn.execute(
        "INSERT INTO processed_requests (request_id, kind, at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
        (request_id, RATE_LIMITED, at),
    )


def remember_unchanged(conn: sqlite3.Connection, request_id: str, at: float) -> None:
    """Remember that ``request_id`` repeated its person's current answer and stored nothing (a replay of it is a
    duplicate, whatever the person answered since)."""
    conn.execute(
        "INSERT INTO processed_requests (request_id, kind, at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
        (request_id, UNCHANGED, at),
    )


def was_remembered(conn: sqlite3.Connection, request_id: str) -> bool:
    """True when ``request_id`` is a click seen before that stored no answer (refused for the rate limit, or a
    repeat of the current answer)."""
    sql = "SELECT 1 FROM processed_requests WHERE request_id = ? AND kind IN (?, ?)"
    row = conn.execute(sql, (request_id, RATE_LIMITED, UNCHANGED)).fetchone()
    return row is not None


def bucket(conn: sqlite3.Connection, operator: str, now: float, limit: ClickLimit) -> float:
    """The tokens ``operator`` has at ``now`` (read-only; a full bucket when they have none stored)."""
    row = conn.execute("SELECT tokens, updated_at FROM feedback_rate_limits WHERE operator = ?", (operator,)).fetchone()
    return float(limit.burst) if row is None else refill(float(row[0]), float(row[1]), now, limit)
