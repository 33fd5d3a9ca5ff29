"""A write that violates a constraint raises StorageError naming table and record, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from storage_testing import dump, make_prediction, surface

from npo.bandit import BanditConfig, ThresholdBandit
from npo.loop import AppliedFeedback, record_feedback
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore, SQLiteTransaction, StorageError


def _applied(pid: str, operator: str, request_id: str, replaces: str | None = None) -> AppliedFeedback:
    event = FeedbackEvent(pid, operator, FeedbackKind.LIKE, 5.0, request_id)
    return AppliedFeedback(event, "k", 0.0, 1.0, 0.0, 0, 1.0, replaces=replaces)


CASES: dict[str, tuple[Callable[[SQLiteTransaction], None], str, str]] = {
    "prediction id stored twice": (
        lambda tx: tx.add_decision(make_prediction(0), tx.get_decision("p0"), "c"),  # type: ignore[arg-type]
        "predictions",
        "p0",
    ),
    "feedback on an unknown prediction": (
        lambda tx: tx.add_feedback(_applied("nope", "alice", "r-unknown")),
        "feedback",
        "r-unknown",
    ),
    # A request id is unique per person and recommendation: the same one again, even replacing that answer.
    "request id stored twice": (
        lambda tx: tx.add_feedback(_applied("p1", "alice", "r-1", replaces="r-1")),
        "feedback",
        "r-1",
    ),
    "a second effective answer without replaces": (
        lambda tx: tx.add_feedback(_applied("p1", "alice", "r-2")),
        "feedback",
        "r-2",
    ),
    "a second answer naming an answer that is not the current one": (
        lambda tx: tx.add_feedback(_applied("p1", "alice", "r-3", replaces="r-ok")),
        "feedback",
        "r-3",
    ),
    "a first answer naming an answer it cannot take over": (
        lambda tx: tx.add_feedback(_applied("p0", "carol", "r-4", replaces="r-1")),
        "feedback",
        "r-4",
    ),
    "a first answer taking over another person's answer (only the system's skip can be)": (
        lambda tx: tx.add_feedback(_applied("p1", "carol", "r-5", replaces="r-1")),
        "feedback",
        "r-5",
    ),
    "a bandit with another configuration": (
        lambda tx: tx.put_bandit(ThresholdBandit(BanditConfig(thresholds=(0.1, 0.2)))),
        "bandit_arms",
        "config",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_violation_names_the_record_and_changes_nothing(
    store: SQLiteStore, db_path: Path, relaxed_policy: Policy, case: str
) -> None:
    surface(store, [make_prediction(0), make_prediction(1)], relaxed_policy)
    with store.transaction() as tx:
        record_feedback(tx, FeedbackEvent("p1", "alice", FeedbackKind.LIKE, 2.0, "r-1"), config=store.config)
    before = dump(db_path)
    write, table, record = CASES[case]

    def attempt() -> None:
        with store.transaction() as tx:
            # valid writes first: they must be rolled back with the failing one
            tx.audit("note", "x", {"n": 1}, 3.0)
            record_feedback(tx, FeedbackEvent("p0", "bob", FeedbackKind.OVERRIDE, 3.0, "r-ok"), config=store.config)
            write(tx)

    with pytest.raises(StorageError) as info:
        attempt()
    assert isinstance(info.value, ValueError)
    assert (info.value.table, info.value.record) == (table, record)
    assert table in str(info.value) and record in str(info.value)
    assert dump(db_path) == before


def test_outbox_update_of_an_unknown_message_is_refused(store: SQLiteStore, db_path: Path) -> None:
    before = dump(db_path)
    with pytest.raises(StorageError, match="outbox '42'"):
        store.mark_sent(42, "C1", "1.0", at=1.0)
    assert dump(db_path) == before
