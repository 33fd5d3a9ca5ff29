"""Button listeners: Like / Override / Neutral and Confirmed fault / False alarm on a recommendation.

Every answer is stored (``record_feedback`` in one ``BEGIN IMMEDIATE`` transaction, together with the queued
``chat.update``) *before* ``ack()`` returns, so a 200 always means "stored". Override instead opens the reason
modal at once (``views.open`` — the trigger id lives 3 s); the override is stored when the modal is submitted.
Unauthorised clickers get an ephemeral refusal (sent after the ack) and nothing is stored; when who may answer
cannot be looked up (no member list known yet), nothing is stored and the clicker is told to click again. A click
over the person's click limit (``NPO_FEEDBACK_RATE_PER_MIN`` / ``NPO_FEEDBACK_BURST``) is acknowledged like any
other, is not applied to the learning state (the service stores a ``feedback_rate_limited`` audit line) and the
person is told so ephemerally. An outcome click saying otherwise than the outcome recorded before it (two people
clicking at once, a client still showing the buttons) is not recorded — the first one counts — and its person is told
which outcome was recorded, by whom. No exception escapes a listener: failures are logged and the click is still
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.service import ClickResult
from bot.slack.blocks import (
    ACTION_OVERRIDE,
    FEEDBACK_ACTIONS,
    LOOKUP_UNAVAILABLE_TEXT,
    OUTCOME_ACTIONS,
    ephemeral_refusal_text,
    lookup_refused_text,
    override_modal,
)
from bot.slack.deps import SlackDeps
from bot.slack.payloads import Click, parse_click, replay_key
from bot.slack.responders import LookupUnavailable
from bot.slack.text import escape, outcome_source, slack_time
from npo.loop import LoopError, NotSurfaced
from npo.types import FeedbackEvent, InvalidRecord, Outcome

log = logging.getLogger(__name__)
# How long an Override click waits for the form to open before it is answered (Slack waits 3 s for the answer); a
# views.open still running then finishes after the answer.
FORM_WAIT_S = 2.5


def refuse(deps: SlackDeps, client: AsyncWebClient, click: Click, text: str) -> None:
    """Tell only this user (ephemeral), after the ack."""
    tell(deps, client, click.channel, click.user, text)


def tell(deps: SlackDeps, client: AsyncWebClient, channel: str | None, user: str | None, text: str) -> None:
    """An ephemeral message to ``user`` in ``channel`` (both needed), sent after the ack."""
    if channel and user:
        deps.spawn(client.chat_postEphemeral(channel=channel, user=user, text=text), "chat.postEphemeral")


def rate_limited_text(retry_after_s: float) -> str:
    """What a person over the click limit is told."""
    wait = max(1, math.ceil(retry_after_s))
    return (
        f"Too many clicks in a short time: this one was not counted. Your next answer counts in {wait} s "
        "(the limit keeps a burst of clicks from one person from steering what NPO learns)."
    )


def report_rate_limited(
    deps: SlackDeps, client: AsyncWebClient, result: ClickResult, channel: str | None, user: str | None
) -> None:
    """Log a click refused for the rate limit and tell its person (ephemeral, after the ack)."""
    log.info("a click by %s was not counted: over the click limit (next in %.1f s)", user, result.retry_after_s)
    tell(deps, client, channel, user, rate_limited_text(result.retry_after_s))


async def _authorised(deps: SlackDeps, client: AsyncWebClient, click: Click) -> bool:
    try:
        if click.user and await deps.responders.allows(click.user):
            return True
    except LookupUnavailable as exc:
        log.warning(
            "did not record a click by %s on %s: cannot tell who may answer (%s)", click.user, click.prediction_id, exc
        )
        refuse(deps, client, click, lookup_refused_text(exc.fix) if exc.fix else LOOKUP_UNAVAILABLE_TEXT)
        return False
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
                request_id=click.request_id(replay_key(request.mode, request.headers)),
            )
            result = await deps.storage(deps.service.record_click, event, click.message)
            if result.status == "rate_limited":
                report_rate_limited(deps, client, result, click.channel, click.user)
        except (LoopError, InvalidRecord) as exc:
            log.warning("click not recorded: %s", exc)
            refuse(deps, client, parse_click(body), f"This answer could not be recorded: {escape(exc.message)}")
        except Exception:
            log.exception("click handling failed")
            _tell_not_stored(deps, client, body)
        finally:
            await ack()

    return on_feedback


NOT_STORED_TEXT = (
    "NPO could not store this answer just now (its database could not be written), so it was not counted. "
    "Please click again in a minute."
)


def _tell_not_stored(deps: SlackDeps, client: AsyncWebClient, body: dict[str, Any]) -> None:
    """After an unexpected failure (a full disk, a locked database): the person learns their click did not count
    (Slack does not retry interactions, so only they can)."""
    try:
        click = parse_click(body)
    except Exception:
        return
    refuse(deps, client, click, NOT_STORED_TEXT)


def _form_not_opened(error: str) -> str:
    return (
        f"The override form could not be opened (Slack: `{escape(error)}`), so nothing was recorded. "
        "Please click Override again."
    )


async def _open_form(deps: SlackDeps, client: AsyncWebClient, click: Click, view: dict[str, Any]) -> None:
    """Open the override form; when it does not open (an expired trigger, Slack failing or not answering in time),
    the click did nothing visible, so its person is told."""
    try:
        await client.views_open(trigger_id=click.trigger_id, view=view)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "no answer")
        log.warning("the override form could not be opened: %s", error)
        refuse(deps, client, click, _form_not_opened(error))
    except Exception as exc:  # a timeout, a connection error
        log.warning("the override form could not be opened: %s", f"{type(exc).__name__}: {exc}"[:200])
        refuse(deps, client, click, _form_not_opened("no answer in time"))


def _make_override_listener(deps: SlackDeps) -> Any:
    async def on_override(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        started = time.monotonic()
        await ack()
        try:
            click = parse_click(body)
            if not await _authorised(deps, client, click):
                return
            prediction = await deps.query(deps.service.store.prediction, click.prediction_id)
            if prediction is None:
                refuse(deps, client, click, "This recommendation is unknown to NPO.")
                return
            decision = await deps.query(deps.service.store.decision, click.prediction_id)
            if decision is not None and not decision.surfaced:
                # The loop refuses any answer to it: told now, as a Like is, not by a form that cannot be submitted.
                refused = NotSurfaced(click.prediction_id, decision.verdict)
                log.warning("override not opened: %s", refused)
                refuse(deps, client, click, f"This answer could not be recorded: {escape(refused.message)}")
                return
            if click.trigger_id and not await deps.storage(
                deps.service.store.claim_request, f"override_form:{click.trigger_id}", "override_form", time.time()
            ):
                # The same click again (Slack re-sends an envelope acknowledged late; a replay): its trigger id has
                # opened the form already, or failed and said so, and Slack opens no second view with it.
                log.info("an override click by %s was received again; its form was opened the first time", click.user)
                return
            message = click.message
            view = override_modal(
                prediction, channel=message.channel if message else "", message_ts=message.ts if message else ""
            )
            # Waited for until the click must be answered, then left to finish after the answer: Slack may take its
            # time over views.open, and a click answered after 3 s is shown to the person as failed.
            opening = deps.spawn(_open_form(deps, client, click, view), "views.open")
            await asyncio.wait({opening}, timeout=max(0.0, started + FORM_WAIT_S - time.monotonic()))
        except Exception:
            log.exception("opening the override modal failed")

    return on_override


def _outcome_name(real_fault: bool) -> str:
    return "Confirmed fault" if real_fault else "False alarm"


def outcome_taken_text(earlier: Outcome, clicked: bool) -> str:
    """Told to a person whose outcome click said otherwise than the outcome recorded before it (the first one
    reported counts): theirs was not recorded."""
    by = outcome_source(earlier.source)
    return (
        f"Your *{_outcome_name(clicked)}* was not recorded: the outcome was already recorded as "
        f"*{_outcome_name(earlier.real_fault)}* by {by} at {slack_time(earlier.recorded_at or earlier.at)}, and the "
        "first outcome reported is the one that counts."
    )


def outcome_not_trusted_text(clicked: bool) -> str:
    """Told to a person of trust weight 0 whose outcome click was not recorded."""
    return (
        f"Your *{_outcome_name(clicked)}* was not recorded: your trust weight is 0 (your answers have mostly "
        "disagreed with outcomes and with the other responders), and an outcome you report would change how much "
        "NPO trusts everyone who answered. Another responder, or the alert's resolution, can report it."
    )


def _make_outcome_listener(deps: SlackDeps) -> Any:
    async def on_outcome(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            click = parse_click(body)
            if not await _authorised(deps, client, click):
                return
            now = time.time()
            outcome = Outcome(click.prediction_id, OUTCOME_ACTIONS[click.action_id], now, f"slack:{click.user}", now)
            result = await deps.storage(
                deps.service.record_outcome, outcome, click.message, surfaced_only=True, reporter=click.user
            )
            if result.not_trusted:
                log.info("outcome by %s on %s not recorded: trust weight 0", click.user, click.prediction_id)
                refuse(deps, client, click, outcome_not_trusted_text(outcome.real_fault))
            elif not result.recorded:
                earlier = await deps.query(deps.service.store.outcome, click.prediction_id)
                if earlier is not None and earlier.real_fault != outcome.real_fault:
                    log.info("outcome by %s on %s not recorded: another was first", click.user, click.prediction_id)
                    refuse(deps, client, click, outcome_taken_text(earlier, outcome.real_fault))
        except (LoopError, InvalidRecord) as exc:
            log.warning("outcome not recorded: %s", exc)
            with contextlib.suppress(Exception):
                refuse(deps, client, parse_click(body), f"This outcome was not recorded: {escape(exc.message)}.")
        except Exception:
            log.exception("outcome handling failed")
            _tell_not_stored(deps, client, body)
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
