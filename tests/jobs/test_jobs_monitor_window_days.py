"""The meta-monitor's L_align window is bounded in time as well as in answers (``MonitorConfig.window_s``,
``NPO_MONITOR_WINDOW_DAYS``, default 7 days: the last 200 answers *and* the last 7 days), on a real SQLite file. In a
quiet team a window of answers alone reached back months; the window before is bounded the same way, and reading the
window costs the same however long the history behind it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jobs_testing import OPS, prediction, surface_and_post
from sqlite_steps import vm_steps

from bot.jobs.monitor import run_monitor
from npo.loop import record_feedback
from npo.monitor import MonitorConfig
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord
from storage import SQLiteStore
from storage.monitoring import monitor_window

DAY = 86_400.0
T0 = datetime(2025, 3, 24, 10, tzinfo=UTC).timestamp()
CONFIG = MonitorConfig(loss_threshold=0.3, window=200, min_samples=30, cooldown_s=6 * 3600)  # window_s: 7 days


def answer(store: SQLiteStore, ids: range, kind: FeedbackKind, *, at: float) -> None:
    with store.transaction() as tx:
        for n, i in enumerate(ids):
            record_feedback(tx, FeedbackEvent(f"p{i}", "U1", kind, at + n, f"r{i}"), config=store.config)


def test_answers_older_than_the_window_do_not_count_toward_l_align(store: SQLiteStore) -> None:
    """20 overrides two months ago (too few to trigger then), 15 this week: 15 answers in the window, not 35."""
    old = T0 - 60 * DAY
    surface_and_post(store, [prediction(i, old) for i in range(20)], posted_at=old)
    answer(store, range(20), FeedbackKind.OVERRIDE, at=old + 60)
    assert not run_monitor(store, CONFIG, now=old + 3600, channel=OPS).decision.trigger
    surface_and_post(store, [prediction(i, T0, fault_type="psu") for i in range(20, 35)], posted_at=T0)
    answer(store, range(20, 35), FeedbackKind.OVERRIDE, at=T0 + 60)
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.n_in_window == 15 and not run.decision.trigger and run.proposal_id is None
    assert run.decision.reason == "no trigger: L_align 1.00 over only 15 answers (< 30); no drift alarm"


def test_the_window_before_is_bounded_the_same_way(store: SQLiteStore) -> None:
    """50 likes a month ago, 10 likes ten days ago, 40 overrides today: the window holds the 40 overrides, the window
    before the 10 likes of the week before it — not the month-old ones."""
    types = ["fan"] * 60 + ["psu"] * 40
    surface_and_post(store, [prediction(i, T0 - 31 * DAY, fault_type=t) for i, t in enumerate(types)], posted_at=T0)
    answer(store, range(50), FeedbackKind.LIKE, at=T0 - 30 * DAY)
    answer(store, range(50, 60), FeedbackKind.LIKE, at=T0 - 10 * DAY)
    answer(store, range(60, 100), FeedbackKind.OVERRIDE, at=T0)
    run = run_monitor(store, CONFIG, now=T0 + 3600, channel=OPS)
    assert run.decision.trigger and run.decision.reason.startswith("L_align 1.00 > 0.30 over 40 answers")
    with store.read() as conn:
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE kind = 'message'").fetchone()
    why = json.dumps(json.loads(payload)["blocks"])
    assert "the 10 answers before: 0.000" in why


def test_reading_the_window_does_not_read_the_history_before_it(tmp_path: Path) -> None:
    """2,000 answers a month ago cost a run that reads this week's window no more than 20 do: the read stops at the
    first answer older than the window (it walks the answers newest first, by row id)."""
    steps = []
    for n_old in (20, 2000):
        with SQLiteStore(tmp_path / f"{n_old}.db") as store:
            surface_and_post(store, [prediction(0, T0 - 31 * DAY), prediction(1, T0, fault_type="psu")], posted_at=T0)
            with store.transaction() as tx:
                for i in range(n_old):
                    event = FeedbackEvent("p0", f"U{i}", FeedbackKind.LIKE, T0 - 30 * DAY + i, f"old{i}")
                    record_feedback(tx, event, config=store.config)
                for i in range(10):
                    event = FeedbackEvent("p1", f"U{i}", FeedbackKind.OVERRIDE, T0 + i, f"new{i}")
                    record_feedback(tx, event, config=store.config)
            with store.read() as conn:
                samples, skipped = monitor_window(conn, 0, 200, not_before=T0 - 7 * DAY)
                assert [s.y for s in samples] == [1.0] * 10 and skipped == 0
                steps.append(vm_steps(conn, lambda: monitor_window(conn, 0, 200, not_before=T0 - 7 * DAY)))
    assert steps[1] <= steps[0] + 10, steps


@pytest.mark.parametrize("window_s", [0.0, -1.0, float("nan"), float("inf")])
def test_the_time_bound_must_be_a_positive_duration(window_s: float) -> None:
    with pytest.raises(InvalidRecord, match=r"monitor\.window_s"):
        MonitorConfig(window_s=window_s)
