"""The meta-monitor on a team that goes quiet, on a real SQLite file: likes, then skips only. The Page–Hinkley
detector is fed the skips (their code λ is above the likes' 0), so it drifts, but silence is no evidence that the
model is wrong: a drift whose change is all skips raises no alert. A real change (overrides among the skips) does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jobs_testing import OPS, prediction, reply, surface_and_post

from bot.jobs.monitor import run_monitor
from bot.jobs.skips import sweep_skips
from bot.retraining import resolve
from npo.feedback import FeedbackCodes
from npo.loop import LoopConfig
from npo.monitor import MonitorConfig
from npo.types import FeedbackKind
from storage import SQLiteStore
from storage.monitoring import open_proposal

T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()


def test_a_drift_in_skips_only_raises_no_alert(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.3))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(200)], posted_at=T0)
        reply(store, 0, [FeedbackKind.LIKE] * 100, at=T0 + 60)
        assert len(sweep_skips(store, now=T0 + 2 * 3600, timeout_s=3600).skipped) == 100
        run = run_monitor(store, MonitorConfig(), now=T0 + 3 * 3600, channel=OPS)
        assert run.drift_alarm  # the detector is fed the skips and is in alarm …
        assert run.loss is not None and abs(run.loss - 0.15) < 1e-9
        assert not run.decision.trigger and run.proposal_id is None  # … but silence raises no alert
        assert run.decision.reason.endswith("; drift in skips only: nobody answered"), run.decision.reason
        assert run.held_alarm is None
        with store.read() as conn:
            assert open_proposal(conn) is None
            # The run's record states the alarm as the run counted it: none (its reason says why).
            assert conn.execute("SELECT drift_alarm FROM monitor_runs ORDER BY id DESC LIMIT 1").fetchone() == (0,)


def test_a_drift_with_overrides_among_the_skips_still_alarms(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.3))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(200)], posted_at=T0)
        reply(store, 0, [FeedbackKind.LIKE] * 100, at=T0 + 60)
        reply(store, 100, [FeedbackKind.OVERRIDE] * 20, at=T0 + 600)
        assert len(sweep_skips(store, now=T0 + 2 * 3600, timeout_s=3600).skipped) == 80
        run = run_monitor(store, MonitorConfig(), now=T0 + 3 * 3600, channel=OPS)
        assert run.decision.trigger and run.proposal_id is not None
        assert "Page-Hinkley drift alarm" in run.decision.reason


def test_monitor_run_records_older_than_90_days_are_pruned(tmp_path: Path) -> None:
    """``monitor_runs`` is a record nothing reads back: each run deletes the oldest ones older than 90 days."""
    day = 86400.0
    with SQLiteStore(tmp_path / "npo.db") as store:
        for d in range(3):
            run_monitor(store, MonitorConfig(), now=T0 + d * day, channel=OPS)
        run_monitor(store, MonitorConfig(), now=T0 + 91.5 * day, channel=OPS)
        with store.read() as conn:
            kept = [at for (at,) in conn.execute("SELECT at FROM monitor_runs ORDER BY id")]
        assert kept == [T0 + 2 * day, T0 + 91.5 * day]


def test_a_held_back_drift_alarm_resting_on_skips_alone_raises_no_alert_later(tmp_path: Path) -> None:
    """A burst of overrides during the cooldown, then the team goes quiet: skips only. The burst's alarm is held
    back; the detector falls back below h on the skips, and after 600 of them its change point lies among them.
    Before, the held alarm stood on the skips alone (their λ 0.3 is above the likes' 0 before the burst) and raised
    "drift alarm held back" once the cooldown was over, on nothing but silence."""
    hour = 3600.0
    config = MonitorConfig()  # θ 0.3, cooldown 6 h, Page–Hinkley δ 0.05, h 15
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.3))) as store:
        surface_and_post(store, [prediction(i, T0 - 2 * hour) for i in range(30 + 160 + 600)], posted_at=T0 - 2 * hour)
        reply(store, 0, [FeedbackKind.LIKE, FeedbackKind.OVERRIDE] * 15, at=T0 - hour)
        first = run_monitor(store, config, now=T0, channel=OPS)
        assert first.proposal_id is not None
        resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 600, message=None)
        reply(store, 30, [FeedbackKind.LIKE] * 100 + [FeedbackKind.OVERRIDE] * 60, at=T0 + 700)
        burst = run_monitor(store, config, now=T0 + hour, channel=OPS)
        assert burst.drift_alarm and burst.decision.reason.startswith("suppressed: cooldown")
        assert burst.held_alarm is not None  # a real change, held back by the cooldown
        assert len(sweep_skips(store, now=T0 + hour + 900, timeout_s=hour, limit=400).skipped) == 400
        run_monitor(store, config, now=T0 + 2 * hour, channel=OPS)  # the burst's alarm is still held back
        assert len(sweep_skips(store, now=T0 + 2 * hour + 900, timeout_s=hour).skipped) == 200
        quiet = run_monitor(store, config, now=T0 + 3 * hour, channel=OPS)
        assert not quiet.drift_alarm and not quiet.decision.trigger
        assert quiet.decision.reason.endswith("; drift in skips only: nobody answered"), quiet.decision.reason
        assert quiet.held_alarm is None  # forgotten: before, it stood on the skips
        runs = [run_monitor(store, config, now=T0 + h * hour, channel=OPS) for h in range(4, 8)]
        assert [run.proposal_id for run in runs] == [None] * 4  # before: an alert at 16:00, on skips alone
        with store.read() as conn:
            assert open_proposal(conn) is None


def test_a_long_silence_reaching_one_run_raises_no_alert(tmp_path: Path) -> None:
    """100 likes, then 1,800 skips reach one run (the monitor was down, or the team went silent): the detector is in
    alarm among the skips, then falls back, and by the last skip its cumulative sum is below the minimum it had at
    the likes — the change point is the last answer, so no answer lies after it. Before, "every answer after the
    change point is a skip" did not hold for want of answers, and the run raised a drift alert on skips alone."""
    hour = 3600.0
    n_likes, n_skips = 100, 1800
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.3))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(n_likes + n_skips)], posted_at=T0)
        reply(store, 0, [FeedbackKind.LIKE] * n_likes, at=T0 + 60)
        first = run_monitor(store, MonitorConfig(), now=T0 + hour, channel=OPS)
        assert not first.drift_alarm and first.proposal_id is None
        skipped = 0
        while batch := len(sweep_skips(store, now=T0 + 2 * hour, timeout_s=hour).skipped):
            skipped += batch
        assert skipped == n_skips
        run = run_monitor(store, MonitorConfig(), now=T0 + 3 * hour, channel=OPS)
        assert run.drift_alarm and run.new_samples == n_skips  # the detector was in alarm among the skips …
        assert not run.decision.trigger and run.proposal_id is None  # … but silence raises no alert
        assert run.decision.reason.endswith("; drift in skips only: nobody answered"), run.decision.reason
        assert run.held_alarm is None
        with store.read() as conn:
            assert open_proposal(conn) is None


def test_a_burst_of_overrides_followed_by_likes_and_a_few_skips_still_alarms(tmp_path: Path) -> None:
    """40 overrides after 100 likes put the detector in alarm between two runs; 200 likes bring its cumulative sum
    below its minimum again, then 5 recommendations go unanswered. The alarm reacted to the overrides, as it does
    without the skips. Before, only the answers after the new minimum were looked at — the 5 skips — and the run
    raised no alert: "drift in skips only: nobody answered"."""
    hour = 3600.0
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.3))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(100 + 240 + 5)], posted_at=T0)
        reply(store, 0, [FeedbackKind.LIKE] * 100, at=T0 + 60)
        assert run_monitor(store, MonitorConfig(), now=T0 + hour, channel=OPS).proposal_id is None
        reply(store, 100, [FeedbackKind.OVERRIDE] * 40 + [FeedbackKind.LIKE] * 200, at=T0 + hour + 60)
        assert len(sweep_skips(store, now=T0 + 3 * hour, timeout_s=hour).skipped) == 5
        run = run_monitor(store, MonitorConfig(), now=T0 + 4 * hour, channel=OPS)
        assert run.drift_alarm
        assert run.decision.trigger and run.proposal_id is not None, run.decision.reason
        assert run.decision.reason == "Page-Hinkley drift alarm"
