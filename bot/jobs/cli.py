"""``npo-bot report [--since ISO] [--until ISO] [--png PATH]``: the weekly report in the terminal (and its chart to a
file).

The database is ``--db``, else ``NPO_DB_PATH`` (as ``npo-bot db`` finds it), else ``npo.db``: no Slack setting is
needed. The days are counted in ``--timezone``, else ``NPO_TIMEZONE`` from the environment, else from the settings file
(``--env-file``, which must exist, default ``./.env`` if there is one), else UTC — with or without ``--db``.
The period ends at ``--until`` (default: now) and starts at ``--since`` (default: seven local days before its end);
neither may be before 1970 nor in the future, and the start must be before the end. A long period prints one line
per day (the chart labels at most ten of its days).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.output import INTERRUPTED_EXIT, print_result

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``sub`` (the result of ``parser.add_subparsers``)."""
    report: argparse.ArgumentParser = sub.add_parser(
        "report", help="print the weekly summary (L_align trend, answer rates, τ posteriors)"
    )
    report.add_argument(
        "--since",
        help="start of the period, ISO 8601, from 1970 on (default: 7 days before its end; naive = --timezone)",
    )
    report.add_argument(
        "--until",
        help="end of the period, ISO 8601, not in the future (default: now; naive = --timezone): last week's summary"
        " again is --until at its Monday slot",
    )
    report.add_argument("--png", type=Path, help="also write the L_align chart to this PNG file")
    report.add_argument(
        "--db",
        type=Path,
        help="the SQLite file (default: NPO_DB_PATH from the environment or the settings file, else npo.db)",
    )
    report.add_argument(
        "--timezone",
        help="days are counted in this zone "
        "(default: NPO_TIMEZONE from the environment or the settings file, else UTC)",
    )
    report.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file, which must exist (default ./.env, read if there is one)",
    )
    return report


def _db_and_zone(args: argparse.Namespace) -> tuple[Path, str, str] | None:
    """The database and the zone the days are counted in: ``--db``, else ``NPO_DB_PATH`` as ``serve`` reads it (the
    environment, else the settings file), else ``npo.db``, as ``npo-bot db`` finds it; the zone ``--timezone``,
    else ``NPO_TIMEZONE`` found the same way, else ``UTC``; and where the zone came from (``--timezone``,
    ``NPO_TIMEZONE`` or ``""`` for the default), for a message naming it. A report only reads the database, so no
    Slack setting is needed."""
    from bot.config import ConfigError, NoSettingsFile, read_settings, settings_file  # noqa: PLC0415
    from bot.db_cli import DEFAULT_DB  # noqa: PLC0415

    try:
        env_file = settings_file(args.env_file)  # a typo in --env-file: refused, with or without --db
        if args.db is not None and args.timezone:
            return args.db, str(args.timezone), "--timezone"
        found = read_settings(os.environ, env_file, "NPO_DB_PATH", "NPO_TIMEZONE")  # one reading: one warning
        db = args.db if args.db is not None else Path(found["NPO_DB_PATH"] or DEFAULT_DB)
        if args.timezone:
            return db, str(args.timezone), "--timezone"
        return db, found["NPO_TIMEZONE"] or "UTC", "NPO_TIMEZONE" if found["NPO_TIMEZONE"] else ""
    except (NoSettingsFile, ConfigError) as exc:
        print(f"npo-bot report: {exc}", file=sys.stderr)
        return None


def _moment(option: str, text: str, tz: ZoneInfo, now: datetime) -> datetime | str:
    """``--since`` or ``--until`` (``option``) as an aware datetime (naive: in ``tz``), or what is wrong with it (one
    line): not ISO 8601, before 1970, or later than ``now`` (``--since`` must be before it: an empty period says
    nothing)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return f"{option} must be ISO 8601, got {text!r}"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    # Compared without converting ``moment`` (a date near year 1 or 9999 can overflow in another zone), and with
    # ``now`` in UTC: two datetimes of the same zone compare as wall times, so in the hour the clocks repeat a
    # time already past read as still to come.
    instant = now.astimezone(UTC)
    if moment > instant or (option == "--since" and moment == instant):
        return f"{option} must be in the past, got {text!r}"
    if moment < EPOCH:
        return f"{option} must not be before 1970, got {text!r}"
    return moment


def _period(args: argparse.Namespace, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime] | str:
    """The report's period from ``--since`` and ``--until`` (defaults: seven local days up to now), or what is wrong
    with them (one line)."""
    until = now
    if args.until:
        parsed = _moment("--until", args.until, tz, now)
        if isinstance(parsed, str):
            return parsed
        until = parsed.astimezone(tz)
    since = until - timedelta(days=7)  # local wall time: seven whole days, also across a daylight-saving change
    if args.since:
        parsed = _moment("--since", args.since, tz, now)
        if isinstance(parsed, str):
            return parsed
        if parsed.timestamp() >= until.timestamp():  # as instants, not wall times (a clock change)
            return f"--since must be before the end of the period ({until.isoformat()}), got {args.since!r}"
        since = parsed
    return since, until


def _database_file(path: Path, db: Path) -> Path | None:
    """The file of the database ``db`` (itself, or its -wal, -shm or -journal file) that ``path`` names, else
    None: the chart must never be written over the data."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        other = Path(f"{db}{suffix}")
        if os.path.realpath(path) == os.path.realpath(other):
            return other
        if path.exists() and other.exists() and os.path.samefile(path, other):  # a hard link
            return other
    return None


def _unwritable_chart(png: Path) -> str | None:
    """Why ``--png`` cannot be written, checked before the report is built (None: it can be tried): a folder, a file
    in a folder that does not exist or cannot be written into."""
    import tempfile  # noqa: PLC0415

    if png.is_dir():
        return "is a folder; name a PNG file to write"
    if png.exists() and not png.is_file():
        return None  # a device or a pipe (/dev/stdout): written as it is
    folder = png.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write into the folder {folder}: {exc.strerror or exc}"
    return None


def _write_chart(png: Path, data: bytes) -> None:
    """Write the chart to ``png``: a file is replaced only once the whole chart is written (a full disk leaves a
    chart already there as it was); a device or pipe is written directly. Raises ``OSError``."""
    from storage.maintenance import write_replacing  # noqa: PLC0415

    if png.exists() and not png.is_file():
        png.write_bytes(data)
        return

    def write(fd: int) -> None:
        with open(fd, "wb", closefd=False) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(fd)

    write_replacing(png, write)


def run_report(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    """Print the report; 0 on success, 2 on a refused option (a bad argument, a ``--db`` that is a folder, a
    ``--png`` that is a folder or in a folder that does not exist or cannot be written into), 1 when the database is
    missing or cannot be read (as every ``npo-bot db`` command) or the chart could not be written (a full disk),
    130 on Ctrl-C (one line on stderr; the database is only read), 141 when the reader of stdout went away and 1
    when stdout cannot be written (:mod:`bot.output`)."""
    try:
        return _run_report(args, now=now)
    except KeyboardInterrupt:
        print("npo-bot report: interrupted; the report is incomplete or was not printed", file=sys.stderr)
        return INTERRUPTED_EXIT


def _run_report(args: argparse.Namespace, *, now: datetime | None) -> int:
    from bot.jobs.report import build_report, render_png, report_text  # noqa: PLC0415 - keep --help fast
    from storage import SQLiteStore  # noqa: PLC0415
    from storage.connection import described  # noqa: PLC0415
    from storage.errors import StorageError  # noqa: PLC0415

    where = _db_and_zone(args)
    if where is None:
        return 2
    db, zone, given_by = where
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the zone database ("Europe")
        if given_by == "NPO_TIMEZONE":  # named, in the words ``serve`` refuses it with: no --timezone was given
            print(
                f"npo-bot report: NPO_TIMEZONE: must be an IANA time zone like Europe/Berlin, got {zone!r}",
                file=sys.stderr,
            )
        else:
            print(f"npo-bot report: unknown timezone {zone!r}", file=sys.stderr)
        return 2
    period = _period(args, tz, (now or datetime.now(UTC)).astimezone(tz))
    if isinstance(period, str):
        print(f"npo-bot report: {period}", file=sys.stderr)
        return 2
    since, until = period
    if db.is_dir():
        print(f"npo-bot report: {db} is a folder, not a database file", file=sys.stderr)
        return 2
    if not db.is_file():
        print(f"npo-bot report: no such database: {db}", file=sys.stderr)
        return 1  # a database problem, not a refused option: as every `npo-bot db` command
    if args.png is not None and (data := _database_file(args.png, db)) is not None:
        print(f"npo-bot report: --png {args.png} is the database file {data}; name a new PNG file", file=sys.stderr)
        return 2
    if args.png is not None and (reason := _unwritable_chart(args.png)) is not None:
        print(
            f"npo-bot report: --png {args.png} {reason}"
            if reason.startswith("is ")
            else f"npo-bot report: --png {args.png}: {reason}",
            file=sys.stderr,
        )
        return 2
    try:
        with SQLiteStore(db, read_only=True) as store:  # never written: a backup stays one file
            report = build_report(store, since=since, until=until, timezone=zone)
    except StorageError as exc:  # e.g. not an SQLite file: a database problem, as for `db check`
        print(f"npo-bot report: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # locked past the busy timeout by another process; a page found damaged
        print(f"npo-bot report: {db}: {described(exc)}", file=sys.stderr)
        return 1
    if args.png is not None:  # written before the text is printed, so a failure prints one line and nothing else
        try:
            _write_chart(args.png, render_png(report))
        except OSError as exc:
            print(f"npo-bot report: --png {args.png}: cannot write the chart: {exc.strerror or exc}", file=sys.stderr)
            return 1  # a write that failed (a full disk): as a file `npo-bot simulate` fails to write
    text = report_text(report, slack=False)
    if args.png is not None:
        text += f"\n\nwrote {args.png}"
    return print_result(text, "report")
