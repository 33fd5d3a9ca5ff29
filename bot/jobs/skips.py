"""The skip sweeper: a posted recommendation nobody answered within the skip timeout counts as *skipped*.

Each one gets ``record_feedback`` with ``FeedbackKind.SKIPPED`` from operator ``"system"`` and request id
``skip:<prediction id>`` (so a second sweep, or a second process, records nothing new), and a ``chat.update`` of
its message queued in the outbox, both in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from npo.loop import LoopError, record_feedback
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
from storage.jobs import still_skippable, unanswered_before

log = logging.getLogger(__name__)

SKIP_OPERATOR = "system"
SKIP_NOTE = "no answer in time — counted as skipped"
UPDATE_KIND = "update"  # the delivery worker's chat.update message kind (bot.service.UPDATE_KIND)


@dataclass(frozen=True, slots=True)
class SweepResult:
    skipped: tuple[str, ...]
    failed: tuple[str, ...] = ()


def skip_request_id(prediction_id: str) -> str:
    return f"skip:{prediction_id}"


def sweep_skips(
    store: SQLiteStore,
    *,
    now: float,
    timeout_s: float,
    on_enqueue: Callable[[], None] = lambda: None,
    limit: int = 500,
    clock: Callable[[], float] | None = None,
) -> SweepResult:
    """Record a skip for every posted recommendation shown at or before ``now - timeout_s`` with no answer.

    One transaction per recommendation; one that cannot be recorded (e.g. a :class:`LoopError`) is logged and
    left for the next sweep. ``on_enqueue`` is called once when any update was queued (wakes the worker).
    ``clock``: each skip's time is read from it once its write transaction has begun (as an answer's is, so that
    one that waited for the write lock across the weekly summary's slot is in the next summary); else ``now``.
    """
    with store.read() as conn:
        due = unanswered_before(conn, now - timeout_s, limit)
    skipped: list[str] = []
    failed: list[str] = []
    for item in due:
        event = FeedbackEvent(
            item.prediction_id, SKIP_OPERATOR, FeedbackKind.SKIPPED, now, skip_request_id(item.prediction_id)
        )
        try:
            with store.transaction() as tx:
                if clock is not None:
                    event = replace(event, at=max(now, clock()))
                if not still_skippable(tx.connection, item.prediction_id):
                    continue  # answered or resolved since the list was read
                result = record_feedback(tx, event, config=store.config)
                if result.status == "duplicate":
                    continue
                payload: dict[str, object] = {"prediction_id": item.prediction_id, "note": SKIP_NOTE}
                if item.message_ts:
                    payload |= {"channel": item.channel, "ts": item.message_ts}
                tx.enqueue(item.channel or "-", UPDATE_KIND, payload, now, prediction_id=item.prediction_id)
        except LoopError as exc:
            log.warning("could not record the skip of %s: %s", item.prediction_id, exc)
            failed.append(item.prediction_id)
            continue
        skipped.append(item.prediction_id)
    if skipped:
        log.info("%d recommendation(s) skipped after %g min without an answer", len(skipped), timeout_s / 60)
        on_enqueue()
    return SweepResult(tuple(skipped), tuple(failed))
