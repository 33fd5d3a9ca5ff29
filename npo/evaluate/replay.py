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
  toward F_monitor.

**Retraining** (``ReplaySettings.retrain``; off by default): an approved proposal does what Approve does in
production (``bot/retraining.py``), on the replay's own store: it fits a candidate feature model φ(s) → P(override)
on the latest ``training_rows`` effective answers (:func:`training_rows`, each answer weighted by its operator's trust
weight as recorded), holding back the most recent ones and keeping a held-back recommendation's older answers out of
the fit (:func:`npo.retrain.retrain_on_answers`), numbers it with the next version, promotes
it only if it beats the current model and the base rate on the held-back answers, and on a promotion restarts every
key's step size (:func:`npo.misalignment.reset_key`; m(k) is kept); promoted or not, the threshold bandit goes back
to its prior, as Approve does. From then on :func:`npo.loop.decide` scores with
the promoted model as the prior of young keys (:func:`npo.loop.effective_misalignment`, pseudo-count
``LoopConfig.model_prior_strength``). A store whose transactions can record model versions (``save_model``, as the
SQLite store's do) records every candidate, promoted or not, as production does. Since the monitor decides when
Approve comes, with retraining it also runs as production's monitor job does (``bot/jobs/monitor.py``): after a
proposal, L_align (and the truthful L_align of the ideal response) is averaged over the answers recorded since that
proposal only (at most ``window``, at least ``min_samples`` to be checked), and a drift alarm raised at any answer
since the last check counts. Without retraining the replay does not retrain, its monitor reads the last ``window``
answers at every check (so it may propose again on answers a proposal already covered) and the drift alarm's level
at the check; its proposals are still counted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from npo.alignment import alignment_loss
from npo.evaluate.data import Dataset
from npo.evaluate.engineers import Answers
from npo.evaluate.predictor import SeriesPredictions
from npo.evaluate.recency import TargetMemory
from npo.loop import (
    SYSTEM_OPERATOR,
    LoopConfig,
    LoopStore,
    LoopTransaction,
    decide,
    record_feedback,
    record_outcome,
)
from npo.misalignment import reset_key
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
from npo.retrain import Answer, LogisticModel, RetrainResult, retrain_on_answers
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord, Outcome, Prediction, Severity

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ACTION = "investigate"
TRAINING_ROWS = 20_000  # the latest answers a retraining reads: bot.retraining.TRAINING_ROWS (a test holds them equal)
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
    ``monitor_triggers``: proposals the monitor raised, ``approved`` how many of them were approved (the ideal
    response), ``retrainings`` every retraining attempt in order (empty unless ``ReplaySettings.retrain``).
    """

    surfaced: BoolArray
    tau: FloatArray
    y: FloatArray
    y_true: FloatArray
    f_monitor: float
    monitor_triggers: int
    approved: int = 0
    retrainings: tuple[RetrainResult, ...] = ()

    @property
    def promotions(self) -> int:
        """How many retrained models were promoted."""
        return sum(1 for r in self.retrainings if r.promoted)


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """How the replay runs: the monitor's schedule and rules (None: no monitor); ``recency_s``: how long a person's
    last answer on a target shapes the scenario key of the target's next predictions (:mod:`npo.evaluate.recency`;
    None: the key names the target itself instead); ``name_dimension``: a prediction on a multivariate series names
    the dimension that deviated most in its fault type (``server/dim24``: 1-based), so the scenario key tells
    kinds of fault apart by the metric that fired, pooled across machines (False: the series' family only);
    ``retrain``: an approved proposal retrains the feature model as Approve does in production, on the latest
    ``training_rows`` answers, and the monitor decides when as production's job does (module docstring; needs the
    monitor)."""

    monitor: MonitorConfig | None = field(default_factory=MonitorConfig)
    monitor_every_s: float = 3600.0
    answer_delay_s: float = 600.0
    recency_s: float | None = 86400.0
    name_dimension: bool = True
    retrain: bool = False
    training_rows: int = TRAINING_ROWS

    def __post_init__(self) -> None:
        if self.retrain and self.monitor is None:
            raise InvalidRecord("retrain", "retraining runs when a proposal is approved, so it needs the monitor")
        rows = self.training_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise InvalidRecord("training_rows", f"must be an integer >= 1, got {rows!r}")


@runtime_checkable
class RecordsModels(Protocol):
    """A loop transaction that can record a model version (the SQLite store's can; the loop protocol has no such
    method): every retraining candidate is recorded there, promoted or not, as production records it."""

    def save_model(self, model: LogisticModel, *, promoted: bool, recorded_at: float) -> None: ...


class _WithModel:
    """A loop transaction whose ``get_model`` is the replay's promoted model; everything else is the store's."""

    def __init__(self, tx: LoopTransaction, model: LogisticModel) -> None:
        self._tx = tx
        self._model = model

    def get_model(self) -> LogisticModel | None:
        return self._model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def training_rows(tx: LoopTransaction, answered: Sequence[str], limit: int) -> list[Answer]:
    """The latest ``limit`` effective answers as (prediction, y, trust weight), oldest first — what production
    reads (``storage.monitoring.training_rows``). ``answered``: the prediction ids in the order their answers were
    recorded (one answer event per prediction, as in the replay)."""
    rows: list[Answer] = []
    for pid in reversed(answered):
        prediction = tx.get_prediction(pid)
        if prediction is None:
            continue
        rows.extend((prediction, a.y, a.weight) for a in reversed(tx.feedback_for(pid)))
        if len(rows) >= limit:
            break
    return rows[:limit][::-1]


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
    triggers = approved = 0
    # With retraining the monitor runs as production's job does (bot/jobs/monitor.py), since that decides when
    # Approve comes: after a proposal L_align is averaged over the answers recorded since it only, and a drift alarm
    # raised at any answer since the last check counts even if the statistic has fallen back by the check.
    as_production = settings.retrain
    raised_since_check: bool | None = None  # None: no answer since the last check
    answered: list[str] = []  # prediction ids in the order their answers were recorded (the feedback log's order)
    keys: set[str] = set()  # every scenario key (and parent) a decision named: what a promotion restarts
    model: LogisticModel | None = None  # the promoted feature model
    retrainings: list[RetrainResult] = []
    for at, kind, i in events:
        if kind == _PREDICT:
            recency = None if memory is None else memory.state(dataset.series[int(stream.series_index[i])].name, at)
            prediction = _prediction(dataset, stream, i, recency, settings.name_dimension)
            with store.transaction() as tx:
                view = tx if model is None else cast(LoopTransaction, _WithModel(tx, model))
                result = decide(view, prediction, config=config, policy=policy, rng=rng, now=at)
            d = result.decision
            keys.add(d.key)
            if config.pool_keys:
                keys.add(config.key_spec.parent(d.key))
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
            answered.append(f"p{i}")
            if memory is not None:
                memory.observe(dataset.series[int(stream.series_index[i])].name, click, at)
            recent.append((code, float(y_true[i])))
            if monitor is not None:
                state, raised = observe_feedback(state, code, monitor)
                raised_since_check = raised or bool(raised_since_check)
        elif kind in (_OUTCOME, _OWN_OUTCOME):
            with store.transaction() as tx:
                record_outcome(tx, Outcome(f"p{i}", bool(stream.real_fault[i]), at, source="labels"), config=config)
        elif monitor is not None:
            raised_before, raised_since_check = raised_since_check, None  # every check starts a new interval
            if len(recent) < monitor.min_samples:
                continue
            codes = [c for c, _ in recent]
            loss = alignment_loss(codes)
            truthful = alignment_loss([t for _, t in recent])
            alarm = page_hinkley_alarm(state.ph, monitor.page_hinkley)
            if as_production and raised_before is not None:
                alarm = raised_before
            since_proposal = as_production and state.last_trigger_at is not None
            decision, state = evaluate_monitor(
                state, monitor, loss, len(codes), alarm, at, since_last_proposal=since_proposal
            )
            ideal = truthful is not None and truthful > monitor.loss_threshold
            if decision.trigger:
                triggers += 1
                if as_production:
                    recent.clear()  # the next L_align reads only answers recorded after this proposal
                approved += int(ideal)
                if ideal and settings.retrain:
                    with store.transaction() as tx:
                        retrained = _retrain(tx, answered, model, keys, config, settings, at, len(retrainings) + 1)
                    retrainings.append(retrained)
                    if retrained.promoted:
                        model = retrained.candidate
                state = resolve_proposal(state, approved=ideal)
            state = record_ground_truth(state, acted=decision.trigger, ideal=ideal)
    fidelity = monitor_fidelity(state)
    f_monitor = math.nan if fidelity is None else fidelity
    return ReplayTrace(surfaced, tau, y, y_true, f_monitor, triggers, approved, tuple(retrainings))


def _retrain(
    tx: LoopTransaction,
    answered: Sequence[str],
    current: LogisticModel | None,
    keys: set[str],
    config: LoopConfig,
    settings: ReplaySettings,
    now: float,
    version: int,
) -> RetrainResult:
    """Approve of a retraining proposal, as ``bot.retraining.resolve`` does it: fit, record the version, and on a
    promotion restart every key's step size (m(k) kept); promoted or not, the threshold bandit goes back to its
    prior."""
    rows = training_rows(tx, answered, settings.training_rows)
    result = retrain_on_answers(rows, current, key_spec=config.key_spec, now=now, version=version)
    if isinstance(tx, RecordsModels):
        tx.save_model(result.candidate, promoted=result.promoted, recorded_at=now)
    tx.put_bandit(tx.get_bandit().reset())
    if result.promoted:
        for key in sorted(keys):
            key_state = tx.get_key(key)
            if key_state.weight_sum > 0.0:  # a key whose step size has not moved is already restarted
                tx.put_key(reset_key(key_state))
    return result
