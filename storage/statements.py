"""SQL text shared by the transaction's modules (``storage/tx_*.py``), and the statements built from the store's
configuration (number of bandit arms, disruptive actions), once per configuration."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from npo.loop import SYSTEM_OPERATOR
from npo.policy_base import TURNED_DOWN_REASONS
from storage import codec
from storage.migrations import NEXT_AUDIT_ID

INSERT_DECISION = (
    "INSERT INTO decisions (seq, prediction_id, fault_type, target, action, confidence, severity, time_to_fault_s, "
    "labels, prediction_channel, received_at, fingerprint, cluster, key, verdict, rule, reason, decision_confidence, "
    "misalignment, score, threshold, arm, decided_at, channel) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_NEXT = f"({NEXT_AUDIT_ID})"
INSERT_RECOMMENDATION = (
    "INSERT INTO recommendations (prediction_id, verdict, channel, key, target, action, cluster, surfaced_at, due_at) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (prediction_id, channel, kind, payload, next_attempt_at, created_at) VALUES (?,?,?,?,?,?)"
)
_FEEDBACK_INSERT = (
    "INSERT INTO feedback (id, request_id, prediction_id, operator, kind, at, reason, key, y, weight, key_n_before, "
    f"arm, reward, replaces, peer_credited, audit_weight, audit_m, channel, target) "
    f"VALUES ({_NEXT},?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
)
INSERT_AUDIT = f"INSERT INTO audit_events (id, at, kind, subject, detail) VALUES ({_NEXT},?,?,?,?)"
# The last override of a key or target that is still someone's effective answer and counted with a trust weight
# above zero — a distrusted person's overrides do not start a cooldown (newest first, by the partial override
# indexes; each candidate checked with the rule of the ``effective_answers`` view, codec.IS_EFFECTIVE, which reads
# only that person's entries of the ``feedback_answers`` index).
IS_EFFECTIVE = codec.IS_EFFECTIVE
# A feedback row ``f`` that starts an override cooldown: an Override counted with a weight above zero, given by a
# person whose own trust weight was above zero when they gave it (``audit_weight``; a changed answer keeps the
# first one's ``weight`` for learning, so a Like given while trusted and changed at weight 0 has one above zero).
STARTS_COOLDOWN = "f.kind = 'override' AND f.weight > 0 AND COALESCE(f.audit_weight, f.weight) > 0"
# An open recommendation ``r`` still counts toward its cluster's blast radius unless it was turned down: someone's
# effective Override that starts a cooldown (above) gives a reason saying the recommendation is wrong
# (npo.policy_base.turns_down: the stored reason starts with one of TURNED_DOWN_REASONS, compared as written), and
# nobody's effective answer is a Like (no one agreed to act).
_TURNS_DOWN = " OR ".join(f"f.reason GLOB '{reason}*'" for reason in TURNED_DOWN_REASONS)  # turns_down
COUNTS_TOWARD_BLAST_RADIUS = (
    f"NOT (EXISTS (SELECT 1 FROM feedback f WHERE f.prediction_id = r.prediction_id AND {STARTS_COOLDOWN} "
    f"AND ({_TURNS_DOWN}) AND {IS_EFFECTIVE}) "
    f"AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.prediction_id = r.prediction_id AND f.kind = 'like' "
    f"AND {IS_EFFECTIVE}))"
)


# The first column of the prefetch queries: 1 when the request id is stored for this person and recommendation,
# plus 2 when the recommendation's outcome is recorded (two facts in one column, so no column moves).
_SEEN_AND_OUTCOME = (
    "EXISTS(SELECT 1 FROM feedback WHERE prediction_id = ?2 AND operator = ?3 AND request_id = ?1) "
    "+ 2 * EXISTS(SELECT 1 FROM outcomes WHERE prediction_id = ?2)"
)


@dataclass(frozen=True, slots=True)
class Statements:
    """SQL that depends on the store's configuration (number of arms, disruptive actions), built once."""

    prefetch: str
    open_disruptive: str
    # The warm prefetch (see SQLiteTransaction.prefetch_feedback): request seen, the row ids of the operator's and
    # the system's effective answers; ``warm_decision`` adds the decision's columns.
    warm: str = (
        f"SELECT {_SEEN_AND_OUTCOME}, "
        "(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = ?3), "
        f"(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = '{SYSTEM_OPERATOR}')"
    )
    warm_decision: str = (
        f"SELECT {_SEEN_AND_OUTCOME}, "
        "(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = ?3), "
        f"(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = '{SYSTEM_OPERATOR}'), "
        "d.key, d.verdict, d.rule, d.reason, d.decision_confidence, d.misalignment, d.score, d.threshold, d.arm, "
        "d.decided_at, d.channel, d.target FROM (SELECT 1) AS one LEFT JOIN decisions d ON d.prediction_id = ?2"
    )
    insert_feedback: str = _FEEDBACK_INSERT + (
        "COALESCE((SELECT channel FROM decisions WHERE prediction_id = ?), ''), "
        "COALESCE((SELECT target FROM decisions WHERE prediction_id = ?), ''))"
    )
    insert_feedback_known: str = _FEEDBACK_INSERT + "?,?)"
    insert_feedback_id: str = _FEEDBACK_INSERT.replace(_NEXT, "?", 1) + "?,?)"  # the audit id given


@functools.lru_cache(maxsize=32)
def statements_for(n_arms: int, n_disruptive: int) -> Statements:
    arms_match = " AND ".join(f"b{i}.threshold = ?{4 + i}" for i in range(n_arms))
    arms = ", ".join(f"b{i}.alpha, b{i}.beta, b{i}.pulls" for i in range(n_arms))
    arm_ids = ", ".join(f"b{i}.id" for i in range(n_arms))
    arm_joins = " ".join(
        f"LEFT JOIN learning_state b{i} ON b{i}.kind = 'arm' AND b{i}.name = '{i}'" for i in range(n_arms)
    )
    # Parameters: ?1 request id, ?2 prediction id, ?3 operator, ?4… the configured thresholds. Columns (see
    # SQLiteTransaction.prefetch_feedback): 0 request seen (1) + outcome recorded (2); 1-10 the decision after its
    # prediction id; 11 its channel, 12 its target; 13-16 the key's state after its name; 17-20 the operator's
    # trust after the name; 21, 22 the row ids of the operator's and the system's effective answers; 23 the arms'
    # state (0 none stored, 1 as configured, -1 anything else); 24… α, β, pulls per arm; then the learning_state
    # row ids of the key, the trust and each arm; last, the connection's data_version.
    # Few columns: each costs ~0.15 µs.
    prefetch = (
        f"SELECT {_SEEN_AND_OUTCOME}, "
        "d.key, d.verdict, d.rule, d.reason, d.decision_confidence, d.misalignment, d.score, d.threshold, d.arm, "
        "d.decided_at, d.channel, d.target, k.m, k.n, k.weight_sum, k.updated_at, "
        "t.agree, t.disagree, t.n_outcome, t.n_peer, "
        "(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = ?3), "
        f"(SELECT feedback_id FROM effective_answers WHERE prediction_id = ?2 AND operator = '{SYSTEM_OPERATOR}'), "
        "CASE (SELECT COUNT(*) FROM learning_state WHERE kind = 'arm') WHEN 0 THEN 0 "
        f"WHEN {n_arms} THEN CASE WHEN {arms_match} THEN 1 ELSE -1 END ELSE -1 END, {arms}, k.id, t.id, {arm_ids}, "
        "(SELECT data_version FROM pragma_data_version) "
        "FROM (SELECT ?2 AS pid) AS q "
        "LEFT JOIN decisions d ON d.prediction_id = q.pid "
        "LEFT JOIN learning_state k ON k.kind = 'key' AND k.name = d.key "
        "LEFT JOIN learning_state t ON t.kind = 'operator' AND t.name = ?3 "
        f"{arm_joins}"
    )
    marks = ", ".join("?" * n_disruptive)
    # Parameters: the cluster, the disruptive actions, then now − stale_after_s (the recommendations not stale).
    open_disruptive = (
        "SELECT COUNT(*) FROM recommendations r WHERE r.cluster = ? AND r.resolved_at IS NULL "
        f"AND lower(r.action) IN ({marks}) AND r.due_at > ? AND {COUNTS_TOWARD_BLAST_RADIUS}"
    )
    return Statements(prefetch=prefetch, open_disruptive=open_disruptive)
