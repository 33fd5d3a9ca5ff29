"""``npo-bot db …``: migrate, back up, check and export the SQLite database.

Wire into ``bot/cli.py`` with ``add_db_parser(sub)`` in ``build_parser`` and
``if args.command == "db": return run_db(args)`` in ``main``. The database path is ``--db``, else ``NPO_DB_PATH``
from the environment, else from the settings file (``--env-file``, default ``./.env``: the file ``serve`` and
``replay`` read, so ``db backup`` copies the database they use), else ``npo.db``. The rest of the settings file
(Slack tokens and so on) is not needed here and not checked.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, TextIO

DEFAULT_DB = "npo.db"


def _db_path(args: argparse.Namespace) -> Path:
    """``--db``, else ``NPO_DB_PATH`` from the environment, else from the settings file, else ``npo.db``. Raises
    :class:`bot.config.ConfigError` for a malformed settings file."""
    if args.db:
        return Path(args.db)
    if os.environ.get("NPO_DB_PATH"):
        return Path(os.environ["NPO_DB_PATH"])
    env_file: Path | None = args.env_file
    if env_file is not None and env_file.is_file():
        from bot.config import parse_env_file  # noqa: PLC0415 - keep `npo-bot --help` fast

        from_file = parse_env_file(env_file.read_text(encoding="utf-8-sig"), str(env_file)).get("NPO_DB_PATH")
        if from_file:
            return Path(from_file)
    return Path(DEFAULT_DB)


def add_db_parser(subparsers: Any) -> None:
    """Register ``db`` and its subcommands on the ``npo-bot`` subparsers object."""
    db = subparsers.add_parser("db", help="migrate, back up, check or export the SQLite database")
    sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    db_help = "database file (default: NPO_DB_PATH from the environment or the settings file, else npo.db)"
    env_help = "settings file to read NPO_DB_PATH from (default ./.env)"

    migrate = sub.add_parser("migrate", help="create the schema or upgrade it to the latest version")
    migrate.add_argument("--db", type=Path, default=None, help=db_help)
    migrate.add_argument("--env-file", type=Path, default=Path(".env"), help=env_help)

    backup = sub.add_parser("backup", help="copy the database online to PATH (a new file)")
    backup.add_argument("path", type=Path, help="the backup file to create")
    backup.add_argument("--db", type=Path, default=None, help=db_help)
    backup.add_argument("--env-file", type=Path, default=Path(".env"), help=env_help)

    check = sub.add_parser("check", help="integrity check and invariants; exit 1 on problems")
    check.add_argument("--db", type=Path, default=None, help=db_help)
    check.add_argument("--env-file", type=Path, default=Path(".env"), help=env_help)

    export = sub.add_parser("export", help="export the feedback log, the decisions or the audit log")
    export.add_argument("--db", type=Path, default=None, help=db_help)
    export.add_argument("--env-file", type=Path, default=Path(".env"), help=env_help)
    export.add_argument("--what", choices=("feedback", "decisions", "audit"), required=True)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")


def _export(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    from storage import export_rows  # noqa: PLC0415 - keep `npo-bot --help` fast

    rows = export_rows(path, args.what)
    count = 0
    if args.format == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    else:
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
                writer.writeheader()
            writer.writerow(row)
            count += 1
    return count


def run_db(args: argparse.Namespace) -> int:
    """Run one ``npo-bot db`` subcommand; returns the exit code (0 ok, 1 problems found or failure)."""
    from bot.config import ConfigError  # noqa: PLC0415
    from storage import (  # noqa: PLC0415
        LATEST_SCHEMA_VERSION,
        StorageError,
        backup,
        check,
        connect,
        migrate,
        schema_version,
    )

    command = args.db_command
    try:
        path = _db_path(args)
    except ConfigError as exc:
        print(f"npo-bot db {command}: {exc}", file=sys.stderr)
        return 1
    try:
        if command != "migrate" and not path.exists():
            print(f"npo-bot db {command}: no database at {path}", file=sys.stderr)
            return 1
        if command == "migrate":
            db = connect(path)
            try:
                before = schema_version(db)
                after = migrate(db)
            finally:
                db.close()
            print(f"{path}: schema version {before} -> {after} (latest {LATEST_SCHEMA_VERSION})")
            return 0
        if command == "backup":
            size = backup(path, args.path)
            print(f"backed up {path} to {args.path} ({size:,} bytes)")
            return 0
        if command == "check":
            db = connect(path)
            try:
                version, problems = check(db)
            finally:
                db.close()
            print(f"{path}: schema version {version} (latest {LATEST_SCHEMA_VERSION})")
            for problem in problems:
                print(f"PROBLEM {problem.what}: {problem.detail}")
            print("ok" if not problems else f"{len(problems)} problem(s)")
            return 0 if not problems else 1
        if command == "export":
            if args.out is None:
                count = _export(args, path, sys.stdout)
            else:
                with args.out.open("w", encoding="utf-8", newline="") as out:
                    count = _export(args, path, out)
                print(f"exported {count} {args.what} row(s) to {args.out}", file=sys.stderr)
            return 0
    except (StorageError, OSError) as exc:
        print(f"npo-bot db {command}: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # e.g. a page found damaged halfway through an export
        print(f"npo-bot db {command}: {path}: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled db command {command}")  # argparse refuses unknown commands first
