"""An unanswered retraining proposal expires (default: a week after the run that raised it): it is recorded as
expired — neither approved nor dismissed, so F_monitor does not count it — its alert loses its buttons, and the
monitor may raise a new alert on the drift that persists. A click on an expired proposal changes nothing and says
when it expired. Before, a proposal nobody answered stayed open for ever and the monitor never alerted again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from jobs_testing import OPS, reply
from jobs_testing import surface_two_keys as surface

from bot.jobs.monitor import run_monitor
from bot.retraining import resolve
from bot.service import MessageRef
from bot.slack.monitor_blocks import ALERT_HINT_BLOCK_ID
from npo.monitor import MonitorConfig
from npo.types import FeedbackKind
from storage import SQLiteStore
from storage.monitoring import get_proposal, open_proposal

T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
HOUR, DAY = 3600.0, 86_400.0
OV, L = FeedbackKind.OVERRIDE, FeedbackKind.LIKE
MIXED = [L, OV, L, OV, L]  # L_align 0.40 > θ 0.30


def alert_ids(store: SQLiteStore) -> list[int]:
    return [int(i.payload["proposal_id"]) for i in store.outbox() if i.kind == "message" and "proposal_id" in i.payload]


def counts(store: SQLiteStore) -> tuple[int, ...]:
    with store.read() as conn:
        return tuple(
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("audit_log", "model_versions", "outbox", "retraining_proposals")
        )


def test_an_unanswered_proposal_expires_and_persisting_drift_raises_a_new_alert(store: SQLiteStore) -> None:
    config = MonitorConfig()  # θ 0.3, min_samples 30, cooldown 6 h, proposals expire after 7 days
    surface(store, 200, at=T0 - 2 * HOUR)
    reply(store, 0, MIXED * 10, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    reply(store, 50, MIXED * 10, at=T0 + 2 * HOUR)  # the drift persists: 50 new answers, still at 0.40

    # Nobody answers. For a week every run is held back by the open proposal ...
    for hour in (1, 24, 7 * 24 - 1):
        held = run_monitor(store, config, now=T0 + hour * HOUR, channel=OPS)
        assert not held.decision.trigger and held.decision.reason.startswith("suppressed: proposal already open")
    assert alert_ids(store) == [first.proposal_id]

    # ... then the proposal expires, and the same run raises a new alert on the answers recorded since it.
    later = run_monitor(store, config, now=T0 + 7 * DAY, channel=OPS)
    assert later.decision.trigger and later.proposal_id == first.proposal_id + 1
    assert later.decision.reason == "L_align 0.40 > 0.30 over 50 answers since the last proposal"
    assert alert_ids(store) == [first.proposal_id, later.proposal_id]
    with store.read() as conn:
        expired = get_proposal(conn, first.proposal_id)
        current = open_proposal(conn)
    assert expired is not None and (expired.state, expired.resolved_at, expired.resolved_by) == (
        "expired",
        T0 + 7 * DAY,
        None,
    )
    assert current is not None and current.id == later.proposal_id
    state = store.monitor_state()
    assert (state.decisions, state.matches, state.open_proposal) == (0, 0, True)  # F_monitor: nothing to judge
    (line,) = store.audit_entries(kind="retraining_expired")
    assert line[3] == str(first.proposal_id) and line[4]["expired_at"] == T0 + 7 * DAY


def test_a_click_on_an_expired_proposal_records_nothing_and_says_when_it_expired(store: SQLiteStore) -> None:
    config = MonitorConfig()  # proposals expire after 7 days
    surface(store, 100, at=T0 - 2 * HOUR)
    reply(store, 0, MIXED * 10, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    run_monitor(store, config, now=T0 + 7 * DAY, channel=OPS)  # no new answers: it expires, no new alert
    assert alert_ids(store) == [first.proposal_id]
    state, before = store.monitor_state(), counts(store)
    assert not state.open_proposal

    for approved in (True, False):
        done = resolve(
            store, first.proposal_id, approved=approved, by="U2", now=T0 + 8 * DAY, message=MessageRef(OPS, "1.2")
        )
        assert done.status == "expired" and done.retrain is None
        assert done.text.startswith(f"Retraining proposal #{first.proposal_id} expired unanswered at ")
        assert "2025-03-31 10:00 UTC" in done.text  # a week after it was raised
    assert store.monitor_state() == state and counts(store) == before
    with store.read() as conn:
        proposal = get_proposal(conn, first.proposal_id)
    assert proposal is not None and proposal.state == "expired" and proposal.resolved_by is None


def test_a_click_after_the_deadline_is_refused_before_the_monitor_has_run(store: SQLiteStore) -> None:
    """The deadline is the proposal's own: a click between it and the next run is not an answer either."""
    config = MonitorConfig(proposal_expiry_s=2 * DAY)
    surface(store, 100, at=T0 - 2 * HOUR)
    reply(store, 0, MIXED * 10, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    on_time = resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 2 * DAY - 1, message=None)
    assert on_time.status == "dismissed"  # one second before the deadline an answer still counts

    reply(store, 50, MIXED * 10, at=T0 + 2 * DAY)
    raised = T0 + 2 * DAY + HOUR
    second = run_monitor(store, config, now=raised, channel=OPS)
    assert second.proposal_id is not None
    state, before = store.monitor_state(), counts(store)
    late = resolve(store, second.proposal_id, approved=True, by="U2", now=raised + 2 * DAY, message=None)
    assert late.status == "expired" and "2025-03-28 11:00 UTC" in late.text
    assert store.monitor_state() == state and counts(store) == before  # the run records the expiry, not the click
    with store.read() as conn:
        proposal = get_proposal(conn, second.proposal_id)
    assert proposal is not None and proposal.state == "open"
    run_monitor(store, config, now=raised + 2 * DAY + 60, channel=OPS)
    with store.read() as conn:
        proposal = get_proposal(conn, second.proposal_id)
    assert proposal is not None and (proposal.state, proposal.resolved_at) == ("expired", raised + 2 * DAY)
    state = store.monitor_state()
    assert (state.decisions, state.matches) == (1, 0)  # the dismissal counts, the expiry does not


def test_the_expired_alert_loses_its_buttons(store: SQLiteStore) -> None:
    config = MonitorConfig(proposal_expiry_s=DAY)
    surface(store, 100, at=T0 - 2 * HOUR)
    reply(store, 0, MIXED * 10, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    (alert,) = [i for i in store.outbox("pending") if i.kind == "message"]
    store.mark_sent(alert.id, OPS, "1700000000.000777", at=T0 + 1)
    blocks = alert.payload["blocks"]
    assert "actions" in [b["type"] for b in blocks]
    assert "expires" in str(blocks)  # the alert names its deadline

    run = run_monitor(store, config, now=T0 + DAY, channel=OPS)
    assert run.expired_proposal == first.proposal_id
    (update,) = [i for i in store.outbox("pending") if i.kind == "message_update"]
    assert update.channel == OPS and update.payload["ts"] == "1700000000.000777"
    kinds = [b["type"] for b in update.payload["blocks"]]
    shown = [b["type"] for b in blocks if b["type"] != "actions" and b["block_id"] != ALERT_HINT_BLOCK_ID]
    assert "actions" not in kinds and kinds[:-1] == shown
    assert str(update.payload["text"]).startswith(f"Retraining proposal #{first.proposal_id}: Expired unanswered at ")
    assert "expires" not in str(update.payload["blocks"])  # the hint's "if nobody answers, it expires at …" went
    assert run_monitor(store, config, now=T0 + DAY + HOUR, channel=OPS).expired_proposal is None  # once


def test_an_alert_still_queued_when_its_proposal_expires_is_posted_without_buttons(store: SQLiteStore) -> None:
    config = MonitorConfig(proposal_expiry_s=DAY)
    surface(store, 100, at=T0 - 2 * HOUR)
    reply(store, 0, MIXED * 10, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    (alert,) = [i for i in store.outbox("pending") if i.kind == "message"]  # Slack is down: never delivered
    assert "actions" in [b["type"] for b in alert.payload["blocks"]]

    run = run_monitor(store, config, now=T0 + DAY, channel=OPS)
    assert run.expired_proposal == first.proposal_id
    (queued,) = [i for i in store.outbox("pending") if i.kind == "message" and i.id == alert.id]
    kinds = [b["type"] for b in queued.payload["blocks"]]
    assert "actions" not in kinds and ALERT_HINT_BLOCK_ID not in str(queued.payload["blocks"])
    assert "Expired unanswered" in str(queued.payload["blocks"]) and "Expired unanswered" in queued.payload["text"]
    assert queued.payload["proposal_id"] == first.proposal_id  # still recognised as that proposal's alert
    assert [i for i in store.outbox() if i.kind == "message_update"] == []  # nothing posted yet to update


def test_a_drift_alarm_raised_while_the_proposal_was_open_is_alerted_on_when_it_expires(store: SQLiteStore) -> None:
    """Nobody answers; meanwhile a quarter of the answers become overrides (L_align 0.25 ≤ θ: only the detector sees
    it), and the detector's alarm comes and goes while the proposal is open. Expired, the proposal no longer holds
    the alarm back: the same run raises the new alert."""
    config = MonitorConfig()
    after = [L] * 100 + [OV, L, L, L] * 250
    surface(store, 30 + len(after), at=T0 - 2 * HOUR)
    reply(store, 0, MIXED * 6, at=T0 - HOUR)
    first = run_monitor(store, config, now=T0, channel=OPS)
    assert first.proposal_id is not None
    for hour in range(1, 7):
        batch = after[:100] if hour == 1 else after[100 + (hour - 2) * 200 : 100 + (hour - 1) * 200]
        reply(store, 30 + (0 if hour == 1 else 100 + (hour - 2) * 200), batch, at=T0 + (hour - 1) * HOUR + 700)
        run = run_monitor(store, config, now=T0 + hour * HOUR, channel=OPS)
        assert not run.decision.trigger
    assert not run.drift_alarm and run.held_alarm is not None and run.held_alarm.raised_at == T0 + 2 * HOUR
    assert run.decision.reason.startswith("suppressed: proposal already open (Page-Hinkley drift alarm held back")
    with store.read() as conn:  # the run's record names the held alarm, as its reason does
        assert conn.execute("SELECT drift_alarm FROM monitor_runs ORDER BY id DESC LIMIT 1").fetchone() == (1,)

    expired = run_monitor(store, config, now=T0 + 7 * DAY, channel=OPS)
    assert expired.expired_proposal == first.proposal_id and expired.proposal_id == first.proposal_id + 1
    assert expired.decision.reason.startswith("Page-Hinkley drift alarm held back since 2025-03-24 12:00:00Z")
    assert expired.held_alarm is None


def test_a_proposal_stored_without_a_deadline_expires_after_the_configured_time(store: SQLiteStore) -> None:
    """Opened before proposals had a deadline (or by a script): the expiry is counted from when it was opened."""
    config = MonitorConfig(proposal_expiry_s=2 * DAY)
    with store.transaction() as tx:
        proposal = tx.open_proposal(T0, "L_align 0.40 > 0.30 over 100 answers")
        tx.put_monitor_state(replace(tx.get_monitor_state(), last_trigger_at=T0, open_proposal=True))
    assert run_monitor(store, config, now=T0 + 2 * DAY - HOUR, channel=OPS).expired_proposal is None
    before = resolve(store, proposal, approved=False, by="U2", now=T0 + 2 * DAY + 60, message=None)
    assert before.status == "dismissed"  # without a stored deadline, a click counts until the monitor expires it
    with store.transaction() as tx:
        again = tx.open_proposal(T0 + DAY, "L_align 0.40 > 0.30 over 50 answers")
        tx.put_monitor_state(replace(tx.get_monitor_state(), last_trigger_at=T0 + DAY, open_proposal=True))
    run = run_monitor(store, config, now=T0 + 3 * DAY, channel=OPS)
    assert run.expired_proposal == again and not store.monitor_state().open_proposal
    with store.read() as conn:
        stored = get_proposal(conn, again)
    assert stored is not None and (stored.state, stored.resolved_at) == ("expired", T0 + 3 * DAY)
