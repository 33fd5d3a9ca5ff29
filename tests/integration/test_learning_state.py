"""The learning state in one table (migration m006): the old table names are views that still read and write, the
old constraints hold, and the store's updates by row id go to the right rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from storage_testing import make_prediction, surface

from npo.loop import record_feedback
from npo.policy import Policy
from npo.scoring import scenario_key
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore


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


def test_updates_reach_the_row_of_the_key_after_it_was_recreated(store: SQLiteStore, relaxed_policy: Policy) -> None:
    """The store updates rows it has read by their row id; a row deleted and written again by another connection
    (a new id) is read again, and the other rows keep their values."""
    p0, p1 = make_prediction(0), make_prediction(1)
    surface(store, [p0, p1], relaxed_policy)
    k0, k1 = scenario_key(p0), scenario_key(p1)
    assert k0 != k1
    for i, (pid, who) in enumerate((("p0", "alice"), ("p1", "bob"), ("p0", "bob"))):
        with store.transaction() as tx:
            record_feedback(tx, FeedbackEvent(pid, who, FeedbackKind.LIKE, 5.0 + i, f"r{i}"), config=store.config)
    assert (store.keys()[k0].n, store.keys()[k1].n) == (2, 1)
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.execute("DELETE FROM key_alignment WHERE key = ?", (k0,))
    other.execute("INSERT INTO key_alignment VALUES (?, 0.5, 7, 7.0, 1)", (k0,))
    other.execute("DELETE FROM operator_trust WHERE operator = 'alice'")
    old_ids = dict(other.execute("SELECT name, id FROM learning_state WHERE kind = 'key'"))
    other.close()
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p0", "carol", FeedbackKind.LIKE, 9.0, "r9"), config=store.config)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p1", "alice", FeedbackKind.LIKE, 10.0, "r10"), config=store.config)
    keys = store.keys()
    assert (keys[k0].n, keys[k1].n) == (8, 2)
    assert set(store.trust()) == {"alice", "bob", "carol"}
    conn = sqlite3.connect(str(store.path))
    assert dict(conn.execute("SELECT name, id FROM learning_state WHERE kind = 'key'")) == old_ids
    assert conn.execute("SELECT COUNT(*) FROM learning_state").fetchone()[0] == 2 + 3 + store.config.bandit.n_arms
    conn.close()


def _learn(store: SQLiteStore, policy: Policy, *, shuffle_ids: bool) -> tuple[object, ...]:
    p0, p1 = make_prediction(0), make_prediction(1)
    surface(store, [p0, p1], policy)
    for i, pid in enumerate(("p0", "p1")):
        with store.transaction() as tx:
            record_feedback(tx, FeedbackEvent(pid, "alice", FeedbackKind.LIKE, 5.0 + i, f"r{i}"), config=store.config)
    with store.transaction() as tx:
        tx.prefetch_feedback("p0", "alice", "r2")  # reads the rows and their ids
        if shuffle_ids:  # the same rows under each other's ids: the two keys swap, the arms reverse
            conn = tx.connection
            ids = conn.execute("SELECT kind, id FROM learning_state ORDER BY id").fetchall()
            conn.execute("UPDATE learning_state SET id = -id")
            for kind in ("key", "arm"):
                old = [row_id for k, row_id in ids if k == kind]
                for src, dst in zip(old, old[::-1], strict=True):
                    conn.execute("UPDATE learning_state SET id = ? WHERE id = ?", (dst, -src))
            conn.execute("UPDATE learning_state SET id = -id WHERE id < 0")
        record_feedback(tx, FeedbackEvent("p0", "alice", FeedbackKind.OVERRIDE, 7.0, "r2"), config=store.config)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p1", "bob", FeedbackKind.NEUTRAL, 8.0, "r3"), config=store.config)
    return store.keys(), store.bandit(), store.trust()


def test_a_raw_write_in_the_transaction_makes_the_store_read_row_ids_again(
    tmp_path: Path, relaxed_policy: Policy
) -> None:
    """Rows are updated by the ids the transaction read; when the raw connection is used in the same transaction
    (here to give the rows each other's ids) those ids are forgotten, so the learning steps that follow land on
    the right rows: the state is the same as without the shuffle."""
    with SQLiteStore(tmp_path / "a.db") as plain, SQLiteStore(tmp_path / "b.db") as shuffled:
        assert _learn(shuffled, relaxed_policy, shuffle_ids=True) == _learn(plain, relaxed_policy, shuffle_ids=False)
