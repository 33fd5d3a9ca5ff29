"""A resolved Alertmanager alert is not, by itself, a real fault.

NPO's alerts are fault *predictions*; an alert resolves when its condition clears, after a real fault was fixed or
when a false alarm went away. These tests run the real bot over HTTP (uvicorn, the Slack stand-in, a SQLite file)
and check what a resolved alert teaches: nothing, unless it says (annotation ``npo_outcome``) or the team set
``NPO_ALERTMANAGER_RESOLVED=real_fault`` — while it still closes the recommendation.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

SLACK_TESTS = Path(__file__).resolve().parent.parent / "slack"
if str(SLACK_TESTS) not in sys.path:
    sys.path.insert(0, str(SLACK_TESTS))  # slack_testing: constants, BotUnderTest, the Slack tests' conftest

from slack_testing import (  # noqa: E402
    ALICE,
    INCIDENT,
    OPS,
    SECRET,
    TOKEN,
    BotUnderTest,
    alertmanager_notification,
    load_slack_conftest,
    make_settings,
    wait_for,
)

from bot.app import build_bot  # noqa: E402
from bot.config import ConfigError, load_settings  # noqa: E402
from bot.standin import StandIn  # noqa: E402

_slack = load_slack_conftest("slack_tests_conftest_bot_resolved")
loopback_only = _slack.loopback_only  # type: ignore[attr-defined]
standin = _slack.standin  # type: ignore[attr-defined]
settings = _slack.settings  # type: ignore[attr-defined]
bot = _slack.bot  # type: ignore[attr-defined]

AM = "/api/v1/alertmanager"
START = "2025-03-26T10:00:00Z"


def _alert(fingerprint: str, status: str = "firing", **annotations: str) -> dict[str, Any]:
    """One alert as Alertmanager 0.27 sends it; resolved one hour after it fired."""
    return {
        "status": status,
        "labels": {"alertname": "DiskWillFail", "instance": f"r12-{fingerprint}:9100", "severity": "critical"},
        "annotations": {"summary": "the disk will fail within 6 h"} | annotations,
        "startsAt": START,
        "endsAt": "2025-03-26T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def _send(bot: BotUnderTest, *alerts: dict[str, Any]) -> dict[str, Any]:
    response = bot.ingest(alertmanager_notification(*alerts), path=AM)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _arms(bot: BotUnderTest) -> list[tuple[float, float]]:
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        return [(float(a), float(b)) for a, b in db.execute("SELECT alpha, beta FROM bandit_arms ORDER BY arm")]


def test_a_suppressed_prediction_whose_alert_resolves_is_not_a_missed_fault(bot: BotUnderTest) -> None:
    """The defect: the resolved notification of a suppressed prediction was recorded as a real fault, so the
    bandit counted a missed fault (miss weight on every τ that suppressed it) and m(k) moved towards "agree"."""
    fired = _send(bot, _alert("5e1", confidence="0.05"))
    (decision,) = fired["results"]
    assert decision["verdict"] == "suppress", decision
    arms, keys = _arms(bot), bot.bot.store.keys()
    resolved = _send(bot, _alert("5e1", "resolved", confidence="0.05"))
    assert _arms(bot) == arms  # no miss term
    assert bot.bot.store.keys() == keys  # m(k) untouched
    assert bot.counts()["outcomes"] == 0
    assert resolved["outcomes"] == [
        {"prediction_id": decision["id"], "result": "no_outcome", "recorded": False, "closed": False}
    ]
    (audited,) = [d for _, _, _, subject, d in bot.bot.store.audit_entries(kind="alert_resolved")]
    assert audited == {"real_fault": None, "source": "alertmanager", "closed": False, "verdict": "suppress"}


def _override(bot: BotUnderTest, message: tuple[str, str]) -> None:
    """Alice presses Override ("false alarm") and gives a reason."""
    assert bot.click(ALICE, "npo_override", message).status_code == 200
    submitted = bot.standin.submit_view(
        bot.events_url, SECRET, user_id=ALICE, values={"reason": {"reason": "false_positive"}}
    )
    assert submitted.status_code == 200, submitted.text
    wait_for(lambda: bot.counts()["feedback"] == 1)


def test_an_engineer_who_pressed_override_is_not_penalised_when_the_alert_resolves(bot: BotUnderTest) -> None:
    """The defect, for trust: Override on a prediction whose alert then resolved counted as disagreeing with a
    real fault, so the engineer who was right lost trust."""
    fired = _send(bot, _alert("0a1"))
    (decision,) = fired["results"]
    assert decision["verdict"] == "surface", decision
    _override(bot, bot.posted(decision["id"]))
    before = bot.bot.store.trust().get(ALICE)
    resolved = _send(bot, _alert("0a1", "resolved"))
    assert bot.bot.store.trust().get(ALICE) == before
    assert bot.counts()["outcomes"] == 0
    assert resolved["outcomes"] == [
        {"prediction_id": decision["id"], "result": "no_outcome", "recorded": False, "closed": True}
    ]


def test_a_closed_prediction_still_takes_its_real_outcome_later(bot: BotUnderTest) -> None:
    """Closing without an outcome does not take the outcome's place (the first one wins): the outcome reported
    afterwards (``/api/v1/outcomes``, here "a real fault") is recorded and learnt from — the missed fault it was."""
    (decision,) = _send(bot, _alert("5e2", confidence="0.05"))["results"]
    assert decision["verdict"] == "suppress"
    _send(bot, _alert("5e2", "resolved"))
    outcome = {"prediction_id": decision["id"], "real_fault": True}
    answer = bot.ingest(outcome, path="/api/v1/outcomes").json()
    assert answer == {"prediction_id": decision["id"], "recorded": True, "missed_fault": True}
    weight = bot.bot.store.config.bandit.miss_weight
    assert _arms(bot) == [(1.0, 1.0 + weight)] * 5  # every τ suppressed it: each pays the miss weight
    assert bot.counts()["outcomes"] == 1


def test_an_override_is_credited_by_the_outcome_reported_later(bot: BotUnderTest) -> None:
    (decision,) = _send(bot, _alert("0a2"))["results"]
    _override(bot, bot.posted(decision["id"]))
    _send(bot, _alert("0a2", "resolved"))
    before = bot.bot.store.trust()[ALICE]
    outcome = {"prediction_id": decision["id"], "real_fault": False}
    assert bot.ingest(outcome, path="/api/v1/outcomes").json()["recorded"] is True
    after = bot.bot.store.trust()[ALICE]
    assert (after.agree, after.n_outcome) == (before.agree + 1, before.n_outcome + 1)  # Override was right
    assert after.disagree == before.disagree


def _drain(fingerprint: str, status: str = "firing", **annotations: str) -> dict[str, Any]:
    alert = _alert(fingerprint, status, action="drain", **annotations)
    alert["labels"] |= {"cluster": "rack7"}
    return alert


def test_a_resolved_alert_frees_its_blast_radius_without_an_outcome(bot: BotUnderTest) -> None:
    """The default policy allows two open disruptive recommendations per cluster: a third drain is blocked until
    one of the alerts resolves — which closes its recommendation though it says nothing about the fault."""
    first = _send(bot, _drain("d01"), _drain("d02"))["results"]
    assert [r["verdict"] for r in first] == ["surface", "surface"]
    assert bot.bot.store.counts()["recommendations_open"] == 2
    (blocked,) = _send(bot, _drain("d03"))["results"]
    assert (blocked["verdict"], blocked["rule"]) == ("block", "blast_radius")
    (entry,) = _send(bot, _drain("d01", "resolved"))["outcomes"]
    assert (entry["result"], entry["closed"]) == ("no_outcome", True)
    assert bot.bot.store.counts()["recommendations_open"] == 1
    (fourth,) = _send(bot, _drain("d04"))["results"]
    assert fourth["verdict"] == "surface", fourth
    assert bot.counts()["outcomes"] == 0


def test_a_resent_resolved_notification_is_recorded_once(bot: BotUnderTest) -> None:
    (decision,) = _send(bot, _alert("2e1"))["results"]
    first = _send(bot, _alert("2e1", "resolved"))["outcomes"]
    again = _send(bot, _alert("2e1", "resolved"))["outcomes"]
    assert [e["closed"] for e in first + again] == [True, False]
    assert [e["result"] for e in first + again] == ["no_outcome", "no_outcome"]
    assert len(bot.bot.store.audit_entries(kind="alert_resolved")) == 1
    assert bot.bot.store.counts()["recommendations_open"] == 0
    assert bot.counts()["outcomes"] == 0 and decision["verdict"] == "surface"


def test_a_resolved_alert_that_says_is_an_outcome_with_its_truth(bot: BotUnderTest) -> None:
    """Annotation ``npo_outcome``: ``real_fault`` or ``false_alarm`` in any case, surrounding blanks ignored;
    ``commonAnnotations`` fill a gap; the first outcome wins over a later resolved alert that says otherwise."""
    fired = _send(bot, _alert("a01", confidence="0.05"), _alert("a02", confidence="0.05"), _alert("a03"))
    ids = [r["id"] for r in fired["results"]]
    assert [r["verdict"] for r in fired["results"]] == ["suppress", "suppress", "surface"]
    body = alertmanager_notification(
        _alert("a01", "resolved", npo_outcome=" Real_Fault "),
        _alert("a02", "resolved", npo_outcome="FALSE_ALARM"),
        _alert("a03", "resolved", npo_outcome=""),  # empty (a template that did not know): the common one
    )
    body["commonAnnotations"] = {"npo_outcome": "false_alarm"}
    answer = bot.ingest(body, path=AM).json()
    assert answer["outcomes"] == [
        {"prediction_id": ids[0], "result": "outcome", "real_fault": True, "recorded": True, "missed_fault": True},
        {"prediction_id": ids[1], "result": "outcome", "real_fault": False, "recorded": True, "missed_fault": False},
        {"prediction_id": ids[2], "result": "outcome", "real_fault": False, "recorded": True, "missed_fault": False},
    ]
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        stored = db.execute("SELECT prediction_id, real_fault, source FROM outcomes ORDER BY prediction_id").fetchall()
    assert stored == [(ids[0], 1, "alertmanager"), (ids[1], 0, "alertmanager"), (ids[2], 0, "alertmanager")]
    assert bot.bot.store.counts()["recommendations_open"] == 0
    later = _send(bot, _alert("a02", "resolved", npo_outcome="real_fault"))["outcomes"]
    assert later == [
        {"prediction_id": ids[1], "result": "outcome", "real_fault": True, "recorded": False, "missed_fault": False}
    ]
    assert bot.counts()["outcomes"] == 3


def test_a_resolved_alert_that_says_after_one_that_did_not_is_still_an_outcome(bot: BotUnderTest) -> None:
    """A sender that learns the truth later resolves the alert again with the annotation (Alertmanager keeps the
    newest annotations): the closure before it does not stand in its way."""
    (decision,) = _send(bot, _alert("b01", confidence="0.05"))["results"]
    closed = _send(bot, _alert("b01", "resolved"))["outcomes"]
    said = _send(bot, _alert("b01", "resolved", npo_outcome="real_fault"))["outcomes"]
    assert [e["result"] for e in closed + said] == ["no_outcome", "outcome"]
    assert said[0]["recorded"] is True and said[0]["missed_fault"] is True
    assert bot.counts()["outcomes"] == 1 and decision["verdict"] == "suppress"


def test_an_npo_outcome_that_cannot_be_read_is_no_outcome_and_says_why(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """Not refused (Alertmanager does not retry: the recommendation would stay open for ever) and not guessed."""
    bot.bot.service.alertmanager_resolved = "real_fault"  # not even then: the sender meant something else
    (decision,) = _send(bot, _alert("c01"))["results"]
    caplog.set_level(logging.WARNING)
    (entry,) = _send(bot, _alert("c01", "resolved", npo_outcome="false-alarm"))["outcomes"]
    assert entry == {
        "prediction_id": decision["id"],
        "result": "no_outcome",
        "recorded": False,
        "closed": True,
        "warning": "alerts[0].annotations.npo_outcome must be real_fault or false_alarm, got 'false-alarm'",
    }
    assert bot.counts()["outcomes"] == 0
    warned = [r.getMessage() for r in caplog.records if "npo_outcome" in r.getMessage()]
    assert len(warned) == 1 and "'false-alarm'" in warned[0]


def test_with_the_setting_real_fault_a_resolved_alert_that_does_not_say_is_a_real_fault(bot: BotUnderTest) -> None:
    """``NPO_ALERTMANAGER_RESOLVED=real_fault``, for teams whose resolved alerts do mean the predicted fault
    happened: the behaviour before the default changed. An alert that says ``false_alarm`` is still one."""
    bot.bot.service.alertmanager_resolved = "real_fault"
    fired = _send(bot, _alert("e01", confidence="0.05"), _alert("e02"))["results"]
    ids = [r["id"] for r in fired]
    answer = _send(bot, _alert("e01", "resolved"), _alert("e02", "resolved", npo_outcome="false_alarm"))
    assert answer["outcomes"] == [
        {"prediction_id": ids[0], "result": "outcome", "real_fault": True, "recorded": True, "missed_fault": True},
        {"prediction_id": ids[1], "result": "outcome", "real_fault": False, "recorded": True, "missed_fault": False},
    ]
    assert bot.bot.store.audit_entries(kind="alert_resolved") == []


def test_unknown_and_pre_episode_predictions(bot: BotUnderTest) -> None:
    """A resolved alert of no known prediction says so; one of a prediction stored under the plain
    ``am:<fingerprint>`` id (before episode ids) closes that one."""
    stored = {"id": "am:0ldf1ngerpr1nt", "fault_type": "DiskWillFail", "target": "r12-n04:9100"}
    assert bot.ingest(stored | {"action": "investigate", "confidence": 0.99}).json()["verdict"] == "surface"
    answer = _send(bot, _alert("0ldf1ngerpr1nt", "resolved"), _alert("n0such", "resolved"))
    known, unknown = answer["outcomes"]
    assert known == {"prediction_id": "am:0ldf1ngerpr1nt", "result": "no_outcome", "recorded": False, "closed": True}
    assert unknown["prediction_id"] == "am:n0such@20250326T100000Z"
    assert (unknown["result"], unknown["recorded"]) == ("unknown_prediction", False)
    assert "am:n0such@20250326T100000Z" in unknown["error"]
    (audited,) = bot.bot.store.audit_entries(kind="alert_resolved")
    assert audited[3] == "am:0ldf1ngerpr1nt"


GOOD = {
    "SLACK_BOT_TOKEN": TOKEN,
    "SLACK_SIGNING_SECRET": SECRET,
    "NPO_INGEST_TOKEN": "ingest-token-0123456789",
    "NPO_INCIDENT_CHANNEL": INCIDENT,
    "NPO_OPS_CHANNEL": OPS,
}


def test_the_setting_is_read_and_checked_by_name(tmp_path: Path) -> None:
    assert load_settings(GOOD, None).alertmanager_resolved == "unknown"
    for text, value in (("unknown", "unknown"), ("REAL_FAULT", "real_fault"), (" real_fault ", "real_fault")):
        assert load_settings(GOOD | {"NPO_ALERTMANAGER_RESOLVED": text}, None).alertmanager_resolved == value
    env_file = tmp_path / ".env"
    env_file.write_text("NPO_ALERTMANAGER_RESOLVED=real_fault  # our resolved alerts are faults\n", encoding="utf-8")
    assert load_settings(GOOD, env_file).alertmanager_resolved == "real_fault"
    for bad in ("true", "false_alarm", "real-fault"):
        with pytest.raises(ConfigError) as info:
            load_settings(GOOD | {"NPO_ALERTMANAGER_RESOLVED": bad}, None)
        assert info.value.problems == {"NPO_ALERTMANAGER_RESOLVED": f"must be unknown or real_fault, got {bad!r}"}


def test_the_example_env_file_documents_the_setting_with_its_default() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    assert load_settings(GOOD, example).alertmanager_resolved == "unknown"
    assert "NPO_ALERTMANAGER_RESOLVED=unknown" in example.read_text(encoding="utf-8").splitlines()


def test_the_setting_reaches_the_running_bot(tmp_path: Path, standin: StandIn) -> None:
    built = build_bot(make_settings(tmp_path, standin, alertmanager_resolved="real_fault"), seed=1, run_worker=False)
    try:
        assert built.service.alertmanager_resolved == "real_fault"
    finally:
        built.close()


def test_a_storage_error_on_the_resolved_alerts_says_the_firing_ones_were_stored(bot: BotUnderTest) -> None:
    """One notification carries firing and resolved alerts; the firing ones are decided (and committed) first. When
    the database then refuses the resolved ones, the 503 must not say "nothing was stored": the retry Alertmanager
    makes is harmless (the firing alerts are duplicates by then), and the answer says so."""
    (first,) = _send(bot, _alert("a01"))["results"]
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        db.execute(  # the database refuses outcomes from here on, as a full disk would refuse any write
            "CREATE TRIGGER refuse_outcomes BEFORE INSERT ON outcomes BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()
    body = alertmanager_notification(_alert("b01"), _alert("a01", "resolved", npo_outcome="real_fault"))
    refused = bot.ingest(body, path=AM)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    message = refused.json()["error"]
    assert "nothing was stored" not in message
    assert "1 firing alert(s) were stored" in message and "resolved" in message and "retry" in message
    assert bot.counts()["predictions"] == 2 and bot.counts()["outcomes"] == 0

    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        db.execute("DROP TRIGGER refuse_outcomes")
        db.commit()
    retried = _send(bot, _alert("b01"), _alert("a01", "resolved", npo_outcome="real_fault"))
    assert retried["results"][0]["duplicate"] is True
    assert retried["outcomes"][0]["prediction_id"] == first["id"] and retried["outcomes"][0]["recorded"] is True
    assert bot.counts()["predictions"] == 2 and bot.counts()["outcomes"] == 1


def test_a_resolved_alerts_end_is_a_time_in_the_past_and_after_its_start(bot: BotUnderTest) -> None:
    """The outcome is dated by the alert's ``endsAt``; one ahead of the bot's clock (another host's clock, 2099) is
    dated now, one before the episode began (1970) at its start. Trust credits only the answers given before the
    outcome: an outcome in 2099 would credit every later click with a truth already known."""
    _send(bot, _alert("e01"), _alert("e02"))
    ahead = _alert("e01", "resolved", npo_outcome="real_fault") | {"endsAt": "2099-01-01T00:00:00Z"}
    before = _alert("e02", "resolved", npo_outcome="false_alarm") | {"endsAt": "1970-01-01T00:00:00Z"}
    answered = bot.bot.service.clock()
    _send(bot, ahead, before)
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        stored = dict(db.execute("SELECT prediction_id, at FROM outcomes").fetchall())
    (first,) = [at for pid, at in stored.items() if "e01" in pid]
    (second,) = [at for pid, at in stored.items() if "e02" in pid]
    assert answered - 5 <= first <= bot.bot.service.clock() + 1
    assert second == datetime(2025, 3, 26, 10, tzinfo=UTC).timestamp()  # START, the episode's start


# -- alerts merged into one prediction ------------------------------------------------------------------------------
# The same fault type, target and action within the dedupe window (one alertname firing for two disks of one host,
# or an alert whose labels changed: Alertmanager resolves the old label set and fires the new one) share one
# recommendation. It stays open while one of them still fires: the resolution of one alert that says nothing about
# the fault closes it only once every alert merged into it has resolved.


def _on_one_host(fingerprint: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    """DiskWillFail on r12-n04; ``labels`` tell the alerts apart (``device``)."""
    alert = _alert(fingerprint, status)
    alert["labels"] = {"alertname": "DiskWillFail", "instance": "r12-n04:9100", "severity": "critical"} | labels
    return alert


def _open(bot: BotUnderTest) -> int:
    with contextlib.closing(sqlite3.connect(bot.bot.settings.db_path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM recommendations WHERE resolved_at IS NULL").fetchone()[0])


def test_two_disks_of_one_host_keep_their_recommendation_open_until_both_resolve(bot: BotUnderTest) -> None:
    sda, sdb = _on_one_host("a0da", device="sda"), _on_one_host("a0db", device="sdb")
    first, second = _send(bot, sda, sdb)["results"]
    assert (first["verdict"], second["duplicate"], second["id"]) == ("surface", True, first["id"])
    assert _open(bot) == 1
    # sda's alert resolves (saying nothing of the fault) while sdb's still fires: the fault is still predicted
    (entry,) = _send(bot, _on_one_host("a0da", "resolved", device="sda"), sdb)["outcomes"]
    assert (entry["result"], entry["prediction_id"], entry["closed"]) == ("no_outcome", first["id"], False)
    assert _open(bot) == 1
    (last,) = _send(bot, _on_one_host("a0db", "resolved", device="sdb"))["outcomes"]
    assert (last["result"], last["prediction_id"], last["closed"]) == ("no_outcome", first["id"], True)
    assert _open(bot) == 0
    again = _send(bot, _on_one_host("a0da", "resolved", device="sda"), _on_one_host("a0db", "resolved", device="sdb"))
    assert [e["closed"] for e in again["outcomes"]] == [False, False]  # re-sent: nothing changes
    assert len(bot.bot.store.audit_entries(kind="alert_resolved")) == 2  # each alert's end, once
    assert bot.counts()["outcomes"] == 0


def test_an_alert_whose_labels_changed_keeps_the_recommendation_open(bot: BotUnderTest) -> None:
    """Its severity label went from warning to critical: a new label set, so a new alert (fingerprint), which
    Alertmanager sends firing in the same notification as the old one resolved."""
    (old,) = _send(bot, _on_one_host("c1a0", severity="warning"))["results"]
    changed = _send(
        bot, _on_one_host("c1a0", "resolved", severity="warning"), _on_one_host("c1a1", severity="critical")
    )
    (new,) = changed["results"]
    assert (new["duplicate"], new["id"]) == (True, old["id"])
    assert [(e["prediction_id"], e["closed"]) for e in changed["outcomes"]] == [(old["id"], False)]
    assert _open(bot) == 1
    (entry,) = _send(bot, _on_one_host("c1a1", "resolved", severity="critical"))["outcomes"]
    assert (entry["prediction_id"], entry["closed"]) == (old["id"], True)
    assert _open(bot) == 0


def test_a_pre_episode_prediction_closes_when_its_alert_re_sent_with_an_episode_resolves(bot: BotUnderTest) -> None:
    """A prediction stored under the plain ``am:<fingerprint>`` id (before episode ids) whose alert, still firing,
    is re-sent under its episode id (found a duplicate of it) and then resolves: the same alert ended, so the
    recommendation closes; the plain id is that alert's, not another one still firing."""
    fingerprint = "0ldf1ngerpr1nt"
    stored = {"id": f"am:{fingerprint}", "fault_type": "DiskWillFail", "target": f"r12-{fingerprint}:9100"}
    assert bot.ingest(stored | {"action": "investigate", "confidence": 0.99}).json()["verdict"] == "surface"
    (resent,) = _send(bot, _alert(fingerprint))["results"]
    assert (resent["duplicate"], resent["id"]) == (True, f"am:{fingerprint}"), resent
    assert _open(bot) == 1
    (entry,) = _send(bot, _alert(fingerprint, "resolved"))["outcomes"]
    assert (entry["result"], entry["prediction_id"], entry["closed"]) == ("no_outcome", f"am:{fingerprint}", True)
    assert _open(bot) == 0
