"""The meta-monitor job: L_align and Page–Hinkley over the stored feedback, one open proposal, a cooldown, the
alert queued for the ops channel; and Approve / Dismiss (retraining, F_monitor, exactly once)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jobs_testing import OPS, prediction, surface_and_post
from slack_sdk import WebClient

from bot import retraining
from bot.jobs.build import JobDeps, build_jobs, build_scheduler, monitor_trigger
from bot.jobs.monitor import MONITOR_JOB, run_monitor
from bot.jobs.report import build_report
from bot.jobs.runner import previous_fire_time
from bot.jobs.weekly import WEEK, run_weekly_summary
from bot.retraining import fit_candidate, resolve
from bot.service import MessageRef
from bot.slack.monitor_blocks import ACTION_APPROVE, ACTION_DISMISS, sparkline
from npo.loop import record_feedback
from npo.monitor import MonitorConfig, monitor_fidelity
from npo.retrain import RetrainResult
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
from storage.jobs import claim_count
from storage.monitoring import get_proposal, open_proposal

T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
CONFIG = MonitorConfig(loss_threshold=0.3, window=20, min_samples=10, cooldown_s=6 * 3600)


def answer(store: SQLiteStore, first: int, kinds: list[FeedbackKind], *, at: float, fault_type: str) -> None:
    """Surface len(kinds) recommendations p<first>… and answer each with the given kind."""
    ids = range(first, first + len(kinds))
    surface_and_post(store, [prediction(i, at, fault_type=fault_type) for i in ids], posted_at=at)
    with store.transaction() as tx:
        for n, (i, kind) in enumerate(zip(ids, kinds, strict=True)):
            event = FeedbackEvent(f"p{i}", "U1", kind, at + 1 + n, f"r{i}")
            record_feedback(tx, event, config=store.config)


def alerts(store: SQLiteStore) -> list[dict[str, object]]:
    return [item.payload for item in store.outbox() if item.kind == "message" and item.channel == OPS]


def test_quiet_then_drift_then_one_alert(store: SQLiteStore) -> None:
    answer(store, 0, [FeedbackKind.LIKE] * 20, at=T0, fault_type="disk_failure")
    quiet = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert not quiet.decision.trigger and quiet.loss == 0.0 and quiet.n_in_window == 20 and quiet.new_samples == 20
    assert alerts(store) == []

    # The engineers start overriding one key: L_align over the last 20 answers rises to 0.6.
    answer(store, 100, [FeedbackKind.OVERRIDE] * 12, at=T0 + 4000, fault_type="psu")
    run = run_monitor(store, CONFIG, now=T0 + 7200, channel=OPS)
    assert run.decision.trigger and run.proposal_id is not None and run.new_samples == 12
    assert run.loss == pytest.approx(0.6) and "L_align 0.60 > 0.30" in run.decision.reason
    (alert,) = alerts(store)
    buttons = [e for b in alert["blocks"] if b["type"] == "actions" for e in b["elements"]]  # type: ignore[index, union-attr]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        (ACTION_APPROVE, str(run.proposal_id)),
        (ACTION_DISMISS, str(run.proposal_id)),
    ]
    text = str(alert["blocks"])
    assert "psu|investigate|r#-n#|p&gt;=0.9" in text and "L 1.00 over 12 answer(s)" in text  # the misaligned key
    assert "0.600" in text and "θ = 0.30" in text and "Page–Hinkley" in text and "▁" in text and "█" in text
    with store.read() as conn:
        assert open_proposal(conn) is not None

    # One open proposal at a time: the next run is suppressed and posts nothing, even on new overrides.
    answer(store, 200, [FeedbackKind.OVERRIDE] * 12, at=T0 + 8000, fault_type="fan")
    again = run_monitor(store, CONFIG, now=T0 + 10_800, channel=OPS)
    assert not again.decision.trigger and again.decision.reason.startswith("suppressed: proposal already open")
    assert "over 12 answers since the last proposal" in again.decision.reason
    assert len(alerts(store)) == 1

    # Dismissed: the proposal closes, but the cooldown (6 h from the trigger) still holds the next alert back.
    resolve(store, run.proposal_id, approved=False, by="U2", now=T0 + 11_000, message=None)
    held = run_monitor(store, CONFIG, now=T0 + 7200 + 5 * 3600, channel=OPS)
    assert held.decision.reason.startswith("suppressed: cooldown until")
    after = run_monitor(store, CONFIG, now=T0 + 7200 + 6 * 3600, channel=OPS)
    assert after.decision.trigger and len(alerts(store)) == 2


def test_an_undelivered_alert_is_queued_again_until_it_is_delivered(store: SQLiteStore) -> None:
    answer(store, 100, [FeedbackKind.OVERRIDE] * 12, at=T0, fault_type="psu")
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    (alert,) = [i for i in store.outbox("pending") if i.kind == "message"]
    assert alert.payload["proposal_id"] == run.proposal_id
    # Queued by a version whose alerts did not name their proposal; then the channel was archived.
    with store.transaction() as tx:
        payload = {k: v for k, v in alert.payload.items() if k != "proposal_id"}
        tx.connection.execute("UPDATE outbox SET payload = ? WHERE id = ?", (json.dumps(payload), alert.id))
    assert run_monitor(store, CONFIG, now=T0 + 5400, channel=OPS).resent_alert is None  # still being tried
    store.mark_failed(alert.id, "is_archived")

    again = run_monitor(store, CONFIG, now=T0 + 7200, channel="C0NEWOPS")  # the ops channel setting changed too
    assert again.resent_alert == run.proposal_id and again.proposal_id is None
    (resent,) = [i for i in store.outbox("pending") if i.kind == "message"]
    assert resent.channel == "C0NEWOPS" and resent.payload == {**payload, "proposal_id": run.proposal_id}
    (line,) = store.audit_entries(kind="retraining_alert_resent")
    assert line[3:] == (str(run.proposal_id), {"failed_outbox_id": alert.id, "error": "is_archived"})

    store.mark_sent(resent.id, "C0NEWOPS", "1700000009.000000", at=T0 + 7201)
    assert run_monitor(store, CONFIG, now=T0 + 10_800, channel=OPS).resent_alert is None  # delivered: nothing more
    assert len([i for i in store.outbox() if i.kind == "message"]) == 2
    with store.read() as conn:
        proposal = open_proposal(conn)
    assert proposal is not None and proposal.id == run.proposal_id  # open until someone answers it


def test_approve_retrains_once_and_feeds_f_monitor(store: SQLiteStore) -> None:
    answer(store, 0, [FeedbackKind.LIKE] * 20, at=T0, fault_type="disk_failure")
    answer(store, 100, [FeedbackKind.OVERRIDE] * 12, at=T0 + 4000, fault_type="psu")
    run = run_monitor(store, CONFIG, now=T0 + 7200, channel=OPS)
    assert run.proposal_id is not None
    keys_before = store.keys()
    alert = MessageRef(OPS, "1700000000.000100")
    blocks = alerts(store)[0]["blocks"]
    done = resolve(store, run.proposal_id, approved=True, by="U2", now=T0 + 7300, message=alert, original_blocks=blocks)
    assert done.status == "approved" and done.retrain is not None and done.retrain.promoted
    model = store.model()
    assert model is not None and model.version == 1 and model.n_train == 25  # 32 answers, the last 7 held back
    assert done.keys_reset == len(keys_before) == 2
    for key, state in store.keys().items():  # step sizes restart, m(k) is kept
        assert state.weight_sum == 0 and state.m == keys_before[key].m
    state = store.monitor_state()
    assert (state.decisions, state.matches, state.open_proposal) == (1, 1, False) and monitor_fidelity(state) == 1.0
    with store.read() as conn:
        proposal = get_proposal(conn, run.proposal_id)
    assert proposal is not None and (proposal.state, proposal.resolved_by, proposal.model_version) == (
        "approved",
        "U2",
        1,
    )
    queued = {item.kind: item for item in store.outbox("pending") if item.channel == OPS and item.kind != "message"}
    assert queued["thread_reply"].payload["thread_ts"] == alert.ts
    assert "model *v1* promoted" in str(queued["thread_reply"].payload["text"])
    update = queued["message_update"].payload
    assert update["ts"] == alert.ts and "actions" not in [b["type"] for b in update["blocks"]]  # type: ignore[union-attr]

    audit = len(store.audit_entries())
    second = resolve(
        store, run.proposal_id, approved=True, by="U3", now=T0 + 7400, message=alert, original_blocks=blocks
    )
    assert second.status == "already_resolved"
    assert store.monitor_state() == state and len(store.audit_entries()) == audit
    with store.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 1


def test_a_second_approval_gets_a_new_version_even_when_not_promoted(store: SQLiteStore) -> None:
    answer(store, 0, [FeedbackKind.LIKE] * 20, at=T0, fault_type="disk_failure")
    answer(store, 100, [FeedbackKind.OVERRIDE] * 12, at=T0 + 4000, fault_type="psu")
    first = run_monitor(store, CONFIG, now=T0 + 7200, channel=OPS)
    assert first.proposal_id is not None
    resolve(store, first.proposal_id, approved=True, by="U2", now=T0 + 7300, message=None)
    answer(store, 200, [FeedbackKind.OVERRIDE] * 12, at=T0 + 8000, fault_type="disk_failure")  # new evidence
    second = run_monitor(store, CONFIG, now=T0 + 7200 + 7 * 3600, channel=OPS)
    assert second.proposal_id is not None
    done = resolve(store, second.proposal_id, approved=True, by="U2", now=T0 + 40_000, message=None)
    assert done.retrain is not None and done.retrain.candidate.version == 2
    with store.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 2


def test_the_monitor_job_runs_once_per_slot(store: SQLiteStore, tmp_path: Path, client: WebClient) -> None:
    class Clock:
        now = datetime(2025, 3, 24, 10, 0, 5, tzinfo=UTC)

        def __call__(self) -> datetime:
            return self.now

    clock = Clock()
    deps = JobDeps(store, client, OPS, now=clock, monitor=CONFIG, monitor_interval_min=60)
    with SQLiteStore(tmp_path / "npo.db") as other:
        schedulers = [build_scheduler(deps), build_scheduler(JobDeps(other, client, OPS, now=clock, monitor=CONFIG))]
        assert [s.run_due(MONITOR_JOB) for s in schedulers] == [True, False]
    clock.now = datetime(2025, 3, 24, 11, 0, 0, tzinfo=UTC)
    assert schedulers[0].run_due(MONITOR_JOB)
    with store.read() as conn:
        assert claim_count(conn, MONITOR_JOB) == 2
        assert conn.execute("SELECT COUNT(*) FROM monitor_runs").fetchone()[0] == 2


def test_monitor_slots_are_whole_intervals() -> None:
    trigger = monitor_trigger(60)
    now = datetime(2025, 3, 26, 12, 34, 56, tzinfo=UTC)
    assert previous_fire_time(trigger, now, 2 * (now - now.replace(minute=0, second=0))) == datetime(
        2025, 3, 26, 12, tzinfo=UTC
    )
    assert trigger.get_next_fire_time(None, now) == datetime(2025, 3, 26, 13, tzinfo=UTC)
    assert monitor_trigger(15).get_next_fire_time(None, now) == datetime(2025, 3, 26, 12, 45, tzinfo=UTC)


def test_sparkline() -> None:
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "


def _versions(store: SQLiteStore) -> list[tuple[int, int]]:
    with store.read() as conn:
        return [(int(v), int(p)) for v, p in conn.execute("SELECT version, promoted FROM model_versions ORDER BY 1")]


def test_the_reply_and_audit_name_the_version_stored_after_an_unpromoted_one(store: SQLiteStore) -> None:
    # 12 answers are too few: v1 is recorded, not promoted.
    answer(store, 100, [FeedbackKind.OVERRIDE] * 12, at=T0, fault_type="psu")
    first = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert first.proposal_id is not None
    done = resolve(store, first.proposal_id, approved=True, by="U2", now=T0 + 3700, message=None)
    assert done.retrain is not None and not done.retrain.promoted and _versions(store) == [(1, 0)]

    # Later a mixed picture; the next approval records v2 and promotes it as the first promoted model.
    answer(store, 200, [FeedbackKind.LIKE, FeedbackKind.OVERRIDE] * 12, at=T0 + 4000, fault_type="disk_failure")
    second = run_monitor(store, CONFIG, now=T0 + 3600 + 7 * 3600, channel=OPS)
    assert second.proposal_id is not None
    alert = MessageRef(OPS, "1700000000.000200")
    blocks = alerts(store)[-1]["blocks"]
    done = resolve(
        store, second.proposal_id, approved=True, by="U2", now=T0 + 40_000, message=alert, original_blocks=blocks
    )
    assert done.retrain is not None and done.retrain.promoted and done.retrain.candidate.version == 2
    assert _versions(store) == [(1, 0), (2, 1)]
    model = store.model()
    assert model is not None and model.version == 2
    assert "v2" in done.retrain.reason and "v1" not in done.retrain.reason  # was "promoted: first model v1"
    queued = {item.kind: item.payload for item in store.outbox("pending") if item.kind != "message"}
    reply, update = str(queued["thread_reply"]["text"]), str(queued["message_update"]["text"])
    assert "model *v2* promoted" in reply and "v1" not in reply and reply == done.text
    assert update.endswith("→ model v2 promoted")
    *_, (_, _, _, _, detail) = store.audit_entries(kind="retraining_approved")
    assert detail["model_version"] == 2 and "v2" in str(detail["reason"]) and "v1" not in str(detail["reason"])


def test_approve_on_one_class_feedback_records_but_does_not_promote(store: SQLiteStore) -> None:
    # Every answer overrides one key: nothing to learn from. The old fit ran its bias off (never converged), was
    # promoted and then held every new key back through the model prior (P(override) ≈ 1 for anything).
    answer(store, 0, [FeedbackKind.OVERRIDE] * 25, at=T0, fault_type="disk_failure")
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.proposal_id is not None
    keys_before = store.keys()
    alert = MessageRef(OPS, "1700000000.000300")
    done = resolve(
        store,
        run.proposal_id,
        approved=True,
        by="U2",
        now=T0 + 3700,
        message=alert,
        original_blocks=alerts(store)[0]["blocks"],
    )
    assert done.status == "approved" and done.retrain is not None and not done.retrain.promoted
    why = "not promoted: all 20 training answers have the same feedback code 1 (override), so there is no variation"
    assert done.retrain.reason.startswith(why)
    assert store.model() is None and _versions(store) == [(1, 0)]  # recorded as a version, not promoted
    assert done.keys_reset == 0 and store.keys() == keys_before
    with store.read() as conn:
        proposal = get_proposal(conn, run.proposal_id)
    assert proposal is not None and (proposal.state, proposal.model_version) == ("approved", 1)
    queued = {item.kind: item.payload for item in store.outbox("pending") if item.kind != "message"}
    assert "model *v1* not promoted (scores stay with each key's learned m(k); there is no model yet)" in str(
        queued["thread_reply"]["text"]
    )
    assert "model *v1* not promoted" in str(queued["thread_reply"]["text"]) and why in str(
        queued["thread_reply"]["text"]
    )
    assert str(queued["message_update"]["text"]).endswith("→ model v1 not promoted")
    *_, (_, _, _, _, detail) = store.audit_entries(kind="retraining_approved")
    assert detail["promoted"] is False and str(detail["reason"]).startswith(why)

    # A new scenario is judged on its own, not held back by a runaway model (surface_and_post asserts "surface").
    surface_and_post(store, [prediction(500, T0 + 3800, fault_type="psu")], posted_at=T0 + 3800)


def test_a_model_recorded_while_fitting_is_compared_against_and_numbered_past(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer(store, 0, [FeedbackKind.LIKE] * 20, at=T0, fault_type="disk_failure")
    answer(store, 100, [FeedbackKind.OVERRIDE] * 12, at=T0 + 4000, fault_type="psu")
    run = run_monitor(store, CONFIG, now=T0 + 7200, channel=OPS)
    assert run.proposal_id is not None
    fitted: list[int] = []

    def racing(s: SQLiteStore, *, now: float) -> RetrainResult:
        result = fit_candidate(s, now=now)
        if not fitted:  # meanwhile, another process records and promotes that same model as v1
            with s.transaction() as tx:
                tx.save_model(result.candidate, promoted=True, recorded_at=now)
        fitted.append(result.candidate.version)
        return result

    monkeypatch.setattr(retraining, "fit_candidate", racing)
    done = resolve(store, run.proposal_id, approved=True, by="U2", now=T0 + 7300, message=None)
    assert fitted == [1, 2]  # the stale fit is redone under the write lock, against v1
    assert done.retrain is not None and done.retrain.candidate.version == 2 and not done.retrain.promoted
    assert done.retrain.current_loss == pytest.approx(done.retrain.candidate_loss)  # the same data, the same fit
    assert done.retrain.reason.startswith("not promoted: v2 holdout log loss") and " v1 " in done.retrain.reason
    assert _versions(store) == [(1, 1), (2, 0)]
    model = store.model()
    assert model is not None and model.version == 1


class StartedEarlier:
    """A clock that reads ``first`` once (when a run began: before it waited for the write lock), then the real
    time (when it writes)."""

    def __init__(self, first: datetime) -> None:
        self.first: datetime | None = first

    def __call__(self) -> datetime:
        first, self.first = self.first, None
        return first or datetime.now(UTC)


def test_a_proposal_written_after_the_summary_read_its_week_is_in_the_next_summary(
    store: SQLiteStore, client: WebClient
) -> None:
    """A monitor run begins just before the weekly summary's slot, but writes its proposal only after that slot's
    summary read the week (it waited for the write lock): the proposal is in the next summary, not in neither."""
    answer(store, 0, [FeedbackKind.OVERRIDE] * 12, at=time.time() - 3600, fault_type="psu")
    slot = datetime.now(UTC)
    run_weekly_summary(store, client, OPS, "UTC", slot)  # reads the week: no proposal yet
    deps = JobDeps(store, client, OPS, now=StartedEarlier(slot - timedelta(seconds=1)), monitor=CONFIG)
    (_, monitor, _) = build_jobs(deps)
    monitor.run(slot - timedelta(hours=1))
    with store.read() as conn:
        assert open_proposal(conn) is not None
    assert build_report(store, since=slot, until=slot + WEEK, timezone="UTC").proposals.get("raised") == 1


def test_an_approval_written_after_the_summary_read_its_week_is_in_the_next_summary(
    store: SQLiteStore, client: WebClient
) -> None:
    """Approve is clicked just before the weekly summary's slot; fitting the candidate takes a while, and the answer
    is written after that slot's summary read the week: it is in the next summary, not in neither."""
    answer(store, 0, [FeedbackKind.OVERRIDE] * 12, at=time.time() - 3600, fault_type="psu")
    run = run_monitor(store, CONFIG, now=time.time() - 60, channel=OPS)
    assert run.proposal_id is not None
    slot = datetime.now(UTC)
    run_weekly_summary(store, client, OPS, "UTC", slot)  # reads the week: the proposal is open
    clicked = slot.timestamp() - 1.0
    done = resolve(store, run.proposal_id, approved=True, by="U2", now=clicked, message=None, clock=time.time)
    assert done.status == "approved"
    assert build_report(store, since=slot, until=slot + WEEK, timezone="UTC").proposals.get("approved") == 1
