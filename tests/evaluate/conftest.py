"""Small data folders in the NAB and SMD layouts, written to ``tmp_path``, and the way to the real data."""

from __future__ import annotations

import gzip
import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)


def stamp(i: int) -> str:
    return (START + i * STEP).strftime("%Y-%m-%d %H:%M:%S")


def nab_values(n: int, spikes: list[int], seed: int) -> list[float]:
    """A daily-cycle metric with noise and a few strong spikes lasting an hour."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 50 + 10 * np.sin(2 * math.pi * t / 288) + rng.normal(0, 1, n)
    for s in spikes:
        v[s : s + 12] += 60
    return v.round(4).tolist()


def write_nab(folder: Path, n: int = 288 * 4, spikes: tuple[int, ...] = (288 * 3,)) -> Path:
    """Two series in a NAB-shaped folder: ``hosts/cpu_load_ab12cd`` with ``spikes`` (each in a labelled window)
    and ``hosts/quiet_metric`` with no faults."""
    (folder / "hosts").mkdir(parents=True)
    windows: dict[str, list[list[str]]] = {}
    labels: dict[str, list[str]] = {}
    for name, spiky in (("cpu_load_ab12cd", True), ("quiet_metric", False)):
        values = nab_values(n, list(spikes) if spiky else [], seed=1 if spiky else 2)
        rows = ["timestamp,value"] + [f"{stamp(i)},{v}" for i, v in enumerate(values)]
        (folder / "hosts" / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        key = f"hosts/{name}.csv"
        windows[key] = [[stamp(s - 24) + ".000000", stamp(s + 24) + ".000000"] for s in spikes] if spiky else []
        labels[key] = [stamp(s) for s in spikes] if spiky else []
    (folder / "windows.json").write_text(json.dumps(windows, indent=1), encoding="utf-8")
    (folder / "labels.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")
    return folder


def write_smd(
    folder: Path, train: int = 2000, test: int = 3000, events: tuple[tuple[int, int], ...] = ((2000, 2010),)
) -> Path:
    """One machine of 4 dims in an SMD-shaped folder; the events (test rows, end exclusive) shift every dim."""
    for sub in ("train", "test", "test_label"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    values = np.clip(0.5 + 0.02 * rng.normal(size=(train + test, 4)), 0, 1)
    labels = np.zeros(test, dtype=int)
    for a, b in events:
        values[train + a : train + b] += 0.4
        labels[a:b] = 1

    def dump(path: Path, rows: np.ndarray) -> None:
        text = "\n".join(",".join(f"{x:.6f}" for x in row) for row in rows) + "\n"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)

    dump(folder / "train" / "machine-9-1.txt.gz", values[:train])
    dump(folder / "test" / "machine-9-1.txt.gz", values[train:])
    (folder / "test_label" / "machine-9-1.txt").write_text("\n".join(map(str, labels)) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def nab_dir(tmp_path: Path) -> Path:
    return write_nab(tmp_path / "nab")


@pytest.fixture
def smd_dir(tmp_path: Path) -> Path:
    return write_smd(tmp_path / "smd")


def real_data(fmt: str) -> Path:
    """The real data folder of ``fmt`` ($NPO_DATA_DIR/<fmt>, else <repository>/../shared/data/<fmt>), or skip."""
    root = Path(os.environ["NPO_DATA_DIR"]) if os.environ.get("NPO_DATA_DIR") else REPO.parent / "shared" / "data"
    folder = root / fmt
    if not folder.is_dir():
        pytest.skip(f"real {fmt} data not found at {folder} (set NPO_DATA_DIR to the folder holding {fmt}/)")
    return folder
