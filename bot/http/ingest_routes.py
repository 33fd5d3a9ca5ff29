"""The ingest API: ``POST /api/v1/predictions``, ``/api/v1/alertmanager`` (``PUT`` too, served the same: Grafana's
webhook contact point may be set to send with it), ``/api/v1/outcomes`` (and ``/api/v1/policy/reload``, see
:mod:`bot.http.policy_route`).

Every route needs ``Authorization: Bearer <NPO_INGEST_TOKEN>`` (401 otherwise) and takes no query string (400:
a token put in the URL would be written to access logs). It takes JSON whatever the ``Content-Type`` (``curl -d``
sends a form type), UTF-8, up to the body limit (413 above it); a ``Content-Encoding: gzip`` body is decoded, the
limit applying to the decoded size too (other encodings: 415). A key twice in one object is refused (400) like
invalid JSON. Malformed input is answered with 400/422 ``{"error": …, "field": …}`` — nothing is stored then:
a list is validated completely before any of it is decided. The exception is an Alertmanager/Grafana
notification, whose alerts are taken one by one (Alertmanager groups unrelated alerts and does not retry a 4xx):
the usable ones are decided or recorded and each malformed one is listed under ``"errors": [{"field", "message"}]``
(the first :data:`LISTED_ALERT_ERRORS`; ``"errors_omitted"`` counts the rest) with 200; only a notification with no
usable alert, or a malformed body, is 422. A notification the sender truncated (``max_alerts``) has
``"truncated_alerts"``: the number of alerts it left out, which NPO never saw (also logged). Duplicates (same id, or
same fingerprint within the dedupe window) are answered 200 with ``"duplicate": true``, but for a prediction sent
to ``/api/v1/predictions`` again under its id with another body (another target, action, confidence…): that is
answered 409 naming the id and the fields that differ (``"id"``, ``"differs"``), and nothing of its request is
stored; the first prediction stays. (An Alertmanager alert sent again with other annotations is a duplicate, whose
answer lists ``"differs"``: Alertmanager does not retry a 4xx, and would lose the rest of its notification.)
Everything after reading the body runs on a worker thread (:class:`IngestApi`).

A notification's resolved alerts are answered under ``"outcomes"``, one entry each, in order, whose ``"result"``
says what was done (see :func:`resolved_json`): ``"outcome"`` (the alert said whether the fault was real, or
``NPO_ALERTMANAGER_RESOLVED=real_fault``: recorded and learnt from, first one wins), ``"no_outcome"`` (it did not
say: nothing learnt, the recommendation closed) or ``"unknown_prediction"``.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.body import (
    BadGzip,
    BadJson,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    error,
    gunzip,
    parse_json,
    read_body,
    timed_out,
)
from bot.http.policy_route import PolicyHolder
from bot.ingest.alertmanager import EPISODE_SEP as ALERT_EPISODE_SEP
from bot.ingest.alertmanager import ID_PREFIX as ALERT_ID_PREFIX
from bot.ingest.alertmanager import SOURCE as ALERTMANAGER_SOURCE
from bot.ingest.alertmanager import ResolvedAlert, parse_webhook
from bot.ingest.records import many, outcome_from_json, prediction_from_json
from bot.service import ClosedResult, NpoService
from npo.loop import ConflictingPrediction, DecideResult, OutcomeResult, UnknownPrediction
from npo.types import InvalidRecord, Outcome
from storage import StorageError

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
STORAGE_RETRY_AFTER_S = 30
LISTED_ALERT_ERRORS = 100  # refused alerts listed in a webhook's answer; more are counted in "errors_omitted"


def storage_unavailable(exc: Exception, stored: str = "nothing was stored") -> Response:
    """503 for a write the database refused (disk full, I/O error, locked for too long): the transaction was
    rolled back, so the sender may simply retry the same request later. ``stored``: what the request did store
    before (committed, and found again as duplicates by the retry)."""
    log.error("ingest refused, the database cannot be written (%s): %s", stored, exc)
    response = error(503, f"the database cannot be written ({exc}); {stored}, retry later", "(storage)")
    response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER_S)
    return response


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as JSONResponse's


def json_answer(answer: dict[str, Any]) -> Response:
    """``answer`` as JSON, its lists encoded one item at a time. One ``json.dumps`` over the answer to a large batch
    holds the GIL, and with it the event loop, from start to end (0.1 s for the 7 MB answer to a 4 MB batch, and
    proportionally more up to the 100 MB limit); item by item, the loop gets its turn every few milliseconds."""
    parts = []
    for key, value in answer.items():
        text = f"[{','.join(map(_ENCODER.encode, value))}]" if isinstance(value, list) else _ENCODER.encode(value)
        parts.append(f"{_ENCODER.encode(key)}:{text}")
    return Response("{" + ",".join(parts) + "}", media_type="application/json")


def decision_json(result: DecideResult) -> dict[str, Any]:
    """The answer for one prediction; a duplicate whose body differs from the one on record under its id has
    ``"differs"`` (the fields), which an identical re-send has not."""
    d = result.decision
    answer = {
        "id": d.prediction_id,
        "duplicate": result.duplicate,
        "verdict": d.verdict.value,
        "rule": d.rule,
        "reason": d.reason,
        "score": round(d.score, 6),
        "threshold": d.threshold,
        "key": d.key,
    }
    if result.conflict:
        answer["differs"] = list(result.conflict)
    return answer


def conflict_answer(exc: ConflictingPrediction, was_list: bool) -> Response:
    """409 for a prediction sent again under its id with another body: ``{"error", "field", "id", "differs"}``,
    ``field`` the first field that differs (``[i].confidence`` in a list)."""
    where = f"[{exc.index}].{exc.field}" if was_list else exc.field
    body = {"error": exc.message, "field": where, "id": exc.prediction_id, "differs": list(exc.fields)}
    return JSONResponse(body, status_code=409)


def resolved_json(
    resolved: ResolvedAlert, prediction_id: str, result: OutcomeResult | ClosedResult | None
) -> dict[str, Any]:
    """The answer's entry for one resolved alert (``prediction_id``: the id it was matched to, its fallback
    perhaps). Every entry has ``prediction_id``, ``result`` and ``recorded`` (whether an outcome was stored now):

    * ``"outcome"``: the alert said whether the fault was real (``real_fault``); ``recorded`` false when an outcome
      was already recorded (the first one wins); ``missed_fault``: it was suppressed and the fault was real;
    * ``"no_outcome"``: it did not say — nothing learnt; ``closed``: this report closed the open recommendation
      (false: none was open, an earlier report or an outcome had closed it, or another alert merged into the
      prediction still fires); ``warning`` when an
      ``npo_outcome`` was given but not taken (an unknown value);
    * ``"unknown_prediction"`` (``result`` None): no prediction has the alert's id; ``error`` says so.
    """
    if result is None:
        message = UnknownPrediction(resolved.prediction_id).message  # the id the sender gave
        entry = {"prediction_id": resolved.prediction_id, "result": "unknown_prediction", "recorded": False}
        return entry | {"error": message}
    if isinstance(result, OutcomeResult):
        return {
            "prediction_id": prediction_id,
            "result": "outcome",
            "real_fault": resolved.real_fault,
            "recorded": result.recorded,
            "missed_fault": result.missed_fault,
        }
    entry = {"prediction_id": prediction_id, "result": "no_outcome", "recorded": False, "closed": result.closed}
    return entry if resolved.problem is None else entry | {"warning": resolved.problem}


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """A request body as read off the wire, with what is needed to decode it (on a worker thread)."""

    raw: bytes
    gzip: bool
    content_type: str


def _content_type_hint(content_type: str) -> str:
    """Why a body that is not JSON may not be: a form, or a charset other than UTF-8, named as sent (else "")."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
            return f" (the body must be UTF-8 JSON; Content-Type said charset={charset})"
    if media and media != "application/json" and not media.endswith("+json"):
        return f" (the body must be JSON; Content-Type said {media})"
    return ""


class IngestApi:
    """The ingest endpoints over one :class:`NpoService`.

    On the event loop: the bearer check, the query-string check, ``Content-Encoding`` and reading the body. The
    rest — gunzip, JSON, validation, the decisions and writing the answer — runs on a worker thread, in one hop:
    for a large batch it is CPU work of a second or more, which on the loop would hold up every Slack click.
    """

    def __init__(
        self,
        service: NpoService,
        *,
        token: str,
        max_body_bytes: int,
        body_timeout_s: float = 30.0,
        policy: PolicyHolder | None = None,
    ) -> None:
        self.service = service
        self.body_timeout_s = body_timeout_s
        self.policy = policy or PolicyHolder(service, None)
        self._token = token.encode()
        self.max_body_bytes = max_body_bytes
        self._told_no_outcome = False  # the first resolved alert closed without an outcome is logged (info)

    def _authorised(self, request: Request) -> bool:
        """``Authorization: Bearer <token>`` (the scheme in any case). The token is compared in constant time
        (``hmac.compare_digest``), always — whatever the scheme — so the answer's timing tells nothing."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Header values arrive decoded as latin-1: encoding them back gives the bytes the client sent.
        token_ok = hmac.compare_digest(given.strip().encode("latin-1"), self._token)
        return token_ok and scheme.lower() == "bearer"

    def _refused(self, request: Request) -> Response | None:
        """401 without the right bearer token; 400 for a query string. No route takes a parameter, and a URL is
        written to proxy and access logs: a token put there (``?token=…``) is refused even beside a good header,
        so the sender finds out at once instead of leaking the token with every call."""
        query = bool(request.scope.get("query_string"))
        if not self._authorised(request):
            hint = " (a token in the URL is not accepted: send it in the Authorization header)" if query else ""
            return error(401, f"missing or wrong bearer token{hint}", "Authorization")
        if query:
            message = (
                "this route takes no query parameters; the token goes only in the Authorization: Bearer header "
                "(a URL is written to proxy and access logs: if it held the token, replace the token)"
            )
            return error(400, message, "(query)")
        return None

    async def _receive(self, request: Request) -> Received | Response:
        """Check the request (:meth:`_refused`; ``Content-Encoding``: none, ``identity``, ``gzip`` or ``x-gzip``,
        else 415) and read its body, up to the limit as sent (a gzip body's decoded size is checked after)."""
        if (refused := self._refused(request)) is not None:
            return refused
        codings = [c.strip().lower() for c in ",".join(request.headers.getlist("content-encoding")).split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if codings not in ([], ["gzip"], ["x-gzip"]):
            message = f"Content-Encoding {', '.join(codings)} is not supported: send the body as it is, or gzip it"
            return error(415, message, "Content-Encoding")
        try:
            raw = await read_body(request, self.max_body_bytes, self.body_timeout_s)
        except BodyTooLarge:
            return error(413, f"body larger than {self.max_body_bytes} bytes", "(body)")
        except BodyTimeout:
            return timed_out(self.body_timeout_s)
        except ClientGone:
            return error(400, "the client disconnected before the body arrived", "(body)")
        return Received(raw, bool(codings), request.headers.get("content-type", ""))

    def _json(self, received: Received) -> Any | Response:
        """The decoded JSON body, or the error answer (on a worker thread)."""
        raw = received.raw
        if received.gzip:
            try:
                raw = gunzip(raw, self.max_body_bytes)
            except BodyTooLarge:
                return error(413, f"body larger than {self.max_body_bytes} bytes once decompressed", "(body)")
            except BadGzip as exc:
                return error(400, str(exc), "Content-Encoding")
        try:
            return parse_json(raw)
        except BadJson as exc:
            hint = _content_type_hint(received.content_type) if exc.field == "(body)" else ""
            return error(400, f"{exc}{hint}", exc.field)

    async def _run(self, request: Request, handle: Callable[[Any], Response]) -> Response:
        """Receive the body, then decode it and ``handle`` it on a worker thread."""
        received = await self._receive(request)
        if isinstance(received, Response):
            return received

        def work() -> Response:
            body = self._json(received)
            return body if isinstance(body, Response) else handle(body)

        return await anyio.to_thread.run_sync(work)

    async def predictions(self, request: Request) -> Response:
        return await self._run(request, self._predictions)

    def _predictions(self, body: Any) -> Response:
        try:
            predictions, was_list = many(body, prediction_from_json, received_at=self.service.clock())
        except InvalidRecord as exc:
            return error(422, exc.message, exc.field)
        try:
            results = self.service.decide(predictions, refuse_conflicts=True)
        except ConflictingPrediction as exc:  # rolled back: nothing of the request is stored
            return conflict_answer(exc, was_list)
        except (sqlite3.Error, StorageError) as exc:
            return storage_unavailable(exc)
        items = [decision_json(r) for r in results]
        return json_answer({"results": items} if was_list else items[0])

    async def outcomes(self, request: Request) -> Response:
        return await self._run(request, self._outcomes)

    def _outcomes(self, body: Any) -> Response:
        try:
            outcomes, was_list = many(body, outcome_from_json, now=self.service.clock())
        except InvalidRecord as exc:
            return error(422, exc.message, exc.field)
        results: list[dict[str, Any]] = []
        try:
            self._record_outcomes(outcomes, results)
        except (sqlite3.Error, StorageError) as exc:
            # Each outcome is its own transaction: those of the list before the failing one are committed, and a
            # retry finds them again (the first outcome wins), so it records each once.
            done = len(results)
            stored = f"the list's first {done} outcome(s) were handled (a retry records each once)"
            return storage_unavailable(exc, stored if done else "nothing was stored")
        if not was_list and results[0].get("error"):
            return error(404, str(results[0]["error"]), "prediction_id")
        return json_answer({"results": results} if was_list else results[0])

    def _record_outcomes(self, outcomes: list[Outcome], out: list[dict[str, Any]]) -> None:
        """Record each outcome (``/api/v1/outcomes``), one transaction each, its answer appended to ``out`` as it is
        committed: when the database refuses one, ``out`` holds the answers of those before it."""
        for outcome in outcomes:
            try:
                result = self.service.record_outcome(outcome)
            except UnknownPrediction as exc:
                out.append({"prediction_id": outcome.prediction_id, "recorded": False, "error": exc.message})
                continue
            entry: dict[str, Any] = {
                "prediction_id": outcome.prediction_id,
                "recorded": result.recorded,
                "missed_fault": result.missed_fault,
            }
            if not result.recorded and (first := self.service.first_outcome(outcome.prediction_id)) is not None:
                # a retry, or an outcome that says otherwise: the sender learns which, and what stays on record
                entry["recorded_real_fault"] = first.real_fault
                entry["conflict"] = first.real_fault != outcome.real_fault
            out.append(entry)

    def _resolve_one(self, resolved: ResolvedAlert, prediction_id: str, alert_id: str) -> OutcomeResult | ClosedResult:
        """Record the outcome ``resolved`` states for ``prediction_id``, or close it without one once no other alert
        merged into it still fires (``alert_id``: the id the alert was matched by, before a duplicate's)."""
        if resolved.real_fault is not None:
            return self.service.record_outcome(resolved.outcome(prediction_id))
        if not self._told_no_outcome:
            self._told_no_outcome = True
            log.info(
                "Alertmanager webhook: a resolved alert that does not say whether the fault was real (annotation "
                "npo_outcome) closes its recommendation without an outcome, and nothing is learnt from it; set "
                "NPO_ALERTMANAGER_RESOLVED=real_fault if your resolved alerts do mean the fault happened"
            )
        return self.service.close_without_outcome(
            prediction_id,
            resolved.at,
            source=ALERTMANAGER_SOURCE,
            alert_id=alert_id,
            alert_prefix=ALERT_ID_PREFIX,
            episode_sep=ALERT_EPISODE_SEP,
        )

    def _resolve_alerts(self, alerts: list[ResolvedAlert]) -> list[dict[str, Any]]:
        """Each resolved alert → an outcome or a closure, answered as :func:`resolved_json` says. An episode id no
        prediction has falls back to the alert's plain id (a prediction stored before episode ids)."""
        out: list[dict[str, Any]] = []
        for resolved in alerts:
            # An episode found a duplicate of another prediction (the dedupe window) resolves that one.
            pid = self.service.alias_of(resolved.prediction_id) or resolved.prediction_id
            result: OutcomeResult | ClosedResult | None
            try:
                try:
                    result = self._resolve_one(resolved, pid, resolved.prediction_id)
                except UnknownPrediction:
                    if resolved.fallback_id is None:  # else the plain id of a prediction stored before episode ids
                        raise
                    pid = str(resolved.fallback_id)
                    result = self._resolve_one(resolved, pid, pid)
            except UnknownPrediction:
                result = None
            out.append(resolved_json(resolved, pid, result))
        return out

    async def reload_policy(self, request: Request) -> Response:
        """Re-read the policy file; the running policy stays when the new file is refused (see policy_route). A
        body, if any, is not read."""
        if (refused := self._refused(request)) is not None:
            return refused
        result = await anyio.to_thread.run_sync(self.policy.reload)
        if not result.ok:
            return error(result.status, result.message, result.field or "NPO_POLICY_FILE")
        return JSONResponse({"reloaded": True, "message": result.message})

    async def alertmanager(self, request: Request) -> Response:
        return await self._run(request, self._alertmanager)

    def _alertmanager(self, body: Any) -> Response:
        try:
            # NPO_ALERTMANAGER_RESOLVED=real_fault: a resolved alert that does not say is a real fault
            unstated = True if self.service.alertmanager_resolved == "real_fault" else None
            batch = parse_webhook(body, now=self.service.clock(), unstated=unstated)
        except InvalidRecord as exc:
            return error(422, exc.message, exc.field)
        try:
            results = self.service.decide(batch.predictions)
        except (sqlite3.Error, StorageError) as exc:
            return storage_unavailable(exc)
        try:
            outcomes = self._resolve_alerts(batch.resolved)
        except (sqlite3.Error, StorageError) as exc:
            # The firing alerts are committed, and so is each resolved one before the failure (one transaction
            # each): a retry finds them again as duplicates and records every outcome once.
            resolved = "not every resolved alert was recorded (a retry records each once)"
            stored = f"the {len(results)} firing alert(s) were stored, {resolved}" if results else resolved
            return storage_unavailable(exc, stored)
        errors = [{"field": exc.field, "message": exc.message} for exc in batch.errors[:LISTED_ALERT_ERRORS]]
        answer: dict[str, Any] = {
            "results": [decision_json(r) for r in results],
            "outcomes": outcomes,
            "errors": errors,
        }
        if len(batch.errors) > LISTED_ALERT_ERRORS:
            answer["errors_omitted"] = len(batch.errors) - LISTED_ALERT_ERRORS
        if batch.truncated:
            answer["truncated_alerts"] = batch.truncated  # left out by the sender (max_alerts): never seen here
        return json_answer(answer)
