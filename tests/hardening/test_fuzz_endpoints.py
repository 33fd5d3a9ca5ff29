"""Malformed input that was accepted, or mishandled, instead of refused by field — over real HTTP against one
running bot and its SQLite file.

The fuzzing in ``test_hardening_fuzz.py`` checks that a refused request changes nothing; these properties check
the other side: a request that is *accepted* stored exactly what was sent. A field of the wrong type is refused
with 4xx naming it and commits nothing; it is never quietly turned into a default (``"severity": false`` stored
as ``warning``, ``"labels": []`` as no labels, an outcome's ``"source": ""`` as ``api``) or into its Python
``str()`` (an Alertmanager label ``"instance": ["a", "b"]`` stored as the target ``['a', 'b']``).

Then regressions for the Slack side found by the same runs: ``/npo mute`` with a key longer than any scenario key
(a database CHECK failure answered "Sorry, NPO could not answer"), Events API deliveries whose ``event_id`` is not
an id (claimed in SQLite under its ``str()`` before any listener ran), and an override modal whose
``private_metadata`` is nested too deeply to decode (answered "could not store … submit again").
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from itertools import count
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hardening_testing import WriteWatch, fuzz, hostile_values, json_body, signed_bytes_headers
from hypothesis import given
from hypothesis import strategies as st
from slack_testing import ALICE, INCIDENT, SECRET, BotUnderTest, prediction

from bot.slack.blocks import OVERRIDE_CALLBACK_ID, REASON_ACTION_ID, REASON_BLOCK_ID

FORM = "application/x-www-form-urlencoded"
_ids = count()


def _fresh(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@pytest.fixture(scope="module")
def watch(fuzz_bot: BotUnderTest) -> Iterator[WriteWatch]:
    w = WriteWatch(fuzz_bot.bot.settings.db_path)
    yield w
    w.close()


def _post(http: httpx.Client, bot: BotUnderTest, path: str, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bot.bot.settings.ingest_token}", "Content-Type": "application/json"}
    return http.post(path, content=json_body(body), headers=headers)


def _refused(response: httpx.Response, field: str) -> bool:
    """A 4xx naming ``field`` (or a part of it: ``labels.k`` for ``labels``)."""
    if not 400 <= response.status_code < 500:
        return False
    named = response.json().get("field", "")
    return bool(response.json().get("error")) and (named == field or named.startswith((f"{field}.", f"{field}[")))


# Values that are falsy, truthy, of a near-miss type, or valid — with Hypothesis' hostile values besides.
confusing = st.one_of(
    st.sampled_from(
        [False, True, 0, 1, 0.0, "", " ", [], {}, ["warning"], {"a": "b"}, {"a": 1}, "warning", "info", 3600, "C0X"]
    ),
    hostile_values,
)
OPTIONAL_PREDICTION_FIELDS = ("severity", "time_to_fault_s", "labels", "channel")
DEFAULTS: dict[str, Any] = {"severity": "warning", "time_to_fault_s": None, "labels": {}, "channel": None}


# -- the ingest API: accepted means stored as sent ---------------------------------------------------------------------
@fuzz(300)
@given(name=st.sampled_from(OPTIONAL_PREDICTION_FIELDS), value=confusing)
def test_fuzz_an_accepted_prediction_is_stored_as_sent(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, name: str, value: Any
) -> None:
    pid = _fresh("fe-p")
    body = prediction(pid, target=f"r1-{pid}", labels={"cluster": "r1"}, channel=INCIDENT) | {name: value}
    before = watch.version()
    response = _post(http, fuzz_bot, "/api/v1/predictions", body)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert _refused(response, name), (name, value, response.status_code, response.text[:300])
        assert watch.version() == before, f"{name}={value!r} was refused but the database changed"
        return
    stored = fuzz_bot.bot.store.prediction(pid)
    assert stored is not None
    got = {
        "severity": stored.severity.value,
        "time_to_fault_s": stored.time_to_fault_s,
        "labels": dict(stored.labels),
        "channel": stored.channel,
    }
    expected = DEFAULTS[name] if value is None else value
    if name == "time_to_fault_s" and type(value) is int:
        expected = float(value)  # seconds are stored as a float (an integer beyond 2**53 is rounded)
    assert got[name] == expected and type(got[name]) is not bool, f"sent {name}={value!r}, stored {got[name]!r}"


@fuzz(150)
@given(source=confusing)
def test_fuzz_an_accepted_outcome_is_stored_with_the_source_sent(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, source: Any
) -> None:
    pid = _fresh("fe-o")
    assert _post(http, fuzz_bot, "/api/v1/predictions", prediction(pid, target=f"r2-{pid}")).status_code == 200
    before = watch.version()
    response = _post(http, fuzz_bot, "/api/v1/outcomes", {"prediction_id": pid, "real_fault": True, "source": source})
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert _refused(response, "source"), (source, response.text[:300])
        assert watch.version() == before, f"source={source!r} was refused but the database changed"
        return
    conn = sqlite3.connect(fuzz_bot.bot.settings.db_path)
    try:
        (stored,) = conn.execute("SELECT source FROM outcomes WHERE prediction_id = ?", (pid,)).fetchone()
    finally:
        conn.close()
    assert stored == ("api" if source is None else source), f"sent source={source!r}, stored {stored!r}"


LABEL_NAMES = ("alertname", "instance", "severity", "cluster", "slack_channel", "fault_type")


@fuzz(200)
@given(name=st.sampled_from(LABEL_NAMES), value=confusing, place=st.sampled_from(["labels", "common", "annotation"]))
def test_fuzz_an_accepted_alert_keeps_its_labels_as_sent(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, name: str, value: Any, place: str
) -> None:
    """One hostile label value (in the alert or in ``commonLabels``) or annotation, next to a good alert: the good
    alert is decided; the other is stored with exactly the labels sent, or refused naming the label — never stored
    with ``str(value)``."""
    fingerprint = _fresh("fe-a")
    labels: dict[str, Any] = {"alertname": "DiskFailing", "instance": f"{fingerprint}:9100", "severity": "critical"}
    alert: dict[str, Any] = {"status": "firing", "labels": labels, "fingerprint": fingerprint}
    body: dict[str, Any] = {"version": "4", "status": "firing"}
    if place == "annotation":
        alert["annotations"] = {"action": value}
        where = "alerts[1].annotations.action"
    elif place == "common":
        labels.pop(name, None)
        body["commonLabels"] = {name: value}
        where = f"commonLabels.{name}"
    else:
        labels[name] = value
        where = f"alerts[1].labels.{name}"
    good_labels = {"alertname": "Ok", "instance": f"ok-{fingerprint}"}
    body["alerts"] = [{"status": "firing", "labels": good_labels, "fingerprint": f"ok-{fingerprint}"}, alert]
    before = watch.version()
    response = _post(http, fuzz_bot, "/api/v1/alertmanager", body)
    assert response.status_code < 500, response.text
    if response.status_code != 200:  # a malformed commonLabels, or text that is not valid Unicode
        # (a common label that is a string but unusable — a 1,000-character channel — spoils both alerts)
        unusable = place == "common" and isinstance(value, str) and response.status_code == 422
        assert _refused(response, where) or unusable, (where, value, response.text[:300])
        assert watch.version() == before
        return
    answer = response.json()
    assert any(r["id"] == f"am:ok-{fingerprint}" for r in answer["results"]), answer
    mine = [r for r in answer["results"] if r["id"] == f"am:{fingerprint}"]
    if not mine:  # refused: naming this value, or (a string that is not a usable target, action…) another field
        (error,) = answer["errors"]
        assert error["field"] == where or isinstance(value, str), (where, value, error)
        return
    if mine[0]["duplicate"]:
        return  # the same fault type, target and action as an earlier example's alert: not stored again
    stored = fuzz_bot.bot.store.prediction(mine[0]["id"])
    assert stored is not None
    sent = body.get("commonLabels", {}) | labels
    assert dict(stored.labels) == {k: v for k, v in sent.items() if v is not None}, (where, value, stored.labels)
    if place == "annotation":
        assert stored.action == ((value or "").strip() or "investigate"), (value, stored.action)


# -- the ingest API: the regressions, one by one ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"severity": False}, "severity"),
        ({"severity": 0}, "severity"),
        ({"severity": ""}, "severity"),
        ({"severity": []}, "severity"),
        ({"severity": {}}, "severity"),
        ({"labels": []}, "labels"),
        ({"labels": ""}, "labels"),
        ({"labels": 0}, "labels"),
        ({"labels": False}, "labels"),
    ],
    ids=repr,
)
def test_a_falsy_severity_or_labels_of_the_wrong_type_is_refused_not_defaulted(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, change: dict[str, Any], field: str
) -> None:
    pid = _fresh("fe-falsy")
    with watch.unchanged(f"prediction with {change}"):
        response = _post(http, fuzz_bot, "/api/v1/predictions", prediction(pid) | change)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert fuzz_bot.bot.store.prediction(pid) is None


def test_severity_and_labels_sent_as_null_still_take_their_defaults(http: httpx.Client, fuzz_bot: BotUnderTest) -> None:
    pid = _fresh("fe-null")
    response = _post(http, fuzz_bot, "/api/v1/predictions", prediction(pid, severity=None, labels=None))
    assert response.status_code == 200, response.text
    stored = fuzz_bot.bot.store.prediction(pid)
    assert stored is not None and stored.severity.value == "warning" and dict(stored.labels) == {}


@pytest.mark.parametrize("source", ["", 0, False, []], ids=repr)
def test_an_outcome_source_of_the_wrong_type_is_refused_not_defaulted(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, source: Any
) -> None:
    pid = _fresh("fe-src")
    assert _post(http, fuzz_bot, "/api/v1/predictions", prediction(pid)).status_code == 200
    with watch.unchanged(f"outcome with source {source!r}"):
        response = _post(
            http, fuzz_bot, "/api/v1/outcomes", {"prediction_id": pid, "real_fault": True, "source": source}
        )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "source"


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"alertname": "X", "instance": ["a", "b"]}, "alerts[0].labels.instance"),
        ({"alertname": {"x": 1}, "instance": "h1"}, "alerts[0].labels.alertname"),
        ({"alertname": 5, "instance": "h1"}, "alerts[0].labels.alertname"),
        ({"alertname": "X", "instance": True}, "alerts[0].labels.instance"),
        ({"alertname": "X", "instance": "h1", "cluster": [[[]]]}, "alerts[0].labels.cluster"),
        ({"alertname": "X", "instance": "h1", "slack_channel": 7}, "alerts[0].labels.slack_channel"),
    ],
    ids=repr,
)
def test_an_alert_label_that_is_not_a_string_is_refused_by_name(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, labels: dict[str, Any], field: str
) -> None:
    alert = {"status": "firing", "labels": labels, "fingerprint": _fresh("fe-lbl")}
    with watch.unchanged(f"alert labels {labels}"):
        response = _post(http, fuzz_bot, "/api/v1/alertmanager", {"alerts": [alert]})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and "string" in response.json()["error"]
    # Next to a good alert, only the bad one is refused (Alertmanager does not retry a 4xx).
    ok = _fresh("fe-ok")
    good = {"status": "firing", "labels": {"alertname": "Ok", "instance": ok}, "fingerprint": ok}
    response = _post(http, fuzz_bot, "/api/v1/alertmanager", {"alerts": [good, alert]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["id"] for r in answer["results"]] == [f"am:{good['fingerprint']}"]
    assert [e["field"] for e in answer["errors"]] == [field.replace("alerts[0]", "alerts[1]")]
    assert fuzz_bot.bot.store.prediction(f"am:{alert['fingerprint']}") is None


def test_common_labels_that_are_not_strings_refuse_the_notification(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch
) -> None:
    body = {
        "commonLabels": {"instance": {"host": "h1"}},
        "alerts": [{"status": "firing", "labels": {"alertname": "Z"}, "fingerprint": _fresh("fe-common")}],
    }
    with watch.unchanged("commonLabels of the wrong type"):
        response = _post(http, fuzz_bot, "/api/v1/alertmanager", body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "commonLabels.instance"


# -- Slack -------------------------------------------------------------------------------------------------------------
def _signed(http: httpx.Client, body: bytes, content_type: str) -> httpx.Response:
    return http.post("/slack/events", content=body, headers=signed_bytes_headers(SECRET, body, content_type))


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_mute_key_longer_than_any_key_is_refused_by_name(
    fuzz_bot: BotUnderTest, watch: WriteWatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    for key in ("k" * 501, "disk_failure|investigate|" + "r" * 5000):
        with watch.unchanged("a mute of an over-long key"):
            response = fuzz_bot.standin.slash_command(
                fuzz_bot.events_url, SECRET, "/npo", f"mute {key} 1h", ALICE, INCIDENT
            )
        assert response.status_code == 200, response.text
        text = response.json()["text"]
        assert text.startswith("Not muted: a key is at most 500 characters"), text
        assert f"has {len(key)}" in text
    assert _errors_logged(caplog) == []
    longest = "k" * 500  # as long as a key can be: muted
    response = fuzz_bot.standin.slash_command(
        fuzz_bot.events_url, SECRET, "/npo", f"mute {longest} 1h", ALICE, INCIDENT
    )
    assert "is muted until" in response.json()["text"]


def _event(event_id: Any = "Ev0FE", **changes: Any) -> bytes:
    envelope: dict[str, Any] = {
        "type": "event_callback",
        "team_id": "T0STANDIN",
        "event": {"type": "app_home_opened", "user": ALICE, "tab": "home"},
        "event_id": event_id,
        "event_time": 1,
    }
    envelope |= changes
    return json.dumps({k: v for k, v in envelope.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_event(5), "event_id"),
        (_event(True), "event_id"),
        (_event(["Ev0FE1"]), "event_id"),
        (_event({"id": "Ev0FE2"}), "event_id"),
        (_event(""), "event_id"),
        (_event("E" * 201), "event_id"),
        (_event(None), "event_id"),
        (_event(...), "event_id"),
        (_event("Ev0FE3", event=...), "event"),
        (_event("Ev0FE4", event={"user": ALICE}), "event.type"),
        (_event("Ev0FE5", event={"type": ""}), "event.type"),
    ],
    ids=[
        "id int",
        "id true",
        "id list",
        "id object",
        "id empty",
        "id 201 chars",
        "id null",
        "no id",
        "no event",
        "event without type",
        "event type empty",
    ],
)
def test_an_event_delivery_without_a_usable_event_id_is_refused_and_claims_nothing(
    http: httpx.Client, watch: WriteWatch, body: bytes, field: str
) -> None:
    with watch.unchanged(f"event_callback with a bad {field}"):
        response = _signed(http, body, "application/json")
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_an_event_with_a_real_id_is_still_claimed_once(http: httpx.Client, fuzz_bot: BotUnderTest) -> None:
    before = fuzz_bot.counts()["processed_requests"]
    body = _event("Ev0FEGOOD")
    assert _signed(http, body, "application/json").status_code == 200
    assert _signed(http, body, "application/json").status_code == 200
    assert fuzz_bot.counts()["processed_requests"] == before + 1


def test_override_metadata_nested_too_deeply_is_not_reported_as_a_storage_failure(
    http: httpx.Client, watch: WriteWatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    selected = {"type": "static_select", "selected_option": {"value": "maintenance"}}
    payload = {
        "type": "view_submission",
        "user": {"id": ALICE},
        "view": {
            "id": "V0FEDEEP",
            "type": "modal",
            "callback_id": OVERRIDE_CALLBACK_ID,
            "private_metadata": "[" * 1500 + "]" * 1500,  # fits Slack's 3000 characters
            "state": {"values": {REASON_BLOCK_ID: {REASON_ACTION_ID: selected}}},
        },
    }
    with watch.unchanged("an override without a readable recommendation"):
        response = _signed(http, urlencode({"payload": json.dumps(payload)}).encode(), FORM)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response_action"] == "errors"
    error = answer["errors"][REASON_BLOCK_ID]
    assert error.startswith("Not recorded") and "could not store" not in error, error
    assert _errors_logged(caplog) == []
