"""The meta-monitor on answers that were changed, on a real SQLite file: a click after a skip replaces the skip, and
a person's second click replaces their first. L_align counts each person's current answer only; so does the drift
detector, whether the change came before the run that would have fed the first answer or after it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from jobs_testing import OPS, prediction, reply, surface_and_post

from bot.jobs.monitor import run_monitor
from bot.jobs.skips import sweep_skips
from npo.feedback import FeedbackCodes
from npo.loop import LoopConfig, record_feedback
from npo.monitor import MonitorConfig, PageHinkleyState, page_hinkley_update
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
from storage.monitoring import open_proposal

T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
HOUR = 3600.0
L, OV = FeedbackKind.LIKE, FeedbackKind.OVERRIDE


def _detector(codes: list[float]) -> PageHinkleyState:
    ph = PageHinkleyState()
    for y in codes:
        ph, _ = page_hinkley_update(ph, y, MonitorConfig().page_hinkley)
    return ph


@pytest.mark.parametrize("run_between", [False, True], ids=["same_run", "a_run_between"])
def test_late_likes_replacing_skips_raise_no_drift_alert(tmp_path: Path, run_between: bool) -> None:
    """100 likes in time, then 200 likes given after the skip timeout: every current answer is a like and L_align is
    0.00. Before, the detector was fed each skip (λ 0.3) and then the like that replaced it, and raised "Page-Hinkley
    drift alarm" — a retraining alert on a team that agrees with every recommendation."""
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(codes=FeedbackCodes(0.3))) as store:
        surface_and_post(store, [prediction(i, T0) for i in range(300)], posted_at=T0)
        reply(store, 0, [L] * 100, at=T0 + 60)
        assert len(sweep_skips(store, now=T0 + HOUR + 60, timeout_s=HOUR).skipped) == 200
        if run_between:  # the skips are fed before the likes come: a drift in skips only, no alert
            quiet = run_monitor(store, MonitorConfig(), now=T0 + 2 * HOUR, channel=OPS)
            assert quiet.proposal_id is None and quiet.decision.reason.endswith("drift in skips only: nobody answered")
        reply(store, 100, [L] * 200, at=T0 + 2 * HOUR + 60)  # each replaces its recommendation's skip
        run = run_monitor(store, MonitorConfig(), now=T0 + 3 * HOUR, channel=OPS)
        assert run.loss == 0.0 and run.n_in_window == 200
        assert not run.drift_alarm and run.proposal_id is None, run.decision.reason  # before: an alert
        assert run.decision.reason == "no trigger: L_align 0.00 ≤ 0.30 over 200 answers; no drift alarm"
        assert store.monitor_state().ph == _detector([0.0] * 300)  # the detector over the current answers
        with store.read() as conn:
            assert open_proposal(conn) is None


def test_a_changed_answer_counts_once_in_the_detector(tmp_path: Path) -> None:
    """U1 overrides 10 recommendations and, after the next run, changes each answer to a like: from then on the
    detector holds the likes only, as L_align does (before: 100 likes, 10 overrides and 10 likes)."""
    with SQLiteStore(tmp_path / "npo.db") as store:
        surface_and_post(store, [prediction(i, T0) for i in range(110)], posted_at=T0)
        reply(store, 0, [L] * 100 + [OV] * 10, at=T0 + 60)
        first = run_monitor(store, MonitorConfig(), now=T0 + HOUR, channel=OPS)
        assert first.proposal_id is None and store.monitor_state().ph == _detector([0.0] * 100 + [1.0] * 10)
        with store.transaction() as tx:
            for i in range(100, 110):
                event = FeedbackEvent(f"p{i}", "U1", L, T0 + HOUR + 60 + i, f"again-{i}")
                assert record_feedback(tx, event, config=store.config).status == "replaced"
        run = run_monitor(store, MonitorConfig(), now=T0 + 2 * HOUR, channel=OPS)
        assert run.new_samples == 10 and run.loss == 0.0
        assert store.monitor_state().ph == _detector([0.0] * 110)
