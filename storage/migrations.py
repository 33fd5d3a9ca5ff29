"""The schema, as an ordered list of sqlite-utils migrations (set ``"npo"``).

Migrations only ever get appended: a database made by any earlier version is upgraded by applying the missing
ones in order (:func:`migrate`). The schema version is the number of migrations applied.

1. ``m001_core``: every table of the loop (predictions, decisions, recommendations, feedback, outcomes, key
   alignment, bandit arms, operator trust, monitor state and runs, retraining proposals, model versions,
   outbox, job claims, and the append-only audit log with its triggers).
2. ``m002_delivery_and_indexes``: outbox delivery columns (``message_ts``, ``sent_at``), the
   ``processed_requests`` table (idempotency of Slack events and button clicks that are not feedback), and the
   indexes the hot path and the policy context need, including the one that makes a person's effective
   answer per recommendation unique.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from storage.errors import StorageBusy

MIGRATIONS = Migrations("npo")

_M001 = """
CREATE TABLE predictions (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    fault_type TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    confidence REAL NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    time_to_fault_s REAL CHECK (time_to_fault_s IS NULL OR time_to_fault_s >= 0),
    labels TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels)),
    channel TEXT,
    received_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    cluster TEXT NOT NULL
);
CREATE TABLE decisions (
    prediction_id TEXT PRIMARY KEY NOT NULL REFERENCES predictions(id),
    key TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('surface', 'suppress', 'block', 'digest')),
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    confidence REAL NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    misalignment REAL NOT NULL CHECK (misalignment BETWEEN 0 AND 1),
    score REAL NOT NULL CHECK (score BETWEEN 0 AND 1),
    threshold REAL CHECK (threshold IS NULL OR threshold BETWEEN 0 AND 1),
    arm INTEGER CHECK (arm IS NULL OR arm >= 0),
    decided_at REAL NOT NULL,
    channel TEXT NOT NULL
);
CREATE TABLE recommendations (
    prediction_id TEXT PRIMARY KEY NOT NULL REFERENCES decisions(prediction_id),
    verdict TEXT NOT NULL CHECK (verdict IN ('surface', 'digest')),
    channel TEXT NOT NULL,
    message_ts TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'posted', 'failed', 'resolved')),
    key TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    cluster TEXT NOT NULL,
    surfaced_at REAL NOT NULL,
    resolved_at REAL
);
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE CHECK (length(request_id) BETWEEN 1 AND 200),
    prediction_id TEXT NOT NULL REFERENCES decisions(prediction_id),
    operator TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('override', 'like', 'neutral', 'skipped')),
    at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    key TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL DEFAULT '',
    y REAL NOT NULL CHECK (y BETWEEN 0 AND 1),
    weight REAL NOT NULL CHECK (weight >= 0),
    key_n_before REAL NOT NULL CHECK (key_n_before >= 0),
    arm INTEGER CHECK (arm IS NULL OR arm >= 0),
    reward REAL NOT NULL CHECK (reward BETWEEN 0 AND 1),
    replaces TEXT,
    effective INTEGER NOT NULL DEFAULT 1 CHECK (effective IN (0, 1))
);
CREATE TABLE outcomes (
    prediction_id TEXT PRIMARY KEY NOT NULL REFERENCES predictions(id),
    real_fault INTEGER NOT NULL CHECK (real_fault IN (0, 1)),
    at REAL NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE key_alignment (
    key TEXT PRIMARY KEY NOT NULL,
    m REAL NOT NULL CHECK (m BETWEEN 0 AND 1),
    n INTEGER NOT NULL CHECK (n >= 0),
    weight_sum REAL NOT NULL CHECK (weight_sum >= 0),
    updated_at REAL NOT NULL
);
CREATE TABLE bandit_arms (
    arm INTEGER PRIMARY KEY NOT NULL CHECK (arm >= 0),
    threshold REAL NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    alpha REAL NOT NULL CHECK (alpha > 0),
    beta REAL NOT NULL CHECK (beta > 0),
    pulls INTEGER NOT NULL CHECK (pulls >= 0)
);
CREATE TABLE operator_trust (
    operator TEXT PRIMARY KEY NOT NULL,
    agree REAL NOT NULL CHECK (agree >= 0),
    disagree REAL NOT NULL CHECK (disagree >= 0),
    n_outcome INTEGER NOT NULL CHECK (n_outcome >= 0),
    n_peer INTEGER NOT NULL CHECK (n_peer >= 0)
);
CREATE TABLE monitor_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_trigger_at REAL,
    open_proposal INTEGER NOT NULL CHECK (open_proposal IN (0, 1)),
    matches INTEGER NOT NULL CHECK (matches >= 0),
    decisions INTEGER NOT NULL CHECK (decisions >= matches),
    ph_n INTEGER NOT NULL CHECK (ph_n >= 0),
    ph_mean REAL NOT NULL,
    ph_cumulative REAL NOT NULL,
    ph_minimum REAL NOT NULL
);
CREATE TABLE monitor_runs (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    triggered INTEGER NOT NULL CHECK (triggered IN (0, 1)),
    reason TEXT NOT NULL,
    window_loss REAL,
    n_in_window INTEGER NOT NULL CHECK (n_in_window >= 0),
    drift_alarm INTEGER NOT NULL CHECK (drift_alarm IN (0, 1))
);
CREATE TABLE retraining_proposals (
    id INTEGER PRIMARY KEY,
    opened_at REAL NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'approved', 'dismissed')),
    resolved_at REAL,
    resolved_by TEXT,
    model_version INTEGER REFERENCES model_versions(version)
);
CREATE TABLE model_versions (
    version INTEGER PRIMARY KEY NOT NULL CHECK (version >= 1),
    weights TEXT NOT NULL CHECK (json_valid(weights)),
    bias REAL NOT NULL,
    trained_at REAL NOT NULL,
    n_train INTEGER NOT NULL CHECK (n_train >= 0),
    metrics TEXT NOT NULL CHECK (json_valid(metrics)),
    promoted INTEGER NOT NULL CHECK (promoted IN (0, 1)),
    recorded_at REAL NOT NULL
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    prediction_id TEXT REFERENCES predictions(id),
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL CHECK (json_valid(payload)),
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE job_claims (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    period TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    UNIQUE (job, period)
);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL CHECK (json_valid(detail))
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;
"""

_M002 = """
ALTER TABLE outbox ADD COLUMN message_ts TEXT;
ALTER TABLE outbox ADD COLUMN sent_at REAL;
CREATE TABLE processed_requests (
    request_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE UNIQUE INDEX feedback_one_effective_answer ON feedback (prediction_id, operator) WHERE effective = 1;
CREATE INDEX feedback_override_by_key ON feedback (key, at) WHERE kind = 'override' AND effective = 1;
CREATE INDEX feedback_override_by_target ON feedback (target, at) WHERE kind = 'override' AND effective = 1;
CREATE INDEX predictions_by_fingerprint ON predictions (fingerprint);
CREATE INDEX decisions_surfaced_by_channel ON decisions (channel, decided_at) WHERE verdict = 'surface';
CREATE INDEX recommendations_open_by_cluster ON recommendations (cluster, action) WHERE resolved_at IS NULL;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
"""


@MIGRATIONS(name="m001_core")
def m001_core(db: Database) -> None:
    db.executescript(_M001)


@MIGRATIONS(name="m002_delivery_and_indexes")
def m002_delivery_and_indexes(db: Database) -> None:
    db.executescript(_M002)


LATEST_SCHEMA_VERSION = len(MIGRATIONS.pending(Database(memory=True, execute_plugins=False)))


def schema_version(db: Database) -> int:
    """How many of the ``npo`` migrations have been applied to ``db`` (0 for an empty file). Read-only."""
    return len(MIGRATIONS.applied(db))


def migrate(db: Database, *, stop_before: str | None = None) -> int:
    """Apply every pending migration (up to, not including, ``stop_before``) and return the schema version.

    Runs in one ``BEGIN IMMEDIATE`` transaction (each migration in its own savepoint), so two processes starting
    at once apply each migration once; a failing migration leaves the database as it was. ``db`` must not be
    inside a transaction.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StorageBusy("_sqlite_migrations", "npo", f"could not lock the database to migrate: {exc}") from exc
        raise
    try:
        MIGRATIONS.apply(db, stop_before=stop_before)
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return schema_version(db)
