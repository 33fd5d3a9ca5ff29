"""The demo's miss weight (``--miss-weight``, else the bot's default) reaches the running bot's bandit, and the
end-of-run summary says what became of the reliable and the noisy kinds and which τ were drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from demo_testing import SURE_PREDICTION, demo_cli

from bot.cli import main
from bot.config import DEFAULT_MISS_WEIGHT
from bot.demo.runner import Demo, DemoOptions
from bot.demo.surfacing import Decided, KindCounts, surfacing


@pytest.mark.parametrize(("given", "expected"), [(None, DEFAULT_MISS_WEIGHT), (6.5, 6.5), (0.0, 0.0)])
def test_the_running_bot_uses_the_demo_miss_weight(tmp_path: Path, given: float | None, expected: float) -> None:
    replay = tmp_path / "one.jsonl"
    replay.write_text(json.dumps(SURE_PREDICTION) + "\n", encoding="utf-8")
    options = DemoOptions(port=0, db=tmp_path / "demo.db", replay=replay, outcome_delay_s=3600, miss_weight=given)
    demo = Demo(options, say=lambda _: None)
    demo.start()
    try:
        assert demo.bot is not None
        assert demo.bot.settings.miss_weight == expected
        assert demo.bot.store.config.bandit.miss_weight == expected
    finally:
        demo.stop()


@pytest.mark.parametrize("bad", ["-1", "11", "nan", "lots"])
def test_a_bad_miss_weight_is_refused_by_name(tmp_path: Path, bad: str) -> None:
    run = demo_cli("--miss-weight", bad, "--db", str(tmp_path / "x.db"))
    assert run.returncode == 2 and "--miss-weight" in run.stderr and "expected a number in [0, 10]" in run.stderr
    assert not (tmp_path / "x.db").exists()


def test_the_help_states_the_bot_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(0-10; default {DEFAULT_MISS_WEIGHT:g}, the bot's)" in text


def test_surfacing_counts_kinds_by_half_and_tau_by_quarter() -> None:
    decisions = [
        Decided("disk_failure", "surface", 0.5, 10.0),  # first quarter, reliable
        Decided("fan_degraded", "surface", 0.7, 20.0),  # first quarter, noisy
        Decided("nic_flapping", "suppress", 0.9, 30.0),  # second quarter
        Decided("memory_ecc", "suppress", 0.9, 60.0),  # third quarter: the second half begins
        Decided("psu_failure", "digest", 0.6, 80.0),
        Decided("psu_failure", "block", None, 85.0),
        Decided("link_errors", "surface", 0.5, 99.0),
        Decided("link_errors", "suppress", 0.8, 100.0),  # the end itself is in the last quarter
        Decided("my_own_kind", "surface", 0.7, 90.0),  # not a catalogue kind: counts only towards τ
        Decided("disk_failure", "surface", 0.5, 101.0),  # after the end: ignored
    ]
    s = surfacing(decisions, start=0.0, end=100.0)
    assert s.reliable == (KindCounts(1, 1, 0), KindCounts(3, 1, 1))
    assert s.noisy == (KindCounts(2, 1, 1), KindCounts(2, 1, 1))
    assert s.tau_by_quarter == (pytest.approx(0.6), 0.9, 0.9, pytest.approx((0.6 + 0.5 + 0.8 + 0.7) / 4))
    assert s.lines() == [
        "second half: reliable kinds surfaced 1 of 3 (1 suppressed by τ), noisy kinds surfaced 1 of 2",
        "mean τ drawn by quarter of the run: 0.60 → 0.90 → 0.90 → 0.65",
    ]
    replayed = surfacing([Decided("my_own_kind", "surface", 0.6, 5.0)], start=0.0, end=100.0)
    assert replayed.lines() == ["mean τ drawn by quarter of the run: 0.60 → – → – → –"]
