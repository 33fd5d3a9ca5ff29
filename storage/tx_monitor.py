"""Model versions, the meta-monitor's state and runs, and retraining proposals in one
:class:`~storage.transaction.SQLiteTransaction`."""

from __future__ import annotations

from npo.monitor import MonitorState
from npo.retrain import LogisticModel
from storage import codec
from storage.tx_base import MISSING, TxBase

MONITOR_RUNS_KEEP_S = 90 * 86400.0  # the meta-monitor keeps its run records (``monitor_runs``) this long
MONITOR_RUNS_PRUNE_BATCH = 10  # at most this many expired run records deleted per run


class TxMonitor(TxBase):
    """Models (``get_model``, ``save_model``, ``get_model_version``), the monitor's state and runs, proposals."""

    def get_model(self) -> LogisticModel | None:
        """The promoted model with the highest version (None before any promotion)."""
        if self._model is MISSING:
            row = self._one(
                f"SELECT {codec.MODEL_COLS} FROM model_versions WHERE promoted = 1 ORDER BY version DESC LIMIT 1",
                (),
            )
            self._model = None if row is None else codec.model_from_row(row)
        model: LogisticModel | None = self._model
        return model

    def save_model(self, model: LogisticModel, *, promoted: bool, recorded_at: float) -> None:
        """Record a model version (every candidate, promoted or not). A version is recorded once."""
        self._write(
            "model_versions",
            str(model.version),
            f"INSERT INTO model_versions ({codec.MODEL_COLS}, promoted, recorded_at) VALUES (?,?,?,?,?,?,?,?)",
            (*codec.model_params(model), int(promoted), recorded_at),
        )
        self._model = MISSING

    def get_model_version(self, version: int) -> LogisticModel | None:
        row = self._one(f"SELECT {codec.MODEL_COLS} FROM model_versions WHERE version = ?", (version,))
        return None if row is None else codec.model_from_row(row)

    def get_monitor_state(self) -> MonitorState:
        row = self._one(f"SELECT {codec.MONITOR_COLS} FROM monitor_state WHERE id = 1", ())
        return MonitorState() if row is None else codec.monitor_from_row(row)

    def put_monitor_state(self, state: MonitorState) -> None:
        cols = codec.MONITOR_COLS
        updates = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in cols.split(","))
        self._write(
            "monitor_state",
            "1",
            f"INSERT INTO monitor_state (id, {cols}) VALUES (1,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            codec.monitor_params(state),
        )

    def add_monitor_run(
        self, at: float, triggered: bool, reason: str, window_loss: float | None, n_in_window: int, drift_alarm: bool
    ) -> int:
        cur = self._write(
            "monitor_runs",
            str(at),
            "INSERT INTO monitor_runs (at, triggered, reason, window_loss, n_in_window, drift_alarm) "
            "VALUES (?,?,?,?,?,?)",
            (at, int(triggered), reason, window_loss, n_in_window, int(drift_alarm)),
        )
        return int(cur.lastrowid or 0)

    def prune_monitor_runs(self, before: float, *, batch: int = MONITOR_RUNS_PRUNE_BATCH) -> int:
        """Delete the oldest monitor-run records dated before ``before`` (Unix seconds), at most ``batch`` of them:
        only the first ``batch`` rows in id order are read, so a run costs the same however long the table is,
        and a backlog is caught up ``batch`` rows a run (a run adds one). Returns how many were deleted."""
        cur = self._write(
            "monitor_runs",
            str(before),
            "DELETE FROM monitor_runs WHERE id IN "
            "(SELECT id FROM (SELECT id, at FROM monitor_runs ORDER BY id LIMIT ?) WHERE at < ?)",
            (batch, before),
        )
        return int(cur.rowcount)

    def open_proposal(self, at: float, reason: str, *, expires_at: float | None = None) -> int:
        """Record a new retraining proposal (state ``open``; unanswered, it expires at ``expires_at``, or when the
        monitor's configured expiry after ``at`` says so if None); returns its id."""
        cur = self._write(
            "retraining_proposals",
            reason[:60],
            "INSERT INTO retraining_proposals (opened_at, reason, expires_at) VALUES (?,?,?)",
            (at, reason, expires_at),
        )
        return int(cur.lastrowid or 0)

    def resolve_proposal(
        self, proposal_id: int, *, approved: bool, by: str, at: float, model_version: int | None = None
    ) -> bool:
        """Close an open proposal (Approve / Dismiss). False when it was already resolved (a repeated click)."""
        cur = self._write(
            "retraining_proposals",
            str(proposal_id),
            "UPDATE retraining_proposals SET state = ?, resolved_at = ?, resolved_by = ?, model_version = ? "
            "WHERE id = ? AND state = 'open'",
            ("approved" if approved else "dismissed", at, by, model_version, proposal_id),
        )
        return cur.rowcount == 1

    def extend_proposal(self, proposal_id: int, *, until: float) -> bool:
        """Move an open proposal's deadline (``expires_at``) to ``until`` when it is earlier; never brings one
        forward, nor sets one on a proposal stored without it. False when nothing changed."""
        cur = self._write(
            "retraining_proposals",
            str(proposal_id),
            "UPDATE retraining_proposals SET expires_at = ? "
            "WHERE id = ? AND state = 'open' AND expires_at IS NOT NULL AND expires_at < ?",
            (until, proposal_id, until),
        )
        return cur.rowcount == 1

    def expire_proposal(self, proposal_id: int, *, at: float) -> bool:
        """Close an open proposal nobody answered (state ``expired``, ``resolved_at`` = ``at``, when it expired; no
        ``resolved_by``). False when it was no longer open."""
        cur = self._write(
            "retraining_proposals",
            str(proposal_id),
            "UPDATE retraining_proposals SET state = 'expired', resolved_at = ? WHERE id = ? AND state = 'open'",
            (at, proposal_id),
        )
        return cur.rowcount == 1
