"""The meta-monitor job over weeks: an alert needs evidence recorded after the last proposal (never the answers an
engineer already approved or dismissed), a drift alarm raised between two runs is not missed, and the detector's
state survives a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from jobs_testing import OPS, reply
from jobs_testing import surface_two_keys as surface

from bot.jobs.monitor import STATE_NAME, run_monitor
from bot.retraining import resolve
from npo.monitor import MonitorConfig, MonitorState, observe_feedback
from npo.types import FeedbackKind
from storage import SQLiteStore
from storage.monitoring import get_job_state, put_job_state

T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
HOUR = 3600.0
OV, L = FeedbackKind.OVERRIDE, FeedbackKind.LIKE
CODE = {OV: 1.0, L: 0.0}


def alerts(store: SQLiteStore) -> int:
    return sum(1 for item in store.outbox() if item.kind == "message" and "proposal_id" in item.payload)


@pytest.mark.parametrize("approved", [False, True], ids=["dismissed", "approved"])
def test_no_second_alert_on_the_answers_already_judged(store: SQLiteStore, approved: bool) -> None:
    """L_align stays at 0.40 (> θ 0.30). Before, with no new answer at all, every run after the 6 h cooldown opened
    a new proposal on the same 100 answers: 12 alerts in 3 days, whatever the engineers answered."""
    config = MonitorConfig()  # θ 0.3, window 200, min_samples 30, cooldown 6 h
    surface(store, 130, at=T0 - 2 * HOUR)
    reply(store, 0, [L, OV, L, OV, L] * 20, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None and first.decision.reason == "L_align 0.40 > 0.30 over 100 answers"
    done = resolve(store, first.proposal_id, approved=approved, by="U2", now=T0 + 600, message=None)
    assert done.status == ("approved" if approved else "dismissed")

    runs = [run_monitor(store, config, now=T0 + hour * HOUR, channel=OPS) for hour in range(1, 49)]  # two days
    assert [hour for hour, run in enumerate(runs, 1) if run.decision.trigger] == []  # before: a new proposal at hour 6
    assert alerts(store) == 1
    assert {run.decision.reason for run in runs} == {"no trigger: no answers since the last proposal; no drift alarm"}

    reply(store, 100, [L, OV, L, OV, L] * 4, at=T0 + 48 * HOUR)  # 20 new answers: fewer than min_samples
    early = run_monitor(store, config, now=T0 + 49 * HOUR, channel=OPS)
    assert not early.decision.trigger and "over only 20 answers since the last proposal" in early.decision.reason
    reply(store, 120, [L, OV, L, OV, L] * 2, at=T0 + 49 * HOUR)  # 30 new answers, still at 0.40
    again = run_monitor(store, config, now=T0 + 50 * HOUR, channel=OPS)
    assert again.decision.trigger and again.n_in_window == 30
    assert again.decision.reason == "L_align 0.40 > 0.30 over 30 answers since the last proposal"
    assert alerts(store) == 2


def test_a_database_whose_last_proposal_predates_the_evidence_mark(store: SQLiteStore) -> None:
    """A proposal opened by a version that stored only the feedback cursor: the answers up to its time are old."""
    config = MonitorConfig()
    surface(store, 100, at=T0 - 2 * HOUR)
    reply(store, 0, [L, OV, L, OV, L] * 20, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    with store.transaction() as tx:
        cursor = get_job_state(tx.connection, STATE_NAME)["feedback_id"]
        put_job_state(tx.connection, STATE_NAME, {"feedback_id": cursor}, T0)  # what that version stored
    resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 600, message=None)
    later = run_monitor(store, config, now=T0 + 7 * HOUR, channel=OPS)
    assert not later.decision.trigger and "since the last proposal" in later.decision.reason
    with store.read() as conn:  # the mark is found from the proposal's time, and kept
        assert get_job_state(conn, STATE_NAME) == {"feedback_id": cursor, "evidence_after": cursor}


def test_the_evidence_mark_of_an_upgraded_database_counts_no_answer_twice(store: SQLiteStore) -> None:
    """A version that stored only the feedback cursor read its clock before it waited for the write lock: 20 answers
    timed after that reading but written before the run were part of the proposal's evidence. Before, the mark was
    looked up by time (the newest answer at or before the trigger), so after the upgrade those 20 counted again as
    answers since the proposal, and with 10 new ones L_align counted 30 and raised a second alert."""
    config = MonitorConfig()
    surface(store, 130, at=T0 - 2 * HOUR)
    reply(store, 0, [L, OV, L, OV, L] * 20, at=T0 - HOUR)
    reply(store, 100, [L, OV, L, OV, L] * 4, at=T0 + 1)  # written before the run, timed after its clock reading
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None and first.n_in_window == 120
    with store.transaction() as tx:
        cursor = get_job_state(tx.connection, STATE_NAME)["feedback_id"]
        put_job_state(tx.connection, STATE_NAME, {"feedback_id": cursor}, T0)  # what that version stored
    resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 600, message=None)
    reply(store, 120, [L, OV, L, OV, L] * 2, at=T0 + 6 * HOUR)  # 10 new answers: fewer than min_samples
    later = run_monitor(store, config, now=T0 + 7 * HOUR, channel=OPS)
    assert later.n_in_window == 10 and not later.decision.trigger, later.decision.reason  # before: 30, an alert
    assert "over only 10 answers since the last proposal" in later.decision.reason
    with store.read() as conn:
        assert get_job_state(conn, STATE_NAME)["evidence_after"] == cursor


def test_a_drift_alarm_raised_between_two_runs_is_not_missed(store: SQLiteStore) -> None:
    """60 overrides, then 200 likes, all within one hour: the statistic rises to ~3 h and falls back before the run.
    Before, the run read only the level at the end and saw no alarm (the simulation counts it)."""
    config = MonitorConfig(loss_threshold=1.0)  # only the detector can trigger
    base, burst = [OV, L, L, L, L] * 80, [OV] * 60 + [L] * 200
    surface(store, len(base) + len(burst), at=T0 - 2 * HOUR)
    reply(store, 0, base, at=T0 - HOUR)
    quiet = run_monitor(store, config, now=T0, channel=OPS)
    assert not quiet.decision.trigger and not quiet.drift_alarm

    state, peak, alarms = MonitorState(), 0.0, 0
    for kind in base + burst:  # the same stream through the detector alone
        state, alarm = observe_feedback(state, CODE[kind], config)
        peak, alarms = max(peak, state.ph.statistic), alarms + alarm
    assert peak > 2 * config.page_hinkley.threshold and alarms > 0
    assert state.ph.statistic < config.page_hinkley.threshold  # back below h by the time of the run

    reply(store, len(base), burst, at=T0 + 600)
    run = run_monitor(store, config, now=T0 + HOUR, channel=OPS)
    assert run.decision.trigger and run.drift_alarm and run.decision.reason == "Page-Hinkley drift alarm"
    (alert,) = [i.payload for i in store.outbox() if i.kind == "message" and "proposal_id" in i.payload]
    assert f"*{state.ph.statistic:.2f}*, up to {peak:.2f} since the previous run" in str(alert["blocks"])
    assert store.monitor_state().ph.n == 0  # the trigger reset the detector


def test_the_detector_continues_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "npo.db"
    stream = [OV, L, L, L, L, L, OV, L] * 50
    reference = MonitorState()
    with SQLiteStore(path) as store:
        surface(store, len(stream), at=T0 - HOUR)
    for run in range(4):  # a new process for every run
        with SQLiteStore(path) as store:
            chunk = stream[run * 100 : (run + 1) * 100]
            reply(store, run * 100, chunk, at=T0 + run * HOUR)
            result = run_monitor(store, MonitorConfig(loss_threshold=1.0), now=T0 + run * HOUR + 60, channel=OPS)
            assert result.new_samples == 100
    for kind in stream:
        reference, _ = observe_feedback(reference, CODE[kind], MonitorConfig())
    with SQLiteStore(path) as store:
        assert store.monitor_state().ph == reference.ph


QUARTER = [OV, L, L, L]  # a quarter of the answers are overrides: L_align 0.25 stays below θ 0.30


def _replay(kinds: list[FeedbackKind]) -> list[bool]:
    """The detector's alarm after each answer, from an empty detector (as it is after a proposal)."""
    state, alarms = MonitorState(), []
    for kind in kinds:
        state, alarm = observe_feedback(state, CODE[kind], MonitorConfig())
        alarms.append(alarm)
    return alarms


def test_a_drift_alarm_held_back_by_the_cooldown_is_raised_once_it_is_over(store: SQLiteStore) -> None:
    """The engineers liked everything; after a dismissed proposal a quarter of their answers become overrides, and
    stay so. Only the detector can see it (L_align 0.25 ≤ θ): it alarms in the second hour of the cooldown and, as
    its running mean catches up with the new level, falls back below h in the last one. Before, that
    alarm was lost: the run after the cooldown saw no alarm and the drift was never reported."""
    config = MonitorConfig()  # θ 0.3, cooldown 6 h, Page–Hinkley δ 0.05, h 15
    after = [L] * 100 + QUARTER * 250  # the answers after the first proposal: 100 likes, then 1,000 at 0.25
    surface(store, 30 + len(after), at=T0 - 2 * HOUR)
    reply(store, 0, [L, OV, L, OV, L] * 6, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 600, message=None)

    alarms = _replay(after)
    up = [i for i, a in enumerate(alarms) if a]
    assert up and 100 <= up[0] < 300 and 700 <= up[-1] < 900  # raised in hour 2, gone in hour 5

    runs = []
    for hour in range(1, 6):  # 100 answers in the first hour, then 200 an hour (hours 2-5 are 1,000 answers)
        batch = after[:100] if hour == 1 else after[100 + (hour - 2) * 200 : 100 + (hour - 1) * 200]
        reply(store, 30 + (0 if hour == 1 else 100 + (hour - 2) * 200), batch, at=T0 + (hour - 1) * HOUR + 700)
        runs.append(run_monitor(store, config, now=T0 + hour * HOUR, channel=OPS))
    assert [run.drift_alarm for run in runs] == [False, True, True, True, True]
    assert all(run.decision.reason.startswith("suppressed: cooldown until 2025-03-24 16:00:00Z") for run in runs[1:])
    assert alerts(store) == 1

    reply(store, 930, after[900:], at=T0 + 5 * HOUR + 700)  # the last 200: the detector no longer alarms ...
    assert not any(alarms[900:])
    over = run_monitor(store, config, now=T0 + 6 * HOUR, channel=OPS)  # ... but the drift is still there
    assert over.decision.trigger and over.proposal_id == first.proposal_id + 1
    assert over.decision.reason.startswith("Page-Hinkley drift alarm held back since 2025-03-24 12:00:00Z")
    assert "average 0.25, above 0.00 before the change" in over.decision.reason
    assert alerts(store) == 2
    with store.read() as conn:
        assert "held_alarm" not in get_job_state(conn, STATE_NAME)  # the alert consumed it
    quiet = run_monitor(store, config, now=T0 + 7 * HOUR, channel=OPS)
    assert not quiet.decision.trigger and not quiet.drift_alarm


def test_an_alert_on_a_held_back_alarm_is_recorded_and_audited_as_a_drift_alarm(store: SQLiteStore) -> None:
    """The alert raised on a drift alarm held back by the cooldown marks the detector's line "alarm"; the run's
    record (``monitor_runs``) and the proposal's audit line say so too. Before, both stored ``drift_alarm`` false:
    the detector was no longer in alarm at that run."""
    config = MonitorConfig()
    after = [L] * 100 + QUARTER * 250
    surface(store, 30 + len(after), at=T0 - 2 * HOUR)
    reply(store, 0, [L, OV, L, OV, L] * 6, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 600, message=None)
    for hour in range(1, 7):
        batch = after[:100] if hour == 1 else after[100 + (hour - 2) * 200 : 100 + (hour - 1) * 200]
        reply(store, 30 + (0 if hour == 1 else 100 + (hour - 2) * 200), batch, at=T0 + (hour - 1) * HOUR + 700)
        run = run_monitor(store, config, now=T0 + hour * HOUR, channel=OPS)
    assert run.proposal_id == first.proposal_id + 1 and not run.drift_alarm  # the detector is out of alarm ...
    assert run.decision.reason.startswith("Page-Hinkley drift alarm held back since")  # ... the held alarm stands
    (alert,) = [i for i in store.outbox() if i.kind == "message" and i.payload.get("proposal_id") == run.proposal_id]
    assert "— *alarm*" in str(alert.payload["blocks"])
    (line,) = [e for e in store.audit_entries(kind="retraining_proposed") if e[3] == str(run.proposal_id)]
    assert line[4]["drift_alarm"] is True
    with store.read() as conn:
        records = conn.execute("SELECT triggered, drift_alarm, reason FROM monitor_runs ORDER BY id").fetchall()
    assert [(triggered, alarm) for triggered, alarm, _ in records] == [
        (1, 0),
        (0, 0),
        (0, 1),
        (0, 1),
        (0, 1),
        (0, 1),
        (1, 1),
    ]
    assert all("drift alarm" in reason for _, alarm, reason in records if alarm)


def test_a_burst_held_back_by_the_cooldown_that_is_over_raises_no_alert(store: SQLiteStore) -> None:
    """A burst of overrides during the cooldown, then likes again: the alarm is remembered, but once the answers
    since it are back at the level before it, it is forgotten — an alert needs the drift to hold."""
    config = MonitorConfig()
    after = [L] * 100 + [OV] * 30 + [L] * 400
    surface(store, 30 + len(after), at=T0 - 2 * HOUR)
    reply(store, 0, [L, OV, L, OV, L] * 6, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 600, message=None)
    reply(store, 30, after[:200], at=T0 + 700)
    burst = run_monitor(store, config, now=T0 + HOUR, channel=OPS)
    assert burst.drift_alarm and burst.decision.reason.startswith("suppressed: cooldown")
    with store.read() as conn:
        assert get_job_state(conn, STATE_NAME)["held_alarm"]["raised_at"] == T0 + HOUR
    reply(store, 230, after[200:], at=T0 + HOUR + 700)
    assert not any(_replay(after)[200:])
    for hour in range(2, 9):
        run = run_monitor(store, config, now=T0 + hour * HOUR, channel=OPS)
        assert not run.decision.trigger and not run.drift_alarm
    assert run.decision.reason.startswith("no trigger: L_align 0.")
    assert alerts(store) == 1
    with store.read() as conn:
        assert "held_alarm" not in get_job_state(conn, STATE_NAME)
