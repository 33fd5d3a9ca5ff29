"""The stand-in's live page: the channels as a person sees them in Slack, updated as the bot posts and edits.

Routes (served by the stand-in, loopback only):

- ``GET /ui/``: the page (HTML + a small script that polls the two JSON routes below once a second).
- ``GET /ui/state?as=USER``: every channel's messages rendered from their Block Kit, and the modal open for USER.
- ``GET /ui/panel``: the numbers panel, from :attr:`LiveUi.panel` (``{}`` when nothing provides one).
- ``POST /ui/act`` ``{"user", "channel", "ts", "action_id"}``: click a button of a message — a signed
  ``block_actions`` request to the bot, exactly as Slack sends it. A modal the bot opens in answer (matched by
  the click's trigger id) becomes USER's open modal.
- ``POST /ui/submit`` ``{"user", "view_id", "values": {block_id: {action_id: value}}}``: submit the modal (a signed
  ``view_submission``); validation errors from the bot are shown in the modal, anything else closes it.
- ``POST /ui/close`` ``{"user", "view_id"}``: Cancel (nothing is sent to the bot: NPO does not ask for
  ``view_closed``).

Bad requests get 400 with ``{"error", "field"}``; clicking needs the bot's URL and signing secret (409 without).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx

from bot.standin.blockkit import render_blocks, render_modal
from bot.standin.live_page import LIVE_PAGE
from bot.standin.store import Message

if TYPE_CHECKING:
    from bot.standin.server import StandIn

__all__ = ["ClickOutcome", "LiveUi", "Response"]

MAX_MESSAGES_SHOWN = 60
JSON_TYPE = "application/json; charset=utf-8"

Response = tuple[int, bytes, str]


class BadRequest(ValueError):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ClickOutcome:
    """What a click did: the bot's HTTP status and the modal it opened in answer (its view id), if any."""

    status: int
    view_id: str | None


def _json(status: int, body: Mapping[str, Any]) -> Response:
    return status, json.dumps(body).encode(), JSON_TYPE


def _text_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(name, f"{name} must be a non-empty string")
    return value


class LiveUi:
    """State and actions of the live page for one :class:`~bot.standin.server.StandIn`.

    ``panel`` is a callable returning JSON-able numbers for the side panel (the demo sets it); ``title`` is the
    page heading. Thread-safe: the stand-in serves requests on many threads.
    """

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.panel: Callable[[], Mapping[str, Any]] | None = None
        self.title = "NPO — Slack stand-in"
        self.default_user: str | None = None  # the page's user when ?as= is not given (else the first user)
        self._lock = threading.Lock()
        self._modals: dict[str, str] = {}  # user → open view id
        self._errors: dict[str, dict[str, str]] = {}  # view id → {block_id: message}

    # ---- reading ------------------------------------------------------------------------------------------
    def user_name(self, user_id: str) -> str:
        with self.standin.store.lock:
            user = self.standin.store.users.get(user_id) or {}
        raw = user.get("profile")
        profile: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        return str(profile.get("display_name") or user.get("real_name") or user.get("name") or user_id)

    def _message_html(self, message: Message, clickable: bool) -> str:
        author = "NPO" if message.bot_id else escape(self.user_name(message.user))
        badge = '<span class="app">APP</span>' if message.bot_id else ""
        meta = f'<span class="author">{author}</span>{badge} <span class="time">{_clock(message.ts)}</span>'
        if message.edited_ts:
            meta += ' <span class="meta">(edited)</span>'
        if message.ephemeral_to:
            meta += ' <span class="meta">Only visible to you</span>'
        body = ""
        if message.text and not message.blocks:
            body += render_blocks(
                [{"type": "section", "text": {"type": "mrkdwn", "text": message.text}}], user_name=self.user_name
            )
        body += render_blocks(message.blocks, user_name=self.user_name, interactive=clickable)
        for f in message.files:
            file_id = escape(str(f.get("id", "")))
            title = render_blocks([{"type": "section", "text": {"type": "plain_text", "text": f.get("title") or ""}}])
            body += f'<div class="file"><a href="/files/{file_id}" target="_blank">{title}</a>'
            if str(f.get("name", "")).lower().endswith(".png"):
                body += f'<img class="attachment" src="/files/{file_id}" alt="">'
            body += "</div>"
        cls = "msg eph" if message.ephemeral_to else "msg"
        return (
            f'<div class="{cls}" data-channel="{escape(message.channel)}" data-ts="{escape(message.ts)}">'
            f'<div class="msg-meta">{meta}</div>{body}</div>'
        )

    def state(self, user: str | None) -> dict[str, Any]:
        """The page's view for ``user``: channels with rendered messages, the open modal, the known users."""
        s = self.standin
        clickable = s.bot_url is not None and s.signing_secret is not None and user is not None
        channels = []
        for channel in s.channels():
            name = s.store.channel_names.get(channel, channel.lower())
            with s.store.lock:  # the newest messages only: a long demo has thousands
                recent = copy.deepcopy(s.store.history.get(channel, [])[-4 * MAX_MESSAGES_SHOWN :])
            messages = [
                m for m in recent if m.thread_ts is None and (m.ephemeral_to is None or m.ephemeral_to == user)
            ][-MAX_MESSAGES_SHOWN:]
            html = "".join(self._message_html(m, clickable) for m in messages)
            channels.append({"id": channel, "name": name, "count": len(messages), "html": html})
        modal = None
        with self._lock:
            view_id = self._modals.get(user or "")
            errors = dict(self._errors.get(view_id or "", {}))
        if view_id is not None:
            with s.store.lock:
                view = s.store.views.get(view_id)
            if view is not None:
                modal = {"view_id": view_id, "html": render_modal(view, user_name=self.user_name, errors=errors)}
        with s.store.lock:
            users = [{"id": u, "name": self.user_name(u)} for u in sorted(s.store.users)]
        return {"user": user, "clickable": clickable, "channels": channels, "modal": modal, "users": users}

    # ---- acting -------------------------------------------------------------------------------------------
    def _require_bot(self) -> tuple[str, str]:
        s = self.standin
        if s.bot_url is None or s.signing_secret is None:
            raise BadRequest("bot_url", "clicking needs the bot's request URL and signing secret", 409)
        return s.bot_url, s.signing_secret

    def click(self, user: str, channel: str, ts: str, action_id: str, *, show_modal: bool = True) -> ClickOutcome:
        """Click ``action_id`` on message ``(channel, ts)`` as ``user`` (signed, as Slack would).

        Returns the bot's status and the id of a modal it opened with this click's trigger id. With
        ``show_modal`` that modal becomes ``user``'s open modal on the page. Raises LookupError when the
        message or button is not shown, httpx.HTTPError when the bot cannot be reached.
        """
        bot_url, secret = self._require_bot()
        trigger = self.standin.issue_trigger_id()
        response = self.standin.click(
            bot_url, secret, user_id=user, action_id=action_id, message=(channel, ts), trigger_id=trigger
        )
        view_id = next(
            (
                str(call.response["view"]["id"])
                for call in self.standin.calls("views.open")
                if call.body.get("trigger_id") == trigger
                and isinstance(call.response, dict)
                and call.response.get("ok")
            ),
            None,
        )
        if view_id is not None and show_modal:
            with self._lock:
                self._modals[user] = view_id
        return ClickOutcome(response.status_code, view_id)

    def submit(self, user: str, view_id: str, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Submit modal ``view_id`` as ``user``; returns ``{"status", "closed", "errors"}``."""
        bot_url, secret = self._require_bot()
        response = self.standin.submit_view(bot_url, secret, user_id=user, view_id=view_id, values=values)
        answer: Any = None
        if response.content:
            try:
                answer = response.json()
            except ValueError:
                answer = None
        errors: dict[str, str] = {}
        if isinstance(answer, dict) and answer.get("response_action") == "errors":
            errors = {str(k): str(v) for k, v in (answer.get("errors") or {}).items()}
        closed = (
            response.status_code == 200
            and not errors
            and not (isinstance(answer, dict) and answer.get("response_action") in ("update", "push"))
        )
        with self._lock:
            if closed:
                self._errors.pop(view_id, None)
                if self._modals.get(user) == view_id:
                    del self._modals[user]
            else:
                self._errors[view_id] = errors
        return {"status": response.status_code, "closed": closed, "errors": errors}

    def close(self, user: str, view_id: str) -> None:
        """Cancel: the modal disappears for ``user``; the bot is not told (NPO does not use ``view_closed``)."""
        with self._lock:
            if self._modals.get(user) == view_id:
                del self._modals[user]
            self._errors.pop(view_id, None)

    # ---- HTTP ---------------------------------------------------------------------------------------------
    def get(self, path: str, query: str) -> Response:
        """Answer a GET under ``/ui/``."""
        params = {k: v[0] for k, v in parse_qs(query).items()}
        if path in ("/ui", "/ui/"):
            return 200, LIVE_PAGE.replace("{{TITLE}}", escape(self.title)).encode(), "text/html; charset=utf-8"
        if path == "/ui/state":
            return _json(200, self.state(params.get("as") or self.default_user or self.standin.default_page_user()))
        if path == "/ui/panel":
            return _json(200, dict(self.panel()) if self.panel is not None else {})
        return 404, b"not_found", "text/plain"

    def post(self, path: str, raw: bytes) -> Response:
        """Answer a POST under ``/ui/`` (JSON bodies)."""
        try:
            try:
                body = json.loads(raw.decode("utf-8") or "{}")
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise BadRequest("body", "expected a JSON object") from None
            if not isinstance(body, dict):
                raise BadRequest("body", "expected a JSON object")
            if path == "/ui/act":
                user = _text_field(body, "user")
                outcome = self.click(
                    user, _text_field(body, "channel"), _text_field(body, "ts"), _text_field(body, "action_id")
                )
                return _json(200, {"status": outcome.status, "view_id": outcome.view_id})
            if path == "/ui/submit":
                values = body.get("values", {})
                if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
                    raise BadRequest("values", "values must be {block_id: {action_id: value}}")
                return _json(200, self.submit(_text_field(body, "user"), _text_field(body, "view_id"), values))
            if path == "/ui/close":
                self.close(_text_field(body, "user"), _text_field(body, "view_id"))
                return _json(200, {"closed": True})
            return 404, b"not_found", "text/plain"
        except BadRequest as exc:
            return _json(exc.status, {"error": exc.message, "field": exc.field})
        except LookupError as exc:
            return _json(404, {"error": str(exc), "field": "action_id"})
        except httpx.HTTPError as exc:
            return _json(502, {"error": f"the bot did not answer: {exc}", "field": "bot_url"})


def _clock(ts: str) -> str:
    try:
        return time.strftime("%H:%M:%S", time.gmtime(float(ts)))
    except ValueError:
        return ts
