"""Storage benchmark: feedback read-modify-writes and decisions per second through ``SQLiteStore``.

Each figure is measured in the same run as its raw-``sqlite3`` baseline (same file system, same pragmas), at
``synchronous=NORMAL`` and ``FULL``, because these machines are noisy: compare ratios, not absolute numbers
across runs. ``run(quick=False)`` returns (name, value, unit) rows and prints nothing; ``python -m bench.storage_bench``
prints them (``--quick``: smaller sizes). Rows are grouped ``"<figure> | <variant>"`` (see :mod:`bench`): the
``baseline …`` variant of a figure is its raw-``sqlite3`` reference measured in the same run, and :data:`TARGETS`
holds the issue's targets (the feedback target is also a ratio: SQLiteStore as a percentage of its baseline).
"""

from __future__ import annotations

import functools
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import row_name
from npo.loop import InMemoryStore, LoopConfig, decide, record_feedback
from npo.policy import DEFAULT_POLICY_TEXT, parse_policy
from npo.types import FeedbackEvent, FeedbackKind, Prediction
from storage import SQLiteStore
from storage.connection import Synchronous

Row = tuple[str, float, str]
BATCH = 1000


@dataclass(frozen=True, slots=True)
class Sizes:
    feedback: int  # feedback events at NORMAL (a third of them at FULL)
    single: int  # predictions decided one transaction each at NORMAL (a third at FULL)
    batched: int  # predictions decided in batches of BATCH


FULL_SIZES = Sizes(feedback=3000, single=2000, batched=20000)
QUICK_SIZES = Sizes(feedback=600, single=300, batched=4000)
N_FEEDBACK, N_SINGLE, N_BATCHED = FULL_SIZES.feedback, FULL_SIZES.single, FULL_SIZES.batched


def fig_feedback(sync: str) -> str:
    return f"feedback events/s, one durable commit each, {sync}"


def fig_predictions(sync: str) -> str:
    return f"predictions decided + persisted, {sync}"


FEEDBACK_BASELINE = "baseline: raw sqlite3 BEGIN IMMEDIATE read-modify-write"
FEEDBACK_STORE = "SQLiteStore + record_feedback (full read-modify-write)"
FEEDBACK_PERCENT = "SQLiteStore as % of the baseline"
FEEDBACK_ALTERNATING = "SQLiteStore + record_feedback, two stores alternating (every event re-reads its state)"
FEEDBACK_POOLED = "SQLiteStore + record_feedback, LoopConfig.pool_keys on (the parent key row updated too)"
FEEDBACK_CPU = "CPU time per event, µs (process time: less disturbed by other load)"
FEEDBACK_CPU_PERCENT = "SQLiteStore as % of the baseline, by CPU time"
FEEDBACK_FRAMES = "WAL pages written per event (checkpoints off)"
FIG_FEEDBACK_COST = "feedback event cost, NORMAL"
BATCH_BASELINE = f"baseline: raw sqlite3 executemany of the same rows, batches of {BATCH}"
BATCH_STORE = f"SQLiteStore.decide_many (decide_batch), batches of {BATCH}"
SINGLE_STORE = "SQLiteStore + decide, one transaction each"
BATCH_CPU = "SQLiteStore.decide_many: CPU time per prediction, µs (50,000/s needs ≤ 20 µs of wall clock)"

#: The issue's targets (2-core machine, WAL, synchronous=NORMAL).
TARGETS: dict[str, float] = {
    row_name(fig_feedback("NORMAL"), FEEDBACK_STORE): 4_000.0,
    row_name(fig_feedback("NORMAL"), FEEDBACK_PERCENT): 40.0,
    row_name(fig_predictions("NORMAL"), BATCH_STORE): 50_000.0,
}
OPERATORS = ("alice", "bob", "carol", "dave")
KINDS = (FeedbackKind.LIKE, FeedbackKind.LIKE, FeedbackKind.NEUTRAL, FeedbackKind.OVERRIDE)


def _predictions(n: int, prefix: str, confidence: float | None = None) -> list[Prediction]:
    rng = np.random.default_rng(7)
    conf = rng.uniform(0.3, 1.0, n) if confidence is None else np.full(n, confidence)
    return [
        Prediction(
            id=f"{prefix}{i}",
            fault_type=("disk_failure", "memory_ecc", "psu", "nic_flap")[i % 4],
            target=f"r{i % 40}-n{i}",
            action=("replace_disk", "investigate", "migrate_vms", "drain")[i % 4],
            confidence=float(conf[i]),
            channel=f"ops-{i % 8}",
            received_at=float(i),
        )
        for i in range(n)
    ]


def _rate(n: int, fn: Callable[[], None], stats: dict[str, float] | None = None) -> float:
    """Items per second of ``fn`` (``n`` items); ``stats["cpu_us"]``: this process's CPU time per item (µs), a
    figure a busy machine disturbs far less than the wall clock."""
    cpu = time.process_time()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    if stats is not None:
        stats["cpu_us"] = 1e6 * (time.process_time() - cpu) / n
    return n / elapsed


def _count_wal_frames(conn: sqlite3.Connection) -> Callable[[int], float]:
    """Switch ``conn``'s automatic checkpoints off and empty the WAL; the returned function, called after ``n``
    commits, gives the WAL frames (pages) written per commit and switches checkpoints back on."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")

    def per_commit(n: int) -> float:
        frames = int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        conn.execute("PRAGMA wal_autocheckpoint = 1000")
        return frames / n

    return per_commit


def _raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def raw_read_modify_write(
    path: Path, synchronous: str, n: int, *, stats: dict[str, float] | None = None, count_frames: bool = False
) -> float:
    """Baseline: BEGIN IMMEDIATE; insert feedback; read score; update score and arm; COMMIT — per event.

    ``stats`` gets ``cpu_us`` (CPU µs per event); with ``count_frames`` (checkpoints off during the run, so the
    rate is not comparable) also ``wal_frames``, the pages each commit writes to the WAL."""
    conn = _raw_connection(path, synchronous)
    conn.executescript(
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY, request_id TEXT UNIQUE, key TEXT, y REAL, at REAL);"
        "CREATE TABLE scores (key TEXT PRIMARY KEY, m REAL);"
        "CREATE TABLE arms (arm INTEGER PRIMARY KEY, alpha REAL, beta REAL);"
    )
    conn.executemany("INSERT INTO scores VALUES (?, 0.0)", [(f"k{i}",) for i in range(50)])
    conn.executemany("INSERT INTO arms VALUES (?, 1.0, 1.0)", [(i,) for i in range(5)])

    def work() -> None:
        for i in range(n):
            key, y = f"k{i % 50}", (i % 3) / 2
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO feedback (request_id, key, y, at) VALUES (?,?,?,?)", (f"r{i}", key, y, i))
            (m,) = conn.execute("SELECT m FROM scores WHERE key = ?", (key,)).fetchone()
            conn.execute("UPDATE scores SET m = ? WHERE key = ?", (m + 0.1 * (y - m), key))
            conn.execute("UPDATE arms SET alpha = alpha + ?, beta = beta + ? WHERE arm = ?", (1 - y, y, i % 5))
            conn.execute("COMMIT")

    try:
        frames = _count_wal_frames(conn) if count_frames else None
        rate = _rate(n, work, stats)
        if frames is not None and stats is not None:
            stats["wal_frames"] = frames(n)
        return rate
    finally:
        conn.close()


def raw_insert(path: Path, synchronous: str, n: int) -> float:
    """Baseline: one INSERT, one commit, per row."""
    conn = _raw_connection(path, synchronous)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, request_id TEXT, y REAL, at REAL)")

    def work() -> None:
        for i in range(n):
            conn.execute("INSERT INTO t (request_id, y, at) VALUES (?,?,?)", (f"r{i}", 0.5, float(i)))

    try:
        return _rate(n, work)
    finally:
        conn.close()


def store_feedback(
    path: Path,
    synchronous: Synchronous,
    n: int,
    *,
    writers: int = 1,
    stats: dict[str, float] | None = None,
    count_frames: bool = False,
    config: LoopConfig | None = None,
) -> float:
    """``record_feedback`` in ``store.transaction()``, one durable commit per event (full read-modify-write:
    request id, decision, trust, previous answer, m(k), bandit, trust, feedback row, audit line).

    ``writers`` > 1: that many stores (connections) on the file take the events in turn, so every event follows
    another connection's commit and none can reuse the reads of the connection's previous event (the cost
    when several threads or processes write). ``stats`` and ``count_frames``: as in :func:`raw_read_modify_write`
    (frames counted on the first store's connection, so with one writer). ``config``: the loop's (default
    :class:`LoopConfig`)."""
    config = config or LoopConfig()
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    others = [SQLiteStore(path, config, synchronous=synchronous, disruptive_actions=()) for _ in range(writers - 1)]
    with SQLiteStore(path, config, synchronous=synchronous, disruptive_actions=()) as store:
        n_pred = n // len(OPERATORS) + 1
        preds = _predictions(n_pred, "fb", confidence=0.99)
        relaxed = parse_policy(DEFAULT_POLICY_TEXT.replace("max_per_hour = 20", "max_per_hour = 1000000"))
        del policy
        store.decide_many(preds, policy=relaxed, rng=np.random.default_rng(1), now=0.0)
        events = [
            FeedbackEvent(
                prediction_id=f"fb{i // len(OPERATORS)}",
                operator=OPERATORS[i % len(OPERATORS)],
                kind=KINDS[i % len(KINDS)],
                at=float(i),
                request_id=f"req-{i}",
            )
            for i in range(n)
        ]

        turns = [store, *others]

        def work() -> None:
            for i, event in enumerate(events):
                with turns[i % len(turns)].transaction() as tx:
                    record_feedback(tx, event, config=config)

        try:
            frames = None
            if count_frames:
                with store.transaction() as tx:  # the store's connection on this thread (no transaction open
                    conn = tx.connection  # once the block ends, which a checkpoint needs)
                frames = _count_wal_frames(conn)
            rate = _rate(n, work, stats)
            if frames is not None and stats is not None:
                stats["wal_frames"] = frames(n)
            return rate
        finally:
            for other in others:
                other.close()


def store_decide_single(path: Path, synchronous: Synchronous, n: int) -> float:
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    rng = np.random.default_rng(2)
    with SQLiteStore(path, LoopConfig(), synchronous=synchronous) as store:
        preds = _predictions(n, "s")

        def work() -> None:
            for p in preds:
                with store.transaction() as tx:
                    decide(tx, p, config=store.config, policy=policy, rng=rng, now=p.received_at)

        return _rate(n, work)


def store_decide_batched(
    path: Path, synchronous: Synchronous, n: int, batch: int = BATCH, *, stats: dict[str, float] | None = None
) -> float:
    """``decide_many`` in batches of ``batch``, one commit each; predictions per second. ``stats["cpu_us"]``: CPU
    time per prediction."""
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    rng = np.random.default_rng(3)
    with SQLiteStore(path, LoopConfig(), synchronous=synchronous) as store:
        preds = _predictions(n, "b")

        def work() -> None:
            for start in range(0, n, batch):
                chunk = preds[start : start + batch]
                store.decide_many(chunk, policy=policy, rng=rng, now=chunk[-1].received_at)

        return _rate(n, work, stats)


AT_SCALE_PREFILL = 300_000  # decisions already in the file for :func:`batched_at_scale`


def batched_at_scale(folder: Path, prefill: int = AT_SCALE_PREFILL, n: int = N_BATCHED) -> list[Row]:
    """``decide_many`` in batches of :data:`BATCH` into a file that already holds ``prefill`` decisions, next to
    the same into an empty file (taken in turns, best of :data:`REPS`): what a long-running service's history does
    to the batch figure (every row of ``decisions`` enters two indexes, by id and by fingerprint)."""
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    full = folder / "prefilled.db"
    with SQLiteStore(full, LoopConfig()) as store:
        old = _predictions(prefill, "old")
        for start in range(0, prefill, 5 * BATCH):
            chunk = old[start : start + 5 * BATCH]
            store.decide_many(chunk, policy=policy, rng=np.random.default_rng(0), now=chunk[-1].received_at)
    later = float(prefill + 1)  # the new predictions arrive after the history, with targets of their own
    new = [
        Prediction(
            id=p.id,
            fault_type=p.fault_type,
            target=f"{p.target}-new",
            action=p.action,
            confidence=p.confidence,
            channel=p.channel,
            received_at=later + p.received_at,
        )
        for p in _predictions(n, "new")
    ]

    def into(path: Path) -> float:
        rng = np.random.default_rng(3)
        with SQLiteStore(path, LoopConfig()) as store:

            def work() -> None:
                for start in range(0, n, BATCH):
                    chunk = new[start : start + BATCH]
                    store.decide_many(chunk, policy=policy, rng=rng, now=chunk[-1].received_at)

            return _rate(n, work)

    empty: list[float] = []
    prefilled: list[float] = []
    for rep in range(REPS):
        empty.append(into(folder / f"empty-{rep}.db"))
        copy = folder / f"prefilled-{rep}.db"
        copy.write_bytes(full.read_bytes())
        prefilled.append(into(copy))
    fig = fig_predictions("NORMAL")
    return [
        (row_name(fig, f"{BATCH_STORE}, into an empty file"), max(empty), "predictions/s"),
        (row_name(fig, f"{BATCH_STORE}, into a file of {prefill:,} decisions"), max(prefilled), "predictions/s"),
    ]


# (table, the column naming the prediction a row belongs to), in the order decide_many writes them
_PERSISTED_TABLES = (
    ("decisions", "prediction_id"),
    ("recommendations", "prediction_id"),
    ("outbox", "prediction_id"),
    ("audit_events", "subject"),
)


def raw_persist_batched(source: Path, path: Path, synchronous: str, batch: int = BATCH) -> float:
    """Baseline for batched decisions: the rows a ``decide_many`` run wrote to ``source`` (one ``decisions`` row
    per prediction — also its audit line —, recommendations and outbox messages of surfaced ones, ``audit_events``
    lines of duplicates), inserted again into an empty database with the same schema
    by plain ``executemany``, one transaction per ``batch`` predictions: the cost of persisting alone, without
    deciding. Returns predictions per second."""
    with SQLiteStore(path, LoopConfig(), synchronous=synchronous):  # the schema (migrations), then raw sqlite3
        pass
    src = sqlite3.connect(str(source))
    ids = [r[0] for r in src.execute("SELECT prediction_id FROM decisions ORDER BY seq")]
    chunk_of = {pid: i // batch for i, pid in enumerate(ids)}
    n_chunks = max(1, -(-len(ids) // batch))
    # per chunk of ``batch`` predictions: (insert statement, that chunk's rows) per table, in the order written
    chunks: list[list[tuple[str, list[tuple[object, ...]]]]] = [[] for _ in range(n_chunks)]
    for table, link in _PERSISTED_TABLES:
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
        parts: list[list[tuple[object, ...]]] = [[] for _ in range(n_chunks)]
        at = cols.index(link)
        current = 0
        for row in src.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid"):
            current = chunk_of.get(row[at], current)  # a duplicate's audit line goes with its neighbours
            parts[current].append(row)
        for chunk, part in zip(chunks, parts, strict=True):
            chunk.append((sql, part))
    src.close()
    n = len(ids)
    conn = _raw_connection(path, synchronous)

    def work() -> None:
        for chunk in chunks:
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in chunk:
                conn.executemany(sql, rows)
            conn.execute("COMMIT")

    try:
        return _rate(n, work)
    finally:
        conn.close()


def _persist_again(path: Path, source: Path, synchronous: str, *, stats: dict[str, float]) -> float:
    """:func:`raw_persist_batched` of ``source`` into ``path`` (the shape :func:`_at` calls)."""
    return raw_persist_batched(source, path, synchronous)


def inmemory_decide(n: int) -> float:
    """Reference: the same decide loop against npo's InMemoryStore (no I/O): the ceiling for any store."""
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    rng = np.random.default_rng(3)
    store = InMemoryStore(LoopConfig())
    preds = _predictions(n, "m")

    def work() -> None:
        with store.transaction() as tx:
            for p in preds:
                decide(tx, p, config=store.config, policy=policy, rng=rng, now=p.received_at)

    return _rate(n, work)


REPS = 3  # the headline figures (feedback and batches, store and baseline) are the best of REPS runs


Measure = Callable[..., tuple[float, dict[str, float]]]  # called as measure(rep=i)


def _at(fn: Callable[..., float], folder: Path, stem: str, *args: object, rep: int) -> tuple[float, dict[str, float]]:
    """``fn(folder / "<stem>-<rep>.db", *args, stats=…)`` → (its rate, its stats): one run on a fresh file."""
    stats: dict[str, float] = {}
    return fn(folder / f"{stem}-{rep}.db", *args, stats=stats), stats


def _best(*measures: Measure) -> list[tuple[float, dict[str, float]]]:
    """Each measure run REPS times, the measures taking turns (a disturbance of the machine lands on any of
    them alike); per measure, the highest rate and the lowest value of each stat."""
    runs: list[list[tuple[float, dict[str, float]]]] = [[] for _ in measures]
    for rep in range(REPS):
        for measure, got in zip(measures, runs, strict=True):
            got.append(measure(rep=rep))
    return [(max(r for r, _ in got), {k: min(st[k] for _, st in got) for k in got[0][1]}) for got in runs]


def run(quick: bool = False) -> list[Row]:
    """Measure everything (the headline figures best of :data:`REPS`); returns (name, value, unit) rows. Prints
    nothing. ``quick``: smaller sizes."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="npo-bench-") as tmp:
        d = Path(tmp)
        for sync in ("NORMAL", "FULL"):
            s = sync.lower()
            third = 1 if sync == "NORMAL" else 3
            n_fb = sizes.feedback // third
            (raw, raw_stats), (ours, our_stats) = _best(
                functools.partial(_at, raw_read_modify_write, d, f"raw-rmw-{s}", sync, n_fb),
                functools.partial(_at, store_feedback, d, f"store-fb-{s}", sync, n_fb),
            )
            alternating = store_feedback(d / f"store-fb2-{s}.db", sync, n_fb, writers=2)
            fb = fig_feedback(sync)
            rows += [
                (row_name(fb, FEEDBACK_BASELINE), raw, "events/s"),
                (row_name(fb, FEEDBACK_STORE), ours, "events/s"),
                (row_name(fb, FEEDBACK_PERCENT), 100.0 * ours / raw, "%"),
                (row_name(fb, FEEDBACK_ALTERNATING), alternating, "events/s"),
                (row_name(fb, f"baseline: {FEEDBACK_CPU}"), raw_stats["cpu_us"], "µs"),
                (row_name(fb, f"SQLiteStore: {FEEDBACK_CPU}"), our_stats["cpu_us"], "µs"),
                (row_name(fb, FEEDBACK_CPU_PERCENT), 100.0 * raw_stats["cpu_us"] / our_stats["cpu_us"], "%"),
                (
                    row_name(fb, FEEDBACK_POOLED),
                    store_feedback(d / f"store-fbp-{s}.db", sync, n_fb, config=LoopConfig(pool_keys=True)),
                    "events/s",
                ),
                (
                    f"raw sqlite3 INSERT, commit per row, {sync}",
                    raw_insert(d / f"raw-ins-{s}.db", sync, n_fb),
                    "rows/s",
                ),
            ]
            [(batched, batch_stats)] = _best(
                functools.partial(_at, store_decide_batched, d, f"store-db-{s}", sync, sizes.batched)
            )
            batched_db = d / f"store-db-{s}-0.db"  # the rows the baseline persists again
            [(persisted, _)] = _best(functools.partial(_at, _persist_again, d, f"raw-db-{s}", batched_db, sync))
            pr = fig_predictions(sync)
            rows += [
                (row_name(pr, BATCH_BASELINE), persisted, "predictions/s"),
                (row_name(pr, BATCH_STORE), batched, "predictions/s"),
                (row_name(pr, BATCH_CPU), batch_stats["cpu_us"], "µs"),
                (
                    row_name(pr, SINGLE_STORE),
                    store_decide_single(d / f"store-ds-{s}.db", sync, sizes.single // third),
                    "predictions/s",
                ),
            ]
        raw_stats, our_stats = {}, {}
        n_frames = sizes.feedback // 3
        raw_read_modify_write(d / "raw-frames.db", "NORMAL", n_frames, stats=raw_stats, count_frames=True)
        store_feedback(d / "store-frames.db", "NORMAL", n_frames, stats=our_stats, count_frames=True)
        rows += [
            (row_name(FIG_FEEDBACK_COST, f"baseline: {FEEDBACK_FRAMES}"), raw_stats["wal_frames"], "pages"),
            (row_name(FIG_FEEDBACK_COST, f"SQLiteStore: {FEEDBACK_FRAMES}"), our_stats["wal_frames"], "pages"),
        ]
        rows.append(
            (
                "predictions decided, InMemoryStore + decide in one transaction (no I/O, reference)",
                inmemory_decide(sizes.batched),
                "predictions/s",
            )
        )
    return rows


if __name__ == "__main__":
    import sys

    if "--at-scale" in sys.argv[1:]:  # not part of ``python -m bench``: filling the file takes a while
        with tempfile.TemporaryDirectory(prefix="npo-bench-") as tmp:
            rows = batched_at_scale(Path(tmp))
    else:
        rows = run(quick="--quick" in sys.argv[1:])
    for name, value, unit in rows:
        print(f"{name:<100} {value:>12,.1f} {unit}")
