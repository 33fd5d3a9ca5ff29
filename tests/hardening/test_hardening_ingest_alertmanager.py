"""The Alertmanager webhook as a real Alertmanager (webhook_config, payload ``version: "4"``) meets it, over a real
server and a real SQLite file: a notification Alertmanager truncated (``max_alerts``) says so in the answer and the
log; one alert episode, re-sent and resolved, is one prediction and one outcome (when the resolved alert says
whether the fault was real); identical resolved notifications sent at once close the recommendation once."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from slack_testing import BotUnderTest, alertmanager_notification


def _firing(fingerprint: str, instance: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "DiskWillFail", "instance": instance, "severity": "critical"},
        "annotations": {"summary": "the disk will fail", "action": "drain"},
        "startsAt": "2025-03-26T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local:9090/graph?g0.expr=disk_will_fail",
        "fingerprint": fingerprint,
    }


def test_a_truncated_notification_says_how_many_alerts_were_left_out(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """``max_alerts: 2`` in the webhook_config and a group of 5 alerts: Alertmanager sends 2 and
    ``"truncatedAlerts": 3``. The 3 never reach NPO, and neither the answer nor the log said so."""
    url = f"{bot.server.url}/api/v1/alertmanager"
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    body = alertmanager_notification(_firing("a1", "r1-n1:9100"), _firing("a2", "r1-n2:9100"), truncated=3)
    caplog.set_level(logging.WARNING)
    response = httpx.post(url, json=body, headers=auth, timeout=10)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["id"] for r in answer["results"]] == ["am:a1@20250326T100000Z", "am:a2@20250326T100000Z"]
    assert answer["truncated_alerts"] == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "max_alerts" in r.getMessage()]
    assert len(warned) == 1 and "3 alerts" in warned[0] and 'alertname="DiskWillFail"' in warned[0]
    complete = httpx.post(
        url, json=alertmanager_notification(_firing("a3", "r1-n3:9100")), headers=auth, timeout=10
    ).json()
    assert "truncated_alerts" not in complete and len(complete["results"]) == 1  # nothing left out: as before
    assert bot.counts()["predictions"] == 3


def test_an_episode_as_alertmanager_sends_it_is_one_prediction_then_its_outcome(bot: BotUnderTest) -> None:
    """What was checked and found right, kept as a regression test: one episode as Alertmanager sends it —
    nanosecond timestamps, re-sent by ``repeat_interval`` and again when its group changes (the same start written
    with a zone offset), then resolved saying the fault was real (annotation ``npo_outcome``, as a sender that
    knows posts it) — is one prediction and one outcome at ``endsAt``; credentials sent as ``basic_auth`` instead
    of ``authorization`` are refused with 401 naming the header, nothing stored."""
    url = f"{bot.server.url}/api/v1/alertmanager"
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    first = httpx.post(
        url, json=alertmanager_notification(_firing("e1", "r2-n1:9100")), headers=auth, timeout=10
    ).json()
    assert [(r["id"], r["duplicate"]) for r in first["results"]] == [("am:e1@20250326T100000Z", False)]
    repeated = _firing("e1", "r2-n1:9100") | {"startsAt": "2025-03-26T11:00:00.123456789+01:00"}
    changed = alertmanager_notification(repeated, _firing("e2", "r2-n2:9100"))
    again = httpx.post(url, json=changed, headers=auth, timeout=10).json()
    assert [(r["id"], r["duplicate"]) for r in again["results"]] == [
        ("am:e1@20250326T100000Z", True),
        ("am:e2@20250326T100000Z", False),
    ]
    resolved = _firing("e1", "r2-n1:9100") | {"status": "resolved", "endsAt": "2025-03-26T12:30:00.5+01:00"}
    resolved["annotations"] = resolved["annotations"] | {"npo_outcome": "real_fault"}
    done = httpx.post(
        url, json=alertmanager_notification(resolved) | {"status": "resolved"}, headers=auth, timeout=10
    ).json()
    assert done["outcomes"] == [
        {
            "prediction_id": "am:e1@20250326T100000Z",
            "result": "outcome",
            "real_fault": True,
            "recorded": True,
            "missed_fault": False,
        }
    ]
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        stored = db.execute("SELECT real_fault, at, source FROM outcomes").fetchall()
    assert stored == [(1, 1742988600.5, "alertmanager")]  # endsAt: 11:30:00.5 UTC
    before = bot.counts()
    basic = httpx.post(url, json=alertmanager_notification(_firing("e3", "r2-n3:9100")), auth=("npo", "x"), timeout=10)
    assert basic.status_code == 401 and basic.json()["field"] == "Authorization"
    assert bot.counts() == before and before["predictions"] == 2 and before["outcomes"] == 1


def test_identical_resolved_notifications_sent_at_once_close_the_recommendation_once(bot: BotUnderTest) -> None:
    """An Alertmanager cluster sends the same notification from every replica: a resolved alert that does not say
    whether the fault was real closes its recommendation once, audited once, and stores no outcome."""
    url = f"{bot.server.url}/api/v1/alertmanager"
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    fired = httpx.post(
        url, json=alertmanager_notification(_firing("r1", "r3-n1:9100")), headers=auth, timeout=10
    ).json()
    assert fired["results"][0]["verdict"] == "surface"
    resolved = _firing("r1", "r3-n1:9100") | {"status": "resolved", "endsAt": "2025-03-26T11:00:00Z"}
    body = alertmanager_notification(resolved) | {"status": "resolved"}
    barrier = threading.Barrier(6)

    def send() -> dict[str, Any]:
        barrier.wait()
        answer: dict[str, Any] = httpx.post(url, json=body, headers=auth, timeout=10).json()
        return answer

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: send(), range(6)))
    entries = [a["outcomes"][0] for a in answers]
    assert {(e["result"], e["recorded"]) for e in entries} == {("no_outcome", False)}
    assert sorted(e["closed"] for e in entries) == [False] * 5 + [True]
    assert len(bot.bot.store.audit_entries(kind="alert_resolved")) == 1
    assert bot.counts()["outcomes"] == 0 and bot.bot.store.counts()["recommendations_open"] == 0
