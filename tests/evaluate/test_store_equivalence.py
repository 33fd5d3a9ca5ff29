"""`npo-bot evaluate` decides every prediction alike in memory and with ``--db``: the real NAB stream, seed 0, replayed
through InMemoryStore and SQLiteStore in each loop condition gives the same decision (verdict, rule, reason, score,
τ) for every prediction, and so the same figures. Skipped without the real data (set NPO_DATA_DIR to the folder
holding nab/).

Before the in-memory store kept the Safety Policy's view of the world, seed 0 surfaced 37 predictions in memory and
34 with ``--db``: p19 (target ``rds_cpu_utilization_cc0c53``) was blocked by ``override_cooldown`` in SQLite, its
target overridden 3,000 s earlier, and surfaced in memory, which reported no override at all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bot.evaluate.formats import read_dataset
from bot.evaluate.runner import EvaluationSettings, conditions, make_stream
from npo.evaluate.engineers import draw_answers
from npo.evaluate.replay import replay
from npo.loop import InMemoryStore, LoopStore
from storage import SQLiteStore

from .conftest import real_data

SEED = 0


def _decisions(store: LoopStore, n: int) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    with store.transaction() as tx:
        for i in range(n):
            d = tx.get_decision(f"p{i}")
            assert d is not None
            out.append((d.prediction_id, d.key, d.verdict.value, d.rule, d.reason, d.score, d.threshold, d.arm))
    return out


def test_nab_seed_0_is_decided_alike_in_memory_and_in_sqlite(tmp_path: Path) -> None:
    dataset = read_dataset(real_data("nab"), "nab")
    settings = EvaluationSettings()
    stream = make_stream(dataset, settings.predictor)
    answers = draw_answers(
        stream.real_fault,
        stream.series_index,
        len(dataset.series),
        settings.engineers,
        np.random.default_rng([SEED, 1]),
    )
    blocked = 0
    for name, (kind, grid) in conditions(settings.thresholds).items():
        if kind != "loop":
            continue
        config = replace(settings.loop, bandit=replace(settings.loop.bandit, thresholds=grid))
        disruptive = settings.policy.blast_radius.disruptive_actions  # as `npo-bot evaluate` opens the stores
        memory = InMemoryStore(config, disruptive_actions=disruptive)
        runs = {}
        with SQLiteStore(tmp_path / f"{name}.db", config, disruptive_actions=disruptive) as sqlite:
            for label, store in (("memory", memory), ("sqlite", sqlite)):
                trace = replay(
                    dataset,
                    stream,
                    answers,
                    store=store,
                    config=config,
                    policy=settings.policy,
                    rng=np.random.default_rng([SEED, 2]),
                    settings=settings.replay,
                )
                runs[label] = (_decisions(store, len(stream)), trace.surfaced.tolist())
        mem, sql = runs["memory"], runs["sqlite"]
        different = [(a, b) for a, b in zip(mem[0], sql[0], strict=True) if a != b]
        assert not different, (
            f"{name}: first decision that differs:\n  in memory {different[0][0]}\n  SQLite {different[0][1]}"
        )
        assert mem[1] == sql[1], name
        blocked += sum(d[3] == "override_cooldown" for d in sql[0])
    assert blocked  # the cooldown does act on this stream
