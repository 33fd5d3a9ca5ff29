"""Adapter for CSV files with a label column (``--format csv``).

Layout of the folder (any folder of this shape works)::

    DIR/<metric>.csv    header row, then one row per sample:
                        timestamp,[series,]<value column>[,<value column> …],label

``timestamp`` is Unix seconds or ``YYYY-MM-DD HH:MM:SS`` / ISO 8601 (read as UTC without an offset; a number
past the year 9999 as seconds, such as Unix milliseconds, is refused); ``label`` is
``0`` or ``1`` (1 = the row lies inside a fault); every other column except ``series`` is a value (a number). The
column names are found by name, in any order and any case. Without a ``series`` column the file is one series; with
one, each distinct value is a series of its own (rows of several series may be interleaved). Rows of one series are
put in time order; two rows of one series at the same time are refused, as is any malformed row, naming the file and
line.

Each series becomes one :class:`~npo.evaluate.data.Series`: name ``<metric>`` (or ``<metric>/<series>``), target the
series value (else the file stem), family the file stem without a trailing hexadecimal id (as NAB's), one dimension
per value column, no warm-up rows (the predictor learns on the first day). Each contiguous run of label 1 in a series
is one fault event, as in SMD: its window opens ``horizon_s`` before its first row (an early warning within the
horizon is a true fault) and closes at its last row; its onset is the first row.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from bot.evaluate.errors import DataError
from bot.evaluate.nab import csv_records, family_of, folder_entries, parse_time
from bot.evaluate.smd import events
from npo.evaluate.data import Dataset, FaultWindow, Series

DEFAULT_HORIZON_S = 3600.0
TIME_COLUMN, SERIES_COLUMN, LABEL_COLUMN = "timestamp", "series", "label"


def csv_files(folder: Path) -> list[Path]:
    """The visible ``*.csv`` files directly in ``folder``, sorted."""
    return [p for p in folder_entries(folder) if p.is_file() and p.suffix.lower() == ".csv" and p.name[0] != "."]


MAX_UNIX_S = 253_402_300_800.0  # 10000-01-01: a number beyond is not Unix seconds (milliseconds, say)


class _NotSeconds(ValueError):
    """A numeric timestamp too large to be Unix seconds."""


def _time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return parse_time(text)
    if not math.isfinite(value):
        raise ValueError(text)
    if abs(value) >= MAX_UNIX_S:  # read as seconds, 2024's milliseconds would be 50,000 years from now
        raise _NotSeconds(text)
    return value


def _read_file(path: Path) -> dict[str, list[tuple[float, list[float], bool, int]]]:
    """Rows per series (time, values, label, line) of one file, in file order."""
    records = csv_records(path)  # any line ending: \n, \r\n, or a lone \r
    _, header = next(records, (1, None))
    if header is None:
        raise DataError(path, "empty file (expected a header row)")
    names = [h.strip().lower() for h in header]
    unnamed = [i + 1 for i, name in enumerate(names) if not name]
    if unnamed:  # a trailing comma, or a column someone forgot to name: neither a value nor ignorable silently
        raise DataError(path, f"column {unnamed[0]} of the header has no name", 1)
    if len(set(names)) != len(names):
        raise DataError(path, "a column is named twice in the header", 1)
    for needed in (TIME_COLUMN, LABEL_COLUMN):
        if needed not in names:
            raise DataError(path, f"no {needed!r} column in the header ({', '.join(names)})", 1)
    t_col, l_col = names.index(TIME_COLUMN), names.index(LABEL_COLUMN)
    s_col = names.index(SERIES_COLUMN) if SERIES_COLUMN in names else None
    v_cols = [i for i in range(len(names)) if i not in (t_col, l_col, s_col)]
    if not v_cols:
        raise DataError(path, "no value column (every column but timestamp, series and label is a value)", 1)
    rows: dict[str, list[tuple[float, list[float], bool, int]]] = defaultdict(list)
    for line, cells in records:
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise DataError(path, f"expected {len(names)} columns, got {len(cells)}", line)
        try:
            at = _time(cells[t_col])
        except _NotSeconds:
            raise DataError(
                path,
                f"timestamp {cells[t_col].strip()!r} is past the year 9999 as Unix seconds: milliseconds? "
                "(expected Unix seconds or an ISO 8601 time)",
                line,
            ) from None
        except ValueError:
            raise DataError(path, f"bad timestamp {cells[t_col]!r}", line) from None
        label = cells[l_col].strip()
        if label not in ("0", "1", "0.0", "1.0"):
            raise DataError(path, f"label must be 0 or 1, got {label!r}", line)
        try:
            values = [float(cells[i]) for i in v_cols]
        except ValueError:
            bad = next(cells[i] for i in v_cols if not _is_number(cells[i]))
            raise DataError(path, f"bad value {bad!r} (expected a number)", line) from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(path, "value is not finite", line)
        series = cells[s_col].strip() if s_col is not None else ""
        if s_col is not None and not series:
            raise DataError(path, "empty series", line)
        rows[series].append((at, values, label.startswith("1"), line))
    if not rows:
        raise DataError(path, "no data rows")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labelled_csv(folder: Path, *, horizon_s: float = DEFAULT_HORIZON_S) -> Dataset:
    """Read a folder of labelled CSV files (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    files = csv_files(folder)
    if not files:
        raise DataError(folder, "holds no .csv file")
    series: list[Series] = []
    windows: list[FaultWindow] = []
    for path in files:
        stem = path.stem
        for key, rows in sorted(_read_file(path).items()):
            rows.sort(key=lambda row: row[0])
            for before, after in itertools.pairwise(rows):
                if after[0] == before[0]:
                    raise DataError(path, f"two rows of {key or stem!r} at the same time (line {before[3]})", after[3])
            name = f"{stem}/{key}" if key else stem
            times = np.array([r[0] for r in rows], dtype=np.float64)
            series.append(
                Series(
                    name=name,
                    family=family_of(stem),
                    target=key or stem,
                    times=times,
                    values=np.array([r[1] for r in rows], dtype=np.float64),
                )
            )
            labels = np.array([r[2] for r in rows], dtype=bool)
            for first, last in events(labels):
                onset = float(times[first])
                windows.append(FaultWindow(name, onset - horizon_s, float(times[last]), onset))
    return Dataset(
        name=Path(os.path.abspath(folder)).name,
        series=tuple(series),
        windows=tuple(windows),
        horizon_s=horizon_s,
        notes={"format": "csv"},
    )
