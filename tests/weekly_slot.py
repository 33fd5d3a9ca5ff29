"""Run a write across the weekly summary's slot: the write waits for the write lock (another connection's long
write) while the slot comes and that slot's summary runs, so a test can check the write lands in exactly one
summary."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from slack_sdk import WebClient

from bot.jobs.weekly import run_weekly_summary
from storage import SQLiteStore


def write_across_the_slot(
    db_path: Path, store: SQLiteStore, client: WebClient, channel: str, write: Callable[[], object]
) -> datetime:
    """Run ``write`` (a click, an outcome, a sweep) while another connection holds the write lock, with the weekly
    summary's slot coming while it waits; the summary of that slot (to ``channel``, UTC) runs then. Returns the
    slot."""
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    writing = threading.Thread(target=write)
    writing.start()
    try:
        time.sleep(0.5)  # the write is in, waiting for the write lock
        slot = datetime.now(UTC)
        weekly = threading.Thread(target=run_weekly_summary, args=(store, client, channel, "UTC", slot))
        weekly.start()
        time.sleep(0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    weekly.join(30)
    writing.join(30)
    return slot
