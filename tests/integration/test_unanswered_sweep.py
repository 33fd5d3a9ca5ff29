"""The skip sweeper, every minute, reads only the posted, open recommendations nobody answered (m022's partial index
``recommendations_unanswered``), not every open recommendation: those it skipped or someone answered stay open until
an outcome comes, so the open ones grow with the history. Checked on SQLite's query plan, against the query the sweep
ran before on a filled file (answers, changed answers, skips, outcomes, resolved alerts, failed and requeued posts),
and on the upgrade of a filled file from the schema before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from bot.jobs.skips import sweep_skips
from npo.loop import LoopConfig, record_feedback
from npo.policy import parse_policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import SQLiteStore, check, connect, migrate
from storage.jobs import _UNANSWERED, still_skippable, unanswered_before

NOW = 1_750_000_000.0
TIMEOUT = 3600.0
# The sweep's query before m022, whose rows it must keep (the same rule, read from every open recommendation).
BEFORE = """
SELECT r.prediction_id, r.channel, r.message_ts, shown_at FROM (
    SELECT r.prediction_id, r.channel, r.message_ts,
        COALESCE((SELECT MAX(o.sent_at) FROM outbox o WHERE o.prediction_id = r.prediction_id
                  AND o.kind IN ('recommendation', 'digest_item') AND o.state = 'sent'), r.surfaced_at) AS shown_at
    FROM recommendations r
    WHERE r.state = 'posted' AND r.resolved_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM effective_answers e WHERE e.prediction_id = r.prediction_id)
      AND NOT EXISTS (SELECT 1 FROM recommendations d WHERE d.channel = r.channel AND d.message_ts = r.message_ts
                      AND d.prediction_id <> r.prediction_id)
) AS r
WHERE shown_at <= ?
ORDER BY shown_at, r.prediction_id
LIMIT ?
"""


def _fill(store: SQLiteStore, round_: int, n: int = 48) -> None:
    """Decide ``n`` predictions, post most (one message each), fail a few and requeue one of those, then answer some
    (a few answers changed), skip some by the sweeper, close some by an outcome or a resolved alert."""
    now = NOW + 10_000 * round_
    batch = [make_prediction(1000 * round_ + i, received_at=now + i) for i in range(n)]
    policy = parse_policy(RELAXED_POLICY_TEXT)
    results = store.decide_many(batch, policy=policy, rng=np.random.default_rng(round_), now=now)
    batch = [p for p, r in zip(batch, results, strict=True) if r.decision.surfaced]
    claimed = store.claim_due(now + n + 100, limit=n)
    assert len(claimed) >= 30
    for i, item in enumerate(claimed):
        if i % 8 == 0:
            store.mark_failed(item.id, "channel_not_found", attempt=item.attempts, at=now + n + 101)
        elif i % 8 != 1:  # i % 8 == 1 stays pending
            store.mark_sent(item.id, "C1", f"{round_}.{i:04d}", at=now + n + 101 + i, attempt=item.attempts)
    store.requeue_failed(now + n + 102, since=now + n + 101, codes=("channel_not_found",), dry_run=False)
    for i, item in enumerate(store.claim_due(now + n + 103, limit=2)):  # requeued: posted late
        store.mark_sent(item.id, "C1", f"{round_}.r{i}", at=now + 2 * TIMEOUT, attempt=item.attempts)
    cfg = store.config
    with store.transaction() as tx:
        for i, p in enumerate(batch):
            if i % 4 == 0:
                event = FeedbackEvent(p.id, f"u{i % 3}", FeedbackKind.LIKE, now + 500 + i, f"a{round_}-{i}")
                record_feedback(tx, event, config=cfg)
                if i % 8 == 0:  # changed: only the newest is effective, the recommendation stays answered
                    event = FeedbackEvent(p.id, f"u{i % 3}", FeedbackKind.OVERRIDE, now + 600 + i, f"b{round_}-{i}")
                    record_feedback(tx, event, config=cfg)
            elif i % 7 == 1:
                tx.add_outcome(Outcome(p.id, bool(i % 2), now + 700 + i))
            elif i % 7 == 2:
                tx.close_recommendation(p.id, now + 800 + i)
    # the sweeper skips some of what is left (limit), leaving others due
    sweep_skips(store, now=now + n + 101 + 20 + TIMEOUT, timeout_s=TIMEOUT, limit=5)


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "npo.db"
    with SQLiteStore(path, LoopConfig()) as store:
        for round_ in range(3):
            _fill(store, round_)
        # a person's clicks after the sweeper's skips replace them: the recommendations stay answered; one is dated
        # before its skip (a clock behind), which becomes the earliest answer
        with store.read() as conn:
            skipped = conn.execute(
                "SELECT prediction_id, at FROM feedback WHERE operator = 'system' LIMIT 2"
            ).fetchall()
        for (pid, at), late in zip(skipped, (NOW + 50_000, None), strict=True):
            with store.transaction() as tx:
                event = FeedbackEvent(pid, "u9", FeedbackKind.NEUTRAL, late or at - 100, f"late-{pid}")
                record_feedback(tx, event, config=store.config)
    return path


CUTOFFS = (NOW, NOW + 100 + TIMEOUT, NOW + 3 * TIMEOUT, NOW + 10_000 + 160, NOW + 40_000, NOW + 1e6)


def _rows(conn: sqlite3.Connection, sql: str, cutoff: float, limit: int = 1000) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute(sql, (cutoff, limit)).fetchall()]


def test_the_sweep_reads_only_the_unanswered_recommendations(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {_UNANSWERED}", (NOW, 500))]
        (index,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'recommendations_unanswered'"
        ).fetchone()
    finally:
        conn.close()
    assert plan[0] == "SCAN r USING INDEX recommendations_unanswered", plan
    # every other step is a search by key (no other table or index read whole)
    assert [s for s in plan[1:] if s.startswith("SCAN")] == [], plan
    assert index.endswith("WHERE state = 'posted' AND resolved_at IS NULL AND answered_at IS NULL"), index


def test_the_sweep_finds_what_it_found_before(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        counts = conn.execute(
            "SELECT COUNT(*), SUM(answered_at IS NULL), SUM(answered_at IS NOT NULL AND state = 'posted' "
            "AND resolved_at IS NULL) FROM recommendations"
        ).fetchone()
        found = {cutoff: _rows(conn, _UNANSWERED, cutoff) for cutoff in CUTOFFS}
        for cutoff in CUTOFFS:
            assert found[cutoff] == _rows(conn, BEFORE, cutoff), cutoff
            assert found[cutoff][:3] == _rows(conn, _UNANSWERED, cutoff, 3) == _rows(conn, BEFORE, cutoff, 3)
        # the file has answered recommendations still open and due ones (a requeued post among them)
        assert counts[2] > 0 and len(found[NOW + 1e6]) >= 10
        ids = [str(r[0]) for r in conn.execute("SELECT prediction_id FROM recommendations")]
        skippable = {p for p in ids if still_skippable(conn, p)}
        assert skippable == {str(r[0]) for r in _rows(conn, BEFORE, NOW + 1e6, 10**6)}
    finally:
        conn.close()
    assert check(connect(filled))[1] == []
    # sweeping everything: nothing is left, by either query
    with SQLiteStore(filled, LoopConfig()) as store:
        assert len(sweep_skips(store, now=NOW + 1e6, timeout_s=TIMEOUT).skipped) == len(found[NOW + 1e6])
        with store.read() as conn:
            assert unanswered_before(conn, NOW + 1e6) == [] == _rows(conn, BEFORE, NOW + 1e6)
            assert conn.execute(
                "SELECT COUNT(*) FROM recommendations INDEXED BY recommendations_unanswered "
                "WHERE state = 'posted' AND resolved_at IS NULL AND answered_at IS NULL"
            ).fetchone() == (0,)


def test_db_check_finds_a_wrong_answered_at(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        conn.execute(
            "UPDATE recommendations SET answered_at = NULL WHERE rowid = (SELECT MIN(rowid) FROM recommendations "
            "WHERE answered_at IS NOT NULL)"
        )
        conn.commit()
    finally:
        conn.close()
    what = "a recommendation's answered_at is the time of its earliest answer (NULL without one)"
    db = connect(filled)
    try:
        problems = [p for p in check(db)[1] if p.what == what]
    finally:
        db.close()
    assert len(problems) == 1 and "answered_at NULL" in problems[0].detail, problems


def test_the_upgrade_fills_answered_at_of_a_filled_file(filled: Path) -> None:
    conn = sqlite3.connect(str(filled))
    try:
        expected = {cutoff: _rows(conn, BEFORE, cutoff) for cutoff in CUTOFFS}
        answered = conn.execute(
            "SELECT prediction_id, answered_at FROM recommendations WHERE answered_at IS NOT NULL ORDER BY 1"
        ).fetchall()
        conn.executescript(
            "DROP TRIGGER feedback_answered; DROP INDEX recommendations_unanswered; "
            "ALTER TABLE recommendations DROP COLUMN answered_at; "
            "DELETE FROM _sqlite_migrations WHERE name = 'm022_unanswered_recommendations';"
        )
    finally:
        conn.close()
    db = connect(filled)
    try:
        assert migrate(db) >= 22
        assert check(db)[1] == []
        conn = db.conn
        assert (
            conn.execute(
                "SELECT prediction_id, answered_at FROM recommendations WHERE answered_at IS NOT NULL ORDER BY 1"
            ).fetchall()
            == answered
        )
        assert {cutoff: _rows(conn, _UNANSWERED, cutoff) for cutoff in CUTOFFS} == expected
    finally:
        db.close()
    assert answered and any(expected.values())
