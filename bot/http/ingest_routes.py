"""The ingest API: ``POST /api/v1/predictions``, ``/api/v1/alertmanager``, ``/api/v1/outcomes``.

Every route needs ``Authorization: Bearer <NPO_INGEST_TOKEN>`` (401 otherwise), takes JSON up to the body limit
(413 above it), and answers malformed input with 400/422 ``{"error": …, "field": …}`` — nothing is stored then:
a list is validated completely before any of it is decided. The exception is an Alertmanager/Grafana
notification, whose alerts are taken one by one (Alertmanager groups unrelated alerts and does not retry a 4xx):
the usable ones are decided or recorded and each malformed one is listed under ``"errors": [{"field", "message"}]``
(the first :data:`LISTED_ALERT_ERRORS`; ``"errors_omitted"`` counts the rest) with 200; only a notification with no
usable alert, or a malformed body, is 422. Duplicates (same id, or same fingerprint within the dedupe window) are
answered 200 with ``"duplicate": true``. Storage work runs in a worker thread.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.body import BadJson, BodyTooLarge, ClientGone, error, parse_json, read_body
from bot.http.policy_route import PolicyHolder
from bot.ingest.alertmanager import parse_webhook
from bot.ingest.records import many, outcome_from_json, prediction_from_json
from bot.service import NpoService
from npo.loop import DecideResult, UnknownPrediction
from npo.types import InvalidRecord, Outcome
from storage import StorageError

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
STORAGE_RETRY_AFTER_S = 30
LISTED_ALERT_ERRORS = 100  # refused alerts listed in a webhook's answer; more are counted in "errors_omitted"


def storage_unavailable(exc: Exception) -> Response:
    """503 for a write the database refused (disk full, I/O error, locked for too long): the transaction was
    rolled back, so the sender may simply retry the same request later."""
    log.error("ingest refused, the database cannot be written (nothing was stored): %s", exc)
    response = error(503, f"the database cannot be written ({exc}); nothing was stored, retry later", "(storage)")
    response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER_S)
    return response


def decision_json(result: DecideResult) -> dict[str, Any]:
    d = result.decision
    return {
        "id": d.prediction_id,
        "duplicate": result.duplicate,
        "verdict": d.verdict.value,
        "rule": d.rule,
        "reason": d.reason,
        "score": round(d.score, 6),
        "threshold": d.threshold,
        "key": d.key,
    }


class IngestApi:
    """The three ingest endpoints over one :class:`NpoService`."""

    def __init__(
        self, service: NpoService, *, token: str, max_body_bytes: int, policy: PolicyHolder | None = None
    ) -> None:
        self.service = service
        self.policy = policy or PolicyHolder(service, None)
        self._token = token.encode()
        self.max_body_bytes = max_body_bytes

    def _authorised(self, request: Request) -> bool:
        """``Authorization: Bearer <token>`` (the scheme in any case). The token is compared in constant time
        (``hmac.compare_digest``), always — whatever the scheme — so the answer's timing tells nothing."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Header values arrive decoded as latin-1: encoding them back gives the bytes the client sent.
        token_ok = hmac.compare_digest(given.strip().encode("latin-1"), self._token)
        return token_ok and scheme.lower() == "bearer"

    async def _json(self, request: Request) -> Any | Response:
        if not self._authorised(request):
            return error(401, "missing or wrong bearer token", "Authorization")
        try:
            raw = await read_body(request, self.max_body_bytes)
        except BodyTooLarge:
            return error(413, f"body larger than {self.max_body_bytes} bytes")
        except ClientGone:
            return error(400, "the client disconnected before the body arrived")
        try:
            return parse_json(raw)
        except BadJson as exc:
            return error(400, str(exc), exc.field)

    async def predictions(self, request: Request) -> Response:
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        try:
            predictions, was_list = many(body, prediction_from_json, received_at=self.service.clock())
        except InvalidRecord as exc:
            return error(422, exc.message, exc.field)
        try:
            results = await anyio.to_thread.run_sync(self.service.decide, predictions)
        except (sqlite3.Error, StorageError) as exc:
            return storage_unavailable(exc)
        items = [decision_json(r) for r in results]
        return JSONResponse({"results": items} if was_list else items[0])

    async def outcomes(self, request: Request) -> Response:
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        try:
            outcomes, was_list = many(body, outcome_from_json, now=self.service.clock())
        except InvalidRecord as exc:
            return error(422, exc.message, exc.field)
        try:
            results = await anyio.to_thread.run_sync(self._record_outcomes, outcomes)
        except (sqlite3.Error, StorageError) as exc:
            return storage_unavailable(exc)
        if not was_list and results[0].get("error"):
            return error(404, str(results[0]["error"]), "prediction_id")
        return JSONResponse({"results": results} if was_list else results[0])

    def _record_outcomes(
        self, outcomes: list[Outcome], fallback_ids: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Record each outcome; ``fallback_ids``: an id to try instead when an outcome's prediction is unknown
        (an Alertmanager episode id → the plain id a prediction stored before episode ids has)."""
        out: list[dict[str, Any]] = []
        for given in outcomes:
            outcome = given
            try:
                try:
                    result = self.service.record_outcome(outcome)
                except UnknownPrediction:
                    fallback = (fallback_ids or {}).get(outcome.prediction_id)
                    if fallback is None:
                        raise
                    outcome = dataclasses.replace(outcome, prediction_id=fallback)
                    result = self.service.record_outcome(outcome)
            except UnknownPrediction:
                message = UnknownPrediction(given.prediction_id).message  # the id the sender gave
                out.append({"prediction_id": given.prediction_id, "recorded": False, "error": message})
                continue
            out.append(
                {
                    "prediction_id": outcome.prediction_id,
                    "recorded": result.recorded,
                    "missed_fault": result.missed_fault,
                }
            )
        return out

    async def reload_policy(self, request: Request) -> Response:
        """Re-read the policy file; the running policy stays when the new file is refused (see policy_route)."""
        if not self._authorised(request):
            return error(401, "missing or wrong bearer token", "Authorization")
        result = await anyio.to_thread.run_sync(self.policy.reload)
        if not result.ok:
            return error(result.status, result.message, result.field)
        return JSONResponse({"reloaded": True, "message": result.message})

    async def alertmanager(self, request: Request) -> Response:
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        try:
            batch = parse_webhook(body, now=self.service.clock())
        except InvalidRecord as exc:
            return error(422, exc.message, exc.field)
        try:
            results = await anyio.to_thread.run_sync(self.service.decide, batch.predictions)
            outcomes = await anyio.to_thread.run_sync(self._record_outcomes, batch.outcomes, batch.fallback_ids)
        except (sqlite3.Error, StorageError) as exc:
            return storage_unavailable(exc)
        errors = [{"field": exc.field, "message": exc.message} for exc in batch.errors[:LISTED_ALERT_ERRORS]]
        answer = {"results": [decision_json(r) for r in results], "outcomes": outcomes, "errors": errors}
        if len(batch.errors) > LISTED_ALERT_ERRORS:
            answer["errors_omitted"] = len(batch.errors) - LISTED_ALERT_ERRORS
        return JSONResponse(answer)
