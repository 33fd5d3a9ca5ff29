"""Parsers for Slack interaction payloads: the facts a listener needs, with safe defaults for missing parts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.service import MessageRef
from bot.slack.blocks import (
    CORRECTIVE_ACTION_ID,
    CORRECTIVE_BLOCK_ID,
    DETAILS_ACTION_ID,
    DETAILS_BLOCK_ID,
    OVERRIDE_REASONS,
    REASON_ACTION_ID,
    REASON_BLOCK_ID,
)

# The Socket Mode envelope's id, passed to Bolt as this header (Socket Mode requests carry no signature; an envelope
# Slack sends again, not acknowledged in time, has the same id).
ENVELOPE_ID_HEADER = "x-npo-socket-mode-envelope-id"


def replay_key(mode: str, headers: Mapping[str, Any]) -> str:
    """What identifies a request sent again when its payload has no id of its own: the signature over HTTP (a
    replay is the same signed bytes), ``envelope:<id>`` in Socket Mode; empty when there is neither."""
    if mode == "socket_mode":
        envelope = (headers.get(ENVELOPE_ID_HEADER) or [""])[0]
        return f"envelope:{envelope}" if envelope else ""
    return str((headers.get("x-slack-signature") or [""])[0])


def request_id(*parts: object) -> str:
    """A stable feedback request id: ``slack:`` + sha256 of the parts (identical requests give identical ids)."""
    return "slack:" + hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:48]


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Click:
    """One button click from a ``block_actions`` payload."""

    user: str
    action_id: str
    prediction_id: str
    action_ts: str
    trigger_id: str
    message: MessageRef | None
    channel: str

    def request_id(self, signature: str) -> str:
        """Identical requests (a replay, concurrent duplicates) share the id; a new click has a new action_ts."""
        if self.action_ts:
            return request_id(self.user, self.action_id, self.prediction_id, self.action_ts)
        return request_id("sig", signature)


def parse_click(body: Mapping[str, Any]) -> Click:
    actions = body.get("actions") or [{}]
    action = _dict(actions[0])
    container = _dict(body.get("container"))
    channel = str(container.get("channel_id") or _dict(body.get("channel")).get("id") or "")
    ts = str(container.get("message_ts") or _dict(body.get("message")).get("ts") or "")
    return Click(
        user=str(_dict(body.get("user")).get("id") or ""),
        action_id=str(action.get("action_id") or ""),
        prediction_id=str(action.get("value") or ""),
        action_ts=str(action.get("action_ts") or ""),
        trigger_id=str(body.get("trigger_id") or ""),
        message=MessageRef(channel, ts) if channel and ts else None,
        channel=channel,
    )


@dataclass(frozen=True, slots=True)
class OverrideSubmission:
    """The override modal as submitted: reason code (or None), free text, the message it belongs to."""

    user: str
    view_id: str
    prediction_id: str
    reason: str | None
    details: str
    corrective_action: str
    message: MessageRef | None

    def reason_text(self) -> str:
        """The stored reason: ``<label>: details (instead: corrective action)``, at most 3000 characters."""
        text = OVERRIDE_REASONS.get(self.reason or "", self.reason or "")
        if self.details:
            text += f": {self.details}"
        if self.corrective_action:
            text += f" (instead: {self.corrective_action})"
        return text[:3000]

    def request_id(self) -> str:
        """The answer's idempotency key: the view, the person and the reason, so the same form sent again as it was
        is a repeat, and sent again with another reason (Slack gave up waiting for the first answer and kept the
        form open) is a changed answer."""
        return request_id("view", self.view_id, self.user, self.reason_text())


def _input_value(values: Mapping[str, Any], block: str, action: str) -> str:
    return str(_dict(_dict(values.get(block)).get(action)).get("value") or "").strip()


def parse_override(body: Mapping[str, Any]) -> OverrideSubmission:
    view = _dict(body.get("view"))
    values = _dict(_dict(view.get("state")).get("values"))
    selected = _dict(_dict(_dict(values.get(REASON_BLOCK_ID)).get(REASON_ACTION_ID)).get("selected_option"))
    reason = str(selected.get("value") or "") or None
    try:
        meta = _dict(json.loads(str(view.get("private_metadata") or "{}")))
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder can follow
        meta = {}
    channel, ts = str(meta.get("channel") or ""), str(meta.get("ts") or "")
    return OverrideSubmission(
        user=str(_dict(body.get("user")).get("id") or ""),
        view_id=str(view.get("id") or ""),
        prediction_id=str(meta.get("prediction_id") or ""),
        reason=reason if reason in OVERRIDE_REASONS else None,
        details=_input_value(values, DETAILS_BLOCK_ID, DETAILS_ACTION_ID),
        corrective_action=_input_value(values, CORRECTIVE_BLOCK_ID, CORRECTIVE_ACTION_ID),
        message=MessageRef(channel, ts) if channel and ts else None,
    )
