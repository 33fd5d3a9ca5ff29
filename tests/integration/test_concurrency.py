"""8 threads × 500 feedback events on shared keys: exact counts, no lost update, no unhandled lock error."""

from __future__ import annotations

import argparse
import os
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest
from storage_testing import make_prediction, surface

from bot.db_cli import add_db_parser, run_db
from npo.loop import LoopConfig, record_feedback
from npo.policy import Policy
from npo.scoring import scenario_key
from npo.types import FeedbackEvent, FeedbackKind
from storage import LATEST_SCHEMA_VERSION, SQLiteStore, StorageBusy, StorageError, check, connect, is_locked, migrate
from storage.migrations import KNOWN_MIGRATIONS, MIGRATIONS

THREADS = 8
EVENTS = 500


@pytest.mark.parametrize("trust", [True, False], ids=["trust on", "trust off"])
def test_concurrent_feedback_leaves_exact_counts(db_path: Path, relaxed_policy: Policy, trust: bool) -> None:
    config = LoopConfig() if trust else LoopConfig(trust=None)
    # Two store objects on one file: threads of the same store queue on its lock, the two stores contend in
    # SQLite itself (busy timeout + retries), like two processes.
    stores = [SQLiteStore(db_path, config), SQLiteStore(db_path, config)]
    predictions = [make_prediction(i) for i in range(EVENTS)]
    surface(stores[0], predictions, relaxed_policy)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        store = stores[t % 2]
        kinds = (FeedbackKind.LIKE, FeedbackKind.OVERRIDE, FeedbackKind.NEUTRAL)
        try:
            start.wait()
            for i in range(EVENTS):
                event = FeedbackEvent(f"p{i}", f"op{t}", kinds[(i + t) % 3], float(1000 + i), f"t{t}-{i}")
                with store.transaction() as tx:
                    assert record_feedback(tx, event, config=config).status == "recorded"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []

    decisions = {p.id: stores[0].decision(p.id) for p in predictions}
    expected_pulls = Counter(d.arm for d in decisions.values() if d is not None)
    expected_n = Counter(scenario_key(p) for p in predictions)
    bandit = stores[0].bandit()
    assert {arm: bandit.pulls[arm] for arm in expected_pulls} == {a: THREADS * n for a, n in expected_pulls.items()}
    assert sum(bandit.pulls) == THREADS * EVENTS
    keys = stores[0].keys()
    if trust:
        # Operators whose clicks disagree with their peers fall to weight 0, and an answer of weight 0 updates no
        # key: each key's count is exactly its answers of weight above 0, its weight sum their weights.
        with stores[0].read() as conn:
            weighted = dict(conn.execute("SELECT key, COUNT(*) FROM feedback WHERE weight > 0 GROUP BY key"))
            weight_sums = dict(conn.execute("SELECT key, SUM(weight) FROM feedback GROUP BY key"))
            zero = conn.execute("SELECT COUNT(*) FROM feedback WHERE weight = 0").fetchone()[0]
        assert 0 < zero < THREADS * EVENTS  # both kinds of answer are exercised
        assert {k: s.n for k, s in keys.items()} == weighted
        assert {k: s.weight_sum for k, s in keys.items()} == pytest.approx(weight_sums)
    else:
        assert {k: s.n for k, s in keys.items()} == {k: THREADS * n for k, n in expected_n.items()}
    assert set(stores[0].trust()) == ({f"op{t}" for t in range(THREADS)} if trust else set())
    assert stores[0].counts()["feedback_effective"] == THREADS * EVENTS
    db = connect(db_path)
    assert check(db) == (LATEST_SCHEMA_VERSION, [])
    db.close()
    for s in stores:
        s.close()


def test_a_held_write_lock_gives_a_clear_error_after_bounded_retries(db_path: Path) -> None:
    store = SQLiteStore(db_path, busy_timeout_s=0.05, lock_retries=2)
    other = sqlite3.connect(str(db_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageBusy, match="locked") as info, store.transaction():
            pass
        assert info.value.table == "database"
        assert isinstance(info.value, ValueError)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with store.transaction() as tx:  # usable again once the lock is released
        tx.audit("test", "x", {}, 0.0)
    store.close()


def test_is_locked_tells_a_held_write_lock_from_a_failure_that_would_come_back(db_path: Path) -> None:
    """One check, shared by the store's retries, the delivery worker's log level and the retraining runner's
    back-off: the store's StorageBusy and SQLite's own "database is locked" are a lock another connection holds
    (worth trying again); a refused record, a full disk or any other error is not."""
    store = SQLiteStore(db_path, busy_timeout_s=0.05, lock_retries=0)
    other = sqlite3.connect(str(db_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    raw = sqlite3.connect(str(db_path), timeout=0.05, isolation_level=None)
    try:
        with pytest.raises(StorageBusy) as busy, store.transaction():
            pass
        with pytest.raises(sqlite3.OperationalError) as locked:
            raw.execute("BEGIN IMMEDIATE")
    finally:
        other.execute("ROLLBACK")
        other.close()
        raw.close()
        store.close()
    assert is_locked(busy.value) and is_locked(locked.value)
    assert is_locked(sqlite3.OperationalError("database table is locked"))
    assert not is_locked(sqlite3.OperationalError("database or disk is full"))
    assert not is_locked(sqlite3.IntegrityError("UNIQUE constraint failed: model_versions.version"))
    assert not is_locked(StorageError("model_versions", "3", "UNIQUE constraint failed"))
    assert not is_locked(RuntimeError("database is locked"))  # not the database's own error


def test_a_current_database_opens_while_another_process_holds_the_write_lock(db_path: Path) -> None:
    """A store opening a database with no migration to apply only reads it: it opens while another connection holds
    the write lock (a long write, another bot starting), where it used to wait for the lock and fail with "could not
    lock the database to migrate". A database that needs a migration still waits for the lock (and says so)."""
    SQLiteStore(db_path).close()
    other = sqlite3.connect(str(db_path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with SQLiteStore(db_path, busy_timeout_s=0.05, lock_retries=0) as store:
            assert store.schema_version() == LATEST_SCHEMA_VERSION
        fresh = db_path.with_name("fresh.db")
        connect(fresh).close()  # a WAL file with no migration applied
        holder = sqlite3.connect(str(fresh), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageBusy, match="could not lock the database to migrate"):
                SQLiteStore(fresh, busy_timeout_s=0.05, lock_retries=0, migration_wait_s=0)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_store_waits_for_another_process_migrating_past_its_busy_timeout(db_path: Path) -> None:
    """Two processes starting on one old database: the one that does not get the write lock waits for the other's
    upgrade, however longer than one busy timeout it takes, and then finds nothing to apply. It used to give up
    after one busy timeout ("could not lock the database to migrate: database is locked"), and ``serve`` exited 2,
    which the service unit does not restart: the bot stayed down after an upgrade of a large file."""
    db = connect(db_path)
    assert migrate(db, stop_before=KNOWN_MIGRATIONS[16]) == 16
    db.conn.execute("BEGIN IMMEDIATE")  # the other process, holding the lock while it migrates
    opened: list[object] = []

    def start() -> None:
        try:
            with SQLiteStore(db_path, busy_timeout_s=0.02, lock_retries=0) as store:
                opened.append(store.schema_version())
        except BaseException as exc:
            opened.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    starting.join(1.0)  # many busy timeouts: before, it had given up by now
    MIGRATIONS.apply(db)
    db.conn.execute("COMMIT")
    starting.join()
    assert opened == [LATEST_SCHEMA_VERSION]
    names = [r[0] for r in db.conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names == list(KNOWN_MIGRATIONS)  # each applied once
    db.close()


def _db_migrate_args(db_path: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="npo-bot")
    add_db_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["db", "migrate", "--db", str(db_path), "--env-file", os.devnull])


def _db_migrate_in_a_thread(db_path: Path, codes: list[int]) -> threading.Thread:
    """``npo-bot db migrate --db DB_PATH`` started in a thread (its exit status appended to ``codes``)."""
    args = _db_migrate_args(db_path)
    waiting = threading.Thread(target=lambda: codes.append(run_db(args)))
    waiting.start()
    return waiting


def test_db_migrate_that_waited_for_another_upgrade_says_it_applied_nothing(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``npo-bot db migrate`` runs at once on an old database: the one that waited for the other's write lock
    printed "7 -> 19" as if it had upgraded the file itself (it read the version before waiting). It says another
    process upgraded it, and exits 0."""
    db = connect(db_path)
    assert migrate(db, stop_before=KNOWN_MIGRATIONS[7]) == 7
    db.conn.execute("PRAGMA foreign_keys = OFF")
    db.conn.execute("BEGIN IMMEDIATE")  # the other `db migrate`, holding the lock while it upgrades
    MIGRATIONS.apply(db)  # not committed: the waiting run reads version 7
    codes: list[int] = []
    waiting = _db_migrate_in_a_thread(db_path, codes)
    waiting.join(1.0)  # it has read the version and waits for the lock
    db.conn.execute("COMMIT")
    waiting.join()
    assert codes == [0]
    out = capsys.readouterr().out
    assert "7 -> " not in out
    assert (
        f"schema version {LATEST_SCHEMA_VERSION} (latest {LATEST_SCHEMA_VERSION}): another process upgraded it from 7"
        in out
    )
    names = [r[0] for r in db.conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names == list(KNOWN_MIGRATIONS)  # each applied once
    db.close()


@pytest.mark.parametrize("newer_applies", ["every migration", "its own first"])
def test_db_migrate_that_waited_while_a_newer_npo_upgraded_the_file_refuses_it(
    db_path: Path, capsys: pytest.CaptureFixture[str], newer_applies: str
) -> None:
    """``db migrate`` refused a database written by a newer NPO only when it read the version, before waiting for the
    write lock: when a newer NPO upgraded the file while it waited, it said "another process upgraded it … nothing
    left to apply" and exit 0 (so a bot of this version went on using the file), or applied its own migrations on
    top of the newer one's. Read again under the lock, the newer migration is refused as before the wait, with the
    same line, and this process changes nothing."""
    db = connect(db_path)
    assert migrate(db, stop_before=KNOWN_MIGRATIONS[7]) == 7
    db.conn.execute("PRAGMA foreign_keys = OFF")
    db.conn.execute("BEGIN IMMEDIATE")  # the newer NPO, holding the lock while it upgrades
    codes: list[int] = []
    waiting = _db_migrate_in_a_thread(db_path, codes)
    waiting.join(1.0)  # it has read version 7 and waits for the lock
    if newer_applies == "every migration":
        MIGRATIONS.apply(db)
    db.conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('npo', 'm099_future', 'now')"
    )
    db.conn.execute("COMMIT")
    left = [r[0] for r in db.conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    waiting.join()
    assert codes == [1]
    after_the_wait = capsys.readouterr()
    assert after_the_wait.out == ""
    assert [r[0] for r in db.conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")] == left
    db.close()
    assert run_db(_db_migrate_args(db_path)) == 1  # the same file, refused before any wait
    before_a_wait = capsys.readouterr().err
    assert "was written by a newer NPO (migrations m099_future;" in before_a_wait
    assert after_the_wait.err == before_a_wait


@pytest.mark.parametrize("lock", ["IMMEDIATE", "EXCLUSIVE", "SHARED"])
def test_a_file_not_yet_in_wal_that_another_process_holds_is_refused_clearly(db_path: Path, lock: str) -> None:
    """Switching a file to WAL needs it to itself: a file still in rollback-journal mode (a restored backup, a file
    another tool created) that another connection holds in a write transaction surfaced a bare
    ``sqlite3.OperationalError: database is locked`` after the busy timeout (a traceback from ``serve``). It is a
    :class:`StorageBusy` naming the file and saying to try again; once the lock is gone the file opens in WAL."""
    other = sqlite3.connect(str(db_path), isolation_level=None)
    other.execute("CREATE TABLE from_another_tool (x)")
    assert other.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    if lock == "SHARED":  # a reader in the middle of a read transaction
        other.execute("BEGIN")
        other.execute("SELECT * FROM from_another_tool").fetchall()
    else:
        other.execute(f"BEGIN {lock}")
    try:
        with pytest.raises(StorageBusy) as info:
            SQLiteStore(db_path, busy_timeout_s=0.05)
        assert info.value.table == "connection" and info.value.record == str(db_path)
        message = info.value.message
        assert "locked by another process" in message and "try again" in message
        assert "no other process is reading or writing it" in message, message  # a reader holds it too
    finally:
        other.execute("ROLLBACK")
        other.close()
    with SQLiteStore(db_path) as store:
        assert store.schema_version() == LATEST_SCHEMA_VERSION
    db = connect(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
