"""``npo-bot replay FILE``: decide every prediction in a JSONL or CSV file, reporting malformed lines.

JSONL: one prediction object per line (blank lines and ``#`` comments skipped). CSV: a header row with the
prediction fields; ``labels`` may hold a JSON object; empty cells are omitted; ``confidence`` and
``time_to_fault_s`` are numbers. A JSON object that holds a key twice, or a header that names a column twice, is
refused (one of the values would be lost), as the HTTP routes refuse it. A CSV cell's opening quote that is never
closed is the malformed line it opens in, and the lines after it are read as rows (not as one cell to the end of
the file). Every malformed line is reported as ``line N: field: message``. Files are UTF-8, with or without a
byte-order mark; a file that cannot be read, or is not UTF-8, is refused whole (:class:`UnreadableFile`) before
anything is decided.

The valid predictions are decided :data:`REPLAY_CHUNK` at a time, one transaction each, with a short pause between
(:func:`decide_in_chunks`): a replay runs beside ``npo-bot serve`` on the same database, and one transaction for a
whole file held SQLite's write lock for as long as the file took, so the bot's clicks and ingest calls waited (or
failed) meanwhile. Surfaced ones are queued for Slack and posted by ``npo-bot serve``. An interrupted replay keeps
the transactions it finished; run again, it recognises those predictions by id and decides only the rest. A line
whose id was received before with another body (in the database, or on an earlier line) is not decided: the first
prediction stays, and the line is reported (:func:`conflict_lines`) with the fields that differ.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.ingest import keys_twice
from bot.ingest.records import prediction_from_json
from npo.loop import DecideResult
from npo.types import InvalidRecord, Prediction
from storage import StorageError

NUMERIC = ("confidence", "time_to_fault_s")
REPLAY_CHUNK = 500  # predictions a transaction: ~10–20 ms of the write lock
REPLAY_PAUSE_S = 0.005  # between transactions: another process waiting for the lock takes it


# The opening bytes of compressed files, named when a file is not UTF-8 (a rotated ``predictions.jsonl.gz``)
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
)


class UnreadableFile(Exception):
    """The file cannot be read (missing, a folder, no permission) or is not UTF-8: nothing in it is decided."""


@dataclass
class ReplayInput:
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line number of each prediction


def _loads(text: str) -> Any:
    """``json.loads``, raising :class:`InvalidRecord` (``(line)``) for everything it refuses, and naming the key
    when an object holds one twice (``json.loads`` would keep the last value without a word)."""
    try:
        value, twice = keys_twice.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRecord("(line)", f"invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise InvalidRecord("(line)", "invalid JSON: nested too deeply") from None
    except ValueError:  # an integer of more than 4,300 digits (Python's limit on reading one)
        raise InvalidRecord("(line)", "invalid JSON: a number is too long") from None
    if twice:
        raise InvalidRecord(keys_twice.key_twice(value) or "(line)", keys_twice.KEY_TWICE)
    return value


def _jsonl(text: str) -> Iterator[tuple[int, Any]]:
    # split at "\n" only: str.splitlines() also splits at U+2028, U+2029, U+0085…, which JSON strings may hold
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                yield number, _loads(line)
            except InvalidRecord as exc:
                yield number, exc


def _csv_row(row: dict[str | None, Any], width: int) -> dict[str, Any] | InvalidRecord:
    if None in row:  # csv.DictReader puts the cells beyond the header's under the key None
        return InvalidRecord("(line)", f"{width + len(row[None])} cells, the header has {width}")
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key is None or value is None or value == "":
            continue
        if key in NUMERIC:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value  # the record's validation names the field
        elif key == "labels":
            try:
                out[key] = _loads(value)
            except InvalidRecord:
                out[key] = value  # the record's validation names the field
        else:
            out[key] = value
    return out


def _unclosed_quote(lines: Sequence[str], first: int) -> int | None:
    """The number of the line (``first`` is that of ``lines[0]``) in which a cell's opening quote is never closed
    by the end of ``lines``, read as the csv module reads the default dialect (a quote opens a cell only at its
    start, ``""`` inside one is a quote, and a line break inside one is part of the cell); None when every quote
    is closed."""
    if not any('"' in line for line in lines):
        return None
    state, opened = "start", 0  # start of a cell, in an unquoted cell, in a quoted one, just after a quote in one
    for number, line in enumerate(lines, start=first):
        for char in line:
            if state == "quoted":
                state = "quote" if char == '"' else "quoted"
            elif state == "quote":
                state = "quoted" if char == '"' else "start" if char == "," else "cell"
            elif state == "start" and char == '"':
                state, opened = "quoted", number
            else:
                state = "start" if char == "," else "cell"
        if state != "quoted":
            state = "start"  # a line break ends the record (a quoted cell goes on)
    return opened if state == "quoted" else None


def _csv(text: str) -> Iterator[tuple[int, Any]]:
    lines: list[str] = []  # the file's lines, split only if a record spans several
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        yield reader.reader.line_num, InvalidRecord("(header)", f"invalid CSV: {exc}")
        return
    if "" in header:  # unnamed columns (a spreadsheet's trailing commas): each its own, so a value under one is
        # refused as an unknown field, naming its column, and their empty cells are no name given twice
        header = reader.fieldnames = [name or f"(column {i + 1})" for i, name in enumerate(header)]
    twice = next((name for i, name in enumerate(header) if name in header[:i]), None)
    if twice is not None:  # csv.DictReader would keep the last column of that name in every row, without a word
        yield reader.reader.line_num, InvalidRecord("(header)", f"the column {twice!r} appears twice: name it once")
        return
    offset = 0  # lines of the file before the text ``reader`` reads
    last_line = text.count("\n") + (not text.endswith("\n"))  # the number of the file's last line
    end = reader.line_num  # the last line read of the record before
    while True:
        row: dict[str | None, Any] | InvalidRecord
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over the csv module's field limit; the reader goes on after it
            row = InvalidRecord("(line)", f"invalid CSV: {exc}")
        start, end = end, reader.reader.line_num  # DictReader.line_num is not moved by a csv.Error
        # An opening quote never closed makes the rest of the file one cell (or one over the field limit): the
        # line that opened it is the malformed one, and the lines after it are read again, as rows.
        opened = None
        # One line can hold a quote never closed too, when the file ends in it: the last record is checked as well.
        if end - start > 1 or offset + end >= last_line:
            lines = lines or text.split("\n")
            opened = _unclosed_quote(lines[offset + start : offset + end], offset + start + 1)
        if opened is not None:
            yield opened, InvalidRecord("(line)", "a cell's opening quote (\") is never closed: close it or remove it")
            offset, end = opened, 0
            reader = csv.DictReader(io.StringIO("\n".join(lines[offset:])), fieldnames=header)
        elif isinstance(row, InvalidRecord):
            yield offset + end, row
        else:
            yield offset + end, _csv_row(row, len(header))


def _text(path: Path) -> str:
    """The file as text: UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8"), newlines made ``\\n``."""
    try:
        data = path.read_bytes()  # not only regular files: a pipe (/dev/stdin) is read too
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    data = data.removeprefix(codecs.BOM_UTF8)  # not the first header's first character
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        packed = next((name for magic, name in _COMPRESSED if data.startswith(magic)), None)
        if packed is not None:  # "save the file as UTF-8" would be no help
            raise UnreadableFile(
                f"{path}: is {packed}-compressed, not text: decompress it first, or pipe it in decompressed "
                "(e.g. `gzip -dc FILE | npo-bot replay /dev/stdin`, with `--format csv` for CSV)"
            ) from None
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableFile(
            f"{path}: line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_records(path: Path, fmt: str | None = None) -> Iterator[tuple[int, Any]]:
    """The records of ``path`` (format from ``fmt`` or the extension: ``.csv`` is CSV, anything else JSONL) as
    (line number, decoded JSON value or CSV row dict, or the :class:`InvalidRecord` that line is); not yet checked
    as predictions. Raises :class:`UnreadableFile` (before the first record) when the file cannot be read or is
    not UTF-8."""
    text = _text(path)
    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    return _csv(text) if kind == "csv" else _jsonl(text)


def read_predictions(path: Path, *, received_at: float, fmt: str | None = None) -> ReplayInput:
    """Parse ``path`` (format from ``fmt`` or the extension: ``.csv`` is CSV, anything else JSONL). Raises
    :class:`UnreadableFile` when the file cannot be read or is not UTF-8."""
    result = ReplayInput()
    for number, obj in read_records(path, fmt):
        try:
            if isinstance(obj, InvalidRecord):
                raise obj
            result.predictions.append(prediction_from_json(obj, received_at=received_at))
            result.lines.append(number)
        except InvalidRecord as exc:
            result.errors.append(f"line {number}: {exc.field}: {exc.message}")
    return result


def conflict_lines(parsed: ReplayInput, results: Sequence[DecideResult]) -> list[str]:
    """``line N: id: …`` for each decided line (``results`` in the order of ``parsed.predictions``) whose id was
    received before with another body: not decided, the first prediction kept."""
    out = []
    for number, result in zip(parsed.lines, results, strict=False):
        if result.conflict:
            pid, fields = result.decision.prediction_id, ", ".join(result.conflict)
            out.append(
                f"line {number}: {result.conflict[0]}: prediction {pid!r} was received before with "
                f"another {fields}; kept the first (an id names one prediction: give a changed one a new id)"
            )
    return out


@dataclass
class ChunkedRun:
    """What :func:`decide_in_chunks` decided (in order), and whether an interrupt or a database that refused a write
    (``failed``) stopped it first."""

    results: list[DecideResult] = field(default_factory=list)
    interrupted: bool = False
    failed: Exception | None = None


def decide_in_chunks(
    decide: Callable[[Sequence[Prediction]], list[DecideResult]],
    predictions: Sequence[Prediction],
    *,
    chunk: int = REPLAY_CHUNK,
    pause_s: float = REPLAY_PAUSE_S,
) -> ChunkedRun:
    """``decide`` (one transaction a call) over ``predictions`` in slices of ``chunk``, pausing ``pause_s`` between
    them. A ``KeyboardInterrupt`` (Ctrl-C) stops it: the transaction in flight is rolled back by the store, the
    finished ones stay, and ``interrupted`` is set (``results`` holds the finished ones' results). A write the
    database refuses (disk full, I/O error, locked for too long) stops it the same way, the error in ``failed``."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    run = ChunkedRun()
    try:
        for start in range(0, len(predictions), chunk):
            if start and pause_s > 0:
                time.sleep(pause_s)
            run.results.extend(decide(predictions[start : start + chunk]))
    except KeyboardInterrupt:
        run.interrupted = True
    except (sqlite3.Error, StorageError) as exc:
        run.failed = exc
    return run
