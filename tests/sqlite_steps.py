"""How much work SQLite does, counted in virtual-machine instructions: a measure that does not depend on the
machine's speed, so a test can assert that a read stays small without timing it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def vm_steps(conn: sqlite3.Connection, work: Callable[[], object]) -> int:
    """How many SQLite virtual-machine instructions ``conn`` runs while ``work()`` runs (on this thread)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 0)
    return steps
