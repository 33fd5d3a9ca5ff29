"""``npo-bot db requeue`` with the delivery worker: posts Slack refused for good (a revoked token) go out once the
token is fixed and they are requeued."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from slack_testing import ALICE, INCIDENT, BotUnderTest, prediction, wait_for

from bot.cli import main as cli_main
from bot.slack.blocks import ACTION_LIKE


def _requeue(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli_main(["db", "requeue", "--db", str(db), *args]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one summary line
    return out


def _outbox(db: Path) -> list[tuple[int, str, str, int, str | None]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, kind, state, attempts, last_error FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()


def test_posts_refused_by_a_revoked_token_are_posted_once_after_a_requeue(
    bot: BotUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Path(bot.bot.settings.db_path)
    answered = bot.surface("p0")
    for method in ("chat.postMessage", "chat.update"):
        bot.standin.faults.error(method, "invalid_auth", times=None)
    assert bot.click(ALICE, ACTION_LIKE, answered).status_code == 200  # its update is refused too
    bot.ingest(prediction("p1"))
    bot.ingest(prediction("p2"))
    wait_for(lambda: len(bot.bot.store.outbox("failed")) == 3, timeout=10)
    before = _outbox(db)

    # a dry run says what would go out and changes nothing
    out = _requeue(db, capsys, "--dry-run")
    assert "would requeue 3 of 3 failed message(s) (2 recommendation/invalid_auth, 1 update/invalid_auth)" in out
    assert _outbox(db) == before
    # an error the rows do not name selects none of them
    assert "requeued 0 of 0" in _requeue(db, capsys, "--error", "channel_not_found")
    assert _outbox(db) == before

    calls = len(bot.standin.calls("chat.postMessage"))
    bot.standin.faults.clear()  # the operator installs a new token
    out = _requeue(db, capsys, "--error", "invalid_auth", "--since", "2020-01-01T00:00:00")
    assert "requeued 3 of 3 failed message(s)" in out
    bot.posted("p1", timeout=10)
    bot.posted("p2", timeout=10)
    wait_for(lambda: "*like*" in str(bot.standin.message(*answered).blocks), timeout=10)
    wait_for(lambda: all(row[2] == "sent" for row in _outbox(db)), timeout=10)
    time.sleep(1.5)  # nothing more goes out
    posts = [c for c in bot.standin.calls("chat.postMessage")[calls:] if c.status == 200]
    assert len(posts) == 2 and len(bot.standin.messages(INCIDENT)) == 3  # p0, p1, p2: each once

    # the second run finds nothing to requeue; the audit log keeps each requeued message's last error
    assert "requeued 0 of 0 failed message(s)" in _requeue(db, capsys)
    conn = sqlite3.connect(db)
    try:
        audit = conn.execute("SELECT detail FROM audit_log WHERE kind = 'outbox_requeued'").fetchall()
    finally:
        conn.close()
    assert len(audit) == 3 and all('"last_error":"invalid_auth"' in str(row[0]) for row in audit), audit


def test_a_missing_database_is_one_line_and_exit_1_like_the_other_db_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["db", "requeue", "--db", str(tmp_path / "none.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no database" in err
    assert not (tmp_path / "none.db").exists()
