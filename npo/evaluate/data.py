"""The in-memory shape of a labelled fault data set, whatever file format it came from.

A data set is a set of monitored :class:`Series` (one per server or metric stream, one or many dimensions) and
the labelled :class:`FaultWindow` s on them. The adapters in ``bot/evaluate/`` read files into these records;
everything downstream (predictor, replay, counting) sees only them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Series:
    """One monitored stream: ``times`` (n,) Unix seconds, strictly increasing; ``values`` (n, d) floats.

    ``name`` identifies the series in the data set (e.g. its file path without extension); ``family`` is the kind of
    metric (the fault type of its predictions); ``target`` what a recommendation names (host, machine, metric).
    The first ``warmup`` rows are history only (an unlabelled training part): the predictor learns from them but
    emits nothing there, and nothing there is counted.
    """

    name: str
    family: str
    target: str
    times: FloatArray
    values: FloatArray
    warmup: int = 0

    def __post_init__(self) -> None:
        for label in ("name", "family", "target"):
            text = getattr(self, label)
            if not isinstance(text, str) or not text.strip():
                raise InvalidRecord(f"series.{label}", "must be a non-empty string")
        times = np.asarray(self.times, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if times.ndim != 1 or values.ndim != 2 or values.shape[0] != times.shape[0]:
            raise InvalidRecord(
                "series.values", f"{self.name}: {times.shape[0]} times but values of shape {values.shape}"
            )
        if times.size == 0:
            raise InvalidRecord("series.times", f"{self.name}: no samples")
        if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise InvalidRecord("series.times", f"{self.name}: times must be finite and strictly increasing")
        if not np.all(np.isfinite(values)):
            raise InvalidRecord("series.values", f"{self.name}: values must be finite")
        if not 0 <= self.warmup < times.size:
            raise InvalidRecord("series.warmup", f"{self.name}: must be in [0, {times.size}), got {self.warmup}")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    @property
    def dims(self) -> int:
        return int(self.values.shape[1])

    @property
    def start(self) -> float:
        """Time of the first row that is evaluated (after the warm-up)."""
        return float(self.times[self.warmup])


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A labelled fault on ``series``: a recommendation at ``start`` ≤ t ≤ ``end`` is a true fault.

    ``onset`` is when the fault itself was labelled (NAB's anomaly label, SMD's first anomalous minute); the lead
    time of a detection is ``onset − t`` (negative: detected after the onset). The outcome of the fault becomes
    known at ``end``.
    """

    series: str
    start: float
    end: float
    onset: float

    def __post_init__(self) -> None:
        for label in ("start", "end", "onset"):
            if not np.isfinite(getattr(self, label)):
                raise InvalidRecord(f"window.{label}", f"{self.series}: must be a finite time")
        if self.end < self.start:
            raise InvalidRecord(
                "window.end", f"{self.series}: window ends ({self.end}) before it starts ({self.start})"
            )


@dataclass(frozen=True, slots=True)
class Dataset:
    """Series and labelled windows of one data set. ``horizon_s``: how far ahead a recommendation looks — a
    recommendation outside every window is known to be a false alarm ``horizon_s`` after it was made."""

    name: str
    series: tuple[Series, ...]
    windows: tuple[FaultWindow, ...]
    horizon_s: float = 3600.0
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", tuple(self.series))
        object.__setattr__(self, "windows", tuple(self.windows))
        if not self.series:
            raise InvalidRecord("series", f"data set {self.name!r} has no series")
        names = [s.name for s in self.series]
        if len(set(names)) != len(names):
            raise InvalidRecord("series", f"data set {self.name!r} has duplicate series names")
        known = set(names)
        for w in self.windows:
            if w.series not in known:
                raise InvalidRecord("windows", f"window on unknown series {w.series!r}")
        if not (math.isfinite(self.horizon_s) and self.horizon_s > 0):
            raise InvalidRecord("horizon_s", f"must be positive and finite, got {self.horizon_s}")
        object.__setattr__(self, "notes", MappingProxyType(dict(self.notes)))

    def windows_of(self, series: str) -> list[FaultWindow]:
        return sorted((w for w in self.windows if w.series == series), key=lambda w: w.start)

    def subset(self, names: Sequence[str]) -> Dataset:
        """The data set restricted to the series called ``names`` (and their windows)."""
        chosen = set(names)
        missing = chosen - {s.name for s in self.series}
        if missing:
            raise InvalidRecord("series", f"unknown series {sorted(missing)}")
        return Dataset(
            self.name,
            tuple(s for s in self.series if s.name in chosen),
            tuple(w for w in self.windows if w.series in chosen),
            self.horizon_s,
            self.notes,
        )
