"""The delivery path's and the skip sweeper's look-ups stay index searches as the outbox and the recommendations
grow, and an update waiting for its recommendation's post is due as soon as that post is out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage_testing import RELAXED_POLICY_TEXT, make_prediction, surface

from npo.loop import LoopConfig
from npo.policy import parse_policy
from storage import SQLiteStore

LOOKUPS = {
    "an update already waiting": (
        "SELECT 1 FROM outbox WHERE state = 'pending' AND kind = ? AND prediction_id = ? AND attempts = 0",
        ("update", "p1"),
    ),
    "a post still pending": (
        "SELECT COUNT(*) FROM outbox o WHERE o.prediction_id = ? AND o.kind IN ('recommendation', 'digest_item') "
        "AND o.state = 'pending'",
        ("p1",),
    ),
    "when a recommendation was shown (the skip sweeper)": (
        "SELECT MAX(o.sent_at) FROM outbox o WHERE o.prediction_id = ? AND o.kind IN ('recommendation', "
        "'digest_item') AND o.state = 'sent'",
        ("p1",),
    ),
    "recommendations sharing a message": (
        "SELECT COUNT(*) FROM recommendations WHERE channel = ? AND message_ts = ?",
        ("C1", "1.0"),
    ),
}


def test_lookups_search_an_index(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "l.db").close()
    conn = sqlite3.connect(str(tmp_path / "l.db"))
    try:
        for what, (sql, params) in LOOKUPS.items():
            plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "USING" in plan and "INDEX" in plan and "SCAN" not in plan, (what, plan)
    finally:
        conn.close()


def test_a_waiting_update_is_due_once_its_post_is_out(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "w.db", LoopConfig()) as store:
        surface(store, [make_prediction(1), make_prediction(2)], parse_policy(RELAXED_POLICY_TEXT))
        with store.transaction() as tx:
            waiting = tx.enqueue("C1", "update", {"prediction_id": "p1"}, 100.0, prediction_id="p1")
            other = tx.enqueue("C1", "update", {"prediction_id": "p2"}, 100.0, prediction_id="p2")
        for item in (waiting, other):
            store.mark_retry(item, 10_000.0, "the recommendation is not posted yet")
        (post,) = [i for i in store.outbox() if i.kind == "recommendation" and i.prediction_id == "p1"]
        store.mark_sent(post.id, "C1", "1.0", at=200.0)
        due = {i.id: i.next_attempt_at for i in store.outbox()}
        assert due[waiting] == 200.0  # woken by its post
        assert due[other] == 10_000.0  # another recommendation's update keeps waiting
