"""`npo-bot simulate` when something goes wrong: Ctrl-C, an output folder that cannot be written, more episodes
than memory holds, a closed pipe, a terminal that is not UTF-8 — one line each, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bot.simulate
from bot.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--episodes", "20", "--seeds", "1", "--no-plots"]


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _subprocess(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv], cwd=REPO, stderr=subprocess.PIPE, check=False, timeout=120, **kwargs
    )


def test_ctrl_c_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(bot.simulate, "run_experiments", interrupted)
    assert main(["simulate", *QUICK, "--out", str(tmp_path / "out")]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "interrupted" in _one_line(captured.err)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_an_output_file_that_cannot_be_written_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    (out / "table.md").mkdir(parents=True)  # a folder where the table is to be written
    assert main(["simulate", *QUICK, "--out", str(out), "--quiet"]) == 1
    assert _one_line(capsys.readouterr().err) == f"npo-bot simulate: cannot write {out / 'table.md'}: Is a directory"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a place no one can create a folder)")
def test_an_output_folder_that_cannot_be_created_is_refused_before_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_started(*_: Any, **__: Any) -> Any:
        raise AssertionError("the experiments ran although --out cannot be written")

    monkeypatch.setattr(bot.simulate, "run_experiments", not_started)
    out = Path("/proc/npo-simulate-test/out")
    assert main(["simulate", *QUICK, "--out", str(out)]) == 2
    assert _one_line(capsys.readouterr().err).startswith(f"npo-bot simulate: --out {out}: cannot create the folder")


def test_more_episodes_than_memory_holds_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    episodes = 10**15  # 8 PB per array: more than any address space, refused by the first allocation
    assert main(["simulate", "--episodes", str(episodes), "--seeds", "1", "--out", str(tmp_path), "--quiet"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("npo-bot simulate: not enough memory") and f"--episodes {episodes}" in line


@pytest.mark.parametrize(
    ("episodes", "seeds"),
    [(2**63 - 1, 1), (2**63, 1), (20, 2**62), (10**20, 20)],
    ids=["episodes-int64-max", "episodes-past-int64", "seeds-past-any-array", "both"],
)
def test_more_than_any_array_can_hold_is_the_same_one_line(
    episodes: int, seeds: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past what numpy can address at all it refuses with a ValueError, not a MemoryError: the same line, exit 2."""
    out = tmp_path / "out"
    argv = ["simulate", "--episodes", str(episodes), "--seeds", str(seeds), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (
        f"npo-bot simulate: not enough memory for --episodes {episodes} × --seeds {seeds}; "
        "ask for fewer episodes or seeds"
    )
    assert not (out / "metrics.json").exists()


def test_a_reader_that_went_away_is_exit_141_without_a_traceback(tmp_path: Path) -> None:
    """``npo-bot simulate … | head -1``: the reader closes the pipe before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _subprocess(["simulate", *QUICK, "--out", str(tmp_path)], stdout=write_end)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == b""
    assert (tmp_path / "metrics.json").is_file()  # the files were written before the table was printed


def test_the_summary_is_utf8_whatever_the_terminal_encoding(tmp_path: Path) -> None:
    proc = _subprocess(["simulate", *QUICK, "--out", str(tmp_path)], env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert "best fixed τ in hindsight" in proc.stdout.decode("utf-8")
