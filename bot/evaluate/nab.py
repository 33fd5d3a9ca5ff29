"""Adapter for data laid out like the Numenta Anomaly Benchmark (``--format nab``).

Layout of the folder (any folder of this shape works, nothing here names a particular series)::

    DIR/windows.json          {"<sub-folder>/<file>.csv": [["<start>", "<end>"], ...], ...}  (required)
    DIR/labels.json           {"<sub-folder>/<file>.csv": ["<anomaly time>", ...], ...}        (optional)
    DIR/<sub-folder>/<file>.csv   header ``timestamp,value``, one row per sample

Times are ``YYYY-MM-DD HH:MM:SS`` (optionally with fractional seconds), read as UTC. Rows are put in time order
and rows sharing a time become one row with their mean: real files have both (NAB's repeat 12 rows at a
daylight-saving change, and ``machine_temperature_system_failure`` has rows out of order). Every CSV listed in
``windows.json`` is read (an empty list: a series without faults); a listed file that is missing, or a CSV
(``.csv`` in any case) beside ``windows.json`` or in a sub-folder that ``windows.json`` does not list (hidden files
and folders aside, such as the ``._<file>.csv`` macOS leaves on other disks), is an error, so a typo cannot
silently drop a series. So is a key that is not a plain ``/``-separated path inside the folder (absolute, through
``..``, or with a ``.`` or empty part: a file outside the data, or a series read twice under two names). So are a
sub-folder that cannot be listed (it may hold such a file), a
window lying wholly outside its series' time range, a file listed twice in ``windows.json`` or ``labels.json`` (JSON
would keep only its last list), a ``labels.json`` value that is not a list, and text that is not UTF-8 (a leading
byte-order mark is accepted). A key of ``labels.json`` that names no series of ``windows.json`` is only noted
(``Dataset.notes["note"]``, printed by ``npo-bot evaluate``): NAB's own labels file covers a larger collection.

Each CSV becomes one univariate :class:`~npo.evaluate.data.Series`: name ``<sub-folder>/<file stem>``, target the
file stem, family (the fault type of its predictions) the stem without a trailing hexadecimal id
(``ec2_cpu_utilization_24ae8d`` → ``ec2_cpu_utilization``). Each window becomes a
:class:`~npo.evaluate.data.FaultWindow` (start and end inclusive, as NAB scores them); its onset is the label
inside it from ``labels.json``, else the window's midpoint (NAB centres windows on their label).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bot.evaluate.errors import DataError
from npo.evaluate.data import Dataset, FaultWindow, Series

WINDOWS_FILE = "windows.json"
LABELS_FILE = "labels.json"
DEFAULT_HORIZON_S = 3600.0
_HEX_ID = re.compile(r"_(?=[0-9a-f]*\d)[0-9a-f]{4,}$")


def parse_time(text: str) -> float:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]`` (or ISO ``T``) as UTC Unix seconds; ValueError when it is not one."""
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def family_of(stem: str) -> str:
    """The metric family of a NAB file stem: the stem without a trailing hexadecimal id."""
    return _HEX_ID.sub("", stem) or stem


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark dropped); other bytes are a :class:`DataError`
    naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
    return decode_text(path, raw)


def folder_entries(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; a folder that cannot be listed (no read permission, say) is a
    :class:`DataError` naming it."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(folder, f"cannot list the folder: {exc.strerror or exc}") from None


def decode_text(path: Path, raw: bytes) -> str:
    """``raw`` (the bytes of ``path``) as UTF-8 text, a leading byte-order mark dropped; other bytes are a
    :class:`DataError` naming the line and the byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        data = exc.object  # after the byte-order mark, which ``exc.start`` does not count
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8", line) from None


def _load_json(path: Path) -> dict[str, Any]:
    text = read_text(path)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """An object's keys, each once: json keeps only the last of repeated ones, which would drop the others."""
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                quoted = [json.dumps(key), json.dumps(key, ensure_ascii=False)]
                found = [at for at in (text.rfind(q) for q in quoted) if at >= 0]
                line = text.count("\n", 0, max(found)) + 1 if found else None
                raise DataError(path, f"{key!r} is listed twice: merge its entries into one", line)
            seen.add(key)
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:  # arrays or objects nested thousands deep: the decoder gives up before the end
        raise DataError(path, "nested too deeply to read: expected an object of lists") from None
    if not isinstance(data, dict):
        raise DataError(path, "must be a JSON object mapping '<folder>/<file>.csv' to a list")
    return data


def csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """The records of the CSV file at ``path`` (any line ending) with the line each starts on. A record the csv
    module cannot read is a :class:`DataError` naming that line: a double quote opening a field and never closed
    takes every later line into that field, until the field passes the module's size limit."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(
                path, f"cannot read the CSV record starting here ({exc}): a quote left open?", line
            ) from None
        yield line, record


def read_series_csv(path: Path, name: str) -> Series:
    """One NAB CSV (``timestamp,value``) as a univariate series; a malformed row is a :class:`DataError`."""
    times: list[float] = []
    values: list[float] = []
    records = csv_records(path)
    _, header = next(records, (1, None))
    if header is None:
        raise DataError(path, "empty file (expected a 'timestamp,value' header)", 1)
    if [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
        raise DataError(path, f"expected the header 'timestamp,value', got {','.join(header)!r}", 1)
    for line, row in records:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise DataError(path, f"expected 2 fields (timestamp,value), got {len(row)}", line)
        try:
            t = parse_time(row[0])
        except ValueError:
            raise DataError(path, f"bad timestamp {row[0]!r} (expected YYYY-MM-DD HH:MM:SS)", line) from None
        try:
            v = float(row[1])
        except ValueError:
            raise DataError(path, f"bad value {row[1]!r} (expected a number)", line) from None
        if not math.isfinite(v):
            raise DataError(path, f"value {row[1]!r} is not finite", line)
        times.append(t)
        values.append(v)
    if not times:
        raise DataError(path, "no data rows")
    t_sorted, v_sorted = _collapse(np.asarray(times), np.asarray(values))
    stem = path.stem
    return Series(name=name, family=family_of(stem), target=stem, times=t_sorted, values=v_sorted)


def _collapse(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows in time order (stable), rows sharing a timestamp merged into one with their mean value."""
    order = np.argsort(times, kind="stable")
    t, v = times[order], values[order]
    unique, first, counts = np.unique(t, return_index=True, return_counts=True)
    if unique.size == t.size:
        return t, v
    with np.errstate(over="ignore"):
        means = np.add.reduceat(v, first) / counts
    if not np.all(np.isfinite(means)):  # values near the float limit: their sum overflows, their mean does not
        scale = float(np.max(np.abs(v)))
        means = np.add.reduceat(v / scale, first) / counts * scale
    return unique, means


def _window_pairs(path: Path, key: str, raw: object, series: Series) -> list[tuple[float, float]]:
    """The windows listed for ``key``; each must touch the series' time range (else it could never be caught)."""
    if not isinstance(raw, list):
        raise DataError(path, f"{key!r}: expected a list of [start, end] pairs")
    first, last = float(series.times[0]), float(series.times[-1])
    pairs = []
    for i, item in enumerate(raw):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(s, str) for s in item)):
            raise DataError(path, f'{key!r}[{i}]: expected ["<start>", "<end>"]')
        try:
            start, end = parse_time(item[0]), parse_time(item[1])
        except ValueError:
            raise DataError(path, f"{key!r}[{i}]: bad time in {item!r}") from None
        if end < start:
            raise DataError(path, f"{key!r}[{i}]: window ends before it starts")
        if end < first or start > last:
            raise DataError(
                path,
                f"{key!r}[{i}]: window {item[0]} – {item[1]} lies outside the series' time range "
                f"({_stamp(first)} – {_stamp(last)})",
            )
        pairs.append((start, end))
    return pairs


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _is_csv(name: str) -> bool:
    return name.lower().endswith(".csv")


def _outside(key: str) -> str | None:
    """Why ``key`` of ``windows.json`` is not a plain path inside the folder (None when it is): an absolute path or
    one through ``..`` reads a file elsewhere, and ``.``, an empty part or a backslash names a file another key may
    name too (``hosts/./a.csv`` beside ``hosts/a.csv``), whose windows would then count twice."""
    if key.startswith("/"):
        return "an absolute path"
    if "\\" in key:
        return "a backslash in the path (separate folders with /)"
    parts = key.split("/")
    if ".." in parts:
        return "a path leaving the folder (..)"
    if "." in parts or "" in parts:
        return "a path with an empty or '.' part"
    return None


def _csv_files(folder: Path) -> list[Path]:
    """The CSV files beside ``windows.json`` and in its sub-folders (``.csv`` in any case), hidden ones aside
    (macOS's ``._<file>.csv``, say): each needs an entry in ``windows.json``."""
    found = []
    for entry in folder_entries(folder):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():  # one that cannot be listed may hold unlisted CSV files: refused, as they would be
            found += [p for p in folder_entries(entry) if not p.name.startswith(".") and _is_csv(p.name)]
        elif _is_csv(entry.name):
            found.append(entry)
    return [p for p in found if p.is_file()]


def read_nab(folder: Path, *, horizon_s: float = DEFAULT_HORIZON_S) -> Dataset:
    """Read a NAB-shaped folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    windows_path = folder / WINDOWS_FILE
    if not windows_path.is_file():
        raise DataError(windows_path, f"missing: a NAB-shaped folder needs {WINDOWS_FILE} (the labelled windows)")
    windows_raw = _load_json(windows_path)
    labels_path = folder / LABELS_FILE
    labels_raw = _load_json(labels_path) if labels_path.is_file() else {}
    on_disk = {p.relative_to(folder).as_posix() for p in _csv_files(folder)}
    unlisted = sorted(on_disk - set(windows_raw))
    if unlisted:
        raise DataError(
            windows_path,
            f'no entry for {unlisted[0]} ({len(unlisted)} CSV file(s) unlisted); add "{unlisted[0]}": [] '
            "for a series without faults",
        )
    series: list[Series] = []
    windows: list[FaultWindow] = []
    for key in sorted(windows_raw):
        if (why := _outside(key)) is not None:
            raise DataError(windows_path, f'{key!r}: {why}; name a CSV inside the folder, as in "hosts/a.csv"')
        csv_path = folder / key
        if not _is_csv(key) or not csv_path.is_file():
            raise DataError(windows_path, f"{key!r} names no CSV file in {folder}")
        name = key[: -len(".csv")]
        s = read_series_csv(csv_path, name)
        series.append(s)
        labels = []
        listed = labels_raw.get(key, [])
        if not isinstance(listed, list):
            raise DataError(labels_path, f"{key!r}: expected a list of label times, got {type(listed).__name__}")
        for text in listed:
            try:
                labels.append(parse_time(str(text)))
            except ValueError:
                raise DataError(labels_path, f"{key!r}: bad label time {text!r}") from None
        for start, end in _window_pairs(windows_path, key, windows_raw[key], s):
            inside = [t for t in labels if start <= t <= end]
            onset = inside[0] if inside else (start + end) / 2.0
            windows.append(FaultWindow(name, start, end, onset))
    if not series:
        raise DataError(windows_path, "lists no series")
    notes = {"format": "nab"}
    stray = sorted(set(labels_raw) - set(windows_raw))
    if stray:  # a typo, or the labels of a larger collection: said, not refused (the windows are the truth)
        notes["note"] = (
            f"{LABELS_FILE}: {len(stray)} key(s) name no series of {WINDOWS_FILE}, their labels unused: "
            + ", ".join(repr(k) for k in stray[:3])
            + (", …" if len(stray) > 3 else "")
        )
    return Dataset(
        name=Path(os.path.abspath(folder)).name,
        series=tuple(series),
        windows=tuple(windows),
        horizon_s=horizon_s,
        notes=notes,
    )
