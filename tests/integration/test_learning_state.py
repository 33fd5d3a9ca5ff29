"""The learning state in one table (migration m006): the last effective override per key and target kept by the
feedback trigger equals the old definition over the log, and the old table names still read and write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from storage_testing import make_prediction, surface

from npo.loop import LoopError, record_feedback
from npo.policy import Policy
from npo.scoring import scenario_key
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore, check, connect

# The definition the two partial override indexes served before m006: the newest override that is still
# someone's effective answer, per key and per target.
_NEWEST_EFFECTIVE = (
    "SELECT f.{col}, MAX(f.at) FROM feedback f JOIN effective_answers e ON e.feedback_id = f.id "
    "WHERE f.kind = 'override' GROUP BY f.{col}"
)


def _expected(path: Path) -> dict[str, float]:
    conn = sqlite3.connect(str(path))
    try:
        return {
            f"{col}:{name}": at
            for col in ("key", "target")
            for name, at in conn.execute(_NEWEST_EFFECTIVE.format(col=col))
        }
    finally:
        conn.close()


def test_last_override_follows_effective_answers(store: SQLiteStore, relaxed_policy: Policy) -> None:
    """Random clicks with many second clicks (an override replaced by a like, a like by an override) and times out
    of order: after every event the single and the batch policy contexts give the newest effective override."""
    predictions = [make_prediction(i) for i in range(12)]
    surface(store, predictions, relaxed_policy)
    keys = [scenario_key(p) for p in predictions]
    kinds = [FeedbackKind.OVERRIDE, FeedbackKind.OVERRIDE, FeedbackKind.LIKE, FeedbackKind.NEUTRAL]
    script = np.random.default_rng(3)
    for i in range(200):
        p = predictions[int(script.integers(len(predictions)))]
        operator = f"op{script.integers(3)}"
        kind = kinds[int(script.integers(len(kinds)))]
        event = FeedbackEvent(p.id, operator, kind, float(script.integers(1000)), f"r{i}")
        try:
            with store.transaction() as tx:
                record_feedback(tx, event, config=store.config)
        except LoopError:
            continue
        expected = _expected(store.path)
        with store.transaction() as tx:
            for pred, key in zip(predictions, keys, strict=True):
                got = dict(tx.policy_context(pred, key, "c", 2000.0).last_override_at)
                want = {k: v for k, v in expected.items() if k in (f"key:{key}", f"target:{pred.target}")}
                assert got == want, (i, pred.id)
            batch = tx.policy_contexts(predictions, keys, ["c"], 2000.0)
            for pred, key in zip(predictions, keys, strict=True):
                ctx = batch.context(pred, key, "c")
                got = {
                    k: ctx.last_override_at[k]
                    for k in (f"key:{key}", f"target:{pred.target}")
                    if k in ctx.last_override_at
                }
                want = {k: v for k, v in expected.items() if k in (f"key:{key}", f"target:{pred.target}")}
                assert got == want, (i, pred.id)
    conn = sqlite3.connect(str(store.path))
    replaced_overrides = conn.execute(
        "SELECT COUNT(*) FROM feedback r JOIN feedback f ON f.request_id = r.replaces WHERE f.kind = 'override'"
    ).fetchone()[0]
    conn.close()
    assert replaced_overrides > 10  # the recompute path ran
    assert len(_expected(store.path)) > 5
    db = connect(store.path)
    assert check(db)[1] == []
    db.close()


def test_check_reports_a_wrong_last_override(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(0)], relaxed_policy)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p0", "alice", FeedbackKind.OVERRIDE, 5.0, "r1"), config=store.config)
    conn = sqlite3.connect(str(store.path))
    conn.execute("UPDATE learning_state SET last_override_at = 1 WHERE kind = 'override_target'")
    conn.commit()
    conn.close()
    db = connect(store.path)
    problems = check(db)[1]
    db.close()
    assert [p.what for p in problems] == [
        "the last override kept per key and per target is the newest effective override"
    ]
    assert "override_target r0-n0: kept 1.0, newest 5.0" in problems[0].detail


def test_old_table_names_are_views_that_read_and_write(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(0)], relaxed_policy)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p0", "alice", FeedbackKind.LIKE, 5.0, "r1"), config=store.config)
    key = scenario_key(make_prediction(0))
    pulls = sum(store.bandit().pulls)
    conn = sqlite3.connect(str(store.path), isolation_level=None)
    try:
        kinds = dict(
            conn.execute(
                "SELECT name, type FROM sqlite_master WHERE name IN "
                "('key_alignment', 'bandit_arms', 'operator_trust', 'learning_state')"
            )
        )
        assert kinds == {
            "key_alignment": "view",
            "bandit_arms": "view",
            "operator_trust": "view",
            "learning_state": "table",
        }
        assert conn.execute("SELECT key, n FROM key_alignment").fetchall() == [(key, 1)]
        assert [r[0] for r in conn.execute("SELECT arm FROM bandit_arms ORDER BY arm")] == list(
            range(store.config.bandit.n_arms)
        )
        conn.execute("UPDATE bandit_arms SET pulls = pulls + 5")
        conn.execute("INSERT INTO key_alignment (key, m, n, weight_sum, updated_at) VALUES ('other', 0.25, 3, 3.0, 1)")
        conn.execute("UPDATE operator_trust SET n_peer = 7 WHERE operator = 'alice'")
        with pytest.raises(sqlite3.IntegrityError):  # the old CHECK constraints hold through the views
            conn.execute("UPDATE key_alignment SET m = 2 WHERE key = 'other'")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO bandit_arms (arm, threshold, alpha, beta, pulls) VALUES (-1, 0.5, 1, 1, 0)")
        with pytest.raises(sqlite3.IntegrityError):  # one row per operator, as the old primary key
            conn.execute("INSERT INTO operator_trust VALUES ('alice', 1, 1, 0, 0)")
    finally:
        conn.close()
    assert sum(store.bandit().pulls) == pulls + 5 * store.config.bandit.n_arms
    keys = store.keys()
    assert keys["other"].m == 0.25 and keys["other"].n == 3 and isinstance(keys["other"].n, int)
    assert store.trust()["alice"].n_peer == 7
    conn = sqlite3.connect(str(store.path), isolation_level=None)
    conn.execute("DELETE FROM key_alignment WHERE key = 'other'")
    conn.close()
    remaining = store.keys()
    assert "other" not in remaining
