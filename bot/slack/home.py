"""``app_home_opened``: publish the dashboard to the user's App Home, once per event id (retries are dropped)."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import home_view
from bot.slack.deps import SlackDeps

log = logging.getLogger(__name__)
RECENT = 15


def _make_listener(deps: SlackDeps) -> Any:
    async def on_home_opened(event: dict[str, Any], body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            if event.get("tab", "home") != "home" or not event.get("user"):
                return
            event_id = str(body.get("event_id") or "")
            if event_id and not deps.service.store.claim_request(f"event:{event_id}", "app_home_opened", time.time()):
                log.info("app_home_opened %s already handled (Slack retry)", event_id)
                return
            view = home_view(deps.service.dashboard(recent=RECENT))
            deps.spawn(client.views_publish(user_id=event["user"], view=view), "views.publish")
        except Exception:
            log.exception("app_home_opened failed")

    return on_home_opened


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the App Home listener to ``app``."""
    app.event("app_home_opened")(_make_listener(deps))
