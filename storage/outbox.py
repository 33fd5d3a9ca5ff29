"""SQL for the delivery side of the bot (``bot/delivery.py``, ``bot/service.py``): where a recommendation's message
is, what waits in the outbox, which channels are in an alert storm. Plain functions over a ``sqlite3.Connection``
(use ``SQLiteStore.read()`` for reads and ``SQLiteStore.transaction()``'s ``connection`` for writes); nothing here
opens or commits a transaction itself. The outbox's claim, lease and result bookkeeping is ``SQLiteStore``'s
(``storage/store_outbox.py``).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

PostState = Literal["failed", "done", "waiting"]


def next_due_at(conn: sqlite3.Connection) -> float | None:
    """When the earliest pending message is due (Unix seconds), or None when nothing is pending."""
    row = conn.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def storm_channels(conn: sqlite3.Connection, threshold: int) -> dict[str, bool]:
    """Channels with more than ``threshold`` recommendations waiting to be posted, each with whether that is an alert
    storm: more than ``threshold`` of them new, not put back by ``npo-bot db requeue`` (``requeued_at`` in the
    payload; a requeued backlog is folded into digests too, but is no storm)."""
    rows = conn.execute(
        "SELECT channel, SUM(json_extract(payload, '$.requeued_at') IS NULL) FROM outbox "
        "WHERE state = 'pending' AND kind = 'recommendation' GROUP BY channel HAVING COUNT(*) > ?",
        (threshold,),
    ).fetchall()
    return {str(r[0]): int(r[1]) > threshold for r in rows}


def post_state(conn: sqlite3.Connection, prediction_id: str) -> PostState:
    """For a recommendation with no message ts: ``"failed"`` (its post failed for good, or it was never
    surfaced), ``"done"`` (posted, but inside a digest) or ``"waiting"`` (its post is still pending). Done means a
    post of it was sent: a recommendation resolved since its post failed (its state says ``resolved`` then), or
    whose digest line failed before digest items failed their recommendation, was not posted."""
    row = conn.execute(
        "SELECT r.state, "
        "(SELECT COUNT(*) FROM outbox o WHERE o.prediction_id = r.prediction_id "
        "AND o.kind IN ('recommendation', 'digest_item') AND o.state = 'pending'), "
        "(SELECT COUNT(*) FROM outbox o WHERE o.prediction_id = r.prediction_id "
        "AND o.kind IN ('recommendation', 'digest_item') AND o.state = 'sent') "
        "FROM recommendations r WHERE r.prediction_id = ?",
        (prediction_id,),
    ).fetchone()
    if row is None or row[0] == "failed":
        return "failed"
    if row[1]:
        return "waiting"
    return "done" if row[2] else "failed"


def shares_message(conn: sqlite3.Connection, channel: str, ts: str) -> bool:
    """Whether the message at (``channel``, ``ts``) shows more than one recommendation (a digest)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM recommendations WHERE channel = ? AND message_ts = ?", (channel, ts)
    ).fetchone()
    return bool(row and row[0] > 1)


def later_message_update(conn: sqlite3.Connection, outbox_id: int, channel: str, ts: str) -> bool:
    """Whether an update of the plain message at (``channel``, ``ts``) queued after outbox message ``outbox_id`` is
    pending or sent: its blocks are newer, so this one's are out of date (a retraining alert's update carries the
    blocks it was queued with). Reads only the rows queued after ``outbox_id``."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE id > ? AND kind = 'message_update' AND channel = ? "
        "AND json_extract(payload, '$.ts') = ? AND state IN ('pending', 'sent') LIMIT 1",
        (outbox_id, channel, ts),
    ).fetchone()
    return row is not None


def sent_as(conn: sqlite3.Connection, outbox_ids: Sequence[int], channel: str, ts: str) -> int:
    """How many of the outbox messages ``outbox_ids`` are recorded as sent in the message at (``channel``, ``ts``):
    by whoever recorded the post, its worker or another worker's claim from the note next to the database."""
    return sum(
        conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE id = ? AND state = 'sent' AND channel = ? AND message_ts = ?",
            (outbox_id, channel, ts),
        ).fetchone()[0]
        for outbox_id in dict.fromkeys(outbox_ids)
    )


def message_of(conn: sqlite3.Connection, prediction_id: str) -> tuple[str, str] | None:
    """(channel, ts) of the recommendation's message, once it was posted; else None."""
    row = conn.execute(
        "SELECT channel, message_ts FROM recommendations WHERE prediction_id = ?", (prediction_id,)
    ).fetchone()
    return None if row is None or not row[1] else (str(row[0]), str(row[1]))


def own_messages(conn: sqlite3.Connection, limit: int) -> list[tuple[str, str, str]]:
    """(prediction id, channel, ts) of the newest ``limit`` recommendations posted in a message of their own (not in a
    digest), oldest first."""
    rows = conn.execute(
        "SELECT prediction_id, channel, message_ts FROM recommendations r "
        "WHERE verdict = 'surface' AND message_ts IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM recommendations o WHERE o.channel = r.channel "
        "AND o.message_ts = r.message_ts AND o.prediction_id != r.prediction_id) "
        "ORDER BY CAST(message_ts AS REAL) DESC LIMIT ?",
        (max(0, limit),),
    ).fetchall()
    return [(str(pid), str(channel), str(ts)) for pid, channel, ts in reversed(rows)]


def posted_at(conn: sqlite3.Connection, prediction_id: str) -> float | None:
    """When the recommendation's own message was posted (its outbox row's ``sent_at``); None while it is not, or
    when it went out in a digest."""
    row = conn.execute(
        "SELECT MAX(sent_at) FROM outbox WHERE prediction_id = ? AND kind = 'recommendation' AND state = 'sent'",
        (prediction_id,),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def closed_at(conn: sqlite3.Connection, prediction_id: str) -> float | None:
    """When the recommendation was closed without an outcome (its alert resolved without saying whether the fault
    was real); None while it is open, and once an outcome is recorded (the outcome is what it shows then)."""
    row = conn.execute(
        "SELECT r.resolved_at FROM recommendations r WHERE r.prediction_id = ? AND r.resolved_at IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.prediction_id = r.prediction_id)",
        (prediction_id,),
    ).fetchone()
    return None if row is None else float(row[0])


def recent_recommendations(conn: sqlite3.Connection, limit: int) -> list[str]:
    """Prediction ids of the ``limit`` most recently surfaced recommendations, newest first."""
    rows = conn.execute(
        "SELECT prediction_id FROM recommendations ORDER BY surfaced_at DESC LIMIT ?", (limit,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def update_waiting(conn: sqlite3.Connection, kind: str, prediction_id: str) -> bool:
    """Whether a message of ``kind`` for the prediction is pending and not in flight: not yet tried, or waiting for
    another try (``last_error`` set: a failed or deferred one; a claim clears it). It renders the recommendation as
    it is when sent, so a later change can ride with it instead of queueing another — which, during an outage,
    would be retried on its own and update the same message once more when Slack is back."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE state = 'pending' AND kind = ? AND prediction_id = ? "
        "AND (attempts = 0 OR last_error IS NOT NULL)",
        (kind, prediction_id),
    ).fetchone()
    return row is not None


def riding_updates(
    conn: sqlite3.Connection, prediction_id: str, outbox_id: int, own: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The other pending ``update`` messages of the prediction that the update ``outbox_id``, about to be sent, carries
    along: (id, attempts) of those never tried — waiting (no attempt counted: a deferral does not count one) or
    claimed by the caller for their first try (``own``: (id, attempts) each) and not sent yet. Read before the update
    renders the recommendation, so each change they were queued for is in that rendering (an update is queued in its
    change's transaction). One tried before is left to its retry: its call may still be applied by Slack late, after
    this one, and its retry is what then shows the message as it is; one in flight with another worker is its own."""
    rows = conn.execute(
        "SELECT id, attempts FROM outbox WHERE state = 'pending' AND kind = 'update' AND prediction_id = ? AND id <> ?",
        (prediction_id, outbox_id),
    ).fetchall()
    first_tries = {i for i, attempts in own if attempts == 1}
    return [(int(r[0]), int(r[1])) for r in rows if r[1] == 0 or (int(r[0]) in first_tries and r[1] == 1)]


def fold_updates(
    conn: sqlite3.Connection, riders: Sequence[tuple[int, int]], channel: str, ts: str, sent_at: float
) -> list[int]:
    """Mark ``riders`` (:func:`riding_updates`) sent with the update that carried them, as (``channel``, ``ts``);
    one claimed by another worker since (its attempts changed) or no longer pending is left as it is. Returns the
    ids marked."""
    marked = []
    for outbox_id, attempts in riders:
        cur = conn.execute(
            "UPDATE outbox SET state = 'sent', channel = ?, message_ts = ?, sent_at = ?, last_error = NULL "
            "WHERE id = ? AND state = 'pending' AND attempts = ?",
            (channel, ts, sent_at, outbox_id, attempts),
        )
        if cur.rowcount:
            marked.append(outbox_id)
    return marked


def postpone(conn: sqlite3.Connection, outbox_id: int, due: float) -> None:
    """Make a pending message due at ``due`` (Unix seconds), e.g. to pace a message's updates."""
    conn.execute("UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND state = 'pending'", (due, outbox_id))


# -- npo-bot db requeue --------------------------------------------------------------------------------------------
REQUEUE_AUDIT_KIND = "outbox_requeued"
_WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """A failed outbox message considered by :func:`plan_requeue`: requeued when ``skip`` is empty, else why not."""

    id: int
    kind: str
    channel: str
    prediction_id: str | None
    attempts: int
    failed_at: float
    last_error: str
    skip: str = ""


def names_error(last_error: str, codes: Sequence[str]) -> bool:
    """Whether ``last_error`` names one of Slack's error ``codes`` (a whole word of it: ``invalid_auth``)."""
    words = set(_WORD.findall(last_error))
    return any(code in words for code in codes)


def plan_requeue(
    conn: sqlite3.Connection, since: float | None, codes: Sequence[str], *, now: float, overdue: bool = False
) -> list[FailedMessage]:
    """The failed outbox messages that failed at or after ``since`` (all when None) and whose last error names one of
    ``codes`` (any when empty), oldest first, each with why it must stay failed (``skip``) or none. Stays failed:

    * a recommendation or digest item whose recommendation was resolved (an outcome, or its alert closed) or
      answered, or was posted (or is waiting to be) by another outbox row — or by an earlier row of this plan;
    * unless ``overdue``, a recommendation or digest item whose predicted fault time (when it was surfaced plus the
      prediction's ``time_to_fault_s``) is before ``now``: posted now it would still say "Predicted fault in 6.0 h"
      of a fault that was due hours ago (one whose prediction gave no time to fault is requeued);
    * an update with no message of its own to update (its recommendation was never posted, or only inside a
      digest: a requeued post shows the current state anyway), or one that a later or waiting update of the same
      message makes needless (an update renders the recommendation as it is when sent);
    * a message update (a retraining alert's) that a later or waiting one of the same message supersedes: sent
      after it, the older text would replace the newer one;
    * a retraining alert whose proposal is no longer open (its buttons could record nothing) or that the monitor
      has queued again since;
    * an ephemeral reply (it answered a click at the time) and a kind the worker does not know.

    For a failed message, ``next_attempt_at`` holds when it failed (:meth:`StoreOutbox.mark_failed`; one failed by an
    earlier version: the end of the lease it failed under, up to a few minutes later)."""
    rows = conn.execute(
        "SELECT id, kind, channel, prediction_id, attempts, next_attempt_at, COALESCE(last_error, ''), payload "
        "FROM outbox WHERE state = 'failed' AND (? IS NULL OR next_attempt_at >= ?) ORDER BY id",
        (since, since),
    ).fetchall()
    rows = [r for r in rows if not codes or names_error(str(r[6]), codes)]
    latest_failed: dict[tuple[str, str], int] = {}  # (kind, the message it changes) → the newest selected update
    for r in rows:
        target = _update_target(str(r[1]), str(r[2]), r[3], json.loads(r[7]))
        if target is not None:
            latest_failed[(str(r[1]), target)] = int(r[0])
    planned: list[FailedMessage] = []
    posting: set[str] = set()  # predictions whose post this plan requeues
    for r in rows:
        outbox_id, kind, channel, pid, payload = int(r[0]), str(r[1]), str(r[2]), r[3], json.loads(r[7])
        skip = _why_not(conn, outbox_id, kind, channel, pid, payload, posting, latest_failed)
        if not skip and not overdue and kind in ("recommendation", "digest_item") and _fault_passed(conn, pid, now):
            skip = FAULT_TIME_PASSED
        if not skip and kind in ("recommendation", "digest_item") and pid is not None:
            posting.add(str(pid))
        planned.append(FailedMessage(outbox_id, kind, channel, pid, int(r[4]), float(r[5]), str(r[6]), skip))
    return planned


FAULT_TIME_PASSED = "its predicted fault time has passed"


def _fault_passed(conn: sqlite3.Connection, pid: str | None, now: float) -> bool:
    """Whether the recommendation of ``pid`` predicted its fault for a time before ``now`` (``due_at``: surfaced plus
    the prediction's ``time_to_fault_s``; False when the prediction gave none)."""
    row = conn.execute(
        "SELECT r.due_at < ? FROM recommendations r JOIN decisions d ON d.prediction_id = r.prediction_id "
        "WHERE r.prediction_id = ? AND d.time_to_fault_s IS NOT NULL",
        (now, pid),
    ).fetchone()
    return bool(row and row[0])


def _update_target(kind: str, channel: str, pid: str | None, payload: Any) -> str | None:
    """The message an update of ``kind`` changes (its prediction id, or its channel and ts), else None."""
    if kind == "update" and pid is not None:
        return str(pid)
    if kind == "message_update" and isinstance(payload, dict) and payload.get("ts"):
        return f"{channel} {payload['ts']}"
    return None


def _why_not(
    conn: sqlite3.Connection,
    outbox_id: int,
    kind: str,
    channel: str,
    pid: str | None,
    payload: Any,
    posting: set[str],
    latest_failed: dict[tuple[str, str], int],
) -> str:
    """Why the failed message must not be requeued (see :func:`plan_requeue`), or ``""``."""
    if kind in ("recommendation", "digest_item"):
        rec = conn.execute(
            "SELECT message_ts, resolved_at FROM recommendations WHERE prediction_id = ?", (pid,)
        ).fetchone()
        if rec is None:
            return "no recommendation"
        if rec[1] is not None or conn.execute("SELECT 1 FROM outcomes WHERE prediction_id = ?", (pid,)).fetchone():
            return "resolved"
        if conn.execute("SELECT 1 FROM feedback WHERE prediction_id = ? LIMIT 1", (pid,)).fetchone():
            return "answered"
        posted = conn.execute(
            "SELECT 1 FROM outbox WHERE prediction_id = ? AND kind IN ('recommendation', 'digest_item') "
            "AND state IN ('pending', 'sent') LIMIT 1",
            (pid,),
        ).fetchone()
        if rec[0] or posted or str(pid) in posting:
            return "posted by another message"
        return ""
    if kind == "update":
        ts = payload.get("ts") if isinstance(payload, dict) else None
        if (
            not ts
            and not conn.execute(
                "SELECT 1 FROM recommendations WHERE prediction_id = ? AND message_ts IS NOT NULL", (pid,)
            ).fetchone()
        ):
            return "its recommendation has no message of its own"
        later = conn.execute(
            "SELECT 1 FROM outbox WHERE kind = 'update' AND prediction_id = ? AND id != ? "
            "AND (state = 'pending' OR (state = 'sent' AND id > ?)) LIMIT 1",
            (pid, outbox_id, outbox_id),
        ).fetchone()
        if later or latest_failed.get(("update", str(pid)), outbox_id) != outbox_id:
            return "superseded by a later update"
        return ""
    if kind == "message_update":
        target = _update_target(kind, channel, pid, payload)
        if target is None:
            return "no message to update"
        later = conn.execute(
            "SELECT 1 FROM outbox WHERE kind = 'message_update' AND channel = ? AND json_extract(payload, '$.ts') = ? "
            "AND id != ? AND (state = 'pending' OR (state = 'sent' AND id > ?)) LIMIT 1",
            (channel, payload["ts"], outbox_id, outbox_id),
        ).fetchone()
        if later or latest_failed.get(("message_update", target), outbox_id) != outbox_id:
            return "superseded by a later update"
        return ""
    if kind == "message":
        proposal = payload.get("proposal_id") if isinstance(payload, dict) else None
        if proposal is None:
            return ""
        if not conn.execute(
            "SELECT 1 FROM retraining_proposals WHERE id = ? AND state = 'open'", (proposal,)
        ).fetchone():
            return "its retraining proposal is closed"
        if conn.execute(
            "SELECT 1 FROM outbox WHERE kind = 'message' AND id > ? AND json_extract(payload, '$.proposal_id') = ?",
            (outbox_id, proposal),
        ).fetchone():
            return "queued again since"
        return ""
    if kind == "thread_reply":
        return ""
    if kind == "ephemeral":
        return "a reply to a click at the time"
    return "unknown kind"


def requeue(conn: sqlite3.Connection, outbox_ids: Sequence[int], now: float) -> int:
    """Put the failed messages ``outbox_ids`` back to pending, due at ``now``, with no attempt counted (a fresh retry
    budget) and no error; a recommendation's post (its own, or a digest item) makes its recommendation pending again,
    and it carries ``requeued_at`` (now) in its payload, so that a digest of them says they were requeued,
    not that an alert storm is on. Returns how many were requeued (a message no longer failed is left as it is).
    Inside the caller's write transaction."""
    count = 0
    for outbox_id in outbox_ids:
        cur = conn.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL, "
            "payload = CASE WHEN kind IN ('recommendation', 'digest_item') THEN json_set(payload, '$.requeued_at', ?) "
            "ELSE payload END WHERE id = ? AND state = 'failed'",
            (now, now, outbox_id),
        )
        if cur.rowcount == 1:
            count += 1
            conn.execute(
                "UPDATE recommendations SET state = 'pending' WHERE state = 'failed' AND prediction_id = "
                "(SELECT prediction_id FROM outbox WHERE id = ? AND kind IN ('recommendation', 'digest_item'))",
                (outbox_id,),
            )
    return count
