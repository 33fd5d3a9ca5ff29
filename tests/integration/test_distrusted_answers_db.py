"""Answers of weight 0 on a real SQLite file: they move no key off a promoted model's prior, and the database
still passes every ``npo-bot db check`` invariant (a key's update count need not cover answers that updated
nothing)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sqlite_utils import Database
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from npo.loop import LoopConfig, decide, record_feedback
from npo.policy import parse_policy
from npo.retrain import LogisticModel
from npo.scoring import N_FEATURES
from npo.trust import OperatorTrust
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
from storage.maintenance import check

NOW = 1_750_000_000.0


def test_answers_of_weight_zero_leave_a_database_that_checks_clean(tmp_path: Path) -> None:
    path, cfg = tmp_path / "npo.db", LoopConfig()
    policy, rng = parse_policy(RELAXED_POLICY_TEXT), np.random.default_rng(0)
    model = LogisticModel(1, (0.0,) * N_FEATURES, math.log(0.3 / 0.7), 0.0, 30)  # P(override) = 0.3 for anything
    with SQLiteStore(path, cfg) as store:
        with store.transaction() as tx:
            tx.save_model(model, promoted=True, recorded_at=NOW)
            tx.put_trust(OperatorTrust("mallory", agree=1.0, disagree=9.0))  # weight 0
        misalignment, liked, i = [], 0, 0
        while liked < 5:
            prediction = make_prediction(i, fault_type="disk_failure")
            with store.transaction() as tx:
                decision = decide(tx, prediction, config=cfg, policy=policy, rng=rng, now=NOW + i).decision
            misalignment.append(decision.misalignment)
            i += 1
            if not decision.surfaced:  # a τ above R drawn: nobody sees it
                continue
            with store.transaction() as tx:
                event = FeedbackEvent(prediction.id, "mallory", FeedbackKind.LIKE, NOW + i, f"r{i}")
                assert record_feedback(tx, event, config=cfg).status == "recorded"
            liked += 1
        assert misalignment == pytest.approx([0.3] * i)  # the distrusted likes moved nothing
        with store.read() as conn:
            assert conn.execute("SELECT COUNT(*), MAX(weight) FROM feedback").fetchone() == (5, 0.0)
    db = Database(path)
    try:
        assert check(db)[1] == []
    finally:
        db.close()
