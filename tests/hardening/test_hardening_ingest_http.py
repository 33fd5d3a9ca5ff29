"""The ingest API at the HTTP level, as Alertmanager, Grafana, curl scripts and a custom predictor meet it — over a
real server and a real SQLite file: wrong methods and unknown paths (JSON errors, ``Allow``), a trailing slash,
``Content-Encoding: gzip`` (decoded, the size limit on the decoded size, a gzip bomb refused without inflating
it), duplicate keys in a JSON object, the token in the query string, a large batch that must not stall the event
loop (Slack clicks share it), and identical notifications sent at once by an Alertmanager cluster."""

from __future__ import annotations

import gc
import gzip
import json
import resource
import statistics
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_testing import ALICE, BotUnderTest, make_settings, prediction, serving

from bot.app import build_bot
from bot.standin import StandIn

INGEST_ROUTES = ("/api/v1/predictions", "/api/v1/alertmanager", "/api/v1/outcomes", "/api/v1/policy/reload")


def _auth(bot: BotUnderTest, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bot.bot.settings.ingest_token}", **extra}


def _is_json_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    answer = response.json()
    assert isinstance(answer.get("error"), str) and answer["error"], answer
    assert isinstance(answer.get("field"), str) and answer["field"], answer
    return dict(answer)


# -- methods, paths -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_a_wrong_method_is_a_json_405_with_allow(bot: BotUnderTest, method: str) -> None:
    """POST only, but for the Alertmanager/Grafana route, which takes PUT too (a Grafana contact point's choice)."""
    before = bot.counts()
    for path in INGEST_ROUTES:
        allowed = "POST, PUT" if path == "/api/v1/alertmanager" else "POST"
        if method in allowed.split(", "):
            continue
        response = httpx.request(method, f"{bot.server.url}{path}", headers=_auth(bot))
        assert response.status_code == 405, (method, path, response.status_code)
        assert response.headers["allow"] == allowed
        answer = _is_json_error(response)
        assert answer["field"] == "(method)" and method in answer["error"]
    assert bot.counts() == before


def test_an_unknown_path_is_a_json_404(bot: BotUnderTest) -> None:
    for path in ("/api/v1/prediction", "/api/v2/predictions", "/api/v1/predictions/x"):
        response = httpx.post(f"{bot.server.url}{path}", json=prediction("p1"), headers=_auth(bot))
        assert response.status_code == 404, path
        assert _is_json_error(response)["field"] == "(path)"
    assert bot.counts()["predictions"] == 0


def test_a_trailing_slash_is_the_route_itself_not_a_redirect(bot: BotUnderTest) -> None:
    """A 307 answer stores nothing, and ``curl -f`` without ``-L`` takes it for success; the route is served."""
    url = bot.server.url
    response = httpx.post(f"{url}/api/v1/predictions/", json=prediction("p1"), headers=_auth(bot))
    assert response.status_code == 200, (response.status_code, response.headers)
    assert response.json()["id"] == "p1"
    outcome = {"prediction_id": "p1", "real_fault": True}
    response = httpx.post(f"{url}/api/v1/outcomes/", json=outcome, headers=_auth(bot))
    assert response.status_code == 200 and response.json()["recorded"] is True
    assert bot.counts()["predictions"] == 1 and bot.counts()["outcomes"] == 1
    assert httpx.post(f"{url}/api/v1/predictions/", json=prediction("p2")).status_code == 401


# -- error bodies ---------------------------------------------------------------------------------------------------
def test_every_ingest_error_is_json_naming_a_field(bot: BotUnderTest) -> None:
    url = f"{bot.server.url}/api/v1/predictions"
    limit = bot.bot.settings.max_body_bytes
    too_big = httpx.post(url, content=b"[" + b" " * limit + b"]", headers=_auth(bot))
    assert too_big.status_code == 413 and _is_json_error(too_big)["field"] == "(body)"

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked, refused while streaming
        for _ in range(limit // 10_000 + 2):
            yield b" " * 10_000

    chunked = httpx.post(url, content=chunks(), headers=_auth(bot))
    assert chunked.status_code == 413 and _is_json_error(chunked)["field"] == "(body)"
    reload = httpx.post(f"{bot.server.url}/api/v1/policy/reload", headers=_auth(bot))
    assert reload.status_code == 409 and _is_json_error(reload)["field"] == "NPO_POLICY_FILE"
    assert bot.counts()["predictions"] == 0


# -- Content-Encoding -----------------------------------------------------------------------------------------------
def test_a_gzip_body_is_decoded(bot: BotUnderTest) -> None:
    url = bot.server.url
    body = gzip.compress(json.dumps([prediction("g1"), prediction("g2")]).encode())
    response = httpx.post(f"{url}/api/v1/predictions", content=body, headers=_auth(bot, **{"Content-Encoding": "gzip"}))
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["results"]] == ["g1", "g2"]
    outcome = gzip.compress(json.dumps({"prediction_id": "g1", "real_fault": False}).encode())
    headers = _auth(bot, **{"Content-Encoding": "x-gzip"})
    assert httpx.post(f"{url}/api/v1/outcomes", content=outcome, headers=headers).json()["recorded"] is True


def test_a_gzip_body_padded_with_zeros_is_decoded(bot: BotUnderTest) -> None:
    """Zero bytes after a gzip member (padding to a block size) are skipped by ``gzip -d`` and Python's ``gzip``;
    they were taken for the start of another member and the body refused with 400 "not valid gzip"."""
    url = f"{bot.server.url}/api/v1/predictions"
    raw = json.dumps([prediction("z1"), prediction("z2")]).encode()
    body = gzip.compress(raw[:20]) + bytes(3) + gzip.compress(raw[20:]) + bytes(512)
    response = httpx.post(url, content=body, headers=_auth(bot, **{"Content-Encoding": "gzip"}))
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["results"]] == ["z1", "z2"]
    junk = httpx.post(url, content=gzip.compress(raw) + b"\0junk", headers=_auth(bot, **{"Content-Encoding": "gzip"}))
    assert junk.status_code == 400 and _is_json_error(junk)["field"] == "Content-Encoding"
    assert bot.counts()["predictions"] == 2


def test_an_unsupported_or_broken_encoding_is_refused_clearly(bot: BotUnderTest) -> None:
    url = f"{bot.server.url}/api/v1/predictions"
    raw = json.dumps(prediction("e1")).encode()
    for encoding in ("br", "deflate", "gzip, br", "compress"):
        response = httpx.post(url, content=raw, headers=_auth(bot, **{"Content-Encoding": encoding}))
        assert response.status_code == 415, (encoding, response.text)
        assert _is_json_error(response)["field"] == "Content-Encoding"
    for broken in (raw, gzip.compress(raw)[:-12]):  # not gzip at all; cut short
        response = httpx.post(url, content=broken, headers=_auth(bot, **{"Content-Encoding": "gzip"}))
        assert response.status_code == 400, response.text
        assert _is_json_error(response)["field"] == "Content-Encoding"
    ok = httpx.post(url, content=raw, headers=_auth(bot, **{"Content-Encoding": "identity"}))
    assert ok.status_code == 200
    assert bot.counts()["predictions"] == 1


def _gzip_of_zeros(size: int) -> bytes:
    """``size`` zero bytes gzip-compressed, without holding them in memory (about 1,000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    return b"".join([*parts, packer.flush()])


def test_the_size_limit_applies_to_the_decoded_body_and_a_gzip_bomb_is_not_inflated(bot: BotUnderTest) -> None:
    url = f"{bot.server.url}/api/v1/predictions"
    limit = bot.bot.settings.max_body_bytes
    over = gzip.compress(json.dumps([prediction(f"b{i}") for i in range(limit // 100)]).encode())
    assert len(over) < limit  # small on the wire, over the limit once decoded
    response = httpx.post(url, content=over, headers=_auth(bot, **{"Content-Encoding": "gzip"}))
    assert response.status_code == 413 and _is_json_error(response)["field"] == "(body)"
    assert "decompressed" in response.json()["error"]

    bomb = _gzip_of_zeros(512 << 20)  # 512 MB of zeros in about 0.5 MB
    assert len(bomb) < limit
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; the server is in this process
    started = time.perf_counter()
    response = httpx.post(url, content=bomb, headers=_auth(bot, **{"Content-Encoding": "gzip"}), timeout=30)
    elapsed = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert response.status_code == 413, response.text
    assert grown_mib < 64, f"the peak memory grew by {grown_mib:.0f} MiB"
    assert elapsed < 5, elapsed
    assert bot.counts()["predictions"] == 0


# -- JSON objects -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"id": "d1", "id": "d2", "fault_type": "f", "target": "t", "action": "a", "confidence": 0.9}', "id"),
        (
            b'[{"id": "d3", "fault_type": "f", "target": "t", "action": "a", "confidence": 0.9},'
            b' {"id": "d4", "fault_type": "f", "target": "u", "action": "a", "confidence": 0.1, "confidence": 0.99}]',
            "[1].confidence",
        ),
        (
            b'{"id": "d5", "fault_type": "f", "target": "t", "action": "a", "confidence": 0.9,'
            b' "labels": {"cluster": "a", "cluster": "b"}}',
            "labels.cluster",
        ),
    ],
)
def test_a_key_twice_in_one_object_is_refused_naming_it(bot: BotUnderTest, body: bytes, field: str) -> None:
    """JSON decoders keep the last value of a repeated key, silently: one of two values the sender gave is lost."""
    before = bot.counts()
    response = httpx.post(f"{bot.server.url}/api/v1/predictions", content=body, headers=_auth(bot))
    assert response.status_code == 400, response.text
    assert _is_json_error(response)["field"] == field
    assert "twice" in response.json()["error"]
    assert bot.counts() == before


def test_a_key_twice_in_an_alert_is_refused(bot: BotUnderTest) -> None:
    body = (
        b'{"version": "4", "status": "firing", "alerts": [{"status": "firing", "fingerprint": "f1",'
        b' "labels": {"alertname": "DiskFull", "instance": "n1", "instance": "n2"}}]}'
    )
    response = httpx.post(f"{bot.server.url}/api/v1/alertmanager", content=body, headers=_auth(bot))
    assert response.status_code == 400 and _is_json_error(response)["field"] == "alerts[0].labels.instance"
    assert bot.counts()["predictions"] == 0


# -- Content-Type -----------------------------------------------------------------------------------------------------
def test_json_is_read_whatever_the_content_type_and_a_refusal_says_which_was_sent(bot: BotUnderTest) -> None:
    """``curl -d`` sends ``application/x-www-form-urlencoded``: a JSON body is still read as JSON. A body that is
    not JSON is refused naming the Content-Type it came with (a form, or a charset other than UTF-8)."""
    url = f"{bot.server.url}/api/v1/predictions"
    for i, content_type in enumerate(
        ("application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8")
    ):
        body = json.dumps(prediction(f"ct{i}")).encode()
        response = httpx.post(url, content=body, headers=_auth(bot, **{"Content-Type": content_type}))
        assert response.status_code == 200, (content_type, response.text)
    form = httpx.post(url, data={"id": "f1", "confidence": "0.9"}, headers=_auth(bot))
    assert form.status_code == 400
    assert "application/x-www-form-urlencoded" in _is_json_error(form)["error"]
    latin = json.dumps(prediction("café"), ensure_ascii=False).encode("latin-1")
    headers = _auth(bot, **{"Content-Type": "application/json; charset=iso-8859-1"})
    refused = httpx.post(url, content=latin, headers=headers)
    assert refused.status_code == 400 and "UTF-8" in _is_json_error(refused)["error"]
    assert "iso-8859-1" in refused.json()["error"]


# -- the token ------------------------------------------------------------------------------------------------------
def test_a_token_in_the_query_string_is_refused_even_with_a_good_header(bot: BotUnderTest) -> None:
    """A URL ends up in proxy and access logs: a request carrying the token there is refused, so the sender fixes
    it at once instead of leaking the token with every call."""
    token = bot.bot.settings.ingest_token
    for path in INGEST_ROUTES:
        response = httpx.post(f"{bot.server.url}{path}?token={token}", json=prediction("q1"), headers=_auth(bot))
        assert response.status_code == 400, (path, response.text)
        answer = _is_json_error(response)
        assert answer["field"] == "(query)" and "Authorization" in answer["error"]
        assert token not in response.text
        alone = httpx.post(f"{bot.server.url}{path}?access_token={token}", json=prediction("q1"))
        assert alone.status_code == 401 and "URL" in alone.json()["error"]
    assert bot.counts()["predictions"] == 0


# -- a large batch and the event loop -------------------------------------------------------------------------------
@pytest.fixture
def big_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    built = build_bot(make_settings(tmp_path, standin, max_body_bytes=4_000_000), seed=1, run_worker=False)
    with serving(built, standin) as served:
        yield served


def _batch(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{tag}-{i}",
            "fault_type": f"ft{i % 50}",
            "target": f"h-{i}",
            "action": "investigate",
            "confidence": 0.3,
        }
        for i in range(n)
    ]


def test_a_large_batch_does_not_stall_the_event_loop(big_bot: BotUnderTest) -> None:
    """The event loop also answers Slack's clicks (3 s to ack). Parsing, checking, deciding and writing the answer
    of a 4 MB batch (37,000 predictions; then the same batch with its last item invalid) run on a worker thread:
    ``GET /livez`` keeps answering meanwhile (at most 15–55 ms late here, garbage collection off); on the event
    loop they held it for 0.4–0.6 s at a time."""
    url = big_bot.server.url
    stalls: list[float] = []
    statuses: set[int] = set()
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=url) as client:
            while not stop.is_set():
                started = time.perf_counter()
                statuses.add(client.get("/livez").status_code)
                stalls.append(time.perf_counter() - started)
                time.sleep(0.005)

    batch = _batch(37_000, "big")
    raw = json.dumps(batch).encode()
    assert 3_500_000 < len(raw) <= 4_000_000
    bad = json.dumps([*batch[:-1], dict(batch[-1], confidence=2)]).encode()
    thread = threading.Thread(target=probe)
    gc.collect()
    gc.disable()  # the server shares this process: a full collection would stall the loop whoever allocated
    thread.start()
    try:
        time.sleep(0.2)
        first = httpx.post(f"{url}/api/v1/predictions", content=raw, headers=_auth(big_bot), timeout=120)
        refused = httpx.post(f"{url}/api/v1/predictions", content=bad, headers=_auth(big_bot), timeout=120)
    finally:
        stop.set()
        thread.join()
        gc.enable()
    assert first.status_code == 200 and len(first.json()["results"]) == 37_000
    assert refused.status_code == 422 and refused.json()["field"] == "[36999].confidence"
    assert statuses == {200}
    worst, p50 = max(stalls), statistics.median(stalls)
    print(f"/livez during two 4 MB posts: {len(stalls)} probes, p50 {p50 * 1000:.1f} ms, max {worst * 1000:.0f} ms")
    assert worst < 0.2, f"the event loop stalled for {worst * 1000:.0f} ms"


# -- at once --------------------------------------------------------------------------------------------------------
def _at_once(url: str, body: dict[str, Any], headers: dict[str, str], n: int) -> list[httpx.Response]:
    """``n`` identical requests, each on its own connection, released together."""
    answers: list[httpx.Response] = []
    gate = threading.Barrier(n)

    def send() -> None:
        with httpx.Client() as client:
            gate.wait()
            answers.append(client.post(url, json=body, headers=headers))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_identical_notifications_sent_at_once_are_recorded_once(bot: BotUnderTest) -> None:
    """An Alertmanager cluster may send the same notification from every replica at the same moment."""
    firing = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "instance": "n9", "severity": "critical"},
                "startsAt": "2025-03-26T10:00:00Z",
                "fingerprint": "c0ffee",
            }
        ],
    }
    resolved = json.loads(json.dumps(firing))
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2025-03-26T11:00:00Z"
    resolved["alerts"][0]["annotations"] = {"npo_outcome": "real_fault"}  # an outcome, recorded once
    url = f"{bot.server.url}/api/v1/alertmanager"
    answers = _at_once(url, firing, _auth(bot), 6)
    assert [a.status_code for a in answers] == [200] * 6
    assert sorted(a.json()["results"][0]["duplicate"] for a in answers) == [False] + [True] * 5
    answers = _at_once(url, resolved, _auth(bot), 6)
    assert [a.status_code for a in answers] == [200] * 6
    assert sorted(a.json()["outcomes"][0]["recorded"] for a in answers) == [False] * 5 + [True]
    assert bot.counts()["predictions"] == 1 and bot.counts()["outcomes"] == 1


def test_a_body_in_another_encoding_than_utf8_is_refused(bot: BotUnderTest) -> None:
    """The routes read UTF-8 (RFC 8259), as the README says; ``json.loads`` of bytes also took UTF-16 and UTF-32.
    Refused, saying so, and nothing stored; a UTF-8 byte-order mark is still fine."""
    url = f"{bot.server.url}/api/v1/predictions"
    text = json.dumps(prediction("u1"))
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        response = httpx.post(url, content=text.encode(encoding), headers=_auth(bot))
        assert response.status_code == 400, (encoding, response.text)
        assert "must be UTF-8" in _is_json_error(response)["error"]
    assert bot.counts()["predictions"] == 0
    assert httpx.post(url, content=text.encode("utf-8-sig"), headers=_auth(bot)).status_code == 200


def test_an_outcome_time_ahead_of_the_clock_is_refused_naming_at(bot: BotUnderTest) -> None:
    """An outcome happened in the past: ``at`` in milliseconds (a JavaScript ``Date.now()``) or from a host whose
    clock runs hours ahead was stored as it came, a time in the year 57,000. Refused, naming ``at`` (and the likely
    unit), and nothing stored; a few minutes ahead is a clock's skew, and is taken."""
    url = f"{bot.server.url}/api/v1/outcomes"
    assert bot.ingest(prediction("o1")).status_code == 200
    now = time.time()
    for at, hint in ((now * 1000, "milliseconds?"), (now + 3 * 3600, "ahead of the bot's clock")):
        response = httpx.post(url, json={"prediction_id": "o1", "real_fault": True, "at": at}, headers=_auth(bot))
        assert response.status_code == 422, response.text
        answer = _is_json_error(response)
        assert answer["field"] == "at" and hint in answer["error"], answer
    assert bot.counts()["outcomes"] == 0
    ok = httpx.post(url, json={"prediction_id": "o1", "real_fault": True, "at": now + 60}, headers=_auth(bot))
    assert ok.status_code == 200 and ok.json()["recorded"] is True


def test_a_second_outcome_says_whether_it_agrees_with_the_one_on_record(bot: BotUnderTest) -> None:
    """The first outcome wins. A retry and an outcome that says the opposite were answered alike, ``recorded:
    false``, so a sender could not tell that what it reported was set aside. Now the answer gives the truth on record
    and whether this one conflicts with it, for the prediction's own id and for a duplicate's."""
    url = f"{bot.server.url}/api/v1/outcomes"
    assert bot.ingest(prediction("o1", target="host-o1")).status_code == 200
    first = httpx.post(url, json={"prediction_id": "o1", "real_fault": True}, headers=_auth(bot)).json()
    assert first == {"prediction_id": "o1", "recorded": True, "missed_fault": False}
    again = httpx.post(url, json={"prediction_id": "o1", "real_fault": True}, headers=_auth(bot)).json()
    assert again["recorded"] is False and again["recorded_real_fault"] is True and again["conflict"] is False
    batch = [{"prediction_id": "o1", "real_fault": False}, {"prediction_id": "o1", "real_fault": True}]
    answers = httpx.post(url, json=batch, headers=_auth(bot)).json()["results"]
    assert [(a["recorded_real_fault"], a["conflict"]) for a in answers] == [(True, True), (True, False)]
    # a duplicate by fingerprint answers for the prediction it duplicated
    duplicate = bot.ingest(prediction("o1-again", target="host-o1")).json()
    assert duplicate["duplicate"] is True, duplicate
    other = httpx.post(url, json={"prediction_id": "o1-again", "real_fault": False}, headers=_auth(bot)).json()
    assert other["recorded"] is False and other["conflict"] is True, other
    assert bot.counts()["outcomes"] == 1


@pytest.fixture
def posting_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    """A bot with its delivery worker on, so a recommendation is posted and can be clicked."""
    standin.add_user(ALICE)
    built = build_bot(make_settings(tmp_path, standin), seed=1)
    with serving(built, standin) as served:
        yield served


def test_a_click_during_a_large_batch_does_not_stall_the_event_loop(posting_bot: BotUnderTest) -> None:
    """A click's write waits for another thread's transaction to commit — an ingest batch commits its thousands of
    predictions in one — on a thread, not on the event loop: meanwhile ``GET /livez`` (and every other click, every
    other request) is answered, and the click is stored once the transaction ends. Before, the click waited on the
    loop, and nothing was answered until the batch committed. The batch here is a transaction held open by a thread
    of the bot's process (as the ingest route's worker thread holds one), so the test does not depend on timing."""
    bot = posting_bot
    message = bot.surface("c1")
    url = bot.server.url
    release = threading.Event()
    writing = threading.Event()

    def batch() -> None:
        with bot.bot.store.transaction():
            writing.set()
            release.wait(60)

    holder = threading.Thread(target=batch)
    holder.start()
    assert writing.wait(10)
    clicks: list[httpx.Response] = []
    clicking = threading.Thread(target=lambda: clicks.append(bot.click(ALICE, "npo_like", message)))
    clicking.start()
    try:
        time.sleep(0.2)  # the click has reached the server and waits for the write lock
        try:
            live = httpx.get(f"{url}/livez", timeout=5).status_code
        except httpx.TimeoutException:
            live = None
        assert live == 200, "/livez was not answered while the click waited: the event loop was held"
        assert clicking.is_alive()  # the click is still waiting for the transaction
    finally:
        release.set()
        holder.join()
        clicking.join()
    assert clicks[0].status_code == 200
    assert bot.counts()["feedback"] == 1


def test_an_id_sent_again_with_another_body_is_a_409_naming_the_fields(bot: BotUnderTest) -> None:
    """A prediction sent again under its id with another target, action, confidence or fault time was answered as
    a duplicate (200, the first one kept) without a word: the sender could not tell its new prediction was set
    aside. Now 409 naming the id and the fields that differ, and nothing of the request stored; an identical
    re-send is still the idempotent 200 ``"duplicate": true``, without ``differs``."""
    first = prediction("c1", target="host-c1")
    assert bot.ingest(first).json()["duplicate"] is False
    again = bot.ingest(first)
    assert again.status_code == 200 and again.json()["duplicate"] is True and "differs" not in again.json()
    before = bot.counts()
    changed = first | {"target": "host-c9", "confidence": 0.5, "time_to_fault_s": 60}
    response = bot.ingest(changed)
    assert response.status_code == 409, response.text
    answer = _is_json_error(response)
    assert answer["id"] == "c1" and answer["differs"] == ["target", "confidence", "time_to_fault_s"], answer
    assert answer["field"] == "target" and "'c1'" in answer["error"] and "new id" in answer["error"], answer
    # in a list: the whole list is refused (the new prediction before it is not stored either), named by its place
    batch = [prediction("c2", target="host-c2"), first | {"action": "reboot"}]
    response = bot.ingest(batch)
    assert response.status_code == 409, response.text
    assert _is_json_error(response)["field"] == "[1].action" and response.json()["differs"] == ["action"]
    # the same id twice in one list, with two bodies
    response = bot.ingest([prediction("c3", target="host-c3"), prediction("c3", target="host-c3", severity="info")])
    assert response.status_code == 409 and response.json()["field"] == "[1].severity", response.text
    assert bot.counts() == before
    # an identical list re-sent is still all duplicates
    assert [r["duplicate"] for r in bot.ingest([first, first]).json()["results"]] == [True, True]
