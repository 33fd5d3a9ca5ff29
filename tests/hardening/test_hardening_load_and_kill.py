"""One short cycle of the on-demand runs, so CI keeps them working: the mixed load test for two seconds and one
SIGKILL/restart under load. No speed is asserted here (that is the benchmark's job, on a quiet machine); these
check what must hold at any speed: no 5xx, nothing accepted lost, the database intact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the bench package lives at the repository root, beside the installed ones

from bench.load_bench import print_kill_report, rows, run_kill_cycles, run_load  # noqa: E402


@pytest.mark.slow
def test_a_short_mixed_load_run_answers_no_5xx_and_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_load(2.0, smoke=True)
    assert report.server_5xx == 0 and report.transport_errors == 0, (report.errors, report.per_route)
    assert all(p["non_200"] == 0 for p in report.per_route.values()), report.statuses  # none refused either
    assert report.accepted > 1000 and report.missing == 0
    assert {"click", "override", "predictions", "alertmanager", "command", "home"} <= set(report.per_route)
    assert all(p["requests"] > 0 for p in report.per_route.values()), report.per_route
    assert report.rss_peak_mb > 0
    assert any(name.startswith("load test: checks passed") for name, _, _ in rows(report))


@pytest.mark.slow
def test_one_sigkill_under_load_loses_nothing_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_kill_cycles(1, seconds=2.0, drain=False, seed_n=30)
    print_kill_report(report)
    assert report.transport_errors > 0  # the kill did cut requests off mid-load
    failed = [name for name, ok in report.checks().items() if not ok]
    assert not failed, failed
