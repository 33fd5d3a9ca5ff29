"""Build the async Bolt app: custom ``authorize`` (never ``auth.test``), a Web API client pointed at
``SLACK_API_URL``, ``process_before_response=True`` (no 10 ms ack polling), and every listener module registered
explicitly. Nothing is registered at import time.
"""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack import actions, command, home, override
from bot.slack.deps import SlackDeps

LISTENER_MODULES = (actions, override, home, command)


def build_web_client(settings: Settings) -> AsyncWebClient:
    """The listeners' Web API client (views.open, look-ups, ephemeral replies)."""
    return AsyncWebClient(
        token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=int(max(1, settings.slack_timeout_s))
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
    for module in LISTENER_MODULES:
        module.register(app, deps)
    return app
