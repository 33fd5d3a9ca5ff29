"""The evaluation's recency keys, the static alerting rule, and the replay's event order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npo.bandit import BanditConfig
from npo.evaluate.data import Dataset, FaultWindow, Series
from npo.evaluate.engineers import EngineerConfig, draw_answers
from npo.evaluate.predictor import SeriesPredictions
from npo.evaluate.recency import LIKED, OVERRIDDEN, QUIET, TargetMemory
from npo.evaluate.replay import ReplaySettings, Stream, build_stream, replay
from npo.evaluate.static import static_trace
from npo.feedback import FeedbackCodes
from npo.loop import InMemoryStore, LoopConfig
from npo.policy import DEFAULT_POLICY
from npo.types import FeedbackKind, InvalidRecord

HOUR = 3600.0


def test_target_memory_remembers_the_last_like_or_override_for_a_while() -> None:
    memory = TargetMemory(memory_s=10 * HOUR)
    assert memory.state("a", 0.0) == QUIET
    memory.observe("a", FeedbackKind.OVERRIDE, 0.0)
    memory.observe("b", FeedbackKind.LIKE, 0.0)
    assert memory.state("a", 5 * HOUR) == OVERRIDDEN and memory.state("b", 5 * HOUR) == LIKED
    memory.observe("a", FeedbackKind.SKIPPED, HOUR)  # a skip or a neutral click says nothing
    memory.observe("a", FeedbackKind.NEUTRAL, HOUR)
    assert memory.state("a", 5 * HOUR) == OVERRIDDEN
    memory.observe("a", FeedbackKind.LIKE, 6 * HOUR)
    assert memory.state("a", 7 * HOUR) == LIKED
    assert memory.state("b", 10 * HOUR + 1) == QUIET  # forgotten after memory_s
    with pytest.raises(InvalidRecord, match=r"recency\.memory_s"):
        TargetMemory(memory_s=0.0)


def _two_series(times: list[float]) -> tuple[Dataset, Stream]:
    """``noisy`` (never in a window) and ``faulty`` (one window over everything) with predictions at ``times``."""
    n = 200
    grid = np.arange(n) * 300.0
    series = (
        Series("noisy", "cpu", "noisy", grid, np.zeros(n)),
        Series("faulty", "cpu", "faulty", grid, np.zeros(n)),
    )
    ds = Dataset("t", series, (FaultWindow("faulty", 0.0, times[-1], 0.0),), horizon_s=HOUR)

    def preds(name: str) -> SeriesPredictions:
        t = np.asarray(times)
        return SeriesPredictions(name, np.arange(t.size), t, np.ones(t.size), np.full(t.size, 0.95))

    return ds, build_stream(ds, [preds("noisy"), preds("faulty")])


def _replay(ds: Dataset, stream: Stream, recency_s: float | None) -> InMemoryStore:
    answers = draw_answers(
        stream.real_fault, stream.series_index, 2, EngineerConfig(noise=0, skip_rate=0), np.random.default_rng(0)
    )
    config = LoopConfig(bandit=BanditConfig(thresholds=(0.5,)))
    store = InMemoryStore(config)
    replay(
        ds,
        stream,
        answers,
        store=store,
        config=config,
        policy=DEFAULT_POLICY,
        rng=np.random.default_rng(1),
        settings=ReplaySettings(monitor=None, recency_s=recency_s),
    )
    return store


def test_replay_keys_carry_the_targets_last_answer_and_learn_it_across_series() -> None:
    ds, stream = _two_series([0.0, 2 * HOUR, 4 * HOUR, 6 * HOUR])
    keys = _replay(ds, stream, recency_s=86400.0).keys
    assert set(keys) == {
        "cpu|investigate|quiet|p>=0.9",
        "cpu|investigate|overridden|p>=0.9",
        "cpu|investigate|liked|p>=0.9",
    }
    assert keys["cpu|investigate|liked|p>=0.9"].m == 0.0  # truthful engineers: liked stays liked
    assert keys["cpu|investigate|overridden|p>=0.9"].m > 0.4  # a noisy series stays noisy
    per_target = _replay(ds, stream, recency_s=None).keys
    assert set(per_target) == {"cpu|investigate|noisy|p>=0.9", "cpu|investigate|faulty|p>=0.9"}


def test_a_prediction_at_the_very_end_of_its_window_gets_its_outcome_after_its_decision() -> None:
    ds, stream = _two_series([0.0, 2 * HOUR])  # the window of "faulty" ends exactly at its last prediction
    assert stream.outcome_at[-1] == stream.times[-1]
    store = _replay(ds, stream, recency_s=86400.0)
    outcomes = [detail for kind, _, detail, _ in store.audit_log if kind == "outcome"]
    assert len(outcomes) == len(stream)


def test_static_rule_surfaces_by_confidence_alone_and_scores_the_same_answers() -> None:
    times = np.arange(6) * HOUR
    window = np.array([0, -1, 0, -1, -1, 0])
    stream = Stream(
        times,
        np.zeros(6, dtype=np.int64),
        np.array([0.55, 0.65, 0.75, 0.85, 0.95, 0.5]),
        np.ones(6),
        window,
        times + HOUR,
    )
    answers = draw_answers(
        stream.real_fault, stream.series_index, 1, EngineerConfig(noise=0, skip_rate=0), np.random.default_rng(0)
    )
    codes = FeedbackCodes()
    trace = static_trace(stream, answers, 0.7, codes)
    assert trace.surfaced.tolist() == [False, False, True, True, True, False]
    assert trace.y[trace.surfaced].tolist() == [0.0, 1.0, 1.0]  # like inside the window, override outside
    assert all(math.isnan(v) for v in trace.y[~trace.surfaced])
    assert static_trace(stream, answers, 0.0, codes).surfaced.all()


def test_replay_keys_of_a_multivariate_series_name_the_dimension_that_fired() -> None:
    """Two machines whose predictions name dims 1 and 3: m(k) learns per dimension, pooled across machines."""
    n, times = 200, np.arange(4) * 2 * HOUR
    grid = np.arange(n) * 300.0
    series = tuple(Series(f"machine-{i}", "server", f"machine-{i}", grid, np.zeros((n, 3))) for i in (1, 2))
    ds = Dataset("t", series, (FaultWindow("machine-1", 0.0, float(times[-1]), 0.0),), horizon_s=HOUR)

    def preds(name: str, dims: list[int]) -> SeriesPredictions:
        conf = np.full(times.size, 0.95)
        return SeriesPredictions(name, np.arange(times.size), times, np.ones(times.size), conf, np.asarray(dims))

    stream = build_stream(ds, [preds("machine-1", [0, 0, 2, 2]), preds("machine-2", [2, 2, 2, 2])])
    keys = set(_replay(ds, stream, recency_s=None).keys)
    assert keys == {
        "server/dim1|investigate|machine-1|p>=0.9",
        "server/dim3|investigate|machine-1|p>=0.9",
        "server/dim3|investigate|machine-2|p>=0.9",
    }
