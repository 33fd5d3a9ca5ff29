"""The shape Bolt assumes of a Slack request body, checked before Bolt sees it.

Bolt reads nested fields while it routes a request (``body["actions"][0]``, ``"id" in body["user"]``,
``body["event"]["type"]``, ``payload.get("event", {}).get(...)``) and answers 500 to a body where they have another
type. Slack itself always sends them as below, so a body that breaks these rules is not from Slack: it is refused
with 400 naming the field, and nothing runs. The checks are shallow and cheap (a click is checked in ≈ 2 µs).

An Events API delivery (``event_callback``) must also carry what the event dedupe claims in SQLite before any
listener runs: an ``event_id`` string (Slack's ``Ev…`` id; not a number, list or object that would be claimed under
its ``str()``, not empty, at most 200 characters) and an ``event`` object with a ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields Bolt reads as an id string or as an object with an "id".
_IDENTITY = ("user", "team", "channel", "enterprise")
# Fields Bolt indexes into as objects.
_OBJECTS = ("event", "view", "container", "message", "previous_message", "workflow_step", "function_data", "state")
# Fields Bolt indexes as lists of objects.
_LISTS = ("actions", "authorizations")
_SCALARS = (str, int, float, bool, type(None))
MAX_EVENT_ID = 200


def _check(body: Mapping[str, Any], where: str, depth: int) -> str | None:
    for name in _IDENTITY:
        value = body.get(name)
        if value is not None and not isinstance(value, str | Mapping):
            return f"{where}{name}"
        if isinstance(value, Mapping) and not isinstance(value.get("id"), str | None):
            return f"{where}{name}.id"
    for name in ("type", "user_id", "team_id", "enterprise_id", "channel_id", "callback_id", "command"):
        if not isinstance(body.get(name), _SCALARS):
            return f"{where}{name}"
    for name in _OBJECTS:
        if name in body and not isinstance(body[name], Mapping):
            return f"{where}{name}"
    for name in _LISTS:
        if name in body and not (
            isinstance(body[name], list) and all(isinstance(item, Mapping) for item in body[name])
        ):
            return f"{where}{name}"
    view = body.get("view")
    if isinstance(view, Mapping) and not isinstance(view.get("type"), str):
        return f"{where}view.type"
    if "actions" in body and not body["actions"]:
        return f"{where}actions"
    if body.get("type") == "block_actions":  # Bolt's matchers read action["action_id"] (and block_id) unguarded
        for i, action in enumerate(body.get("actions") or ()):
            if not isinstance(action.get("action_id"), str):
                return f"{where}actions[{i}].action_id"
            if not isinstance(action.get("block_id"), str | None):
                return f"{where}actions[{i}].block_id"
    if depth > 0:
        for name in ("event", "message", "previous_message", "view", "container"):
            nested = body.get(name)
            if isinstance(nested, Mapping) and (problem := _check(nested, f"{where}{name}.", depth - 1)):
                return problem
        for i, item in enumerate(body.get("authorizations") or ()):
            if problem := _check(item, f"{where}authorizations[{i}].", depth - 1):
                return problem
        for i, item in enumerate(body.get("actions") or ()):
            if problem := _check(item, f"{where}actions[{i}].", 0):
                return problem
    return None


def _event_problem(body: Mapping[str, Any]) -> str | None:
    """For an ``event_callback``: the field the event dedupe would claim wrongly (module docstring), else None."""
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
        return "event_id"
    event = body.get("event")
    if not isinstance(event, Mapping):
        return "event"
    if not isinstance(event.get("type"), str) or not event["type"]:
        return "event.type"
    return None


def _id_problem(body: Mapping[str, Any]) -> str | None:
    """An id a listener matches on (a view's or a shortcut's ``callback_id``, a ``block_suggestion``'s
    ``action_id``) that is not a string: Slack always sends them as strings, and the catch-all listeners
    (:mod:`bot.slack.unhandled`) search them with a pattern, which raises on a number."""
    for name in ("callback_id", "action_id"):
        if not isinstance(body.get(name), str | None):
            return name
    view = body.get("view")
    if isinstance(view, Mapping) and not isinstance(view.get("callback_id"), str | None):
        return "view.callback_id"
    return None


def _workflow_step_expected(body: Mapping[str, Any]) -> bool:
    """A ``workflow_step_edit``, or the submission of a ``workflow_step`` view (Steps from Apps): Bolt reads its
    ``workflow_step`` object to build every middleware's arguments, and answers 500 (a traceback in the log) when it
    is missing."""
    view = body.get("view")
    return body.get("type") == "workflow_step_edit" or (
        body.get("type") == "view_submission" and isinstance(view, Mapping) and view.get("type") == "workflow_step"
    )


def shape_problem(body: Mapping[str, Any]) -> str | None:
    """The first field (dotted path) whose type Slack never sends and Bolt cannot handle; None when fine."""
    problem = _check(body, "", 2) or _id_problem(body)
    if problem is None and body.get("type") == "block_actions" and "actions" not in body:
        problem = "actions"  # Slack sends a click's action; without one no listener matches
    if problem is None and _workflow_step_expected(body) and not isinstance(body.get("workflow_step"), Mapping):
        problem = "workflow_step"
    if problem is None and body.get("type") == "event_callback":
        problem = _event_problem(body)
    return problem
