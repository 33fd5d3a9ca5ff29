"""The answer rates of ``/npo status``, App Home and ``npo_answer_rate`` count each person's current answer once:
a changed answer and a skip taken over by a late click are not counted again (as the weekly summary counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from storage_testing import RELAXED_POLICY_TEXT, make_prediction, surface

from bot.metrics import Metrics
from bot.service import NpoService
from npo.loop import SYSTEM_OPERATOR, LoopConfig, record_feedback
from npo.policy import parse_policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore
from storage.jobs import answer_counts


def test_changed_answers_and_replaced_skips_count_once(tmp_path: Path) -> None:
    policy = parse_policy(RELAXED_POLICY_TEXT)
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(), disruptive_actions=()) as store:
        surface(store, [make_prediction(1), make_prediction(2), make_prediction(3)], policy)
        events = [
            FeedbackEvent("p1", "alice", FeedbackKind.LIKE, 10.0, "a1"),
            FeedbackEvent("p1", "alice", FeedbackKind.OVERRIDE, 11.0, "a2"),  # alice changes her mind
            FeedbackEvent("p2", SYSTEM_OPERATOR, FeedbackKind.SKIPPED, 12.0, "skip:p2"),
            FeedbackEvent("p2", "bob", FeedbackKind.LIKE, 13.0, "b1"),  # a late click takes the skip over
            FeedbackEvent("p3", SYSTEM_OPERATOR, FeedbackKind.SKIPPED, 14.0, "skip:p3"),
        ]
        for event in events:
            with store.transaction() as tx:
                record_feedback(tx, event, config=store.config)
        service = NpoService(store, policy, rng=np.random.default_rng(0), clock=lambda: 100.0)
        rates = service.dashboard().rates
        assert rates == {"override": 1 / 3, "like": 1 / 3, "neutral": 0.0, "skipped": 1 / 3}
        with store.read() as conn:
            weekly = answer_counts(conn, 0.0, 1e9)
        assert {k: weekly.get(k, 0) / sum(weekly.values()) for k in rates} == rates  # the weekly summary agrees
        counts = store.counts()
        assert counts["feedback_like"] == 2 and counts["feedback_effective_like"] == 1  # rows vs current answers
        metrics = Metrics().render(service.dashboard())
        assert 'npo_answer_rate{kind="skipped"} 0.333333' in metrics
