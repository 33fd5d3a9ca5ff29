"""The NAB and SMD adapters on small folders of the same layout, including malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.evaluate.errors import DataError
from bot.evaluate.formats import guess_format, read_dataset
from bot.evaluate.nab import family_of, parse_time, read_nab
from bot.evaluate.smd import read_smd

from .conftest import stamp


def test_nab_folder_reads_series_windows_and_onsets(nab_dir: Path) -> None:
    ds = read_nab(nab_dir)
    assert [s.name for s in ds.series] == ["hosts/cpu_load_ab12cd", "hosts/quiet_metric"]
    cpu = ds.series[0]
    assert cpu.family == "cpu_load" and cpu.target == "cpu_load_ab12cd" and cpu.dims == 1
    assert cpu.times.size == 288 * 4 and cpu.times[1] - cpu.times[0] == 300
    (window,) = ds.windows
    assert window.series == "hosts/cpu_load_ab12cd"
    assert window.onset == parse_time(stamp(288 * 3))
    assert window.start == parse_time(stamp(288 * 3 - 24)) and window.end == parse_time(stamp(288 * 3 + 24))
    assert guess_format(nab_dir) == "nab"


def test_nab_family_strips_only_a_hex_id() -> None:
    assert family_of("ec2_cpu_utilization_24ae8d") == "ec2_cpu_utilization"
    assert family_of("machine_temperature_system_failure") == "machine_temperature_system_failure"
    assert family_of("grok_asg_anomaly") == "grok_asg_anomaly"


def test_nab_rows_out_of_order_and_repeated_times_are_sorted_and_merged(nab_dir: Path) -> None:
    path = nab_dir / "hosts" / "quiet_metric.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3], lines[4] = lines[4], lines[3]  # out of order
    lines.insert(6, lines[5].split(",")[0] + ",1000")  # a repeated time
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    series = read_nab(nab_dir).series[1]
    assert np.all(np.diff(series.times) > 0) and series.times.size == 288 * 4
    original = float(lines[5].split(",")[1])
    assert series.values[4, 0] == pytest.approx((original + 1000) / 2)


def test_nab_repeated_times_near_the_float_limit_merge_to_their_mean(nab_dir: Path) -> None:
    """Their sum overflows (a numpy warning, then "values must be finite" naming no file); their mean does not.
    Rows of ordinary values merge exactly as before (the test above)."""
    path = nab_dir / "hosts" / "quiet_metric.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    at = lines[5].split(",")[0]
    lines[5] = f"{at},1.7e308"
    lines.insert(6, f"{at},1.5e308")
    lines.insert(7, f"{at},1.6e308")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    series = read_nab(nab_dir).series[1]
    assert series.times.size == 288 * 4
    assert series.values[4, 0] == pytest.approx(1.6e308, rel=1e-12)
    assert np.all(np.isfinite(series.values))


def test_nab_without_windows_json_is_refused_by_name(nab_dir: Path) -> None:
    (nab_dir / "windows.json").unlink()
    with pytest.raises(DataError, match=r"windows\.json: missing"):
        read_nab(nab_dir)


def test_nab_bad_csv_row_names_file_and_line(nab_dir: Path) -> None:
    path = nab_dir / "hosts" / "cpu_load_ab12cd.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[9] = f"{stamp(8)},not-a-number"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cpu_load_ab12cd\.csv:10: bad value 'not-a-number'") as info:
        read_nab(nab_dir)
    assert info.value.line == 10


def test_nab_bad_timestamp_and_wrong_field_count(nab_dir: Path) -> None:
    path = nab_dir / "hosts" / "quiet_metric.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = "yesterday,4.0"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"quiet_metric\.csv:3: bad timestamp 'yesterday'"):
        read_nab(nab_dir)
    lines[2] = f"{stamp(1)},4.0,extra"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"quiet_metric\.csv:3: expected 2 fields"):
        read_nab(nab_dir)


def test_nab_csv_not_listed_or_listed_but_missing(nab_dir: Path) -> None:
    windows = json.loads((nab_dir / "windows.json").read_text(encoding="utf-8"))
    del windows["hosts/quiet_metric.csv"]
    (nab_dir / "windows.json").write_text(json.dumps(windows), encoding="utf-8")
    with pytest.raises(DataError, match=r"no entry for hosts/quiet_metric\.csv"):
        read_nab(nab_dir)
    windows["hosts/quiet_metric.csv"] = []
    windows["hosts/gone.csv"] = []
    (nab_dir / "windows.json").write_text(json.dumps(windows), encoding="utf-8")
    with pytest.raises(DataError, match=r"'hosts/gone\.csv' names no CSV file"):
        read_nab(nab_dir)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("hosts/./quiet_metric.csv", "empty or '.' part"),  # the same file as its own key: its windows twice
        ("hosts//quiet_metric.csv", "empty or '.' part"),
        ("../outside/quiet_metric.csv", r"leaving the folder \(\.\.\)"),
        ("ABSOLUTE", "an absolute path"),
        ("hosts\\quiet_metric.csv", "a backslash"),
    ],
)
def test_nab_key_naming_a_file_outside_the_folder_or_by_a_second_name_is_refused(
    nab_dir: Path, key: str, why: str
) -> None:
    # Each of these named a CSV that exists (a copy outside the folder for "..", the absolute path of one inside
    # for "ABSOLUTE"), and was read: a file outside the data, or a listed series read a second time under another
    # name, its windows counted twice.
    outside = nab_dir.parent / "outside"
    outside.mkdir()
    (outside / "quiet_metric.csv").write_bytes((nab_dir / "hosts" / "quiet_metric.csv").read_bytes())
    if key == "ABSOLUTE":
        key = str(nab_dir / "hosts" / "quiet_metric.csv")
    windows = json.loads((nab_dir / "windows.json").read_text(encoding="utf-8"))
    windows[key] = []
    (nab_dir / "windows.json").write_text(json.dumps(windows), encoding="utf-8")
    with pytest.raises(DataError, match=why) as caught:
        read_nab(nab_dir)
    assert "windows.json" in str(caught.value) and "name a CSV inside the folder" in str(caught.value)


def test_nab_csv_beside_windows_json_or_with_an_upper_case_suffix_needs_an_entry_too(nab_dir: Path) -> None:
    # A listed CSV beside windows.json is read, but an unlisted one there was dropped without a word, and so was an
    # unlisted ".CSV" in a sub-folder, while a listed ".CSV" was refused as naming "no CSV file".
    quiet = (nab_dir / "hosts" / "quiet_metric.csv").read_text(encoding="utf-8")
    windows = json.loads((nab_dir / "windows.json").read_text(encoding="utf-8"))
    (nab_dir / "flat_metric.csv").write_text(quiet, encoding="utf-8")
    with pytest.raises(DataError, match=r"no entry for flat_metric\.csv"):
        read_nab(nab_dir)
    (nab_dir / "flat_metric.csv").unlink()
    (nab_dir / "hosts" / "LOUD_METRIC.CSV").write_text(quiet, encoding="utf-8")
    with pytest.raises(DataError, match=r"no entry for hosts/LOUD_METRIC\.CSV"):
        read_nab(nab_dir)
    windows["hosts/LOUD_METRIC.CSV"] = []
    (nab_dir / "windows.json").write_text(json.dumps(windows), encoding="utf-8")
    names = [s.name for s in read_nab(nab_dir).series]
    assert names == ["hosts/LOUD_METRIC", "hosts/cpu_load_ab12cd", "hosts/quiet_metric"]


def test_nab_hidden_files_need_no_entry(nab_dir: Path) -> None:
    # macOS writes a "._<name>" companion (binary, not UTF-8) beside every file it copies to a non-Mac disk.
    (nab_dir / "hosts" / "._cpu_load_ab12cd.csv").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (nab_dir / ".trash").mkdir()
    (nab_dir / ".trash" / "old.csv").write_text("timestamp,value\n", encoding="utf-8")
    assert [s.name for s in read_nab(nab_dir).series] == ["hosts/cpu_load_ab12cd", "hosts/quiet_metric"]


def test_nab_malformed_windows_json(nab_dir: Path) -> None:
    (nab_dir / "windows.json").write_text('{"hosts/quiet_metric.csv": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"windows\.json:1: not valid JSON"):
        read_nab(nab_dir)


def test_nab_series_listed_twice_is_refused_not_half_dropped(nab_dir: Path) -> None:
    # Two window lists of one series (say, merged by hand): JSON keeps only the last, dropping the spike's window.
    text = (
        "{\n"
        f' "hosts/cpu_load_ab12cd.csv": [["{stamp(288 * 3 - 24)}", "{stamp(288 * 3 + 24)}"]],\n'
        ' "hosts/quiet_metric.csv": [],\n'
        f' "hosts/cpu_load_ab12cd.csv": [["{stamp(288 * 2)}", "{stamp(288 * 2 + 10)}"]]\n'
        "}\n"
    )
    (nab_dir / "windows.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"windows\.json:4: 'hosts/cpu_load_ab12cd\.csv' is listed twice"):
        read_nab(nab_dir)
    labels = '{"hosts/cpu_load_ab12cd.csv": [], "hosts/quiet_metric.csv": [],\n "hosts/cpu_load_ab12cd.csv": []}'
    (nab_dir / "labels.json").write_text(labels, encoding="utf-8")
    no_windows = {"hosts/cpu_load_ab12cd.csv": [], "hosts/quiet_metric.csv": []}
    (nab_dir / "windows.json").write_text(json.dumps(no_windows), encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.json:2: 'hosts/cpu_load_ab12cd\.csv' is listed twice"):
        read_nab(nab_dir)


def test_smd_folder_reads_machine_warmup_and_events(smd_dir: Path) -> None:
    ds = read_smd(smd_dir, horizon_s=1800.0)
    (machine,) = ds.series
    assert machine.name == "machine-9-1" and machine.dims == 4 and machine.warmup == 2000
    assert machine.times.size == 5000 and machine.times[1] == 60.0
    (window,) = ds.windows
    assert window.onset == (2000 + 2000) * 60.0
    assert window.start == window.onset - 1800.0 and window.end == (2000 + 2009) * 60.0
    assert guess_format(smd_dir) == "smd"
    assert read_dataset(smd_dir).horizon_s == 3600.0


def test_smd_touching_label_runs_are_one_event_and_separate_runs_two(tmp_path: Path) -> None:
    from .conftest import write_smd  # noqa: PLC0415

    ds = read_smd(write_smd(tmp_path / "s", events=((100, 105), (105, 110), (500, 503))))
    assert [(w.onset / 60 - 2000, w.end / 60 - 2000) for w in ds.windows] == [(100, 109), (500, 502)]


def test_smd_bad_row_names_file_and_line(smd_dir: Path) -> None:
    import gzip  # noqa: PLC0415

    path = smd_dir / "test" / "machine-9-1.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    lines[41] = "0.1,0.2,oops,0.4"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"machine-9-1\.txt\.gz:42: bad value 'oops'"):
        read_smd(smd_dir)
    lines[41] = "0.1,0.2"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"machine-9-1\.txt\.gz:42: expected 4 comma-separated values, got 2"):
        read_smd(smd_dir)


def test_smd_label_count_must_match_test_rows(smd_dir: Path) -> None:
    path = smd_dir / "test_label" / "machine-9-1.txt"
    path.write_text("0\n" * 10, encoding="utf-8")
    with pytest.raises(DataError, match="10 labels for 3000 test rows"):
        read_smd(smd_dir)
    path.unlink()
    with pytest.raises(DataError, match="missing labels for machine-9-1"):
        read_smd(smd_dir)


def test_smd_a_stray_file_or_two_files_for_one_machine_are_refused_by_name(smd_dir: Path) -> None:
    """A notes file in test/ is named as not a machine file (not "no readable file for notes"), and a machine with
    both a plain and a compressed file is refused rather than read from whichever comes first."""
    import gzip  # noqa: PLC0415

    stray = smd_dir / "test" / "notes.md"
    stray.write_text("how this was exported\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test/notes\.md: not a machine file: expected <machine>\.txt, \.txt\.gz"):
        read_smd(smd_dir)
    stray.rename(smd_dir / "notes.md")  # beside the folders, not in them: not read
    windows = read_smd(smd_dir).windows
    assert windows
    with gzip.open(smd_dir / "test" / "machine-9-1.txt.gz", "rt", encoding="utf-8") as handle:
        text = handle.read()
    plain = smd_dir / "test" / "machine-9-1.txt"
    plain.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"machine-9-1\.txt\.gz: a second file for machine-9-1 beside machine-9-1\.txt"):
        read_smd(smd_dir)
    plain.unlink()
    label = smd_dir / "test_label" / "machine-9-1.txt"
    with gzip.open(smd_dir / "test_label" / "machine-9-1.txt.gz", "wb") as handle:
        handle.write(label.read_bytes())
    with pytest.raises(DataError, match=r"test_label/machine-9-1\.txt\.gz: a second file for machine-9-1"):
        read_smd(smd_dir)
    label.unlink()  # the compressed labels alone are read, the same windows as before
    assert read_smd(smd_dir).windows == windows


def test_unknown_layout_needs_a_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot tell the format"):
        read_dataset(tmp_path)
