"""``npo-bot db requeue`` with the delivery worker: posts Slack refused for good (a revoked token) go out once the
token is fixed and they are requeued."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_testing import ALICE, INCIDENT, BotUnderTest, make_settings, prediction, serving, wait_for

from bot.app import build_bot
from bot.cli import main as cli_main
from bot.slack.blocks import ACTION_LIKE
from bot.standin import StandIn


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
    wait_for(lambda: len(bot.bot.store.outbox("failed")) == 3)
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
    bot.posted("p1")
    bot.posted("p2")
    wait_for(lambda: "*like*" in str(bot.standin.message(*answered).blocks))
    wait_for(lambda: all(row[2] == "sent" for row in _outbox(db)))
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


@pytest.fixture
def storm_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=3), seed=1)
    with serving(built, standin) as served:
        yield served


def _digest_headers(bot: BotUnderTest) -> list[str]:
    return [str(m.blocks[0]) for m in bot.standin.messages(INCIDENT) if "npo_digest_header" in str(m.blocks)]


def test_a_requeued_backlog_is_posted_as_a_digest_that_says_so_not_as_an_alert_storm(
    storm_bot: BotUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five recommendations failed one by one (a revoked token); requeued together, they are more than the channel's
    storm threshold and are folded into one digest, whose header says they were requeued after a failed delivery:
    there is no alert storm. A storm of new ones still says it is one."""
    db = Path(storm_bot.bot.settings.db_path)
    storm_bot.standin.faults.error("chat.postMessage", "invalid_auth", times=None)
    for i in range(5):
        storm_bot.ingest(prediction(f"q{i}", target=f"node-{i}"))
        wait_for(lambda n=i + 1: len(storm_bot.bot.store.outbox("failed")) == n)
    storm_bot.standin.faults.clear()
    assert "requeued 5 of 5 " in _requeue(db, capsys)
    wait_for(lambda: all(row[2] == "sent" for row in _outbox(db)))
    (header,) = _digest_headers(storm_bot)
    assert "5 recommendation(s) in one digest" in header
    assert "alert storm" not in header and "requeue" in header, header

    storm_bot.ingest([prediction(f"s{i}", target=f"node-s{i}") for i in range(5)])  # a storm of new ones
    wait_for(lambda: len(_digest_headers(storm_bot)) == 2)
    assert "alert storm: too many at once for one channel" in _digest_headers(storm_bot)[1]
