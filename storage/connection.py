"""Opening a SQLite database the way NPO needs it: WAL, a busy timeout, foreign keys, a durability level.

One connection serves one unit of work on one thread (a ``sqlite3`` connection, and so a sqlite-utils
``Database``, must not be shared between threads). :class:`storage.SQLiteStore` keeps one per thread.

Durability (``synchronous``):

* ``"NORMAL"`` (default): in WAL mode every commit survives a crash of the *process* (SIGKILL, OOM); a power
  loss or kernel crash may roll back the last few commits, but never corrupts the file.
* ``"FULL"``: the WAL is fsynced at every commit, so commits also survive power loss, at roughly 2–4 × the cost
  per commit (see ``storage/README.md`` for the figures measured on this machine).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from sqlite_utils import Database

from storage.errors import StorageBusy, StorageError

Synchronous = Literal["NORMAL", "FULL"]
DEFAULT_BUSY_TIMEOUT_S = 5.0


def connect(
    path: str | Path,
    *,
    synchronous: Synchronous = "NORMAL",
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    check_same_thread: bool = True,
) -> Database:
    """Open (creating if needed) the database file at ``path`` with NPO's settings and return it.

    Sets ``journal_mode=WAL``, ``busy_timeout`` (``busy_timeout_s`` seconds, > 0), ``foreign_keys=ON`` and
    ``synchronous`` (``"NORMAL"`` or ``"FULL"``). The underlying ``sqlite3`` connection has driver-level
    autocommit (``isolation_level=None``): transactions are opened explicitly (``BEGIN IMMEDIATE`` for writes).
    Does not create or migrate the schema (see :func:`storage.migrate`). Raises :class:`StorageBusy` when the
    switch to WAL waited out the busy timeout for another process's lock. ``check_same_thread=False`` only
    allows *closing* the connection from another thread; using it from two threads is still a bug.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise StorageError("connection", str(path), f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
    if not busy_timeout_s > 0:
        raise StorageError("connection", str(path), f"busy_timeout_s must be > 0, got {busy_timeout_s}")
    if Path(path).is_dir():  # sqlite3 would only say "unable to open database file"
        raise StorageError("connection", str(path), "is a folder, not a database file")
    folder = Path(path).parent
    if str(path) != ":memory:" and not folder.is_dir():
        raise StorageError("connection", str(path), f"cannot open the database: the folder {folder} does not exist")
    try:
        conn = sqlite3.connect(
            str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=check_same_thread
        )
    except sqlite3.Error as exc:
        raise StorageError("connection", str(path), f"cannot open the database: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and str(path) != ":memory:":
            raise StorageError("connection", str(path), f"could not switch to WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:  # not a database file, a read-only place, a file the process may not open
        conn.close()
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():  # switching a file to WAL needs it alone
            raise StorageBusy(
                "connection",
                str(path),
                f"cannot open the database: it stayed locked by another process for {busy_timeout_s:g} s (a file "
                "not yet in WAL mode is switched to it only when no other process is reading or writing it); try "
                "again once that process is done",
            ) from exc
        raise StorageError("connection", str(path), f"cannot open the database: {exc}{_hint(exc)}") from exc
    except BaseException:
        conn.close()
        raise
    return Database(conn, execute_plugins=False)


def connect_readonly(
    path: str | Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, check_same_thread: bool = True
) -> Database:
    """Open the existing database at ``path`` for reading only (``db backup``, ``db check``, ``db export``, ``report``).

    Nothing is written and the journal mode is left as it is: a backup (one file, rollback journal) stays one
    file, and a file on read-only media can be read. Beside a running bot (WAL) it reads consistent snapshots and
    never blocks the bot's writes. A write through it raises ``sqlite3.OperationalError`` ("readonly"). Raises
    :class:`StorageError` when the file is missing or is not an SQLite database.
    """
    file = Path(path)
    if file.is_dir():
        raise StorageError("connection", str(path), "is a folder, not a database file")
    if not file.is_file():
        raise StorageError("connection", str(path), "cannot open the database: no such file")
    try:
        conn = sqlite3.connect(
            f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s, check_same_thread=check_same_thread
        )
    except sqlite3.Error as exc:
        raise StorageError("connection", str(path), f"cannot open the database: {exc}{_hint(exc)}") from exc
    conn.isolation_level = None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # reads the header: "not a database" here
    except sqlite3.Error as exc:
        conn.close()
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            raise
        raise StorageError("connection", str(path), f"cannot open the database: {exc}{_hint(exc)}") from exc
    return Database(conn, execute_plugins=False)


def described(exc: sqlite3.Error) -> str:
    """An SQLite error as a command prints it: the error and what it usually means, when that is known."""
    return f"{exc}{_hint(exc)}"


def _hint(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return " (another process is writing to it or holds it open in a transaction; try again once it is done)"
    if "not a database" in text:
        return " (is it an SQLite file?)"
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        return " (the process must be able to write the file and its folder: SQLite keeps -wal and -shm files there)"
    return ""
