"""The meta-monitor on a channel nobody answers, on a real SQLite file: with a skip code λ above the loss threshold θ,
a window of skips only has L_align = λ > θ, but silence is no evidence that the model is wrong (and a retraining
could learn nothing from skips alone), so it raises no alert; a window with answers keeps the threshold rule."""

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
CONFIG = MonitorConfig(loss_threshold=0.3, window=200, min_samples=30, cooldown_s=6 * 3600)


def test_a_window_of_skips_only_raises_no_alert_even_with_lambda_above_the_threshold(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.35))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(40)], posted_at=T0)
        assert len(sweep_skips(store, now=T0 + 2 * 3600, timeout_s=3600).skipped) == 40
        run = run_monitor(store, CONFIG, now=T0 + 3 * 3600, channel=OPS)
        assert run.loss is not None and abs(run.loss - 0.35) < 1e-9 and run.n_in_window == 40
        assert not run.decision.trigger and run.proposal_id is None
        assert run.decision.reason == (
            "no trigger: only skips in the window: nobody answered (L_align 0.35 > 0.30 over 40 skips); no drift alarm"
        )
        with store.read() as conn:
            assert open_proposal(conn) is None


def test_a_window_with_answers_among_the_skips_keeps_the_threshold_rule(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.35))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(40)], posted_at=T0)
        reply(store, 0, [FeedbackKind.OVERRIDE] * 2, at=T0 + 60)  # two answers, 38 skips: L_align ≈ 0.38
        assert len(sweep_skips(store, now=T0 + 2 * 3600, timeout_s=3600).skipped) == 38
        run = run_monitor(store, CONFIG, now=T0 + 3 * 3600, channel=OPS)
        assert run.decision.trigger and run.proposal_id is not None
        assert run.decision.reason == "L_align 0.38 > 0.30 over 40 answers"


def test_skips_only_since_the_last_proposal_raise_no_new_alert(tmp_path: Path) -> None:
    """After a proposal the window holds the answers since it; when those are skips only, no new alert."""
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.4))) as store:
        types = ["disk_failure"] * 40 + ["psu"] * 40
        surface_and_post(store, [prediction(i, T0, fault_type=t) for i, t in enumerate(types)], posted_at=T0)
        reply(store, 0, [FeedbackKind.OVERRIDE] * 40, at=T0 + 60)
        first = run_monitor(store, CONFIG, now=T0 + 600, channel=OPS)
        assert first.decision.trigger and first.proposal_id is not None
        resolve(store, first.proposal_id, approved=False, by="U2", now=T0 + 1200, message=None)
        assert len(sweep_skips(store, now=T0 + 2 * 3600, timeout_s=3600).skipped) == 40  # p40…p79, nobody answers
        run = run_monitor(store, CONFIG, now=T0 + 8 * 3600, channel=OPS)
        assert not run.decision.trigger and run.proposal_id is None
        assert run.decision.reason == (
            "no trigger: only skips since the last proposal: nobody answered "
            "(L_align 0.40 > 0.30 over 40 skips); no drift alarm"
        )
