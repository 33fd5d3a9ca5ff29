"""The meta-monitor on a team that goes quiet, on a real SQLite file: likes, then skips only. The Page–Hinkley
detector is fed the skips (their code λ is above the likes' 0), so it drifts, but silence is no evidence that the
model is wrong: a drift whose change is all skips raises no alert. A real change (overrides among the skips) does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jobs_testing import OPS, prediction, reply, surface_and_post

from bot.jobs.monitor import run_monitor
from bot.jobs.skips import sweep_skips
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
