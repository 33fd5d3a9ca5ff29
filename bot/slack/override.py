"""The override modal's ``view_submission``: validate the reason, store one override, close the modal.

An empty reason (or "Other" without details) is answered with ``response_action: errors`` naming the input
block, and nothing is stored. A valid submission is stored before the ack (with the queued message update). The
request id is derived from the view id, the user and the reason, so a resubmitted or replayed view stores one
override, and the same view submitted again with another reason (its first answer reached Slack too late, and the
modal stayed open) replaces it.
A submission over the person's click limit is not applied to the learning state: the modal closes and the person is
told ephemerally in the recommendation's channel (the override button opens a fresh modal once the limit allows);
without a known channel the modal stays open and says so.
"""

from __future__ import annotations

import logging
import math
import time
import unicodedata
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.actions import report_rate_limited
from bot.slack.blocks import DETAILS_BLOCK_ID, OVERRIDE_CALLBACK_ID, REASON_BLOCK_ID
from bot.slack.deps import SlackDeps
from bot.slack.payloads import OverrideSubmission, parse_override
from bot.slack.responders import LookupUnavailable
from npo.loop import LoopError
from npo.types import FeedbackEvent, FeedbackKind, InvalidRecord

log = logging.getLogger(__name__)


# Characters of other categories that show nothing: Unicode's Default_Ignorable_Code_Point letters and marks (the
# Hangul fillers, a combining grapheme joiner, variation selectors, Khmer's inherent vowels) and the blank Braille
# pattern, pasted as "invisible characters" to get past a required field.
_BLANK = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0"
    + "".join(map(chr, range(0x180B, 0x1810)))
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def _visible(text: str) -> bool:
    """Whether ``text`` shows anything: a character other than a separator (spaces of any width), a control or
    format character (a zero-width space, a joiner, a byte-order mark) or a letter or mark that shows nothing (a
    Hangul filler, a variation selector: :data:`_BLANK`)."""
    return any(unicodedata.category(c)[0] not in "ZC" and c not in _BLANK for c in text)


def validation_errors(submission: OverrideSubmission) -> dict[str, str]:
    """Errors keyed by input block id (empty when the submission is valid)."""
    if submission.reason is None:
        return {REASON_BLOCK_ID: "Please pick a reason for the override."}
    if submission.reason == "other" and not _visible(submission.details):
        return {DETAILS_BLOCK_ID: "Please describe the reason when you pick Other."}
    return {}


def _make_listener(deps: SlackDeps) -> Any:
    async def on_submit(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            submission = parse_override(body)
            errors = validation_errors(submission)
            if errors:
                await ack(response_action="errors", errors=errors)
                return
            try:
                allowed = await deps.responders.allows(submission.user)
            except LookupUnavailable as exc:
                log.warning("did not record an override by %s: cannot tell who may answer (%s)", submission.user, exc)
                text = (
                    f"Not recorded: Slack refuses NPO's look-up of its on-call responders ({exc.fix}). Ask whoever "
                    "runs NPO to fix it."
                    if exc.fix
                    else "Not recorded: NPO could not check just now whether you may answer. Submit again in a minute."
                )
                await ack(response_action="errors", errors={REASON_BLOCK_ID: text})
                return
            if not allowed:
                await ack(response_action="errors", errors={REASON_BLOCK_ID: "Only on-call responders can answer."})
                return
            event = FeedbackEvent(
                prediction_id=submission.prediction_id,
                operator=submission.user,
                kind=FeedbackKind.OVERRIDE,
                at=time.time(),
                request_id=submission.request_id(),
                reason=submission.reason_text(),
            )
            result = await deps.storage(deps.service.record_click, event, submission.message)
            if result.status == "rate_limited":
                channel = submission.message.channel if submission.message else ""
                if not channel:
                    wait = max(1, math.ceil(result.retry_after_s))
                    text = f"Too many clicks: not counted. Close this and override again in {wait} s."
                    await ack(response_action="errors", errors={REASON_BLOCK_ID: text})
                    return
                report_rate_limited(deps, client, result, channel, submission.user)
        except (LoopError, InvalidRecord) as exc:
            log.warning("override not recorded: %s", exc)
            await ack(response_action="errors", errors={REASON_BLOCK_ID: f"Not recorded: {exc.message}"[:150]})
            return
        except Exception:
            log.exception("override submission failed")
            # The modal stays open with the reason filled in, so submitting again retries.
            text = "Not recorded: NPO could not store this answer just now. Submit again in a minute."
            await ack(response_action="errors", errors={REASON_BLOCK_ID: text})
            return
        await ack()

    return on_submit


def register(app: AsyncApp, deps: SlackDeps) -> None:
    """Attach the override modal's submission listener to ``app``."""
    app.view(OVERRIDE_CALLBACK_ID)(_make_listener(deps))
