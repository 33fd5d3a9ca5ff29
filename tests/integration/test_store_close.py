"""``SQLiteStore.close`` while another thread is still writing: a forced stop (a second Ctrl-C) cancels the request
that started a large batch, but not the thread writing it, and the bot then closes the store. Closing a connection
under a statement another thread runs on it is undefined in SQLite's Python binding: a forced stop of ``npo-bot
serve`` in the middle of a 9,000-prediction batch crashed with a segmentation fault in one run of two. ``close``
now waits for the write to commit or roll back first (up to ``wait_s``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from storage import SQLiteStore
from storage.errors import StorageError

# Waits on the other thread only bound how long a failing test waits.
WAIT_S = 30.0


def _audit_kinds(path: Path) -> list[str]:
    with SQLiteStore(path) as store, store.read() as conn:
        return [row[0] for row in conn.execute("SELECT kind FROM audit_events WHERE kind LIKE 'test_%' ORDER BY id")]


def _slow_write(store: SQLiteStore, started: threading.Event, hold_s: float, errors: list[BaseException]) -> None:
    """One write transaction that writes, holds the lock ``hold_s`` (a statement of a large batch), writes again."""
    try:
        with store.transaction() as tx:
            tx.audit("test_first", "s", {}, time.time())
            started.set()
            time.sleep(hold_s)
            tx.audit("test_second", "s", {}, time.time())
    except BaseException as exc:
        errors.append(exc)
        started.set()


def test_close_waits_for_a_write_running_on_another_thread(tmp_path: Path) -> None:
    """Before, ``close`` closed the writing thread's connection under it: the write failed half way ("Cannot
    operate on a closed database", or a crash when a statement was running) and nothing of it was kept."""
    path = tmp_path / "npo.db"
    store = SQLiteStore(path)
    started, errors = threading.Event(), []
    writer = threading.Thread(target=_slow_write, args=(store, started, 0.5, errors))
    writer.start()
    assert started.wait(WAIT_S)
    closed = store.close()
    writer.join(WAIT_S)
    assert errors == []
    assert _audit_kinds(path) == ["test_first", "test_second"]
    assert closed is True
    with pytest.raises(StorageError, match="the store is closed"):
        store.transaction().__enter__()


def test_a_write_that_outlasts_the_wait_keeps_its_connection_and_commits(tmp_path: Path) -> None:
    """``close`` gives up after ``wait_s`` (False) and leaves the connections for the process's exit: the write
    still running finishes and commits."""
    path = tmp_path / "npo.db"
    store = SQLiteStore(path)
    started, errors = threading.Event(), []
    writer = threading.Thread(target=_slow_write, args=(store, started, 1.0, errors))
    writer.start()
    assert started.wait(WAIT_S)
    assert store.close(wait_s=0.05) is False
    writer.join(WAIT_S)
    assert errors == []
    assert _audit_kinds(path) == ["test_first", "test_second"]
