"""Operations on a database file: online backup, integrity and invariant checks, exports."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlite_utils import Database

from storage import codec
from storage.connection import connect_readonly
from storage.errors import StorageError
from storage.migrations import (
    ANSWERED_AT,
    LATEST_SCHEMA_VERSION,
    OPEN_RECOMMENDATIONS,
    OUTCOME_AGREEMENT_ROWS,
    newer_schema_message,
    schema_version,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed check: ``what`` was checked, ``detail`` says what is wrong; ``count``: how many problems the
    entry stands for (more than 1 for the "… and N more" line that ends a long list)."""

    what: str
    detail: str
    count: int = 1


_T = TypeVar("_T")

SHOWN_PER_CHECK = 20  # problems listed one by one per check; the rest are counted in one more entry


def _listed(what: str, details: list[str]) -> list[Problem]:
    """``details`` as problems of ``what``: the first :data:`SHOWN_PER_CHECK`, then one entry counting the rest."""
    problems = [Problem(what, d) for d in details[:SHOWN_PER_CHECK]]
    rest = len(details) - SHOWN_PER_CHECK
    if rest > 0:
        problems.append(Problem(what, f"… and {rest} more like these", rest))
    return problems


# .NAME.PID.TOKEN.partial: a backup or an export being written (claim_partial), locked while it is
PARTIAL_NAME = re.compile(r"\..+\.[0-9]+\.[0-9a-f]{16}\.partial")
OLD_PARTIAL_NAME = re.compile(r"\..+\.[0-9]+\.partial")  # .NAME.PID.partial: versions that took no lock
OLD_PARTIAL_STALE_S = 3600.0  # such a file untouched this long was left by a stopped backup
_SQLITE_HEADER = b"SQLite format 3\x00"
BACKUP_MODE = 0o644  # a backup's permissions at most, before the umask: those SQLite gives a database file it creates


def backup(source: str | Path, target: str | Path, *, pages_per_step: int = -1) -> int:
    """Copy the database at ``source`` to ``target`` online (``sqlite3.Connection.backup``: writers may keep
    writing; the copy is a consistent snapshot). Refuses to overwrite an existing ``target`` (or a folder). Returns
    the size of the copy in bytes. The copy uses the rollback journal (a single self-contained file). The source is
    only read (:func:`storage.connection.connect_readonly`): its journal mode is left as it is, so backing up a
    backup leaves that file unchanged, and a file the process may only read can be backed up. Refuses the
    name of the source's ``-wal``, ``-shm`` or ``-journal`` file: SQLite would take the copy for one of the
    database's own and remove it (a ``-journal`` one even kept read-only connections from opening the database).

    By default the whole file is copied in one step, inside one read transaction of the source, which WAL lets
    writers continue past. Copying in steps of ``pages_per_step`` pages releases the snapshot between steps, and a
    commit by another connection restarts the copy: a database of more than one step that is written to more often
    than a step takes was never copied (``npo-bot db backup`` ran forever under the bot's load).

    The copy is written to a hidden file next to ``target`` (``.NAME.PID.TOKEN.partial``, a name no other backup
    uses) and linked to ``target`` only once complete: a backup stopped half way, also by SIGKILL or SIGTERM, never
    leaves a partial file under the name of a backup. The backup holds an exclusive ``flock`` on its hidden file
    for as long as it writes it, so one stopped by SIGKILL (whose lock the kernel dropped) is told from one still
    running: each backup first removes the hidden files in the target's folder that nobody holds
    (:func:`remove_stale_partials`)."""
    target = Path(target)
    if target.is_dir():
        raise StorageError("backup", str(target), "is a folder; give the name of the backup file to create in it")
    for suffix in ("-wal", "-shm", "-journal"):  # the database itself exists, so it is refused below
        # SQLite names them after the file a link leads to
        if os.path.realpath(target) in (os.path.realpath(f"{source}{suffix}"), f"{os.path.realpath(source)}{suffix}"):
            raise StorageError(
                "backup",
                str(target),
                f"is the name of the {suffix[1:]} file of the database {source}, which SQLite would take for the "
                "database's own and remove; choose another name",
            )
    if target.exists():
        raise StorageError("backup", str(target), "the target file already exists; choose a new name")
    if not target.parent.is_dir():
        raise StorageError("backup", str(target), f"the folder {target.parent} does not exist")
    remove_stale_partials(target.parent)
    src = connect_readonly(source)  # only read: a backup backed up stays one file, read-only media work
    try:
        try:
            partial, lock = claim_partial(target, mode=_backup_mode(source))
        except OSError as exc:  # a read-only folder
            raise StorageError("backup", str(target), f"cannot create the backup file: {exc}") from exc
        try:
            _copy(src.conn, source, partial, target, pages_per_step)
        finally:
            os.close(lock)  # after the hidden file is gone: it is never unlocked while it exists
    finally:
        src.close()
    return target.stat().st_size


def _backup_mode(source: str | Path) -> int:
    """A backup's permissions before the umask: :data:`BACKUP_MODE`, less any the database itself lacks — a copy of
    a database its operator made private (0600, 0640) is not readable by more people than the database."""
    try:
        return BACKUP_MODE & os.stat(source).st_mode
    except OSError:  # not a file of its own (the connection refused it already, or a URI): SQLite's default
        return BACKUP_MODE


def claim_partial(target: Path, *, mode: int = 0o666) -> tuple[Path, int]:
    """Create a new, empty hidden file (``.NAME.PID.TOKEN.partial``) to write ``target`` into, a backup's or an
    export's, and lock it: the path and the open (read-write), locked descriptor. Keep the descriptor open until the
    file has been given its name or removed: while it is locked, :func:`remove_stale_partials` leaves it alone;
    once its process is gone (SIGKILL, a power loss), the kernel has dropped the lock and the next backup or export
    into the folder removes it. The file is checked to still be at its path once locked: a backup or export starting
    at that moment may have taken it for a stopped one's (created, not yet locked) and removed it; then another name
    is taken. ``mode``: the file's permissions before the umask (a backup's: :data:`BACKUP_MODE`, as SQLite creates
    a database, less what the database's own lack; an export's: 0666, as ``open`` creates a file). Raises
    ``OSError`` when the file cannot be created (a read-only folder)."""
    while True:
        partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.partial")
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new, unique name: nobody else holds it, this does not wait
            if _same_inode(fd, partial):
                return partial, fd
        except BaseException:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise
        os.close(fd)  # removed before it was locked: try another name


def write_replacing(out: Path, write: Callable[[int], _T]) -> _T:
    """Write the file ``out`` through ``write`` (given the open descriptor of an empty file) and give it that name
    only once ``write`` returned: a failed write (a full disk, Ctrl-C) neither truncates a file already there nor
    leaves a partial one. The file is written as a hidden, locked one next to ``out`` (:func:`claim_partial`), so one
    left by a process stopped half way is removed by the next write into the folder; a file already at ``out`` keeps
    its permissions, and a symbolic link keeps pointing at the new file. Returns what ``write`` returned; raises
    ``OSError`` when the file cannot be created, written or renamed."""
    target = Path(os.path.realpath(out))
    remove_stale_partials(target.parent)
    partial, fd = claim_partial(target)
    try:
        result = write(fd)
        if target.exists():
            shutil.copymode(target, partial)  # the permissions someone gave the file stay
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # after the hidden file is renamed or gone: it is never unlocked while it exists
    return result


def _same_inode(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _copy(src: sqlite3.Connection, source: str | Path, partial: Path, target: Path, pages_per_step: int) -> None:
    """Copy ``src`` into the (locked, empty) file ``partial``, then give it the name ``target``. The hidden file is
    removed in every case, also on Ctrl-C."""
    try:
        try:
            dst = sqlite3.connect(str(partial))
        except sqlite3.Error as exc:  # a file system that cannot hold a database
            raise StorageError("backup", str(target), f"cannot create the backup file: {exc}") from exc
        try:
            src.backup(dst, pages=pages_per_step)
            dst.execute("PRAGMA journal_mode = DELETE")
            dst.close()
            _publish(partial, target)
        except (sqlite3.Error, OSError) as exc:
            if isinstance(exc, FileExistsError):
                raise StorageError("backup", str(target), "the target file already exists; choose a new name") from exc
            raise StorageError("backup", str(target), f"could not copy {source} into it: {exc}") from exc
        finally:
            dst.close()
    finally:  # no half-written copy that looks like a backup, also after Ctrl-C mid-copy
        _unlink_with_journals(partial)


def _sqlite_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` at ``path`` is an SQLite database, also one whose copy stopped half way."""
    return os.read(fd, len(_SQLITE_HEADER)) == _SQLITE_HEADER or os.path.isfile(f"{path}-journal")


def _unlink_with_journals(partial: Path) -> None:
    for suffix in ("-journal", "-wal", "-shm", ""):  # the file itself last
        Path(f"{partial}{suffix}").unlink(missing_ok=True)


def remove_stale_partials(folder: Path, *, now: float | None = None) -> list[Path]:
    """Remove the hidden files of backups and exports into ``folder`` that were stopped half way (SIGKILL, a power
    loss): those named ``.NAME.PID.TOKEN.partial`` (:func:`claim_partial`) that no process holds locked (a running
    backup or export holds its own), with their ``-journal``, ``-wal`` and ``-shm`` files. Those named
    ``.NAME.PID.partial``, by versions that took no lock, are removed once untouched for ``OLD_PARTIAL_STALE_S`` (a
    running copy keeps writing its file), and only when they are SQLite files (the header written, or a
    ``-journal`` beside them: the header is written last), so an earlier version's export (text, not SQLite) and
    another program's ``.partial`` file are left alone. Never a link or a folder; a file that cannot be removed is
    left as it is. Returns the files removed."""
    removed: list[Path] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return removed
    for name in names:
        locked_kind = PARTIAL_NAME.fullmatch(name) is not None
        if not locked_kind and OLD_PARTIAL_NAME.fullmatch(name) is None:
            continue
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:  # gone meanwhile, a link, no permission
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                continue
            if not locked_kind and (time.time() if now is None else now) - info.st_mtime < OLD_PARTIAL_STALE_S:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: a backup or an export is writing it
                continue
            if not (locked_kind or _sqlite_file(fd, path)) or not _same_inode(fd, path):
                continue
            _unlink_with_journals(path)  # still locked here: a backup or export cannot take it meanwhile
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _publish(partial: Path, target: Path) -> None:
    """Give the complete copy ``partial`` the name ``target``, never replacing a file (``FileExistsError``): a hard
    link, or a rename where the file system has none."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if target.exists():
            raise FileExistsError(str(target)) from None
        os.replace(partial, target)


_INVARIANTS: tuple[tuple[str, str], ...] = (
    # A person's effective answer on a recommendation is their newest there, unless a later answer names it in
    # replaces (codec.IS_EFFECTIVE); the feedback_one_effective_answer trigger keeps every replacement chained.
    (
        "every replacement names an earlier answer on its recommendation",
        "SELECT r.request_id, 'replaces ' || r.replaces FROM feedback r WHERE r.replaces IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.prediction_id = r.prediction_id "
        "AND f.request_id = r.replaces AND f.id < r.id)",
    ),
    (
        "no answer is replaced twice",
        "SELECT r.prediction_id || ' / ' || r.replaces, COUNT(*) || ' answers replace it' FROM feedback r "
        "WHERE r.replaces IS NOT NULL GROUP BY r.prediction_id, r.replaces HAVING COUNT(*) > 1",
    ),
    (
        "audit lines have unique ids (one sequence for audit_events, decisions and feedback)",
        "SELECT id, COUNT(*) || ' lines' FROM audit_log GROUP BY id HAVING COUNT(*) > 1",
    ),
    (
        "feedback only on surfaced recommendations",
        "SELECT f.request_id, d.verdict FROM feedback f JOIN decisions d ON d.prediction_id = f.prediction_id "
        "WHERE d.verdict NOT IN ('surface', 'digest')",
    ),
    (
        "every surfaced decision has a recommendation and an outbox message",
        "SELECT d.prediction_id, 'missing' FROM decisions d WHERE d.verdict IN ('surface', 'digest') AND ("
        "NOT EXISTS (SELECT 1 FROM recommendations r WHERE r.prediction_id = d.prediction_id) OR "
        "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.prediction_id = d.prediction_id))",
    ),
    (
        "bandit pulls = new feedback events on the arm (+ at most one miss update per suppressed outcome)",
        # Counted per arm in one pass over each table (not once per arm and comparison).
        "WITH fb (arm, n) AS (SELECT f.arm, COUNT(*) FROM feedback f WHERE f.replaces IS NULL GROUP BY f.arm), "
        "so (arm, n) AS (SELECT d.arm, COUNT(*) FROM outcomes o JOIN decisions d ON d.prediction_id = o.prediction_id "
        " WHERE d.verdict = 'suppress' GROUP BY d.arm) "
        "SELECT b.arm, 'pulls ' || b.pulls || ', feedback events ' || COALESCE(fb.n, 0) || ', suppressed outcomes ' "
        "|| COALESCE(so.n, 0) FROM bandit_arms b LEFT JOIN fb ON fb.arm = b.arm LEFT JOIN so ON so.arm = b.arm "
        "WHERE b.pulls < COALESCE(fb.n, 0) OR b.pulls > COALESCE(fb.n, 0) + COALESCE(so.n, 0)",
    ),
    (
        # An answer of weight 0 (a person NPO does not trust) updates nothing, so it is not counted.
        "key update counts cover their new feedback events of weight above 0",
        # One pass over the feedback, counted per key, then joined with the keys: a count per key (a correlated
        # subquery) read the whole feedback table once per key, hours on a year-old database.
        "WITH c (key, n) AS (SELECT f.key, COUNT(*) FROM feedback f WHERE f.replaces IS NULL AND f.weight > 0 "
        "GROUP BY f.key) "
        "SELECT k.key, 'n ' || k.n || ' < feedback events ' || c.n FROM c JOIN key_alignment k ON k.key = c.key "
        "WHERE k.n < c.n",
    ),
    (
        "feedback keys have a key state",
        "SELECT DISTINCT f.key, 'no key_alignment row' FROM feedback f "
        "WHERE NOT EXISTS (SELECT 1 FROM key_alignment k WHERE k.key = f.key)",
    ),
    (
        # The tally the meta-monitor reads (storage.monitoring.contradicted_by_outcomes), kept by triggers (m017).
        "each person's outcome agreement tally counts their effective answers with a known outcome",
        f"WITH r (operator, answers, agreement) AS ({OUTCOME_AGREEMENT_ROWS}) "
        "SELECT t.operator, 'tally ' || t.answers || ' answers agreeing ' || t.agreement"
        " || ', effective answers with an outcome ' || COALESCE(r.answers, 0)"
        " || ' agreeing ' || COALESCE(r.agreement, 0) "
        "FROM outcome_agreement t LEFT JOIN r ON r.operator = t.operator "
        "WHERE t.answers <> COALESCE(r.answers, 0) OR ABS(t.agreement - COALESCE(r.agreement, 0)) > 1e-6 "
        "UNION ALL SELECT r.operator, 'no tally, effective answers with an outcome ' || r.answers FROM r "
        "WHERE NOT EXISTS (SELECT 1 FROM outcome_agreement t WHERE t.operator = r.operator)",
    ),
    (
        # The figure /npo status, the App Home and the metrics show, kept by triggers (m021).
        "the open recommendation count is the number of recommendations not closed",
        f"SELECT 'recommendations_open_count', 'n ' || c.n || ', open recommendations ' || ({OPEN_RECOMMENDATIONS}) "
        f"FROM recommendations_open_count c WHERE c.n <> ({OPEN_RECOMMENDATIONS}) "
        "UNION ALL SELECT 'recommendations_open_count', 'no row' "
        "WHERE NOT EXISTS (SELECT 1 FROM recommendations_open_count)",
    ),
    (
        # What the skip sweeper's partial index leaves out (m022): set by the first answer, kept by a trigger.
        "a recommendation's answered_at is the time of its earliest answer (NULL without one)",
        f"SELECT prediction_id, 'answered_at ' || COALESCE(answered_at, 'NULL') || ', first answer at ' "
        f"|| COALESCE({ANSWERED_AT}, 'none') FROM recommendations "
        f"WHERE answered_at IS NOT {ANSWERED_AT}",
    ),
    (
        "sent outbox messages have a message ts",
        "SELECT id, 'state sent without message_ts' FROM outbox WHERE state = 'sent' AND message_ts IS NULL",
    ),
)


def check(db: Database) -> tuple[int, list[Problem]]:
    """Run ``PRAGMA integrity_check``, ``foreign_key_check`` and the loop's invariants on ``db``.

    Returns (schema version, problems); no problems means healthy. Read-only. Invariants are only checked on a
    database at the latest schema version.
    """
    conn = db.conn
    problems: list[Problem] = []
    try:
        version = schema_version(db)
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:  # damaged beyond what integrity_check can list
        return -1, [Problem("integrity_check", f"the file cannot be read as an NPO database: {exc}")]
    if integrity != ["ok"]:
        problems.extend(_listed("integrity_check", integrity))
        return version, problems  # the invariants would read damaged pages
    dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
    problems.extend(
        _listed(
            "foreign_key_check",
            [f"{table} row {rowid} refers to a missing {parent} row" for table, rowid, parent, _ in dangling],
        )
    )
    newer = newer_schema_message(db)
    if newer is not None:
        problems.append(Problem("schema_version", newer))
        return version, problems
    if version != LATEST_SCHEMA_VERSION:
        problems.append(
            Problem("schema_version", f"{version}, latest is {LATEST_SCHEMA_VERSION}: run `npo-bot db migrate`")
        )
        return version, problems
    conn.execute("BEGIN")
    try:
        for what, sql in _INVARIANTS:
            problems.extend(_listed(what, [f"{subject}: {detail}" for subject, detail in conn.execute(sql)]))
    finally:
        conn.execute("ROLLBACK")
    return version, problems


ExportWhat = Literal["feedback", "decisions", "audit"]
_EXPORTS: dict[str, str] = {
    "feedback": (
        "SELECT id, request_id, prediction_id, operator, kind, at, reason, key, channel, y, weight, key_n_before, "
        f"arm, reward, replaces, peer_credited, {codec.IS_EFFECTIVE} AS effective FROM feedback f ORDER BY id"
    ),
    "decisions": (
        "SELECT d.prediction_id, d.key, d.verdict, d.rule, d.reason, d.decision_confidence AS confidence, "
        "d.misalignment, d.score, d.threshold, d.arm, d.decided_at, d.channel, d.fault_type, d.target, d.action, "
        "d.severity, o.real_fault, o.at AS outcome_at, o.recorded_at AS outcome_received_at FROM decisions d "
        "LEFT JOIN outcomes o ON o.prediction_id = d.prediction_id ORDER BY d.seq"
    ),
    "audit": "SELECT id, at, kind, subject, detail FROM audit_log ORDER BY id",
}


def _open_for_export(path: str | Path, what: ExportWhat) -> Database:
    """A connection to the database at ``path`` for an export of ``what``; refused (:class:`StorageError`, nothing
    changed) for an unknown ``what`` and for a schema version other than the latest, whose tables this export does
    not read correctly (an older file: run ``npo-bot db migrate`` first; a newer one: upgrade NPO)."""
    if what not in _EXPORTS:
        raise StorageError("export", str(what), f"choose one of {sorted(_EXPORTS)}")
    db = connect_readonly(path)
    try:
        newer = newer_schema_message(db)
        if newer is not None:
            raise StorageError("export", str(path), newer)
        version = schema_version(db)
        if version != LATEST_SCHEMA_VERSION:
            raise StorageError(
                "export",
                str(path),
                f"schema version {version}, latest is {LATEST_SCHEMA_VERSION}: run `npo-bot db migrate` first",
            )
    except BaseException:
        db.close()
        raise
    return db


def export_columns(path: str | Path, what: ExportWhat) -> list[str]:
    """The column names of :func:`export_rows`' dicts, in their order (for a CSV header, also when there is no
    row)."""
    db = _open_for_export(path, what)
    try:
        return [c[0] for c in db.conn.execute(f"{_EXPORTS[what]} LIMIT 0").description]
    finally:
        db.close()


def export_rows(path: str | Path, what: ExportWhat) -> Iterator[dict[str, Any]]:
    """Stream the ``feedback`` log, the ``decisions`` (with prediction and outcome) or the ``audit`` log (the
    ``audit_log`` view: id, at, kind, subject, detail as JSON text) as dicts, oldest first, from one consistent
    snapshot on a connection of its own (closed when the iterator is exhausted or closed). Refused with a
    :class:`StorageError` unless the database is at the latest schema version."""
    db = _open_for_export(path, what)
    try:
        conn = db.conn
        conn.execute("BEGIN")
        cur = conn.execute(_EXPORTS[what])
        names = [c[0] for c in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))
        conn.execute("ROLLBACK")
    finally:
        db.close()


def table_names(path: str | Path) -> set[str]:
    """Names of the tables and views in the SQLite file at ``path``, read without changing it (read-only, no WAL
    switch). Raises ``sqlite3.DatabaseError`` when the file is not a SQLite database."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    finally:
        conn.close()


def in_use(path: str | Path) -> bool:
    """Whether another connection has the database at ``path`` open. NPO keeps its files in WAL mode, which SQLite
    leaves only for the last connection: anyone else's makes the switch fail at once. Only for a file about to be
    removed or taken over: when nobody has it open, the file is left in rollback-journal mode."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return True
        raise
    finally:
        conn.close()
    return False
