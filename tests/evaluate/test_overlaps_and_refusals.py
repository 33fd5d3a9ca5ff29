"""Counting with overlapping windows, the monitor's schedule, and input the evaluation refuses in one line."""

from __future__ import annotations

import argparse
import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.evaluate.cli import add_evaluate_parser, run_evaluate
from bot.evaluate.errors import DataError
from bot.evaluate.nab import read_nab
from bot.evaluate.smd import read_smd
from npo.bandit import BanditConfig
from npo.evaluate import replay as replay_module
from npo.evaluate.counting import metrics
from npo.evaluate.data import Dataset, FaultWindow, Series
from npo.evaluate.engineers import EngineerConfig, draw_answers
from npo.evaluate.predictor import SeriesPredictions
from npo.evaluate.replay import ReplaySettings, ReplayTrace, build_stream, replay
from npo.loop import InMemoryStore, LoopConfig
from npo.monitor import MonitorConfig
from npo.policy import DEFAULT_POLICY
from npo.types import InvalidRecord

from .conftest import stamp, write_nab, write_smd

HOUR = 3600.0
SPIKE = 288 * 3  # write_nab's spike row: its window is rows SPIKE - 24 … SPIKE + 24
KEY = "hosts/cpu_load_ab12cd.csv"


def main(argv: Sequence[str]) -> int:
    """``npo-bot`` with just the ``evaluate`` sub-command, parsed as ``bot/cli.py`` registers it."""
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    return run_evaluate(parser.parse_args(argv))


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["evaluate", *argv, "--seeds", "1", "--quiet", "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _refused(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 1) -> str:
    """Run ``evaluate`` expecting exit ``status`` (1: the data are refused, 2: an option is) and no traceback;
    returns stderr."""
    try:
        code = main(["evaluate", *argv, "--seeds", "1", "--quiet"])
    except SystemExit as exc:  # argparse refuses the option
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    return err


def _windows(folder: Path, spans: list[tuple[int, int]]) -> None:
    """Rewrite ``windows.json`` of a write_nab folder: the spiky series' windows as (first row, last row)."""
    path = folder / "windows.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data[KEY] = [[stamp(a), stamp(b)] for a, b in spans]
    path.write_text(json.dumps(data), encoding="utf-8")


# --- 1. a window is caught when any surfaced recommendation lies inside it -------------------------------------


def _overlap_dataset() -> Dataset:
    s = Series("a", "cpu", "a", np.arange(20) * 100.0, np.zeros(20))
    windows = (
        FaultWindow("a", 100.0, 500.0, 300.0),  # W0
        FaultWindow("a", 200.0, 400.0, 250.0),  # W1, inside W0
        FaultWindow("a", 200.0, 400.0, 250.0),  # W2, W1 listed twice
        FaultWindow("a", 1000.0, 1100.0, 1050.0),  # W3, never flagged
    )
    return Dataset("t", (s,), windows, horizon_s=HOUR)


def _trace(surfaced: list[bool]) -> ReplayTrace:
    n = len(surfaced)
    return ReplayTrace(np.asarray(surfaced), np.full(n, 0.5), np.zeros(n), np.zeros(n), math.nan, 0)


def test_a_recommendation_inside_overlapping_windows_catches_each_of_them() -> None:
    ds = _overlap_dataset()
    t = np.array([150.0, 300.0, 700.0])  # in W0 only; in W0, W1, W2; in none
    stream = build_stream(ds, [SeriesPredictions("a", np.arange(3), t, np.ones(3), np.full(3, 0.9))])
    assert stream.real_fault.tolist() == [True, True, False]
    onsets = np.asarray([w.onset for w in ds.windows])

    only_middle = metrics(stream, _trace([False, True, False]), onsets, len(ds.windows))
    assert only_middle["precision"] == 1.0
    assert only_middle["recall"] == pytest.approx(3 / 4)  # W0, W1 and W2 caught; W3 missed
    assert only_middle["windows_caught"] == 3
    assert only_middle["lead_time_median_min"] == pytest.approx(-50 / 60)  # leads 0, −50, −50 s

    everything = metrics(stream, _trace([True, True, True]), onsets, len(ds.windows))
    assert everything["precision"] == pytest.approx(2 / 3) and everything["recall"] == pytest.approx(3 / 4)
    # W0's lead counts from the first surfaced recommendation inside it (150), W1's and W2's from 300.
    assert everything["lead_time_median_min"] == pytest.approx(-50 / 60)
    first_only = metrics(stream, _trace([True, False, False]), onsets, len(ds.windows))
    assert first_only["recall"] == pytest.approx(1 / 4) and first_only["lead_time_median_min"] == 2.5


def test_nab_overlapping_or_repeated_windows_are_each_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, spans in (
        ("overlap", [(SPIKE - 24, SPIKE + 24), (SPIKE - 6, SPIKE + 48)]),
        ("repeated", [(SPIKE - 24, SPIKE + 24), (SPIKE - 24, SPIKE + 24)]),
    ):
        folder = write_nab(tmp_path / name)
        _windows(folder, spans)
        out = _json(capsys, "--data", str(folder), "--noise", "0", "--skip-rate", "0")
        assert out["data"]["windows"] == 2 and out["data"]["windows_flagged_by_predictor"] == 2, name
        assert out["surface_all"]["recall"] == 1.0, name
        assert out["surface_all"]["windows_caught"] == 2, name


def test_smd_events_whose_windows_overlap_are_both_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Two events 20 minutes apart: the second's window opens an hour before it, inside the first's.
    folder = write_smd(tmp_path / "smd", events=((2000, 2010), (2030, 2040)))
    ds = read_smd(folder)
    assert len(ds.windows) == 2 and ds.windows[1].start < ds.windows[0].end
    out = _json(capsys, "--data", str(folder), "--noise", "0", "--skip-rate", "0")
    assert out["surface_all"]["recall"] == 1.0 and out["surface_all"]["windows_caught"] == 2


# --- 6. the monitor's checks stop with the data ----------------------------------------------------------------


def test_monitor_checks_stop_at_the_end_of_the_data_whatever_the_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 200  # 200 rows of 5 minutes: the data end after 16.6 h
    grid = np.arange(n) * 300.0
    ds = Dataset("t", (Series("a", "cpu", "a", grid, np.zeros(n)),), (), horizon_s=1e6)
    times = np.array([0.0, 2 * HOUR, 4 * HOUR])
    stream = build_stream(ds, [SeriesPredictions("a", np.arange(3), times, np.ones(3), np.full(3, 0.95))])
    checks: list[float] = []
    original = replay_module.evaluate_monitor

    def counting(*args: Any, **kwargs: Any) -> Any:
        checks.append(float(args[-1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(replay_module, "evaluate_monitor", counting)
    config = LoopConfig(bandit=BanditConfig(thresholds=(0.5,)))
    answers = draw_answers(stream.real_fault, stream.series_index, 1, EngineerConfig(), np.random.default_rng(0))
    replay(
        ds,
        stream,
        answers,
        store=InMemoryStore(config),
        config=config,
        policy=DEFAULT_POLICY,
        rng=np.random.default_rng(1),
        settings=ReplaySettings(monitor=MonitorConfig(min_samples=1)),
    )
    assert checks and max(checks) <= grid[-1]
    assert len(checks) <= int(grid[-1] // HOUR)


def test_an_infinite_horizon_is_refused_by_the_data_set() -> None:
    s = Series("a", "cpu", "a", np.arange(3) * 60.0, np.zeros(3))
    with pytest.raises(InvalidRecord, match="horizon_s"):
        Dataset("t", (s,), (), horizon_s=math.inf)


# --- 2, 3, 8. NAB input refused with the file named -----------------------------------------------------------


def test_nab_window_outside_its_series_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_nab(tmp_path / "nab")
    _windows(folder, [(SPIKE - 24, SPIKE + 24), (288 * 40, 288 * 41)])
    with pytest.raises(DataError, match=r"windows\.json: 'hosts/cpu_load_ab12cd\.csv'\[1\]: window 2024-02-10"):
        read_nab(folder)
    assert "outside the series' time range" in _refused(capsys, "--data", str(folder))
    _windows(folder, [(-300, -200)])  # before the first row
    with pytest.raises(DataError, match=r"\[0\]: window 2023-12-30 .* outside the series' time range"):
        read_nab(folder)
    _windows(folder, [(-24, 12), (288 * 4 - 1, 288 * 5)])  # overlapping either end of the series is fine
    assert len(read_nab(folder).windows) == 2


def test_nab_text_that_is_not_utf8_is_refused_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_nab(tmp_path / "nab")
    csv_path = folder / "hosts" / "quiet_metric.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    lines[5] += ",café"
    csv_path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(DataError, match=r"quiet_metric\.csv:6: not UTF-8"):
        read_nab(folder)
    assert "quiet_metric.csv:6: not UTF-8" in _refused(capsys, "--data", str(folder))

    folder = write_nab(tmp_path / "nab2")
    windows = folder / "windows.json"
    windows.write_bytes(windows.read_bytes().replace(b"{", b'{"note \xe9": [],', 1))
    with pytest.raises(DataError, match=r"windows\.json:1: not UTF-8"):
        read_nab(folder)
    assert "windows.json:1: not UTF-8" in _refused(capsys, "--data", str(folder))


def test_nab_quote_left_open_is_refused_at_the_line_it_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An unclosed double quote takes every later line into one field: in a file of 20 days of 5-minute rows that
    # field passes the csv module's size limit, in a shorter one it runs to the last line.
    for days, message in (
        (20, r"quiet_metric\.csv:11: cannot read the CSV record"),
        (4, r"quiet_metric\.csv:11: expected 2"),
    ):
        folder = write_nab(tmp_path / f"nab{days}", n=288 * days, spikes=(288 * 3,))
        path = folder / "hosts" / "quiet_metric.csv"
        lines = path.read_text(encoding="utf-8").splitlines()
        lines[10] = '"' + lines[10]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=message):
            read_nab(folder)
        err = _refused(capsys, "--data", str(folder))
        assert err.count("\n") == 1 and "quiet_metric.csv:11: " in err


@pytest.mark.parametrize("name", ["windows.json", "labels.json"])
def test_nab_json_nested_too_deeply_is_refused_naming_the_file(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid JSON nested past the decoder's recursion limit: a RecursionError and its traceback, before.
    folder = write_nab(tmp_path / "nab")
    (folder / name).write_text("{" + json.dumps(KEY) + ": " + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(DataError, match=name.replace(".", r"\.") + ": nested too deeply"):
        read_nab(folder)
    err = _refused(capsys, "--data", str(folder))
    assert err.count("\n") == 1 and f"{folder / name}: nested too deeply" in err, err


def test_nab_files_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    plain = read_nab(write_nab(tmp_path / "plain"))
    folder = write_nab(tmp_path / "bom")
    for path in (folder / "hosts" / "cpu_load_ab12cd.csv", folder / "windows.json", folder / "labels.json"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    marked = read_nab(folder)
    assert marked.windows == plain.windows
    assert np.array_equal(marked.series[0].values, plain.series[0].values)


def test_nab_labels_value_that_is_not_a_list_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_nab(tmp_path / "nab")
    (folder / "labels.json").write_text(json.dumps({KEY: stamp(SPIKE)}), encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.json: 'hosts/cpu_load_ab12cd\.csv': expected a list"):
        read_nab(folder)
    assert "labels.json" in _refused(capsys, "--data", str(folder))


# --- 3, 4. SMD input refused with the file named -------------------------------------------------------------


def test_smd_corrupt_gzip_is_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_smd(tmp_path / "smd")
    path = folder / "test" / "machine-9-1.txt.gz"
    path.write_bytes(gzip.compress(b"0.5\n")[:10] + b"\xff" * 64)  # a gzip header, then no valid deflate block
    with pytest.raises(DataError, match=r"machine-9-1\.txt\.gz: corrupt gzip data"):
        read_smd(folder)
    assert "machine-9-1.txt.gz: corrupt gzip data" in _refused(capsys, "--data", str(folder))


def test_smd_labels_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    folder = write_smd(tmp_path / "smd")
    labels = folder / "test_label" / "machine-9-1.txt"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    assert len(read_smd(folder).windows) == 1


def test_text_that_is_not_utf8_is_refused_at_its_line_and_byte_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SMD named only a byte offset into the decompressed text, no line; and after a byte-order mark NAB (and the
    csv format) counted the offset without the mark, so they named the byte three before the bad one (a comma, say)
    and could name the line before it."""
    folder = write_nab(tmp_path / "nab")
    path = folder / "hosts" / "quiet_metric.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3][:-2] + b"\xe9"  # the last digits of row 3 (line 4) in Latin-1
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines))
    with pytest.raises(DataError, match=r"quiet_metric\.csv:4: not UTF-8 text \(byte 0xe9\)"):
        read_nab(folder)
    assert "quiet_metric.csv:4: not UTF-8 text (byte 0xe9)" in _refused(capsys, "--data", str(folder))

    folder = write_smd(tmp_path / "smd")
    path = folder / "test" / "machine-9-1.txt.gz"
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[6] = lines[6].replace(b",", b",\xb5", 1)
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(DataError, match=r"machine-9-1\.txt\.gz:7: not UTF-8 text \(byte 0xb5\)"):
        read_smd(folder)
    assert "machine-9-1.txt.gz:7: not UTF-8 text (byte 0xb5)" in _refused(capsys, "--data", str(folder))


# --- 5, 6, 7, 8. options refused in one line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--seed", "-1"), "argument --seed: expected an integer >= 0, got -1"),
        (("--horizon", "1e307"), "argument --horizon: expected at most 10080 minutes"),
        (("--horizon", "10081"), "argument --horizon: expected at most 10080 minutes"),
        (("--adversarial", "0.05"), "argument --adversarial: expected a multiple of 1/10"),
    ],
)
def test_evaluate_refuses_options_it_cannot_honour(
    nab_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert message in _refused(capsys, "--data", str(nab_dir), *argv, status=2)


def test_evaluate_accepts_the_largest_horizon_and_whole_operator_shares(
    nab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _json(capsys, "--data", str(nab_dir), "--horizon", "10080", "--adversarial", "0.3")
    assert out["data"]["horizon_s"] == 10080 * 60 and out["settings"]["adversarial"] == 0.3


def test_adversarial_share_must_be_a_whole_number_of_operators() -> None:
    with pytest.raises(InvalidRecord, match="adversarial: is a share of 10 operators"):
        EngineerConfig(adversarial=0.05)
    assert EngineerConfig(adversarial=0.3).adversarial_operators == 3
    assert EngineerConfig(adversarial=0.5, n_operators=4).adversarial_operators == 2


def test_evaluate_db_that_is_a_file_is_refused(
    nab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    refused = _refused(capsys, "--data", str(nab_dir), "--db", str(afile), status=2)
    assert f"{afile} is an existing file, not a folder" in refused
    below = _refused(capsys, "--data", str(nab_dir), "--db", str(afile / "sub"), status=2)
    assert f"{afile} is an existing file, not a folder" in below
