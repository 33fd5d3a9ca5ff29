"""Build the async Bolt app: custom ``authorize`` (never ``auth.test``), a Web API client pointed at
``SLACK_API_URL``, ``process_before_response=True`` (no 10 ms ack polling), Events API deduplication, and every
listener module registered explicitly. Nothing is registered at import time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.log_throttle import LogThrottle
from bot.slack import actions, command, home, override, retraining, unhandled
from bot.slack.deps import SlackDeps
from bot.slack.log_redaction import redact_slack_logs

log = logging.getLogger(__name__)
# ``unhandled`` last: its catch-alls acknowledge the interactions no listener before it matched (Bolt runs the first)
LISTENER_MODULES = (actions, override, home, command, retraining, unhandled)
HANDLED_EVENTS = home.EVENTS  # the Events API types a listener handles (the others get Bolt's 404)
SIGNATURE_MAX_AGE_S = 300  # Slack's own limit, which slack-sdk's SignatureVerifier applies


class SignatureCheck(AsyncMiddleware):
    """Bolt's request verification (same place in the chain, same 401 ``{"error": "invalid request"}``, skipped in
    Socket Mode), logging a refusal in one short line of its own: why (no signature or timestamp, a timestamp too
    old or ahead — a clock to fix —, or a signature that does not match — ``SLACK_SIGNING_SECRET`` to check) and
    the body's size. Bolt's own logs the whole body at INFO: anyone who can reach ``/slack/events`` could fill the
    log with text of their choosing, newlines included, that is, write lines that look like the bot's own. At most
    20 such lines a minute are written (:class:`~bot.log_throttle.LogThrottle`); the next one written counts those
    left out."""

    def __init__(self, signing_secret: str, throttle: LogThrottle | None = None) -> None:
        self.verifier = SignatureVerifier(signing_secret=signing_secret)
        self.throttle = throttle or LogThrottle()  # a flood of refused requests is not a flood of lines

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        if req.mode == "socket_mode":  # the WebSocket is authenticated by the app-level token instead
            return await next()
        timestamp = (req.headers.get("x-slack-request-timestamp") or [""])[0]
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        # ASCII only: slack-sdk compares with ``hmac.compare_digest``, which raises on a non-ASCII string (the
        # header arrives decoded as latin-1), and Bolt would answer that with a 500 and a traceback
        if (
            timestamp
            and signature
            and signature.isascii()
            and self.verifier.is_valid(req.raw_body, timestamp, signature)
        ):
            return await next()
        write, held = self.throttle.admit()
        if write:
            log.info(
                "refused a Slack request: %s (%d bytes)%s",
                self.refusal(timestamp, signature),
                len(req.raw_body.encode("utf-8")),
                self.throttle.note(held),
            )
        return BoltResponse(status=401, body={"error": "invalid request"})

    def refusal(self, timestamp: str, signature: str) -> str:
        """Why a request's signature was refused, in a few words (never the signature or the body)."""
        if not timestamp or not signature:
            return "no X-Slack-Signature or X-Slack-Request-Timestamp"
        try:  # the HTTP route lets only Unix seconds through; anything else is refused here as unreadable
            skew = int(self.verifier.clock.now()) - int(timestamp)
        except ValueError:
            return "unreadable X-Slack-Request-Timestamp"
        if abs(skew) > SIGNATURE_MAX_AGE_S:
            when = "old" if skew > 0 else "ahead"
            return (
                f"stale signature (timestamp {abs(skew)} s {when}; more than {SIGNATURE_MAX_AGE_S} s: check the clock)"
            )
        return "invalid signature (check SLACK_SIGNING_SECRET)"


def build_web_client(settings: Settings) -> AsyncWebClient:
    """The listeners' Web API client (views.open, look-ups, ephemeral replies)."""
    return AsyncWebClient(
        token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=settings.web_api_timeout
    )


class _TokenFromEnvironmentNotice(logging.Filter):
    """Bolt reads ``SLACK_BOT_TOKEN`` from the environment on its own and, given NPO's client as well, warns at every
    start that "`token` will be unused". NPO hands the token to each request through ``authorize`` (the settings'
    token, the same variable), so the line is only alarming when the token is set in the environment (a unit file,
    a container): it is dropped. Bolt's other warnings pass."""

    TEXT = warning_client_prioritized_and_token_skipped()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.TEXT


_TOKEN_NOTICE = _TokenFromEnvironmentNotice()


def build_bolt_app(settings: Settings, deps: SlackDeps, client: AsyncWebClient) -> AsyncApp:
    """A fully wired :class:`AsyncApp` for HTTP mode (signature verification on)."""

    async def authorize() -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=None,
            team_id=settings.team_id,
            bot_token=settings.slack_bot_token,
            bot_user_id=settings.bot_user_id,
            bot_id=None,
        )

    # Bolt gives each request a client carrying the token from ``authorize``; its base client needs none.
    base_client = AsyncWebClient(base_url=client.base_url, timeout=client.timeout)
    bolt_logger = logging.getLogger("bot.slack.bolt")
    if _TOKEN_NOTICE not in bolt_logger.filters:
        bolt_logger.addFilter(_TOKEN_NOTICE)
    app = AsyncApp(
        client=base_client,
        signing_secret=settings.slack_signing_secret,
        authorize=authorize,
        process_before_response=True,
        logger=bolt_logger,
        request_verification_enabled=False,  # Bolt's logs a refused request's whole body: SignatureCheck instead
        before_authorize=SignatureCheck(settings.slack_signing_secret),
    )
    redact_slack_logs(app.logger)  # no verification token or response_url in what Bolt logs
    app.middleware(make_event_dedupe(deps))
    for module in LISTENER_MODULES:
        module.register(app, deps)
    return app


def make_event_dedupe(
    deps: SlackDeps,
) -> Callable[[AsyncBoltRequest, BoltResponse, Callable[[], Awaitable[BoltResponse]]], Awaitable[BoltResponse]]:
    """A global middleware (it runs after signature verification): each Events API delivery
    (``event_callback``) is processed once per ``event_id``. A repeat — Slack's retry with
    ``X-Slack-Retry-Num`` after a timeout, or a replay — is answered 200 with an empty body and reaches no
    listener. The id is claimed in SQLite (``processed_requests``), so this holds across restarts and processes.
    An event of a type no listener handles (not in :data:`HANDLED_EVENTS`; the manifest subscribes to none) is
    acknowledged 200 and ignored, storing nothing: Bolt would answer 404, Slack would retry it three times, and
    Slack turns off an app's event subscriptions when most deliveries fail.
    """

    async def dedupe_events(
        req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        body = req.body
        event_id = body.get("event_id") if isinstance(body, dict) and body.get("type") == "event_callback" else None
        event = body.get("event") if event_id else None
        kind = str(event.get("type") or "") if isinstance(event, dict) else ""
        if event_id and kind not in HANDLED_EVENTS:
            log.info("event %s of type %r ignored: no listener handles it", event_id, kind)
            return BoltResponse(status=200, body="")
        if event_id:
            first = await deps.storage(deps.service.store.claim_request, f"event:{event_id}", kind, time.time())
            if not first:
                retry = (req.headers.get("x-slack-retry-num") or ["-"])[0]
                log.info("event %s (%s) already handled; retry %s acknowledged, not processed", event_id, kind, retry)
                return BoltResponse(status=200, body="")
        return await next()

    return dedupe_events
