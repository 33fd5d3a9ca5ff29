"""``SQLiteStore.counts`` tallies the append-only logs incrementally; it must always equal a full count, whichever
store (connection, process) wrote the rows and however often it was called in between."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from storage_testing import RELAXED_POLICY_TEXT, make_prediction

from npo.loop import SYSTEM_OPERATOR, LoopConfig, record_feedback
from npo.policy import parse_policy
from npo.types import FeedbackEvent, FeedbackKind
from storage import SQLiteStore

FULL = {
    "predictions": "SELECT COUNT(*) FROM decisions",
    "audit_log": "SELECT COUNT(*) FROM audit_log",
    "feedback_effective": "SELECT COUNT(*) FROM effective_answers",
}


def _full_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(str(path))
    try:
        out = {name: int(conn.execute(sql).fetchone()[0]) for name, sql in FULL.items()}
        out |= {f"decisions_{v}": int(n) for v, n in conn.execute("SELECT verdict, COUNT(*) FROM decisions GROUP BY 1")}
        out |= {f"feedback_{k}": int(n) for k, n in conn.execute("SELECT kind, COUNT(*) FROM feedback GROUP BY 1")}
        effective = (
            "SELECT f.kind, COUNT(*) FROM effective_answers e JOIN feedback f ON f.id = e.feedback_id GROUP BY 1"
        )
        out |= {f"feedback_effective_{k.value}": 0 for k in FeedbackKind}
        out |= {f"feedback_effective_{k}": int(n) for k, n in conn.execute(effective)}
        return out
    finally:
        conn.close()


def test_counts_match_full_counts_across_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    policy = parse_policy(RELAXED_POLICY_TEXT)
    kinds = (FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL)
    with SQLiteStore(path, LoopConfig()) as reader, SQLiteStore(path, LoopConfig()) as writer:
        assert reader.counts()["predictions"] == 0 and reader.counts()["audit_log"] == 0
        for round_ in range(4):
            batch = [make_prediction(100 * round_ + i, confidence=0.99 if i % 4 else 0.1) for i in range(25)]
            writer.decide_many(batch, policy=policy, rng=np.random.default_rng(round_), now=float(round_))
            with writer.transaction() as tx:
                surfaced = [p for p in batch if (d := tx.get_decision(p.id)) is not None and d.surfaced]
                assert len(surfaced) >= 6
                for i, p in enumerate(surfaced[:5]):
                    event = FeedbackEvent(p.id, f"op{i % 3}", kinds[i % 3], float(round_), f"r{round_}-{i}")
                    record_feedback(tx, event, config=writer.config)
                # a changed answer (replaces the first), a skip, and a click taking that skip over
                changed = FeedbackEvent(surfaced[0].id, "op0", FeedbackKind.NEUTRAL, round_ + 0.5, f"c{round_}")
                record_feedback(tx, changed, config=writer.config)
                skip = FeedbackEvent(surfaced[5].id, SYSTEM_OPERATOR, FeedbackKind.SKIPPED, float(round_), f"s{round_}")
                record_feedback(tx, skip, config=writer.config)
                if round_ % 2:
                    late = FeedbackEvent(surfaced[5].id, "op1", FeedbackKind.LIKE, round_ + 0.5, f"l{round_}")
                    assert record_feedback(tx, late, config=writer.config).status == "replaced"
                tx.audit("config_change", "policy", {"round": round_}, float(round_))
            counts = reader.counts()
            expected = _full_counts(path)
            assert {k: counts.get(k, 0) for k in expected} == expected
            assert counts["predictions"] == 25 * (round_ + 1)
        # The writer's own tally, first computed only now, agrees too.
        assert {k: writer.counts().get(k, 0) for k in expected} == _full_counts(path)
