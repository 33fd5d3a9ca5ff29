"""SQL for the delivery side of the bot (``bot/delivery.py``, ``bot/service.py``): where a recommendation's message
is, what waits in the outbox, which channels are in an alert storm. Plain functions over a ``sqlite3.Connection``
(use ``SQLiteStore.read()`` for reads and ``SQLiteStore.transaction()``'s ``connection`` for writes); nothing here
opens or commits a transaction itself. The outbox's claim, lease and result bookkeeping is ``SQLiteStore``'s
(``storage/store_outbox.py``).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

PostState = Literal["failed", "done", "waiting"]


def next_due_at(conn: sqlite3.Connection) -> float | None:
    """When the earliest pending message is due (Unix seconds), or None when nothing is pending."""
    row = conn.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def storm_channels(conn: sqlite3.Connection, threshold: int) -> set[str]:
    """Channels with more than ``threshold`` recommendations waiting to be posted."""
    rows = conn.execute(
        "SELECT channel FROM outbox WHERE state = 'pending' AND kind = 'recommendation' "
        "GROUP BY channel HAVING COUNT(*) > ?",
        (threshold,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def post_state(conn: sqlite3.Connection, prediction_id: str) -> PostState:
    """For a recommendation with no message ts: ``"failed"`` (its post failed for good, or it was never
    surfaced), ``"done"`` (posted, but inside a digest) or ``"waiting"`` (its post is still pending)."""
    row = conn.execute(
        "SELECT r.state, (SELECT COUNT(*) FROM outbox o WHERE o.prediction_id = r.prediction_id "
        "AND o.kind IN ('recommendation', 'digest_item') AND o.state = 'pending') "
        "FROM recommendations r WHERE r.prediction_id = ?",
        (prediction_id,),
    ).fetchone()
    if row is None or row[0] == "failed":
        return "failed"
    return "waiting" if row[1] else "done"


def shares_message(conn: sqlite3.Connection, channel: str, ts: str) -> bool:
    """Whether the message at (``channel``, ``ts``) shows more than one recommendation (a digest)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM recommendations WHERE channel = ? AND message_ts = ?", (channel, ts)
    ).fetchone()
    return bool(row and row[0] > 1)


def message_of(conn: sqlite3.Connection, prediction_id: str) -> tuple[str, str] | None:
    """(channel, ts) of the recommendation's message, once it was posted; else None."""
    row = conn.execute(
        "SELECT channel, message_ts FROM recommendations WHERE prediction_id = ?", (prediction_id,)
    ).fetchone()
    return None if row is None or not row[1] else (str(row[0]), str(row[1]))


def recent_recommendations(conn: sqlite3.Connection, limit: int) -> list[str]:
    """Prediction ids of the ``limit`` most recently surfaced recommendations, newest first."""
    rows = conn.execute(
        "SELECT prediction_id FROM recommendations ORDER BY surfaced_at DESC LIMIT ?", (limit,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def update_waiting(conn: sqlite3.Connection, kind: str, prediction_id: str) -> bool:
    """Whether a message of ``kind`` for the prediction is pending and not yet tried (a later change can ride
    with it instead of queueing another)."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE state = 'pending' AND kind = ? AND prediction_id = ? AND attempts = 0",
        (kind, prediction_id),
    ).fetchone()
    return row is not None


def postpone(conn: sqlite3.Connection, outbox_id: int, due: float) -> None:
    """Make a pending message due at ``due`` (Unix seconds), e.g. to pace a message's updates."""
    conn.execute("UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND state = 'pending'", (due, outbox_id))
