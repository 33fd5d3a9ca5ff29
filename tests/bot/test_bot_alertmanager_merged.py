"""Alerts merged into one prediction (same fault type, target and action within the dedupe window: one alertname
firing for two disks of one host, or an alert whose labels changed — Alertmanager resolves the old label set and
fires the new one) share one recommendation. It stays open while one of them still fires: the resolution of one
alert that says nothing about the fault closes it only once every alert merged into it has resolved."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))

from slack_testing import BotUnderTest, alertmanager_notification, load_slack_conftest  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest_bot_merged")
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]
settings = _slack.settings  # type: ignore[attr-defined]
bot = _slack.bot  # type: ignore[attr-defined]

AM = "/api/v1/alertmanager"
START = "2025-03-26T10:00:00Z"


def _alert(fingerprint: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    """DiskWillFail on r12-n04 as Alertmanager 0.27 sends it; ``labels`` tell the alerts apart (``device``)."""
    return {
        "status": status,
        "labels": {"alertname": "DiskWillFail", "instance": "r12-n04:9100", "severity": "critical"} | labels,
        "annotations": {"summary": "the disk will fail within 6 h"},
        "startsAt": START,
        "endsAt": "2025-03-26T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def _send(bot: BotUnderTest, *alerts: dict[str, Any]) -> dict[str, Any]:
    response = bot.ingest(alertmanager_notification(*alerts), path=AM)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _open(bot: BotUnderTest) -> int:
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM recommendations WHERE resolved_at IS NULL").fetchone()[0])


def test_two_disks_of_one_host_keep_their_recommendation_open_until_both_resolve(bot: BotUnderTest) -> None:
    sda, sdb = _alert("a0da", device="sda"), _alert("a0db", device="sdb")
    first, second = _send(bot, sda, sdb)["results"]
    assert (first["verdict"], second["duplicate"], second["id"]) == ("surface", True, first["id"])
    assert _open(bot) == 1
    # sda's alert resolves (saying nothing of the fault) while sdb's still fires: the fault is still predicted
    (entry,) = _send(bot, _alert("a0da", "resolved", device="sda"), sdb)["outcomes"]
    assert (entry["result"], entry["prediction_id"], entry["closed"]) == ("no_outcome", first["id"], False)
    assert _open(bot) == 1
    (last,) = _send(bot, _alert("a0db", "resolved", device="sdb"))["outcomes"]
    assert (last["result"], last["prediction_id"], last["closed"]) == ("no_outcome", first["id"], True)
    assert _open(bot) == 0
    again = _send(bot, _alert("a0da", "resolved", device="sda"), _alert("a0db", "resolved", device="sdb"))
    assert [e["closed"] for e in again["outcomes"]] == [False, False]  # re-sent: nothing changes
    assert len(bot.bot.store.audit_entries(kind="alert_resolved")) == 2  # each alert's end, once
    assert bot.counts()["outcomes"] == 0


def test_an_alert_whose_labels_changed_keeps_the_recommendation_open(bot: BotUnderTest) -> None:
    """Its severity label went from warning to critical: a new label set, so a new alert (fingerprint), which
    Alertmanager sends firing in the same notification as the old one resolved."""
    (old,) = _send(bot, _alert("c1a0", severity="warning"))["results"]
    changed = _send(bot, _alert("c1a0", "resolved", severity="warning"), _alert("c1a1", severity="critical"))
    (new,) = changed["results"]
    assert (new["duplicate"], new["id"]) == (True, old["id"])
    assert [(e["prediction_id"], e["closed"]) for e in changed["outcomes"]] == [(old["id"], False)]
    assert _open(bot) == 1
    (entry,) = _send(bot, _alert("c1a1", "resolved", severity="critical"))["outcomes"]
    assert (entry["prediction_id"], entry["closed"]) == (old["id"], True)
    assert _open(bot) == 0
