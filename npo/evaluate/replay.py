"""Replay a labelled prediction stream through the NPO loop, in time order, against any loop store.

Events, in time order (at equal times: outcomes, then answers, then predictions, then the outcome of a prediction
made at the very end of its window, then the monitor):

* **prediction** at t — :func:`npo.loop.decide` (score, Safety Policy Engine, τ from the bandit or fixed);
* **answer** at t + ``answer_delay_s`` for a surfaced one — the pre-drawn simulated engineer's click (a skip is
  recorded as the system's ``skipped`` answer, as the skip sweeper does in production) via
  :func:`npo.loop.record_feedback`;
* **outcome** — :func:`npo.loop.record_outcome`: a prediction inside a labelled window is a real fault, known when
  the window ends (the one starting first, if windows overlap); any other is a false alarm, known ``horizon_s``
  after it was made. Suppressed predictions' outcomes feed the bandit's miss term and m(k); answered ones
  calibrate the operators' trust;
* **monitor** every ``monitor_every_s`` until the last outcome or the end of the data (or the last answer, if
  later), whichever comes first — the meta-monitor (:mod:`npo.monitor`) reads the last ``window``
  surfaced recommendations' feedback codes and its Page–Hinkley detector. Its ideal response is known here: the
  same window's *truthful* alignment loss above θ. A proposal is resolved at once (approved when ideal) and counted
  toward F_monitor; the replay does not retrain.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from npo.alignment import alignment_loss
from npo.evaluate.data import Dataset
from npo.evaluate.engineers import Answers
from npo.evaluate.predictor import SeriesPredictions
from npo.evaluate.recency import TargetMemory
from npo.loop import SYSTEM_OPERATOR, LoopConfig, LoopStore, decide, record_feedback, record_outcome
from npo.monitor import (
    MonitorConfig,
    MonitorState,
    evaluate_monitor,
    monitor_fidelity,
    observe_feedback,
    page_hinkley_alarm,
    record_ground_truth,
    resolve_proposal,
)
from npo.policy import Policy
from npo.types import FeedbackEvent, FeedbackKind, Outcome, Prediction, Severity

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ACTION = "investigate"
_OUTCOME, _ANSWER, _PREDICT, _OWN_OUTCOME, _MONITOR = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Stream:
    """Every prediction of a data set in time order, with its ground truth.

    ``window[i]``: index into ``dataset.windows`` of the first labelled window containing prediction i (−1: none);
    ``outcome_at[i]``: when its outcome is known (the window's end, or ``times[i] + horizon_s``);
    ``dimension[i]``: the dimension of a multivariate series that deviated most (0-based; −1 for a univariate
    series; None: not known for any);
    ``members``: every (prediction, window) pair with the prediction inside the window, as two index arrays of
    equal length sorted by prediction then window — windows may overlap (or repeat), and a prediction inside
    several counts toward each of them (None: each prediction belongs to its ``window`` only).
    """

    times: FloatArray
    series_index: IntArray
    confidence: FloatArray
    scores: FloatArray
    window: IntArray
    outcome_at: FloatArray
    dimension: IntArray | None = None
    members: tuple[IntArray, IntArray] | None = None

    @property
    def real_fault(self) -> BoolArray:
        """Inside at least one labelled window (the truth the simulated engineers answer from)."""
        return np.asarray(self.window >= 0, dtype=bool)

    def memberships(self) -> tuple[IntArray, IntArray]:
        """(prediction index, window index) of every prediction inside every window containing it."""
        if self.members is not None:
            return self.members
        inside = np.flatnonzero(self.window >= 0).astype(np.int64)
        return inside, np.asarray(self.window[inside], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.times.size)


def build_stream(dataset: Dataset, predictions: list[SeriesPredictions]) -> Stream:
    """Merge the per-series predictions into one time-ordered stream and label each against the windows."""
    index = {s.name: i for i, s in enumerate(dataset.series)}
    parts_t, parts_s, parts_p, parts_z, parts_d = [], [], [], [], []
    for p in predictions:
        parts_t.append(p.times)
        parts_s.append(np.full(p.times.size, index[p.series], dtype=np.int64))
        parts_p.append(p.confidence)
        parts_z.append(p.scores)
        parts_d.append(np.full(p.times.size, -1, dtype=np.int64) if p.dimension is None else p.dimension)
    times = np.concatenate(parts_t) if parts_t else np.zeros(0)
    series_index = np.concatenate(parts_s) if parts_s else np.zeros(0, dtype=np.int64)
    order = np.lexsort((series_index, times))
    times, series_index = times[order], series_index[order]
    conf = (np.concatenate(parts_p) if parts_p else np.zeros(0))[order]
    scores = (np.concatenate(parts_z) if parts_z else np.zeros(0))[order]
    dimension = (np.concatenate(parts_d) if parts_d else np.zeros(0, dtype=np.int64))[order]
    window = inside_windows(dataset, times, series_index)
    ends = np.asarray([w.end for w in dataset.windows] + [math.nan])
    outcome_at = np.where(window >= 0, ends[window], times + dataset.horizon_s)
    members = window_members(dataset, times, series_index)
    return Stream(times, series_index, conf, scores, window, outcome_at, dimension, members)


def inside_windows(dataset: Dataset, times: FloatArray, series_index: IntArray) -> IntArray:
    """For each (time, series): the index of the first labelled window of that series containing the time, or −1."""
    out = np.full(times.size, -1, dtype=np.int64)
    names = [s.name for s in dataset.series]
    for w_i in sorted(range(len(dataset.windows)), key=lambda j: dataset.windows[j].start, reverse=True):
        w = dataset.windows[w_i]
        hit = (series_index == names.index(w.series)) & (times >= w.start) & (times <= w.end)
        out[hit] = w_i
    return out


def window_members(dataset: Dataset, times: FloatArray, series_index: IntArray) -> tuple[IntArray, IntArray]:
    """Every (prediction, window) pair with the prediction's (time, series) inside the window, both ends
    inclusive; sorted by prediction, then window. See :attr:`Stream.members`."""
    names = {s.name: i for i, s in enumerate(dataset.series)}
    preds: list[IntArray] = [np.zeros(0, dtype=np.int64)]
    wins: list[IntArray] = [np.zeros(0, dtype=np.int64)]
    for w_i, w in enumerate(dataset.windows):
        hit = np.flatnonzero((series_index == names[w.series]) & (times >= w.start) & (times <= w.end))
        preds.append(hit.astype(np.int64))
        wins.append(np.full(hit.size, w_i, dtype=np.int64))
    pred, win = np.concatenate(preds), np.concatenate(wins)
    order = np.lexsort((win, pred))
    return pred[order], win[order]


@dataclass(frozen=True, slots=True)
class ReplayTrace:
    """What happened to each prediction of the stream under one condition.

    ``y`` is the observed feedback code of a surfaced prediction (override 1, like 0, neutral 0.5, skip λ; NaN when
    not surfaced), ``y_true`` what a truthful engineer would have answered (0 inside a window, 1 outside).
    ``tau`` the threshold drawn (NaN when none). ``f_monitor``: the meta-monitor's fidelity (NaN without checks).
    """

    surfaced: BoolArray
    tau: FloatArray
    y: FloatArray
    y_true: FloatArray
    f_monitor: float
    monitor_triggers: int


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """How the replay runs: the monitor's schedule and rules (None: no monitor); ``recency_s``: how long a person's
    last answer on a target shapes the scenario key of the target's next predictions (:mod:`npo.evaluate.recency`;
    None: the key names the target itself instead); ``name_dimension``: a prediction on a multivariate series names
    the dimension that deviated most in its fault type (``server/dim24``: 1-based), so the scenario key tells
    kinds of fault apart by the metric that fired, pooled across machines (False: the series' family only)."""

    monitor: MonitorConfig | None = field(default_factory=MonitorConfig)
    monitor_every_s: float = 3600.0
    answer_delay_s: float = 600.0
    recency_s: float | None = 86400.0
    name_dimension: bool = True


def fault_type(dataset: Dataset, stream: Stream, i: int, *, name_dimension: bool = True) -> str:
    """The fault type of prediction i: its series' family, and for a multivariate series (with ``name_dimension``)
    the dimension that deviated most, ``<family>/dim<k>`` with k 1-based."""
    family = dataset.series[int(stream.series_index[i])].family
    if not name_dimension or stream.dimension is None or stream.dimension[i] < 0:
        return family
    return f"{family}/dim{int(stream.dimension[i]) + 1}"


def _prediction(dataset: Dataset, stream: Stream, i: int, recency: str | None, name_dimension: bool) -> Prediction:
    """Prediction i of the stream; its ``target_class`` (a part of the default scenario key) is the target's
    recency state when one is given, else the target."""
    series = dataset.series[int(stream.series_index[i])]
    return Prediction(
        id=f"p{i}",
        fault_type=fault_type(dataset, stream, i, name_dimension=name_dimension),
        target=series.target,
        action=ACTION,
        confidence=float(stream.confidence[i]),
        severity=Severity.WARNING,
        time_to_fault_s=dataset.horizon_s,
        labels={"target_class": series.target if recency is None else recency, "series": series.name},
        received_at=float(stream.times[i]),
    )


def replay(
    dataset: Dataset,
    stream: Stream,
    answers: Answers,
    *,
    store: LoopStore,
    config: LoopConfig,
    policy: Policy,
    rng: np.random.Generator,
    settings: ReplaySettings = ReplaySettings(),
) -> ReplayTrace:
    """Run the stream through the loop held by ``store`` (configured with ``config``); see the module docstring."""
    n = len(stream)
    surfaced = np.zeros(n, dtype=bool)
    tau = np.full(n, math.nan)
    y = np.full(n, math.nan)
    y_true = np.where(stream.real_fault, 0.0, 1.0)
    events: list[tuple[float, int, int]] = []
    for i in range(n):
        events.append((float(stream.times[i]), _PREDICT, i))
        events.append((float(stream.times[i]) + settings.answer_delay_s, _ANSWER, i))  # if it gets surfaced
        # A prediction at the very end of its window learns its outcome at once: after it is decided.
        at_outcome = float(stream.outcome_at[i])
        events.append((at_outcome, _OUTCOME if at_outcome > stream.times[i] else _OWN_OUTCOME, i))
    monitor = settings.monitor
    if monitor is not None and n:
        # Checks run while anything can change what they read: until the last outcome, but not past the end of
        # the data (or the last answer, if later) — a long horizon would otherwise add idle checks without end.
        data_end = max(float(s.times[-1]) for s in dataset.series)
        last_answer = float(stream.times[-1]) + settings.answer_delay_s
        t0, t1 = float(stream.times[0]), min(float(stream.outcome_at.max()), max(data_end, last_answer))
        checks = int((t1 - t0) // settings.monitor_every_s)
        events.extend((t0 + (k + 1) * settings.monitor_every_s, _MONITOR, k) for k in range(checks))
    events.sort()
    recent: deque[tuple[float, float]] = deque(maxlen=monitor.window if monitor else 1)
    state = MonitorState()
    memory = None if settings.recency_s is None else TargetMemory(settings.recency_s)
    triggers = 0
    for at, kind, i in events:
        if kind == _PREDICT:
            recency = None if memory is None else memory.state(dataset.series[int(stream.series_index[i])].name, at)
            prediction = _prediction(dataset, stream, i, recency, settings.name_dimension)
            with store.transaction() as tx:
                result = decide(tx, prediction, config=config, policy=policy, rng=rng, now=at)
            d = result.decision
            if d.threshold is not None:
                tau[i] = d.threshold
            surfaced[i] = d.surfaced and not result.duplicate
        elif kind == _ANSWER:
            if not surfaced[i]:
                continue
            click = answers.kind[i]
            operator = SYSTEM_OPERATOR if click is FeedbackKind.SKIPPED else answers.operator_name(i)
            event = FeedbackEvent(f"p{i}", operator, click, at, request_id=f"answer:p{i}")
            with store.transaction() as tx:
                applied = record_feedback(tx, event, config=config).applied
            code = config.codes.code(click) if applied is None else applied.y
            y[i] = code
            if memory is not None:
                memory.observe(dataset.series[int(stream.series_index[i])].name, click, at)
            recent.append((code, float(y_true[i])))
            if monitor is not None:
                state, _ = observe_feedback(state, code, monitor)
        elif kind in (_OUTCOME, _OWN_OUTCOME):
            with store.transaction() as tx:
                record_outcome(tx, Outcome(f"p{i}", bool(stream.real_fault[i]), at, source="labels"), config=config)
        elif monitor is not None and len(recent) >= monitor.min_samples:
            codes = [c for c, _ in recent]
            loss = alignment_loss(codes)
            truthful = alignment_loss([t for _, t in recent])
            decision, state = evaluate_monitor(
                state, monitor, loss, len(codes), page_hinkley_alarm(state.ph, monitor.page_hinkley), at
            )
            ideal = truthful is not None and truthful > monitor.loss_threshold
            if decision.trigger:
                triggers += 1
                state = resolve_proposal(state, approved=ideal)
            state = record_ground_truth(state, acted=decision.trigger, ideal=ideal)
    fidelity = monitor_fidelity(state)
    return ReplayTrace(surfaced, tau, y, y_true, math.nan if fidelity is None else fidelity, triggers)
