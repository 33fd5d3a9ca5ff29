"""Acting as Slack towards the bot: build real-shaped interaction and event payloads, sign them, POST them.

Payload shapes follow bolt-python's scenario tests and docs.slack.dev. Builders read the
stand-in's store (the clicked message, the opened view, users) and issue fresh trigger ids and response URLs;
:func:`post_signed` does the HTTP part with httpx.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.standin.signing import signed_headers
from bot.standin.store import APP_ID, TEAM_DOMAIN, TEAM_ID, VERIFICATION_TOKEN, Store

__all__ = [
    "ANSWER_WINDOW_S",
    "FORM",
    "JSON",
    "block_actions_payload",
    "event_callback_payload",
    "form_body",
    "post_signed",
    "slash_command_fields",
    "view_submission_payload",
]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# Slack waits 3 s for the answer to an interaction, a slash command or an event, then registers a timeout: the
# person sees an error, a view_submission's answer (errors, update) is dropped, an event is delivered again.
ANSWER_WINDOW_S = 3.0


def form_body(payload: Mapping[str, Any]) -> str:
    """An interaction body as Slack sends it: ``payload=<url-encoded JSON>``."""
    return urlencode({"payload": json.dumps(payload)})


def post_signed(
    url: str,
    secret: str,
    body: str,
    content_type: str,
    *,
    timestamp: int | None = None,
    extra_headers: Mapping[str, str] | None = None,
    timeout: float = ANSWER_WINDOW_S,
) -> httpx.Response:
    """POST ``body`` to the bot with Slack's signature headers (timestamp defaults to now) and return the answer.

    Like Slack, it waits ``timeout`` (3 s) for the answer: a later one raises ``httpx.ReadTimeout``."""
    headers = signed_headers(secret, body, content_type, timestamp)
    headers |= dict(extra_headers or {})
    return httpx.post(url, content=body.encode(), headers=headers, timeout=timeout)


def _user(store: Store, user_id: str) -> dict[str, Any]:
    name = str(store.users.get(user_id, {}).get("name", user_id))
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}


def _elements(blocks: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(block_id, element) for every interactive element in a blocks list."""
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        candidates = list(block.get("elements") or []) if block.get("type") == "actions" else []
        candidates += [block[k] for k in ("accessory", "element") if isinstance(block.get(k), dict)]
        for element in candidates:
            if isinstance(element, dict):
                yield block.get("block_id"), element


def block_actions_payload(
    store: Store,
    response_url_base: str,
    *,
    user_id: str,
    action_id: str,
    value: str | None,
    message: tuple[str, str] | None,
    view: str | None,
    trigger_id: str | None,
    force: bool,
) -> dict[str, Any]:
    """A ``block_actions`` payload for a click on button ``action_id`` in a stored message or opened view.

    Raises LookupError when the message, view or button does not exist (a user cannot click what is not
    shown), unless ``force`` is true, in which case a button with that action_id is assumed.
    """
    with store.lock:
        container: dict[str, Any]
        extra: dict[str, Any] = {}
        channel = message_ts = None
        if message is not None:
            channel, message_ts = message
            stored = store.find_message(channel, message_ts)
            if stored is None:
                raise LookupError(f"no message {message_ts} in {channel}")
            blocks: Any = stored.blocks
            container = {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": stored.ephemeral_to is not None,
            }
            extra["channel"] = {"id": channel, "name": store.channel_names.get(channel, channel.lower())}
            extra["message"] = stored.to_payload()
        elif view is not None:
            opened = store.views.get(view)
            if opened is None:
                raise LookupError(f"no view {view}")
            blocks = opened.get("blocks")
            container = {"type": "view", "view_id": view}
            extra["view"] = copy.deepcopy(opened)
        else:
            raise ValueError("click() needs message=(channel, ts) or view=view_id")
        found = next(((b, e) for b, e in _elements(blocks) if e.get("action_id") == action_id), None)
        if found is None and not force:
            raise LookupError(f"no element with action_id {action_id!r} to click")
        block_id, element = found or (None, {"type": "button", "text": {"type": "plain_text", "text": action_id}})
        action = {
            "action_id": action_id,
            "block_id": block_id or "standin",
            "type": element.get("type", "button"),
            "value": element.get("value") if value is None else value,
            "text": copy.deepcopy(element.get("text")),
            "action_ts": f"{time.time():.6f}",
        }
        rid = store.issue_response_url(user_id, channel, message_ts)
        return {
            "type": "block_actions",
            "user": _user(store, user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": trigger_id or store.issue_trigger(),
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            **extra,
            "state": {"values": {}},
            "response_url": f"{response_url_base}/{rid}",
            "actions": [action],
        }


def _state_value(element: Mapping[str, Any], value: Any) -> dict[str, Any]:
    kind = str(element.get("type", "plain_text_input"))

    def option(v: Any) -> dict[str, Any]:
        for opt in element.get("options") or []:
            if isinstance(opt, dict) and opt.get("value") == v:
                return copy.deepcopy(opt)
        return {"text": {"type": "plain_text", "text": str(v)}, "value": v}

    if kind in {"static_select", "external_select", "radio_buttons"}:
        return {"type": kind, "selected_option": None if value is None else option(value)}
    if kind in {"checkboxes", "multi_static_select"}:
        return {"type": kind, "selected_options": [option(v) for v in value or []]}
    special = {
        "users_select": "selected_user",
        "conversations_select": "selected_conversation",
        "channels_select": "selected_channel",
        "datepicker": "selected_date",
    }
    return {"type": kind, special.get(kind, "value"): value}


def view_submission_payload(
    store: Store, *, user_id: str, view_id: str | None, values: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """A ``view_submission`` payload for the given view (default: the last one opened with views.open).

    ``values`` is ``{block_id: {action_id: value}}``; input elements not mentioned are sent empty (value null),
    as Slack does for optional inputs. Raises LookupError when no such view was opened.
    """
    with store.lock:
        if view_id is None:
            if not store.view_order:
                raise LookupError("no view has been opened")
            view_id = store.view_order[-1]
        opened = store.views.get(view_id)
        if opened is None:
            raise LookupError(f"no view {view_id}")
        state: dict[str, dict[str, Any]] = {}
        for block_id, element in _elements(opened.get("blocks")):
            action_id = element.get("action_id")
            if block_id and action_id and element.get("type") != "button":
                given = values.get(block_id, {})
                state.setdefault(block_id, {})[action_id] = _state_value(element, given.get(action_id))
        for block_id, actions in values.items():
            for action_id, value in actions.items():
                if action_id not in state.get(block_id, {}):
                    state.setdefault(block_id, {})[action_id] = _state_value({}, value)
        view = copy.deepcopy(opened) | {"state": {"values": state}}
        opened["state"] = copy.deepcopy(view["state"])
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "user": _user(store, user_id),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "trigger_id": store.issue_trigger(),
            "view": view,
            "response_urls": [],
            "enterprise": None,
            "is_enterprise_install": False,
        }


def event_callback_payload(event: Mapping[str, Any], event_id: str) -> dict[str, Any]:
    """The Events API ``event_callback`` envelope around one event."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": "U0STANDINBOT", "is_bot": True}],
        "is_ext_shared_channel": False,
    }


def slash_command_fields(
    store: Store, response_url_base: str, *, command: str, text: str, user_id: str, channel_id: str
) -> dict[str, str]:
    """The form fields of a slash command invocation, with a fresh trigger id and response_url."""
    with store.lock:
        rid = store.issue_response_url(user_id, channel_id, None)
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": store.channel_names.get(channel_id, channel_id.lower()),
            "user_id": user_id,
            "user_name": str(store.users.get(user_id, {}).get("name", user_id)),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{response_url_base}/{rid}",
            "trigger_id": store.issue_trigger(),
        }
