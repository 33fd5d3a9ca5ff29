"""SQL for runtime Safety Policy rules: scenario keys muted with ``/npo mute`` until an expiry (table
``policy_mutes``). Plain functions over a ``sqlite3.Connection`` inside the caller's transaction or read; the
audit line is the caller's (``SQLiteTransaction.audit`` in the same transaction)."""

from __future__ import annotations

import sqlite3

from npo.policy import Mute

_COLS = "key, since, until, created_by, reason"


def _mute(row: tuple[object, ...]) -> Mute:
    return Mute(str(row[0]), float(row[1]), float(row[2]), str(row[3]), str(row[4]))  # type: ignore[arg-type]


def add_mute(conn: sqlite3.Connection, mute: Mute) -> int:
    """Store ``mute``; returns its id. Earlier mutes of the same key stay (the latest expiry wins)."""
    cur = conn.execute(
        f"INSERT INTO policy_mutes ({_COLS}) VALUES (?,?,?,?,?)",
        (mute.key, mute.since, mute.until, mute.by, mute.reason),
    )
    return int(cur.lastrowid or 0)


def lift_mutes(conn: sqlite3.Connection, key: str, *, at: float, by: str) -> int:
    """End every mute of ``key`` still in force at ``at``; returns how many."""
    cur = conn.execute(
        "UPDATE policy_mutes SET lifted_at = ?, lifted_by = ? WHERE key = ? AND lifted_at IS NULL AND until > ?",
        (at, by, key, at),
    )
    return cur.rowcount


def muted_until(conn: sqlite3.Connection, key: str, now: float) -> float | None:
    """When the last mute of ``key`` in force (or starting later) at ``now`` ends; None when there is none."""
    row = conn.execute(
        "SELECT MAX(until) FROM policy_mutes WHERE key = ? AND lifted_at IS NULL AND until > ?", (key, now)
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def active_mutes(conn: sqlite3.Connection, now: float) -> list[Mute]:
    """Mutes not lifted whose expiry is after ``now`` (including ones that start later), oldest first."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM policy_mutes WHERE lifted_at IS NULL AND until > ? ORDER BY id", (now,)
    ).fetchall()
    return [_mute(r) for r in rows]


def key_mutes(conn: sqlite3.Connection, key: str, limit: int = 5) -> list[tuple[Mute, float | None]]:
    """The latest mutes of ``key`` with their lift time (None when not lifted), newest first."""
    rows = conn.execute(
        f"SELECT {_COLS}, lifted_at FROM policy_mutes WHERE key = ? ORDER BY id DESC LIMIT ?", (key, limit)
    ).fetchall()
    return [(_mute(r), None if r[5] is None else float(r[5])) for r in rows]
