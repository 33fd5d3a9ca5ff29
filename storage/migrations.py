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
3. ``m003_append_only_logs``: fewer rows and pages per decision and per click. ``predictions`` and
   ``decisions`` become one append-only ``decisions`` table (``predictions`` is a view over it); ``feedback``
   becomes append-only (its mutable ``effective`` flag moves to the small ``effective_answers`` table, kept by a
   trigger); ``audit_log`` becomes a view: the ``audit_events`` table (duplicates, refusals, alerts, outcomes,
   config changes…) unioned with the decision and feedback logs, which carry their own audit details; the
   ``outbox`` and ``outcomes`` refer to ``decisions``.
4. ``m004_mutes_and_job_state``: ``policy_mutes`` (scenario keys muted with ``/npo mute``, with expiry) and
   ``job_state`` (what the scheduled jobs keep between runs).
5. ``m005_feedback_rate_limits``: ``feedback_rate_limits`` (one token bucket per person: the per-user limit on
   feedback clicks, shared by every process on the file) and an index over the ``feedback_rate_limited`` audit
   lines (the weekly report counts them).
6. ``m006_learning_state``: the keys' m(k), the bandit's arms and the operators' trust in one small table,
   ``learning_state`` (``key_alignment``, ``bandit_arms`` and ``operator_trust`` become views of it).
7. ``m007_delivery_lookups``: indexes for the outbox and recommendation look-ups that scanned whole tables.
8. ``m008_cheap_checks``: CHECKs of the form ``x IN (three or more constants)`` rewritten as ORs of equalities.
9. ``m009_answers_in_feedback``: the ``effective_answers`` table and the global request-id index replaced by one
   index of ``feedback`` (prediction, operator, request id); ``effective_answers`` becomes a view.
10. ``m010_actions_without_case``: ``recommendations_open_by_cluster`` rebuilt on ``(cluster, lower(action))``
    (the policy compares action names without case).
11. ``m011_outcome_arrival``: ``outcomes.recorded_at``, when NPO received the outcome.
12. ``m012_proposal_expiry``: a retraining proposal nobody answers expires: ``retraining_proposals`` gets the state
    ``expired`` and the column ``expires_at`` (its deadline, set when the monitor opens it).
13. ``m013_audit_null_threshold``: the ``audit_log`` view (and its triggers) created again so a decision without a
    threshold (a blocked one) shows ``"threshold": null``, not ``0.0``.
14. ``m014_job_claims_done``: ``job_claims.done_at``, when the claimed run finished (NULL while it runs, or when its
    process died mid-run: such a claim can be taken over once stale, so the slot is not lost).
15. ``m015_prediction_aliases``: ``prediction_aliases``, the id of each prediction found a duplicate by fingerprint
    (not stored) → the prediction it duplicated, so the same id sent again later, or its outcome, finds that one.
16. ``m016_recommendation_due``: ``recommendations.due_at``, the predicted fault time, after which (plus the
    policy's ``stale_after_seconds``) an open recommendation stops counting toward the blast radius; the index of
    open recommendations by cluster and action is rebuilt with it.
17. ``m017_outcome_agreement``: ``outcome_agreement``, each person's effective answers with a known outcome and their
    summed agreement with it, kept by triggers on ``feedback`` and ``outcomes`` (the meta-monitor read it by
    scanning every answer ever given, on each run).
18. ``m018_feedback_peer_credited``: ``feedback.peer_credited``, whether an answer holds peer credit (carried to
    the answer that replaces it), so changing it moves only the credit it earned.
19. ``m019_prediction_aliases_by_prediction``: an index of ``prediction_aliases`` by the prediction merged into, so a
    merged recommendation closes only once the last of its alerts has resolved.
20. ``m020_key_and_recent_lookups``: indexes of ``decisions`` by key and verdict and of ``recommendations`` by
    when they were surfaced, so ``/npo why``, ``/npo mute``, ``/npo status`` and the App Home read no whole table.
21. ``m021_dashboard_counts``: a partial index of the failed outbox messages and ``recommendations_open_count``, the
    number of open recommendations kept by triggers, so ``/npo status``, the App Home and a metrics scrape count
    neither the outbox nor the recommendations row by row.
22. ``m022_unanswered_recommendations``: ``recommendations.answered_at`` (set by a trigger on ``feedback``) and a
    partial index of the posted, open recommendations nobody answered, so the skip sweeper reads only those instead
    of every open recommendation.

``storage/README.md`` says why each one was made, with the figures.
"""

from __future__ import annotations

import re
import time

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from storage.errors import StorageBusy, StorageError

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


_M003_TABLES = """
CREATE TABLE decisions_new (
    seq INTEGER PRIMARY KEY,
    prediction_id TEXT NOT NULL UNIQUE CHECK (length(prediction_id) BETWEEN 1 AND 200),
    fault_type TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    confidence REAL NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    time_to_fault_s REAL CHECK (time_to_fault_s IS NULL OR time_to_fault_s >= 0),
    labels TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels)),
    prediction_channel TEXT,
    received_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    cluster TEXT NOT NULL,
    key TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('surface', 'suppress', 'block', 'digest')),
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    decision_confidence REAL NOT NULL CHECK (decision_confidence BETWEEN 0 AND 1),
    misalignment REAL NOT NULL CHECK (misalignment BETWEEN 0 AND 1),
    score REAL NOT NULL CHECK (score BETWEEN 0 AND 1),
    threshold REAL CHECK (threshold IS NULL OR threshold BETWEEN 0 AND 1),
    arm INTEGER CHECK (arm IS NULL OR arm >= 0),
    decided_at REAL NOT NULL,
    channel TEXT NOT NULL,
    audited INTEGER NOT NULL DEFAULT 1 CHECK (audited IN (0, 1))
);
CREATE TABLE feedback_new (
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
    audit_weight REAL CHECK (audit_weight IS NULL OR audit_weight >= 0),
    audit_m REAL CHECK (audit_m IS NULL OR audit_m BETWEEN 0 AND 1),
    CHECK ((audit_weight IS NULL) = (audit_m IS NULL))
);
CREATE TABLE effective_answers (
    prediction_id TEXT NOT NULL,
    operator TEXT NOT NULL,
    feedback_id INTEGER NOT NULL REFERENCES feedback(id),
    PRIMARY KEY (prediction_id, operator)
) WITHOUT ROWID;
CREATE TABLE outcomes_new (
    prediction_id TEXT PRIMARY KEY NOT NULL REFERENCES decisions(prediction_id),
    real_fault INTEGER NOT NULL CHECK (real_fault IN (0, 1)),
    at REAL NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE outbox_new (
    id INTEGER PRIMARY KEY,
    prediction_id TEXT REFERENCES decisions(prediction_id),
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL CHECK (json_valid(payload)),
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    message_ts TEXT,
    sent_at REAL
);
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL CHECK (json_valid(detail))
);
INSERT INTO decisions_new (prediction_id, fault_type, target, action, confidence, severity, time_to_fault_s, labels,
    prediction_channel, received_at, fingerprint, cluster, key, verdict, rule, reason, decision_confidence,
    misalignment, score, threshold, arm, decided_at, channel, audited)
SELECT p.id, p.fault_type, p.target, p.action, p.confidence, p.severity, p.time_to_fault_s, p.labels, p.channel,
    p.received_at, p.fingerprint, p.cluster, d.key, d.verdict, d.rule, d.reason, d.confidence, d.misalignment,
    d.score, d.threshold, d.arm, d.decided_at, d.channel, 0
FROM predictions p JOIN decisions d ON d.prediction_id = p.id ORDER BY p.rowid;
INSERT INTO feedback_new (id, request_id, prediction_id, operator, kind, at, reason, key, target, channel, y, weight,
    key_n_before, arm, reward, replaces)
SELECT id, request_id, prediction_id, operator, kind, at, reason, key, target, channel, y, weight, key_n_before, arm,
    reward, replaces FROM feedback ORDER BY id;
INSERT INTO effective_answers (prediction_id, operator, feedback_id)
SELECT prediction_id, operator, id FROM feedback WHERE effective = 1;
INSERT INTO outcomes_new SELECT prediction_id, real_fault, at, source FROM outcomes;
INSERT INTO outbox_new SELECT id, prediction_id, channel, kind, payload, state, attempts, next_attempt_at, last_error,
    created_at, message_ts, sent_at FROM outbox;
INSERT INTO audit_events SELECT id, at, kind, subject, detail FROM audit_log;
DROP TABLE audit_log;
DROP TABLE feedback;
DROP TABLE outcomes;
DROP TABLE outbox;
DROP TABLE decisions;
DROP TABLE predictions;
ALTER TABLE decisions_new RENAME TO decisions;
ALTER TABLE feedback_new RENAME TO feedback;
ALTER TABLE outcomes_new RENAME TO outcomes;
ALTER TABLE outbox_new RENAME TO outbox;
"""

# The shared audit sequence: audit_events.id, decisions.seq and feedback.id are allocated from one counter (the
# largest of the three, plus one), so the audit_log view orders every line by insertion.
NEXT_AUDIT_ID = (
    "SELECT MAX(COALESCE((SELECT MAX(id) FROM audit_events), 0), COALESCE((SELECT MAX(seq) FROM decisions), 0), "
    "COALESCE((SELECT MAX(id) FROM feedback), 0)) + 1"
)


def _audit_log_view(threshold: str) -> str:
    """The ``audit_log`` view, the decision line's threshold printed by the SQL expression ``threshold``.

    Reals are printed with 17 significant digits (``audit_entries()`` returns exactly the floats the loop logged).
    ``score``, ``y``, ``audit_weight`` and ``audit_m`` are never NULL in the rows shown (NOT NULL columns, and a
    feedback row is shown only when ``audit_m`` is set, which a CHECK ties to ``audit_weight``); ``threshold`` is
    NULL for a decision no arm was drawn for (a blocked one), which ``printf`` would print as ``0.0``."""
    return f"""
CREATE VIEW audit_log (id, at, kind, subject, detail) AS
SELECT id, at, kind, subject, detail FROM audit_events
UNION ALL
SELECT seq, decided_at, 'decision', prediction_id,
    '{{"verdict":' || json_quote(verdict) || ',"rule":' || json_quote(rule) || ',"reason":' || json_quote(reason)
    || ',"score":' || printf('%!.17g', score) || ',"threshold":'
    || {threshold} || '}}'
FROM decisions WHERE audited = 1
UNION ALL
SELECT id, at, 'feedback', prediction_id,
    '{{"operator":' || json_quote(operator) || ',"kind":' || json_quote(kind) || ',"y":' || printf('%!.17g', y)
    || ',"weight":' || printf('%!.17g', audit_weight) || ',"status":'
    || CASE WHEN replaces IS NULL THEN '"recorded"' ELSE '"replaced"' END || ',"m":' || printf('%!.17g', audit_m)
    || '}}'
FROM feedback WHERE audit_m IS NOT NULL;"""


# The audit_log view's INSTEAD OF triggers: an INSERT goes to audit_events, UPDATE and DELETE are refused. Dropping
# the view drops them, so a migration that replaces the view creates them again from these (m003, m013).
_AUDIT_LOG_INSERT = f"""
CREATE TRIGGER audit_log_insert INSTEAD OF INSERT ON audit_log
BEGIN
    INSERT INTO audit_events (id, at, kind, subject, detail)
    VALUES (({NEXT_AUDIT_ID}), NEW.at, NEW.kind, NEW.subject, NEW.detail);
END;
"""
_AUDIT_LOG_APPEND_ONLY = """
CREATE TRIGGER audit_log_no_update INSTEAD OF UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete INSTEAD OF DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;
"""

# m003's text, kept as it was: it printed a NULL threshold as 0.0 (printf('%!.17g', NULL) is '0.0', not NULL);
# m013 replaces the view.
_M003_THRESHOLD = "COALESCE(printf('%!.17g', threshold), 'null')"

_M003_OBJECTS = (
    """
CREATE INDEX decisions_by_fingerprint ON decisions (fingerprint);
CREATE INDEX decisions_surfaced_by_channel ON decisions (channel, decided_at) WHERE verdict = 'surface';
CREATE INDEX feedback_override_by_key ON feedback (key, at) WHERE kind = 'override';
CREATE INDEX feedback_override_by_target ON feedback (target, at) WHERE kind = 'override';
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE VIEW predictions (id, fault_type, target, action, confidence, severity, time_to_fault_s, labels, channel,
    received_at, fingerprint, cluster) AS
SELECT prediction_id, fault_type, target, action, confidence, severity, time_to_fault_s, labels, prediction_channel,
    received_at, fingerprint, cluster FROM decisions;"""
    + _audit_log_view(_M003_THRESHOLD)
    + _AUDIT_LOG_INSERT
)

_APPEND_ONLY = """
CREATE TRIGGER {name}_no_update BEFORE UPDATE ON {table}
BEGIN
    SELECT RAISE(ABORT, '{label} is append-only: UPDATE refused');
END;
CREATE TRIGGER {name}_no_delete BEFORE DELETE ON {table}
BEGIN
    SELECT RAISE(ABORT, '{label} is append-only: DELETE refused');
END;
"""

_M003_TRIGGERS = (
    _APPEND_ONLY.format(name="audit_events", table="audit_events", label="audit_log")
    + _APPEND_ONLY.format(name="decisions", table="decisions", label="decisions")
    + _APPEND_ONLY.format(name="feedback", table="feedback", label="feedback")
    + _AUDIT_LOG_APPEND_ONLY
    + """CREATE TRIGGER feedback_effective AFTER INSERT ON feedback
BEGIN
    DELETE FROM effective_answers WHERE NEW.replaces IS NOT NULL AND prediction_id = NEW.prediction_id
        AND operator = (SELECT operator FROM feedback WHERE request_id = NEW.replaces)
        AND feedback_id = (SELECT id FROM feedback WHERE request_id = NEW.replaces);
    INSERT INTO effective_answers (prediction_id, operator, feedback_id)
    VALUES (NEW.prediction_id, NEW.operator, NEW.id);
END;
"""
)


@MIGRATIONS(name="m001_core")
def m001_core(db: Database) -> None:
    db.executescript(_M001)


@MIGRATIONS(name="m002_delivery_and_indexes")
def m002_delivery_and_indexes(db: Database) -> None:
    db.executescript(_M002)


@MIGRATIONS(name="m003_append_only_logs")
def m003_append_only_logs(db: Database) -> None:
    # The table rebuilds run with foreign keys off (see migrate()); their integrity is checked before commit.
    db.executescript(_M003_TABLES + _M003_OBJECTS + _M003_TRIGGERS)


_M004 = """
CREATE TABLE policy_mutes (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 500),
    since REAL NOT NULL,
    until REAL NOT NULL CHECK (until > since),
    created_by TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    lifted_at REAL,
    lifted_by TEXT
);
CREATE INDEX policy_mutes_until ON policy_mutes (until);
CREATE TABLE job_state (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL CHECK (json_valid(value)),
    updated_at REAL NOT NULL
);
"""


@MIGRATIONS(name="m004_mutes_and_job_state")
def m004_mutes_and_job_state(db: Database) -> None:
    """``policy_mutes`` (``/npo mute``: runtime Safety Policy rules with an expiry) and ``job_state`` (small
    JSON values the scheduled jobs keep between runs, e.g. the meta-monitor's feedback cursor)."""
    db.executescript(_M004)


_M005 = """
CREATE TABLE feedback_rate_limits (
    operator TEXT PRIMARY KEY NOT NULL CHECK (length(operator) BETWEEN 1 AND 200),
    tokens REAL NOT NULL CHECK (tokens >= 0),
    updated_at REAL NOT NULL
);
CREATE INDEX audit_events_rate_limited ON audit_events (at) WHERE kind = 'feedback_rate_limited';
"""


@MIGRATIONS(name="m005_feedback_rate_limits")
def m005_feedback_rate_limits(db: Database) -> None:
    """``feedback_rate_limits``: per person, the tokens left in their click bucket and when it was last updated
    (``storage/ratelimit.py``); and a partial index over the ``feedback_rate_limited`` audit lines."""
    db.executescript(_M005)


# m006: the per-event learning state in one small table, so that a feedback event dirties one page of it
# instead of three (see storage/README.md, "pages per commit"). The old tables become views of it.
_M006 = """
CREATE TABLE learning_state (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('arm', 'key', 'operator')),
    name TEXT NOT NULL,
    m REAL CHECK (m BETWEEN 0 AND 1),
    n INTEGER CHECK (n >= 0),
    weight_sum REAL CHECK (weight_sum >= 0),
    updated_at REAL,
    threshold REAL CHECK (threshold BETWEEN 0 AND 1),
    alpha REAL CHECK (alpha > 0),
    beta REAL CHECK (beta > 0),
    pulls INTEGER CHECK (pulls >= 0),
    agree REAL CHECK (agree >= 0),
    disagree REAL CHECK (disagree >= 0),
    n_outcome INTEGER CHECK (n_outcome >= 0),
    n_peer INTEGER CHECK (n_peer >= 0),
    UNIQUE (kind, name),
    -- One check per kind, each naming only its kind's columns: SQLite evaluates a CHECK on UPDATE only when it
    -- names an updated column, so an update of a key row does not pay for the arm and operator checks.
    CHECK (kind <> 'arm' OR (name = CAST(CAST(name AS INTEGER) AS TEXT) AND CAST(name AS INTEGER) >= 0
        AND threshold IS NOT NULL AND alpha IS NOT NULL AND beta IS NOT NULL AND pulls IS NOT NULL)),
    CHECK (kind <> 'key' OR (m IS NOT NULL AND n IS NOT NULL AND weight_sum IS NOT NULL AND updated_at IS NOT NULL)),
    CHECK (kind <> 'operator' OR (agree IS NOT NULL AND disagree IS NOT NULL AND n_outcome IS NOT NULL
        AND n_peer IS NOT NULL))
);
INSERT INTO learning_state (kind, name, threshold, alpha, beta, pulls)
    SELECT 'arm', CAST(arm AS TEXT), threshold, alpha, beta, pulls FROM bandit_arms;
INSERT INTO learning_state (kind, name, m, n, weight_sum, updated_at)
    SELECT 'key', key, m, n, weight_sum, updated_at FROM key_alignment;
INSERT INTO learning_state (kind, name, agree, disagree, n_outcome, n_peer)
    SELECT 'operator', operator, agree, disagree, n_outcome, n_peer FROM operator_trust;
DROP TABLE bandit_arms;
DROP TABLE key_alignment;
DROP TABLE operator_trust;
CREATE VIEW key_alignment (key, m, n, weight_sum, updated_at) AS
    SELECT name, m, n, weight_sum, updated_at FROM learning_state WHERE kind = 'key';
CREATE VIEW bandit_arms (arm, threshold, alpha, beta, pulls) AS
    SELECT CAST(name AS INTEGER), threshold, alpha, beta, pulls FROM learning_state WHERE kind = 'arm';
CREATE VIEW operator_trust (operator, agree, disagree, n_outcome, n_peer) AS
    SELECT name, agree, disagree, n_outcome, n_peer FROM learning_state WHERE kind = 'operator';
CREATE TRIGGER key_alignment_insert INSTEAD OF INSERT ON key_alignment
BEGIN
    INSERT INTO learning_state (kind, name, m, n, weight_sum, updated_at)
    VALUES ('key', NEW.key, NEW.m, NEW.n, NEW.weight_sum, NEW.updated_at);
END;
CREATE TRIGGER key_alignment_update INSTEAD OF UPDATE ON key_alignment
BEGIN
    UPDATE learning_state SET name = NEW.key, m = NEW.m, n = NEW.n, weight_sum = NEW.weight_sum,
        updated_at = NEW.updated_at WHERE kind = 'key' AND name = OLD.key;
END;
CREATE TRIGGER key_alignment_delete INSTEAD OF DELETE ON key_alignment
BEGIN
    DELETE FROM learning_state WHERE kind = 'key' AND name = OLD.key;
END;
CREATE TRIGGER bandit_arms_insert INSTEAD OF INSERT ON bandit_arms
BEGIN
    INSERT INTO learning_state (kind, name, threshold, alpha, beta, pulls)
    VALUES ('arm', CAST(NEW.arm AS TEXT), NEW.threshold, NEW.alpha, NEW.beta, NEW.pulls);
END;
CREATE TRIGGER bandit_arms_update INSTEAD OF UPDATE ON bandit_arms
BEGIN
    UPDATE learning_state SET name = CAST(NEW.arm AS TEXT), threshold = NEW.threshold, alpha = NEW.alpha,
        beta = NEW.beta, pulls = NEW.pulls WHERE kind = 'arm' AND name = CAST(OLD.arm AS TEXT);
END;
CREATE TRIGGER bandit_arms_delete INSTEAD OF DELETE ON bandit_arms
BEGIN
    DELETE FROM learning_state WHERE kind = 'arm' AND name = CAST(OLD.arm AS TEXT);
END;
CREATE TRIGGER operator_trust_insert INSTEAD OF INSERT ON operator_trust
BEGIN
    INSERT INTO learning_state (kind, name, agree, disagree, n_outcome, n_peer)
    VALUES ('operator', NEW.operator, NEW.agree, NEW.disagree, NEW.n_outcome, NEW.n_peer);
END;
CREATE TRIGGER operator_trust_update INSTEAD OF UPDATE ON operator_trust
BEGIN
    UPDATE learning_state SET name = NEW.operator, agree = NEW.agree, disagree = NEW.disagree,
        n_outcome = NEW.n_outcome, n_peer = NEW.n_peer WHERE kind = 'operator' AND name = OLD.operator;
END;
CREATE TRIGGER operator_trust_delete INSTEAD OF DELETE ON operator_trust
BEGIN
    DELETE FROM learning_state WHERE kind = 'operator' AND name = OLD.operator;
END;
"""


@MIGRATIONS(name="m006_learning_state")
def m006_learning_state(db: Database) -> None:
    """``learning_state``: the keys' m(k), the bandit's arms and the operators' trust as rows of one small table
    (``id``, ``kind``, ``name`` unique, then the columns of each kind), so one feedback event dirties one page of
    it instead of one page each of three tables; ``key_alignment``, ``bandit_arms`` and ``operator_trust`` are
    views of it with their old columns (INSERT/UPDATE/DELETE through them still work). The store updates a row it
    has read by its id."""
    db.executescript(_M006)


@MIGRATIONS(name="m007_delivery_lookups")
def m007_delivery_lookups(db: Database) -> None:
    """Indexes for look-ups that scanned whole tables and so slowed down as the database grew: the messages of a
    prediction by kind and state (an update already waiting, a post still pending, the updates to wake once the
    post is out, when a recommendation was shown — the skip sweeper asked that of every open recommendation) and
    the recommendations sharing one Slack message (a digest; partial: only posted ones)."""
    db.executescript(
        "CREATE INDEX outbox_by_prediction ON outbox (prediction_id, kind, state);"
        "CREATE INDEX recommendations_by_message ON recommendations (channel, message_ts) "
        "WHERE message_ts IS NOT NULL;"
    )


# A CHECK written ``x IN ('a', 'b', 'c')`` with three or more values costs SQLite ~1.7 µs per row written (it
# builds a temporary index of the list each time it evaluates the constraint); the same test written
# ``(x = 'a' OR x = 'b' OR x = 'c')`` costs ~0.05 µs (``bench``; storage/README.md, "m008"). Values are quoted
# text or integers; a list of one or two values is compiled as comparisons already and is left as it is.
_IN_LIST = re.compile(r"\b(\w+) IN \(((?:'[^']*'|-?\d+)(?:\s*,\s*(?:'[^']*'|-?\d+)){2,})\)")
_IN_VALUE = re.compile(r"'[^']*'|-?\d+")


def cheap_checks(sql: str) -> str:
    """``sql`` with every ``column IN (v1, v2, v3, …)`` of three or more constants written as an OR of equalities
    (same meaning, NULL included: both are NULL for a NULL column, which a CHECK accepts)."""

    def or_chain(match: re.Match[str]) -> str:
        column = match.group(1)
        return "(" + " OR ".join(f"{column} = {v}" for v in _IN_VALUE.findall(match.group(2))) + ")"

    return _IN_LIST.sub(or_chain, sql)


def _rebuild(db: Database, tables: dict[str, str]) -> None:
    """Rebuild each table in ``tables`` (name → its new ``CREATE TABLE``) keeping every row, rowid included, and
    every index, trigger and view: SQLite's documented procedure for a change ``ALTER TABLE`` cannot make (create
    the new table, copy, drop the old, rename). Views and triggers are dropped first and created again afterwards
    in their original order, since they may name the tables being replaced. Runs inside :func:`migrate` (foreign
    keys off, one transaction; ``PRAGMA foreign_key_check`` before the commit)."""
    conn = db.conn
    names = tuple(tables)
    marks = ",".join("?" * len(names))
    indexes = conn.execute(
        f"SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks}) "
        "ORDER BY rowid",
        names,
    ).fetchall()
    dependants = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') ORDER BY rowid"
    ).fetchall()
    for kind, name, _ in reversed(dependants):
        conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
    for table, create in tables.items():
        scratch = f"npo_rebuild_{table}"
        header = re.compile(rf'^CREATE TABLE\s+(?:"{table}"|{table})\s*\(')
        if not header.match(create):
            raise StorageError(table, "schema", "cannot rebuild: unexpected CREATE TABLE statement")
        conn.execute(header.sub(f"CREATE TABLE {scratch} (", create, count=1))
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()  # (cid, name, type, notnull, default, pk)
        pk = [r for r in info if r[5]]
        aliased = len(pk) == 1 and pk[0][2].upper() == "INTEGER"  # the rowid is that column, copied with it
        columns = ", ".join(([] if aliased else ["rowid"]) + [f'"{r[1]}"' for r in info])
        conn.execute(f'INSERT INTO {scratch} ({columns}) SELECT {columns} FROM "{table}"')
        conn.execute(f'DROP TABLE "{table}"')
        conn.execute(f'ALTER TABLE {scratch} RENAME TO "{table}"')
    for (sql,) in indexes:
        conn.execute(sql)
    for _, _, sql in dependants:
        conn.execute(sql)


# m006's CHECK of an arm row names its updated columns (α, β, pulls) and its name, so every arm update evaluated
# the name's two CASTs; split, the name is checked only when it is written.
_ARM_CHECK = """CHECK (kind <> 'arm' OR (name = CAST(CAST(name AS INTEGER) AS TEXT) AND CAST(name AS INTEGER) >= 0
        AND threshold IS NOT NULL AND alpha IS NOT NULL AND beta IS NOT NULL AND pulls IS NOT NULL))"""
_ARM_CHECKS = """CHECK (kind <> 'arm' OR (name = CAST(CAST(name AS INTEGER) AS TEXT) AND CAST(name AS INTEGER) >= 0)),
    CHECK (kind <> 'arm' OR (threshold IS NOT NULL AND alpha IS NOT NULL AND beta IS NOT NULL AND pulls IS NOT NULL))"""


@MIGRATIONS(name="m008_cheap_checks")
def m008_cheap_checks(db: Database) -> None:
    """Every CHECK of the form ``x IN (three or more constants)`` rewritten as an OR of equalities, by rebuilding
    the tables that have one (``decisions``, ``feedback``, ``recommendations``, ``outbox``, ``learning_state``,
    ``retraining_proposals``): the same constraints, ~1.7 µs less per CHECK per row written — ~3.4 µs of each
    decision row, ~1.7 µs of each feedback row, and every outbox and recommendation state change. The arm CHECK
    of ``learning_state`` is split so an arm update no longer evaluates its name (``_ARM_CHECKS``)."""
    tables = {}
    for name, sql in db.conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL ORDER BY rowid"
    ).fetchall():
        new = cheap_checks(sql)
        if name == "learning_state":
            if _ARM_CHECK not in new:
                raise StorageError("learning_state", "schema", "cannot rebuild: the arm CHECK is not as m006 wrote it")
            new = new.replace(_ARM_CHECK, _ARM_CHECKS, 1)
        if new != sql:
            tables[name] = new
    if tables:
        _rebuild(db, tables)


# m009: a person's answers on a recommendation are found through one index of ``feedback``, which also makes a
# request id unique (per person and recommendation). An answer is effective until a later answer of the same person
# there follows it; the system's skip also until a later answer names it in ``replaces`` (a click taking it over).
# Both checks run on the index: the first reads only the person's entries, the second only a skip's prediction.
# 'system' is ``npo.loop.SYSTEM_OPERATOR``.
_REQUEST_UNIQUE = "request_id TEXT NOT NULL UNIQUE CHECK"
_EFFECTIVE_RULE = """NOT EXISTS (SELECT 1 FROM feedback g WHERE g.prediction_id = f.prediction_id
        AND g.operator = f.operator AND g.id > f.id)
    AND (f.operator <> 'system' OR NOT EXISTS (SELECT 1 FROM feedback g WHERE g.prediction_id = f.prediction_id
        AND g.id > f.id AND g.replaces = f.request_id))"""
_M009_INDEX = "CREATE UNIQUE INDEX feedback_answers ON feedback (prediction_id, operator, request_id)"
_M009 = f"""
CREATE VIEW effective_answers (prediction_id, operator, feedback_id) AS
    SELECT f.prediction_id, f.operator, f.id FROM feedback f WHERE {_EFFECTIVE_RULE};
CREATE TRIGGER feedback_one_effective_answer BEFORE INSERT ON feedback
BEGIN
    SELECT RAISE(ABORT,
        'one effective answer per person and recommendation: a new answer must name the current one in replaces')
    WHERE CASE WHEN NEW.replaces IS NULL
        THEN EXISTS (SELECT 1 FROM effective_answers WHERE prediction_id = NEW.prediction_id
            AND operator = NEW.operator)
        ELSE NEW.replaces IS NOT COALESCE(
            (SELECT r.request_id FROM effective_answers e JOIN feedback r ON r.id = e.feedback_id
                WHERE e.prediction_id = NEW.prediction_id AND e.operator = NEW.operator),
            (SELECT r.request_id FROM effective_answers e JOIN feedback r ON r.id = e.feedback_id
                WHERE e.prediction_id = NEW.prediction_id AND e.operator = 'system'))
    END;
END;
"""


@MIGRATIONS(name="m009_answers_in_feedback")
def m009_answers_in_feedback(db: Database) -> None:
    """The ``effective_answers`` table and its trigger replaced by one index of ``feedback``, ``(prediction_id,
    operator, request_id)`` UNIQUE, which takes the place of the UNIQUE ``request_id`` index as well: a click
    writes one index page fewer and no second table. ``effective_answers`` is now a view with the same columns:
    an answer is effective until a newer answer of the same person on that recommendation follows it; the
    system's skip also until an answer names it in ``replaces`` (a click taking it over). The ``BEFORE INSERT``
    trigger ``feedback_one_effective_answer`` keeps the old table's rule: a person's new answer must name their
    current one in ``replaces`` (or, having none, may name the system's current skip and take it over). A request
    id is now unique per person and recommendation: a Slack interaction belongs to one of each. The upgrade
    compares the old table with the new rule, and the count of effective answers with the answers minus the
    replacing ones (``SQLiteStore.counts``), and stops, changing nothing, on any difference."""
    conn = db.conn
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone()
    if _REQUEST_UNIQUE not in sql:
        raise StorageError("feedback", "schema", "cannot rebuild: the request_id column is not as m001 wrote it")
    _rebuild(db, {"feedback": sql.replace(_REQUEST_UNIQUE, "request_id TEXT NOT NULL CHECK", 1)})
    conn.execute(_M009_INDEX)
    rule = f"SELECT f.prediction_id, f.operator, f.id FROM feedback f WHERE {_EFFECTIVE_RULE}"
    table = "SELECT prediction_id, operator, feedback_id FROM effective_answers"
    differs = conn.execute(
        f"SELECT *, 'is not effective in the table' FROM ({rule} EXCEPT {table}) UNION ALL "
        f"SELECT *, 'is not effective by the rule' FROM ({table} EXCEPT {rule}) LIMIT 1"
    ).fetchone()
    if differs is not None:
        raise StorageError(
            "effective_answers",
            f"{differs[0]} / {differs[1]}",
            f"cannot upgrade: feedback {differs[2]} {differs[3]} (the effective answers do not follow the "
            "replacement rule; run npo-bot db check on the previous version)",
        )
    # SQLiteStore.counts() counts the effective answers as the answers minus the replacing ones (each replacement
    # ends exactly one effective answer): the rows found must agree.
    rows, replacing, effective = conn.execute(
        "SELECT COUNT(*), COUNT(replaces), (SELECT COUNT(*) FROM effective_answers) FROM feedback"
    ).fetchone()
    if rows - replacing != effective:
        raise StorageError(
            "feedback",
            "replaces",
            f"cannot upgrade: {rows} answers, {replacing} of them replacing another, but {effective} effective "
            "(a replacement names no answer, or one replaced twice; run npo-bot db check on the previous version)",
        )
    conn.execute("DROP TRIGGER feedback_effective")
    conn.execute("DROP TABLE effective_answers")
    db.executescript(_M009)


@MIGRATIONS(name="m010_actions_without_case")
def m010_actions_without_case(db: Database) -> None:
    """The blast radius compares action names without case (``npo.policy.name_key``, which folds as SQLite's
    ``lower()`` does): the index of open recommendations by cluster and action is rebuilt on ``lower(action)``,
    so the store's count of open disruptive recommendations (``lower(action) IN (…)``) still seeks it."""
    db.executescript(
        "DROP INDEX recommendations_open_by_cluster;"
        "CREATE INDEX recommendations_open_by_cluster ON recommendations (cluster, lower(action)) "
        "WHERE resolved_at IS NULL;"
    )


@MIGRATIONS(name="m011_outcome_arrival")
def m011_outcome_arrival(db: Database) -> None:
    """``outcomes.recorded_at``: when NPO received the outcome (``at`` is when the fault was resolved, as its source
    reports, which may be days earlier). The weekly summary counts outcomes by arrival, ``COALESCE(recorded_at,
    at)``, so one that arrives after its week's summary was posted is in the next summary instead of none.
    Outcomes stored before have no arrival time (NULL) and keep being counted by ``at``."""
    db.execute("ALTER TABLE outcomes ADD COLUMN recorded_at REAL")


_PROPOSAL_STATES = "CHECK ((state = 'open' OR state = 'approved' OR state = 'dismissed'))"
_PROPOSAL_STATES_EXPIRY = "CHECK ((state = 'open' OR state = 'approved' OR state = 'dismissed' OR state = 'expired'))"


@MIGRATIONS(name="m012_proposal_expiry")
def m012_proposal_expiry(db: Database) -> None:
    """A retraining proposal nobody answers expires (``npo.monitor.proposal_expires_at``), so the monitor is not
    silenced for good by one open proposal: ``retraining_proposals.state`` may be ``expired`` (neither approved nor
    dismissed: F_monitor does not count it; ``resolved_at`` is when it expired, ``resolved_by`` stays NULL), and
    ``expires_at`` records the deadline the monitor set when it opened the proposal. Proposals stored before have
    no deadline (NULL): the monitor counts theirs from ``opened_at`` with the configured expiry. The table is
    rebuilt (a CHECK cannot be altered), keeping every row and id."""
    conn = db.conn
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'retraining_proposals'"
    ).fetchone()
    if _PROPOSAL_STATES not in sql:
        raise StorageError("retraining_proposals", "schema", "cannot rebuild: the state CHECK is not as m008 wrote it")
    new = sql.replace(_PROPOSAL_STATES, _PROPOSAL_STATES_EXPIRY, 1)
    new = new[: new.rindex(")")].rstrip() + ",\n    expires_at REAL\n)"
    _rebuild(db, {"retraining_proposals": new})


# printf('%!.17g', NULL) is '0.0', not NULL, so m003's COALESCE never chose 'null'.
_M013_THRESHOLD = "CASE WHEN threshold IS NULL THEN 'null' ELSE printf('%!.17g', threshold) END"


@MIGRATIONS(name="m013_audit_null_threshold")
def m013_audit_null_threshold(db: Database) -> None:
    """The ``audit_log`` view printed a decision's NULL threshold (a blocked decision: no arm was drawn) as ``0.0``,
    since ``printf('%!.17g', NULL)`` is ``'0.0'`` and m003's ``COALESCE`` around it never fell back to ``null``;
    the ``decisions`` row was right. The view is dropped and created again with the threshold tested for NULL
    first (``_M013_THRESHOLD``); the rest of its text is m003's. Dropping a view drops its INSTEAD OF triggers, so
    ``audit_log_insert``, ``audit_log_no_update`` and ``audit_log_no_delete`` are created again as m003 wrote them.
    No row changes: the lines are computed from ``decisions`` when read, so old blocked decisions read ``null``
    too."""
    db.executescript(
        "DROP VIEW audit_log;" + _audit_log_view(_M013_THRESHOLD) + _AUDIT_LOG_INSERT + _AUDIT_LOG_APPEND_ONLY
    )


@MIGRATIONS(name="m014_job_claims_done")
def m014_job_claims_done(db: Database) -> None:
    """A claim recorded when a scheduled run started, not whether it finished: a process killed mid-run (SIGKILL,
    out of memory, power loss) left its slot claimed for good, so that week's summary was never posted.
    ``job_claims.done_at`` is set when the run finishes; a claim without it that is older than the job's stale
    limit may be taken over (``storage.jobs``). Claims stored before are counted as finished (their runs ended
    before this version ran: a failed run gave its claim back)."""
    db.execute("ALTER TABLE job_claims ADD COLUMN done_at REAL")
    db.execute("UPDATE job_claims SET done_at = claimed_at")


@MIGRATIONS(name="m015_prediction_aliases")
def m015_prediction_aliases(db: Database) -> None:
    """A prediction found a duplicate by fingerprint (same fault type, target and action within the dedupe window)
    was not stored, and its id was forgotten: the same id sent again after the window (Alertmanager re-sends a
    firing episode every repeat_interval) was decided as a new prediction and posted again, and its resolved alert
    or outcome found no prediction. ``prediction_aliases`` maps such an id to the prediction it duplicated; filled
    from the ``duplicate_prediction`` audit lines of the history."""
    db.execute("CREATE TABLE prediction_aliases (alias_id TEXT PRIMARY KEY NOT NULL, prediction_id TEXT NOT NULL)")
    db.execute(
        "INSERT OR IGNORE INTO prediction_aliases (alias_id, prediction_id) "
        "SELECT subject, json_extract(detail, '$.first') FROM audit_events WHERE kind = 'duplicate_prediction' "
        "AND json_extract(detail, '$.first') IS NOT NULL AND subject != json_extract(detail, '$.first') "
        "AND subject NOT IN (SELECT prediction_id FROM decisions) ORDER BY id"
    )


@MIGRATIONS(name="m016_recommendation_due")
def m016_recommendation_due(db: Database) -> None:
    """An open recommendation nobody closed (no outcome, no resolved alert) counted against its cluster's blast
    radius for good, so a team that reports no outcomes ended up with every disruptive action blocked. It now stops
    counting ``blast_radius.stale_after_seconds`` after its predicted fault time: ``recommendations.due_at`` is that
    time (``surfaced_at`` plus the prediction's ``time_to_fault_s``, or ``surfaced_at`` when it gave none), filled
    for the rows stored before, and ``recommendations_open_by_cluster`` is rebuilt on ``(cluster, lower(action),
    due_at)`` so the count seeks only the recommendations that are not stale."""
    db.executescript(
        "ALTER TABLE recommendations ADD COLUMN due_at REAL;"
        "UPDATE recommendations SET due_at = surfaced_at + COALESCE((SELECT d.time_to_fault_s FROM decisions d "
        "WHERE d.prediction_id = recommendations.prediction_id), 0);"
        "DROP INDEX recommendations_open_by_cluster;"
        "CREATE INDEX recommendations_open_by_cluster ON recommendations (cluster, lower(action), due_at) "
        "WHERE resolved_at IS NULL;"
    )


# m017: a person's effective answers with a known outcome (never the system's, never a skip) and their summed agreement
# with it, 1 − |y − t| (t = 0 for a real fault, 1 for a false alarm): what storage.monitoring.contradicted_by_outcomes
# reads, kept by triggers in the transaction that writes the answer or the outcome. A person's effective answer on a
# recommendation is their newest there (codec.IS_EFFECTIVE; only the system's skip can also be ended by ``replaces``),
# so a new answer with a known outcome takes the place of the one before it, and an outcome adds the effective answers
# given before it. The feedback trigger looks the outcome up by its key and, only when there is one, the person's
# answers on that recommendation (the feedback_answers index); an answer that is not the person's newest there (never
# written: ids grow) changes nothing. Outcomes are never changed or deleted by NPO; the UPDATE and DELETE triggers
# keep the tally true after a hand edit. ``db check`` compares the table with the answers (storage/maintenance.py);
# the table has no CHECK, so a tally gone wrong never refuses a click.
AGREEMENT = "1.0 - ABS({y} - (1 - {real_fault}))"
OUTCOME_AGREEMENT_ROWS = f"""SELECT f.operator, COUNT(*), SUM({AGREEMENT.format(y="f.y", real_fault="o.real_fault")})
    FROM feedback f JOIN outcomes o ON o.prediction_id = f.prediction_id
    WHERE f.operator <> 'system' AND f.kind <> 'skipped' AND NOT EXISTS (SELECT 1 FROM feedback g
        WHERE g.prediction_id = f.prediction_id AND g.operator = f.operator AND g.id > f.id)
    GROUP BY f.operator"""
_TALLY = (
    "ON CONFLICT(operator) DO UPDATE SET answers = answers + excluded.answers, "
    "agreement = agreement + excluded.agreement;"
)


def _tally_outcome(sign: str, outcome: str) -> str:
    """The trigger statement adding (``sign`` '+') or taking back ('-') the effective answers on the recommendation
    of ``outcome`` (NEW or OLD of an ``outcomes`` trigger)."""
    return f"""
    INSERT INTO outcome_agreement (operator, answers, agreement)
    SELECT f.operator, {sign}1, {sign}({AGREEMENT.format(y="f.y", real_fault=f"{outcome}.real_fault")}) FROM feedback f
    WHERE f.prediction_id = {outcome}.prediction_id AND f.operator <> 'system' AND f.kind <> 'skipped'
        AND NOT EXISTS (SELECT 1 FROM feedback g WHERE g.prediction_id = f.prediction_id AND g.operator = f.operator
            AND g.id > f.id)
    {_TALLY}"""


_M017 = f"""
CREATE TABLE outcome_agreement (
    operator TEXT PRIMARY KEY NOT NULL,
    answers INTEGER NOT NULL,
    agreement REAL NOT NULL
) WITHOUT ROWID;
INSERT INTO outcome_agreement (operator, answers, agreement) {OUTCOME_AGREEMENT_ROWS};
CREATE TRIGGER feedback_outcome_agreement AFTER INSERT ON feedback
WHEN NEW.operator <> 'system' AND EXISTS (SELECT 1 FROM outcomes WHERE prediction_id = NEW.prediction_id)
    AND NOT EXISTS (SELECT 1 FROM feedback WHERE prediction_id = NEW.prediction_id AND operator = NEW.operator
        AND id > NEW.id)
BEGIN
    INSERT INTO outcome_agreement (operator, answers, agreement)
    SELECT NEW.operator, 1, {AGREEMENT.format(y="NEW.y", real_fault="o.real_fault")} FROM outcomes o
    WHERE o.prediction_id = NEW.prediction_id AND NEW.kind <> 'skipped'
    {_TALLY}
    INSERT INTO outcome_agreement (operator, answers, agreement)
    SELECT p.operator, -1, -({AGREEMENT.format(y="p.y", real_fault="o.real_fault")})
    FROM feedback p JOIN outcomes o ON o.prediction_id = p.prediction_id
    WHERE p.id = (SELECT MAX(id) FROM feedback WHERE prediction_id = NEW.prediction_id AND operator = NEW.operator
        AND id < NEW.id) AND p.kind <> 'skipped'
    {_TALLY}
END;
CREATE TRIGGER outcomes_outcome_agreement AFTER INSERT ON outcomes
BEGIN{_tally_outcome("+", "NEW")}
END;
CREATE TRIGGER outcomes_outcome_agreement_update AFTER UPDATE OF prediction_id, real_fault ON outcomes
BEGIN{_tally_outcome("-", "OLD")}{_tally_outcome("+", "NEW")}
END;
CREATE TRIGGER outcomes_outcome_agreement_delete AFTER DELETE ON outcomes
BEGIN{_tally_outcome("-", "OLD")}
END;
"""


@MIGRATIONS(name="m017_outcome_agreement")
def m017_outcome_agreement(db: Database) -> None:
    """The meta-monitor leaves out the people the outcomes contradict (``storage.monitoring.
    contradicted_by_outcomes``), and found them by joining every answer ever given with the outcomes and testing each
    for being effective, inside its write transaction, on every run: ~0.12 s at 100,000 answers, ~2.5 s at a million,
    holding up every click meanwhile. ``outcome_agreement`` keeps the figures per person (their effective answers with
    a known outcome, and the summed agreement with it), filled from the history here and kept by triggers on
    ``feedback`` (a new answer takes its place from the one it follows) and ``outcomes`` (an outcome adds the answers
    given before it), so the monitor reads one row per person."""
    db.executescript(_M017)


@MIGRATIONS(name="m018_feedback_peer_credited")
def m018_feedback_peer_credited(db: Database) -> None:
    """A person's first answer on a recommendation earns peer credit (trust from agreeing with the key's consensus)
    only while the key has ``peer_min_updates`` updates; changing the answer moved that credit whenever the key had
    them at the change, so an answer given while the key was young moved credit it never earned (on a key of 4
    updates, Override then Like left agree 3.5, disagree 1.5 instead of 4.0, 1.0). ``feedback.peer_credited``
    records whether the person's answer holds peer credit (1) or not (0), carried from an answer to the one that
    replaces it. Answers stored before are left NULL: their changes keep the earlier rule."""
    db.execute("ALTER TABLE feedback ADD COLUMN peer_credited INTEGER CHECK (peer_credited IN (0, 1))")


@MIGRATIONS(name="m019_prediction_aliases_by_prediction")
def m019_prediction_aliases_by_prediction(db: Database) -> None:
    """Several alerts may be merged into one prediction (the same fault type, target and action within the dedupe
    window: one alertname firing for two disks of a host, or an alert whose labels changed), and its recommendation
    is closed only once the last of them has resolved: the ids merged into a prediction are looked up by the
    prediction, which ``prediction_aliases`` could only scan."""
    db.execute("CREATE INDEX prediction_aliases_by_prediction ON prediction_aliases (prediction_id)")


@MIGRATIONS(name="m020_key_and_recent_lookups")
def m020_key_and_recent_lookups(db: Database) -> None:
    """``/npo why`` and ``/npo mute`` look a scenario key's decisions up (its verdict counts, whether it was ever
    decided; its answers through them), and ``/npo status`` and the App Home the newest recommendations: both read
    the whole table (``decisions``, ``recommendations``), so each grew with the history — on a year-old database
    (606,000 decisions) ``/npo why`` took ~0.5 s and the recent list ~60 ms. An index on ``decisions (key, verdict)``
    and one on ``recommendations (surfaced_at)``."""
    db.executescript(
        "CREATE INDEX decisions_by_key ON decisions (key, verdict);"
        "CREATE INDEX recommendations_by_surfaced ON recommendations (surfaced_at);"
    )


# m021: the open recommendations (``resolved_at`` NULL), counted once here and kept by triggers in the transaction that
# writes a recommendation or closes it. NPO never reopens nor deletes one; the triggers on the other changes keep the
# figure true after a hand edit. ``db check`` compares it with a recount (storage/maintenance.py); no CHECK, so a figure
# gone wrong never refuses a decision or an outcome. ``outbox_failed`` is on ``id`` so the failed messages are also
# listed in order from it (``npo-bot db requeue``, storage.outbox.plan_requeue) instead of from the whole table.
OPEN_RECOMMENDATIONS = "SELECT COUNT(*) FROM recommendations WHERE resolved_at IS NULL"
_M021 = f"""
CREATE INDEX outbox_failed ON outbox (id) WHERE state = 'failed';
CREATE TABLE recommendations_open_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT INTO recommendations_open_count (id, n) VALUES (1, ({OPEN_RECOMMENDATIONS}));
CREATE TRIGGER recommendations_open_insert AFTER INSERT ON recommendations
WHEN NEW.resolved_at IS NULL
BEGIN
    UPDATE recommendations_open_count SET n = n + 1;
END;
CREATE TRIGGER recommendations_open_update AFTER UPDATE OF resolved_at ON recommendations
WHEN (OLD.resolved_at IS NULL) <> (NEW.resolved_at IS NULL)
BEGIN
    UPDATE recommendations_open_count SET n = n + (CASE WHEN NEW.resolved_at IS NULL THEN 1 ELSE -1 END);
END;
CREATE TRIGGER recommendations_open_delete AFTER DELETE ON recommendations
WHEN OLD.resolved_at IS NULL
BEGIN
    UPDATE recommendations_open_count SET n = n - 1;
END;
"""


@MIGRATIONS(name="m021_dashboard_counts")
def m021_dashboard_counts(db: Database) -> None:
    """``/npo status``, the App Home and every metrics scrape count the outbox by state and the open recommendations
    (``storage.store_reads.StoreReads.counts``): the outbox by reading an entry of a whole-table index per message ever
    queued, the open recommendations by reading each one's row, so both grew with the history — on a year-old
    database (300,000 messages, 236,000 recommendations never closed) ~130 ms and ~25 ms per call. The pending
    messages are counted from ``outbox_due`` already; ``outbox_failed`` indexes the failed ones (which ``npo-bot db
    requeue`` also lists); the sent ones are the rest. ``recommendations_open_count`` keeps the number of open
    recommendations, filled here and kept by triggers on ``recommendations``."""
    db.executescript(_M021)


# m022: whether anyone ever answered a recommendation (a skip included), kept on its row so that the skip sweeper's
# partial index holds only the posted, open recommendations nobody answered. ``feedback`` is append-only (no UPDATE,
# no DELETE) and an answer is only ever replaced by another, so a recommendation with an answer always has an effective
# one: ``answered_at`` set is the same as "has an answer". It is the time of the earliest answer; the trigger writes the
# row only for the first answer (and for one dated before it, which a clock may give; the others find it set).
# ``db check`` compares the column with the answers (storage/maintenance.py).
ANSWERED_AT = "(SELECT MIN(f.at) FROM feedback f WHERE f.prediction_id = recommendations.prediction_id)"
_M022 = f"""
ALTER TABLE recommendations ADD COLUMN answered_at REAL;
UPDATE recommendations SET answered_at = {ANSWERED_AT}
WHERE EXISTS (SELECT 1 FROM feedback f WHERE f.prediction_id = recommendations.prediction_id);
CREATE TRIGGER feedback_answered AFTER INSERT ON feedback
BEGIN
    UPDATE recommendations SET answered_at = NEW.at WHERE prediction_id = NEW.prediction_id
        AND (answered_at IS NULL OR answered_at > NEW.at);
END;
CREATE INDEX recommendations_unanswered ON recommendations (surfaced_at)
WHERE state = 'posted' AND resolved_at IS NULL AND answered_at IS NULL;
"""


@MIGRATIONS(name="m022_unanswered_recommendations")
def m022_unanswered_recommendations(db: Database) -> None:
    """The skip sweeper runs every minute and looked for the posted recommendations nobody answered by reading every
    open one (``recommendations_open_by_cluster``) and testing each for an answer, then sorting them all: every
    recommendation it had skipped, or someone had answered, stays open until an outcome comes, so the sweep grew with
    the history — on a year-old database (235,000 posted recommendations never closed, all answered or skipped) ~3 s
    of CPU per sweep, to find none due. ``recommendations.answered_at`` is the time of its earliest answer (anyone's, a
    skip included), filled from ``feedback`` here and set by a trigger on ``feedback``;
    ``recommendations_unanswered`` indexes the posted, open ones without it, so a sweep reads only those."""
    db.executescript(_M022)


KNOWN_MIGRATIONS = tuple(m.name for m in MIGRATIONS.pending(Database(memory=True, execute_plugins=False)))
LATEST_SCHEMA_VERSION = len(KNOWN_MIGRATIONS)


def unknown_migrations(db: Database) -> list[str]:
    """The migrations applied to ``db`` that this code does not know: a newer NPO wrote it. Read-only."""
    known = set(KNOWN_MIGRATIONS)
    return [m.name for m in MIGRATIONS.applied(db) if m.name not in known]


def newer_schema_message(db: Database) -> str | None:
    """What to tell an operator whose database a newer NPO wrote (None when this code knows every migration)."""
    unknown = unknown_migrations(db)
    if not unknown:
        return None
    return (
        f"schema version {schema_version(db)} was written by a newer NPO (migrations {', '.join(unknown)}; this "
        f"version knows {LATEST_SCHEMA_VERSION}): upgrade NPO to use this database, or restore a backup taken "
        "before the upgrade; nothing was changed"
    )


def schema_version(db: Database) -> int:
    """How many of the ``npo`` migrations have been applied to ``db`` (0 for an empty file). Read-only."""
    return len(MIGRATIONS.applied(db))


# How long ``migrate`` waits for the write lock in all, retrying past the busy timeout: another process may be upgrading
# a large file (a minute or more at millions of rows), and the process waiting should start after it, not give up.
MIGRATION_LOCK_WAIT_S = 600.0


def migrate(db: Database, *, stop_before: str | None = None, lock_wait_s: float = MIGRATION_LOCK_WAIT_S) -> int:
    """Apply every pending migration (up to, not including, ``stop_before``) and return the schema version
    (:func:`upgrade`, which also says what the version was when this process got the write lock)."""
    return upgrade(db, stop_before=stop_before, lock_wait_s=lock_wait_s)[1]


def upgrade(
    db: Database, *, stop_before: str | None = None, lock_wait_s: float = MIGRATION_LOCK_WAIT_S
) -> tuple[int, int]:
    """Apply every pending migration (up to, not including, ``stop_before``); return the schema version this
    process upgraded from, read once it held the write lock, and the version after. When another process upgraded
    the file while this one waited for the lock, the first is that process's version, not the one read before: the
    two are equal when nothing was left to apply.

    Runs in one ``BEGIN IMMEDIATE`` transaction (each migration in its own savepoint), so two processes starting
    at once apply each migration once; a failing migration leaves the database as it was. Foreign keys are
    switched off while migrating (tables are rebuilt, the documented SQLite procedure) and checked with
    ``PRAGMA foreign_key_check`` before the commit: any dangling reference rolls the migration back. ``db``
    must not be inside a transaction. A database with nothing to apply is only read, so it opens while another
    process holds the write lock (a long write, a second bot starting). The write lock is waited for up to
    ``lock_wait_s`` seconds in all (the busy timeout again and again): another process migrating a large file holds
    it longer than one busy timeout, and this one then finds nothing left to apply. :class:`StorageBusy` after that.
    A database written by a newer NPO (:func:`newer_schema_message`) is refused with a :class:`StorageError`, nothing
    changed: when read at the start, and again once the write lock is held, as a newer NPO may have upgraded the
    file while this process waited for it.
    """
    pending = MIGRATIONS.pending(db)
    _refuse_newer(db)  # read after pending: a newer NPO's upgrade committed before that read is seen here
    if stop_before is None and not pending:
        return LATEST_SCHEMA_VERSION, LATEST_SCHEMA_VERSION
    conn = db.conn
    foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        _begin_immediate(db, lock_wait_s)
        try:
            found = schema_version(db)  # under the lock: another process may have upgraded the file meanwhile
            _refuse_newer(db)  # a newer NPO among them: nothing of this version's goes on top of its schema
            MIGRATIONS.apply(db, stop_before=stop_before)
            dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
            if dangling:
                table, rowid, parent, _ = dangling[0]
                raise StorageError(
                    table, str(rowid), f"migration left {len(dangling)} rows referring to missing {parent} rows"
                )
        except BaseException:
            db.rollback()
            raise
        db.commit()
    finally:
        conn.execute(f"PRAGMA foreign_keys = {int(foreign_keys)}")
    return found, schema_version(db)


def _refuse_newer(db: Database) -> None:
    """Raise :class:`StorageError` (:func:`newer_schema_message`) when a newer NPO wrote ``db``."""
    newer = newer_schema_message(db)
    if newer is not None:
        raise StorageError("_sqlite_migrations", "npo", newer)


def _begin_immediate(db: Database, lock_wait_s: float) -> None:
    """``BEGIN IMMEDIATE``, tried again while another connection holds the write lock, for ``lock_wait_s`` seconds
    in all; :class:`StorageBusy` after that."""
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except Exception as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise StorageBusy(
                    "_sqlite_migrations",
                    "npo",
                    f"could not lock the database to migrate: another process held it for {lock_wait_s:g} s ({exc})",
                ) from exc
