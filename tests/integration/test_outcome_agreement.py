"""m017: each person's effective answers with a known outcome and their summed agreement with it are kept in
``outcome_agreement`` by triggers, so the meta-monitor's "contradicted by outcomes" read
(:func:`storage.monitoring.contradicted_by_outcomes`) costs one row per person instead of a scan of every answer
ever given; its result stays what the scan found."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from storage_testing import copy_rows, make_prediction, surface

from npo.loop import SYSTEM_OPERATOR, LoopConfig, record_feedback, record_outcome
from npo.policy import Policy
from npo.trust import trust_weight
from npo.types import FeedbackEvent, FeedbackKind, Outcome
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, check, connect, migrate
from storage.monitoring import contradicted_by_outcomes
from storage.store import SQLiteTransaction

PEOPLE = ("alice", "bob", "carol", "mallory")
KINDS = (FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL)
N_PREDICTIONS = 60
Tally = dict[str, tuple[int, float]]


def _recount(conn: sqlite3.Connection) -> Tally:
    """Each person's effective answers with a known outcome and their agreement with it, recomputed the plain way:
    a person's effective answer on a recommendation is their newest there; the system's answers and skips count
    for nobody."""
    outcomes = dict(conn.execute("SELECT prediction_id, real_fault FROM outcomes").fetchall())
    newest: dict[tuple[str, str], tuple[str, float]] = {}
    for prediction_id, operator, kind, y in conn.execute(
        "SELECT prediction_id, operator, kind, y FROM feedback ORDER BY id"
    ):
        newest[(prediction_id, operator)] = (kind, y)
    tally: Tally = {}
    for (prediction_id, operator), (kind, y) in newest.items():
        if operator == SYSTEM_OPERATOR or kind == "skipped" or prediction_id not in outcomes:
            continue
        n, agreement = tally.get(operator, (0, 0.0))
        tally[operator] = (n + 1, agreement + 1.0 - abs(y - (1 - outcomes[prediction_id])))
    return tally


def _contradicted(tally: Tally, min_outcomes: int) -> set[str]:
    return {person for person, (n, agreement) in tally.items() if n >= min_outcomes and agreement < n / 2}


def _stored(conn: sqlite3.Connection) -> Tally:
    rows = conn.execute("SELECT operator, answers, agreement FROM outcome_agreement WHERE answers != 0").fetchall()
    return {str(operator): (int(n), float(agreement)) for operator, n, agreement in rows}


def _assert_same(store: SQLiteStore) -> None:
    with store.read() as conn:
        expected = _recount(conn)
        assert _stored(conn) == expected
        for min_outcomes in (1, 3, 5):
            assert contradicted_by_outcomes(conn, min_outcomes) == _contradicted(expected, min_outcomes)


def _real(prediction_id: str) -> bool:
    """What the outcome of a recommendation says (fixed per recommendation)."""
    return int(prediction_id[1:]) % 3 != 0


def _history(store: SQLiteStore, seed: int, steps: int, *, check_every: int = 0) -> dict[str, int]:
    """A random history on the recommendations p0…: people answer and change their answers (mallory mostly wrong,
    down to weight 0; now and then a skip sent in a person's name, which counts for nothing), the system skips (some
    skips taken over by a click later), outcomes arrive before and after the answers. Compares the tally with the
    recomputation every ``check_every`` steps (never with 0). Returns how often each case of interest happened."""
    rnd = random.Random(seed)
    seen = dict.fromkeys(("replaced", "replaced after outcome", "answer after outcome", "outcome after answers"), 0)
    seen |= dict.fromkeys(("skip", "skip after outcome", "person's skip"), 0)
    outcomes: set[str] = set()
    answered: set[str] = set()

    def answer(tx: SQLiteTransaction, prediction_id: str, person: str, kind: FeedbackKind, step: int) -> None:
        event = FeedbackEvent(prediction_id, person, kind, 100.0 + step, f"r{seed}:{step}:{person}")
        status = record_feedback(tx, event, config=store.config).status
        if status == "duplicate":
            return
        answered.add(prediction_id)
        if kind is FeedbackKind.SKIPPED:
            seen["skip"] += 1
            seen["skip after outcome"] += prediction_id in outcomes
            seen["person's skip"] += person != SYSTEM_OPERATOR
        else:
            seen["replaced"] += status == "replaced"
            seen["replaced after outcome"] += status == "replaced" and prediction_id in outcomes
            seen["answer after outcome"] += prediction_id in outcomes

    def outcome(tx: SQLiteTransaction, prediction_id: str, step: int) -> None:
        if record_outcome(tx, Outcome(prediction_id, _real(prediction_id), 100.0 + step), config=store.config).recorded:
            outcomes.add(prediction_id)
            seen["outcome after answers"] += prediction_id in answered

    # Whatever the draws: a skip after the outcome, by the system and in a person's name (clicks may take them over).
    with store.transaction() as tx:
        for prediction_id, person in ((f"p{N_PREDICTIONS - 1}", SYSTEM_OPERATOR), (f"p{N_PREDICTIONS - 2}", "bob")):
            outcome(tx, prediction_id, -1)
            answer(tx, prediction_id, person, FeedbackKind.SKIPPED, -1)
    for step in range(steps):
        prediction_id = f"p{rnd.randrange(N_PREDICTIONS)}"
        roll = rnd.random()
        with store.transaction() as tx:
            if roll < 0.12:
                outcome(tx, prediction_id, step)
            elif roll < 0.25:
                answer(tx, prediction_id, SYSTEM_OPERATOR, FeedbackKind.SKIPPED, step)
            else:
                person = rnd.choice(PEOPLE)
                if person == "mallory" and rnd.random() < 0.8:  # the outcome's opposite
                    kind = FeedbackKind.OVERRIDE if _real(prediction_id) else FeedbackKind.LIKE
                else:
                    kind = rnd.choice(KINDS) if rnd.random() < 0.9 else FeedbackKind.SKIPPED
                answer(tx, prediction_id, person, kind, step)
        if check_every and step % check_every == 0:
            _assert_same(store)
    return seen


@pytest.mark.parametrize("seed", range(4))
def test_the_tally_gives_what_a_recount_of_the_answers_gives(tmp_path: Path, relaxed_policy: Policy, seed: int) -> None:
    with SQLiteStore(tmp_path / "npo.db", LoopConfig()) as store:
        surface(store, [make_prediction(i) for i in range(N_PREDICTIONS)], relaxed_policy)
        seen = _history(store, seed, 600, check_every=7)
        _assert_same(store)
        assert min(seen.values()) > 0, seen
        with store.transaction() as tx:
            mallory = tx.get_trust("mallory")
        assert mallory is not None and store.config.trust is not None
        assert trust_weight(mallory, store.config.trust) == 0.0  # a weight-0 person is still counted
        with store.read() as conn:
            assert "mallory" in contradicted_by_outcomes(conn, 5)
    db = connect(tmp_path / "npo.db")
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_the_monitor_reads_one_row_per_person_not_the_answers(store: SQLiteStore, relaxed_policy: Policy) -> None:
    surface(store, [make_prediction(i) for i in range(N_PREDICTIONS)], relaxed_policy)
    _history(store, 0, 200)
    read: set[str] = set()

    def note(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table is not None:
            read.add(table)
        return sqlite3.SQLITE_OK

    with store.read() as conn:
        conn.set_authorizer(note)
        try:
            contradicted_by_outcomes(conn, 5)
        finally:
            conn.set_authorizer(None)
    assert read == {"outcome_agreement"}


def test_upgrade_fills_the_tally_from_the_history(tmp_path: Path, relaxed_policy: Policy) -> None:
    full = tmp_path / "full.db"
    with SQLiteStore(full, LoopConfig()) as store:
        surface(store, [make_prediction(i) for i in range(N_PREDICTIONS)], relaxed_policy)
        _history(store, 1, 300)
        with store.read() as conn:
            expected = _recount(conn)
    old = tmp_path / "v16.db"
    db = connect(old)
    assert migrate(db, stop_before="m017_outcome_agreement") == 16
    copy_rows(db.conn, full, ("decisions", "recommendations", "outbox", "learning_state", "audit_events"))
    copy_rows(db.conn, full, ("feedback", "outcomes"))
    db.close()

    with SQLiteStore(old, LoopConfig()) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
        with store.read() as conn:
            assert _stored(conn) == expected
        _history(store, 2, 200)  # and the triggers keep it from there
        _assert_same(store)
    db = connect(old)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()


def test_an_outcome_corrected_by_hand_moves_the_tally_and_db_check_finds_a_wrong_one(
    store: SQLiteStore, relaxed_policy: Policy
) -> None:
    surface(store, [make_prediction(i) for i in range(3)], relaxed_policy)
    with store.transaction() as tx:
        for i in range(3):
            record_feedback(
                tx, FeedbackEvent(f"p{i}", "alice", FeedbackKind.OVERRIDE, 10.0 + i, f"r{i}"), config=store.config
            )
            record_outcome(tx, Outcome(f"p{i}", True, 20.0), config=store.config)
    with store.read() as conn:
        assert _stored(conn) == {"alice": (3, 0.0)}
    with store.transaction() as tx:
        tx.connection.execute("UPDATE outcomes SET real_fault = 0 WHERE prediction_id = 'p0'")
        tx.connection.execute("DELETE FROM outcomes WHERE prediction_id = 'p1'")
    _assert_same(store)
    with store.read() as conn:
        assert _stored(conn) == {"alice": (2, 1.0)}
    with store.transaction() as tx:
        tx.connection.execute("UPDATE outcome_agreement SET answers = 7 WHERE operator = 'alice'")
    db = connect(store.path)
    _, problems = check(db)
    db.close()
    assert [(p.what, p.detail) for p in problems] == [
        (
            "each person's outcome agreement tally counts their effective answers with a known outcome",
            "alice: tally 7 answers agreeing 1.0, effective answers with an outcome 2 agreeing 1.0",
        )
    ]
