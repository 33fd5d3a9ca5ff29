"""Helpers for the demo tests: a prediction sure to surface, rows read over a separate connection, and
``npo-bot demo`` run as a command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

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


def demo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``npo-bot demo ARGS`` in a child process (from the repository root), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "demo", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
