"""Helpers for the demo tests: a prediction sure to surface, and rows read over a separate connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

SURE_PREDICTION = {
    "id": "demo-test-1",
    "fault_type": "disk_failure",
    "target": "r12-n04",
    "action": "drain",
    "confidence": 0.99,
    "severity": "critical",
    "time_to_fault_s": 21600,
    "real_fault": True,
}


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read over a separate connection (what another process would see)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
