"""Errors raised by the storage layer."""

from __future__ import annotations

import sqlite3


class StorageError(ValueError):
    """A write was refused (constraint, unknown record) or the database could not be used.

    ``table`` and ``record`` name what was being written (``record`` is its id, request id or key). The
    transaction the write belonged to has been rolled back, so the database is unchanged.
    """

    def __init__(self, table: str, record: str, message: str) -> None:
        super().__init__(f"{table} {record!r}: {message}")
        self.table = table
        self.record = record
        self.message = message


class StorageBusy(StorageError):
    """Another connection held the write lock for longer than the busy timeout, on every retry."""


class LeaseLost(StorageError):
    """A delivery worker's lease on an outbox message expired and another worker claimed it: the late worker's
    result is not recorded (the other worker's is)."""


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing because another connection holds its write lock — an expected,
    passing condition (another process's write, an operator's shell), worth trying again — rather than a failure
    that would come back (a refused record, a full disk, a damaged file): :class:`StorageBusy` (the store's retries
    spent), or SQLite's own "database is locked" / busy."""
    if isinstance(exc, StorageBusy):
        return True
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
