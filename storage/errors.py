"""Errors raised by the storage layer."""

from __future__ import annotations


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
