"""Adapter for data laid out like the Server Machine Dataset (``--format smd``).

Layout of the folder (any folder of this shape works, nothing here names a particular machine)::

    DIR/train/<machine>.txt[.gz]        unlabelled history: one row per minute, comma-separated floats, no header
    DIR/test/<machine>.txt[.gz]         the evaluated part, same columns, continuing right after ``train``
    DIR/test_label/<machine>.txt        one 0/1 per line per test row (1 = anomalous minute)       (required)

``train`` is optional per machine (without it the predictor warms up on the first day of ``test``); a label or
train file without its test file is refused (a misnamed test file must not drop a machine and its faults), and so
are a file of another kind in these folders (``.txt``, ``.txt.gz``, ``.csv`` and ``.csv.gz`` are read; hidden
files and sub-folders are left alone) and two files for one machine (``m.txt`` beside ``m.txt.gz``). There are no
timestamps: row i of the concatenation train + test is minute i of the machine's record (time 60·i seconds from
an arbitrary origin; every machine starts at 0, so machines are replayed side by side).

Each machine becomes one multivariate :class:`~npo.evaluate.data.Series` (family ``server``, target the machine
name) whose ``train`` rows are the warm-up. Each contiguous run of 1s in ``test_label`` is one fault event
(counted as one, however long it lasts); its :class:`~npo.evaluate.data.FaultWindow` runs from ``horizon_s``
before its first minute (an early warning within the horizon is a true fault) to its last minute, its onset is
the first minute, and a recommendation's outcome is known ``horizon_s`` after it when no event comes.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.evaluate.errors import DataError
from bot.evaluate.nab import decode_text, folder_entries
from npo.evaluate.data import Dataset, FaultWindow, Series

DEFAULT_HORIZON_S = 3600.0
MINUTE_S = 60.0


MACHINE_SUFFIXES = (".txt", ".txt.gz", ".csv", ".csv.gz")


def _machine_files(folder: Path) -> dict[str, Path]:
    """The machine files of one of the layout's folders by machine name, hidden files (and sub-folders) aside.

    A file of another kind (a ``notes.md``, a ``.bz2``) is a :class:`DataError` naming the names it may have, and so
    are two files for one machine (``m.txt`` beside ``m.txt.gz``): neither may be read in place of the other
    without a word."""
    files: dict[str, Path] = {}
    for path in folder_entries(folder):
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = next((x for x in MACHINE_SUFFIXES if path.name.endswith(x) and len(path.name) > len(x)), None)
        if suffix is None:
            raise DataError(path, "not a machine file: expected <machine>.txt, .txt.gz, .csv or .csv.gz")
        machine = path.name[: -len(suffix)]
        if machine in files:
            raise DataError(path, f"a second file for {machine} beside {files[machine].name}: keep one of them")
        files[machine] = path
    return files


def _lines(path: Path) -> list[str]:
    """The file's lines as UTF-8 text (a leading byte-order mark dropped; ``.gz`` decompressed); an unreadable or
    corrupt file is a :class:`DataError` naming it, a non-UTF-8 one naming its line too."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except zlib.error as exc:
        raise DataError(path, f"corrupt gzip data: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(path, f"cannot read: {exc}") from None
    return decode_text(path, raw).splitlines()


def read_matrix(path: Path) -> npt.NDArray[np.float64]:
    """A headerless comma-separated matrix of floats; a malformed row is a :class:`DataError` naming its line."""
    lines = [line for line in _lines(path) if line.strip()]
    if not lines:
        raise DataError(path, "no data rows")
    width = lines[0].count(",") + 1
    try:
        data = np.array([line.split(",") for line in lines], dtype=np.float64)
    except ValueError:
        data = None
    if data is None or data.ndim != 2 or data.shape[1] != width or not np.all(np.isfinite(data)):
        for number, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            cells = line.split(",")
            if len(cells) != width:
                raise DataError(path, f"expected {width} comma-separated values, got {len(cells)}", number)
            try:
                row = [float(c) for c in cells]
            except ValueError:
                bad = next(c for c in cells if not _is_float(c))
                raise DataError(path, f"bad value {bad!r} (expected a number)", number) from None
            if not all(np.isfinite(row)):
                raise DataError(path, "value is not finite", number)
        raise DataError(path, "cannot be read as a matrix of numbers")
    return data


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labels(path: Path, rows: int) -> npt.NDArray[np.bool_]:
    """One 0/1 per line, exactly ``rows`` lines (the test file's length)."""
    values = []
    for number, line in enumerate(_lines(path), start=1):
        text = line.strip()
        if not text:
            continue
        if text not in ("0", "1", "0.0", "1.0"):
            raise DataError(path, f"expected 0 or 1, got {text!r}", number)
        values.append(text.startswith("1"))
    if len(values) != rows:
        raise DataError(path, f"{len(values)} labels for {rows} test rows (one label per test row expected)")
    return np.asarray(values, dtype=bool)


def events(labels: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Contiguous runs of True as (first row, last row) pairs, both inclusive."""
    padded = np.r_[False, labels, False].astype(np.int8)
    change = np.diff(padded)
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def read_smd(folder: Path, *, horizon_s: float = DEFAULT_HORIZON_S) -> Dataset:
    """Read an SMD-shaped folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    test_dir, label_dir, train_dir = folder / "test", folder / "test_label", folder / "train"
    for needed in (test_dir, label_dir):
        if not needed.is_dir():
            raise DataError(needed, "missing: an SMD-shaped folder needs test/ and test_label/")
    tests = _machine_files(test_dir)
    if not tests:
        raise DataError(test_dir, "holds no machine files")
    labels_of = _machine_files(label_dir)
    for machine, path in labels_of.items():  # a missing or misnamed test file must not drop a machine's faults
        if machine not in tests:
            raise DataError(path, f"labels for {machine} but no test file ({test_dir / machine}.txt or .txt.gz)")
    trains = _machine_files(train_dir) if train_dir.is_dir() else {}
    for machine, path in trains.items():  # a history without its test file is a misnamed machine, not one to drop
        if machine not in tests:
            raise DataError(path, f"history for {machine} but no test file ({test_dir / machine}.txt or .txt.gz)")
    series: list[Series] = []
    windows: list[FaultWindow] = []
    for machine in sorted(tests):  # by machine name, whatever the files' suffixes
        test_path = tests[machine]
        label_path = labels_of.get(machine)
        if label_path is None:
            raise DataError(label_dir, f"missing labels for {machine} ({machine}.txt)")
        test = read_matrix(test_path)
        train_path = trains.get(machine)
        train = read_matrix(train_path) if train_path is not None else np.zeros((0, test.shape[1]))
        if train.shape[1] != test.shape[1]:
            raise DataError(train_path or train_dir, f"{train.shape[1]} columns but the test file has {test.shape[1]}")
        labels = read_labels(label_path, test.shape[0])
        values = np.vstack([train, test])
        n_train = train.shape[0]
        times = np.arange(values.shape[0], dtype=np.float64) * MINUTE_S
        series.append(Series(name=machine, family="server", target=machine, times=times, values=values, warmup=n_train))
        for first, last in events(labels):
            onset = (n_train + first) * MINUTE_S
            windows.append(FaultWindow(machine, onset - horizon_s, (n_train + last) * MINUTE_S, onset))
    return Dataset(
        name=Path(os.path.abspath(folder)).name,
        series=tuple(series),
        windows=tuple(windows),
        horizon_s=horizon_s,
        notes={"format": "smd"},
    )
