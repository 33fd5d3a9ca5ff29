"""Helpers shared by the storage tests (kept out of conftest.py so tests can import them by a unique name)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npo.loop import decide
from npo.policy import DEFAULT_POLICY_TEXT, Policy
from npo.types import Prediction
from storage import SQLiteStore

# The default policy with the rules that depend on the world (blast radius, cooldown, hourly cap) relaxed, so a
# high-confidence prediction is always surfaced.
RELAXED_POLICY_TEXT = (
    DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000")
    .replace("seconds = 3600", "seconds = 0")
    .replace(
        'disruptive_actions = ["drain", "reboot", "reimage", "power_cycle", "failover"]', "disruptive_actions = []"
    )
)


def make_prediction(i: int, *, confidence: float = 0.99, fault_type: str | None = None, **kw: object) -> Prediction:
    fields: dict[str, object] = {
        "id": f"p{i}",
        "fault_type": fault_type or ("disk_failure", "memory_ecc", "psu", "nic_flap")[i % 4],
        "target": f"r{i % 7}-n{i}",
        "action": "investigate",
        "confidence": confidence,
        "received_at": float(i),
    }
    fields.update(kw)
    return Prediction(**fields)  # type: ignore[arg-type]


def surface(store: SQLiteStore, predictions: list[Prediction], policy: Policy, seed: int = 0) -> None:
    """Decide the predictions; assert every one was surfaced."""
    rng = np.random.default_rng(seed)
    with store.transaction() as tx:
        for p in predictions:
            result = decide(tx, p, config=store.config, policy=policy, rng=rng, now=p.received_at)
            assert result.decision.verdict.value == "surface", result.decision


def dump(path: Path) -> list[str]:
    """The whole database as SQL text (schema and rows), for before/after comparisons."""
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def copy_rows(conn: sqlite3.Connection, source: Path, tables: Sequence[str]) -> None:
    """Copy every row of ``tables`` from the database file ``source`` into ``conn``'s (an older schema version with
    the same columns), in row-id order, foreign keys off (``learning_state`` is emptied first: migrations seed it)."""
    conn.execute(f"ATTACH DATABASE '{source}' AS src")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN")
    for table in tables:
        if table == "learning_state":
            conn.execute("DELETE FROM learning_state")
        columns = ", ".join(f'"{r[1]}"' for r in conn.execute(f'PRAGMA table_info("{table}")'))
        conn.execute(f'INSERT INTO main."{table}" ({columns}) SELECT {columns} FROM src."{table}" ORDER BY rowid')
    conn.execute("COMMIT")
    conn.execute("DETACH DATABASE src")
