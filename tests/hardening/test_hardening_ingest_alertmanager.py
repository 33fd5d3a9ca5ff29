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


def _grafana(status: str, **annotations: str) -> dict[str, Any]:
    """A notification as Grafana 11's webhook contact point writes it (every top-level and alert field)."""
    alert = {
        "status": status,
        "labels": {"alertname": "NodeOverheat", "grafana_folder": "infra", "host": "r4-n1", "severity": "critical"},
        "annotations": {"summary": "r4-n1 will overheat", "action": "migrate_vms"} | annotations,
        "startsAt": "2025-03-26T10:00:00Z",
        "endsAt": "2025-03-26T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://grafana.local:3000/alerting/grafana/be1x/view?orgId=1",
        "fingerprint": "9f1c2d3e4b5a6978",
        "silenceURL": "http://grafana.local:3000/alerting/silence/new?alertmanager=grafana",
        "dashboardURL": "",
        "panelURL": "",
        "values": {"B": 91.2, "C": 1},
        "valueString": "[ var='B' labels={host=r4-n1} value=91.2 ], [ var='C' labels={host=r4-n1} value=1 ]",
    }
    return {
        "receiver": "npo",
        "status": status,
        "orgId": 1,
        "alerts": [alert],
        "groupLabels": {"alertname": "NodeOverheat", "grafana_folder": "infra"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://grafana.local:3000/",
        "version": "1",
        "groupKey": '{}/{__grafana_autogenerated__="true"}:{alertname="NodeOverheat", grafana_folder="infra"}',
        "truncatedAlerts": 0,
        "title": f"[{status.upper()}:1] NodeOverheat infra (r4-n1 critical)",
        "state": "alerting" if status == "firing" else "ok",
        "message": "**Firing**\n\nValue: B=91.2, C=1\nLabels:\n - alertname = NodeOverheat\n",
    }


def test_a_grafana_contact_point_set_to_put_is_served_as_post(bot: BotUnderTest) -> None:
    """Grafana's webhook contact point offers the HTTP method POST or PUT, with the same body: PUT on the route is
    the same request as POST — token checked first, the alert surfaced, its resolution recorded, a repeat a
    duplicate — and the other ingest routes still answer PUT with 405."""
    url = f"{bot.server.url}/api/v1/alertmanager"
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    refused = httpx.put(url, json=_grafana("firing"), headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert refused.status_code == 401 and bot.counts()["predictions"] == 0
    fired = httpx.put(url, json=_grafana("firing"), headers=auth, timeout=10)
    assert fired.status_code == 200, fired.text
    (result,) = fired.json()["results"]
    assert (result["id"], result["verdict"], result["duplicate"]) == (
        "am:9f1c2d3e4b5a6978@20250326T100000Z",
        "surface",
        False,
    )
    bot.posted("am:9f1c2d3e4b5a6978@20250326T100000Z")
    again = httpx.post(f"{url}/", json=_grafana("firing"), headers=auth, timeout=10)  # the same notification by POST
    assert again.status_code == 200 and again.json()["results"][0]["duplicate"] is True
    resolved = httpx.put(f"{url}/", json=_grafana("resolved", npo_outcome="real_fault"), headers=auth, timeout=10)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["outcomes"][0] | {"missed_fault": None} == {
        "prediction_id": "am:9f1c2d3e4b5a6978@20250326T100000Z",
        "result": "outcome",
        "real_fault": True,
        "recorded": True,
        "missed_fault": None,
    }
    assert bot.counts()["predictions"] == 1 and bot.counts()["outcomes"] == 1
    for path in ("/api/v1/predictions", "/api/v1/outcomes", "/api/v1/policy/reload"):
        assert httpx.put(f"{bot.server.url}{path}", json=[], headers=auth, timeout=10).status_code == 405, path
