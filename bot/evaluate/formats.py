"""The data formats ``npo-bot evaluate`` reads, by name: each a small adapter module returning a Dataset."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from bot.evaluate import labelled_csv, nab, smd
from bot.evaluate.errors import DataError
from npo.evaluate.data import Dataset

Reader = Callable[..., Dataset]
FORMATS: dict[str, tuple[Reader, float]] = {
    "nab": (nab.read_nab, nab.DEFAULT_HORIZON_S),
    "smd": (smd.read_smd, smd.DEFAULT_HORIZON_S),
    "csv": (labelled_csv.read_labelled_csv, labelled_csv.DEFAULT_HORIZON_S),
}


def guess_format(folder: Path) -> str:
    """``nab`` for a folder with ``windows.json``, ``smd`` for one with ``test_label/``, ``csv`` for one with
    ``*.csv`` files directly in it."""
    if (folder / nab.WINDOWS_FILE).is_file():
        return "nab"
    if (folder / "test_label").is_dir():
        return "smd"
    if folder.is_dir() and labelled_csv.csv_files(folder):
        return "csv"
    raise DataError(folder, "cannot tell the format (no windows.json, no test_label/, no *.csv): pass --format")


def read_dataset(folder: Path, fmt: str | None = None, *, horizon_s: float | None = None) -> Dataset:
    """Read ``folder`` with the adapter of ``fmt`` (guessed from the layout when None)."""
    name = fmt or guess_format(folder)
    if name not in FORMATS:
        raise DataError(folder, f"unknown format {name!r}; choose from {', '.join(sorted(FORMATS))}")
    reader, default_horizon = FORMATS[name]
    dataset = reader(folder, horizon_s=default_horizon if horizon_s is None else horizon_s)
    _refuse_undecodable_names(folder, dataset)
    if dataset.notes.get("format") != name:  # the name it is registered under, which the table and JSON show
        dataset = dataclasses.replace(dataset, notes={**dataset.notes, "format": name})
    return dataset


def _refuse_undecodable_names(folder: Path, dataset: Dataset) -> None:
    """A series is named after its file, and a file name that is not UTF-8 comes through as lone surrogates, which
    no SQLite file (``--db``), log line or JSON reader can take: refused here, naming it, so that the in-memory and
    the SQLite store read the same data sets."""
    for series in dataset.series:
        for text in (series.name, series.target, series.family):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise DataError(folder, f"the file name of series {shown} is not UTF-8: rename the file") from None
