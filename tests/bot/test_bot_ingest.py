"""Alertmanager/Grafana mapping, JSON records, replay files and the poller (against a local stdlib server)."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.app import build_poller
from bot.cli import main as cli_main
from bot.config import load_settings
from bot.http.body import BadJson, parse_json
from bot.ingest.alertmanager import LOGGED_ERRORS, parse_webhook
from bot.ingest.poller import LOGGED_ERRORS as POLL_LOGGED_ERRORS
from bot.ingest.poller import Poller
from bot.ingest.records import many, prediction_from_json
from bot.ingest.replay import REPLAY_CHUNK, UnreadableFile, decide_in_chunks, read_predictions
from bot.service import NpoService
from npo.loop import DecideResult, LoopConfig
from npo.policy import DEFAULT_POLICY
from npo.types import InvalidRecord, Prediction, Severity
from storage import SQLiteStore, StorageError, migrations

GRAFANA: dict[str, Any] = {
    "receiver": "npo",
    "status": "firing",
    "orgId": 1,
    "title": "[FIRING:1] NodeOverheat",
    "state": "alerting",
    "message": "…",
    "commonLabels": {"alertname": "NodeOverheat"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "NodeOverheat", "host": "r3-n1", "severity": "page", "action": "migrate_vms"},
            "annotations": {"time_to_fault_s": "1800"},
            "startsAt": "2025-03-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "ff01",
            "values": {"B": 91.2},
            "valueString": "[ var='B' value=91.2 ]",
        }
    ],
}


def test_grafana_variant_maps_fields_and_default_confidence() -> None:
    batch = parse_webhook(GRAFANA, now=100.0)
    (p,) = batch.predictions
    assert (p.id, p.fault_type, p.target, p.action) == (
        "am:ff01@20250326T100000Z",
        "NodeOverheat",
        "r3-n1",
        "migrate_vms",
    )
    assert p.severity is Severity.CRITICAL and p.confidence == 0.9 and p.time_to_fault_s == 1800


def _resolved(**annotations: object) -> dict[str, Any]:
    alert = dict(GRAFANA["alerts"][0], status="resolved", endsAt="2025-03-26T11:00:00Z")
    return dict(alert, annotations=alert["annotations"] | annotations)


def test_a_resolved_alert_is_the_end_of_its_episode_not_a_real_fault() -> None:
    """A prediction's alert also resolves when a false alarm goes away: without a word on the fault, no truth."""
    batch = parse_webhook(dict(GRAFANA, alerts=[_resolved()]), now=1_800_000_000.0)
    (resolved,) = batch.resolved
    assert not batch.predictions and resolved.real_fault is None and resolved.problem is None
    assert resolved.at == 1742986800.0 and resolved.received_at == 1_800_000_000.0  # endsAt; now
    assert resolved.prediction_id == "am:ff01@20250326T100000Z"  # the episode that fired
    assert resolved.fallback_id == "am:ff01"  # as stored before episode ids
    with pytest.raises(ValueError, match="states no outcome"):
        resolved.outcome()
    assert parse_webhook(dict(GRAFANA, alerts=[_resolved()]), now=0.0, unstated=True).resolved[0].real_fault is True


@pytest.mark.parametrize(
    ("annotation", "truth"),
    [("real_fault", True), ("false_alarm", False), (" REAL_FAULT ", True), ("False_Alarm", False), ("", None)],
)
def test_a_resolved_alert_states_its_truth_in_an_annotation(annotation: str, truth: bool | None) -> None:
    for unstated in (None, True):  # what it says wins over NPO_ALERTMANAGER_RESOLVED
        body = dict(GRAFANA, alerts=[_resolved(npo_outcome=annotation)])
        # now after the alert's endsAt: an end ahead of the clock would be dated now
        (resolved,) = parse_webhook(body, now=1_800_000_000.0, unstated=unstated).resolved
        assert resolved.real_fault is (unstated if truth is None else truth) and resolved.problem is None
    if truth is not None:
        outcome = resolved.outcome("am:ff01")
        assert (outcome.prediction_id, outcome.real_fault, outcome.at, outcome.source, outcome.recorded_at) == (
            "am:ff01",
            truth,
            1742986800.0,
            "alertmanager",
            1_800_000_000.0,
        )


def test_common_annotations_fill_a_gap_and_labels_are_not_read() -> None:
    common = dict(GRAFANA, commonAnnotations={"npo_outcome": "false_alarm"})
    (resolved,) = parse_webhook(dict(common, alerts=[_resolved()]), now=0.0).resolved
    assert resolved.real_fault is False
    (own,) = parse_webhook(dict(common, alerts=[_resolved(npo_outcome="real_fault")]), now=0.0).resolved
    assert own.real_fault is True
    labelled = _resolved()
    labelled["labels"] = labelled["labels"] | {"npo_outcome": "real_fault"}  # the alert's identity, not its truth
    assert parse_webhook(dict(GRAFANA, alerts=[labelled]), now=0.0).resolved[0].real_fault is None


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ({"npo_outcome": "yes"}, "alerts[0].annotations.npo_outcome must be real_fault or false_alarm, got 'yes'"),
        ({"npo_outcome": 1}, "alerts[0].annotations.npo_outcome must be real_fault or false_alarm (a string), got int"),
        ({"npo_outcome": "x" * 500}, f"got {'x' * 100!r}"),
    ],
)
def test_an_unreadable_npo_outcome_is_no_truth_not_a_refused_alert(
    annotations: dict[str, object], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusing it would leave its recommendation open for ever (Alertmanager does not retry); guessing, even
    with ``NPO_ALERTMANAGER_RESOLVED=real_fault``, would learn what the sender did not say. Other annotations of a
    resolved alert are not read, so a malformed one does not refuse it either."""
    alert = _resolved(**annotations, confidence=["not", "read"])
    with caplog.at_level(logging.WARNING, logger="bot.ingest.alertmanager"):
        batch = parse_webhook(dict(GRAFANA, alerts=[alert]), now=0.0, unstated=True)
    (resolved,) = batch.resolved
    assert batch.errors == [] and resolved.real_fault is None
    assert resolved.problem is not None and problem in resolved.problem
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING and problem in warning.getMessage()
    many_bad = [dict(alert, fingerprint=f"f{i:03}") for i in range(LOGGED_ERRORS + 5)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.ingest.alertmanager"):
        assert len(parse_webhook(dict(GRAFANA, alerts=many_bad), now=0.0).resolved) == LOGGED_ERRORS + 5
    assert len(caplog.records) == LOGGED_ERRORS + 1 and "5 more resolved alerts" in caplog.records[-1].getMessage()


def _fired(starts_at: object, now: float) -> str:
    body = dict(GRAFANA, alerts=[dict(GRAFANA["alerts"][0], startsAt=starts_at)])
    (p,) = parse_webhook(body, now=now).predictions
    return p.id


def test_an_alert_episode_is_named_by_its_fingerprint_and_start() -> None:
    first = _fired("2025-03-26T10:00:00Z", now=100.0)
    assert _fired("2025-03-26T10:00:00Z", now=400.0) == first  # a re-sent notification: the same prediction
    assert _fired("2025-03-26T10:00:00.000000000Z", now=400.0) == first  # nanoseconds, as Alertmanager writes
    assert _fired("2025-03-26T12:00:00+02:00", now=400.0) == first  # the same instant in another zone
    again = _fired("2025-03-29T08:30:00Z", now=300_000.0)  # resolved, then fired again days later
    assert again == "am:ff01@20250329T083000Z" != first
    for unusable in (None, "", "0001-01-01T00:00:00Z", "soon", 17):
        assert _fired(unusable, now=0.0) == "am:ff01"  # no start to tell episodes apart: the alert alone


def test_a_resolved_alert_without_a_start_has_no_fallback() -> None:
    alert = dict(GRAFANA["alerts"][0], status="resolved", startsAt=None)
    batch = parse_webhook(dict(GRAFANA, alerts=[alert]), now=0.0)
    assert batch.resolved[0].prediction_id == "am:ff01" and batch.resolved[0].fallback_id is None


@pytest.mark.parametrize(
    ("alert_patch", "field"),
    [
        ({"labels": {"alertname": "X"}}, "alerts[0].labels.instance"),
        ({"annotations": {"confidence": "very"}}, "alerts[0].annotations.confidence"),
        ({"annotations": {"confidence": "1.7"}}, "alerts[0].annotations.confidence"),
        ({"status": "pending"}, "alerts[0].status"),
    ],
)
def test_bad_alerts_name_the_field(alert_patch: dict[str, object], field: str) -> None:
    alert = dict(GRAFANA["alerts"][0]) | alert_patch
    with pytest.raises(InvalidRecord) as info:
        parse_webhook(dict(GRAFANA, commonLabels={}, alerts=[alert]), now=0.0)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("alert_patch", "field"),
    [
        ({"labels": {"alertname": "X"}}, "alerts[1].labels.instance"),
        ({"annotations": {"time_to_fault": "soon"}}, "alerts[1].annotations.time_to_fault"),
        ({"annotations": {"confidence": "very"}}, "alerts[1].annotations.confidence"),
        ({"annotations": {"confidence": "1.7"}}, "alerts[1].annotations.confidence"),
        ({"status": "pending"}, "alerts[1].status"),
        ({"status": "resolved", "fingerprint": "f" * 300}, "alerts[1].fingerprint"),
        ({"fingerprint": "f" * 300}, "alerts[1].fingerprint"),  # firing: not the id made of it, no field of the alert
    ],
)
def test_a_bad_alert_among_good_ones_is_listed_and_the_rest_is_used(
    alert_patch: dict[str, object], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = GRAFANA["alerts"][0]
    resolved = dict(good, status="resolved", fingerprint="ff00", endsAt="2025-03-26T11:00:00Z")
    bad = dict(good, fingerprint="ff02") | alert_patch
    with caplog.at_level(logging.WARNING, logger="bot.ingest.alertmanager"):
        batch = parse_webhook(dict(GRAFANA, commonLabels={}, alerts=[good, bad, resolved]), now=0.0)
    assert [p.id for p in batch.predictions] == ["am:ff01@20250326T100000Z"]
    assert [(r.prediction_id, r.fallback_id) for r in batch.resolved] == [("am:ff00@20250326T100000Z", "am:ff00")]
    assert [e.field for e in batch.errors] == [field]
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING and field in warning.getMessage()


@pytest.mark.parametrize(
    ("labels", "annotations", "common", "field"),
    [
        ({"confidence": "150%"}, {}, {}, "alerts[0].labels.confidence"),
        ({"confidence": "very"}, {}, {}, "alerts[0].labels.confidence"),
        ({}, {}, {"commonAnnotations": {"confidence": "nan"}}, "commonAnnotations.confidence"),
        ({}, {}, {"commonLabels": {"confidence": "2"}}, "commonLabels.confidence"),
        ({}, {"time_to_fault_s": "9" * 400}, {}, "alerts[0].annotations.time_to_fault_s"),
        ({"time_to_fault": "soon"}, {"time_to_fault_s": ""}, {}, "alerts[0].labels.time_to_fault"),
        ({"alertname": "X" * 501}, {}, {}, "alerts[0].labels.alertname"),
        ({"fault_type": "X" * 501}, {}, {}, "alerts[0].labels.fault_type"),
        ({"instance": "h" * 501, "host": ""}, {}, {}, "alerts[0].labels.instance"),
        ({"host": None}, {}, {"commonLabels": {"alertname": "NodeOverheat", "host": "h" * 501}}, "commonLabels.host"),
        ({"action": ""}, {"action": "a" * 501}, {}, "alerts[0].annotations.action"),
        ({"slack_channel": " "}, {}, {}, "alerts[0].labels.slack_channel"),
        ({"slack_channel": "C" * 201}, {}, {}, "alerts[0].labels.slack_channel"),
    ],
)
def test_a_refused_value_is_named_by_the_field_it_was_sent_in(
    labels: dict[str, str | None], annotations: dict[str, str], common: dict[str, Any], field: str
) -> None:
    """A value that Prediction refuses was named by the prediction's field (``alerts[0].confidence``,
    ``alerts[0].target``), which the sender never sent: the confidence was in a label or an annotation, the target in
    the ``instance`` label; the answer must point at what the sender can change (None: a label left out)."""
    alert = GRAFANA["alerts"][0]
    own_labels = {k: v for k, v in (alert["labels"] | labels).items() if v is not None}
    alert = dict(alert, labels=own_labels, annotations=alert["annotations"] | annotations)
    with pytest.raises(InvalidRecord) as info:
        parse_webhook(dict(GRAFANA, alerts=[alert]) | common, now=0.0)
    assert info.value.field == field, info.value


def test_a_notification_of_bad_alerts_names_the_first_and_an_empty_one_is_fine() -> None:
    bad = [dict(GRAFANA["alerts"][0], labels={"alertname": "X"}), "not an alert"]
    with pytest.raises(InvalidRecord) as info:
        parse_webhook(dict(GRAFANA, commonLabels={}, alerts=bad), now=0.0)
    assert info.value.field == "alerts[0].labels.instance"
    empty = parse_webhook(dict(GRAFANA, alerts=[]), now=0.0)
    assert (empty.predictions, empty.resolved, empty.errors) == ([], [], [])


def test_alerts_alertmanager_left_out_of_a_notification_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``max_alerts`` in its webhook_config, Alertmanager sends only the first alerts of a group and counts the
    rest in ``truncatedAlerts``: those never reach NPO (neither their predictions nor their outcomes), and nothing
    said so — the count was ignored."""
    body = dict(GRAFANA, truncatedAlerts=7, groupKey='{}:{alertname="NodeOverheat"}')
    with caplog.at_level(logging.WARNING, logger="bot.ingest.alertmanager"):
        batch = parse_webhook(body, now=0.0)
    assert [p.id for p in batch.predictions] == ["am:ff01@20250326T100000Z"] and batch.truncated == 7
    (warning,) = caplog.records
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert "7 alerts" in message and "max_alerts" in message and 'alertname="NodeOverheat"' in message
    caplog.clear()
    for not_a_count in (0, None, -1, "3", True, 2.5, [1]):  # absent or not a count: nothing to report, not an error
        with caplog.at_level(logging.WARNING, logger="bot.ingest.alertmanager"):
            batch = parse_webhook(dict(GRAFANA, truncatedAlerts=not_a_count), now=0.0)
        assert batch.truncated == 0 and len(batch.predictions) == 1 and caplog.records == [], not_a_count


def test_records_list_errors_carry_the_index() -> None:
    good = {"id": "a", "fault_type": "f", "target": "t", "action": "x", "confidence": 0.5}
    with pytest.raises(InvalidRecord) as info:
        many([good, good | {"confidence": None}], prediction_from_json, received_at=0.0)
    assert info.value.field == "[1].confidence"


def test_replay_reports_line_numbers_and_decides_the_rest(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"id": "a", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.9}\n'
        "\n"
        '{"id": "b", "fault_type": "f", "target": "t2", "action": "x"}\n'
        "{not json\n",
        encoding="utf-8",
    )
    parsed = read_predictions(jsonl, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["a"]
    assert parsed.errors[0].startswith("line 3: confidence") and parsed.errors[1].startswith("line 4: (line)")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text(
        'id,fault_type,target,action,confidence,labels\nc,f,t3,x,0.8,"{""cluster"": ""r1""}"\nd,f,t4,x,lots,\n',
        encoding="utf-8",
    )
    parsed = read_predictions(csv_file, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["c"] and parsed.predictions[0].labels["cluster"] == "r1"
    assert parsed.errors == ["line 3: confidence: must be a number in [0, 1], got str"]


def test_replay_reads_files_that_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and ``encoding="utf-8-sig"`` writers start the file with U+FEFF."""
    csv_file = tmp_path / "excel.csv"
    csv_file.write_text("id,fault_type,target,action,confidence\nc1,f,t1,x,0.8\nc2,f,t2,x,0.7\n", encoding="utf-8-sig")
    assert csv_file.read_bytes().startswith(b"\xef\xbb\xbf")
    parsed = read_predictions(csv_file, received_at=0.0)
    assert parsed.errors == [] and [p.id for p in parsed.predictions] == ["c1", "c2"]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text(
        '{"id": "j1", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.9}\n'
        '{"id": "j2", "fault_type": "f", "target": "t2", "action": "x", "confidence": 0.6}\n',
        encoding="utf-8-sig",
    )
    parsed = read_predictions(jsonl, received_at=0.0)
    assert parsed.errors == [] and [p.id for p in parsed.predictions] == ["j1", "j2"]
    renamed = read_predictions(jsonl.rename(tmp_path / "bom.txt"), received_at=0.0, fmt="jsonl")
    assert [p.id for p in renamed.predictions] == ["j1", "j2"]


def _recorder() -> tuple[list[Sequence[Prediction]], Callable[[Sequence[Prediction]], list[DecideResult]]]:
    """A poller's ``decide`` that keeps each batch it is given (in the list returned beside it) and decides nothing."""
    decided: list[Sequence[Prediction]] = []

    def decide(predictions: Sequence[Prediction]) -> list[DecideResult]:
        decided.append(predictions)
        return []

    return decided, decide


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A feed on 127.0.0.1 answering with ``handler``; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predictions"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def predictions_server() -> Iterator[tuple[str, list[Any]]]:
    served: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(served[-1] if served else []).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as url:
        yield url, served


def test_poller_feeds_the_loop(tmp_path: Path, predictions_server: tuple[str, list[Any]]) -> None:
    url, served = predictions_server
    served.append(
        {
            "predictions": [
                {"id": "a", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.99},
                {"id": "bad", "fault_type": "f", "target": "t2", "action": "x", "confidence": 2},
            ]
        }
    )
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(default_channel="C1")) as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: 1000.0)
        seen: list[Sequence[Prediction]] = []

        def decide(predictions: Sequence[Prediction]) -> list[DecideResult]:
            seen.append(predictions)
            return service.decide(predictions)

        poller = Poller(url, decide, interval_s=0.05, clock=lambda: 1000.0)
        result = poller.poll_once()
        assert [r.decision.prediction_id for r in result.decided] == ["a"]
        assert result.errors == ["[1].confidence: must be in [0, 1], got 2"]
        again = poller.poll_once()  # the feed serves the same prediction again: not decided again
        assert again.decided == [] and again.repeated == ["a"] and len(seen) == 1
        poller.start()
        poller.stop()
        down = Poller("http://127.0.0.1:9/none", decide, clock=lambda: 0.0, timeout_s=0.5)
        assert down.poll_once().errors
        down.stop()
        assert store.counts()["predictions"] == 1


def test_a_feed_serving_the_same_predictions_is_decided_once_per_id(
    tmp_path: Path, predictions_server: tuple[str, list[Any]]
) -> None:
    url, served = predictions_server
    item = {"fault_type": "f", "action": "x", "confidence": 0.99}
    served.append([item | {"id": f"p{i}", "target": f"t{i}"} for i in range(3)])
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(default_channel="C1")) as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: 1000.0)
        poller = Poller(url, service.decide, clock=lambda: 1000.0)
        for _ in range(5):
            poller.poll_once()
        served.append([*served[-1], item | {"id": "p3", "target": "t3"}])  # one more: only it is decided
        assert [r.decision.prediction_id for r in poller.poll_once().decided] == ["p3"]
        assert store.counts()["predictions"] == 4 and store.audit_entries(kind="duplicate_prediction") == []

        def failing(predictions: Sequence[Prediction]) -> list[DecideResult]:
            raise StorageError("decisions", predictions[0].id, "disk I/O error")

        served.append([*served[-1], item | {"id": "p4", "target": "t4"}])
        poller.decide = failing
        with pytest.raises(StorageError):
            poller.poll_once()
        poller.decide = service.decide  # the database is back: p4 was not forgotten
        assert [r.decision.prediction_id for r in poller.poll_once().decided] == ["p4"]
        poller.stop()

        restarted = Poller(url, service.decide, clock=lambda: 1000.0)  # a restart forgets: the loop's dedupe
        assert all(r.duplicate for r in restarted.poll_once().decided)
        restarted.stop()
        assert store.counts()["predictions"] == 5 and len(store.audit_entries(kind="duplicate_prediction")) == 5


def test_an_id_with_surrounding_blanks_is_one_prediction_in_replay_and_poll(
    tmp_path: Path, predictions_server: tuple[str, list[Any]]
) -> None:
    """A CSV cell or a feed's template with a stray blank gave the id ``" p1"``: a prediction apart from ``p1``
    (decided again, surfaced again), where fault type, target and action lose their blanks."""
    csv_file = tmp_path / "spaced.csv"
    csv_file.write_text("fault_type,id,target,action,confidence\nf, c1 ,t1,x,0.8\n", encoding="utf-8")
    jsonl = tmp_path / "spaced.jsonl"
    jsonl.write_text('{"id": "\\tj1", "fault_type": "f", "target": "t2", "action": "x", "confidence": 0.9}\n')
    for path, pid in ((csv_file, "c1"), (jsonl, "j1")):
        parsed = read_predictions(path, received_at=0.0)
        assert parsed.errors == [] and [p.id for p in parsed.predictions] == [pid]
    url, served = predictions_server
    item = {"fault_type": "f", "action": "x", "confidence": 0.99}
    served.append([item | {"id": "p1 ", "target": "t1"}])
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(default_channel="C1")) as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: 1000.0)
        poller = Poller(url, service.decide, clock=lambda: 1000.0)
        assert [r.decision.prediction_id for r in poller.poll_once().decided] == ["p1"]
        served.append([item | {"id": "p1", "target": "t1"}])  # the feed fixed its template: the same prediction
        assert poller.poll_once().repeated == ["p1"]
        poller.stop()
        assert store.counts()["predictions"] == 1


GOOD_LINE = '{"id": "%s", "fault_type": "f", "target": "%s", "action": "x", "confidence": 0.9%s}'


def test_replay_splits_jsonl_at_newlines_only(tmp_path: Path) -> None:
    """JSON strings may hold U+2028, U+2029 and U+0085 unescaped (``ensure_ascii=False`` writes them so); they are
    not line ends: the prediction is read whole, and later lines keep their numbers. CRLF files read the same."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        GOOD_LINE % ("a", "t1", ', "labels": {"note": "one\u2028two\u2029three\x85four"}')
        + "\r\n"
        + GOOD_LINE % ("b", "t2", "")
        + "\r\n{bad\r\n",
        encoding="utf-8",
        newline="",
    )
    parsed = read_predictions(jsonl, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["a", "b"]
    assert parsed.predictions[0].labels["note"] == "one\u2028two\u2029three\x85four"
    assert len(parsed.errors) == 1 and parsed.errors[0].startswith("line 3: (line): invalid JSON")


def test_replay_refuses_a_file_that_is_not_utf8_naming_the_line(tmp_path: Path) -> None:
    """A Latin-1 export (Excel's plain "CSV") was a traceback; now it is refused whole, before anything is decided."""
    csv_file = tmp_path / "latin1.csv"
    csv_file.write_bytes("id,fault_type,target,action,confidence\nc1,f,t1,x,0.8\nc2,f,café,x,0.8\n".encode("latin-1"))
    with pytest.raises(UnreadableFile, match=r"line 3: not UTF-8 \(byte 0xe9\)"):
        read_predictions(csv_file, received_at=0.0)
    with pytest.raises(UnreadableFile, match="cannot read"):
        read_predictions(tmp_path, received_at=0.0)
    with pytest.raises(UnreadableFile, match="cannot read"):
        read_predictions(tmp_path / "absent.jsonl", received_at=0.0)


def test_replay_reports_lines_the_json_decoder_cannot_read(tmp_path: Path) -> None:
    """Nesting deeper than the decoder follows and integers over Python's 4,300 digits were a traceback."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                GOOD_LINE % ("a", "t1", ""),
                "[" * 100_000,
                '{"id": "b", "fault_type": "f", "target": "t2", "action": "x", "confidence": ' + "1" * 5000 + "}",
                GOOD_LINE % ("c", "t3", ""),
            ]
        ),
        encoding="utf-8",
    )
    parsed = read_predictions(jsonl, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["a", "c"]
    assert parsed.errors == [
        "line 2: (line): invalid JSON: nested too deeply",
        "line 3: (line): invalid JSON: a number is too long",
    ]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text(
        "id,fault_type,target,action,confidence,labels\n"
        "c1,f,t1,x,0.8,\n"
        f'c2,f,t2,x,0.8,"{"x" * 200_000}"\n'
        f"c3,f,t3,x,0.8,{'[' * 100_000}\n"
        "c4,f,t4,x,0.8,\n",
        encoding="utf-8",
    )
    parsed = read_predictions(csv_file, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["c1", "c4"]
    assert [e.split(":")[:2] for e in parsed.errors] == [["line 3", " (line)"], ["line 4", " labels"]]


def test_replay_reads_a_csv_whose_header_ends_in_unnamed_columns(tmp_path: Path) -> None:
    """A spreadsheet's trailing commas (``…,confidence,,``) are unnamed columns, not one name given twice: the file
    is read, and a value under an unnamed column is refused, naming it."""
    path = tmp_path / "p.csv"
    path.write_text(
        "id,fault_type,target,action,confidence,,\n"
        "p1,disk_failure,r12-a,investigate,0.9,,\n"
        "p2,disk_failure,r12-b,investigate,0.8,,oops\n",
        encoding="utf-8",
    )
    parsed = read_predictions(path, received_at=1.0)
    assert [p.id for p in parsed.predictions] == ["p1"]
    assert len(parsed.errors) == 1 and parsed.errors[0].startswith("line 3: (column 7)")


def test_replay_refuses_a_key_or_a_column_given_twice(tmp_path: Path) -> None:
    """``json.loads`` and ``csv.DictReader`` keep the last of two values of one name without a word; the HTTP routes
    and the poller refuse such a prediction, and so does a replay (the line and the key named)."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                GOOD_LINE % ("a", "t1", ""),
                '{"id": "b", "fault_type": "f", "target": "t2", "action": "x", "confidence": 0.9, "confidence": 0.1}',
                '{"id": "c", "fault_type": "f", "target": "t3", "action": "x", "confidence": 0.9, '
                '"labels": {"cluster": "a", "cluster": "b"}}',
            ]
        ),
        encoding="utf-8",
    )
    parsed = read_predictions(jsonl, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["a"]
    assert parsed.errors == [
        "line 2: confidence: this key appears twice in one object (one of its values would be lost)",
        "line 3: labels.cluster: this key appears twice in one object (one of its values would be lost)",
    ]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("id,fault_type,target,action,confidence,target\nc1,f,t1,x,0.8,t9\n", encoding="utf-8")
    parsed = read_predictions(csv_file, received_at=0.0)
    assert parsed.predictions == []
    assert parsed.errors == ["line 1: (header): the column 'target' appears twice: name it once"]
    labels_twice = tmp_path / "l.csv"
    labels_twice.write_text('id,fault_type,target,action,confidence,labels\nc1,f,t1,x,0.8,"{""k"":1,""k"":2}"\n')
    parsed = read_predictions(labels_twice, received_at=0.0)
    assert parsed.predictions == []
    assert [e.split(":")[:2] for e in parsed.errors] == [["line 2", " labels"]]


def test_replay_refuses_csv_rows_with_more_cells_than_the_header(tmp_path: Path) -> None:
    """A shifted or extra cell was dropped without a word (a typo must not silently drop information)."""
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("id,fault_type,target,action,confidence\nc1,f,t1,x,0.8,0.95\nc2,f,t2,x,0.7\n", encoding="utf-8")
    parsed = read_predictions(csv_file, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["c2"]
    assert parsed.errors == ["line 2: (line): 6 cells, the header has 5"]


def test_a_csv_quote_never_closed_is_its_line_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    """An opening quote without its closing one (``q2,f,"t2,x,0.9``) made the rest of the file one cell: every row
    after it was left undecided without a word, and the one error named the last line ("action: is required"), or,
    past the csv module's field limit, some line thousands further on — never the line to fix."""
    header = "id,fault_type,target,action,confidence,labels\n"
    path = tmp_path / "p.csv"
    path.write_text(
        header
        + 'q1,f,t1,x,0.9,"{""rack"": ""r1"",\n""zone"": ""z1""}"\n'  # a quoted cell may hold a line break
        + "q2,f,t2,x,0.9,\n"
        + 'q3,f,"t3,x,0.9,\n'  # line 5: the quote is never closed
        + "q4,f,t4,x,0.9,\n"
        + "q5,f,t5,x,0.9,\n",
        encoding="utf-8",
    )
    parsed = read_predictions(path, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["q1", "q2", "q4", "q5"]
    assert parsed.predictions[0].labels == {"rack": "r1", "zone": "z1"}
    assert [e.split(": ")[0] for e in parsed.errors] == ["line 5"], parsed.errors
    assert "quote" in parsed.errors[0] and "never closed" in parsed.errors[0], parsed.errors
    big = tmp_path / "big.csv"  # the rest of the file is over the field limit (131,072 characters)
    big.write_text(
        header + 'b1,f,"t1,x,0.9,\n' + "".join(f"b{i},f,t{i},x,0.9,\n" for i in range(2, 10_002)), encoding="utf-8"
    )
    parsed = read_predictions(big, received_at=0.0)
    assert len(parsed.predictions) == 10_000 and [e.split(": ")[0] for e in parsed.errors] == ["line 2"]


def test_a_csv_quote_never_closed_on_the_last_line_is_that_lines_error(tmp_path: Path) -> None:
    """The last line's opening quote (``q2,f,"t2,x,0.9``) is never closed either: it is reported as such, not as
    the cell it swallowed (``action: is required``), and a quote before the last cell is not taken for part of it."""
    header = "id,fault_type,target,action,confidence\n"
    for ending in ("\n", "", "\r\n"):
        path = tmp_path / "p.csv"
        path.write_text(header + "q1,f,t1,x,0.9\n" + 'q2,f,"t2,x,0.9' + ending, encoding="utf-8", newline="")
        parsed = read_predictions(path, received_at=0.0)
        assert [p.id for p in parsed.predictions] == ["q1"], (ending, parsed.errors)
        assert [e.split(": ")[0] for e in parsed.errors] == ["line 3"], (ending, parsed.errors)
        assert "never closed" in parsed.errors[0], (ending, parsed.errors)
        path.write_text(header + 'q3,f,t3,x,"0.9' + ending, encoding="utf-8", newline="")
        parsed = read_predictions(path, received_at=0.0)
        assert parsed.predictions == [] and "never closed" in parsed.errors[0], (ending, parsed.errors)


def test_a_lone_surrogate_is_refused_per_prediction_by_replay_and_poller(
    tmp_path: Path, predictions_server: tuple[str, list[Any]]
) -> None:
    """``json.loads`` lets ``"\\ud800"`` through; SQLite cannot store it, so the whole batch failed: replay ended in
    a traceback with nothing decided, and the poller failed every poll, never deciding the feed's good entries."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        GOOD_LINE % ("a", "t1", ', "labels": {"k": "\\ud800"}') + "\n" + GOOD_LINE % ("b", "t2", "") + "\n",
        encoding="utf-8",
    )
    parsed = read_predictions(jsonl, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["b"]
    assert parsed.errors == ["line 1: labels.k: holds a lone UTF-16 surrogate (not valid Unicode text)"]
    _assert_the_poller_decides_only_the_good_entry(
        tmp_path,
        predictions_server,
        {"id": "bad", "target": "t\ud800"},
        "[1].target: holds a lone UTF-16 surrogate (not valid Unicode text)",
    )


def test_a_nul_character_is_refused_per_prediction_by_replay_and_poller(
    tmp_path: Path, predictions_server: tuple[str, list[Any]]
) -> None:
    """An id starting with ``"\\u0000"`` is 0 characters long to SQLite's ``length()``: its CHECK refused the whole
    batch, so replay stored nothing and the poller failed every poll, never deciding the feed's good entries."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(GOOD_LINE % ("\\u0000a", "t1", "") + "\n" + GOOD_LINE % ("b", "t2", "") + "\n", encoding="utf-8")
    parsed = read_predictions(jsonl, received_at=0.0)
    assert [p.id for p in parsed.predictions] == ["b"]
    assert parsed.errors == ["line 1: id: must not contain a NUL character (\\u0000)"]
    _assert_the_poller_decides_only_the_good_entry(
        tmp_path,
        predictions_server,
        {"id": "\0bad", "target": "t2"},
        "[1].id: must not contain a NUL character (\\u0000)",
    )


def _assert_the_poller_decides_only_the_good_entry(
    tmp_path: Path, predictions_server: tuple[str, list[Any]], bad: dict[str, Any], error: str
) -> None:
    """A feed serving a good entry and one made bad by ``bad``: one poll decides and stores the good one only, and
    names the bad one's field with ``error``."""
    url, served = predictions_server
    good = {"id": "good", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.99}
    served.append([good, good | bad])
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(default_channel="C1")) as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: 1000.0)
        poller = Poller(url, service.decide, clock=lambda: 1000.0)
        result = poller.poll_once()
        poller.stop()
        assert [r.decision.prediction_id for r in result.decided] == ["good"]
        assert result.errors == [error]
        assert store.counts()["predictions"] == 1


def test_poller_logs_an_answer_it_cannot_use(
    predictions_server: tuple[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """An answer of the wrong shape was recorded in the result only, which ``serve`` drops: the operator saw
    nothing, poll after poll."""
    url, served = predictions_server
    poller = Poller(url, lambda predictions: [], clock=lambda: 0.0)
    served.append({"items": []})
    with caplog.at_level(logging.WARNING, logger="bot.ingest.poller"):
        result = poller.poll_once()
    assert result.errors and result.errors[0] in caplog.text and "'predictions'" in caplog.text
    poller.stop()


def test_a_refused_entrys_field_cannot_write_lines_of_its_own_into_the_log(
    predictions_server: tuple[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """The field named in the poller's warning is a key the feed sent: a line break in it forged a log line of its
    own, a terminal escape or a bidi override reached the log as is. It is shown escaped."""
    url, served = predictions_server
    item = {"id": "p1", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.9}
    forged = "k\n2025-01-01 ERROR npo: forged\x1b[2J\u202e"
    served.append([item | {"labels": {forged: 1}}, item | {"id": "p2", "target": "t2", forged: "x"}])
    poller = Poller(url, lambda predictions: [], clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="bot.ingest.poller"):
        poller.poll_once()
    poller.stop()
    lines = [r.getMessage() for r in caplog.records if "skipped prediction" in r.getMessage()]
    assert len(lines) == 2, caplog.text
    for line in lines:
        assert line.isprintable(), line
        assert "k\\n2025-01-01 ERROR npo: forged\\x1b[2J\\u202e" in line


def test_a_feed_of_many_invalid_predictions_is_logged_in_bounded_size(
    predictions_server: tuple[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """A feed whose predictions all carry a field NPO does not take (``"model": "v2"``, added by the feed's next
    release) wrote one warning per prediction per poll: 1,000 lines every 30 s here, 50,000 for a feed at the size
    limit — the log drowned while the result still named every one."""
    url, served = predictions_server
    item = {"fault_type": "f", "action": "x", "confidence": 0.9}
    bad = [item | {"id": f"b{i}", "target": f"t{i}", "model": "v2"} for i in range(1000)]
    served.append([*bad, item | {"id": "good", "target": "t-good"}])
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="bot.ingest.poller"):
        result = poller.poll_once()
    poller.stop()
    assert [[p.id for p in batch] for batch in decided] == [["good"]]
    assert len(result.errors) == 1000 and result.errors[0].startswith("[0].model: unknown field")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == POLL_LOGGED_ERRORS + 1, len(warned)
    assert "[0]" in warned[0] and "model" in warned[0]
    assert f"{1000 - POLL_LOGGED_ERRORS} more" in warned[-1] and "1,000 of 1,001" in warned[-1]


def test_a_feed_that_keeps_serving_a_refused_entry_logs_it_once(
    predictions_server: tuple[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """A feed that keeps serving one malformed entry wrote the same warning at every poll: 2,880 identical lines a
    day at the default 30 s. It is logged when it first appears, and again only when it comes back after an answer
    without it; the result still names it at every poll."""
    url, served = predictions_server
    item = {"fault_type": "f", "action": "x", "confidence": 0.9}
    good = item | {"id": "good", "target": "t-good"}
    bad = item | {"id": "bad", "target": "t-bad", "confidence": 2}
    other = item | {"id": "other", "target": "t-other", "model": "v2"}
    poller = Poller(url, lambda predictions: [], clock=lambda: 0.0)

    def warnings(answer: list[Any], polls: int = 1) -> list[str]:
        served.append(answer)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bot.ingest.poller"):
            for _ in range(polls):
                result = poller.poll_once()
                assert any("confidence: must be in [0, 1], got 2" in e for e in result.errors) == (bad in answer)
        return [r.getMessage() for r in caplog.records]

    try:
        assert warnings([good, bad]) == ["poller skipped prediction [1]: confidence: must be in [0, 1], got 2"]
        assert warnings([good, bad], polls=5) == []  # still served, still refused: not logged again
        assert warnings([item | {"id": "new", "target": "t-new"}, good, bad]) == []  # the same entry, moved
        [line] = warnings([good, bad, other])  # a second refused entry: only it is logged
        assert line.startswith("poller skipped prediction [2]: model: unknown field")
        assert warnings([good]) == []
        assert warnings([good, bad]) == ["poller skipped prediction [1]: confidence: must be in [0, 1], got 2"]
        changed = bad | {"confidence": 3}  # the feed changed the entry: a new refusal
        assert warnings([good, changed]) == ["poller skipped prediction [1]: confidence: must be in [0, 1], got 3"]
    finally:
        poller.stop()


@pytest.fixture
def raw_server() -> Iterator[tuple[str, list[bytes]]]:
    """Serves ``bodies[-1]`` as is (without a Content-Length after a prefix ``b"unsized:"``); a body of
    ``b"trickle"`` sends a space five times a second for ever (until closed), one of ``b"processing"`` an interim
    ``102 Processing`` five times a second and never the answer, one of ``b"slow headers"`` the status line and then
    a header line five times a second, never ending the headers."""
    bodies: list[bytes] = [b"[]"]
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = bodies[-1]
            if data in (b"processing", b"slow headers"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\n" if data == b"slow headers" else b"")
                line = b"X-Still-Working: yes\r\n" if data == b"slow headers" else b"HTTP/1.1 102 Processing\r\n\r\n"
                with contextlib.suppress(OSError):
                    while not stopping.wait(0.2):
                        self.wfile.write(line)
                        self.wfile.flush()
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if data == b"trickle":
                self.end_headers()
                try:
                    while not stopping.wait(0.2):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:
                    pass
                return
            if data.startswith(b"unsized:"):  # no Content-Length: the answer ends when the connection closes
                data = data.removeprefix(b"unsized:")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the poller hung up on a refused answer
                self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as url:
        try:
            yield url, bodies
        finally:
            stopping.set()  # handlers still trickling an answer end before the server stops


def test_poller_refuses_answers_it_cannot_parse_without_raising(raw_server: tuple[str, list[bytes]]) -> None:
    """A deeply nested answer raised out of :meth:`Poller.poll_once` (a traceback in the log, not the reason)."""
    url, bodies = raw_server
    poller = Poller(url, lambda predictions: [], clock=lambda: 0.0)
    for body in (b"[" * 100_000, b"<html><body>Sign in</body></html>", b"[" + b"1" * 5000 + b"]"):
        bodies.append(body)
        result = poller.poll_once()
        assert len(result.errors) == 1 and result.errors[0].startswith(f"poll of {url} failed: ")
    # An answer that is not JSON says so and how it starts (a sign-in page, a proxy's error), not only where the
    # decoder stopped ("Expecting value: line 1 column 1 (char 0)").
    for body, said in (
        (b"<html>\n<body>Sign in</body></html>", "it starts '<html> <body>Sign in</body></html>'"),
        (b"  \n", "it is empty"),
    ):
        bodies.append(body)
        (error,) = poller.poll_once().errors
        assert error.startswith(f"poll of {url} failed: the answer is not JSON (Expecting value") and error.endswith(
            said
        ), error
    poller.stop()


def test_poller_bounds_the_size_and_the_time_of_an_answer(raw_server: tuple[str, list[bytes]]) -> None:
    """A huge answer was read whole into memory, and one that never ends (a byte now and then, each within the read
    timeout) held the poll for ever, with nothing logged."""
    url, bodies = raw_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0, timeout_s=1.0, max_body_bytes=10_000)
    item = {"fault_type": "f", "action": "x", "confidence": 0.9}
    bodies.append(json.dumps([item | {"id": f"p{i}", "target": f"t{i}"} for i in range(500)]).encode())
    for prefix in (b"", b"unsized:"):  # refused by its Content-Length, or while it is read
        bodies.append(prefix + bodies[-1].removeprefix(b"unsized:"))
        result = poller.poll_once()
        assert result.errors == [f"poll of {url} failed: the answer is larger than 10,000 bytes"] and decided == []
    bodies.append(b"trickle")
    started = time.monotonic()
    result = poller.poll_once()
    assert time.monotonic() - started < 3
    assert result.errors == [f"poll of {url} failed: no complete answer within 1 s"] and decided == []
    bodies.append(json.dumps([item | {"id": "p0", "target": "t0"}]).encode())
    assert poller.poll_once().errors == [] and len(decided) == 1
    poller.stop()


def _zeros_compressed(size: int, wbits: int) -> bytes:
    """``size`` zero bytes compressed (gzip: ``wbits`` 31; zlib's deflate: 15), without holding them in memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(size >> 20)), packer.flush()])


@pytest.fixture
def encoded_server() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """Serves ``answers[-1]``: (its Content-Encoding, its body as sent)."""
    answers: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            encoding, data = answers[-1]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the poller hung up on a refused answer
                self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as url:
        yield url, answers


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15)])
def test_poller_refuses_a_compressed_answer_over_its_limit_without_inflating_it(
    encoded_server: tuple[str, list[tuple[str, bytes]]], encoding: str, wbits: int
) -> None:
    """The size limit was checked on each piece httpx had decoded: a piece of the answer as sent (up to 64 KiB) was
    inflated whole first, so a small compressed answer (a "gzip bomb": 512 MiB of zeros in half a megabyte) took
    about 64 MiB of memory at every poll, whatever ``max_body_bytes``. The answer is now inflated only up to the
    limit; an answer within it is decoded as before."""
    url, answers = encoded_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0, timeout_s=10.0, max_body_bytes=1_000_000)
    answers.append((encoding, _zeros_compressed(512 << 20, wbits)))
    assert len(answers[-1][1]) < 1_000_000  # within the limit as sent
    tracemalloc.start()
    try:
        result = poller.poll_once()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.errors == [f"poll of {url} failed: the answer is larger than 1,000,000 bytes"] and decided == []
    assert peak < 16 << 20, f"the poll took {peak / (1 << 20):.0f} MiB"
    item = {"id": "z1", "fault_type": "f", "target": "t", "action": "x", "confidence": 0.9}
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    answers.append((encoding, packer.compress(json.dumps([item]).encode()) + packer.flush()))
    assert poller.poll_once().errors == [] and [p.id for p in decided[0]] == ["z1"]
    poller.stop()


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate", -15)])
def test_a_compressed_answer_cut_short_is_said_to_be_cut_short(
    encoded_server: tuple[str, list[tuple[str, bytes]]], encoding: str, wbits: int
) -> None:
    """A gzip or deflate answer whose compressed data stopped early (a connection dropped in an answer without a
    length, a proxy that cut it) was logged as "the answer is not JSON (Unterminated string …)", pointing at the
    feed's JSON; and one cut in its trailer (the checksum) was taken unchecked. Both now say the answer is cut
    short, as the HTTP routes say of a gzip body, and nothing of it is decided."""
    url, answers = encoded_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0)
    item = {"fault_type": "f", "action": "x", "confidence": 0.9}
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    whole = packer.compress(json.dumps([item | {"id": f"p{i}", "target": f"t{i}"} for i in range(50)]).encode())
    whole += packer.flush()
    for cut in (len(whole) // 2, len(whole) - 1):
        answers.append((encoding, whole[:cut]))
        assert poller.poll_once().errors == [
            f"poll of {url} failed: the {encoding} answer is cut short (its compressed data ends before the end "
            "of stream)"
        ]
    assert decided == []
    answers.append((encoding, whole))
    assert poller.poll_once().errors == [] and len(decided[0]) == 50
    poller.stop()


def test_a_gzip_answer_of_several_members_is_read_whole(encoded_server: tuple[str, list[tuple[str, bytes]]]) -> None:
    """A gzip answer may hold several members one after the other (RFC 1952; what ``cat a.gz b.gz`` gives, or a
    server compressing its answer piece by piece): the poller read the first only and refused the answer as "not
    JSON". Every member is read now, within the size limit, and a last member cut short is still said to be."""
    url, answers = encoded_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0, max_body_bytes=10_000)
    item = {"fault_type": "f", "action": "x", "confidence": 0.9}
    text = json.dumps([item | {"id": f"p{i}", "target": f"t{i}"} for i in range(50)]).encode()
    members = [gzip.compress(text[i : i + 700]) for i in range(0, len(text), 700)]
    assert len(members) > 2
    answers.append(("gzip", b"".join(members)))
    assert poller.poll_once().errors == [] and len(decided[0]) == 50
    answers.append(("gzip", b"".join(members)[:-5]))
    assert poller.poll_once().errors == [
        f"poll of {url} failed: the gzip answer is cut short (its compressed data ends before the end of stream)"
    ]
    answers.append(("gzip", b"".join([*members, gzip.compress(b" " * 10_000)])))  # the members add up past the limit
    assert poller.poll_once().errors == [f"poll of {url} failed: the answer is larger than 10,000 bytes"]
    assert len(decided) == 1
    poller.stop()


def test_a_gzip_answer_padded_with_zeros_is_read(encoded_server: tuple[str, list[tuple[str, bytes]]]) -> None:
    """Zero bytes after a gzip member (padding to a block size) are no member: ``gzip -d`` and Python's ``gzip``
    skip them. Reading every member, the poller took them for the start of another one and refused the answer as
    "not valid gzip (incorrect header check)". They are skipped; anything else after the last member is refused."""
    url, answers = encoded_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0)
    item = {"id": "p1", "target": "t1", "fault_type": "f", "action": "x", "confidence": 0.9}
    text = json.dumps([item]).encode()
    answers.append(("gzip", gzip.compress(text[:10]) + b"\0" * 3 + gzip.compress(text[10:]) + b"\0" * 512))
    assert poller.poll_once().errors == [] and [p.id for p in decided[0]] == ["p1"]
    answers.append(("gzip", gzip.compress(text) + b"\0\0junk"))
    [error] = poller.poll_once().errors
    assert "the answer is not valid gzip" in error and len(decided) == 1
    poller.stop()


@pytest.mark.parametrize("answer", [b"processing", b"slow headers"])
def test_poller_bounds_the_time_of_an_answer_whose_headers_never_end(
    raw_server: tuple[str, list[bytes]], answer: bytes
) -> None:
    """The poll's time limit was checked only while the body was read: a feed that kept the headers coming — an
    interim ``102 Processing`` every few seconds while it computes, or header lines trickling in — each within the
    read timeout, held the poll for as long as it went on (for ever here), the poller thread with it: no more polls,
    no log line, and :meth:`Poller.stop` gave up on the thread after 10 s."""
    url, bodies = raw_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0, timeout_s=1.0)
    bodies.append(answer)
    started = time.monotonic()
    result = poller.poll_once()
    assert time.monotonic() - started < 3
    assert result.errors == [f"poll of {url} failed: no complete answer within 1 s"] and decided == []
    item = {"id": "p0", "fault_type": "f", "target": "t0", "action": "x", "confidence": 0.9}
    bodies.append(json.dumps([item]).encode())  # the feed answers again: the next poll is not held up
    assert poller.poll_once().errors == [] and len(decided) == 1
    poller.stop()


_ENTRY = b'{"id": "%s", "fault_type": "f", "target": "t-%s", "action": "x", "confidence": 0.9%s}'


def test_a_key_twice_in_an_entry_makes_that_entry_invalid_and_the_rest_is_decided(
    raw_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """``json.loads`` keeps the last value of a repeated key, silently: ``"confidence": 0.1, "confidence": 0.99``
    was decided at 0.99, where the HTTP routes refuse the same JSON naming the field."""
    url, bodies = raw_server
    decided, decide = _recorder()

    entries = [
        _ENTRY % (b"good", b"1", b""),
        _ENTRY % (b"conf", b"2", b', "confidence": 0.99'),
        _ENTRY % (b"label", b"3", b', "labels": {"k": "a", "k": "b"}'),
        b'{"id": "idtwice", "id": "other", "fault_type": "f", "target": "t4", "action": "x", "confidence": 0.9}',
        _ENTRY % (b"long", b"5", b', "' + b"L" * 5000 + b'": 1, "' + b"L" * 5000 + b'": 2'),
    ]
    twice = "this key appears twice in one object (one of its values would be lost)"
    expected = [f"[1].confidence: {twice}", f"[2].labels.k: {twice}", f"[3].id: {twice}", f"[4].{'L' * 5000}: {twice}"]
    for body in (b"[" + b", ".join(entries) + b"]", b'{"predictions": [' + b", ".join(entries) + b"]}"):
        bodies.append(body)
        decided.clear()
        caplog.clear()
        poller = Poller(url, decide, clock=lambda: 0.0)
        with caplog.at_level(logging.INFO, logger="bot.ingest.poller"):
            result = poller.poll_once()
        poller.stop()
        assert result.errors == expected
        assert [[p.id for p in batch] for batch in decided] == [["good"]]
        warned = [r.getMessage() for r in caplog.records]
        assert [r.levelno for r in caplog.records] == [logging.WARNING] * 4
        assert warned[0] == f"poller skipped prediction [1]: confidence: {twice}"
        assert warned[1] == f"poller skipped prediction [2]: labels.k: {twice}"
        assert warned[3].startswith("poller skipped prediction [4]: LLL") and len(warned[3]) < 400  # bounded


def test_a_key_twice_outside_the_entries_is_a_failed_poll(
    raw_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """``{"predictions": [...], "predictions": [...]}``: which list the feed meant is unknown (``json.loads`` took
    the last, silently). The whole answer is refused, as one that is not JSON is."""
    url, bodies = raw_server
    decided, decide = _recorder()

    poller = Poller(url, decide, clock=lambda: 0.0)
    twice = "this key appears twice in one object (one of its values would be lost)"
    one, two = _ENTRY % (b"p1", b"1", b""), _ENTRY % (b"p2", b"2", b"")
    for body, field in (
        (b'{"predictions": [' + one + b'], "predictions": [' + two + b"]}", "predictions"),
        (b'{"predictions": [' + one + b'], "feed": {"version": 1, "version": 2}}', "feed.version"),
        (b'{"predictions": [' + one + b'], "feed": [{"a": 1, "a": 2}]}', "feed[0].a"),
    ):
        bodies.append(body)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bot.ingest.poller"):
            result = poller.poll_once()
        assert result.errors == [f"poll of {url} failed: {field}: {twice}"] and decided == []
        assert [r.getMessage() for r in caplog.records] == result.errors
    bodies.append(b'{"predictions": [' + one + b'], "feed": {"version": 1}}')  # the same without a key twice
    assert poller.poll_once().errors == [] and [[p.id for p in batch] for batch in decided] == [["p1"]]
    poller.stop()


def _recovered_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "recovered" in r.getMessage()]


def test_the_first_usable_answer_after_failed_polls_logs_that_the_poll_recovered(
    raw_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """Failed polls were logged, a recovery was not: the log of an outage ended with its last error, and nothing
    said whether the feed had come back or how long it had been away."""
    url, bodies = raw_server
    credentialed = url.replace("http://", "http://npo:hunter2pass@")  # the password is never logged
    poller = Poller(credentialed, lambda predictions: [], clock=lambda: 0.0)
    good = json.dumps([{"id": "p1", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.9}]).encode()
    caplog.set_level(logging.INFO, logger="bot.ingest.poller")
    bodies.append(good)
    poller.poll_once()
    assert _recovered_lines(caplog) == []  # a success after a success (or after nothing): no line
    for body in (b"<html>Bad gateway</html>", b'{"items": []}', b""):
        bodies.append(body)
        assert poller.poll_once().errors
    assert _recovered_lines(caplog) == []
    bodies.append(good)
    caplog.clear()
    assert poller.poll_once().errors == []
    [line] = _recovered_lines(caplog)
    masked = url.replace("http://", "http://***@")
    assert line.levelno == logging.INFO
    assert re.fullmatch(
        rf"poll of {re.escape(masked)} recovered after 3 polls failed \(the first \d+ s ago\)", line.getMessage()
    )
    assert "hunter2pass" not in caplog.text
    for _ in range(2):  # successes after the recovery: no further line
        assert poller.poll_once().errors == []
    assert len(_recovered_lines(caplog)) == 1

    bodies.append(b"not json")  # one failed poll, then an answer whose every entry is invalid: the feed answers
    poller.poll_once()
    caplog.clear()
    bodies.append(b'[{"id": "x"}]')
    assert poller.poll_once().errors == ["[0].fault_type: is required"]
    [line] = _recovered_lines(caplog)
    assert "recovered after 1 poll failed (the first " in line.getMessage()
    poller.stop()


@pytest.fixture
def replay_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for ``npo-bot replay`` (Slack is never called); returns the database path."""
    settings = {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_INCIDENT_CHANNEL": "C0INCIDENT",
        "NPO_OPS_CHANNEL": "C0OPS",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "NPO_DB_PATH": str(tmp_path / "npo.db"),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "npo.db"


def _replay(path: Path, env: Path, *options: str) -> int:
    return cli_main(["replay", str(path), "--env-file", os.devnull, *options])


def test_replay_cli_names_what_it_cannot_read_and_stores_nothing(
    tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin1 = tmp_path / "latin1.csv"
    text = "id,fault_type,target,action,confidence\nc1,f,t1,x,0.8\nc2,f,café,x,0.8\n"
    latin1.write_bytes(b"\xef\xbb\xbf" + text.encode("latin-1"))  # a byte-order mark does not shift the place
    assert _replay(latin1, replay_env) == 2
    err = capsys.readouterr().err
    assert err.startswith("npo-bot replay: ") and "line 3: not UTF-8 (byte 0xe9)" in err and "Traceback" not in err
    assert not replay_env.exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    assert _replay(folder, replay_env) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npo-bot replay: cannot read {folder}: ") and "no such file" not in err


def test_replay_cli_says_a_gzip_file_is_compressed(
    tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rotated ``predictions.jsonl.gz`` was refused as "line 1: not UTF-8 (byte 0x8b); save the file as UTF-8":
    advice that cannot be followed for a compressed file."""
    path = tmp_path / "predictions.jsonl.gz"
    path.write_bytes(gzip.compress((GOOD_LINE % ("z1", "t1", "") + "\n").encode()))
    assert _replay(path, replay_env) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npo-bot replay: {path}: ") and "gzip" in err and "save the file as UTF-8" not in err, err
    assert not replay_env.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_replay_cli_reads_a_pipe(tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``npo-bot replay /dev/stdin < …`` or ``… | npo-bot replay /dev/stdin``: a pipe is not a regular file, and was
    refused as "no such file"."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w", encoding="utf-8") as out:
            out.write(GOOD_LINE % ("s1", "t1", "") + "\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert _replay(fifo, replay_env) == 0
    writer.join(5)
    assert capsys.readouterr().out.startswith("1 decided")
    with SQLiteStore(replay_env) as store:
        assert store.counts()["predictions"] == 1


def _lines(n: int, prefix: str = "r") -> str:
    return "".join(GOOD_LINE % (f"{prefix}{i}", f"t{i}", "") + "\n" for i in range(n))


def test_a_database_refusing_writes_mid_replay_says_how_far_it_got(
    tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The database refuses a write halfway through (disk full, I/O error): the chunks stored stay, and the replay
    says how many, with no traceback; run again once the database can be written, it decides the rest."""
    n = 3 * REPLAY_CHUNK
    feed = tmp_path / "feed.jsonl"
    feed.write_text(_lines(n), encoding="utf-8")
    assert cli_main(["db", "migrate", "--db", str(replay_env)]) == 0
    with contextlib.closing(sqlite3.connect(replay_env)) as db:
        db.execute(  # refuses the decisions past the first chunk, as a disk filling up would
            "CREATE TRIGGER fills_up BEFORE INSERT ON decisions "
            f"WHEN (SELECT COUNT(*) FROM decisions) >= {REPLAY_CHUNK} "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        db.commit()
    capsys.readouterr()
    assert _replay(feed, replay_env) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "database or disk is full" in captured.err
    assert f"after {REPLAY_CHUNK} of {n} predictions were decided and stored" in captured.err
    assert "run the same command again" in captured.err
    assert captured.out.startswith(f"{REPLAY_CHUNK} decided (")
    assert _decided(replay_env) == REPLAY_CHUNK

    with contextlib.closing(sqlite3.connect(replay_env)) as db:
        db.execute("DROP TRIGGER fills_up")
        db.commit()
    assert _replay(feed, replay_env) == 0
    assert _decided(replay_env) == n


def test_replay_decides_in_short_transactions(
    tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``npo-bot replay`` runs beside ``npo-bot serve`` on one database. One transaction for the whole file held
    SQLite's write lock for as long as the file took (~20 s a million predictions), and the bot's clicks and
    ingest calls waited or failed meanwhile. It now decides ``REPLAY_CHUNK`` predictions per transaction, with a
    pause between them for other writers: one decision time per transaction."""
    feed = tmp_path / "feed.jsonl"
    feed.write_text(_lines(2 * REPLAY_CHUNK + 7), encoding="utf-8")
    assert _replay(feed, replay_env) == 0
    assert capsys.readouterr().out.startswith(f"{2 * REPLAY_CHUNK + 7} decided")
    with SQLiteStore(replay_env) as store, store.read() as conn:
        rows = conn.execute("SELECT decided_at, COUNT(*) FROM decisions GROUP BY decided_at ORDER BY 1").fetchall()
    assert [count for _, count in rows] == [REPLAY_CHUNK, REPLAY_CHUNK, 7]


def test_ctrl_c_while_replay_creates_the_schema_is_one_line_and_the_next_run_decides_everything(
    tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands while the first replay into a new file creates the schema (inside a migration, where the
    signal's ``KeyboardInterrupt`` is raised) was a traceback. It is one line and exit 130; the schema's
    transaction is undone, and the same command run again creates it and decides every line."""
    feed = tmp_path / "feed.jsonl"
    feed.write_text(_lines(5), encoding="utf-8")
    real = migrations.MIGRATIONS.apply

    def cut_short(db: object, **kwargs: object) -> None:
        real(db, stop_before="m005_feedback_rate_limits")  # part of the schema written, then the signal
        raise KeyboardInterrupt

    monkeypatch.setattr(migrations.MIGRATIONS, "apply", cut_short)
    assert _replay(feed, replay_env) == 130
    err = capsys.readouterr().err
    assert err == "npo-bot replay: interrupted while opening the database; nothing was decided\n"
    conn = sqlite3.connect(replay_env)
    try:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'decisions'").fetchone() == (0,)
    finally:
        conn.close()
    monkeypatch.setattr(migrations.MIGRATIONS, "apply", real)
    assert _replay(feed, replay_env) == 0
    assert capsys.readouterr().out.startswith("5 decided")


def test_decide_in_chunks_stops_at_an_interrupt_keeping_what_was_committed(tmp_path: Path) -> None:
    """Ctrl-C between or inside transactions: the finished ones stay, the one in flight is rolled back, and the
    same replay run again decides the rest — each prediction once."""
    predictions = [prediction_from_json(json.loads(line), received_at=1.0) for line in _lines(25).splitlines()]
    with SQLiteStore(tmp_path / "npo.db", LoopConfig()) as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0))
        calls = 0

        def interrupted_in_third(batch: Sequence[Prediction]) -> list[DecideResult]:
            nonlocal calls
            calls += 1
            if calls == 3:
                with store.transaction():  # inside a transaction, as a signal would arrive mid-write
                    raise KeyboardInterrupt
            return service.decide(batch)

        run = decide_in_chunks(interrupted_in_third, predictions, chunk=10, pause_s=0.0)
        assert run.interrupted and len(run.results) == 20
        assert store.counts()["predictions"] == 20
        again = decide_in_chunks(service.decide, predictions, chunk=10, pause_s=0.0)
        assert not again.interrupted
        assert [r.duplicate for r in again.results] == [True] * 20 + [False] * 5
        assert store.counts()["predictions"] == 25


_LAUNCH = (  # `npo-bot` with Python's own Ctrl-C handling (a child of the test runner may inherit SIGINT ignored)
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['npo-bot', *sys.argv[1:]]; runpy.run_module('bot.cli', run_name='__main__')"
)


def _decided(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_ctrl_c_during_a_replay_keeps_what_was_stored_and_a_second_run_decides_the_rest(
    tmp_path: Path, replay_env: Path
) -> None:
    """A real SIGINT to ``npo-bot replay`` while it decides: exit 130 and one line saying how far it got (no
    traceback); run again, every prediction is stored exactly once."""
    n = 100 * REPLAY_CHUNK
    feed = tmp_path / "feed.jsonl"
    feed.write_text(_lines(n), encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", _LAUNCH, "replay", str(feed), "--env-file", os.devnull]
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _decided(replay_env) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the replay ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stored = _decided(replay_env)
    text = err.decode()
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text and "run the same command again" in text
    assert 0 < stored < n
    assert f"interrupted after {stored} of {n} predictions" in text
    assert out.decode().startswith(f"{stored} decided (")
    rerun = subprocess.run(argv, cwd=root, env=env, capture_output=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    summary = rerun.stdout.decode()
    assert summary.startswith(f"{n} decided (") and re.search(rf"[( ]{stored} duplicate[,)]", summary), summary
    assert _decided(replay_env) == n


def test_a_password_in_the_poll_url_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """``NPO_POLL_URL=https://npo:password@feed/…`` (basic auth): every failed poll logged the URL whole, and
    httpx's own error text names it too."""
    caplog.set_level(logging.WARNING, logger="bot.ingest.poller")
    poller = Poller(
        "http://npo:hunter2pass@127.0.0.1:9/predictions",  # nothing listens on port 9
        lambda batch: [],
        interval_s=60,
        clock=time.time,
        timeout_s=2,
    )
    try:
        result = poller.poll_once()
    finally:
        poller.stop()
    assert result.errors and "127.0.0.1:9" in result.errors[0]
    assert "hunter2pass" not in " ".join(result.errors) + caplog.text
    assert "npo:***@" not in caplog.text and "***@127.0.0.1:9" in caplog.text


def test_a_credential_in_the_poll_url_query_or_password_is_never_logged(
    raw_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """``NPO_POLL_URL=https://feed/p?token=…`` (a feed authenticating by query string): every failed poll, and the
    line saying the poll recovered, logged the token whole, and so did httpx's own line for each request (at INFO,
    which ``serve`` logs), the password included; a password holding a raw ``@``, which httpx reads up to the last
    ``@``, was masked only up to the first."""
    caplog.set_level(logging.INFO)
    base, bodies = raw_server
    secrets = ["abc123query", "k3yvalue", "s1gvalue", "p@ss-tail"]
    query = "?since=1h&token=abc123query&API_Key=k3yvalue&X-Amz-Signature=s1gvalue"
    url = base.replace("//", "//npo:p@ss-tail@") + query
    poller = Poller(url, lambda batch: [], interval_s=60, clock=time.time, timeout_s=2)
    try:
        bodies.append(b"<html>sign in</html>")  # a login page: the failed poll names the URL
        failed = poller.poll_once()
        bodies.append(b"[]")
        recovered = poller.poll_once()
    finally:
        poller.stop()
    assert failed.errors and "the answer is not JSON" in failed.errors[0] and recovered.errors == []
    assert "recovered after 1 poll failed" in caplog.text and caplog.text.count("HTTP Request: GET") == 2
    shown = " ".join(failed.errors) + caplog.text
    for secret in secrets:
        assert secret not in shown and secret.split("@")[-1] not in shown, secret
    assert "?since=1h&token=***&API_Key=***&X-Amz-Signature=***" in failed.errors[0]
    assert f"//***@{base.removeprefix('http://')}?since=1h" in failed.errors[0]


def test_the_served_poller_takes_its_size_limit_from_the_settings(
    raw_server: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    """``NPO_POLL_MAX_BYTES`` reaches the poller ``serve`` builds: a feed larger than it is refused whole."""
    url, bodies = raw_server
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s3cret",
        "NPO_INGEST_TOKEN": "ingest-token-0123456789",
        "NPO_INCIDENT_CHANNEL": "C0INC",
        "NPO_OPS_CHANNEL": "C0OPS",
        "NPO_POLL_URL": url,
        "NPO_POLL_MAX_BYTES": "2048",
    }
    settings = load_settings(env, None)
    item = {"fault_type": "f", "action": "x", "confidence": 0.9}
    small = json.dumps([item | {"id": "p0", "target": "t0"}]).encode()
    large = json.dumps([item | {"id": f"p{i}", "target": f"t{i}"} for i in range(1, 60)]).encode()
    assert len(small) < 2048 < len(large) < 10_000_000
    with SQLiteStore(tmp_path / "npo.db") as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: 1000.0)
        poller = build_poller(settings, service)
        assert poller is not None
        bodies.append(large)
        assert poller.poll_once().errors == [f"poll of {url} failed: the answer is larger than 2,048 bytes"]
        assert store.counts()["predictions"] == 0
        bodies.append(small)
        assert poller.poll_once().errors == [] and store.counts()["predictions"] == 1
        poller.stop()


def test_the_http_routes_name_a_key_twice_even_where_the_decoder_dropped_an_object_holding_one() -> None:
    """The helper the poller now shares with the HTTP routes: ``{"a": {"x": 1, "x": 2}, "a": 3}`` holds ``a``
    twice, its first value (an object holding ``x`` twice) dropped by the decoder; the refusal named ``(body)``."""
    with pytest.raises(BadJson) as refused:
        parse_json(b'{"a": {"x": 1, "x": 2}, "a": 3}')
    assert refused.value.field == "a"
    with pytest.raises(BadJson) as refused:
        parse_json(b'[{"ok": 1}, {"labels": {"k": 1, "k": 2}, "id": "x", "id": "y"}]')
    assert refused.value.field == "[1].labels.k"  # the first object to end in the text, as before


def test_an_unexpected_failure_of_a_poll_never_logs_the_urls_credentials(
    raw_server: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """A poll that fails in a way the poller does not handle (here deciding fails with an error naming the feed, and
    the error it was raised from too) is logged with its traceback; the URL's password and query credentials are
    masked in that record as in every other, the message and the traceback text both."""
    caplog.set_level(logging.INFO)
    base, bodies = raw_server
    url = base.replace("//", "//npo:hunter2pass@") + "?since=1h&token=abc123query"
    masked = base.replace("//", "//***@") + "?since=1h&token=***"

    def decide(predictions: Sequence[Prediction]) -> list[DecideResult]:
        try:
            raise ConnectionError(f"store behind {url} unreachable")
        except ConnectionError as exc:
            raise RuntimeError(f"could not decide the answer of {url}") from exc

    entry = {"id": "p1", "fault_type": "f", "target": "t", "action": "x", "confidence": 0.9}
    bodies.append(json.dumps([entry]).encode())
    poller = Poller(url, decide, interval_s=60, clock=time.time, timeout_s=2)
    poller.start()
    try:
        wait_for_log = time.monotonic() + 10
        while not [r for r in caplog.records if r.levelno >= logging.ERROR] and time.monotonic() < wait_for_log:
            time.sleep(0.02)
    finally:
        poller.stop()
    for secret in ("hunter2pass", "abc123query"):  # nor in the traceback as a handler writes it
        assert secret not in caplog.text, secret
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith(f"poll of {masked} failed; the next poll is on schedule\nTraceback")
    assert f"RuntimeError: could not decide the answer of {masked}" in record.getMessage()
    assert f"ConnectionError: store behind {masked} unreachable" in record.getMessage()  # the cause is kept


def test_a_feed_changing_a_prediction_under_its_id_is_logged_once_and_the_first_kept(
    tmp_path: Path, predictions_server: tuple[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """A feed that changed a prediction in place (same id, another confidence) was not even handed to the loop:
    the previous answer held the id. Now it is, the first prediction is kept and the conflict logged once, naming
    the id and the field; the next polls serving it so log nothing more."""
    caplog.set_level(logging.WARNING, logger="bot.ingest.poller")
    url, served = predictions_server
    item = {"id": "p1", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.99}
    served.append([item])
    with SQLiteStore(tmp_path / "npo.db", LoopConfig(default_channel="C1")) as store:
        service = NpoService(store, DEFAULT_POLICY, rng=np.random.default_rng(0), clock=lambda: 1000.0)
        poller = Poller(url, service.decide, clock=lambda: 1000.0)
        assert poller.poll_once().decided[0].duplicate is False
        served.append([item | {"confidence": 0.4}])
        changed = poller.poll_once()
        assert changed.conflicts == ["p1: confidence"] and changed.decided[0].conflict == ("confidence",)
        for _ in range(3):
            assert poller.poll_once().conflicts == []
        poller.stop()
        lines = [r.getMessage() for r in caplog.records if "p1" in r.getMessage()]
        assert len(lines) == 1 and "another confidence" in lines[0], lines
        stored = store.prediction("p1")
        assert stored is not None and stored.confidence == 0.99 and store.counts()["predictions"] == 1


def test_replay_reports_a_line_whose_id_was_received_with_another_body(
    tmp_path: Path, replay_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file holding an id the database (or an earlier line) has with another body: the line is reported with the
    fields that differ and counted apart from the duplicates, the first prediction kept, and the exit is 1; run
    again with identical lines only, all are duplicates and the exit is 0."""
    first = {"id": "r1", "fault_type": "f", "target": "t1", "action": "x", "confidence": 0.9}
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps(first) + "\n", encoding="utf-8")
    assert _replay(feed, replay_env) == 0
    capsys.readouterr()
    feed.write_text("\n".join(json.dumps(p) for p in (first, first | {"target": "t2"})) + "\n", encoding="utf-8")
    assert _replay(feed, replay_env) == 1
    out, err = capsys.readouterr()
    assert "1 conflicting" in out and "1 duplicate" in out, out
    assert f"{feed}: line 2: target: prediction 'r1' was received before with another target" in err, err
    with SQLiteStore(replay_env) as store:
        stored = store.prediction("r1")
        assert stored is not None and stored.target == "t1"
