"""The replay's retraining (``--retrain``): production's Approve rule on an approved proposal, and the option."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.evaluate.cli import add_evaluate_parser, run_evaluate
from bot.retraining import TRAINING_ROWS
from bot.retraining import fit_candidate as production_fit
from npo.bandit import BanditConfig, ThresholdBandit
from npo.evaluate.data import Dataset, FaultWindow, Series
from npo.evaluate.engineers import EngineerConfig, draw_answers
from npo.evaluate.predictor import SeriesPredictions
from npo.evaluate.replay import (
    TRAINING_ROWS as REPLAY_TRAINING_ROWS,
)
from npo.evaluate.replay import (
    ReplaySettings,
    ReplayTrace,
    Stream,
    build_stream,
    replay,
    training_rows,
)
from npo.evaluate.replay import (
    _retrain as replay_retrain,
)
from npo.loop import InMemoryStore, LoopConfig, LoopStore
from npo.policy import DEFAULT_POLICY
from npo.retrain import retrain_on_answers
from npo.scoring import KeySpec
from npo.types import InvalidRecord
from storage import SQLiteStore

HOUR = 3600.0
LEARN = 30  # predictions before the first check with enough answers (the monitor needs 30): one approved proposal
LATER = 10  # predictions after it, on targets never seen before


def _stream(flip_last: int = 0) -> tuple[Dataset, Stream]:
    """One prediction an hour on a new target each time, alternating the ``noisy`` family (a false alarm) and the
    ``faulty`` one (inside a labelled window): every key is new, so m(k) cannot learn what the family tells.

    The first ``LEARN`` predictions come at hours 0…29 (the check at hour 30 reads their 30 answers, L_align 0.5 —
    a proposal, approved since the truthful L_align is 0.5 too); ``LATER`` more from hour 32, after it. The last
    ``flip_last`` of the first ``LEARN`` swap their truth (noisy ones inside a window, faulty ones outside)."""
    hours = [float(h) for h in range(LEARN)] + [float(LEARN + 2 + h) for h in range(LATER)]
    grid = np.arange(0.0, (LEARN + LATER + 10) * HOUR, HOUR)
    series, windows, predictions = [], [], []
    for j, h in enumerate(hours):
        family = "noisy" if j % 2 == 0 else "faulty"
        name = f"{family}-{j}"
        series.append(Series(name, family, name, grid, np.zeros(grid.size)))
        inside = family == "faulty"
        if LEARN - flip_last <= j < LEARN:
            inside = not inside
        if inside:
            windows.append(FaultWindow(name, h * HOUR, h * HOUR + HOUR / 2, h * HOUR))
        predictions.append(
            SeriesPredictions(name, np.array([int(h)]), np.array([h * HOUR]), np.ones(1), np.full(1, 0.95))
        )
    dataset = Dataset("families", tuple(series), tuple(windows), horizon_s=HOUR)
    return dataset, build_stream(dataset, predictions)


CONFIG = LoopConfig(bandit=BanditConfig(thresholds=(0.5,)))


def _replay(dataset: Dataset, stream: Stream, *, retrain: bool, store: LoopStore | None = None) -> ReplayTrace:
    answers = draw_answers(
        stream.real_fault,
        stream.series_index,
        len(dataset.series),
        EngineerConfig(noise=0, skip_rate=0),
        np.random.default_rng(0),
    )
    return replay(
        dataset,
        stream,
        answers,
        store=store or InMemoryStore(CONFIG),
        config=CONFIG,
        policy=DEFAULT_POLICY,
        rng=np.random.default_rng(1),
        settings=ReplaySettings(recency_s=None, retrain=retrain),
    )


def _later(stream: Stream) -> np.ndarray:
    return np.asarray(stream.times > LEARN * HOUR)


def test_a_model_that_clearly_helps_is_promoted_and_holds_back_new_keys_like_the_overridden_ones() -> None:
    dataset, stream = _stream()
    off = _replay(dataset, stream, retrain=False)
    on = _replay(dataset, stream, retrain=True)
    # With retraining the monitor runs as production's job does: after the proposal it waits for 30 new answers, so
    # it does not propose again; the replay's own monitor proposes again after the cooldown on the same answers.
    assert on.monitor_triggers == on.approved == 1 and off.monitor_triggers == 2
    assert off.retrainings == () and off.promotions == 0
    (result,) = on.retrainings
    assert result.promoted, result.reason
    assert result.candidate.n_train == 24 and result.candidate.metrics["n_holdout"] == 6  # 30 answers, 20 % held back
    assert result.base_rate_loss is not None and result.candidate_loss < result.base_rate_loss
    later = _later(stream)
    # Before the proposal both replays decide alike: every key is new, m = 0, R = 0.95 ≥ τ.
    assert np.array_equal(off.surfaced[~later], on.surfaced[~later]) and off.surfaced[~later].all()
    # After it, without a model every new key is surfaced; with the promoted model a new key of the overridden
    # family starts near the model's P(override) and is held back, one of the liked family is still surfaced.
    assert off.surfaced[later].all()
    assert np.array_equal(on.surfaced[later], stream.real_fault[later])


def test_a_model_that_does_not_beat_the_base_rate_is_not_promoted_and_changes_nothing() -> None:
    """The last six answers before the proposal (the held-back ones) contradict what the older ones teach: the
    candidate scores worse than the base rate on them, so it must not be promoted, and the replay must decide
    exactly as without retraining."""
    dataset, stream = _stream(flip_last=6)
    off = _replay(dataset, stream, retrain=False)
    on = _replay(dataset, stream, retrain=True)
    (result,) = on.retrainings
    assert not result.promoted and "is not below the base rate" in result.reason
    assert on.promotions == 0
    assert np.array_equal(on.surfaced, off.surfaced) and np.array_equal(on.y, off.y, equal_nan=True)


def test_the_replay_fits_exactly_what_production_would_fit_on_the_same_store(tmp_path: Path) -> None:
    """Against the SQLite store: the version the replay promoted is the store's current model, and at the end of the
    stream the replay's rows and fit equal production's Approve (``bot.retraining.fit_candidate``) on that store."""
    dataset, stream = _stream()
    with SQLiteStore(tmp_path / "replay.db", CONFIG) as store:
        trace = _replay(dataset, stream, retrain=True, store=store)
        memory = _replay(dataset, stream, retrain=True)
        assert np.array_equal(trace.surfaced, memory.surfaced)  # the store does not change the figures
        promoted = trace.retrainings[0].candidate
        current = store.model()
        assert current is not None and current.version == promoted.version and current.weights == promoted.weights
        now = float(stream.times[-1]) + 2 * HOUR
        answered = [
            f"p{i}" for i in sorted(np.flatnonzero(trace.surfaced).tolist(), key=lambda i: (stream.times[i], i))
        ]
        with store.transaction() as tx:
            rows = training_rows(tx, answered, TRAINING_ROWS)
        assert len(rows) == int(trace.surfaced.sum())
        ours = retrain_on_answers(rows, current, key_spec=CONFIG.key_spec, now=now, version=current.version + 1)
        theirs = production_fit(store, now=now)
    assert theirs.candidate.version == ours.candidate.version
    assert theirs.candidate.weights == ours.candidate.weights and theirs.candidate.bias == ours.candidate.bias
    assert (theirs.promoted, theirs.reason) == (ours.promoted, ours.reason)


def test_training_rows_take_the_latest_answers_oldest_first() -> None:
    dataset, stream = _stream()
    store = InMemoryStore(CONFIG)
    trace = _replay(dataset, stream, retrain=False, store=store)
    answered = [f"p{i}" for i in np.flatnonzero(trace.surfaced).tolist()]
    with store.transaction() as tx:
        everything = training_rows(tx, answered, TRAINING_ROWS)
        last = training_rows(tx, answered, 5)
    assert [p.id for p, _, _ in everything] == answered
    assert [p.id for p, _, _ in last] == answered[-5:]
    assert all(y in (0.0, 1.0) and 0.0 < w <= 1.0 for _, y, w in everything)


def test_a_candidate_no_better_than_the_current_model_is_not_promoted() -> None:
    dataset, stream = _stream()
    store = InMemoryStore(CONFIG)
    trace = _replay(dataset, stream, retrain=False, store=store)
    answered = [f"p{i}" for i in np.flatnonzero(trace.surfaced).tolist()][:LEARN]
    with store.transaction() as tx:
        rows = training_rows(tx, answered, TRAINING_ROWS)
    first = retrain_on_answers(rows, None, key_spec=KeySpec(), now=0.0, version=1)
    again = retrain_on_answers(rows, first.candidate, key_spec=KeySpec(), now=0.0, version=2)
    assert first.promoted and not again.promoted and "is not below v1" in again.reason


def test_the_settings_refuse_retraining_without_a_monitor_and_nonsense_row_limits() -> None:
    assert REPLAY_TRAINING_ROWS == TRAINING_ROWS  # the replay reads as many answers as production's Approve
    assert ReplaySettings().retrain is False
    with pytest.raises(InvalidRecord, match="retrain"):
        ReplaySettings(monitor=None, retrain=True)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidRecord, match="training_rows"):
            ReplaySettings(training_rows=bad)  # type: ignore[arg-type]


# -- the command --------------------------------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    return run_evaluate(parser.parse_args(argv))


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


NEW_KEYS = ("proposals_approved", "models_promoted")


def test_retrain_flag_reaches_the_settings_and_keeps_the_json_shape(
    nab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default = _json(capsys, "--data", str(nab_dir), "--seeds", "1")
    retrained = _json(capsys, "--data", str(nab_dir), "--seeds", "1", "--retrain", "--model-prior-strength", "2")
    assert default["settings"]["retrain"] is False and default["settings"]["model_prior_strength"] == 5.0  # type: ignore[index]
    assert retrained["settings"]["retrain"] is True and retrained["settings"]["model_prior_strength"] == 2.0  # type: ignore[index]
    assert sorted(default) == sorted(retrained)
    for out in (default, retrained):
        ms = [out["npo"], out["surface_all"], *out["fixed"].values(), *out["fixed_loop"].values()]  # type: ignore[attr-defined]
        for m in ms:
            assert all(key in m and key in m["per_seed"] and key in m["ci95"] for key in NEW_KEYS)
        assert sorted(ms[0]) == sorted(ms[1])  # every condition has the same figures
    assert default["npo"]["models_promoted"] == 0  # type: ignore[index]
    assert default["surface_all"]["proposals_approved"] == retrained["surface_all"]["models_promoted"] == 0  # type: ignore[index]


def test_retrain_flag_errors(nab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--model-prior-strength", "3"], ["--no-retrain", "--model-prior-strength", "0"]):
        assert main(["evaluate", "--data", str(nab_dir), *argv]) == 2
        assert "--model-prior-strength needs --retrain" in capsys.readouterr().err
    for bad in ("-1", "101", "nan", "many"):
        with pytest.raises(SystemExit):
            main(["evaluate", "--retrain", "--model-prior-strength", bad])
        assert "expected a number in [0, 100]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--retrain=yes"])
    assert "ignored explicit argument" in capsys.readouterr().err


def test_the_table_says_when_the_replay_retrains(nab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--quiet", "--retrain"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "retraining on approval: 0 proposals approved and 0 models promoted per seed" in header
    assert main(["evaluate", "--data", str(nab_dir), "--seeds", "1", "--quiet"]) == 0
    assert "retraining" not in capsys.readouterr().out


def test_an_approved_proposal_puts_the_threshold_bandit_back_to_its_prior_as_approve_does(tmp_path: Path) -> None:
    """Approve in production resets the bandit whether or not the model is promoted (``bot.retraining.resolve``):
    the replay's approval does the same, on the SQLite store, keeping how often each arm was drawn."""
    config = LoopConfig(bandit=BanditConfig(prior_events=2.0))
    prior = ThresholdBandit(config.bandit)
    with SQLiteStore(tmp_path / "replay.db", config) as store:
        with store.transaction() as tx:
            tx.put_bandit(tx.get_bandit().update(0, 1.0).update(4, 0.0).update(4, 0.25))
        with store.transaction() as tx:
            result = replay_retrain(tx, [], None, set(), config, ReplaySettings(retrain=True), 1e9, 1)
        assert not result.promoted  # nothing to fit on: the reset does not depend on a promotion
        with store.transaction() as tx:
            bandit = tx.get_bandit()
    assert (bandit.alpha, bandit.beta, bandit.pulls) == (prior.alpha, prior.beta, (1, 0, 0, 0, 2))
