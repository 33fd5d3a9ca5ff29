"""Button listeners: Like / Override / Neutral and Confirmed fault / False alarm on a recommendation.

Every answer is stored (``record_feedback`` in one ``BEGIN IMMEDIATE`` transaction, together with the queued
``chat.update``) *before* ``ack()`` returns, so a 200 always means "stored". Override instead opens the reason
modal at once (``views.open`` — the trigger id lives 3 s); the override is stored when the modal is submitted.
Unauthorised clickers get an ephemeral refusal (sent after the ack) and nothing is stored. No exception escapes a
listener: failures are logged and the click is still acknowledged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import (
    ACTION_OVERRIDE,
    FEEDBACK_ACTIONS,
    OUTCOME_ACTIONS,
    ephemeral_refusal_text,
    override_modal,
)
from bot.slack.deps import SlackDeps
from bot.slack.payloads import Click, parse_click
from npo.loop import LoopError
from npo.types import FeedbackEvent, InvalidRecord, Outcome

log = logging.getLogger(__name__)


def _signature(request: AsyncBoltRequest) -> str:
    value = request.headers.get("x-slack-signature") or [""]
    return value[0]


def refuse(deps: SlackDeps, client: AsyncWebClient, click: Click, text: str) -> None:
    """Tell only this user (ephemeral), after the ack."""
    if click.channel and click.user:
        deps.spawn(client.chat_postEphemeral(channel=click.channel, user=click.user, text=text), "chat.postEphemeral")


async def _authorised(deps: SlackDeps, client: AsyncWebClient, click: Click) -> bool:
    if click.user and await deps.responders.allows(click.user):
        return True
    log.info("refused a click by %s on %s: not a responder", click.user, click.prediction_id)
    refuse(deps, client, click, ephemeral_refusal_text())
    return False


def _make_feedback_listener(deps: SlackDeps) -> Any:
    async def on_feedback(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, request: AsyncBoltRequest
    ) -> None:
        try:
            click = parse_click(body)
            if not await _authorised(deps, client, click):
                return
            event = FeedbackEvent(
                prediction_id=click.prediction_id,
                operator=click.user,
                kind=FEEDBACK_ACTIONS[click.action_id],
                at=time.time(),
                request_id=click.request_id(_signature(request)),
            )
            await deps.storage(deps.service.record_click, event, click.message)
        except (LoopError, InvalidRecord) as exc:
            log.warning("click not recorded: %s", exc)
            refuse(deps, client, parse_click(body), f"This answer could not be recorded: {exc.message}")
        except Exception:
            log.exception("click handling failed")
        finally:
            await ack()

    return on_feedback


def _make_override_listener(deps: SlackDeps) -> Any:
    async def on_override(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        try:
            click = parse_click(body)
            if not await _authorised(deps, client, click):
                return
            prediction = await deps.storage(deps.service.store.prediction, click.prediction_id)
            if prediction is None:
                refuse(deps, client, click, "This recommendation is unknown to NPO.")
                return
            message = click.message
            view = override_modal(
                prediction, channel=message.channel if message else "", message_ts=message.ts if message else ""
            )
            await client.views_open(trigger_id=click.trigger_id, view=view)
        except Exception:
            log.exception("opening the override modal failed")

    return on_override


def _make_outcome_listener(deps: SlackDeps) -> Any:
    async def on_outcome(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            click = parse_click(body)
            if not await _authorised(deps, client, click):
                return
            outcome = Outcome(click.prediction_id, OUTCOME_ACTIONS[click.action_id], time.time(), f"slack:{click.user}")
            await deps.storage(deps.service.record_outcome, outcome, click.message)
        except (LoopError, InvalidRecord) as exc:
            log.warning("outcome not recorded: %s", exc)
        except Exception:
            log.exception("outcome handling failed")
        finally:
            await ack()

    return on_outcome


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the button listeners to ``app``."""
    on_feedback = _make_feedback_listener(deps)
    for action_id in FEEDBACK_ACTIONS:
        if action_id != ACTION_OVERRIDE:
            app.action(action_id)(on_feedback)
    app.action(ACTION_OVERRIDE)(_make_override_listener(deps))
    on_outcome = _make_outcome_listener(deps)
    for action_id in OUTCOME_ACTIONS:
        app.action(action_id)(on_outcome)
