"""``npo-bot report [--since ISO] [--png PATH]``: the weekly report in the terminal (and its chart to a file)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``sub`` (the result of ``parser.add_subparsers``)."""
    report: argparse.ArgumentParser = sub.add_parser(
        "report", help="print the weekly summary (L_align trend, answer rates, τ posteriors)"
    )
    report.add_argument("--since", help="start of the period, ISO 8601 (default: 7 days ago; naive = --timezone)")
    report.add_argument("--png", type=Path, help="also write the L_align chart to this PNG file")
    report.add_argument("--db", type=Path, help="the SQLite file (default: NPO_DB_PATH from the settings)")
    report.add_argument("--timezone", help="days are counted in this zone (default: NPO_TIMEZONE, else UTC)")
    report.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default ./.env)")
    return report


def _db_and_zone(args: argparse.Namespace) -> tuple[Path, str] | None:
    if args.db is not None:
        return args.db, args.timezone or "UTC"
    from bot.config import ConfigError, load_settings  # noqa: PLC0415

    try:
        settings = load_settings(os.environ, args.env_file)
    except ConfigError as exc:
        print(f"npo-bot report: {exc}\n(or pass --db)", file=sys.stderr)
        return None
    return settings.db_path, args.timezone or settings.timezone


def run_report(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    """Print the report; 0 on success, 2 on bad arguments or a missing database."""
    from bot.jobs.report import build_report, render_png, report_text  # noqa: PLC0415 - keep --help fast
    from storage import SQLiteStore  # noqa: PLC0415
    from storage.errors import StorageError  # noqa: PLC0415

    where = _db_and_zone(args)
    if where is None:
        return 2
    db, zone = where
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"npo-bot report: unknown timezone {zone!r}", file=sys.stderr)
        return 2
    until = now or datetime.now(UTC)
    since = until - timedelta(days=7)
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            print(f"npo-bot report: --since must be ISO 8601, got {args.since!r}", file=sys.stderr)
            return 2
        if since.tzinfo is None:
            since = since.replace(tzinfo=tz)
        if since >= until:
            print("npo-bot report: --since must be in the past", file=sys.stderr)
            return 2
    if not db.is_file():
        print(f"npo-bot report: no such database: {db}", file=sys.stderr)
        return 2
    try:
        with SQLiteStore(db, migrate=False) as store:
            report = build_report(store, since=since, until=until, timezone=zone)
    except StorageError as exc:
        print(f"npo-bot report: {exc}", file=sys.stderr)
        return 2
    print(report_text(report))
    if args.png is not None:
        args.png.write_bytes(render_png(report))
        print(f"\nwrote {args.png}")
    return 0
