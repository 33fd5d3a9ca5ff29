"""`npo-bot simulate` end to end: the files other tools rely on, in the documented shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_simulate_writes_metrics_plots_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["simulate", "--episodes", "300", "--seeds", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| full |" in printed and "best fixed τ in hindsight" in printed

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["episodes"] == 300 and metrics["seeds"] == 3
    conditions = metrics["conditions"]
    for name in ("full", "fixed_0.7", "best_fixed", "skips_ignored", "no_monitor", "no_miss_term",
                 "eta_constant", "eta_decaying", "no_trust"):  # fmt: skip
        for metric in ("reward", "f1", "precision", "recall", "override_rate", "l_align_first10",
                       "l_align_last10", "true_l_align", "recovery_episodes",
                       "true_l_align_adversarial"):  # fmt: skip
            entry = conditions[name][metric]
            assert set(entry) == {"mean", "ci95"}, (name, metric)
            assert len(entry["ci95"]) == 2

    for png in ("l_align_by_eta.png", "l_align_by_epsilon.png", "npo_vs_fixed.png", "drift_monitor.png",
                "chosen_tau.png"):  # fmt: skip
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, png
    assert (out / "table.md").read_text(encoding="utf-8").startswith("| condition |")


def test_a_recovery_some_seeds_never_made_is_not_reported_as_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 episodes: the drift at 150 leaves 150 episodes, no more than the 150-episode window recovery reads, so
    no seed can show a recovery. Such seeds count as the remaining horizon (150), which is then a lower bound, not
    a measurement: the table marks it and says why, and metrics.json says how many seeds recovered."""
    out = tmp_path / "short"
    assert main(["simulate", "--episodes", "300", "--seeds", "3", "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    full = next(line for line in printed.splitlines() if line.startswith("| full |"))
    assert full.split(" | ")[9] == "≥150"
    assert "never came back near its pre-drift level" in printed and "full 3 of 3" in printed
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["conditions"]["full"]["recovery_episodes"]["mean"] == 150
    assert metrics["conditions"]["full"]["recovered"] == {"mean": 0.0, "ci95": [0.0, 0.0]}


def test_one_seed_is_counted_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--episodes", "10", "--seeds", "1", "--no-plots", "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.startswith("10 episodes × 1 seed in ")


def test_one_seed_writes_no_interval(tmp_path: Path) -> None:
    """With one seed there is no 95 % interval to give: metrics.json holds null bounds, not [mean, mean]."""
    out = tmp_path / "one"
    assert main(["simulate", "--episodes", "300", "--seeds", "1", "--out", str(out), "--no-plots", "--quiet"]) == 0
    full = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["conditions"]["full"]
    assert isinstance(full["reward"]["mean"], float)
    assert all(entry["ci95"] == [None, None] for entry in full.values()), full


def test_metrics_json_is_strict_json(tmp_path: Path) -> None:
    """NaN (e.g. precision when nothing was surfaced) must be written as null, not as a bare NaN token."""
    out = tmp_path / "tiny"
    assert main(["simulate", "--episodes", "20", "--seeds", "1", "--out", str(out), "--no-plots", "--quiet"]) == 0
    text = (out / "metrics.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)


@pytest.mark.parametrize("args", [["--episodes", "0"], ["--seeds", "-2"], ["--episodes", "abc"]])
def test_bad_arguments_are_refused_with_a_message(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "simulate", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "positive integer" in proc.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_too_few_episodes_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--episodes", "5", "--out", str(tmp_path / "x")]) == 2
    assert "at least 10" in capsys.readouterr().err


def test_a_negative_seed_is_refused_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--episodes", "10", "--seeds", "1", "--seed", "-1", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert "argument --seed: expected an integer >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("below", ["", "sub"])
def test_out_that_is_an_existing_file_is_refused_in_one_line(
    below: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--episodes", "10", "--seeds", "1", "--out", str(afile / below), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{afile} is an existing file, not a folder" in err and "Traceback" not in err


PLOTS = ("l_align_by_eta.png", "l_align_by_epsilon.png", "npo_vs_fixed.png", "drift_monitor.png", "chosen_tau.png")


def test_no_plots_into_a_folder_of_an_earlier_run_leaves_none_of_its_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--no-plots`` into the folder of an earlier run left that run's five PNGs beside the new metrics.json and
    table: charts of other figures. The command's own files are replaced or removed; nothing else is touched."""
    out = tmp_path / "run"
    assert main(["simulate", "--episodes", "20", "--seeds", "1", "--out", str(out), "--quiet"]) == 0
    assert all((out / png).is_file() for png in PLOTS)
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    (out / "other.png").write_bytes(PNG_MAGIC)
    assert main(["simulate", "--episodes", "30", "--seeds", "1", "--out", str(out), "--no-plots"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {out / 'metrics.json'}")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt", "other.png", "table.md"]
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["episodes"] == 30
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine\n" and (out / "other.png").read_bytes() == PNG_MAGIC


def test_a_run_that_fails_midway_leaves_no_table_or_plots_of_the_earlier_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plot that cannot be written (exit 1) left the earlier run's table.md and its later plots beside the new
    metrics.json; now the folder holds only what this run wrote. A folder in a plot's place is not deleted."""
    out = tmp_path / "run"
    assert main(["simulate", "--episodes", "20", "--seeds", "1", "--out", str(out), "--quiet"]) == 0
    (out / "drift_monitor.png").unlink()
    (out / "drift_monitor.png").mkdir()
    assert main(["simulate", "--episodes", "30", "--seeds", "1", "--out", str(out), "--quiet"]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["episodes"] == 30
    assert not (out / "table.md").exists() and not (out / "chosen_tau.png").exists()
    assert (out / "drift_monitor.png").is_dir()


def test_pictures_named_like_the_plots_in_a_folder_without_an_earlier_run_are_kept(tmp_path: Path) -> None:
    """Only an earlier run's plots are deleted (it left its metrics.json): a folder of pictures is not emptied."""
    out = tmp_path / "img"
    out.mkdir()
    (out / "chosen_tau.png").write_bytes(PNG_MAGIC)
    assert main(["simulate", "--episodes", "20", "--seeds", "1", "--out", str(out), "--no-plots", "--quiet"]) == 0
    assert (out / "chosen_tau.png").read_bytes() == PNG_MAGIC and (out / "metrics.json").is_file()
