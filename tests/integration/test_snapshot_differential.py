"""Differential test of the SQLite store's cross-transaction caches (the connection's Snapshot, the cached row
ids, the next audit id): random sequences of loop steps run on InMemoryStore and on several SQLiteStores sharing
one file (so every step may follow another connection's commit, a failed transaction, a rolled-back savepoint or
a raw write through ``tx.connection``) must leave the same learning state, results and logs after every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_testing import RELAXED_POLICY_TEXT

from npo.loop import (
    SYSTEM_OPERATOR,
    InMemoryStore,
    LoopConfig,
    LoopError,
    decide,
    decide_batch,
    record_feedback,
    record_outcome,
)
from npo.misalignment import KeyAlignment
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.scoring import scenario_key
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, check, connect

RELAXED = parse_policy(RELAXED_POLICY_TEXT)
# The default rules with a cap small enough to digest, so the policy context (cooldown after an effective override,
# open disruptive recommendations, surfaced per hour) is compared too.
STRICT = parse_policy(DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 3"))
N_PREDICTIONS = 8
OPERATORS = ("alice", "bob", "carol", SYSTEM_OPERATOR)


class _Failed(Exception):
    pass


def _prediction(i: int) -> Prediction:
    return Prediction(
        id=f"p{i}",
        fault_type=("disk", "ecc")[i % 2],
        target=f"h{i % 4}",  # p0 and p4, p1 and p5, … share a fingerprint (fault type, target, action)
        action=("investigate", "drain")[i % 4 == 1],
        confidence=(0.99, 0.95, 0.55)[i % 3],
        received_at=float(i),
    )


_feedback = st.tuples(
    st.just("feedback"),
    st.integers(0, 2),  # which SQLiteStore
    st.integers(0, N_PREDICTIONS),  # N_PREDICTIONS: a prediction never decided
    st.sampled_from(OPERATORS),
    st.sampled_from(list(FeedbackKind)),
    st.integers(0, 5),  # request id (small: replays happen)
    st.sampled_from(
        ["plain", "has_request_first", "raw_connection_after", "twice", "raw_between", "fail_after", "savepoint"]
    ),
)
_decide = st.tuples(
    st.just("decide"),
    st.integers(0, 2),
    st.lists(st.integers(0, N_PREDICTIONS - 1), min_size=1, max_size=4),
    st.booleans(),
)
_outcome = st.tuples(st.just("outcome"), st.integers(0, 2), st.integers(0, N_PREDICTIONS), st.booleans())
_note = st.tuples(st.just("note"), st.integers(0, 2))
# a raw write of a key's state: through tx.connection (inside a transaction), or on the store's connection
# outside any transaction; InMemoryStore gets the same state through put_key
_raw = st.tuples(st.just("raw"), st.integers(0, 2), st.integers(0, N_PREDICTIONS - 1), st.booleans())
STEPS = st.lists(st.one_of(_feedback, _feedback, _feedback, _decide, _outcome, _note, _raw), min_size=1, max_size=40)


def _event(step: tuple[Any, ...], t: float) -> FeedbackEvent:
    _, _, i, operator, kind, request, _ = step
    if operator == SYSTEM_OPERATOR:
        kind = FeedbackKind.SKIPPED
    elif kind is FeedbackKind.SKIPPED:
        kind = FeedbackKind.NEUTRAL
    return FeedbackEvent(f"p{i}", operator, kind, t, f"{operator}-r{request}")  # the bot derives ids from the user


def _run(store: Any, step: tuple[Any, ...], t: float, seed: int, sqlite: bool, policy: Any) -> object:
    """One step on ``store``; returns what the loop returned (or the error's name)."""
    config = store.config
    what = step[0]
    try:
        if what == "decide":
            _, _, ids, batch = step
            rng = np.random.default_rng(seed)
            with store.transaction() as tx:
                predictions = [_prediction(i) for i in ids]
                if batch:
                    return decide_batch(tx, predictions, config=config, policy=policy, rng=rng, now=t)
                return [decide(tx, p, config=config, policy=policy, rng=rng, now=t) for p in predictions]
        if what == "outcome":
            _, _, i, real = step
            with store.transaction() as tx:
                return record_outcome(tx, Outcome(f"p{i}", real, t), config=config)
        if what == "raw":
            _, _, i, inside = step
            key = scenario_key(_prediction(i), config.key_spec)
            if not sqlite:
                with store.transaction() as tx:
                    tx.put_key(KeyAlignment(key=key, m=0.25, n=3, weight_sum=3.0, updated_at=t))
                return None
            sql = (
                "INSERT INTO learning_state (kind, name, m, n, weight_sum, updated_at) "
                "VALUES ('key', ?, 0.25, 3, 3.0, ?) ON CONFLICT(kind, name) DO UPDATE SET m = 0.25, n = 3, "
                "weight_sum = 3.0, updated_at = excluded.updated_at"
            )
            if inside:
                with store.transaction() as tx:
                    tx.connection.execute(sql, (key, t))
            else:
                conn = store._connection().conn
                conn.execute(sql, (key, t))
            return None
        if what == "note":
            with store.transaction() as tx:
                tx.audit("note", "x", {"t": t}, t)
            return None
        event = _event(step, t)
        mode = step[-1]
        with store.transaction() as tx:
            if mode == "has_request_first":
                tx.has_request(event)
            result = record_feedback(tx, event, config=config)
            if mode == "raw_connection_after" and sqlite:
                tx.connection.execute("SELECT COUNT(*) FROM outbox").fetchone()
            if mode in ("twice", "raw_between"):
                if mode == "raw_between":  # a raw write between two events of one transaction (an audit line)
                    if sqlite:
                        tx.connection.execute(
                            "INSERT INTO audit_log (at, kind, subject, detail) VALUES (?, 'note', 'raw', '{}')", (t,)
                        )
                    else:
                        tx.audit("note", "raw", {}, t)
                second = FeedbackEvent(event.prediction_id, "erin", FeedbackKind.LIKE, t, "erin-r0")
                return (result, record_feedback(tx, event, config=config), record_feedback(tx, second, config=config))
            if mode == "fail_after":
                raise _Failed
            if mode == "savepoint" and sqlite:
                try:
                    with store.transaction() as inner:  # a nested scope: a SAVEPOINT, rolled back
                        record_feedback(
                            inner,
                            FeedbackEvent(event.prediction_id, "dave", FeedbackKind.OVERRIDE, t, "sp"),
                            config=config,
                        )
                        raise _Failed
                except (_Failed, LoopError):
                    pass
            return result
    except _Failed:
        return "failed"
    except LoopError as exc:
        return type(exc).__name__


def _state(store: Any, sqlite: bool) -> tuple[object, ...]:
    if sqlite:
        audit = [(kind, subject, detail, at) for _, at, kind, subject, detail in store.audit_entries()]
        return store.keys(), store.bandit(), store.trust(), store.feedback_log(), store.alignment_samples(), audit
    return (
        dict(store.keys),
        store.bandit,
        dict(store.trust),
        list(store.feedback_log),
        list(store.samples),
        list(store.audit_log),
    )


@settings(
    max_examples=int(__import__("os").environ.get("DIFF_N", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS, pool=st.booleans(), strict=st.booleans())
def test_stores_sharing_a_file_stay_equal_to_memory_step_by_step(
    tmp_path_factory: Any, steps: list[Any], pool: bool, strict: bool
) -> None:
    path: Path = tmp_path_factory.mktemp("diff") / "npo.db"
    config = LoopConfig(pool_keys=pool, peer_min_updates=1)
    policy = STRICT if strict else RELAXED
    disruptive = policy.blast_radius.disruptive_actions
    memory = InMemoryStore(config, disruptive_actions=disruptive)
    stores = [SQLiteStore(path, config, disruptive_actions=disruptive) for _ in range(3)]
    try:
        # most steps then meet a decided prediction (one is never decided)
        for n, step in enumerate([("decide", 0, list(range(N_PREDICTIONS - 1)), True), *steps]):
            t = 100.0 + n
            expected = _run(memory, step, t, n, sqlite=False, policy=policy)
            actual = _run(stores[step[1]], step, t, n, sqlite=True, policy=policy)
            assert actual == expected, (n, step)
            want = _state(memory, sqlite=False)
            for store in stores:
                assert _state(store, sqlite=True) == want, (n, step)
        ids = [entry[0] for entry in stores[0].audit_entries()]
        assert len(ids) == len(set(ids))
    finally:
        for store in stores:
            store.close()
    db = connect(path)
    try:
        version, problems = check(db)
        if any(step[0] == "raw" for step in steps):  # a raw write set a key's count by hand
            problems = [p for p in problems if not p.what.startswith("key update counts")]
        assert (version, problems) == (LATEST_SCHEMA_VERSION, []), problems
    finally:
        db.close()
