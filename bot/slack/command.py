"""The ``/npo`` slash command: ``status`` (alignment loss, answer rates, τ posteriors, queue) and ``help``.

Answered in the ack itself (an ephemeral reply), so it never needs the response_url.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack.blocks import help_text, status_lines
from bot.slack.deps import SlackDeps
from bot.slack.text import truncate

log = logging.getLogger(__name__)


def reply_for(text: str, deps: SlackDeps) -> str:
    """The reply to ``/npo <text>``."""
    word = (text or "").strip().split(" ", 1)[0].lower()
    if word == "status":
        return "\n".join(status_lines(deps.service.dashboard()))
    if word in ("", "help"):
        return help_text()
    return f"Unknown subcommand `{truncate(word, 40)}`.\n{help_text()}"


def _make_listener(deps: SlackDeps) -> Any:
    async def on_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        try:
            reply = reply_for(str(command.get("text") or ""), deps)
        except Exception:
            log.exception("/npo failed")
            reply = "Sorry, NPO could not answer that just now."
        await ack(text=truncate(reply, 3000), response_type="ephemeral")

    return on_command


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the ``/npo`` command listener to ``app``."""
    app.command("/npo")(_make_listener(deps))
