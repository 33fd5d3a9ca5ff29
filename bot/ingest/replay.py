"""``npo-bot replay FILE``: decide every prediction in a JSONL or CSV file, reporting malformed lines.

JSONL: one prediction object per line (blank lines and ``#`` comments skipped). CSV: a header row with the
prediction fields; ``labels`` may hold a JSON object; empty cells are omitted; ``confidence`` and
``time_to_fault_s`` are numbers. Every malformed line is reported as ``line N: field: message``; the valid ones are
decided in one transaction (surfaced ones are queued for Slack and posted by ``npo-bot serve``). Files are UTF-8,
with or without a byte-order mark.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.ingest.records import prediction_from_json
from npo.types import InvalidRecord, Prediction

NUMERIC = ("confidence", "time_to_fault_s")


@dataclass
class ReplayInput:
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _jsonl(text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, InvalidRecord("(line)", f"invalid JSON: {exc.msg}")


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
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
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        else:
            out[key] = value
    return out


def _csv(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        yield reader.line_num, _csv_row(row)


def read_predictions(path: Path, *, received_at: float, fmt: str | None = None) -> ReplayInput:
    """Parse ``path`` (format from ``fmt`` or the extension: ``.csv`` is CSV, anything else JSONL)."""
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is not the first header
    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    rows = _csv(text) if kind == "csv" else _jsonl(text)
    result = ReplayInput()
    for number, obj in rows:
        try:
            if isinstance(obj, InvalidRecord):
                raise obj
            result.predictions.append(prediction_from_json(obj, received_at=received_at))
        except InvalidRecord as exc:
            result.errors.append(f"line {number}: {exc.field}: {exc.message}")
    return result
