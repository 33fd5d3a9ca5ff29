"""Pending retraining approvals carried out by two processes sharing one SQLite file (each runs its own approval
runner: at start, on its own clicks, every minute). Each process is a store of its own on the same file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.monitor import run_monitor
from bot.retraining import (
    GIVE_UP_GRACE_S,
    RETRY_DELAYS_S,
    begin_approval,
    complete_approvals,
    not_recorded_status,
    resolve,
)
from bot.service import MessageRef
from bot.slack.monitor_blocks import AlertFacts, alert_blocks
from bot.slack.text import slack_time
from npo.loop import LoopConfig
from npo.monitor import MonitorConfig
from storage import SQLiteStore

ALICE, BOB = "U0ALICE", "U0BOB"
ALERT = MessageRef("C0OPS", "1700000000.000100")
OPENED, DEADLINE = 1_000.0, 100_000.0


@pytest.fixture
def two(db_path: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    with SQLiteStore(db_path, LoopConfig()) as a, SQLiteStore(db_path, LoopConfig()) as b:
        yield a, b


def _proposal(store: SQLiteStore) -> int:
    with store.transaction() as tx:
        return tx.open_proposal(OPENED, "drift", expires_at=DEADLINE)


def _rows(path: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _pending(path: Path) -> dict[str, Any]:
    rows = _rows(path, "SELECT value FROM job_state WHERE name = 'retraining_approvals'")
    return json.loads(rows[0][0]) if rows else {}


def test_an_approval_another_process_is_carrying_out_is_left_to_it(
    two: tuple[SQLiteStore, SQLiteStore], db_path: Path
) -> None:
    """Before, both runners read the pending approval and both fitted the candidate (seconds each on a large
    database); the slower one then found it resolved. Now the approval is claimed (``job_claims``) before the fit:
    while process A holds the claim, process B's runner leaves it alone; A's claim left unfinished (A died mid-fit)
    is taken over once stale, and the approval carried out once."""
    a, b = two
    pid = _proposal(a)
    at = 2_000.0
    assert begin_approval(a, pid, by=ALICE, now=at, message=ALERT).status == "pending"
    # Process A's runner has claimed the approval and is fitting the candidate.
    assert a.claim_job("retraining_approval", f"{pid}@{at!r}", now=at + 1, owner="host-a:1:runner")

    assert complete_approvals(b, clock=lambda: at + 2) == []  # process B's runner, woken meanwhile
    assert _rows(db_path, "SELECT state FROM retraining_proposals") == [("open",)]
    assert _rows(db_path, "SELECT COUNT(*) FROM model_versions") == [(0,)]
    assert ALICE in json.dumps(_pending(db_path))

    # Process A died mid-fit: its claim, unfinished, is taken over once stale, and the approval carried out once.
    later = at + 3_600
    done = complete_approvals(b, clock=lambda: later, owner="host-b:2:runner")
    assert [d.status for d in done] == ["approved"]
    assert _rows(db_path, "SELECT state, resolved_by FROM retraining_proposals") == [("approved", ALICE)]
    assert _rows(db_path, "SELECT kind FROM outbox") == [("thread_reply",)]
    claims = "SELECT owner, done_at IS NOT NULL FROM job_claims WHERE job = 'retraining_approval'"
    assert _rows(db_path, claims) == [("host-b:2:runner", 1)]
    assert complete_approvals(a, clock=lambda: later + 1) == []
    assert _rows(db_path, "SELECT COUNT(*) FROM model_versions") == [(1,)]


def test_an_approval_given_up_and_clicked_again_is_carried_out_as_the_new_one(
    two: tuple[SQLiteStore, SQLiteStore], db_path: Path
) -> None:
    """Alice's approval could not be carried out (the database refused the result): it is given up and she is told
    privately, with the proposal left open. Bob approves it again. A runner still working on Alice's approval (its
    claim taken over as stale) must not carry out Bob's as hers: before, the proposal was recorded as approved by
    Alice — who had just been told her approval was not recorded — and Bob's click went unnamed."""
    a, b = two
    pid = _proposal(a)
    alice_at, bob_at = 2_000.0, 2_100.0
    assert begin_approval(a, pid, by=ALICE, now=alice_at, message=ALERT).status == "pending"
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE UPDATE ON retraining_proposals "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        assert complete_approvals(a, clock=lambda: alice_at + 5) == []  # given up
        conn.execute("DROP TRIGGER full_disk")
        conn.commit()
    finally:
        conn.close()
    told = _rows(db_path, "SELECT channel, kind, payload FROM outbox")
    assert [(c, k) for c, k, _ in told] == [(ALERT.channel, "ephemeral")]
    assert json.loads(told[0][2])["user"] == ALICE and "click again" in json.loads(told[0][2])["text"]
    assert f"still open until {slack_time(DEADLINE)}" in json.loads(told[0][2])["text"]  # far off: not moved
    assert _rows(db_path, "SELECT state, expires_at FROM retraining_proposals") == [("open", DEADLINE)]
    assert _pending(db_path) == {}

    assert begin_approval(b, pid, by=BOB, now=bob_at, message=ALERT).status == "pending"
    late = resolve(b, pid, approved=True, by=ALICE, now=alice_at, message=ALERT, clock=lambda: bob_at + 1, pending=True)
    assert late.status == "already_resolved" and "being approved by" in late.text and BOB in late.text
    assert _rows(db_path, "SELECT state FROM retraining_proposals") == [("open",)]
    assert BOB in json.dumps(_pending(db_path))

    done = complete_approvals(a, clock=lambda: bob_at + 2)
    assert [d.status for d in done] == ["approved"]
    assert _rows(db_path, "SELECT state, resolved_by FROM retraining_proposals") == [("approved", BOB)]


class OtherProcess:
    """Another process writing to the file: it takes the write lock as the runner's attempt begins (read from the
    runner's clock once the approval is claimed), ``holds`` times, and commits when the runner backs off (its
    ``wait``) or gives up (reads the clock for that)."""

    def __init__(self, path: Path, holds: int) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=0.01)
        self.holds = holds
        self.waits: list[float] = []

    def clock(self) -> float:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        elif self.holds and self.conn.execute("SELECT COUNT(*) FROM job_claims WHERE done_at IS NULL").fetchone()[0]:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.holds -= 1
            except sqlite3.OperationalError:  # the runner is writing: read inside its own transaction
                pass
        return 2_010.0

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        return False

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def impatient(db_path: Path) -> Iterator[SQLiteStore]:
    """A store that stops waiting for another process's write lock at once (``StorageBusy``)."""
    with SQLiteStore(db_path, LoopConfig(), busy_timeout_s=0.02, lock_retries=0) as store:
        yield store


def test_an_approval_the_database_was_locked_for_is_tried_again_not_given_up(
    impatient: SQLiteStore, db_path: Path
) -> None:
    """Another process held the write lock when the result was to be stored (``StorageBusy`` once the busy timeout
    and the store's retries are spent). Before, the approval was given up at once and Alice told to click again;
    now the attempt is made again after a back-off, and the approval carried out."""
    pid = _proposal(impatient)
    assert begin_approval(impatient, pid, by=ALICE, now=2_000.0, message=ALERT).status == "pending"
    other = OtherProcess(db_path, holds=2)
    try:
        done = complete_approvals(impatient, clock=other.clock, wait=other.wait)
    finally:
        other.close()
    assert [d.status for d in done] == ["approved"]
    assert other.waits == list(RETRY_DELAYS_S[:2])  # backed off twice, longer the second time
    assert _rows(db_path, "SELECT state, resolved_by FROM retraining_proposals") == [("approved", ALICE)]
    assert _rows(db_path, "SELECT kind FROM outbox ORDER BY id") == [("thread_reply",)]  # no "click again"
    assert _pending(db_path) == {}


def test_an_approval_the_database_stays_locked_for_is_given_up_after_the_retries(
    impatient: SQLiteStore, db_path: Path
) -> None:
    pid = _proposal(impatient)
    assert begin_approval(impatient, pid, by=ALICE, now=2_000.0, message=ALERT).status == "pending"
    other = OtherProcess(db_path, holds=len(RETRY_DELAYS_S) + 1)
    try:
        assert complete_approvals(impatient, clock=other.clock, wait=other.wait) == []
    finally:
        other.close()
    assert other.waits == list(RETRY_DELAYS_S)  # a bounded number of attempts, then given up
    assert _rows(db_path, "SELECT state FROM retraining_proposals") == [("open",)] and _pending(db_path) == {}
    assert [k for (k,) in _rows(db_path, "SELECT kind FROM outbox")] == ["ephemeral"]


def test_an_approval_whose_retraining_fails_otherwise_is_given_up_at_once(store: SQLiteStore, db_path: Path) -> None:
    """A failure that is not a locked database (here the database refuses the result) would fail again: no retry."""
    pid = _proposal(store)
    assert begin_approval(store, pid, by=ALICE, now=2_000.0, message=ALERT).status == "pending"
    conn = sqlite3.connect(db_path)
    waits: list[float] = []
    try:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON retraining_proposals BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
        assert complete_approvals(store, clock=lambda: 2_010.0, wait=lambda d: waits.append(d) or False) == []
    finally:
        conn.close()
    assert waits == []
    assert [k for (k,) in _rows(db_path, "SELECT kind FROM outbox")] == ["ephemeral"] and _pending(db_path) == {}


def test_a_runner_stopping_during_the_back_off_leaves_the_approval_pending(
    impatient: SQLiteStore, db_path: Path
) -> None:
    """The bot stops while the runner waits to try again: the approval is neither given up nor carried out; its
    claim is given back, so the next start (or the other process) carries it out at once."""
    pid = _proposal(impatient)
    assert begin_approval(impatient, pid, by=ALICE, now=2_000.0, message=ALERT).status == "pending"
    other = OtherProcess(db_path, holds=1)
    try:
        assert complete_approvals(impatient, clock=other.clock, wait=lambda d: other.wait(d) or True) == []
    finally:
        other.close()
    assert ALICE in json.dumps(_pending(db_path)) and _rows(db_path, "SELECT COUNT(*) FROM outbox") == [(0,)]
    assert _rows(db_path, "SELECT owner, done_at FROM job_claims") == [("", None)]  # given back
    assert [d.status for d in complete_approvals(impatient, clock=lambda: 2_020.0)] == ["approved"]


def _refuse(path: Path, sql: str) -> sqlite3.Connection:
    """A trigger standing in for a database that refuses a write (as a full disk would); drop it with ``.close()``."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TRIGGER refused BEFORE {sql} BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    conn.commit()
    return conn


def _allow(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TRIGGER refused")
    conn.commit()
    conn.close()


def _told(path: Path) -> str:
    (payload,) = [p for (p,) in _rows(path, "SELECT payload FROM outbox WHERE kind = 'ephemeral'")]
    return str(json.loads(payload)["text"])


def test_an_approval_given_up_past_its_deadline_leaves_its_approver_time_to_click_again(
    store: SQLiteStore, db_path: Path
) -> None:
    """Alice approved in time (a second before the deadline); the retraining failed after the deadline. Before, she
    was told the proposal was still open and to click again, but her click was refused as expired and the
    meta-monitor expired the proposal. Now the deadline is moved to an hour after the give-up, and she is told so."""
    with store.transaction() as tx:
        pid = tx.open_proposal(OPENED, "drift", expires_at=3_000.0)
    assert begin_approval(store, pid, by=ALICE, now=2_999.0, message=ALERT).status == "pending"
    refusing = _refuse(db_path, "INSERT ON model_versions")  # the candidate model cannot be stored
    assert complete_approvals(store, clock=lambda: 3_001.0) == []  # given up, past the deadline
    _allow(refusing)

    until = 3_001.0 + GIVE_UP_GRACE_S
    text = _told(db_path)
    assert f"still open until {slack_time(until)}" in text and "click again" in text
    assert _rows(db_path, "SELECT state, expires_at FROM retraining_proposals") == [("open", until)]
    (line,) = store.audit_entries(kind="retraining_extended")
    assert line[3] == str(pid) and line[4]["until"] == until and line[4]["approved_by"] == ALICE

    # The meta-monitor's next run (past the old deadline) leaves it open, and Alice's click counts.
    assert run_monitor(store, MonitorConfig(), now=3_600.0, channel=ALERT.channel).expired_proposal is None
    assert begin_approval(store, pid, by=ALICE, now=3_660.0, message=ALERT).status == "pending"
    assert [d.status for d in complete_approvals(store, clock=lambda: 3_665.0)] == ["approved"]
    assert (store.monitor_state().decisions, store.monitor_state().matches) == (1, 1)  # counted toward F_monitor


def test_a_proposal_not_approved_again_in_the_grace_expires_then_uncounted(store: SQLiteStore, db_path: Path) -> None:
    with store.transaction() as tx:
        pid = tx.open_proposal(OPENED, "drift", expires_at=3_000.0)
    assert begin_approval(store, pid, by=ALICE, now=2_999.0, message=ALERT).status == "pending"
    refusing = _refuse(db_path, "INSERT ON model_versions")
    assert complete_approvals(store, clock=lambda: 3_001.0) == []
    _allow(refusing)
    until = 3_001.0 + GIVE_UP_GRACE_S
    assert run_monitor(store, MonitorConfig(), now=until, channel=ALERT.channel).expired_proposal == pid
    assert _rows(db_path, "SELECT state, resolved_at FROM retraining_proposals") == [("expired", until)]
    assert store.monitor_state().decisions == 0  # nothing to judge: F_monitor does not count it


def test_an_approval_given_up_past_a_deadline_that_cannot_be_moved_says_it_expired(
    store: SQLiteStore, db_path: Path
) -> None:
    """The database refuses every change to the proposal (the result, and so the new deadline): Alice is told the
    truth — the deadline has passed — rather than to click again on a proposal the next click finds expired."""
    with store.transaction() as tx:
        pid = tx.open_proposal(OPENED, "drift", expires_at=3_000.0)
    assert begin_approval(store, pid, by=ALICE, now=2_999.0, message=ALERT).status == "pending"
    refusing = _refuse(db_path, "UPDATE ON retraining_proposals")
    assert complete_approvals(store, clock=lambda: 3_001.0) == []
    _allow(refusing)
    text = _told(db_path)
    assert "still open" not in text and "click again" not in text
    assert f"deadline ({slack_time(3_000.0)}) has passed" in text and "new alert if the drift persists" in text
    assert _rows(db_path, "SELECT state, expires_at FROM retraining_proposals") == [("open", 3_000.0)]
    assert _pending(db_path) == {} and store.audit_entries(kind="retraining_extended") == []
    assert begin_approval(store, pid, by=ALICE, now=3_060.0, message=ALERT).status == "expired"  # as she was told


def test_a_click_that_could_not_be_stored_is_told_until_when_the_proposal_is_open(store: SQLiteStore) -> None:
    """Before, whatever the proposal's state, the person was told it was still open and to click again in a minute
    — untrue a minute before its deadline, and after it. Now they are told until when, or that it has passed."""
    pid = _proposal(store)
    assert f"still open until {slack_time(DEADLINE)}" in not_recorded_status(store, pid, DEADLINE - 30)
    passed = not_recorded_status(store, pid, DEADLINE + 1)
    assert "still open" not in passed and "click again" not in passed
    assert f"deadline ({slack_time(DEADLINE)}) has passed" in passed
    assert begin_approval(store, pid, by=ALICE, now=DEADLINE - 60, message=ALERT).status == "pending"
    assert "already being approved by" in not_recorded_status(store, pid, DEADLINE - 30)


def _alert_blocks(pid: int, expires_at: float) -> list[dict[str, Any]]:
    facts = AlertFacts(
        proposal_id=pid, reason="drift", loss=0.5, n_in_window=20, previous_loss=0.1, n_previous=20, threshold=0.3,
        ph_statistic=1.0, ph_threshold=15.0, ph_samples=40, drift_alarm=False, f_monitor=None, keys=[], trend=[],
        trend_chunk=1, expires_at=expires_at,
    )  # fmt: skip
    return alert_blocks(facts)


@pytest.mark.parametrize("deadline", [3_000.0, DEADLINE], ids=["moved", "far off"])
def test_the_alert_of_a_proposal_whose_deadline_moved_names_the_new_one(
    store: SQLiteStore, db_path: Path, deadline: float
) -> None:
    """The approver was told the new deadline, the App Home showed it, but the alert kept the old one. Now the give-up
    that moves the deadline also queues the alert's update (same buttons, the new deadline); one that leaves the
    deadline where it was changes nothing in the alert."""
    with store.transaction() as tx:
        pid = tx.open_proposal(OPENED, "drift", expires_at=deadline)
    blocks = _alert_blocks(pid, deadline)
    assert begin_approval(store, pid, by=ALICE, now=2_999.0, message=ALERT, original_blocks=blocks).status == "pending"
    refusing = _refuse(db_path, "INSERT ON model_versions")
    assert complete_approvals(store, clock=lambda: 3_001.0) == []
    _allow(refusing)
    updates = _rows(db_path, "SELECT channel, payload FROM outbox WHERE kind = 'message_update'")
    if deadline == DEADLINE:
        assert updates == []
        return
    until = 3_001.0 + GIVE_UP_GRACE_S
    ((channel, raw),) = updates
    payload = json.loads(raw)
    assert channel == ALERT.channel and payload["ts"] == ALERT.ts
    shown = json.dumps(payload["blocks"])
    assert slack_time(until) in shown and slack_time(deadline) not in shown
    assert [b["type"] for b in payload["blocks"]] == [b["type"] for b in blocks] + ["context"]  # buttons kept
    assert f"approval by <@{ALICE}> could not be carried out" in payload["text"]


@pytest.mark.parametrize("who", [BOB, ALICE], ids=["someone else", "the approver"])
def test_a_dismiss_after_an_approval_was_given_up_counts_only_if_nobody_disagrees(
    store: SQLiteStore, db_path: Path, who: str
) -> None:
    """Alice approved in time; her approval was given up and the deadline moved an hour on. Before, Bob's Dismiss in
    that hour counted toward F_monitor as the team's answer (a false alarm), though the first answer, given in time,
    was Approve. His Dismiss is still taken (it closes the proposal: the team's answers differ and nothing was
    retrained), but the alert has no single answer to score, so it is not counted — as an expired one is not. Alice
    dismissing it herself changes her own answer: counted, as any Dismiss."""
    with store.transaction() as tx:
        pid = tx.open_proposal(OPENED, "drift", expires_at=3_000.0)
    assert begin_approval(store, pid, by=ALICE, now=2_999.0, message=ALERT).status == "pending"
    refusing = _refuse(db_path, "INSERT ON model_versions")
    assert complete_approvals(store, clock=lambda: 3_001.0) == []
    _allow(refusing)

    done = resolve(store, pid, approved=False, by=who, now=3_200.0, message=ALERT, original_blocks=[{"type": "x"}])
    assert done.status == "dismissed"
    assert _rows(db_path, "SELECT state, resolved_by FROM retraining_proposals") == [("dismissed", who)]
    assert store.monitor_state().open_proposal is False
    (line,) = store.audit_entries(kind="retraining_dismissed")
    update = json.loads(_rows(db_path, "SELECT payload FROM outbox WHERE kind = 'message_update'")[-1][0])
    if who == BOB:
        assert (store.monitor_state().decisions, store.monitor_state().matches) == (0, 0)  # not counted
        assert line[4]["counted"] is False and line[4]["approved_in_time_by"] == [ALICE]
        assert f"by <@{ALICE}>, given in time, could not be carried out" in done.text
        assert "does not count toward F_monitor" in done.text
        assert "not counted toward F_monitor" in update["text"]
    else:
        assert (store.monitor_state().decisions, store.monitor_state().matches) == (1, 0)  # a false alarm
        assert "counted" not in line[4] and "recorded as a false alarm" in done.text
        assert "not counted" not in update["text"]
    assert _rows(db_path, "SELECT value FROM job_state WHERE name = 'retraining_given_up'") == [("{}",)]
