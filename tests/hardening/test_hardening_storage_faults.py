"""Faults on the service's own side: the disk full while writing, and a corrupt policy file at reload.

The disk is filled for the real ``npo-bot serve`` process only, with ``RLIMIT_FSIZE`` (Linux ``prlimit``): every
write to its database files fails, as on a full disk, while the test keeps its own files. The service must answer
with a clear error (503 naming the cause, nothing half-stored), keep running, and work again — without a restart —
once space returns, with the database intact and everything it accepted present.
"""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

import httpx
import pytest
from hardening_testing import INGEST_TOKEN, ServeProcess, serve_process
from slack_testing import ALICE, SECRET, BotUnderTest, make_settings, prediction, wait_for

from bot.app import build_bot
from bot.serve import ServerThread
from bot.standin import StandIn

needs_prlimit = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")


def _fill_disk(server: ServeProcess) -> None:
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))


def _free_disk(server: ServeProcess) -> None:
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _stored_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in conn.execute("SELECT id FROM predictions")}
    finally:
        conn.close()


@needs_prlimit
def test_disk_full_while_writing_gives_a_clear_error_and_recovers_when_space_returns(
    tmp_path: Path, standin: StandIn
) -> None:
    db = tmp_path / "full.db"
    with serve_process(db, standin.api_url) as server:
        accepted = [f"before-{i}" for i in range(5)]
        for pid in accepted:
            assert server.ingest(prediction(pid, target=f"host-{pid}")).status_code == 200
        wait_for(lambda: len(standin.calls("chat.postMessage")) >= 5)

        _fill_disk(server)
        refused = 0
        for i in range(10):
            batch = [prediction(f"full-{i}-{j}", target=f"full-host-{i}-{j}") for j in range(20)]
            response = server.ingest(batch)
            if response.status_code == 200:
                accepted += [p["id"] for p in batch]  # fitted in space the files already had
                continue
            refused += 1
            assert response.status_code == 503, response.text
            answer = response.json()
            assert "nothing was stored" in answer["error"] and answer["field"] == "(storage)", answer
            assert response.headers.get("Retry-After")
        assert refused >= 5
        assert httpx.get(f"{server.url}/livez").status_code == 200  # still running

        _free_disk(server)
        after = [prediction(f"after-{i}", target=f"after-host-{i}") for i in range(5)]
        response = server.ingest(after)
        assert response.status_code == 200, response.text
        accepted += [p["id"] for p in after]
        assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
        text = "".join(server.output)
        assert "disk" in text.lower() or "i/o" in text.lower(), text[-2000:]  # the cause is logged
    stored = _stored_ids(db)
    assert set(accepted) <= stored
    assert not {pid for pid in stored if pid.startswith("full-")} - set(accepted)  # no half-stored batch


# -- policy reload ----------------------------------------------------------------------------------------------------
GOOD_POLICY = """
[rules.allowed_actions]
disk_failure = ["investigate", "drain", "replace_disk"]
"""


@pytest.fixture
def policy_bot(tmp_path: Path, standin: StandIn) -> BotUnderTest:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(GOOD_POLICY, encoding="utf-8")
    built = build_bot(make_settings(tmp_path, standin, policy_file=policy_file), seed=1)
    server = ServerThread(built.asgi, loop="asyncio").start()
    try:
        yield BotUnderTest(built, server, standin)  # type: ignore[misc]
    finally:
        server.stop()
        built.close()


def _reload(bot: BotUnderTest, token: str | None = None) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token or bot.bot.settings.ingest_token}"}
    return httpx.post(f"{bot.server.url}/api/v1/policy/reload", headers=auth, timeout=10)


@pytest.mark.parametrize(
    ("corrupt", "field"),
    [
        ("[rules.allowed_actions\ndisk_failure = 1", None),  # not TOML
        ("[rules.allowed_actions]\ndisk_failure = 7\n", "rules.allowed_actions.disk_failure"),
        ("[rules.no_such_rule]\nx = 1\n", "rules.no_such_rule"),
        (b"\xff\xfe\x00garbage", "NPO_POLICY_FILE"),
        ("[rules.override_cooldown]\nseconds = 1" + "0" * 400 + "\n", "rules.override_cooldown.seconds"),
        (" \n", "NPO_POLICY_FILE"),  # truncated to nothing: refused (the defaults are `version = 1`)
        ("# NPO Safety Policy\n#\n\n", "NPO_POLICY_FILE"),  # truncated after its opening comments: no setting left
    ],
)
def test_a_corrupt_policy_file_at_reload_keeps_the_old_policy_and_reports_the_error(
    policy_bot: BotUnderTest, caplog: pytest.LogCaptureFixture, corrupt: str | bytes, field: str | None
) -> None:
    settings = policy_bot.bot.settings
    assert settings.policy_file is not None
    old = policy_bot.bot.service.base_policy
    if isinstance(corrupt, bytes):
        settings.policy_file.write_bytes(corrupt)
    else:
        settings.policy_file.write_text(corrupt, encoding="utf-8")
    response = _reload(policy_bot)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"]
    if field is not None:
        assert answer["field"].startswith(field), answer
    assert policy_bot.bot.service.base_policy is old
    assert any(r.levelname == "ERROR" and "policy reload refused" in r.getMessage() for r in caplog.records)
    # The old policy is still the one deciding: a disallowed action is blocked, an allowed one surfaces.
    assert policy_bot.ingest(prediction("ok", action="drain")).json()["verdict"] == "surface"
    blocked = policy_bot.ingest(prediction("no", action="reboot", target="host-no")).json()
    assert blocked["verdict"] == "block", blocked


def test_a_valid_policy_reload_takes_effect_and_needs_the_token(policy_bot: BotUnderTest) -> None:
    settings = policy_bot.bot.settings
    assert settings.policy_file is not None
    assert _reload(policy_bot, token="wrong").status_code == 401
    assert policy_bot.ingest(prediction("r1", action="reboot")).json()["verdict"] == "block"
    settings.policy_file.write_text(GOOD_POLICY.replace('"replace_disk"]', '"replace_disk", "reboot"]'), "utf-8")
    assert _reload(policy_bot).json()["reloaded"] is True
    assert policy_bot.ingest(prediction("r2", action="reboot", target="host-r2")).json()["verdict"] == "surface"
    # a click still works with the new policy in force
    message = policy_bot.posted("r2")
    assert policy_bot.click(ALICE, "npo_like", message).status_code == 200
    assert SECRET not in _reload(policy_bot).text
    assert INGEST_TOKEN not in _reload(policy_bot).text


def test_a_reload_whose_mutes_cannot_be_read_again_is_reported_as_done(
    policy_bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload swaps the file in, then reads the mutes again. When that read failed (the database damaged or not
    readable), the request was answered 500, "not reloaded", though the new file already decided everything after
    it. Now the answer says what happened: reloaded (200), the mutes last read kept, a warning in the log."""
    settings = policy_bot.bot.settings
    assert settings.policy_file is not None
    assert policy_bot.ingest(prediction("r1", action="reboot")).json()["verdict"] == "block"
    settings.policy_file.write_text(GOOD_POLICY.replace('"replace_disk"]', '"replace_disk", "reboot"]'), "utf-8")
    damage = sqlite3.connect(settings.db_path)
    try:
        damage.execute("ALTER TABLE policy_mutes RENAME TO mutes_elsewhere")  # every read of the mutes now fails
        damage.commit()
        response = _reload(policy_bot)
    finally:
        damage.execute("ALTER TABLE mutes_elsewhere RENAME TO policy_mutes")
        damage.commit()
        damage.close()
    assert response.status_code == 200 and response.json()["reloaded"] is True, response.text
    assert any(r.levelname == "WARNING" and "mutes could not be read" in r.getMessage() for r in caplog.records)
    assert policy_bot.ingest(prediction("r2", action="reboot", target="host-r2")).json()["verdict"] == "surface"
