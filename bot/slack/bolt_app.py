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
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack import actions, command, home, override, retraining
from bot.slack.deps import SlackDeps
from bot.slack.log_redaction import redact_slack_logs

log = logging.getLogger(__name__)
LISTENER_MODULES = (actions, override, home, command, retraining)
HANDLED_EVENTS = home.EVENTS  # the Events API types a listener handles (the others get Bolt's 404)


def build_web_client(settings: Settings) -> AsyncWebClient:
    """The listeners' Web API client (views.open, look-ups, ephemeral replies)."""
    return AsyncWebClient(
        token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=settings.web_api_timeout
    )


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
    app = AsyncApp(
        client=base_client,
        signing_secret=settings.slack_signing_secret,
        authorize=authorize,
        process_before_response=True,
        logger=logging.getLogger("bot.slack.bolt"),
    )
    redact_slack_logs(app.logger)  # no verification token or response_url in what Bolt logs (a refused body: INFO)
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
