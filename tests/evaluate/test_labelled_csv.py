"""The ``csv`` adapter (CSV files with a label column) and `npo-bot evaluate --format csv` on a small folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.evaluate.errors import DataError
from bot.evaluate.formats import guess_format, read_dataset
from bot.evaluate.labelled_csv import read_labelled_csv
from bot.evaluate.nab import parse_time

from .conftest import nab_values, stamp
from .test_evaluate_command import main

N = 288 * 4  # four days of 5-minute rows: the predictor needs a day of history
SPIKE = 288 * 3


def write_csv(folder: Path, *, interleave: bool = True) -> Path:
    """``cpu_load_ab12cd.csv``: two hosts in one file (rows interleaved), a spike labelled on host-a only."""
    folder.mkdir(parents=True)
    a, b = nab_values(N, [SPIKE], seed=1), nab_values(N, [], seed=2)
    rows = ["Timestamp,series,value,Label"]
    for i in range(N):
        label = int(SPIKE <= i < SPIKE + 12)
        pair = [f"{stamp(i)},host-a,{a[i]},{label}", f"{stamp(i)},host-b,{b[i]},0"]
        rows += pair if interleave else pair[:1]
    (folder / "cpu_load_ab12cd.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_a_file_with_a_series_column_gives_one_series_per_value(tmp_path: Path) -> None:
    ds = read_labelled_csv(write_csv(tmp_path / "csv"), horizon_s=1800)
    assert [s.name for s in ds.series] == ["cpu_load_ab12cd/host-a", "cpu_load_ab12cd/host-b"]
    a = ds.series[0]
    assert (a.family, a.target, a.dims, a.times.size) == ("cpu_load", "host-a", 1, N)
    (window,) = ds.windows
    assert window.series == "cpu_load_ab12cd/host-a"
    assert window.onset == parse_time(stamp(SPIKE)) == window.start + 1800
    assert window.end == parse_time(stamp(SPIKE + 11))
    assert guess_format(tmp_path / "csv") == "csv"


def test_without_a_series_column_the_file_is_one_series_and_unix_seconds_work(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "temp.csv").write_text("label,timestamp,a,b\n0,100,1,2\n1,200,1,9\n1,160,1,8\n0,300,1,2\n")
    ds = read_dataset(folder, "csv")
    (series,) = ds.series
    assert series.name == "temp" and series.dims == 2 and series.times.tolist() == [100, 160, 200, 300]
    assert [(w.onset, w.end) for w in ds.windows] == [(160.0, 200.0)]


@pytest.mark.parametrize("ending", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_files_with_windows_or_old_mac_line_endings_read_as_with_newlines(tmp_path: Path, ending: str) -> None:
    plain = read_labelled_csv(write_csv(tmp_path / "lf"))
    folder = write_csv(tmp_path / "other")
    path = folder / "cpu_load_ab12cd.csv"
    path.write_bytes(path.read_bytes().replace(b"\n", ending.encode()))  # a lone \r: Excel's "CSV (Macintosh)"
    ds = read_labelled_csv(folder)
    assert ds.windows == plain.windows
    assert [s.name for s in ds.series] == [s.name for s in plain.series]
    for ours, theirs in zip(ds.series, plain.series, strict=True):
        assert np.array_equal(ours.times, theirs.times) and np.array_equal(ours.values, theirs.values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,value\n1,2\n", r"t.csv:1: no 'label' column"),
        ("timestamp,value,label\n1,2,0\n2,x,0\n", r"t.csv:3: bad value 'x'"),
        ("timestamp,value,label\n1,2,0\n2,3,2\n", r"t.csv:3: label must be 0 or 1"),
        ("timestamp,value,label\n1,2,0\nsoon,3,0\n", r"t.csv:3: bad timestamp 'soon'"),
        ("timestamp,value,label\n1,2,0\n1,3,0\n", r"t.csv:3: two rows of 't' at the same time"),
        ("timestamp,value,label\n1,2,0\n2,3\n", r"t.csv:3: expected 3 columns, got 2"),
        ("timestamp,value,label,\n1,2,0,\n", r"t.csv:1: column 4 of the header has no name"),
        ("timestamp,value,value,label\n1,2,3,0\n", r"t.csv:1: a column is named twice"),
        ("timestamp,label\n1,0\n", r"t.csv:1: no value column"),
        ("timestamp,value,label\n1,nan,0\n", r"t.csv:2: value is not finite"),
        # Unix milliseconds read as seconds put 5-minute rows 3.5 days apart, 11,000 years long: nothing predicted
        ("timestamp,value,label\n1704067200000,2,0\n", r"t.csv:2: timestamp '1704067200000' is past the year 9999"),
    ],
)
def test_malformed_input_is_refused_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_labelled_csv(tmp_path)


def test_a_quote_left_open_is_refused_at_the_line_it_opens(tmp_path: Path) -> None:
    rows = ["timestamp,value,label"] + [f"{i * 60},{i % 7},0" for i in range(20_000)]
    rows[10] = '"' + rows[10]  # takes every later line into one field, past the csv module's size limit
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.csv:11: cannot read the CSV record starting here"):
        read_labelled_csv(tmp_path)


def test_lines_are_counted_in_the_file_not_in_records(tmp_path: Path) -> None:
    text = 'timestamp,series,value,label\n1,"host\na",2,0\n2,b,x,0\n'  # a quoted series name spans two lines
    (tmp_path / "t.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.csv:4: bad value 'x'"):
        read_labelled_csv(tmp_path)


def test_the_command_reads_the_layout_without_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_csv(tmp_path / "csv")
    argv = ["evaluate", "--data", str(folder), "--seeds", "1", "--noise", "0", "--skip-rate", "0", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["windows"] == 1 and out["data"]["series"] == 2
    assert out["surface_all"]["recall"] == 1.0  # the labelled spike is flagged
