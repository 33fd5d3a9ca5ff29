"""``POST /slack/events``: a guard in front of Bolt, then Bolt's Starlette adapter.

The guard answers what Bolt would get wrong: a body over the limit (413), a body that is not UTF-8 (400), an
``X-Slack-Request-Timestamp`` that is not numeric, too long or sent twice (400; Bolt would answer 500, or check
another copy than the one seen here), and a body Bolt cannot read as one JSON object — invalid or deeply nested
JSON in ``payload=``, ``payload=null``, a JSON list (400; Bolt parses the body before it checks the signature and
would answer 500 to anyone). Missing headers, a bad signature and a timestamp
outside ±300 s are left to the request verification in Bolt's chain (401 ``{"error": "invalid request"}``;
:class:`~bot.slack.bolt_app.SignatureCheck`, which logs a refusal in one line without the body).

It also corrects one reading of Bolt's: a form body that contains the text ``payload`` anywhere — a slash
command ``/npo why payload-7``, a channel named ``#payload-ops`` — is taken for an interaction's ``payload=`` field
and read as empty, so no listener matched (404). Such a body without a ``payload`` field is read as the plain form
it is (:func:`_read_as_form`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from starlette.requests import Request
from starlette.responses import Response

from bot.http.body import BodyTimeout, BodyTooLarge, ClientGone, error, read_body, timed_out
from bot.http.slack_shape import shape_problem
from bot.log_throttle import LogThrottle

log = logging.getLogger(__name__)


def _unix_seconds(text: str) -> bool:
    """Digits only, at most 12 of them (Unix seconds until the year 33658; Python refuses to read an integer of
    more than 4,300 digits, which Bolt would answer with a 500)."""
    value = text.strip()
    return value.isascii() and value.isdigit() and len(value) <= 12


def _read_as_form(request: AsyncBoltRequest) -> None:
    """Bolt reads any form body containing the text ``payload`` as an interaction and, finding no ``payload``
    field, as ``{}``: such a body (a slash command whose text, channel or user name says "payload") is read again
    as the plain form it is, and its context built from that."""
    raw = request.raw_body
    if request.body or "payload" not in raw or raw.lstrip().startswith("{"):
        return
    fields = dict(parse_qsl(raw, keep_blank_values=True))
    if not fields or "payload" in fields:
        return
    request.body = fields
    request.context = build_async_context(AsyncBoltContext({}), fields)


def make_slack_endpoint(
    app: AsyncApp, max_body_bytes: int, body_timeout_s: float = 30.0
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint for ``POST /slack/events`` (any other method is answered 405 by the router); a body of which
    nothing arrives for ``body_timeout_s`` is answered 408."""

    unreadable = LogThrottle()  # an outsider's flood of unreadable bodies is not a flood of log lines

    async def slack_events(request: Request) -> Response:
        stamps = request.headers.getlist("x-slack-request-timestamp")
        if len(stamps) > 1:  # Bolt would read another copy than the one checked here
            return error(400, "X-Slack-Request-Timestamp must be sent once", "X-Slack-Request-Timestamp")
        if stamps and not _unix_seconds(stamps[0]):
            return error(400, "X-Slack-Request-Timestamp must be Unix seconds", "X-Slack-Request-Timestamp")
        try:
            body = await read_body(request, max_body_bytes, body_timeout_s)
            body.decode("utf-8")
        except BodyTooLarge:
            return error(413, f"body larger than {max_body_bytes} bytes")
        except BodyTimeout:
            return timed_out(body_timeout_s)
        except UnicodeDecodeError:
            return error(400, "body must be UTF-8")
        except ClientGone:
            return error(400, "the client disconnected before the body arrived")
        try:
            bolt_request = to_async_bolt_request(request, body)
        except Exception as exc:  # Bolt's body parser: invalid JSON, too deep, not an object...
            write, held = unreadable.admit()
            if write:
                what = type(exc).__name__
                log.info("refused a /slack/events body Bolt cannot parse: %s%s", what, unreadable.note(held))
            return error(400, "the body is not a Slack request (unreadable payload)")
        _read_as_form(bolt_request)
        if not isinstance(bolt_request.body, dict):
            return error(400, "the body is not a Slack request (the payload must be a JSON object)")
        if (field := shape_problem(bolt_request.body)) is not None:
            return error(400, "the body is not a Slack request (a field has the wrong type)", field)
        bolt_response = await app.async_dispatch(bolt_request)
        return to_starlette_response(bolt_response)

    return slack_events
