"""A flapping alert: its second episode, within the dedupe window of the first, is a duplicate of the first's
prediction (README: "the same fault type, target and action within an hour is one prediction, whatever the ids").
Its id must stay that prediction: Alertmanager re-sends a firing episode every repeat_interval (4 h by default)
and every group_interval the group changes, and the episode resolves later, with or without npo_outcome."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))

from slack_testing import BotUnderTest, alertmanager_notification, load_slack_conftest  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest_bot_flap")
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]
settings = _slack.settings  # type: ignore[attr-defined]
bot = _slack.bot  # type: ignore[attr-defined]

AM = "/api/v1/alertmanager"
NEVER = "0001-01-01T00:00:00Z"


def _alert(status: str, starts: str, ends: str = NEVER, **annotations: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "DiskWillFail", "instance": "r12-n04:9100", "severity": "critical"},
        "annotations": annotations,
        "startsAt": starts,
        "endsAt": ends,
        "fingerprint": "f1a9c0de",
    }


def _send(bot: BotUnderTest, alert: dict[str, Any]) -> dict[str, Any]:
    response = bot.ingest(alertmanager_notification(alert), path=AM)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _flap(bot: BotUnderTest, clock: list[float]) -> str:
    """Episode 1 fires and resolves; episode 2 fires 20 min after episode 1: a duplicate of it. Its first id."""
    (first,) = _send(bot, _alert("firing", "2025-03-26T10:00:00Z"))["results"]
    assert first["duplicate"] is False and first["verdict"] == "surface", first
    clock[0] += 600
    _send(bot, _alert("resolved", "2025-03-26T10:00:00Z", "2025-03-26T10:10:00Z"))
    clock[0] += 600
    (second,) = _send(bot, _alert("firing", "2025-03-26T10:20:00Z"))["results"]
    assert second["duplicate"] is True and second["id"] == first["id"], second
    return str(first["id"])


def _clock(bot: BotUnderTest) -> list[float]:
    clock = [time.time()]
    bot.bot.service.clock = lambda: clock[0]
    return clock


def test_the_resent_notification_of_a_flapped_episode_is_no_new_recommendation(bot: BotUnderTest) -> None:
    clock = _clock(bot)
    first = _flap(bot, clock)
    clock[0] += 4 * 3600  # repeat_interval: Alertmanager re-sends the (unchanged) second episode
    (again,) = _send(bot, _alert("firing", "2025-03-26T10:20:00Z"))["results"]
    assert again["duplicate"] is True and again["id"] == first, again
    assert bot.counts()["predictions"] == 1


def test_the_resolved_alert_of_a_flapped_episode_records_its_outcome(bot: BotUnderTest) -> None:
    clock = _clock(bot)
    first = _flap(bot, clock)
    clock[0] += 1200
    resolved = _alert("resolved", "2025-03-26T10:20:00Z", "2025-03-26T10:40:00Z", npo_outcome="real_fault")
    (entry,) = _send(bot, resolved)["outcomes"]
    assert entry["result"] == "outcome" and entry["recorded"] is True and entry["prediction_id"] == first, entry
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        assert db.execute("SELECT prediction_id, real_fault FROM outcomes").fetchall() == [(first, 1)]


def test_an_outcome_sent_for_the_duplicates_id_is_recorded_for_the_prediction_it_duplicated(
    bot: BotUnderTest,
) -> None:
    clock = _clock(bot)
    first = _flap(bot, clock)
    second = "am:f1a9c0de@20250326T102000Z"
    outcome = {"prediction_id": second, "real_fault": True, "at": clock[0]}
    answer = bot.ingest(outcome, path="/api/v1/outcomes")
    assert answer.status_code == 200 and answer.json()["recorded"] is True, answer.text
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        assert db.execute("SELECT prediction_id, real_fault FROM outcomes").fetchall() == [(first, 1)]
