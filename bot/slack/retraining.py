"""Approve / Dismiss on a retraining alert. Only responders may answer. Dismiss is stored before the ack, off the
event loop; the thread reply and the alert's update go through the outbox. Approve is recorded before the ack as a
pending approval (:func:`bot.retraining.begin_approval`, one short transaction) and carried out after it by the
bot's :class:`~bot.retraining.ApprovalRunner` — the retraining (fit, compare, promote only if better) reads and fits
up to 20,000 answers, seconds on a large database, and Slack shows a click not answered within 3 s as failed; its
result comes as the thread reply and the alert's update. A second click on a resolved alert, or on one being
approved, records nothing and tells the clicker (ephemeral) who resolved it; a click on an expired one records nothing
and tells them when it expired. An answer that could not be stored (the database cannot be written) is still
acknowledged — Slack does not retry interactions — and the clicker is told that it was not recorded and until when
the proposal is open to click again (its deadline may be a minute away), or that its deadline has passed: the alert
keeps its buttons and the proposal stays open; so is an approval whose retraining then fails."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.retraining import begin_approval, not_recorded_status, resolve
from bot.slack.actions import refuse
from bot.slack.blocks import LOOKUP_UNAVAILABLE_TEXT, lookup_refused_text
from bot.slack.deps import SlackDeps
from bot.slack.monitor_blocks import RETRAIN_ACTIONS
from bot.slack.payloads import parse_click
from bot.slack.responders import LookupUnavailable

log = logging.getLogger(__name__)

NOT_A_RESPONDER_TEXT = (
    "Sorry, only NPO's on-call responders can approve or dismiss a retraining proposal (being in this channel is "
    "not enough). Nothing was recorded."
)
NOT_RECORDED_TEXT = (
    "NPO could not record this answer to {proposal} just now (its database could not be written; the bot's log has "
    "the error), so it was not recorded. {status}"
)


def _make_listener(deps: SlackDeps) -> Any:
    async def on_retrain(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            click = parse_click(body)
            try:
                allowed = bool(click.user) and await deps.responders.allows(click.user)
            except LookupUnavailable as exc:
                log.warning(
                    "did not record a retraining answer by %s: cannot tell who may answer (%s)", click.user, exc
                )
                refuse(deps, client, click, lookup_refused_text(exc.fix) if exc.fix else LOOKUP_UNAVAILABLE_TEXT)
                return
            if not allowed:
                log.info("refused a retraining answer by %s: not a responder", click.user)
                refuse(deps, client, click, NOT_A_RESPONDER_TEXT)
                return
            try:
                proposal_id = int(click.prediction_id)  # the button's value
            except ValueError:
                refuse(deps, client, click, "This alert's button carries no proposal id; nothing was recorded.")
                return
            raw = body.get("message")
            message: dict[str, Any] = raw if isinstance(raw, dict) else {}
            service = deps.service
            if RETRAIN_ACTIONS[click.action_id]:
                # Recorded now, retrained after the ack (the fit takes seconds): see the module docstring.
                result = await deps.storage(
                    begin_approval,
                    service.store,
                    proposal_id,
                    by=click.user,
                    now=time.time(),
                    message=click.message,
                    original_blocks=list(message.get("blocks") or []),
                    fallback_channel=deps.ops_channel,
                )
                if result.status == "pending":
                    deps.wake_approvals()
            else:
                result = await asyncio.to_thread(
                    resolve,
                    service.store,
                    proposal_id,
                    approved=False,
                    by=click.user,
                    now=time.time(),
                    message=click.message,
                    original_blocks=list(message.get("blocks") or []),
                    fallback_channel=deps.ops_channel,
                    on_enqueue=service.on_enqueue,
                    clock=service.clock,
                )
            if result.status in ("already_resolved", "expired", "unknown"):
                refuse(deps, client, click, result.text + " Nothing was recorded.")
        except Exception:
            log.exception("retraining answer failed")
            try:
                click = parse_click(body)
                refuse(deps, client, click, await _not_recorded_text(deps, click.prediction_id))
            except Exception:
                log.exception("could not tell the clicker that the retraining answer was not recorded")
        finally:
            await ack()

    return on_retrain


async def _not_recorded_text(deps: SlackDeps, button_value: str) -> str:
    """What the clicker is told when their answer could not be stored: that, and whether the proposal is still open
    and until when (:func:`bot.retraining.not_recorded_status`)."""
    try:
        proposal_id = int(button_value)
    except ValueError:
        return NOT_RECORDED_TEXT.format(proposal="the retraining proposal", status="Please click again in a minute.")
    status = await deps.query(not_recorded_status, deps.service.store, proposal_id, time.time())
    return NOT_RECORDED_TEXT.format(proposal=f"retraining proposal #{proposal_id}", status=status)


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the Approve / Dismiss listeners to ``app``."""
    listener = _make_listener(deps)
    for action_id in RETRAIN_ACTIONS:
        app.action(action_id)(listener)
