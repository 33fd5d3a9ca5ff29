"""The ingest API over real HTTP: decisions, audit, duplicates, malformed input, auth, Alertmanager, outcomes."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import time
from typing import Any

import httpx
import pytest
from slack_sdk.models.blocks import Block
from slack_testing import INCIDENT, BotUnderTest, prediction, wait_for

from bot.http.ingest_routes import LISTED_ALERT_ERRORS
from bot.ingest.alertmanager import LOGGED_ERRORS


def assert_valid_blocks(blocks: list[dict]) -> None:
    assert len(blocks) <= 50
    parsed = Block.parse_all(blocks)
    assert None not in parsed
    for block in parsed:
        block.to_dict()


def test_surfaced_prediction_is_posted_once_with_three_buttons(bot: BotUnderTest) -> None:
    response = bot.ingest(prediction("p1"))
    assert response.status_code == 200
    body = response.json()
    assert body["verdict"] == "surface" and body["duplicate"] is False
    bot.posted("p1")
    posts = bot.standin.calls("chat.postMessage")
    assert len(posts) == 1
    assert posts[0].headers.get("Content-Type", "").startswith("application/json")
    blocks = posts[0].body["blocks"]
    assert_valid_blocks(blocks)
    labels = [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    for word in ("Like", "Override", "Neutral"):
        assert any(word in label for label in labels)
    conn_row = wait_for(lambda: bot.bot.service.message_ref("p1"))
    assert conn_row.ts == posts[0].response["ts"]
    assert conn_row.channel == INCIDENT  # (channel, ts) stored with the recommendation


def test_below_threshold_is_not_posted_and_audited(bot: BotUnderTest) -> None:
    response = bot.ingest(prediction("low", confidence=0.05))
    assert response.json()["verdict"] == "suppress"
    audit = bot.bot.store.audit_entries(kind="decision")
    detail = next(d for _, _, _, subject, d in audit if subject == "low")
    assert detail["rule"] == "threshold" and detail["threshold"] is not None and "τ" in detail["reason"]
    bot.bot.worker.wake()
    assert not bot.standin.calls("chat.postMessage")


def test_blocked_by_the_policy_is_not_posted_and_audited(bot: BotUnderTest) -> None:
    for pid in ("d1", "d2"):
        bot.surface(pid, action="drain", target=f"rack7-{pid}", labels={"cluster": "rack7"})
    response = bot.ingest(prediction("d3", action="drain", target="rack7-d3", labels={"cluster": "rack7"}))
    assert response.json()["verdict"] == "block" and response.json()["rule"] == "blast_radius"
    audit = bot.bot.store.audit_entries(kind="decision")
    assert any(subject == "d3" and d["rule"] == "blast_radius" for _, _, _, subject, d in audit)
    assert len(bot.standin.calls("chat.postMessage")) == 2


def test_duplicate_prediction_is_recognised(bot: BotUnderTest) -> None:
    bot.ingest(prediction("p1"))
    again = bot.ingest(prediction("p1"))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    same_fingerprint = bot.ingest(prediction("p1-other-id", target="r12-p1"))
    assert same_fingerprint.json()["duplicate"] is True
    bot.posted("p1")
    assert len(bot.standin.calls("chat.postMessage")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in prediction("x").items() if k != "confidence"}, "confidence"),
        (prediction("x", confidence="high"), "confidence"),
        (prediction("x", confidence=1.5), "confidence"),
        (prediction("x", severity="apocalyptic"), "severity"),
        (prediction("x", colour="red"), "colour"),
        ([prediction("ok"), prediction("bad", target="")], "[1].target"),
        ([], "(body)"),
    ],
)
def test_malformed_predictions_name_the_field_and_store_nothing(bot: BotUnderTest, body: object, field: str) -> None:
    before = bot.counts()
    response = bot.ingest(body)
    assert 400 <= response.status_code < 500
    assert response.json()["field"] == field
    assert bot.counts() == before


def test_a_nul_character_is_refused_naming_its_field_not_taken_for_a_storage_error(bot: BotUnderTest) -> None:
    """``"\\u0000"`` is valid JSON. SQLite's ``length()`` stops at a NUL, so an id starting with one is 0 characters
    long to the database's CHECK: the whole batch was answered 503 "retry later" — retried in vain for ever, its
    good predictions never stored. A NUL elsewhere was stored and posted to Slack, and as an outcome's source."""
    before = bot.counts()
    batch = [prediction("n1", target="r1-n01"), prediction("\u0000n2", target="r2-n01")]
    refused = bot.ingest(batch)
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "[1].id" and "NUL" in refused.json()["error"]
    for field in ("fault_type", "target", "action", "channel"):
        body = prediction("n3", target="r3-n01") | {field: "a\u0000b"}
        answer = bot.ingest(body)
        assert (answer.status_code, answer.json()["field"]) == (422, field), answer.text
    assert bot.counts() == before
    assert bot.ingest(batch[:1]).status_code == 200
    for field in ("prediction_id", "source"):
        outcome = {"prediction_id": "n1", "real_fault": True} | {field: "\u0000n1"}
        answer = bot.ingest(outcome, path="/api/v1/outcomes")
        assert (answer.status_code, answer.json()["field"]) == (422, field), answer.text
    assert bot.counts()["outcomes"] == 0


def test_invalid_json_oversize_and_bad_tokens_are_refused(bot: BotUnderTest) -> None:
    before = bot.counts()
    url = f"{bot.server.url}/api/v1/predictions"
    auth = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}"}
    assert httpx.post(url, content=b"{not json", headers=auth).status_code == 400
    big = b'{"id": "' + b"x" * (bot.bot.settings.max_body_bytes + 10) + b'"}'
    assert httpx.post(url, content=big, headers=auth).status_code == 413
    assert bot.ingest(prediction("p1"), token="wrong-token").status_code == 401
    assert httpx.post(url, json=prediction("p1")).status_code == 401
    assert bot.counts() == before


ALERTMANAGER_FIRING = {
    "version": "4",
    "groupKey": '{}:{alertname="DiskWillFail"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "npo",
    "groupLabels": {"alertname": "DiskWillFail"},
    "commonLabels": {"alertname": "DiskWillFail", "severity": "critical"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.local:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "DiskWillFail",
                "instance": "r12-n04:9100",
                "severity": "critical",
                "cluster": "r12",
            },
            "annotations": {"confidence": "0.97", "action": "drain", "time_to_fault": "6h"},
            "startsAt": "2025-03-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph",
            "fingerprint": "a1b2c3d4e5f60001",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "DiskWillFail",
                "instance": "r13-n07:9100",
                "severity": "critical",
                "cluster": "r13",
            },
            "annotations": {"confidence": "98%", "action": "replace_disk"},
            "startsAt": "2025-03-26T10:01:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph",
            "fingerprint": "a1b2c3d4e5f60002",
        },
    ],
}


def test_alertmanager_webhook_gives_recommendations_then_outcomes(bot: BotUnderTest) -> None:
    response = bot.ingest(ALERTMANAGER_FIRING, path="/api/v1/alertmanager")
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [
        "am:a1b2c3d4e5f60001@20250326T100000Z",
        "am:a1b2c3d4e5f60002@20250326T100100Z",
    ]
    assert all(r["verdict"] == "surface" for r in results)
    wait_for(lambda: len(bot.standin.calls("chat.postMessage")) == 2)
    p = bot.bot.store.prediction("am:a1b2c3d4e5f60001@20250326T100000Z")
    assert p is not None and p.target == "r12-n04:9100" and p.action == "drain" and p.time_to_fault_s == 6 * 3600
    resolved = dict(ALERTMANAGER_FIRING, status="resolved")
    alert = ALERTMANAGER_FIRING["alerts"][0]
    said = alert["annotations"] | {"npo_outcome": "real_fault"}  # the sender knows the predicted fault happened
    resolved["alerts"] = [dict(alert, status="resolved", endsAt="2025-03-26T12:00:00Z", annotations=said)]
    response = bot.ingest(resolved, path="/api/v1/alertmanager")
    assert response.json()["outcomes"] == [
        {
            "prediction_id": "am:a1b2c3d4e5f60001@20250326T100000Z",
            "result": "outcome",
            "real_fault": True,
            "recorded": True,
            "missed_fault": False,
        }
    ]
    assert bot.counts()["outcomes"] == 1
    wait_for(lambda: bot.standin.calls("chat.update"))  # the message shows the outcome


def _alert(status: str, starts_at: str, fingerprint: str = "a1b2c3d4e5f60001") -> dict[str, Any]:
    alert = dict(ALERTMANAGER_FIRING["alerts"][0], status=status, startsAt=starts_at, fingerprint=fingerprint)
    if status == "resolved":
        alert["endsAt"] = starts_at.replace("T10", "T11")
    return dict(ALERTMANAGER_FIRING, status=status, alerts=[alert])


def test_an_alert_that_fires_again_after_resolving_is_a_new_recommendation(bot: BotUnderTest) -> None:
    first = bot.ingest(_alert("firing", "2025-03-26T10:00:00Z"), path="/api/v1/alertmanager").json()["results"]
    assert first[0]["verdict"] == "surface" and not first[0]["duplicate"]
    resent = bot.ingest(_alert("firing", "2025-03-26T10:00:00Z"), path="/api/v1/alertmanager").json()["results"]
    assert resent[0]["id"] == first[0]["id"] and resent[0]["duplicate"]  # Alertmanager's repeat: recorded once
    resolved = bot.ingest(_alert("resolved", "2025-03-26T10:00:00Z"), path="/api/v1/alertmanager").json()
    assert resolved["outcomes"][0] == {
        "prediction_id": first[0]["id"],
        "result": "no_outcome",
        "recorded": False,
        "closed": True,
    }
    wait_for(lambda: len(bot.standin.calls("chat.postMessage")) == 1)
    real_clock = bot.bot.service.clock
    later = lambda: real_clock() + 3 * 86400  # noqa: E731 - days later, past the duplicate window
    bot.bot.service.clock = bot.bot.worker.clock = later
    again = bot.ingest(_alert("firing", "2025-03-29T10:00:00Z"), path="/api/v1/alertmanager").json()["results"]
    assert again[0]["id"] == "am:a1b2c3d4e5f60001@20250329T100000Z" != first[0]["id"]
    assert again[0]["verdict"] == "surface" and not again[0]["duplicate"]
    wait_for(lambda: len(bot.standin.calls("chat.postMessage")) == 2)  # the engineers hear of it again
    assert bot.counts()["predictions"] == 2


def test_an_alert_stored_before_episode_ids_still_resolves(bot: BotUnderTest) -> None:
    stored = prediction("am:0ldf1ngerpr1nt", fault_type="DiskWillFail", target="r12-n04:9100")
    assert bot.ingest(stored).status_code == 200  # the id an earlier version gave the firing alert
    resolved = bot.ingest(
        _alert("resolved", "2025-03-26T10:00:00Z", fingerprint="0ldf1ngerpr1nt"), path="/api/v1/alertmanager"
    )
    assert resolved.json()["outcomes"] == [
        {"prediction_id": "am:0ldf1ngerpr1nt", "result": "no_outcome", "recorded": False, "closed": True}
    ]
    unknown = bot.ingest(_alert("resolved", "2025-03-26T10:00:00Z", fingerprint="n0such"), path="/api/v1/alertmanager")
    (entry,) = unknown.json()["outcomes"]
    assert entry["prediction_id"] == "am:n0such@20250326T100000Z" and entry["recorded"] is False
    assert entry["result"] == "unknown_prediction" and "am:n0such@20250326T100000Z" in entry["error"]
    assert bot.counts()["outcomes"] == 0 and bot.bot.store.counts()["recommendations_open"] == 0


def _firing(fingerprint: str, instance: str | None, **annotations: str) -> dict[str, Any]:
    alert = ALERTMANAGER_FIRING["alerts"][0]
    labels = {k: v for k, v in alert["labels"].items() if k != "instance"}
    if instance is not None:
        labels["instance"] = instance
    return dict(alert, fingerprint=fingerprint, labels=labels, annotations=alert["annotations"] | annotations)


def test_one_malformed_alert_does_not_lose_the_rest_of_its_notification(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    first = bot.ingest(_alert("firing", "2025-03-26T10:00:00Z"), path="/api/v1/alertmanager").json()["results"]
    before = bot.counts()
    resolved = _alert("resolved", "2025-03-26T10:00:00Z")["alerts"][0]
    aggregated = _firing("b4d0000000000001", None)  # e.g. aggregated by namespace: no instance/host/node/pod
    good = _firing("900d000000000001", "r14-n02:9100")
    caplog.set_level(logging.WARNING)
    body = dict(ALERTMANAGER_FIRING, alerts=[resolved, aggregated, good])
    response = bot.ingest(body, path="/api/v1/alertmanager")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["id"] for r in answer["results"]] == ["am:900d000000000001@20250326T100000Z"]
    assert answer["results"][0]["verdict"] == "surface" and not answer["results"][0]["duplicate"]
    stored = bot.bot.store.prediction("am:900d000000000001@20250326T100000Z")
    assert stored is not None and stored.target == "r14-n02:9100"
    assert bot.bot.store.prediction("am:b4d0000000000001@20250326T100000Z") is None
    assert answer["outcomes"] == [
        {"prediction_id": first[0]["id"], "result": "no_outcome", "recorded": False, "closed": True}
    ]
    (refused,) = answer["errors"]
    assert refused["field"] == "alerts[1].labels.instance" and "instance" in refused["message"]
    after = bot.counts()
    assert (after["predictions"], after["decisions"], after["outcomes"]) == (
        before["predictions"] + 1,
        before["decisions"] + 1,
        before["outcomes"],  # the resolved alert did not say whether the fault was real
    )
    warned = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "alert refused" in r.getMessage()
    ]
    assert len(warned) == 1 and "alerts[1].labels.instance" in warned[0]


def test_a_flood_of_malformed_alerts_is_answered_and_logged_in_bounded_size(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [_firing(f"b4d{i:013x}", None) for i in range(LISTED_ALERT_ERRORS + 50)]  # no target label
    good = _firing("900d000000000002", "r14-n03:9100")
    caplog.set_level(logging.WARNING)
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[*bad, good]), path="/api/v1/alertmanager")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["id"] for r in answer["results"]] == ["am:900d000000000002@20250326T100000Z"]
    assert len(answer["errors"]) == LISTED_ALERT_ERRORS and answer["errors_omitted"] == 50
    assert answer["errors"][0]["field"] == "alerts[0].labels.instance"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warned = [message for message in warned if "Alertmanager" in message]
    assert len(warned) == LOGGED_ERRORS + 1
    assert f"{LISTED_ALERT_ERRORS + 50 - LOGGED_ERRORS} more alerts of this notification refused" in warned[-1]


def test_a_notification_without_a_usable_alert_is_refused_and_stores_nothing(bot: BotUnderTest) -> None:
    bot.ingest(_alert("firing", "2025-03-26T10:00:00Z"), path="/api/v1/alertmanager")
    before = bot.counts()
    bad = [
        _firing("b4d0000000000001", None),
        _firing("b4d0000000000002", "r14-n02:9100", time_to_fault="soon"),
        _firing("b4d0000000000003", "r14-n03:9100", confidence="very"),
        dict(_alert("resolved", "2025-03-26T10:00:00Z")["alerts"][0], status="pending"),
    ]
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=bad), path="/api/v1/alertmanager")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "alerts[0].labels.instance"
    assert bot.counts() == before


def test_outcomes_api(bot: BotUnderTest) -> None:
    bot.ingest(prediction("p1"))
    ok = bot.ingest({"prediction_id": "p1", "real_fault": False}, path="/api/v1/outcomes")
    assert ok.status_code == 200 and ok.json()["recorded"] is True
    unknown = bot.ingest({"prediction_id": "nope", "real_fault": True}, path="/api/v1/outcomes")
    assert unknown.status_code == 404 and unknown.json()["field"] == "prediction_id"
    bad = bot.ingest({"prediction_id": "p1", "real_fault": "yes"}, path="/api/v1/outcomes")
    assert bad.status_code == 422 and bad.json()["field"] == "real_fault"
    bot.ingest(prediction("p2"))
    before = time.time()
    late = bot.ingest({"prediction_id": "p2", "real_fault": True, "at": 1_700_000_000}, path="/api/v1/outcomes")
    assert late.status_code == 200
    with bot.bot.store.read() as conn:  # resolved long ago, received now: both kept (the summary counts arrival)
        at, recorded_at = conn.execute("SELECT at, recorded_at FROM outcomes WHERE prediction_id = 'p2'").fetchone()
    assert at == 1_700_000_000 and before - 1 <= recorded_at <= time.time() + 1


def test_a_storage_error_midway_through_a_list_of_outcomes_says_what_was_recorded(bot: BotUnderTest) -> None:
    """Each outcome of a list is recorded in a transaction of its own: when the database refuses the third, the first
    two are committed, and the 503 must not say "nothing was stored"; the retry records the third, each once."""
    for i in range(3):
        assert bot.ingest(prediction(f"o{i}", target=f"r{i}-n01")).status_code == 200
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        db.execute(  # a full disk, met at the third outcome
            "CREATE TRIGGER refuse_o2 BEFORE INSERT ON outcomes WHEN NEW.prediction_id = 'o2' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        db.commit()
    outcomes = [{"prediction_id": f"o{i}", "real_fault": True} for i in range(3)]
    refused = bot.ingest(outcomes, path="/api/v1/outcomes")
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    message = refused.json()["error"]
    assert "nothing was stored" not in message, message
    assert "first 2 outcome(s)" in message and "retry" in message, message
    assert bot.counts()["outcomes"] == 2

    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        db.execute("DROP TRIGGER refuse_o2")
        db.commit()
    retried = bot.ingest(outcomes, path="/api/v1/outcomes")
    assert retried.status_code == 200, retried.text
    assert [r["recorded"] for r in retried.json()["results"]] == [False, False, True]
    assert bot.counts()["outcomes"] == 3
    nothing = bot.ingest({"prediction_id": "o0", "real_fault": True}, path="/api/v1/outcomes")
    assert nothing.status_code == 200 and nothing.json()["recorded"] is False


def test_health_and_metrics(bot: BotUnderTest) -> None:
    bot.surface("p1")
    assert httpx.get(f"{bot.server.url}/healthz").json()["status"] == "ok"
    text = httpx.get(f"{bot.server.url}/metrics").text
    for name in (
        "npo_alignment_loss",
        "npo_answer_rate",
        "npo_threshold_posterior_mean",
        "npo_outbox_messages",
        "npo_http_request_duration_seconds_bucket",
    ):
        assert name in text
    assert httpx.get(f"{bot.server.url}/nope").status_code == 404


def test_a_prediction_whose_key_would_be_too_long_is_decided_with_the_rest_of_its_batch(bot: BotUnderTest) -> None:
    probe = "https://api.example.com/v1/health?" + "&".join(
        f"param_{c}=value_{c}" for c in "abcdefghijklmnopqrstuvwxyzAB"
    )
    long_one = prediction("probe-1", fault_type="ProbeFailedHTTPEndpointDown", target=probe)
    response = bot.ingest([prediction("ok-1"), long_one])  # each field fits; fault|action|target|band would not
    assert response.status_code == 200, response.text
    ok, probed = response.json()["results"]
    assert not ok["duplicate"] and not probed["duplicate"] and len(probed["key"]) <= 500
    assert probed["key"].startswith("ProbeFailedHTTPEndpointDown|investigate|https://api.example.com/v#/health?")
    assert bot.counts()["decisions"] == 2


def _raw(bot: BotUnderTest, path: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}", "Content-Type": "application/json"}
    return httpx.post(f"{bot.server.url}{path}", content=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/api/v1/predictions",
            b'{"id":"p1","fault_type":"f","target":"t","action":"a","confidence":' + b"1" * 5000 + b"}",
            "(body)",
        ),
        (
            "/api/v1/predictions",
            b'{"id":"p1","fault_type":"f","target":"t","action":"a","confidence":1' + b"0" * 400 + b"}",
            "confidence",
        ),
        (
            "/api/v1/predictions",
            b'{"id":"p1","fault_type":"f","target":"t","action":"a","confidence":0.5,"time_to_fault_s":1'
            + b"0" * 400
            + b"}",
            "time_to_fault_s",
        ),
        ("/api/v1/outcomes", b'{"prediction_id":"x","real_fault":true,"at":1' + b"0" * 400 + b"}", "at"),
    ],
    ids=["5000-digit integer", "confidence 10**400", "time_to_fault_s 10**400", "outcome at 10**400"],
)
def test_numbers_too_large_for_a_float_are_refused_by_field(
    bot: BotUnderTest, path: str, body: bytes, field: str
) -> None:
    before = bot.counts()
    response = _raw(bot, path, body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["field"] == field and bot.counts() == before


def test_an_alert_starting_beyond_the_calendar_in_utc_is_still_an_episode(bot: BotUnderTest) -> None:
    late = _alert("firing", "9999-12-31T23:59:59-14:00", fingerprint="f4r")  # 10000-01-01 in UTC
    response = bot.ingest(late, path="/api/v1/alertmanager")
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["id"].startswith("am:f4r@") and result["id"] != "am:f4r"


def test_a_confidence_out_of_range_is_refused_naming_the_label_it_was_sent_in(bot: BotUnderTest) -> None:
    """An out-of-range confidence was answered as ``alerts[0].confidence``, a field no alert has: the value came from
    the ``confidence`` label (or annotation), which is what the sender has to change."""
    before = bot.counts()
    alert = _firing("b4d0000000000021", "r14-n21:9100", confidence="")  # no annotation: the label is read
    alert = dict(alert, labels=alert["labels"] | {"confidence": "150%"})
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[alert]), path="/api/v1/alertmanager")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "alerts[0].labels.confidence"
    assert bot.counts() == before
    good = _firing("900d000000000021", "r14-n22:9100")
    annotated = _firing("b4d0000000000022", "r14-n23:9100", confidence="1.5")
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[good, alert, annotated]), path="/api/v1/alertmanager")
    assert response.status_code == 200, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["alerts[1].labels.confidence", "alerts[2].annotations.confidence"]
    assert bot.counts()["predictions"] == before["predictions"] + 1


def test_a_time_to_fault_of_many_blanks_is_refused_at_once(bot: BotUnderTest) -> None:
    """Blanks between a number and a letter that is no unit: the duration's pattern took time quadratic in their
    number (8 s for 60,000, 40 minutes of a core for a 1 MB notification), answering only then."""
    blanks = _firing("b14f000000000001", "r14-n01:9100", time_to_fault="1" + " " * 60_000 + "x")
    good = _firing("900d000000000003", "r14-n03:9100", time_to_fault="6 h")
    started = time.monotonic()
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[blanks, good]), path="/api/v1/alertmanager")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 200, response.text
    (refused,) = response.json()["errors"]
    assert refused["field"] == "alerts[0].annotations.time_to_fault"
    stored = bot.bot.store.prediction("am:900d000000000003@20250326T100000Z")
    assert stored is not None and stored.time_to_fault_s == 6 * 3600


def test_a_time_to_fault_of_several_units_is_taken_not_the_alert_refused(bot: BotUnderTest) -> None:
    """``1h30m`` (Prometheus's own duration syntax), Go's ``1h30m0s`` and ``humanizeDuration``'s ``1h 30m 0s`` were
    refused with the whole alert, which Alertmanager does not send again: the prediction was lost."""
    given = {"900d000000000011": "1h30m", "900d000000000012": "1h30m0s", "900d000000000013": "1h 30m 0s"}
    alerts = [_firing(fp, f"r15-n{i}:9100", time_to_fault=text) for i, (fp, text) in enumerate(given.items())]
    late = _firing("900d000000000014", "r15-n9:9100", time_to_fault="30m1h")  # units not largest first
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[*alerts, late]), path="/api/v1/alertmanager")
    assert response.status_code == 200, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["alerts[3].annotations.time_to_fault"]
    for fingerprint in given:
        stored = bot.bot.store.prediction(f"am:{fingerprint}@20250326T100000Z")
        assert stored is not None and stored.time_to_fault_s == 5400


def test_a_negative_zero_is_stored_and_shown_as_zero(bot: BotUnderTest) -> None:
    """JSON ``-0.0`` (and an Alertmanager ``-0%``) is a valid number in [0, 1], but it was kept negative: the reason
    stored and answered read ``R(s)=-0.000 < τ=…``, the score ``-0.0``, and a ``time_to_fault_s`` of ``-0.0`` was
    posted as "Predicted fault in *-0 s*"."""
    body = b'{"id":"nz1","fault_type":"f","target":"r12-z1","action":"investigate","confidence":-0.0}'
    response = _raw(bot, "/api/v1/predictions", body)
    assert response.status_code == 200 and "-0" not in response.text, response.text
    alert = _firing("2e40000000000001", "r12-z2:9100", confidence="-0%")
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[alert]), path="/api/v1/alertmanager")
    assert response.status_code == 200 and "-0" not in response.text, response.text
    for pid in ("nz1", "am:2e40000000000001@20250326T100000Z"):
        stored, decision = bot.bot.store.prediction(pid), bot.bot.store.decision(pid)
        assert stored is not None and decision is not None
        assert math.copysign(1.0, stored.confidence) == 1.0 and "-0" not in decision.reason, decision.reason
    soon = b'{"id":"nz3","fault_type":"f","target":"r12-z3","action":"investigate","confidence":0.99,'
    response = _raw(bot, "/api/v1/predictions", soon + b'"time_to_fault_s":-0.0}')
    assert response.status_code == 200 and response.json()["verdict"] == "surface", response.text
    bot.posted("nz3")
    (message,) = [m for m in bot.standin.messages(INCIDENT) if "nz3" in str(m.blocks)]
    assert "*0 s*" in str(message.blocks) and "-0 s" not in str(message.blocks)


def test_an_id_with_surrounding_blanks_is_the_same_prediction(bot: BotUnderTest) -> None:
    """The id kept its surrounding blanks where fault type, target and action lose theirs: ``" p-sp"`` and ``"p-sp"``
    were two predictions (two recommendations in the channel), and an outcome for ``p-sp`` missed ``" p-sp"``."""
    first = bot.ingest(prediction(" p-sp\t", target="r12-sp"))
    assert first.status_code == 200 and first.json()["id"] == "p-sp", first.text
    again = bot.ingest(prediction("p-sp", target="r12-sp"))
    assert again.status_code == 200 and again.json()["id"] == "p-sp" and again.json()["duplicate"] is True
    other = bot.ingest(prediction("p-sp", target="r12-elsewhere"))  # another target: only the id makes it the same
    assert other.status_code == 409 and other.json()["id"] == "p-sp", other.text
    batch = bot.ingest([prediction("q-sp ", target="r12-q"), prediction("q-sp", target="r12-q")])
    assert [(r["id"], r["duplicate"]) for r in batch.json()["results"]] == [("q-sp", False), ("q-sp", True)]
    assert bot.counts()["predictions"] == 2
    outcome = bot.ingest({"prediction_id": " p-sp ", "real_fault": True}, path="/api/v1/outcomes")
    assert outcome.status_code == 200 and outcome.json()["prediction_id"] == "p-sp", outcome.text
    assert outcome.json()["recorded"] is True and bot.counts()["outcomes"] == 1
    before = bot.counts()
    for body, path, field in (
        (prediction(" \t "), "/api/v1/predictions", "id"),
        ({"prediction_id": "  ", "real_fault": True}, "/api/v1/outcomes", "prediction_id"),
    ):
        refused = bot.ingest(body, path=path)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    assert bot.counts() == before


def test_a_channel_with_surrounding_blanks_is_posted_to_that_channel(bot: BotUnderTest) -> None:
    """A ``channel`` (or an alert's ``slack_channel`` label) with a stray blank was accepted and decided, and its
    recommendation then failed for good at Slack (``channel_not_found``): never shown, with a 200 to the sender."""
    assert bot.surface("ch1", channel=f" {INCIDENT}\n") == bot.posted("ch1")
    alert = _firing("c4a0000000000001", "r12-ch2:9100")
    alert = dict(alert, labels=alert["labels"] | {"slack_channel": f"{INCIDENT} "})
    response = bot.ingest(dict(ALERTMANAGER_FIRING, alerts=[alert]), path="/api/v1/alertmanager")
    assert response.status_code == 200 and response.json()["results"][0]["verdict"] == "surface", response.text
    channel, _ = bot.posted("am:c4a0000000000001@20250326T100000Z")
    assert channel == INCIDENT


CONTROLS = ("\x07", "\x1b[2J", "\x7f", "\x85", "\u2028", "\r", "\n", "\t")


def test_a_control_character_in_a_name_is_refused_naming_its_field(bot: BotUnderTest) -> None:
    """A bell, a terminal escape, DEL, a C1 control or a line separator inside an id, fault type, target, action or
    channel was stored, posted to Slack and written to logs as it came (only NUL was refused). Refused now with 422
    naming the field, as NUL is, and nothing of the request stored; surrounding blanks still just drop."""
    before = bot.counts()
    for control in CONTROLS:
        for field in ("id", "fault_type", "target", "action", "channel"):
            body = prediction("cc1", target="r1-cc1") | {field: f"a{control}b"}
            answer = bot.ingest([prediction("cc0", target="r1-cc0"), body])
            assert (answer.status_code, answer.json()["field"]) == (422, f"[1].{field}"), (control, answer.text)
            assert "control character" in answer.json()["error"], answer.text
    assert bot.counts() == before
    assert bot.ingest(prediction(" cc2\t", target="r1-cc2\n")).status_code == 200


def test_labels_with_control_characters_and_mrkdwn_are_shown_harmlessly(bot: BotUnderTest) -> None:
    """Labels are free text, taken as they come; in the posted message their control characters are shown as
    escapes (``\\x1b``, ``\\n``) — never a raw bell, terminal escape or line break — and ``&``, ``<``, ``>`` are
    escaped, so a label cannot mention the channel."""
    labels = {"note": "<!channel> & <@U0BOSS>\x1b[31m\x07\u2028x\x7f\ny", "k\x1b": "v"}
    assert bot.ingest(prediction("cl1", target="r1-cl1", labels=labels)).status_code == 200
    bot.posted("cl1")
    (message,) = [m for m in bot.standin.messages(INCIDENT) if "cl1" in str(m.blocks)]
    (context,) = [b for b in message.blocks if b.get("block_id") == "npo_context"]
    text = context["elements"][0]["text"]
    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;\\x1b[31m\\x07\\u2028x\\x7f\\ny" in text, text
    assert "k\\x1b=v" in text, text
    shown = json.dumps(message.blocks) + (message.text or "")
    assert not any(c in shown for c in ("\x07", "\x1b", "\x7f", "\u2028", "<!channel>")), shown


@pytest.mark.parametrize("label", ["target_class", "cluster"])
def test_a_control_character_in_a_label_read_as_a_name_is_refused_naming_the_label(
    bot: BotUnderTest, label: str
) -> None:
    """``target_class`` is part of the scenario key and ``cluster`` names the blast-radius domain: like the other
    names they may hold no control character. Before, a NUL in ``target_class`` passed ingest and failed the
    decision's key check, an uncaught error (500), and other control characters went into keys, Slack and logs.
    Surrounding blanks stay allowed, as in the other names; other labels are free text."""
    before = bot.counts()
    for control in ("\x00", *CONTROLS):
        body = prediction("lc1", target="r1-lc1", labels={label: f"a{control}b"})
        answer = bot.ingest([prediction("lc0", target="r1-lc0"), body])
        assert (answer.status_code, answer.json()["field"]) == (422, f"[1].labels.{label}"), (control, answer.text)
        assert "control character" in answer.json()["error"], answer.text
    assert bot.counts() == before
    assert bot.ingest(prediction("lc2", target="r1-lc2", labels={label: " web\n"})).status_code == 200
