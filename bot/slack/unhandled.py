"""The interactions no other listener handles: acknowledged 200 and logged in one line, registered last.

Slack sends an app an interaction it has no listener for in a few cases: a button whose ``action_id`` this version
does not know (a message posted by another version, another app's blocks sharing the request URL), a shortcut or
message action added to the app's configuration, a ``view_closed`` of a modal opened with ``notify_on_close``, a
modal of another ``callback_id``. Bolt answers them 404 and logs a multi-line warning with a code suggestion per
request; over HTTP the person then sees the app as failing (a warning next to the button, "didn't respond"), and in
Socket Mode a 404 is not acknowledged at all, so Slack sends the envelope again. Each is instead acknowledged with
200 and an empty body (a ``block_suggestion``: no options), nothing is stored, and one line says what was ignored.

The catch-alls match any string id; the HTTP guard (:mod:`bot.http.slack_shape`) and the Socket Mode dispatch refuse
a body whose ids are not strings before it gets here, as Slack always sends them as strings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack.deps import SlackDeps

log = logging.getLogger(__name__)
ANY = re.compile("")  # matches every string (a Pattern is searched, never compared whole)
MAX_LOGGED_ID = 80


def _what(body: Mapping[str, Any]) -> tuple[str, str]:
    """The payload's type and the id a listener would have matched on (action_id or callback_id), for the log."""
    kind = str(body.get("type") or "")
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], Mapping) else {}
    view = body.get("view")
    view = view if isinstance(view, Mapping) else {}
    ident = action.get("action_id") or body.get("action_id") or body.get("callback_id") or view.get("callback_id")
    return kind, str(ident or "")


async def on_unhandled(ack: AsyncAck, body: dict[str, Any]) -> None:
    kind, ident = _what(body)
    log.info("ignored a %s interaction (%r): no listener handles it", kind[:40], ident[:MAX_LOGGED_ID])
    if kind in ("block_suggestion", "dialog_suggestion"):
        await ack(options=[])
    else:
        await ack()


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the catch-alls to ``app``: after every other listener, as Bolt runs the first that matches."""
    app.action(ANY)(on_unhandled)  # block_actions, attachment actions, dialogs, workflow_step_edit
    app.view(ANY)(on_unhandled)  # view_submission
    app.view_closed(ANY)(on_unhandled)
    app.shortcut(ANY)(on_unhandled)  # global shortcuts and message actions
    app.options(ANY)(on_unhandled)  # block_suggestion, dialog_suggestion
