"""Property-based fuzzing of every HTTP route and payload parser, over real HTTP against one running bot.

For every generated request: no 5xx, the server keeps answering, and a refused request (4xx) commits nothing to
the database (``PRAGMA data_version`` read on a separate connection). Signed Slack requests carrying garbage —
type confusion, missing fields, huge strings, deep nesting, invalid UTF-8, unknown action ids, clicks on unknown
recommendations or by people who are not responders — are acknowledged or refused, and store nothing.

The budget is fixed (``derandomize=True``, no example database): the example counts below add up to 2,550
requests. The parsers are also fuzzed directly (no HTTP) with the same strategies: they either return records or
raise :class:`InvalidRecord` naming a field — never anything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hardening_testing import (
    PREDICTION_REQUIRED,
    VALID_OUTCOME,
    VALID_PREDICTION,
    WriteWatch,
    alertmanager_bodies,
    command_bodies,
    event_bodies,
    fuzz,
    interaction_bodies,
    json_body,
    mutated_record,
    raw_bodies,
    signed_bytes_headers,
)
from hypothesis import given
from hypothesis import strategies as st
from slack_testing import SECRET, BotUnderTest, prediction

from bot.http.body import parse_json
from bot.ingest.alertmanager import parse_webhook
from bot.ingest.records import many, outcome_from_json, prediction_from_json
from npo.types import InvalidRecord

INGEST_ROUTES = ("/api/v1/predictions", "/api/v1/alertmanager", "/api/v1/outcomes")
SURFACED = ["fz-surfaced-a", "fz-surfaced-b"]


@pytest.fixture(scope="module")
def watch(fuzz_bot: BotUnderTest) -> Iterator[WriteWatch]:
    for pid in SURFACED:
        response = fuzz_bot.ingest(prediction(pid))
        assert response.json()["verdict"] == "surface", response.text
    w = WriteWatch(fuzz_bot.bot.settings.db_path)
    yield w
    w.close()


def _auth(bot: BotUnderTest) -> dict[str, str]:
    return {"Authorization": f"Bearer {bot.bot.settings.ingest_token}", "Content-Type": "application/json"}


def _post_ingest(http: httpx.Client, bot: BotUnderTest, watch: WriteWatch, path: str, body: bytes) -> None:
    before = watch.version()
    response = http.post(path, content=body, headers=_auth(bot))
    assert response.status_code < 500, (path, body[:300], response.text[:300])
    if response.status_code >= 400:
        assert watch.version() == before, f"refused with {response.status_code} but the database changed"
        answer = response.json()
        assert isinstance(answer.get("error"), str) and answer["error"], answer
        if response.status_code == 422:
            assert isinstance(answer.get("field"), str) and answer["field"], answer
    else:
        assert response.status_code == 200, response.text[:300]


def _alive(http: httpx.Client) -> None:
    assert http.get("/livez").text == "ok"


# -- ingest --------------------------------------------------------------------------------------------------------
@fuzz(600)
@given(body=mutated_record(VALID_PREDICTION, PREDICTION_REQUIRED))
def test_fuzz_ingest_predictions_json(http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, body: Any) -> None:
    _post_ingest(http, fuzz_bot, watch, "/api/v1/predictions", json_body(body))


@fuzz(300)
@given(path=st.sampled_from(INGEST_ROUTES), body=raw_bodies)
def test_fuzz_ingest_raw_bodies(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, path: str, body: bytes
) -> None:
    _post_ingest(http, fuzz_bot, watch, path, body)


@fuzz(400)
@given(body=alertmanager_bodies)
def test_fuzz_ingest_alertmanager(http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, body: Any) -> None:
    _post_ingest(http, fuzz_bot, watch, "/api/v1/alertmanager", json_body(body))


@fuzz(200)
@given(body=mutated_record(VALID_OUTCOME | {"prediction_id": SURFACED[0]}, ("prediction_id", "real_fault")))
def test_fuzz_ingest_outcomes(http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch, body: Any) -> None:
    _post_ingest(http, fuzz_bot, watch, "/api/v1/outcomes", json_body(body))


# -- Slack: a valid signature over garbage ---------------------------------------------------------------------------
def _post_signed(http: httpx.Client, watch: WriteWatch, content_type: str, body: bytes) -> httpx.Response:
    before = watch.counts()
    headers = signed_bytes_headers(SECRET, body, content_type)
    response = http.post("/slack/events", content=body, headers=headers)
    assert response.status_code < 500, (body[:300], response.text[:300])
    assert watch.counts() == before, f"a signed hostile request changed the database: {body[:300]!r}"
    return response


@fuzz(500)
@given(request=interaction_bodies(SURFACED))
def test_fuzz_signed_interactions(http: httpx.Client, watch: WriteWatch, request: tuple[str, bytes]) -> None:
    _post_signed(http, watch, *request)


@fuzz(200)
@given(request=st.one_of(event_bodies(), command_bodies()))
def test_fuzz_signed_events_and_commands(http: httpx.Client, watch: WriteWatch, request: tuple[str, bytes]) -> None:
    _post_signed(http, watch, *request)


@fuzz(150)
@given(
    request=st.one_of(interaction_bodies(SURFACED), event_bodies(), command_bodies()),
    headers=st.one_of(
        st.just({}),
        st.fixed_dictionaries(
            {
                "X-Slack-Signature": st.one_of(st.text(max_size=70), st.just("v0=" + "0" * 64)),
                "X-Slack-Request-Timestamp": st.one_of(st.text(max_size=12), st.integers(-(2**40), 2**40).map(str)),
            }
        ),
    ),
)
def test_fuzz_unsigned_or_forged_slack_requests_are_refused(
    http: httpx.Client, watch: WriteWatch, request: tuple[str, bytes], headers: dict[str, str]
) -> None:
    content_type, body = request
    with watch.unchanged("an unverifiable Slack request"):
        try:
            response = http.post("/slack/events", content=body, headers={"Content-Type": content_type, **headers})
        except (UnicodeEncodeError, httpx.LocalProtocolError):
            return  # the client itself cannot send such a header value
    assert response.status_code in (400, 401), (headers, response.status_code)


# -- every other route and method --------------------------------------------------------------------------------------
@fuzz(200)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(["/slack/events", *INGEST_ROUTES, "/healthz", "/livez", "/metrics", "/", "/api/v1/"]),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"), max_size=30).map(
            lambda t: "/" + t
        ),
    ),
    body=st.binary(max_size=64),
)
def test_fuzz_any_route_and_method(http: httpx.Client, watch: WriteWatch, method: str, path: str, body: bytes) -> None:
    with watch.unchanged(f"{method} {path}"):
        response = http.request(method, path, content=body or None)
    assert response.status_code < 500, (method, path, response.status_code)
    if response.status_code >= 400:
        assert response.status_code in (400, 401, 404, 405, 413), (method, path, response.status_code)


def test_the_server_survived_the_fuzzing_and_still_works(http: httpx.Client, fuzz_bot: BotUnderTest) -> None:
    _alive(http)
    assert http.get("/healthz").json()["status"] == "ok"
    response = fuzz_bot.ingest(prediction("fz-after"))
    assert response.status_code == 200 and response.json()["id"] == "fz-after"
    metrics = http.get("/metrics").text
    assert 'status="5xx"' not in metrics


# -- the parsers directly (no HTTP) ---------------------------------------------------------------------------------
def _parses_or_names_a_field(parse: Any, body: Any) -> None:
    error: InvalidRecord | None = None
    try:
        parse(body)
    except InvalidRecord as exc:
        error = exc
    assert error is None or (type(error) is InvalidRecord and error.field and error.message), error


@fuzz(300)
@given(body=mutated_record(VALID_PREDICTION, PREDICTION_REQUIRED))
def test_prediction_parser_raises_only_invalid_record(body: Any) -> None:
    _parses_or_names_a_field(lambda b: many(b, prediction_from_json, received_at=0.0), body)


@fuzz(200)
@given(body=mutated_record(VALID_OUTCOME, ("prediction_id", "real_fault")))
def test_outcome_parser_raises_only_invalid_record(body: Any) -> None:
    _parses_or_names_a_field(lambda b: many(b, outcome_from_json, now=0.0), body)


@fuzz(300)
@given(body=alertmanager_bodies)
def test_alertmanager_parser_raises_only_invalid_record(body: Any) -> None:
    _parses_or_names_a_field(lambda b: parse_webhook(b, now=0.0), body)


@fuzz(200)
@given(body=raw_bodies)
def test_json_decoder_raises_only_value_error(body: bytes) -> None:
    message = "parsed"
    try:
        parse_json(body)
    except ValueError as exc:
        message = str(exc)
    assert message


def test_deeply_nested_json_is_a_400_not_a_crash(http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        for path in INGEST_ROUTES:
            with watch.unchanged("deep nesting"):
                response = http.post(path, content=body, headers=_auth(fuzz_bot))
            assert response.status_code == 400, response.text
            assert "nested" in response.json()["error"]


def test_strings_that_are_not_valid_unicode_are_refused_and_stored_nowhere(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch
) -> None:
    cases = {f: {f: "bad\ud800"} for f in ("id", "fault_type", "target", "action", "channel")}
    cases["labels.k"] = {"labels": {"k": "\udfff"}}
    for field, change in cases.items():
        body = json.dumps(prediction("fz-surrogate") | change).encode()
        with watch.unchanged(f"lone surrogate in {field}"):
            response = http.post("/api/v1/predictions", content=body, headers=_auth(fuzz_bot))
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field


def test_an_overlong_alert_fingerprint_is_named_as_such(
    http: httpx.Client, fuzz_bot: BotUnderTest, watch: WriteWatch
) -> None:
    body = {"alerts": [{"status": "resolved", "labels": {"alertname": "X"}, "fingerprint": "f" * 300}]}
    with watch.unchanged("overlong fingerprint"):
        response = http.post("/api/v1/alertmanager", content=json_body(body), headers=_auth(fuzz_bot))
    assert response.status_code == 422
    assert response.json()["field"] == "alerts[0].fingerprint"
