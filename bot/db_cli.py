"""``npo-bot db …``: migrate, back up, check and export the SQLite database, and requeue failed Slack posts.

Wire into ``bot/cli.py`` with ``add_db_parser(sub)`` in ``build_parser`` and
``if args.command == "db": return run_db(args)`` in ``main``. The database path is ``--db``, else ``NPO_DB_PATH``
from the environment, else from the settings file (``--env-file``, which must exist, also beside ``--db``; default
``./.env`` if there is one: the file ``serve`` and ``replay`` read, so ``db backup`` copies the database they use),
else ``npo.db``. The rest of the settings file (Slack tokens and so on) is not needed here and not checked.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sqlite3
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.output import INTERRUPTED_EXIT, SIGPIPE_EXIT, Writer, print_result, write_result

DEFAULT_DB = "npo.db"


def _db_path(args: argparse.Namespace) -> Path:
    """``--db``, else ``NPO_DB_PATH`` as ``serve`` reads it (the environment, else the settings file), else
    ``npo.db``. Raises :class:`bot.config.NoSettingsFile` for an ``--env-file`` that does not exist (``./.env`` may
    be absent), :class:`bot.config.ConfigError` for a settings file that cannot be read or is malformed."""
    from bot.config import read_setting, settings_file  # noqa: PLC0415 - keep `npo-bot --help` fast

    env_file = settings_file(args.env_file)  # a named file must exist, also beside --db: a typo is said
    if args.db:
        return Path(args.db)
    return Path(read_setting(os.environ, env_file, "NPO_DB_PATH") or DEFAULT_DB)


def add_db_parser(subparsers: Any) -> None:
    """Register ``db`` and its subcommands on the ``npo-bot`` subparsers object."""
    db = subparsers.add_parser("db", help="migrate, back up, check or export the SQLite database; requeue failed posts")
    sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    db_help = "database file (default: NPO_DB_PATH from the environment or the settings file, else npo.db)"
    env_help = "settings file to read NPO_DB_PATH from, which must exist (default ./.env, read if there is one)"

    migrate = sub.add_parser("migrate", help="create the schema or upgrade it to the latest version")
    migrate.add_argument("--db", type=Path, default=None, help=db_help)
    migrate.add_argument("--env-file", type=Path, default=None, help=env_help)

    backup = sub.add_parser("backup", help="copy the database online to PATH (a new file)")
    backup.add_argument(
        "path", type=_backup_path, help="the backup file to create (not -: a backup is a file, not standard output)"
    )
    backup.add_argument("--db", type=Path, default=None, help=db_help)
    backup.add_argument("--env-file", type=Path, default=None, help=env_help)

    check = sub.add_parser("check", help="integrity check and invariants; exit 1 on problems")
    check.add_argument("--db", type=Path, default=None, help=db_help)
    check.add_argument("--env-file", type=Path, default=None, help=env_help)

    export = sub.add_parser(
        "export",
        help="export the feedback log, the decisions or the audit log",
        description=(
            "Export the feedback log, the decisions (with their outcome) or the audit log, oldest first, in UTF-8. "
            "jsonl: one JSON object per line, every column in every line. csv: a header row (also when there is "
            "no row), RFC 4180 quoting and CRLF line ends; to keep spreadsheet programs from running a value as a "
            "formula (CSV injection), a text cell that starts with =, +, -, @, a tab or a carriage return is "
            "written with a single quote (') in front (numbers never are); use jsonl for the exact text."
        ),
    )
    export.add_argument("--db", type=Path, default=None, help=db_help)
    export.add_argument("--env-file", type=Path, default=None, help=env_help)
    export.add_argument("--what", choices=("feedback", "decisions", "audit"), required=True)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument(
        "--out",
        type=_out_path,
        default=None,
        help=(
            "output file (default, or -: standard output); an existing file is replaced only once the export is "
            "complete, so a failed export leaves it as it was; the database and its -wal, -shm and -journal "
            "files are refused"
        ),
    )

    requeue = sub.add_parser(
        "requeue",
        help="put failed Slack posts back in the outbox (after fixing the token or inviting the bot)",
        description=(
            "Put outbox messages that failed for good (a revoked or invalid token, a channel the bot is not in) back "
            "to pending, due now, with a fresh retry budget; the running bot posts them. Left failed, and counted "
            "with the reason: a recommendation since resolved or answered or posted by another message, an update "
            "with no message to update or superseded by a later one, a retraining alert whose proposal is closed "
            "or was queued again, an ephemeral reply, and (unless --include-overdue) a recommendation whose "
            "predicted fault time has passed. One transaction; each requeued message leaves an audit line "
            "with its last error. Prints one summary line."
        ),
    )
    requeue.add_argument("--db", type=Path, default=None, help=db_help)
    requeue.add_argument("--env-file", type=Path, default=None, help=env_help)
    requeue.add_argument(
        "--since",
        type=_iso_time,
        default=None,
        metavar="ISO",
        help="only messages that failed at or after this time (ISO 8601, UTC without an offset; default: all)",
    )
    requeue.add_argument(
        "--error",
        action="append",
        default=[],
        metavar="CODE",
        help="only messages whose last error names this Slack error (e.g. invalid_auth); repeatable",
    )
    requeue.add_argument(
        "--include-overdue",
        action="store_true",
        help=(
            "also requeue recommendations whose predicted fault time has passed (left failed by default: posted now, "
            "they would still say the fault is hours away)"
        ),
    )
    requeue.add_argument("--dry-run", action="store_true", help="print what would be requeued; change nothing")


def _out_path(text: str) -> Path | None:
    """``export --out``: a file, or None for ``-`` (standard output, as when ``--out`` is not given). A file named
    ``-`` is ``./-``."""
    return None if text == "-" else Path(text)


def _backup_path(text: str) -> Path:
    """``backup PATH``: a file; ``-`` is refused rather than made a file of that name (for most commands it means
    standard output, where a database file is never wanted: a terminal shows it as garbage, and SQLite writes a
    database only into a file)."""
    if text == "-":
        raise argparse.ArgumentTypeError(
            "a backup is a database file, not standard output: give the name of the file to create (./- for a "
            "file named -)"
        )
    return Path(text)


def _iso_time(text: str) -> float:
    """``--since``: ISO 8601, UTC when it has no offset, as Unix seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be ISO 8601, got {text!r}") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _error_label(error: str) -> str:
    """A failed message's last error as the summary counts it: Slack's code, else ``other``."""
    return error if re.fullmatch(r"[a-z0-9_]{1,40}", error) else "other"


def _requeue(args: argparse.Namespace, path: Path) -> str:
    """Run ``db requeue`` on the database at ``path``; the summary line."""
    from storage import SQLiteStore  # noqa: PLC0415

    with SQLiteStore(path, migrate=False) as store:
        planned = store.requeue_failed(
            time.time(), since=args.since, codes=args.error, overdue=args.include_overdue, dry_run=args.dry_run
        )
    chosen = Counter(f"{m.kind}/{_error_label(m.last_error)}" for m in planned if not m.skip)
    skipped = Counter(f"{m.kind}: {m.skip}" for m in planned if m.skip)
    verb = "would requeue" if args.dry_run else "requeued"
    line = f"{path}: {verb} {chosen.total()} of {len(planned)} failed message(s)"
    if chosen:
        line += " (" + ", ".join(f"{n} {what}" for what, n in sorted(chosen.items())) + ")"
    if skipped:
        line += (
            f"; left failed {skipped.total()} (" + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) + ")"
        )
    return line


# A text cell starting with one of these is read as a formula by spreadsheet programs (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Line breaks for str.splitlines() and some editors that JSON leaves unescaped: escaped, so a line is a record.
_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _csv_cell(value: object) -> object:
    """``value`` for a CSV cell: text that a spreadsheet would run as a formula gets a leading single quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _export(args: argparse.Namespace, path: Path, out: Writer) -> int:
    from storage.maintenance import export_columns, export_rows  # noqa: PLC0415 - keep `npo-bot --help` fast

    count = 0
    if args.format == "jsonl":
        for row in export_rows(path, args.what):
            out.write(json.dumps(row, ensure_ascii=False).translate(_JSON_LINE_BREAKS) + "\n")
            count += 1
    else:
        # RFC 4180 line ends: the csv module quotes a cell only for the characters of its line terminator, so
        # with "\n" a cell holding a carriage return was written bare and split the row in two for readers.
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(export_columns(path, args.what))
        for row in export_rows(path, args.what):
            writer.writerow([_csv_cell(value) for value in row.values()])
            count += 1
    return count


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _export_to_file(args: argparse.Namespace, path: Path, out: Path) -> int:
    """Export into ``out``: written to a hidden file next to it and renamed over it once complete, so a failed
    export neither truncates an existing file nor leaves a partial one. The hidden file is a backup's
    (``claim_partial``: locked while written), so one left by an export stopped half way (SIGKILL, a power loss) is
    removed by the next export or backup into the folder, and one still being written never is. Refuses the
    database itself (and its -wal, -shm, -journal files) and a folder; a device or pipe (``/dev/stdout``) is
    written directly, and ``BrokenPipeError`` (its reader went away) is left to the caller."""
    from storage import StorageError  # noqa: PLC0415
    from storage.maintenance import write_replacing  # noqa: PLC0415

    for suffix in ("", "-wal", "-shm", "-journal"):  # SQLite names them after the file a link leads to
        if any(_same_file(out, Path(f"{db}{suffix}")) for db in (path, os.path.realpath(path))):
            what = f"the database {path}" if not suffix else f"the {suffix[1:]} file of the database {path}"
            raise StorageError("export", str(out), f"is {what}; --out names a new file to export into")
    if out.is_dir():
        raise StorageError("export", str(out), "is a folder; give the name of the file to write")
    if not out.parent.is_dir():
        raise StorageError("export", str(out), f"the folder {out.parent} does not exist")
    if out.exists() and not out.is_file():
        try:
            with out.open("w", encoding="utf-8", newline="") as stream:
                return _export(args, path, stream)
        except BrokenPipeError:  # the reader of a pipe (``/dev/stdout | head``) went away: the caller's exit 141
            raise
        except OSError as exc:  # ``/dev/full``, a full disk behind ``/dev/stdout``: named, as for a file
            raise StorageError("export", str(out), f"cannot write the file: {exc.strerror or exc}") from exc

    def write(fd: int) -> int:
        with open(fd, "w", encoding="utf-8", newline="", closefd=False) as stream:
            return _export(args, path, stream)

    try:
        return write_replacing(out, write)
    except OSError as exc:
        raise StorageError("export", str(out), f"cannot write the file: {exc.strerror or exc}") from exc


def _migrated(path: Path, seen: int, found: int, after: int, latest: int) -> str:
    """``db migrate``'s line: ``seen`` is the version read at the start, ``found`` the one under the write lock (another
    process may have upgraded the file while this one waited for it), ``after`` the version it left."""
    if found == seen:
        return f"{path}: schema version {seen} -> {after} (latest {latest})"
    if found == after:
        return (
            f"{path}: schema version {after} (latest {latest}): another process upgraded it from {seen} while this "
            "one waited for the lock; nothing left to apply"
        )
    return (
        f"{path}: schema version {found} -> {after} (latest {latest}; another process had upgraded it from {seen} "
        f"to {found} while this one waited for the lock)"
    )


def _interrupted(args: argparse.Namespace) -> str:
    """What is left after Ctrl-C stopped ``npo-bot db <command>`` (each leaves the database as it was)."""
    command = args.db_command
    if command == "migrate":
        return "a migration not yet committed was rolled back (it is one transaction); run it again"
    if command == "backup":
        return f"no backup was written to {args.path}"
    if command == "check":
        return "the check did not finish"
    if command == "export" and args.out is not None:
        return f"{args.out} was not written (a file already there is left as it was)"
    if command == "export":
        return "the output is incomplete"
    if command == "requeue" and not args.dry_run:
        return "nothing was requeued (it is one transaction)"
    return "nothing was changed"


def run_db(args: argparse.Namespace) -> int:
    """Run one ``npo-bot db`` subcommand; returns the exit code (0 ok, 1 problems found or failure, 2 an
    ``--env-file`` that does not exist or cannot be read, or a database path that is a folder, 130 Ctrl-C (one
    line on stderr, the database as it was), 141 the reader of stdout went away: see :mod:`bot.output`)."""
    try:
        return _run_db(args)
    except KeyboardInterrupt:
        print(f"npo-bot db {args.db_command}: interrupted; {_interrupted(args)}", file=sys.stderr)
        return INTERRUPTED_EXIT


def _run_db(args: argparse.Namespace) -> int:
    from bot.config import ConfigError, NoSettingsFile  # noqa: PLC0415
    from storage import (  # noqa: PLC0415
        LATEST_SCHEMA_VERSION,
        StorageError,
        backup,
        check,
        connect,
        connect_readonly,
        schema_version,
    )
    from storage.connection import described  # noqa: PLC0415
    from storage.migrations import upgrade  # noqa: PLC0415

    command = args.db_command
    name = f"db {command}"
    try:
        path = _db_path(args)
    except NoSettingsFile as exc:  # a typo in --env-file: refused before a database is opened or created
        print(f"npo-bot db {command}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # a settings file that cannot be read: refused, as by every other command
        print(f"npo-bot db {command}: {exc}", file=sys.stderr)
        return 2
    if path.is_dir():  # sqlite3 says "unable to open database file", and a read-only open "no such file"
        print(f"npo-bot db {command}: {path} is a folder, not a database file", file=sys.stderr)
        return 2
    try:
        if command != "migrate" and not path.exists():
            print(f"npo-bot db {command}: no database at {path}", file=sys.stderr)
            return 1
        if command == "migrate":
            db = connect(path)
            try:
                seen = schema_version(db)
                found, after = upgrade(db)  # found: read under the write lock
            finally:
                db.close()
            return print_result(_migrated(path, seen, found, after, LATEST_SCHEMA_VERSION), name)
        if command == "backup":
            size = backup(path, args.path)
            return print_result(f"backed up {path} to {args.path} ({size:,} bytes)", name)
        if command == "check":
            db = connect_readonly(path)  # a check only reads: a backup stays one file, read-only media work
            try:
                version, problems = check(db)
            finally:
                db.close()
            lines = [f"{path}: schema version {version} (latest {LATEST_SCHEMA_VERSION})"]
            lines += [f"PROBLEM {problem.what}: {problem.detail}" for problem in problems]
            lines.append("ok" if not problems else f"{sum(p.count for p in problems)} problem(s)")
            return print_result("\n".join(lines), name) or (0 if not problems else 1)
        if command == "export":
            if args.out is None:  # UTF-8 whatever the locale (an ASCII one raised on the first "é"); CRLF kept as is
                return write_result(lambda out: _export(args, path, out), name, newline="")
            try:
                count = _export_to_file(args, path, args.out)
            except BrokenPipeError:  # ``--out /dev/stdout | head``: as for the default stdout (bot/output.py)
                return SIGPIPE_EXIT
            print(f"exported {count} {args.what} row(s) to {args.out}", file=sys.stderr)
            return 0
        if command == "requeue":
            return print_result(_requeue(args, path), name)
    except (StorageError, OSError) as exc:
        print(f"npo-bot db {command}: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # e.g. a page found damaged halfway through an export
        print(f"npo-bot db {command}: {path}: {described(exc)}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled db command {command}")  # argparse refuses unknown commands first
