"""Alertmanager/Grafana mapping, JSON records, replay files and the poller (against a local stdlib server)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bot.ingest.alertmanager import parse_webhook
from bot.ingest.poller import Poller
from bot.ingest.records import many, prediction_from_json
from bot.ingest.replay import read_predictions
from bot.service import NpoService
from npo.loop import DecideResult, LoopConfig
from npo.policy import DEFAULT_POLICY
from npo.types import InvalidRecord, Prediction, Severity
from storage import SQLiteStore, StorageError

GRAFANA = {
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


def test_resolved_alert_is_an_outcome() -> None:
    body = dict(GRAFANA, alerts=[dict(GRAFANA["alerts"][0], status="resolved", endsAt="2025-03-26T11:00:00Z")])
    batch = parse_webhook(body, now=0.0)
    assert not batch.predictions and batch.outcomes[0].real_fault
    assert batch.outcomes[0].prediction_id == "am:ff01@20250326T100000Z"  # the episode that fired
    assert batch.fallback_ids == {"am:ff01@20250326T100000Z": "am:ff01"}  # as stored before episode ids


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
    assert batch.outcomes[0].prediction_id == "am:ff01" and batch.fallback_ids == {}


@pytest.mark.parametrize(
    ("alert_patch", "field"),
    [
        ({"labels": {"alertname": "X"}}, "alerts[0].labels.instance"),
        ({"annotations": {"confidence": "very"}}, "alerts[0].annotations.confidence"),
        ({"annotations": {"confidence": "1.7"}}, "alerts[0].confidence"),
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
        ({"annotations": {"confidence": "1.7"}}, "alerts[1].confidence"),
        ({"status": "pending"}, "alerts[1].status"),
        ({"status": "resolved", "fingerprint": "f" * 300}, "alerts[1].fingerprint"),
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
    assert [o.prediction_id for o in batch.outcomes] == ["am:ff00@20250326T100000Z"]
    assert batch.fallback_ids == {"am:ff00@20250326T100000Z": "am:ff00"}
    assert [e.field for e in batch.errors] == [field]
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING and field in warning.getMessage()


def test_a_notification_of_bad_alerts_names_the_first_and_an_empty_one_is_fine() -> None:
    bad = [dict(GRAFANA["alerts"][0], labels={"alertname": "X"}), "not an alert"]
    with pytest.raises(InvalidRecord) as info:
        parse_webhook(dict(GRAFANA, commonLabels={}, alerts=bad), now=0.0)
    assert info.value.field == "alerts[0].labels.instance"
    empty = parse_webhook(dict(GRAFANA, alerts=[]), now=0.0)
    assert (empty.predictions, empty.outcomes, empty.errors) == ([], [], [])


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


@pytest.fixture
def predictions_server() -> Iterator[tuple[str, list[object]]]:
    served: list[object] = []

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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predictions", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_poller_feeds_the_loop(tmp_path: Path, predictions_server: tuple[str, list[object]]) -> None:
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
    tmp_path: Path, predictions_server: tuple[str, list[object]]
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
