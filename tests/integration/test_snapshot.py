"""A connection reuses its last feedback transaction's reads (keys, trust, bandit, decisions, the next audit id)
only while nothing else has written: every other writer's change is seen by the next event."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from storage_testing import make_prediction, surface
from test_equivalence import _drive

from npo.loop import InMemoryStore, LoopConfig, record_feedback
from npo.policy import Policy
from npo.scoring import scenario_key
from npo.types import FeedbackEvent, FeedbackKind
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, SQLiteTransaction, check, connect


def _like(i: int, operator: str, request: str) -> FeedbackEvent:
    return FeedbackEvent(f"p{i}", operator, FeedbackKind.LIKE, float(100 + i), request)


def _record(store: SQLiteStore, event: FeedbackEvent) -> float:
    """Record ``event`` in its own transaction; returns m of the key after it."""
    with store.transaction() as tx:
        result = record_feedback(tx, event, config=store.config)
    assert result.status in ("recorded", "replaced")
    assert result.key_state is not None
    return result.key_state.m


class _Alternating:
    """A LoopStore whose transactions go to one of several SQLiteStores on the same file (chosen at random)."""

    def __init__(self, stores: list[SQLiteStore], seed: int) -> None:
        self._stores = stores
        self._rng = np.random.default_rng(seed)

    def transaction(self) -> AbstractContextManager[SQLiteTransaction]:
        return self._stores[int(self._rng.integers(len(self._stores)))].transaction()


def test_stores_sharing_a_file_learn_what_one_store_learns(db_path: Path) -> None:
    config = LoopConfig()
    memory = InMemoryStore(config)
    stores = [SQLiteStore(db_path, config, disruptive_actions=()) for _ in range(3)]
    try:
        assert _drive(memory, config, seed=7) == _drive(_Alternating(stores, seed=3), config, seed=7)
        for store in stores:
            assert store.keys() == dict(memory.keys)
            assert store.bandit() == memory.bandit
            assert store.trust() == dict(memory.trust)
            assert store.feedback_log() == list(memory.feedback_log)
        assert [(kind, subject, detail, at) for _, at, kind, subject, detail in stores[0].audit_entries()] == list(
            memory.audit_log
        )
    finally:
        for store in stores:
            store.close()
    db = connect(db_path)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def _one_event(store: SQLiteStore, relaxed_policy: Policy) -> str:
    """Surface p0…p4 and record one like on p0 (the connection now holds a snapshot); returns p0's key, which p4
    shares. The caller changes the database, then records a like on p4 and checks what it started from."""
    surface(store, [make_prediction(i) for i in range(5)], relaxed_policy)
    _record(store, _like(0, "alice", "r0"))
    return scenario_key(make_prediction(0))


def _fail_after(store: SQLiteStore, event: FeedbackEvent) -> None:
    with store.transaction() as tx:
        record_feedback(tx, event, config=store.config)
        raise RuntimeError("failed after the event")


def _fail_inside(store: SQLiteStore, event: FeedbackEvent) -> None:
    """Record ``event`` in a nested (savepoint) scope that then fails; the outer transaction goes on."""
    with pytest.raises(RuntimeError, match="after"):
        _fail_after(store, event)


def test_a_write_by_another_connection_is_seen(store: SQLiteStore, db_path: Path, relaxed_policy: Policy) -> None:
    key = _one_event(store, relaxed_policy)
    other = sqlite3.connect(str(db_path), isolation_level=None)  # like another process
    other.execute("UPDATE key_alignment SET m = 0.75, n = 40, weight_sum = 40 WHERE key = ?", (key,))
    other.execute("UPDATE operator_trust SET n_peer = 7 WHERE operator = 'alice'")
    other.close()
    m = _record(store, _like(4, "alice", "r4"))
    state = store.keys()[key]
    assert state.n == 41 and 0.0 < m < 0.75 and state.m == m
    assert store.trust()["alice"].n_peer == 8  # the key had ≥ 5 updates: peer credit on top of the other write


def test_a_write_through_the_raw_connection_is_seen(store: SQLiteStore, relaxed_policy: Policy) -> None:
    key = _one_event(store, relaxed_policy)
    with store.transaction() as tx:
        tx.connection.execute("UPDATE key_alignment SET m = 0.75, n = 40, weight_sum = 40 WHERE key = ?", (key,))
    _record(store, _like(4, "alice", "r4"))
    assert store.keys()[key].n == 41


def test_a_write_on_the_same_connection_outside_a_transaction_is_seen(
    store: SQLiteStore, relaxed_policy: Policy
) -> None:
    key = _one_event(store, relaxed_policy)
    conn = store._connection().conn  # the thread's connection, used without the store's transaction
    conn.execute("UPDATE key_alignment SET m = 0.75, n = 40, weight_sum = 40 WHERE key = ?", (key,))
    _record(store, _like(4, "alice", "r4"))
    assert store.keys()[key].n == 41


def test_a_rolled_back_event_leaves_nothing_behind(store: SQLiteStore, relaxed_policy: Policy) -> None:
    key = _one_event(store, relaxed_policy)
    with pytest.raises(RuntimeError, match="after"):
        _fail_after(store, _like(1, "bob", "r1"))
    _record(store, _like(4, "alice", "r4"))
    assert store.keys()[key].n == 2
    assert [a.event.request_id for a in store.feedback_log()] == ["r0", "r4"]
    assert set(store.trust()) == {"alice"}
    assert sum(store.bandit().pulls) == 2


def test_a_rolled_back_savepoint_leaves_nothing_behind(store: SQLiteStore, relaxed_policy: Policy) -> None:
    key = _one_event(store, relaxed_policy)
    with store.transaction() as outer:
        record_feedback(outer, _like(2, "carol", "r2"), config=store.config)
        _fail_inside(store, _like(1, "bob", "r1"))
    _record(store, _like(4, "alice", "r4"))
    assert store.keys()[key].n == 2  # r0 and r4 (p2 has another key)
    assert [a.event.request_id for a in store.feedback_log()] == ["r0", "r2", "r4"]
    assert set(store.trust()) == {"alice", "carol"}
    assert sum(store.bandit().pulls) == 3
    ids = [entry[0] for entry in store.audit_entries()]
    assert ids == list(range(1, len(ids) + 1))  # the rolled-back event's audit id is used again


def test_audit_lines_between_events_keep_one_id_sequence(store: SQLiteStore, relaxed_policy: Policy) -> None:
    _one_event(store, relaxed_policy)
    with store.transaction() as tx:
        tx.audit("note", "p0", {"text": "between two clicks"}, 150.0)
    _record(store, _like(4, "alice", "r4"))
    _record(store, _like(3, "bob", "r3"))
    ids = [entry[0] for entry in store.audit_entries()]
    assert ids == list(range(1, len(ids) + 1))
    assert [entry[2] for entry in store.audit_entries()][-3:] == ["note", "feedback", "feedback"]


def test_a_raw_audit_line_between_two_events_of_one_transaction_keeps_one_id_sequence(
    store: SQLiteStore, relaxed_policy: Policy
) -> None:
    surface(store, [make_prediction(i) for i in range(2)], relaxed_policy)
    with store.transaction() as tx:
        record_feedback(tx, _like(0, "alice", "r0"), config=store.config)
        tx.connection.execute("INSERT INTO audit_log (at, kind, subject, detail) VALUES (100.5, 'note', 'p0', '{}')")
        record_feedback(tx, _like(1, "bob", "r1"), config=store.config)
    ids = [entry[0] for entry in store.audit_entries()]
    assert ids == list(range(1, len(ids) + 1))  # was [1, 2, 3, 4, 4]: the second click reused the raw line's id
