"""Storage: the loop's state in SQLite. The only package that knows SQL.

Public API: :func:`connect`, :func:`connect_readonly`, :func:`migrate`, :func:`schema_version`,
:class:`SQLiteStore` (implements :class:`npo.loop.LoopStore`), :class:`SQLiteTransaction`, :class:`OutboxItem`,
:class:`StorageError`, :class:`StorageBusy`, :class:`LeaseLost`, :func:`is_locked`, :func:`check`, :func:`backup`,
:func:`export_rows`. See ``storage/README.md``.
"""

from storage.connection import Synchronous, connect, connect_readonly
from storage.errors import LeaseLost, StorageBusy, StorageError, is_locked
from storage.maintenance import Problem, backup, check, export_rows
from storage.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS, migrate, schema_version
from storage.store import OutboxItem, SQLiteStore, SQLiteTransaction

__all__ = [
    "LATEST_SCHEMA_VERSION",
    "MIGRATIONS",
    "LeaseLost",
    "OutboxItem",
    "Problem",
    "SQLiteStore",
    "SQLiteTransaction",
    "StorageBusy",
    "StorageError",
    "Synchronous",
    "backup",
    "check",
    "connect",
    "connect_readonly",
    "export_rows",
    "is_locked",
    "migrate",
    "schema_version",
]
