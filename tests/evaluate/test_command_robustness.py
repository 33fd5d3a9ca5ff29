"""`npo-bot evaluate` as a user meets it when something goes wrong: Ctrl-C, a closed pipe, a terminal that is not
UTF-8, a `--db` folder that cannot be used, data the predictor cannot warm up on, and the exit codes (0 ok, 1 the
data are refused, 2 the command line is, 130 interrupted, 141 the reader went away) — one line each, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import bot.evaluate.formats
import bot.evaluate.runner
from bot.evaluate.cli import add_evaluate_parser, run_evaluate
from bot.evaluate.errors import DataError
from bot.evaluate.smd import read_smd

from .conftest import REPO, write_nab, write_smd


def main(argv: Sequence[str]) -> int:
    """``npo-bot`` with just the ``evaluate`` sub-command, parsed as ``bot/cli.py`` registers it."""
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    return run_evaluate(parser.parse_args(argv))


def _code(argv: Sequence[str]) -> int:
    try:
        return main(["evaluate", *argv])
    except SystemExit as exc:  # argparse refuses the option
        return int(exc.code or 0)


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _usage_then_line(err: str) -> str:
    """A refused option: the command's usage (as argparse prints it), then one line, which is returned."""
    assert "Traceback" not in err, err
    assert err.startswith("usage: npo-bot evaluate "), err
    usage, _, rest = err.partition("\nnpo-bot evaluate: ")
    assert all(line.startswith(" ") for line in usage.splitlines()[1:]), err  # the usage's continuation lines
    return _one_line("npo-bot evaluate: " + rest)


def _interrupt(*_: Any, **__: Any) -> Any:
    raise KeyboardInterrupt


def _subprocess(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv], cwd=REPO, stderr=subprocess.PIPE, check=False, timeout=120, **kwargs
    )


# --- Ctrl-C -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["reading", "running"])
def test_ctrl_c_is_one_line_and_exit_130(
    where: str, nab_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if where == "reading":  # e.g. SMD's gzip text, several seconds
        monkeypatch.setattr(bot.evaluate.formats, "read_dataset", _interrupt)
    else:  # the predictor or the loop, the rest of the run
        monkeypatch.setattr(bot.evaluate.runner, "predict", _interrupt)
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--json"]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-printed on stdout
    assert "interrupted" in _one_line(captured.err)


# --- stdout -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [True, False])
def test_a_reader_that_went_away_is_exit_141_without_a_traceback(nab_dir: Path, as_json: bool) -> None:
    """``npo-bot evaluate … | head -1``: the reader closes the pipe before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _subprocess(
            ["evaluate", "--data", str(nab_dir), "--seeds", "1", *(["--json"] if as_json else [])], stdout=write_end
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == b""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_stdout_that_cannot_be_written_is_one_line(nab_dir: Path) -> None:
    """``npo-bot evaluate … > file`` on a full disk."""
    with open("/dev/full", "wb") as full:
        proc = _subprocess(["evaluate", "--data", str(nab_dir), "--seeds", "1"], stdout=full)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "npo-bot evaluate: cannot write the result to stdout: No space left on device\n"


def test_a_closed_stdout_is_one_line_not_a_silent_success(nab_dir: Path) -> None:
    """``npo-bot evaluate … >&-``: Python starts with no stdout at all; the figures must not vanish without a word."""
    proc = _subprocess(["evaluate", "--data", str(nab_dir), "--seeds", "1"], preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1
    assert proc.stderr.decode() == "npo-bot evaluate: stdout is closed; nothing was printed\n"


def test_the_table_is_utf8_whatever_the_terminal_encoding(nab_dir: Path) -> None:
    proc = _subprocess(
        ["evaluate", "--data", str(nab_dir), "--seeds", "1"], env={**os.environ, "PYTHONIOENCODING": "ascii"}
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "| fixed τ = 0.5 |" in proc.stdout.decode("utf-8")


# --- --db -------------------------------------------------------------------------------------------------------


def test_a_db_folder_whose_database_path_is_taken_by_a_folder_is_one_line(
    nab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "dbs"
    (db / "evaluate-npo-seed0.db-wal").mkdir(parents=True)
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--db", str(db)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_line(captured.err)
    assert line.startswith(f"npo-bot evaluate: --db {db}:") and "evaluate-npo-seed0.db-wal" in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a place no one can create a folder)")
def test_a_db_folder_that_cannot_be_created_is_refused_before_the_run(
    nab_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.evaluate.runner, "predict", _interrupt)  # the run must not start
    db = Path("/proc/npo-evaluate-test/dbs")
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--db", str(db)]) == 2
    line = _usage_then_line(capsys.readouterr().err)
    assert line.startswith(f"npo-bot evaluate: --db {db}: cannot create the folder")


@pytest.mark.parametrize("below", ["", "dbs", "hosts"])
def test_a_db_folder_inside_the_data_folder_is_refused(
    below: str, nab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data are read in place and never written: SQLite files in an SMD ``test/`` folder would even be taken
    for a machine by the next run."""
    before = sorted(p.relative_to(nab_dir) for p in nab_dir.rglob("*"))
    db = nab_dir / below
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--db", str(db)]) == 2
    line = _usage_then_line(capsys.readouterr().err)
    assert f"--db {db}" in line and "inside the data folder" in line
    assert sorted(p.relative_to(nab_dir) for p in nab_dir.rglob("*")) == before


# --- --data -----------------------------------------------------------------------------------------------------


def test_data_that_is_a_file_is_a_usage_error(nab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    windows = nab_dir / "windows.json"
    assert _code(["--data", str(windows), "--format", "nab"]) == 2
    line = _usage_then_line(capsys.readouterr().err)
    assert line == f"npo-bot evaluate: error: argument --data: {windows} is a file, not a folder"


def test_every_refused_option_is_the_usage_then_one_line(
    nab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the README has it: "a refused option: the command's usage, then that line" — also for the options
    refused once the command line is parsed (a --data that is a file or names nothing, options that only together
    are wrong, a --db folder inside the data or one that cannot be written), which printed the line alone."""
    monkeypatch.setattr(bot.evaluate.runner, "predict", _interrupt)  # no run may start
    cases = {
        "a file": ["--data", str(nab_dir / "windows.json")],
        "nothing": ["--data", str(tmp_path / "absent")],
        "--model-prior-strength": ["--data", str(nab_dir), "--model-prior-strength", "3"],
        "--pool-strength": ["--data", str(nab_dir), "--pool-strength", "4"],
        "inside": ["--data", str(nab_dir), "--db", str(nab_dir / "dbs")],
    }
    if Path("/proc/self").is_dir():  # Linux /proc: a place no one can create a folder in
        cases["cannot be created"] = ["--data", str(nab_dir), "--db", "/proc/npo-evaluate-test/dbs"]
    for name, argv in cases.items():
        assert _code(argv) == 2, name
        captured = capsys.readouterr()
        assert captured.out == "", name
        _usage_then_line(captured.err)


def test_a_pool_strength_without_pooling_is_refused_not_ignored(
    nab_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooling is off by default, so ``--pool-strength 4`` alone ran the default figures while the JSON's
    ``settings`` said ``pool_strength: 4``: a measurement of n₀ that measured nothing. Refused as
    ``--model-prior-strength`` without ``--retrain`` is."""
    monkeypatch.setattr(bot.evaluate.runner, "predict", _interrupt)  # no run may start
    for argv in (["--pool-strength", "4"], ["--no-pool-keys", "--pool-strength", "1"]):
        assert _code(["--data", str(nab_dir), *argv]) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        assert _usage_then_line(captured.err).startswith("npo-bot evaluate: --pool-strength needs --pool-keys")


# --- exit codes -------------------------------------------------------------------------------------------------


def test_exit_codes_tell_refused_data_from_a_refused_command_line(
    nab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _code(["--data", str(nab_dir), "--seeds", "1", "--json"]) == 0
    capsys.readouterr()
    for argv in (["--seeds", "0"], ["--noise", "2"], ["--skip-rate", "-1"], ["--adversarial", "nan"]):
        assert _code(["--data", str(nab_dir), *argv]) == 2, argv
        assert "Traceback" not in capsys.readouterr().err
    assert _code(["--data", str(tmp_path / "absent")]) == 2  # the option names nothing
    capsys.readouterr()
    csv_path = nab_dir / "hosts" / "quiet_metric.csv"
    csv_path.write_text("timestamp,value\n", encoding="utf-8")  # a header only
    assert _code(["--data", str(nab_dir), "--seeds", "1"]) == 1
    assert _one_line(capsys.readouterr().err) == f"npo-bot evaluate: {csv_path}: no data rows"
    (tmp_path / "empty").mkdir()
    assert _code(["--data", str(tmp_path / "empty")]) == 1
    assert "cannot tell the format" in _one_line(capsys.readouterr().err)


# --- data the predictor cannot use ------------------------------------------------------------------------------


def test_series_shorter_than_the_predictors_warm_up_are_named_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_nab(tmp_path / "nab", n=200, spikes=(150,))  # 200 rows of 5 minutes: 16.6 h
    assert main(["evaluate", "--data", str(folder), "--seeds", "1", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # stdout stays one JSON object
    assert out["data"]["predictions"] == 0
    assert "2 of 2 series span less than" in captured.err
    assert "hosts/cpu_load_ab12cd (16.6 h)" in captured.err and "hosts/quiet_metric (16.6 h)" in captured.err
    assert "Traceback" not in captured.err


def test_one_short_series_is_named_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_nab(tmp_path / "nab")  # two series of 4 days
    quiet = folder / "hosts" / "quiet_metric.csv"
    quiet.write_text("".join(quiet.read_text(encoding="utf-8").splitlines(keepends=True)[:201]), encoding="utf-8")
    assert main(["evaluate", "--data", str(folder), "--seeds", "1", "--json", "--quiet"]) == 0
    line = _one_line(capsys.readouterr().err)
    assert "note: 1 of 2 series spans less than the 24 h of history" in line, line
    assert line.endswith("so nothing is predicted on it: hosts/quiet_metric (16.6 h)"), line


def test_series_long_enough_print_no_note(nab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_windows_closing_before_the_predictor_can_predict_are_named_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A window in the first hours of a series of four days can never be caught (the predictor needs a day of
    scores first), yet recall counts it: the run says so rather than report a recall it could never reach."""
    folder = write_nab(tmp_path / "nab", spikes=(24, 288 * 3))  # the first window: rows 0–48, the first 4 hours
    assert main(["evaluate", "--data", str(folder), "--seeds", "1", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)["data"]
    assert data["windows"] == 2 and data["windows_before_predictor_ready"] == 1
    assert data["series_of_windows_before_predictor_ready"] == ["hosts/cpu_load_ab12cd"]
    line = _one_line(captured.err)
    assert "note: 1 of 2 labelled windows close before the predictor has the history" in line, line
    assert line.endswith("recall counts them: hosts/cpu_load_ab12cd"), line


def test_smd_labels_without_a_test_file_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A machine whose test file is missing (or misnamed) would otherwise be dropped, its faults with it."""
    folder = write_smd(tmp_path / "smd")
    extra = folder / "test_label" / "machine-9-2.txt"
    extra.write_text("0\n1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test_label/machine-9-2\.txt: labels for machine-9-2 but no test file"):
        read_smd(folder)
    assert _code(["--data", str(folder), "--seeds", "1"]) == 1
    assert "machine-9-2" in _one_line(capsys.readouterr().err)
    extra.unlink()
    history = folder / "train" / "machine-9-3.txt"  # a train file whose machine has no test file: misnamed
    history.parent.mkdir(exist_ok=True)
    history.write_text("0.1,0.2,0.3,0.4\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train/machine-9-3\.txt: history for machine-9-3 but no test file"):
        read_smd(folder)


@pytest.mark.parametrize("fmt", ["nab", "smd"])
def test_a_data_folder_given_as_dot_keeps_its_name(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = (write_nab if fmt == "nab" else write_smd)(tmp_path / f"my-{fmt}")
    monkeypatch.chdir(folder / ("hosts" if fmt == "nab" else "test"))
    assert main(["evaluate", "--data", "..", "--seeds", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["name"] == f"my-{fmt}"
    monkeypatch.chdir(folder)
    assert main(["evaluate", "--data", ".", "--seeds", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"my-{fmt} ({fmt}): ")


def test_seeds_are_capped_so_a_typo_cannot_fill_the_memory(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["evaluate", "--seeds", "10000"]).seeds == 10_000
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["evaluate", "--seeds", "1000000000"])
    assert info.value.code == 2
    assert "argument --seeds: expected a positive integer, at most 10000, got 1000000000" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "smd"])
def test_a_file_name_that_is_not_utf8_is_refused_naming_it_with_either_store(fmt: str, tmp_path: Path) -> None:
    """A series is named after its file, and a Latin-1 file name (``caf\\xe9.csv``) came through as lone
    surrogates: the in-memory store carried them into the output, and with ``--db`` the first insert failed with a
    traceback. Now the data are refused before the run, the series named, exit 1, whichever the store."""
    if fmt == "csv":
        folder = tmp_path / "csv"
        folder.mkdir()
        paths = [folder / os.fsdecode(b"caf\xe9.csv")]
    else:
        folder = write_smd(tmp_path / "smd")
        paths = [folder / sub / os.fsdecode(b"caf\xe9.txt") for sub in ("test", "test_label")]
    try:
        for path in paths:
            path.write_text("timestamp,value,label\n0,1,0\n60,2,0\n" if fmt == "csv" else "0\n", encoding="utf-8")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 file names")
    for store in ([], ["--db", str(tmp_path / "db")]):
        run = _subprocess(["evaluate", "--data", str(folder), "--format", fmt, "--seeds", "1", "--quiet", *store])
        line = _one_line(run.stderr.decode("utf-8", "backslashreplace"))
        assert run.returncode == 1, line
        assert "series caf\\xe9" in line and "is not UTF-8: rename the file" in line, line


def test_a_labels_key_naming_no_series_is_noted_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NAB's own labels file covers more series than a folder may hold: a key of labels.json that windows.json does
    not list is said on stderr (a typo shows), not taken without a word and not refused."""
    folder = write_nab(tmp_path / "nab")
    assert _code(["--data", str(folder), "--seeds", "1", "--quiet"]) == 0
    assert "labels.json" not in capsys.readouterr().err
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    labels["hosts/cpu_laod_ab12cd.csv"] = labels["hosts/cpu_load_ab12cd.csv"]
    (folder / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    assert _code(["--data", str(folder), "--seeds", "1", "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line == (
        "npo-bot evaluate: note: labels.json: 1 key(s) name no series of windows.json, their labels unused: "
        "'hosts/cpu_laod_ab12cd.csv'"
    ), line
    assert json.loads(captured.out)["data"]["windows"] == 1


def _without_read_override() -> list[str]:
    """The command prefix under which a folder of mode 000 cannot be listed: none for a user, for root a
    ``setpriv`` dropping the capabilities that read past permissions (skipped where there is none)."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False) if shutil.which("setpriv") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("running as root without setpriv: every folder can be listed")
    return prefix


@pytest.mark.parametrize(
    ("fmt", "locked", "named"),
    [
        ("nab", "lost+found", "lost+found: cannot list the folder"),  # a mounted disk's, beside the series
        ("smd", "test", "test: cannot list the folder"),
        ("csv", ".", "csv: cannot list the folder"),
    ],
)
def test_a_folder_that_cannot_be_listed_is_one_line_naming_it(
    tmp_path: Path, fmt: str, locked: str, named: str
) -> None:
    if fmt == "nab":
        folder = write_nab(tmp_path / "nab")
    elif fmt == "smd":
        folder = write_smd(tmp_path / "smd")
    else:
        folder = tmp_path / "csv"
        folder.mkdir()
    prefix = _without_read_override()
    target = folder / locked
    target.mkdir(exist_ok=True)
    target.chmod(0)
    try:
        run = subprocess.run(
            [*prefix, sys.executable, "-m", "bot.cli", "evaluate", "--data", str(folder), "--format", fmt],
            cwd=REPO,
            capture_output=True,
            check=False,
            timeout=120,
        )
    finally:
        target.chmod(0o755)
    line = _one_line(run.stderr.decode("utf-8", "backslashreplace"))
    assert run.returncode == 1, line
    assert line.startswith("npo-bot evaluate: ") and line.endswith(f"{named}: Permission denied"), line
