"""SIGKILL in the middle of a stream of commits loses nothing that was reported committed, corrupts nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from storage_testing import make_prediction, surface

from npo.policy import Policy
from storage import SQLiteStore, check, connect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
N_PREDICTIONS = 50


def test_sigkill_mid_run_loses_no_committed_feedback(db_path: Path, relaxed_policy: Policy) -> None:
    with SQLiteStore(db_path) as store:
        surface(store, [make_prediction(i) for i in range(N_PREDICTIONS)], relaxed_policy)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_writer.py"), str(db_path), str(N_PREDICTIONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    reported: list[str] = []
    try:
        for line in proc.stdout:
            reported.append(line.strip())
            if len(reported) >= 400:
                break
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reported += [line for line in rest.split("\n") if line]
    assert proc.returncode == -signal.SIGKILL, err
    assert len(reported) >= 400

    db = connect(db_path)
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in db.conn.execute("SELECT request_id FROM feedback")}
    assert set(reported) <= stored
    assert check(db)[1] == []
    db.close()
