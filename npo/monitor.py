"""The meta-monitor: when to propose retraining, and how often that call was right (F_monitor).

Two signals, both computed from the stream of feedback codes y ∈ [0, 1] (override 1, like 0, neutral 0.5,
skipped λ):

* the windowed alignment loss L_align (computed by :mod:`npo.alignment` and passed in), compared with a
  threshold θ (default 0.3, the paper's retraining trigger);
* a **Page–Hinkley** test for an *increase* of the mean of y (engineers start overriding more):

      n ← n + 1,  ȳ ← ȳ + (y − ȳ)/n,  C ← C + (y − ȳ − δ),  C_min ← min(C_min, C),
      alarm  ⇔  n ≥ min_samples  and  C − C_min > h.

  **(decision)** Defaults δ = 0.05, h = 15. Measured on 2,000 seeds (``tests/unit/test_monitor.py`` checks the
  same numbers on fewer seeds): i.i.d. Bernoulli(0.2) streams give a false alarm on 0.7 % of 2,000-sample
  streams (3.6 % of 10,000-sample streams); a jump of the mean 0.2 → 0.5 after 1,000 samples is detected after
  a median of 54 samples (95th percentile 87); a small jump 0.2 → 0.3 after a median of ~250. With δ = 0.005
  (a value sometimes quoted) no threshold meets both goals: h = 35 gives 3 % false alarms on 2,000 samples but
  40 % on 10,000 and a median delay of ~100, because the negative drift −δ of the statistic under no change is
  too weak to keep its random-walk excursions small on long streams.

The detector does not reset itself after an alarm: the alarm stays up while the statistic is above h. The
statistic can also rise above h and fall back below it between two scheduled runs (a burst of overrides, then
ordinary answers), so a caller that feeds a run's answers in one go must count an alarm raised at any of them,
not only the level at the end (``bot.jobs.monitor`` does, as the simulation does). :func:`evaluate_monitor`
resets the detector when it opens a proposal, so the next alarm is about a change after that proposal; likewise
the caller should average the next L_align over answers recorded after that proposal only, or it would propose
again, once the cooldown is over, on the very answers an engineer has already approved or dismissed.

Rules of :func:`evaluate_monitor`: trigger when (L_align > θ over at least ``min_samples`` answers) or
a drift alarm is up, but never while a proposal is open and never within ``cooldown_s`` of the last trigger.
"Above θ" means by more than floating-point rounding (:data:`LOSS_TOLERANCE`): a channel nobody answers has every
code at λ = 0.3 = θ, and the mean of 60 such codes is 0.30000000000000004 — which is not a loss above θ.
A window of skips only never triggers on L_align, whatever λ (a valid λ may be above θ, e.g. 0.35 > 0.3): silence
is no evidence that the model is wrong, and a retraining could learn nothing from skips alone. A window with at
least one answer keeps the threshold rule.

**A drift alarm that is held back is remembered** (:class:`HeldAlarm`). The detector's running mean follows the new
level of y, so under a change that *persists* the statistic rises above h and later falls back below it on its own
(a rise of the override rate 0 → 0.25 after 100 answers alarms from the 237th answer to the 885th). When that
happens while a proposal is open or the cooldown holds alerts back, the level the next free run reads is no alarm
and the change would never be reported. So the first run that holds an alarm back keeps the level of y before
the change (:func:`page_hinkley_baseline`) and counts the answers after the detector was last in alarm
(:func:`held_alarm_observe`); the alarm stands for the next run that may trigger while those answers still average
more than δ above that level (or are fewer than ``page_hinkley.min_samples``: too few to say the change is over)
— :func:`held_alarm_persists` — and is forgotten once a run finds it has not held, or an alert is raised.
(``bot.jobs.monitor`` keeps it between runs; the simulation, ``npo.sim.engine``, keeps it between checks with the
same rule, :func:`held_alarm_persists_batch` — there only the cooldown holds alarms back, an approval being
immediate.)

**An unanswered proposal expires** ``proposal_expiry_s`` after the run that raised it
(:func:`proposal_expires_at`): :func:`expire_proposal` closes it without counting toward F_monitor (nobody judged
the alert), so the monitor may propose again — on new evidence: L_align counts the answers after the last
proposal, expired or not, so an alert nobody answered is not raised again on the same answers.

F_monitor = E[1(A_t = G_t)] is counted by :func:`record_ground_truth`: A_t is what the monitor did (triggered
or not), G_t the ideal response — the engineers' Approve / Dismiss in production, the known drift in
simulation. An expired proposal has no G_t and is not counted. Nor has one whose answers disagree: in production an
approval given in time that NPO could not carry out (its retraining failed) is an answer, though not recorded as the
proposal's, so a Dismiss by someone else afterwards closes the proposal without a G_t (``bot.retraining``); the
approver's own Dismiss replaces their answer and is counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


# -- Page–Hinkley --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PageHinkleyConfig:
    """Page–Hinkley parameters for detecting an increase of the mean of y ∈ [0, 1].

    ``delta`` (δ ≥ 0) is the tolerated increase per sample: the statistic drifts down by δ per sample when
    nothing changes, so shifts of the mean smaller than δ are never detected. ``threshold`` (h > 0) is the
    alarm level of the statistic C − C_min, in units of y (a sustained shift of size d is detected after
    roughly h / (d − δ) samples). ``min_samples`` is the number of samples before any alarm (the running mean
    needs them to settle). See the module docstring for the measured false-alarm rate and detection delay.
    """

    delta: float = 0.05
    threshold: float = 15.0
    min_samples: int = 30

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delta) and self.delta >= 0.0):
            raise InvalidRecord("page_hinkley.delta", f"must be a finite number >= 0, got {self.delta}")
        if not (math.isfinite(self.threshold) and self.threshold > 0.0):
            raise InvalidRecord("page_hinkley.threshold", f"must be a finite number > 0, got {self.threshold}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise InvalidRecord("page_hinkley.min_samples", f"must be an integer >= 1, got {self.min_samples!r}")


@dataclass(frozen=True, slots=True)
class PageHinkleyState:
    """Page–Hinkley state: ``n`` samples seen, their running ``mean``, the cumulative sum C and its
    running ``minimum`` C_min. The test statistic is C − C_min ≥ 0. The default is the empty detector."""

    n: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0

    def __post_init__(self) -> None:
        if not self.n >= 0:  # NaN included
            raise InvalidRecord("ph.n", f"must be >= 0, got {self.n}")
        for name in ("mean", "cumulative", "minimum"):
            value = getattr(self, name)
            if not math.isfinite(value):  # a NaN would keep every later statistic NaN: never an alarm again
                raise InvalidRecord(f"ph.{name}", f"must be a finite number, got {value}")

    @property
    def statistic(self) -> float:
        """C − C_min ≥ 0: how far the cumulative deviation has risen above its lowest point (units of y)."""
        return self.cumulative - self.minimum


def _check_code(y: float) -> float:
    if isinstance(y, bool) or not isinstance(y, int | float) or not 0.0 <= float(y) <= 1.0:
        raise InvalidRecord("y", f"must be a feedback code in [0, 1], got {y!r}")
    return float(y)


def page_hinkley_alarm(state: PageHinkleyState, config: PageHinkleyConfig) -> bool:
    """Whether the detector is in alarm: at least ``min_samples`` samples and statistic > threshold.

    Reads the state only; does not add a sample or reset anything.
    """
    return state.n >= config.min_samples and state.statistic > config.threshold


def page_hinkley_update(state: PageHinkleyState, y: float, config: PageHinkleyConfig) -> tuple[PageHinkleyState, bool]:
    """Add one feedback code ``y`` ∈ [0, 1]; return the new state and whether the detector is in alarm.

    The alarm is level-triggered (it stays True while the statistic is above the threshold); this function
    never resets the detector — start again from ``PageHinkleyState()`` for that. Only detects increases of
    the mean. Raises :class:`InvalidRecord` for y outside [0, 1].
    """
    y = _check_code(y)
    n = state.n + 1
    mean = state.mean + (y - state.mean) / n
    cumulative = state.cumulative + (y - mean - config.delta)
    new = PageHinkleyState(n=n, mean=mean, cumulative=cumulative, minimum=min(state.minimum, cumulative))
    return new, page_hinkley_alarm(new, config)


def page_hinkley_baseline(codes: Iterable[float], config: PageHinkleyConfig) -> float:
    """The level of y before the change the detector reacts to: its running mean at the last sample where the
    cumulative sum C reached its minimum C_min (the usual Page–Hinkley estimate of the change point), replaying
    ``codes`` from the empty detector. 0.0 without codes. Raises :class:`InvalidRecord` for a code outside [0, 1].
    """
    state, baseline = PageHinkleyState(), 0.0
    for y in codes:
        state, _ = page_hinkley_update(state, y, config)
        if state.cumulative <= state.minimum:
            baseline = state.mean
    return baseline


def page_hinkley_step(
    n: IntArray | FloatArray,
    mean: FloatArray,
    cumulative: FloatArray,
    minimum: FloatArray,
    y: FloatArray,
    config: PageHinkleyConfig,
    *,
    mask: BoolArray | None = None,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, BoolArray]:
    """Vectorised :func:`page_hinkley_update` over any batch shape (e.g. (seeds,) or (seeds, channels)).

    All arrays broadcast to one shape; every element is an independent detector. Where ``mask`` is False the
    element takes no sample and keeps its state (its alarm still reports its current level). Returns new
    arrays (inputs are not modified) ``(n, mean, cumulative, minimum, alarm)``, n as int64. Does not
    validate that y lies in [0, 1] (hot loop of the simulation) and never resets a detector — reset all four
    arrays to 0 where wanted, e.g. ``np.where(alarm, 0, ...)``.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    take = np.ones(y_arr.shape, dtype=np.bool_) if mask is None else np.asarray(mask, dtype=np.bool_)
    n_new = np.where(take, n + 1, n).astype(np.int64)
    safe_n = np.maximum(n_new, 1)
    mean_new = np.where(take, mean + (y_arr - mean) / safe_n, mean)
    cum_new = np.where(take, cumulative + (y_arr - mean_new - config.delta), cumulative)
    min_new = np.where(take, np.minimum(minimum, cum_new), minimum)
    alarm = (n_new >= config.min_samples) & ((cum_new - min_new) > config.threshold)
    return n_new, mean_new.astype(np.float64), cum_new.astype(np.float64), min_new.astype(np.float64), alarm


# -- the monitor ---------------------------------------------------------------------------------------------
LOSS_TOLERANCE = 1e-9  # L_align must exceed θ by more than this: a mean of codes carries ~1e-16 relative rounding


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Retraining-trigger rules.

    ``loss_threshold`` θ ∈ [0, 1]: L_align above it triggers. ``window``: the number of most recent answers (to
    surfaced recommendations; several people may answer one) the caller averages L_align over (used by the caller,
    reported in reasons). ``window_s``: the window's time bound, in seconds before the run (default 7 days: the
    window is the last ``window`` answers of the last 7 days; used by the caller, which bounds the window before by
    the same length before that).
    ``cooldown_s``: seconds after a trigger during which no new trigger happens (default 6 h).
    ``min_samples``: answers needed in the window before L_align may trigger. ``page_hinkley``: the
    drift detector's configuration (used by :func:`observe_feedback`). ``proposal_expiry_s``: seconds after the
    trigger at which a proposal nobody answered expires (default 7 days: :func:`proposal_expires_at`).
    """

    loss_threshold: float = 0.3
    window: int = 200
    cooldown_s: float = 6 * 3600.0
    min_samples: int = 30
    page_hinkley: PageHinkleyConfig = field(default_factory=PageHinkleyConfig)
    proposal_expiry_s: float = 7 * 86_400.0
    window_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.loss_threshold) and 0.0 <= self.loss_threshold <= 1.0):
            raise InvalidRecord("monitor.loss_threshold", f"must be in [0, 1], got {self.loss_threshold}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise InvalidRecord("monitor.window", f"must be an integer >= 1, got {self.window!r}")
        if not (math.isfinite(self.cooldown_s) and self.cooldown_s >= 0.0):
            raise InvalidRecord("monitor.cooldown_s", f"must be a finite number of seconds >= 0, got {self.cooldown_s}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise InvalidRecord("monitor.min_samples", f"must be an integer >= 1, got {self.min_samples!r}")
        if not (math.isfinite(self.window_s) and self.window_s > 0.0):
            raise InvalidRecord("monitor.window_s", f"must be a finite number of seconds > 0, got {self.window_s}")
        if not (math.isfinite(self.proposal_expiry_s) and self.proposal_expiry_s > 0.0):
            raise InvalidRecord(
                "monitor.proposal_expiry_s", f"must be a finite number of seconds > 0, got {self.proposal_expiry_s}"
            )


@dataclass(frozen=True, slots=True)
class MonitorState:
    """What the monitor remembers between runs.

    ``last_trigger_at``: Unix seconds of the last trigger (None: never). ``open_proposal``: a retraining
    proposal awaits Approve / Dismiss. ``matches`` / ``decisions``: F_monitor counts. ``ph``: the drift
    detector.
    """

    last_trigger_at: float | None = None
    open_proposal: bool = False
    matches: int = 0
    decisions: int = 0
    ph: PageHinkleyState = field(default_factory=PageHinkleyState)


@dataclass(frozen=True, slots=True)
class MonitorDecision:
    """One monitor run's verdict: ``trigger`` a retraining proposal or not, and a readable ``reason``.
    ``held_back``: a cause was there, but an open proposal or the cooldown held the trigger back."""

    trigger: bool
    reason: str
    held_back: bool = False


@dataclass(frozen=True, slots=True)
class HeldAlarm:
    """A drift alarm a run held back (a proposal was open, or the cooldown): see the module docstring.

    ``raised_at``: the (scheduled) time of the first run that held it back. ``baseline``: the level of y before the
    change (:func:`page_hinkley_baseline`). ``n_after`` / ``sum_after``: how many codes arrived after the detector
    was last in alarm, and their sum.
    """

    raised_at: float
    baseline: float
    n_after: int = 0
    sum_after: float = 0.0

    def __post_init__(self) -> None:
        for name in ("raised_at", "baseline", "sum_after"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidRecord(f"held_alarm.{name}", f"must be a finite number, got {getattr(self, name)!r}")
        if not 0.0 <= self.baseline <= 1.0:
            raise InvalidRecord("held_alarm.baseline", f"must be in [0, 1], got {self.baseline}")
        if isinstance(self.n_after, bool) or not isinstance(self.n_after, int) or self.n_after < 0:
            raise InvalidRecord("held_alarm.n_after", f"must be an integer >= 0, got {self.n_after!r}")
        if not 0.0 <= self.sum_after <= self.n_after + 1e-9:
            raise InvalidRecord("held_alarm.sum_after", f"must be in [0, n_after], got {self.sum_after}")

    @property
    def mean_after(self) -> float | None:
        """The mean code since the detector was last in alarm (None before any)."""
        return None if self.n_after == 0 else self.sum_after / self.n_after


def held_alarm_observe(held: HeldAlarm, y: float, alarm: bool) -> HeldAlarm:
    """Account one more code ``y`` (fed to the detector, which answered ``alarm``): while the detector is in
    alarm the count starts again, otherwise ``y`` is one more answer after the alarm."""
    y = _check_code(y)
    if alarm:
        return replace(held, n_after=0, sum_after=0.0)
    return replace(held, n_after=held.n_after + 1, sum_after=held.sum_after + y)


def held_alarm_persists(held: HeldAlarm, config: MonitorConfig) -> bool:
    """Whether a held-back alarm still stands: fewer than ``page_hinkley.min_samples`` answers since the detector
    was last in alarm (too few to say the change is over), or their mean more than δ above the level before the
    change."""
    ph = config.page_hinkley
    mean = held.mean_after
    return mean is None or held.n_after < ph.min_samples or mean > held.baseline + ph.delta + LOSS_TOLERANCE


def held_alarm_persists_batch(
    n_after: IntArray, sum_after: FloatArray, baseline: FloatArray, config: PageHinkleyConfig
) -> BoolArray:
    """Vectorised :func:`held_alarm_persists` over any batch shape: the same rule, element by element, for held
    alarms given as arrays (``n_after``, ``sum_after``, ``baseline`` as in :class:`HeldAlarm`). Whether an element
    holds an alarm at all is the caller's to mask (the simulation, ``npo.sim.engine``, keeps a boolean array)."""
    n = np.asarray(n_after)
    mean = np.asarray(sum_after, dtype=np.float64) / np.maximum(n, 1)
    bar = np.asarray(baseline, dtype=np.float64) + config.delta + LOSS_TOLERANCE
    return np.asarray((n < config.min_samples) | (mean > bar), dtype=np.bool_)


def proposal_expires_at(trigger_at: float, config: MonitorConfig) -> float:
    """When a proposal raised at ``trigger_at`` (Unix seconds) expires if nobody answers it."""
    return float(trigger_at) + config.proposal_expiry_s


def threshold_text(theta: float) -> str:
    """θ as reasons and alerts show it: two decimals (the default 0.30), or every digit θ needs when two would show
    another number (θ = 0.325 is "0.325", not "0.33")."""
    text = f"{theta:.2f}"
    return text if float(text) == theta else repr(float(theta))


def loss_text(loss: float, theta: float, *, digits: int = 2) -> str:
    """L_align next to θ: with ``digits`` decimals (at least as many as :func:`threshold_text` gives θ), or as many
    more as it takes for the shown figures to compare as L_align compares with θ (above it by more than
    :data:`LOSS_TOLERANCE`, or not): 0.3025 above θ = 0.3 reads "0.302 > 0.30", never "0.30 > 0.30"."""
    above = loss > theta + LOSS_TOLERANCE
    bound = threshold_text(theta)
    shown_bound = float(bound)
    for d in range(max(digits, len(bound.partition(".")[2])), 18):
        shown = f"{loss:.{d}f}"
        if (float(shown) > shown_bound) == above:
            return shown
    return repr(float(loss))


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def observe_feedback(state: MonitorState, y: float, config: MonitorConfig) -> tuple[MonitorState, bool]:
    """Feed one feedback code ``y`` ∈ [0, 1] to the monitor's drift detector; return the state and the alarm.

    Does not evaluate the trigger rules (that is :func:`evaluate_monitor`, on its schedule).
    """
    ph, alarm = page_hinkley_update(state.ph, y, config.page_hinkley)
    return replace(state, ph=ph), alarm


def evaluate_monitor(
    state: MonitorState,
    config: MonitorConfig,
    window_loss: float | None,
    n_in_window: int,
    drift_alarm: bool,
    now: float,
    *,
    since_last_proposal: bool = False,
    held_alarm: HeldAlarm | None = None,
    n_skipped: int = 0,
    drift_in_skips_only: bool = False,
) -> tuple[MonitorDecision, MonitorState]:
    """One scheduled monitor run: decide whether to open a retraining proposal.

    ``window_loss``: L_align ∈ [0, 1] over the window (None when the window is empty); ``n_in_window``: how
    many answers it averages (reasons call them answers: with several people answering one recommendation, the
    count is not of recommendations); ``drift_alarm``: the Page–Hinkley alarm (e.g.
    ``page_hinkley_alarm(state.ph, config.page_hinkley)``); ``now``: Unix seconds; ``since_last_proposal``: the
    window holds only the answers recorded since the last proposal (the reason says so); ``held_alarm``: a drift
    alarm an earlier run held back, which counts as one while :func:`held_alarm_persists`; ``n_skipped``: how many
    of the window's answers are skips (nobody answered in time); ``drift_in_skips_only``: every answer since the
    change the drift alarm (or the held alarm) reacts to is a skip — the alarm is then no cause (silence is no
    evidence), held back or not.

    Triggers when (L_align > θ with n_in_window ≥ min_samples, and at least one answer in the window is not a skip)
    or drift_alarm (or a held alarm that persists) —
    unless a proposal is open or the last trigger is less than ``cooldown_s`` ago (the reason then starts with
    ``"suppressed:"`` and the decision is ``held_back``). A
    trigger sets ``open_proposal``, ``last_trigger_at = now`` and resets the drift detector. Does not count
    the decision toward F_monitor (the ideal answer is known only later: :func:`record_ground_truth`), does
    not post anything and does not retrain.
    """
    if window_loss is not None and not (math.isfinite(window_loss) and 0.0 <= window_loss <= 1.0):
        raise InvalidRecord("window_loss", f"must be in [0, 1] or None, got {window_loss!r}")
    if isinstance(n_in_window, bool) or not isinstance(n_in_window, int) or n_in_window < 0:
        raise InvalidRecord("n_in_window", f"must be an integer >= 0, got {n_in_window!r}")
    if isinstance(n_skipped, bool) or not isinstance(n_skipped, int) or not 0 <= n_skipped <= n_in_window:
        raise InvalidRecord("n_skipped", f"must be an integer in [0, n_in_window], got {n_skipped!r}")
    if not math.isfinite(now):
        raise InvalidRecord("now", f"must be a finite number of seconds, got {now!r}")

    theta = config.loss_threshold
    shown_theta = threshold_text(theta)
    shown_loss = "" if window_loss is None else loss_text(window_loss, theta)
    causes: list[str] = []
    since = " since the last proposal" if since_last_proposal else ""
    if window_loss is None:
        quiet = f"no answers{since or ' in the window'}"
    elif n_in_window < config.min_samples:
        quiet = f"L_align {window_loss:.2f} over only {n_in_window} answers{since} (< {config.min_samples})"
    elif window_loss > theta + LOSS_TOLERANCE and n_skipped == n_in_window:
        # Silence is no evidence that the model is wrong (and a retraining could learn nothing from skips alone).
        loss = f"L_align {shown_loss} > {shown_theta} over {n_in_window} skips"
        quiet = f"only skips{since or ' in the window'}: nobody answered ({loss})"
    elif window_loss > theta + LOSS_TOLERANCE:
        causes.append(f"L_align {shown_loss} > {shown_theta} over {n_in_window} answers{since}")
        quiet = ""
    else:
        quiet = f"L_align {shown_loss} ≤ {shown_theta} over {n_in_window} answers{since}"
    drift = "no drift alarm"
    held = held_alarm is not None and held_alarm_persists(held_alarm, config)
    if (drift_alarm or held) and drift_in_skips_only:
        drift = "drift in skips only: nobody answered"
    elif drift_alarm:
        causes.append("Page-Hinkley drift alarm")
    elif held_alarm is not None and held:
        causes.append(_held_cause(held_alarm, config))

    if not causes:
        return MonitorDecision(False, f"no trigger: {quiet}; {drift}"), state
    cause = "; ".join(causes)
    if state.open_proposal:
        return MonitorDecision(False, f"suppressed: proposal already open ({cause})", held_back=True), state
    if state.last_trigger_at is not None and now - state.last_trigger_at < config.cooldown_s:
        until = state.last_trigger_at + config.cooldown_s
        return MonitorDecision(False, f"suppressed: cooldown until {_utc(until)} ({cause})", held_back=True), state
    new_state = replace(state, last_trigger_at=float(now), open_proposal=True, ph=PageHinkleyState())
    return MonitorDecision(True, cause), new_state


def _held_cause(held: HeldAlarm, config: MonitorConfig) -> str:
    since = f"Page-Hinkley drift alarm held back since {_utc(held.raised_at)}"
    mean = held.mean_after
    if mean is None or held.n_after < config.page_hinkley.min_samples:
        return f"{since} (only {held.n_after} answers after it)"
    after = f"the {held.n_after} answers after it average {mean:.2f}"
    return f"{since} ({after}, above {held.baseline:.2f} before the change)"


def expire_proposal(state: MonitorState) -> MonitorState:
    """Close the open proposal because nobody answered it in time (:func:`proposal_expires_at`); a no-op when none
    is open. Not counted toward F_monitor (there is no answer to judge) and the cooldown is not touched."""
    if not state.open_proposal:
        return state
    return replace(state, open_proposal=False)


def resolve_proposal(state: MonitorState, approved: bool) -> MonitorState:
    """Close the open proposal (Approve or Dismiss alike); a no-op when none is open (a repeated click).

    Does not count toward F_monitor — call ``record_ground_truth(state, acted=True, ideal=approved)`` for that
    — and does not touch the cooldown (it still runs from the trigger time).
    """
    del approved  # both answers close the proposal; the caller records which one for F_monitor
    if not state.open_proposal:
        return state
    return replace(state, open_proposal=False)


def record_ground_truth(state: MonitorState, acted: bool, ideal: bool) -> MonitorState:
    """Count one monitor decision toward F_monitor: ``acted`` (did it trigger) vs ``ideal`` (should it have).

    In production: a trigger approved → (True, True), dismissed → (True, False). In simulation: ``ideal`` is
    whether the known drift had happened (and not yet been handled). Does nothing else.
    """
    return replace(state, matches=state.matches + int(bool(acted) == bool(ideal)), decisions=state.decisions + 1)


def monitor_fidelity(state: MonitorState) -> float | None:
    """F_monitor = matches / decisions ∈ [0, 1]; None before any decision has been scored."""
    if state.decisions == 0:
        return None
    return state.matches / state.decisions
