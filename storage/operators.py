"""SQL for the weekly report's per-person lines: what each person answered in a period, how often those answers
matched the outcomes, how many of their clicks were over the rate limit, and their trust tally now. Plain read
functions over a ``sqlite3.Connection`` (use ``SQLiteStore.read()``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from npo.loop import SYSTEM_OPERATOR
from npo.trust import OperatorTrust
from storage import codec
from storage.ratelimit import RATE_LIMITED

_EFFECTIVE = codec.IS_EFFECTIVE


@dataclass(frozen=True, slots=True)
class OperatorActivity:
    """One person's period: effective answers per kind, answers whose outcome is known and their summed
    agreement with it (1 − |y − t|, t = 0 for a real fault, 1 for a false alarm), clicks refused for the rate
    limit, and their trust tally now (None when they have none yet)."""

    operator: str
    counts: dict[str, int] = field(default_factory=dict)
    with_outcome: int = 0
    outcome_agreement: float = 0.0
    rate_limited: int = 0
    trust: OperatorTrust | None = None

    @property
    def answers(self) -> int:
        return sum(self.counts.values())


def operator_activity(conn: sqlite3.Connection, since: float, until: float) -> list[OperatorActivity]:
    """Everyone (but ``system``) who answered or was rate-limited in [since, until), by operator id."""
    counts: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        f"SELECT f.operator, f.kind, COUNT(*) FROM feedback f WHERE f.at >= ? AND f.at < ? AND f.operator != ? "
        f"AND {_EFFECTIVE} GROUP BY f.operator, f.kind",
        (since, until, SYSTEM_OPERATOR),
    ).fetchall()
    for operator, kind, n in rows:
        counts.setdefault(str(operator), {})[str(kind)] = int(n)
    judged: dict[str, tuple[int, float]] = {}
    rows = conn.execute(
        f"SELECT f.operator, COUNT(*), SUM(1.0 - ABS(f.y - (1 - o.real_fault))) FROM feedback f "
        f"JOIN outcomes o ON o.prediction_id = f.prediction_id "
        f"WHERE f.at >= ? AND f.at < ? AND f.operator != ? AND f.kind != 'skipped' AND {_EFFECTIVE} "
        f"GROUP BY f.operator",
        (since, until, SYSTEM_OPERATOR),
    ).fetchall()
    for operator, n, agreement in rows:
        judged[str(operator)] = (int(n), float(agreement or 0.0))
    limited: dict[str, int] = {}
    rows = conn.execute(
        "SELECT json_extract(detail, '$.operator'), COUNT(*) FROM audit_events "
        "WHERE kind = ? AND at >= ? AND at < ? GROUP BY 1",
        (RATE_LIMITED, since, until),
    ).fetchall()
    for operator, n in rows:
        if operator is not None:
            limited[str(operator)] = int(n)
    operators = sorted(set(counts) | set(limited))
    trust: dict[str, OperatorTrust] = {}
    if operators:
        marks = ",".join("?" * len(operators))
        rows = conn.execute(
            f"SELECT operator, agree, disagree, n_outcome, n_peer FROM operator_trust WHERE operator IN ({marks})",
            operators,
        ).fetchall()
        for operator, agree, disagree, n_outcome, n_peer in rows:
            name = str(operator)
            trust[name] = OperatorTrust(name, float(agree), float(disagree), int(n_outcome), int(n_peer))
    return [
        OperatorActivity(
            operator,
            counts.get(operator, {}),
            *judged.get(operator, (0, 0.0)),
            rate_limited=limited.get(operator, 0),
            trust=trust.get(operator),
        )
        for operator in operators
    ]
