"""Core benchmark: the threshold bandit and the decide / feedback loop, each next to a plain baseline.

Every figure is the best of :data:`REPS` repetitions, measured in the same run as its plain-numpy or plain-Python
baseline (same inputs, same event stream). Rows whose variant starts with ``prototype:`` measure a proposed change
to ``npo/`` without editing it (a different call in the bench, or a method patched for the duration of one
measurement and restored afterwards); they show what the change would buy.

``run()`` returns rows and prints nothing. ``python -m bench.core_bench --profile`` prints a cProfile of
``decide`` and ``record_feedback`` and the cost of their parts.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import pstats
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import Row, row_name
from npo.bandit import BanditConfig, ThresholdBandit, choose_batch, new_batch, update_batch
from npo.feedback import FeedbackCodes
from npo.loop import (
    InMemoryStore,
    LoopConfig,
    decide,
    record_feedback,
)
from npo.policy import DEFAULT_POLICY_TEXT, Policy, PolicyContext, evaluate, parse_policy
from npo.scoring import scenario_key
from npo.types import Decision, FeedbackEvent, FeedbackKind, Prediction, Severity, Verdict

REPS = 3
SEED = 20240611
ARM_REWARD_P = (0.35, 0.50, 0.65, 0.55, 0.30)  # P(reward = 1) per arm τ = 0.5 … 0.9 in the simulated events
THRESHOLDS = BanditConfig().thresholds
BATCH_BANDITS = 1_000

Work = Callable[[], object]
Prepare = Callable[[], Work]


@dataclass(frozen=True, slots=True)
class Sizes:
    """Events per repetition of each figure."""

    single: int  # one-at-a-time bandit events
    batch_rounds: int  # rounds of BATCH_BANDITS events
    decisions: int  # predictions decided through the loop
    feedback_predictions: int  # surfaced predictions answered (≈ 2.1 feedback events each)


FULL = Sizes(single=40_000, batch_rounds=1_000, decisions=20_000, feedback_predictions=10_000)
QUICK = Sizes(single=4_000, batch_rounds=50, decisions=2_000, feedback_predictions=1_000)

FIG_SINGLE = "bandit, one event at a time (choose + update, 5 arms)"
FIG_BATCH = f"bandit, vectorised ({BATCH_BANDITS:,} independent bandits per call, choose + update)"
FIG_DECIDE = "loop decide, InMemoryStore, one transaction per prediction"
FIG_FEEDBACK = "loop record_feedback, InMemoryStore, one transaction per event"

API_SINGLE = row_name(FIG_SINGLE, "npo ThresholdBandit.choose(rng) + .update(arm, reward)")
API_BATCH = row_name(FIG_BATCH, "npo choose_batch + update_batch")
API_DECIDE = row_name(FIG_DECIDE, "npo decide, fresh InMemoryStore()")
API_FEEDBACK = row_name(FIG_FEEDBACK, "npo record_feedback (trust on, 5 % changed answers)")

TARGETS: dict[str, float] = {
    API_SINGLE: 50_000.0,
    API_BATCH: 1_000_000.0,
    API_DECIDE: 20_000.0,
}


# -- timing ----------------------------------------------------------------------------------------------------
def best_rate(n: int, prepare: Prepare, reps: int = REPS) -> float:
    """``n`` divided by the fastest of ``reps`` timings of ``prepare()()``; ``prepare`` (untimed) builds fresh state."""
    best = math.inf
    for _ in range(reps):
        work = prepare()
        gc.collect()
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return n / best


@contextmanager
def patched(owner: type, name: str, value: object) -> Iterator[None]:
    """Replace a class attribute for the duration of one measurement (prototypes only), then restore it."""
    original = owner.__dict__[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


# -- figure 1: one event at a time -----------------------------------------------------------------------------
def _uniforms(n: int) -> list[float]:
    """The event stream: reward = 1 when u < P(arm). Drawn once, shared by every variant."""
    return np.random.default_rng(SEED + 1).random(n).tolist()


def _single_frozen(
    u: Sequence[float],
    choose: Callable[[ThresholdBandit, Any], int],
    update: Callable[[ThresholdBandit, int, float], ThresholdBandit],
    make_rng: Callable[[], Any],
) -> Prepare:
    def prepare() -> Work:
        rng = make_rng()

        def work() -> ThresholdBandit:
            b = ThresholdBandit()
            for x in u:
                arm = choose(b, rng)
                b = update(b, arm, 1.0 if x < ARM_REWARD_P[arm] else 0.0)
            return b

        return work

    return prepare


def _single_numpy(u: Sequence[float]) -> Prepare:
    """Baseline: ``rng.beta(alpha, beta)`` + argmax, in-place update of two float arrays."""

    def prepare() -> Work:
        rng = np.random.default_rng(SEED)

        def work() -> object:
            alpha, beta = np.ones(len(THRESHOLDS)), np.ones(len(THRESHOLDS))
            for x in u:
                arm = int(np.argmax(rng.beta(alpha, beta)))
                r = 1.0 if x < ARM_REWARD_P[arm] else 0.0
                alpha[arm] += r
                beta[arm] += 1.0 - r
            return alpha

        return work

    return prepare


def _single_python(u: Sequence[float]) -> Prepare:
    """Baseline: ``random.betavariate`` per arm, lists updated in place."""

    def prepare() -> Work:
        betavariate = random.Random(SEED).betavariate

        def work() -> object:
            alpha, beta = [1.0] * len(THRESHOLDS), [1.0] * len(THRESHOLDS)
            for x in u:
                draws = [betavariate(a, b) for a, b in zip(alpha, beta, strict=True)]
                arm = draws.index(max(draws))
                r = 1.0 if x < ARM_REWARD_P[arm] else 0.0
                alpha[arm] += r
                beta[arm] += 1.0 - r
            return alpha

        return work

    return prepare


def bench_single(n: int) -> list[Row]:
    u = _uniforms(n)

    def numpy_rng() -> np.random.Generator:
        return np.random.default_rng(SEED)

    api = ThresholdBandit.choose, ThresholdBandit.update
    cases: list[tuple[str, Prepare]] = [
        ("baseline: numpy rng.beta(alpha, beta) + argmax, in-place arrays", _single_numpy(u)),
        ("baseline: pure Python random.betavariate, in-place lists", _single_python(u)),
        (API_SINGLE.split(" | ")[1], _single_frozen(u, *api, numpy_rng)),
    ]
    return [(row_name(FIG_SINGLE, label), best_rate(n, prepare), "events/s") for label, prepare in cases]


# -- figure 2: vectorised batches ------------------------------------------------------------------------------
def _batch_npo(rounds: int) -> Prepare:
    config = BanditConfig()
    probs = np.asarray(ARM_REWARD_P)

    def prepare() -> Work:
        rng = np.random.default_rng(SEED)

        def work() -> object:
            alpha, beta = new_batch((BATCH_BANDITS,), config)
            for _ in range(rounds):
                arms = choose_batch(alpha, beta, rng)
                rewards = (rng.random(BATCH_BANDITS) < probs[arms]).astype(np.float64)
                alpha, beta = update_batch(alpha, beta, arms, rewards, 1.0, config)
            return alpha

        return work

    return prepare


def _batch_numpy(rounds: int) -> Prepare:
    """Baseline: the same draws and arithmetic, with a fancy-indexed in-place update instead of one-hot arrays."""
    probs = np.asarray(ARM_REWARD_P)
    rows = np.arange(BATCH_BANDITS)

    def prepare() -> Work:
        rng = np.random.default_rng(SEED)

        def work() -> object:
            alpha, beta = np.ones((BATCH_BANDITS, len(THRESHOLDS))), np.ones((BATCH_BANDITS, len(THRESHOLDS)))
            for _ in range(rounds):
                arms = rng.beta(alpha, beta).argmax(axis=1)
                rewards = (rng.random(BATCH_BANDITS) < probs[arms]).astype(np.float64)
                alpha[rows, arms] += rewards
                beta[rows, arms] += 1.0 - rewards
            return alpha

        return work

    return prepare


def bench_batch(rounds: int) -> list[Row]:
    n = rounds * BATCH_BANDITS
    baseline = row_name(FIG_BATCH, "baseline: plain numpy rng.beta + argmax, fancy-index in-place")
    return [
        (baseline, best_rate(n, _batch_numpy(rounds)), "events/s"),
        (API_BATCH, best_rate(n, _batch_npo(rounds)), "events/s"),
    ]


# -- figure 3: the loop ----------------------------------------------------------------------------------------
FAULTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("disk_failure", ("replace_disk", "migrate_vms", "investigate")),
    ("memory_ecc", ("migrate_vms", "reboot", "investigate")),
    ("psu_degraded", ("investigate", "drain")),
    ("nic_flap", ("restart_service", "failover", "investigate")),
    ("thermal_throttle", ("drain", "investigate")),
    ("kernel_hang", ("reboot", "reimage")),
)
CLUSTERS = ("ams1", "fra2", "iad3", "sjc1")
SEVERITIES = (Severity.INFO, Severity.WARNING, Severity.WARNING, Severity.WARNING, Severity.CRITICAL)
OPERATORS = ("U01ALICE", "U02BOB", "U03CAROL", "U04DAVE", "U05ERIN", "U06FRANK")
KINDS = (FeedbackKind.LIKE, FeedbackKind.LIKE, FeedbackKind.NEUTRAL, FeedbackKind.OVERRIDE)
T0 = 1_750_000_000.0


def make_predictions(n: int, prefix: str, min_confidence: float = 0.0) -> list[Prediction]:
    """``n`` distinct, realistic predictions (distinct ids and fingerprints, mixed labels, severities, channels)."""
    rng = np.random.default_rng(SEED + 2)
    conf = min_confidence + (1.0 - min_confidence) * rng.beta(5.0, 2.0, n)
    ttf = rng.uniform(60.0, 86_400.0, n)
    preds: list[Prediction] = []
    for i in range(n):
        fault, actions = FAULTS[i % len(FAULTS)]
        cluster, rack = CLUSTERS[i % len(CLUSTERS)], i % 24
        preds.append(
            Prediction(
                id=f"{prefix}-{i:07d}",
                fault_type=fault,
                target=f"{cluster}-r{rack:02d}-n{i:05d}",
                action=actions[(i // len(FAULTS)) % len(actions)],
                confidence=float(conf[i]),
                severity=SEVERITIES[i % len(SEVERITIES)],
                time_to_fault_s=None if i % 4 == 0 else float(ttf[i]),
                labels={"cluster": cluster, "rack": f"r{rack:02d}"} if i % 3 == 0 else {},
                channel=None if i % 5 == 0 else f"ops-{cluster}",
                received_at=T0 + 0.5 * i,
            )
        )
    return preds


def _decide_all(store: InMemoryStore, preds: Sequence[Prediction], policy: Policy, rng: np.random.Generator) -> None:
    for p in preds:
        with store.transaction() as tx:
            decide(tx, p, config=store.config, policy=policy, rng=rng, now=p.received_at)


def _fresh_store(prestore_bandit: bool, *, blast_radius: bool = True) -> InMemoryStore:
    """A new store; ``blast_radius=False``: no action counts against a cluster (every prediction can be answered)."""
    store = InMemoryStore(LoopConfig()) if blast_radius else InMemoryStore(LoopConfig(), disruptive_actions=())
    if prestore_bandit:
        with store.transaction() as tx:
            tx.put_bandit(ThresholdBandit(store.config.bandit))
    return store


def _decide_npo(preds: Sequence[Prediction], policy: Policy, *, prestore_bandit: bool = False) -> Prepare:
    def prepare() -> Work:
        store, rng = _fresh_store(prestore_bandit), np.random.default_rng(SEED)
        return lambda: _decide_all(store, preds, policy, rng)

    return prepare


_DIGITS = re.compile(r"\d+")


def _band(p: float) -> str:
    return "p<0.5" if p < 0.5 else "p0.5-0.7" if p < 0.7 else "p0.7-0.9" if p < 0.9 else "p>=0.9"


@dataclass
class PlainState:
    """The plain-Python baseline's state: dicts and lists, nothing validated."""

    m: dict[str, float]
    weight_sum: dict[str, float]
    alpha: list[float]
    beta: list[float]
    decisions: dict[str, tuple[str, bool, float, float, int]]
    fingerprints: dict[tuple[str, str, str], float]
    requests: set[str]
    log: list[tuple[str, str, float]]


def _plain_state() -> PlainState:
    k = len(THRESHOLDS)
    return PlainState({}, {}, [1.0] * k, [1.0] * k, {}, {}, set(), [])


def plain_decide(state: PlainState, preds: Sequence[Prediction], rnd: random.Random) -> None:
    """Baseline: dedupe by id and fingerprint, key, m lookup, R = p(1 − m), Thompson τ, compare, store a tuple."""
    betavariate = rnd.betavariate
    for p in preds:
        fp = (p.fault_type, p.target, p.action)
        if p.id in state.decisions or fp in state.fingerprints:
            continue
        key = f"{p.fault_type}|{p.action}|{_DIGITS.sub('#', p.target)}|{_band(p.confidence)}"
        r = p.confidence * (1.0 - state.m.get(key, 0.0))
        draws = [betavariate(a, b) for a, b in zip(state.alpha, state.beta, strict=True)]
        arm = draws.index(max(draws))
        state.decisions[p.id] = (key, r >= THRESHOLDS[arm], r, THRESHOLDS[arm], arm)
        state.fingerprints[fp] = p.received_at


def _decide_plain(preds: Sequence[Prediction]) -> Prepare:
    def prepare() -> Work:
        state, rnd = _plain_state(), random.Random(SEED)
        return lambda: plain_decide(state, preds, rnd)

    return prepare


def bench_decide(n: int, policy: Policy) -> list[Row]:
    preds = make_predictions(n, "d")
    cases = [
        ("baseline: plain Python dicts (dedupe, key, m, R, Thompson τ)", best_rate(n, _decide_plain(preds))),
        (API_DECIDE.split(" | ")[1], best_rate(n, _decide_npo(preds, policy))),
    ]
    return [(row_name(FIG_DECIDE, label), value, "decisions/s") for label, value in cases]


def make_feedback(preds: Sequence[Prediction]) -> list[FeedbackEvent]:
    """Two engineers answer each prediction; every 20th first answer is later changed (a replacement)."""
    events: list[FeedbackEvent] = []
    for i, p in enumerate(preds):
        for j in range(2):
            operator, kind = OPERATORS[(i + j) % len(OPERATORS)], KINDS[(2 * i + j) % len(KINDS)]
            events.append(FeedbackEvent(p.id, operator, kind, p.received_at + 60.0 + j, f"req-{p.id}-{j}"))
        if i % 20 == 0:
            flipped = FeedbackKind.OVERRIDE if events[-2].kind is not FeedbackKind.OVERRIDE else FeedbackKind.LIKE
            events.append(FeedbackEvent(p.id, events[-2].operator, flipped, p.received_at + 300.0, f"req-{p.id}-c"))
    return events


def _feedback_npo(preds: Sequence[Prediction], events: Sequence[FeedbackEvent], policy: Policy) -> Prepare:
    def prepare() -> Work:
        # Feedback needs surfaced recommendations: as in the storage benchmark, no action is disruptive here, so the
        # blast radius (which the in-memory store applies like SQLite's) blocks none of them.
        store = _fresh_store(prestore_bandit=False, blast_radius=False)
        _decide_all(store, preds, policy, np.random.default_rng(SEED))
        config = store.config

        def work() -> None:
            for event in events:
                with store.transaction() as tx:
                    record_feedback(tx, event, config=config)

        return work

    return prepare


def plain_feedback(state: PlainState, events: Sequence[FeedbackEvent], codes: dict[FeedbackKind, float]) -> None:
    """Baseline: request-id dedupe, decision lookup, decaying-η m(k) step, Beta update of the arm, append a log row."""
    for ev in events:
        if ev.request_id in state.requests:
            continue
        key, _surfaced, _r, _tau, arm = state.decisions[ev.prediction_id]
        y = codes[ev.kind]
        m, w = state.m.get(key, 0.0), state.weight_sum.get(key, 0.0)
        state.m[key] = min(1.0, max(0.0, m + (w + 10.0) ** -0.6 * (y - m)))
        state.weight_sum[key] = w + 1.0
        state.alpha[arm] += 1.0 - y
        state.beta[arm] += y
        state.requests.add(ev.request_id)
        state.log.append((ev.prediction_id, ev.operator, y))


def _feedback_plain(preds: Sequence[Prediction], events: Sequence[FeedbackEvent]) -> Prepare:
    codes = {kind: FeedbackCodes().code(kind) for kind in FeedbackKind}

    def prepare() -> Work:
        state = _plain_state()
        plain_decide(state, preds, random.Random(SEED))
        return lambda: plain_feedback(state, events, codes)

    return prepare


def bench_feedback(n_predictions: int, policy: Policy) -> list[Row]:
    preds = make_predictions(n_predictions, "f", min_confidence=0.92)  # R ≥ 0.92 > every τ: all surfaced
    events = make_feedback(preds)
    n = len(events)
    small_preds = preds[: max(1, n_predictions // 10)]
    small_events = make_feedback(small_preds)
    small = best_rate(len(small_events), _feedback_npo(small_preds, small_events, policy))
    cases = [
        (
            "baseline: plain Python dicts (dedupe, m(k) step, arm update, log)",
            best_rate(n, _feedback_plain(preds, events)),
        ),
        (API_FEEDBACK.split(" | ")[1], best_rate(n, _feedback_npo(preds, events, policy))),
        (f"npo record_feedback, store 1/10 the size ({len(small_events):,} events)", small),
    ]
    return [(row_name(FIG_FEEDBACK, label), value, "events/s") for label, value in cases]


# -- entry points ----------------------------------------------------------------------------------------------
def run(quick: bool = False) -> list[Row]:
    """Measure every figure (best of REPS each); returns (name, value, unit) rows. Prints nothing."""
    sizes = QUICK if quick else FULL
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    return [
        *bench_single(sizes.single),
        *bench_batch(sizes.batch_rounds),
        *bench_decide(sizes.decisions, policy),
        *bench_feedback(sizes.feedback_predictions, policy),
    ]


# -- profiling (python -m bench.core_bench --profile) -----------------------------------------------------------
def _per_call_us(fn: Callable[[Prediction], object], preds: Sequence[Prediction]) -> float:
    def prepare() -> Work:
        return lambda: [fn(p) for p in preds]

    return 1e6 / best_rate(len(preds), prepare)


def _decision_for(p: Prediction, key: str) -> Decision:
    return Decision(p.id, key, Verdict.SURFACE, "all_rules_passed", "ok", p.confidence, 0.0, p.confidence, 0.7, 2, 0.0)


def part_costs(n: int, policy: Policy) -> list[tuple[str, float]]:
    """µs per call of the pieces of one ``decide``, measured in isolation over the same predictions."""
    preds = make_predictions(n, "c")
    config = LoopConfig()
    store, rng, bandit = _fresh_store(prestore_bandit=False), np.random.default_rng(SEED), ThresholdBandit()
    keys = {p.id: scenario_key(p, config.key_spec) for p in preds}
    ctx = PolicyContext(now=T0)

    def empty_tx(_: Prediction) -> object:
        with store.transaction() as tx:
            return tx

    return [
        ("decide, whole (fresh store per repetition, one transaction)", 1e6 / best_rate(n, _decide_npo(preds, policy))),
        ("InMemoryStore.transaction() enter + exit", _per_call_us(empty_tx, preds)),
        ("scenario_key", _per_call_us(lambda p: scenario_key(p, config.key_spec), preds)),
        (
            "PolicyContext(now=…) (InMemoryTransaction.policy_context)",
            _per_call_us(lambda p: PolicyContext(now=p.received_at), preds),
        ),
        ("evaluate(policy, …)", _per_call_us(lambda p: evaluate(policy, p, keys[p.id], "ops", ctx), preds)),
        (
            "ThresholdBandit(config) (get_bandit with no stored bandit)",
            _per_call_us(lambda _: ThresholdBandit(config.bandit), preds),
        ),
        ("ThresholdBandit.choose (scalar rng.beta per arm)", _per_call_us(lambda _: bandit.choose(rng), preds)),
        ("Decision(...) with __post_init__ validation", _per_call_us(lambda p: _decision_for(p, keys[p.id]), preds)),
    ]


def profile_report(n: int, top: int = 18) -> str:
    """cProfile (sorted by own time) of ``n`` decisions and the feedback for ``n // 2`` predictions."""
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    out = io.StringIO()
    decide_work = _decide_npo(make_predictions(n, "pd"), policy)()
    preds = make_predictions(n // 2, "pf", min_confidence=0.92)
    feedback_work = _feedback_npo(preds, make_feedback(preds), policy)()
    for title, work in (("decide", decide_work), ("record_feedback", feedback_work)):
        profiler = cProfile.Profile()
        profiler.runcall(work)
        out.write(f"\n=== cProfile: {title} (sorted by own time) ===\n")
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    out.write("\n=== parts of one decide, µs per call (best of 3) ===\n")
    for label, us in part_costs(min(n, 10_000), policy):
        out.write(f"{label:<62} {us:8.2f} µs\n")
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.core_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--profile", action="store_true", help="print cProfile of decide and record_feedback")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile_report(QUICK.decisions if args.quick else FULL.decisions))
        return
    for name, value, unit in run(quick=args.quick):
        print(f"{name:<120} {value:>14,.1f} {unit}")


if __name__ == "__main__":
    main()
