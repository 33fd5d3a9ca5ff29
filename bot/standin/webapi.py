"""What each Web API method (and the upload and response_url endpoints) does to the stand-in's state.

Answers follow Slack's shapes and error codes. Transport concerns (HTTP parsing, faults, the call log) live in
``server.py``; limits live in ``limits.py``.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.standin import limits
from bot.standin.store import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    RESPONSE_URL_MAX_USES,
    RESPONSE_URL_TTL_S,
    TEAM_ID,
    Message,
    Store,
    StoredFile,
)

__all__ = ["Reply", "WebApi"]

CHANNEL_POST_INTERVAL_S = 1.0
MEMBERS_DEFAULT_LIMIT = 100  # conversations.members without ``limit``
MEMBERS_MAX_LIMIT = 1000  # a larger ``limit`` still gives at most this many per page
HISTORY_DEFAULT_LIMIT = 100  # conversations.history without ``limit``
HISTORY_MAX_LIMIT = 999  # a larger ``limit`` still gives at most this many per page
REPLIES_DEFAULT_LIMIT = 1000  # conversations.replies without ``limit``
REPLIES_MAX_LIMIT = 1000  # a larger ``limit`` still gives at most this many per page


def _offset_cursor(offset: int) -> str:
    """An opaque pagination cursor (base64, as Slack's are) for the item at ``offset``."""
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _cursor_offset(cursor: Any) -> int | None:
    """The offset a cursor from :func:`_offset_cursor` stands for (0 with no cursor), or None if it is not one."""
    if cursor in (None, ""):
        return 0
    try:
        kind, _, offset = base64.b64decode(str(cursor), validate=True).decode().partition(":")
        return int(offset) if kind == "offset" and offset.isdigit() else None
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it: ``true``/``1`` (a form or query string) or a JSON true."""
    return value is True or str(value).lower() in ("1", "true")


def _valid_metadata(metadata: Any) -> bool:
    """Whether chat.postMessage's ``metadata`` has the shape Slack requires: an ``event_type`` string and an
    ``event_payload`` object."""
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and bool(metadata["event_type"])
        and isinstance(metadata.get("event_payload"), dict)
    )


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body (or plain text for webhooks/uploads) and extra headers."""

    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


def ok(**fields: Any) -> Reply:
    return Reply(200, {"ok": True, **fields})


def fail(error: str, *, status: int = 200, messages: list[str] | None = None) -> Reply:
    body: dict[str, Any] = {"ok": False, "error": error}
    if messages:
        body["response_metadata"] = {"messages": messages}
    return Reply(status, body)


class _BadJson(ValueError):
    pass


def _json_param(value: Any) -> Any:
    """Form-encoded calls carry JSON arguments (blocks, view, files) as strings; JSON calls carry objects."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise _BadJson(str(exc)) from exc
    return value


class WebApi:
    """The Web API methods the bot uses, over one :class:`Store`.

    ``base_url`` returns the stand-in's current root URL (``http://127.0.0.1:PORT``) for the loopback
    ``upload_url`` and file URLs. With ``enforce_channel_rate`` true, a second chat.postMessage to one channel
    within 1 s is answered with 429 ``Retry-After: 1``.
    """

    def __init__(self, store: Store, token: str, base_url: Callable[[], str], *, enforce_channel_rate: bool) -> None:
        self.store = store
        self.token = token
        self.base_url = base_url
        self.enforce_channel_rate = enforce_channel_rate
        self._methods: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "views.open": self.views_open,
            "views.update": self.views_update,
            "views.publish": self.views_publish,
            "files.getUploadURLExternal": self.files_get_upload_url_external,
            "files.completeUploadExternal": self.files_complete_upload_external,
            "users.info": self.users_info,
            "usergroups.users.list": self.usergroups_users_list,
            "conversations.members": self.conversations_members,
            "conversations.info": self.conversations_info,
            "conversations.history": self.conversations_history,
            "conversations.replies": self.conversations_replies,
        }

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    def call(self, method: str, params: dict[str, Any], authorization: str | None) -> Reply:
        """Check the bearer token (or a ``token`` parameter, as Slack also accepts), then run the method."""
        handler = self._methods.get(method)
        if handler is None:
            return fail("unknown_method", status=404)
        token = None
        if authorization is not None and authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ").strip()
        elif isinstance(params.get("token"), str):
            token = params["token"]
        if not token:
            return fail("not_authed")
        if token != self.token:
            return fail("invalid_auth")
        try:
            with self.store.lock:
                return handler(params)
        except _BadJson:
            return fail("invalid_json" if method.startswith("views.") else "invalid_blocks_format")

    # ---- auth ----------------------------------------------------------------------------------------------
    def auth_test(self, params: dict[str, Any]) -> Reply:
        return ok(
            url=self.base_url() + "/",
            team="NPO stand-in",
            user="npo",
            team_id=TEAM_ID,
            user_id=BOT_USER_ID,
            bot_id=BOT_ID,
            is_enterprise_install=False,
        )

    # ---- chat ----------------------------------------------------------------------------------------------
    def _message_content(self, params: dict[str, Any], *, require: bool) -> tuple[Reply | None, Any]:
        """Validate text/blocks; returns (error reply or None, parsed blocks or None when absent)."""
        blocks = _json_param(params["blocks"]) if params.get("blocks") not in (None, "") else None
        text = params.get("text")
        if require and not text and not blocks and not params.get("attachments"):
            return fail("no_text"), None
        if text is not None and not isinstance(text, str):
            return fail("invalid_arguments"), None
        if isinstance(text, str) and len(text) > limits.MAX_TEXT_CHARS:
            return fail("msg_too_long"), None
        if blocks is not None:
            problems = limits.check_blocks(blocks, max_blocks=limits.MAX_MESSAGE_BLOCKS)
            if problems:
                return fail("invalid_blocks", messages=problems), None
            if limits.blocks_text_chars(blocks) > limits.MAX_BLOCKS_TEXT_CHARS:
                return fail("msg_blocks_too_long"), None
        return None, blocks

    def _channel(self, params: dict[str, Any], key: str = "channel") -> str | None:
        channel = params.get(key)
        if not isinstance(channel, str) or not channel or not self.store.channel_known(channel):
            return None
        return channel

    def chat_post_message(self, params: dict[str, Any]) -> Reply:
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        error, blocks = self._message_content(params, require=True)
        if error is not None:
            return error
        if self.enforce_channel_rate:
            now = time.monotonic()
            last = self.store.last_post.get(channel)
            if last is not None and now - last < CHANNEL_POST_INTERVAL_S:
                return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
            self.store.last_post[channel] = now
        metadata = _json_param(params["metadata"]) if params.get("metadata") not in (None, "") else None
        if metadata is not None and not _valid_metadata(metadata):
            return fail("invalid_metadata_format")
        thread_ts = params.get("thread_ts") or None
        text = params.get("text") or ""
        message = Message(channel, self.store.next_ts(), text, blocks or [], thread_ts=thread_ts, metadata=metadata)
        self.store.add_message(message)
        return ok(channel=channel, ts=message.ts, message=message.to_payload(metadata=True))

    def chat_update(self, params: dict[str, Any]) -> Reply:
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        message = self.store.find_message(channel, str(params.get("ts", "")))
        if message is None or message.ephemeral_to is not None:
            return fail("message_not_found")
        if message.bot_id != BOT_ID:
            return fail("cant_update_message")
        error, blocks = self._message_content(params, require=True)
        if error is not None:
            return error
        if params.get("text") is not None:
            message.text = params["text"]
        if blocks is not None:  # omitted keeps the blocks; [] removes them
            message.blocks = blocks
        message.edited_ts = self.store.next_ts()
        return ok(channel=channel, ts=message.ts, text=message.text, message=message.to_payload())

    def chat_post_ephemeral(self, params: dict[str, Any]) -> Reply:
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        user = params.get("user")
        if not isinstance(user, str) or not user:
            return fail("user_not_found")
        members = self.store.members.get(channel)
        if members is not None and user not in members:
            return fail("user_not_in_channel")
        error, blocks = self._message_content(params, require=True)
        if error is not None:
            return error
        ts = self.store.next_ts()
        self.store.add_message(Message(channel, ts, params.get("text") or "", blocks or [], ephemeral_to=user))
        return ok(message_ts=ts)

    # ---- views ---------------------------------------------------------------------------------------------
    def _new_view(self, view: dict[str, Any], view_id: str, root: str | None = None) -> dict[str, Any]:
        stored = copy.deepcopy(view)
        stored.setdefault("private_metadata", "")
        stored.setdefault("callback_id", "")
        stored.setdefault("external_id", "")
        stored |= {
            "id": view_id,
            "team_id": TEAM_ID,
            "state": {"values": {}},
            "hash": f"{int(self.store.clock())}.{secrets.token_hex(4)}",
            "root_view_id": root or view_id,
            "previous_view_id": None,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }
        return stored

    def views_open(self, params: dict[str, Any]) -> Reply:
        trigger_error = self.store.trigger_error(params.get("trigger_id"))
        if trigger_error is not None:
            return fail(trigger_error)
        view = _json_param(params.get("view"))
        problems = limits.check_view(view)
        if not problems and view.get("type") != "modal":
            problems = ["[ERROR] must be 'modal' for views.open [json-pointer:/view/type]"]
        if problems:
            return fail("invalid_arguments", messages=problems)
        stored = self._new_view(view, self.store.next_id("V"))
        self.store.exchange_trigger(params["trigger_id"])
        self.store.views[stored["id"]] = stored
        self.store.view_order.append(stored["id"])
        return ok(view=copy.deepcopy(stored))

    def views_update(self, params: dict[str, Any]) -> Reply:
        view_id = params.get("view_id")
        external_id = params.get("external_id")
        current = self.store.views.get(view_id) if isinstance(view_id, str) else None
        if current is None and external_id:
            current = next((v for v in self.store.views.values() if v.get("external_id") == external_id), None)
        if current is None:
            return fail("not_found")
        if params.get("hash") and params["hash"] != current["hash"]:
            return fail("hash_conflict")
        view = _json_param(params.get("view"))
        problems = limits.check_view(view)
        if problems:
            return fail("invalid_arguments", messages=problems)
        stored = self._new_view(view, current["id"], current["root_view_id"])
        stored["state"] = current["state"]
        self.store.views[current["id"]] = stored
        return ok(view=copy.deepcopy(stored))

    def views_publish(self, params: dict[str, Any]) -> Reply:
        user_id = params.get("user_id")
        if not isinstance(user_id, str) or not user_id:
            return fail("invalid_arguments")
        if self.store.users and user_id not in self.store.users:
            return fail("user_not_found")
        view = _json_param(params.get("view"))
        problems = limits.check_view(view)
        if not problems and view.get("type") != "home":
            problems = ["[ERROR] must be 'home' for views.publish [json-pointer:/view/type]"]
        if problems:
            return fail("invalid_arguments", messages=problems)
        if limits.view_bytes(view) > limits.MAX_VIEW_BYTES:
            return fail("view_too_large")
        previous = self.store.home_views.get(user_id)
        stored = self._new_view(view, previous["id"] if previous else self.store.next_id("V"))
        self.store.home_views[user_id] = stored
        return ok(view=copy.deepcopy(stored))

    # ---- files (upload v2) ---------------------------------------------------------------------------------
    def files_get_upload_url_external(self, params: dict[str, Any]) -> Reply:
        filename = params.get("filename")
        try:
            length = int(params.get("length", ""))
        except ValueError:
            return fail("invalid_arguments")
        if not isinstance(filename, str) or not filename or length < 1:
            return fail("invalid_arguments")
        alt_txt = params.get("alt_txt")
        if isinstance(alt_txt, str) and len(alt_txt) > limits.MAX_ALT_TXT:
            return fail("alt_txt_too_large")
        file_id = self.store.next_id("F")
        self.store.files[file_id] = StoredFile(file_id, filename, length, alt_txt=params.get("alt_txt"))
        return ok(upload_url=f"{self.base_url()}/upload/{file_id}", file_id=file_id)

    def upload(self, file_id: str, data: bytes) -> Reply:
        """The raw upload to ``upload_url`` (no auth header, as Slack's upload URLs carry their own secret)."""
        with self.store.lock:
            stored = self.store.files.get(file_id)
            if stored is None or stored.completed:
                return Reply(404, "not_found")
            stored.data = data
            return Reply(200, f"OK - {len(data)}")

    def _file_object(self, stored: StoredFile) -> dict[str, Any]:
        now = int(self.store.clock())
        return {
            "id": stored.id,
            "created": now,
            "timestamp": now,
            "name": stored.filename,
            "title": stored.title or stored.filename,
            "mimetype": "image/png" if stored.filename.lower().endswith(".png") else "application/octet-stream",
            "filetype": stored.filename.rsplit(".", 1)[-1].lower() if "." in stored.filename else "binary",
            "user": BOT_USER_ID,
            "size": len(stored.data or b""),
            "url_private": f"{self.base_url()}/files/{stored.id}",
            "channels": list(stored.channels),
            "alt_txt": stored.alt_txt,
        }

    def files_complete_upload_external(self, params: dict[str, Any]) -> Reply:
        entries = _json_param(params.get("files"))
        if not isinstance(entries, list) or not entries:
            return fail("invalid_arguments")
        comment = params.get("initial_comment")
        if isinstance(comment, str) and len(comment) > limits.MAX_TEXT_CHARS:
            return fail("msg_too_long")
        channels = [c for c in str(params.get("channels") or params.get("channel_id") or "").split(",") if c]
        for channel in channels:
            if not self.store.channel_known(channel):
                return fail("channel_not_found")
        found: list[StoredFile] = []
        for entry in entries:
            stored = self.store.files.get(entry.get("id", "")) if isinstance(entry, dict) else None
            if stored is None or stored.data is None:
                return fail("file_not_found")
            if stored.completed:
                return fail("file_already_completed")
            found.append(stored)
        for stored, entry in zip(found, entries, strict=True):
            stored.title = entry.get("title") or stored.filename
            stored.channels = channels
            stored.completed = True
        for channel in channels:
            files = [{"id": f.id, "name": f.filename, "title": f.title} for f in found]
            text = params.get("initial_comment") or ""
            thread_ts = params.get("thread_ts") or None
            self.store.add_message(Message(channel, self.store.next_ts(), text, [], thread_ts=thread_ts, files=files))
        return ok(files=[self._file_object(f) for f in found])

    # ---- users, groups, channels ---------------------------------------------------------------------------
    def users_info(self, params: dict[str, Any]) -> Reply:
        user = self.store.users.get(str(params.get("user", "")))
        return fail("user_not_found") if user is None else ok(user=copy.deepcopy(user))

    def usergroups_users_list(self, params: dict[str, Any]) -> Reply:
        users = self.store.usergroups.get(str(params.get("usergroup", "")))
        return fail("no_such_subteam") if users is None else ok(users=list(users))

    def conversations_members(self, params: dict[str, Any]) -> Reply:
        """One page of a channel's members, as Slack pages them: ``limit`` per page (default 100, at most
        1,000), ``response_metadata.next_cursor`` for the next page and ``""`` after the last one."""
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        try:
            limit = int(params.get("limit") or MEMBERS_DEFAULT_LIMIT)
        except (TypeError, ValueError):
            return fail("invalid_limit")
        if limit < 1:
            return fail("invalid_limit")
        members = list(self.store.members.get(channel, []))
        start = _cursor_offset(params.get("cursor"))
        if start is None or start > len(members):
            return fail("invalid_cursor")
        end = start + min(limit, MEMBERS_MAX_LIMIT)
        next_cursor = _offset_cursor(end) if end < len(members) else ""
        return ok(members=members[start:end], response_metadata={"next_cursor": next_cursor})

    def conversations_history(self, params: dict[str, Any]) -> Reply:
        """One page of a channel's messages, newest first, as Slack pages them: those after ``oldest`` and before
        ``latest`` (now; ``inclusive`` keeps a message at either bound), ``limit`` per page (default 100, at most
        999), ``has_more`` and ``response_metadata.next_cursor``. Thread replies are left out (only their parents
        are listed), as are ephemeral messages; message metadata is shown with ``include_all_metadata``."""
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        window = _page_window(params, HISTORY_DEFAULT_LIMIT)
        if isinstance(window, str):
            return fail(window)
        limit, within = window

        listed = [
            m
            for m in reversed(self.store.history.get(channel, []))
            if m.ephemeral_to is None and m.thread_ts in (None, m.ts) and within(float(m.ts))
        ]
        start = _cursor_offset(params.get("cursor"))
        if start is None or start > len(listed):
            return fail("invalid_cursor")
        end = start + min(limit, HISTORY_MAX_LIMIT)
        metadata = _flag(params.get("include_all_metadata"))
        return ok(
            messages=[m.to_payload(metadata=metadata) for m in listed[start:end]],
            has_more=end < len(listed),
            pin_count=0,
            response_metadata={"next_cursor": _offset_cursor(end) if end < len(listed) else ""},
        )

    def conversations_replies(self, params: dict[str, Any]) -> Reply:
        """One page of a thread: the message ``ts`` names (its parent, or a reply in it: the thread is its parent's),
        then its replies, oldest first, those after ``oldest`` and before ``latest`` (``inclusive`` keeps one at
        either bound; the parent is listed first whatever its time), ``limit`` per page (default and at most 1,000),
        ``has_more`` and ``response_metadata.next_cursor``. A message with no replies is listed alone. Message
        metadata is shown with ``include_all_metadata``; ``thread_not_found`` when no such message is in the
        channel."""
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        named = self.store.find_message(channel, str(params.get("ts") or ""))
        if named is None or named.ephemeral_to is not None:
            return fail("thread_not_found")
        window = _page_window(params, REPLIES_DEFAULT_LIMIT)
        if isinstance(window, str):
            return fail(window)
        limit, within = window

        root = named.thread_ts or named.ts
        parent = self.store.find_message(channel, root)
        replies = [
            m
            for m in self.store.history.get(channel, [])
            if m.ephemeral_to is None and m.thread_ts == root and m.ts != root and within(float(m.ts))
        ]
        listed = ([parent] if parent is not None else []) + replies
        start = _cursor_offset(params.get("cursor"))
        if start is None or start > len(listed):
            return fail("invalid_cursor")
        end = start + min(limit, REPLIES_MAX_LIMIT)
        metadata = _flag(params.get("include_all_metadata"))
        return ok(
            messages=[m.to_payload(metadata=metadata) for m in listed[start:end]],
            has_more=end < len(listed),
            response_metadata={"next_cursor": _offset_cursor(end) if end < len(listed) else ""},
        )

    def conversations_info(self, params: dict[str, Any]) -> Reply:
        channel = self._channel(params)
        if channel is None:
            return fail("channel_not_found")
        info = {
            "id": channel,
            "name": self.store.channel_names.get(channel, channel.lower()),
            "is_channel": True,
            "is_private": False,
            "is_archived": False,
            "is_member": True,
            "created": 1_700_000_000,
            "context_team_id": TEAM_ID,
            "num_members": len(self.store.members.get(channel, [])),
        }
        return ok(channel=info)

    # ---- response_url --------------------------------------------------------------------------------------
    def response_url(self, rid: str, body: Any) -> Reply:
        """A POST to a response_url: ≤ 5 uses within 30 min; replace/delete the original or post a new message.

        Over the limit it answers 404 ``used_url`` / ``expired_url`` (plain text, like Slack's webhooks).
        """
        with self.store.lock:
            entry = self.store.response_urls.get(rid)
            if entry is None:
                return Reply(404, "no_service")
            if self.store.clock() - entry.issued_at > RESPONSE_URL_TTL_S:
                return Reply(404, "expired_url")
            if len(entry.posts) >= RESPONSE_URL_MAX_USES:
                return Reply(404, "used_url")
            if not isinstance(body, dict):
                return Reply(400, "invalid_payload")
            entry.posts.append(copy.deepcopy(body))
            return self._apply_response(entry.channel, entry.message_ts, entry.user_id, body)

    def _apply_response(self, channel: str | None, message_ts: str | None, user_id: str, body: dict[str, Any]) -> Reply:
        blocks = body.get("blocks")
        if blocks is not None and limits.check_blocks(blocks, max_blocks=limits.MAX_MESSAGE_BLOCKS):
            return Reply(400, "invalid_blocks")
        if blocks is not None and limits.blocks_text_chars(blocks) > limits.MAX_BLOCKS_TEXT_CHARS:
            return Reply(400, "msg_blocks_too_long")
        original = self.store.find_message(channel, message_ts) if channel and message_ts else None
        if body.get("delete_original"):
            if original is not None:
                self.store.remove_message(original.channel, original.ts)
            return Reply(200, "ok")
        text = body.get("text")
        if not text and not blocks:
            return Reply(400, "no_text")
        if body.get("replace_original") and original is not None:
            if text is not None:
                original.text = text
            if blocks is not None:
                original.blocks = blocks
            original.edited_ts = self.store.next_ts()
            return Reply(200, "ok")
        if channel is None:
            return Reply(200, "ok")
        ephemeral = None if body.get("response_type") == "in_channel" else user_id
        thread_ts = body.get("thread_ts")
        message = Message(channel, self.store.next_ts(), text or "", blocks or [], thread_ts=thread_ts)
        message.ephemeral_to = ephemeral
        self.store.add_message(message)
        return Reply(200, "ok")


def _page_window(params: dict[str, Any], default_limit: int) -> tuple[int, Callable[[float], bool]] | str:
    """A history or replies request's ``limit`` and its time filter (after ``oldest``, before ``latest``;
    ``inclusive`` keeps a message at either bound), or the error Slack answers for them."""
    try:
        limit = int(params.get("limit") or default_limit)
        oldest = float(params.get("oldest") or 0)
        latest = float(params["latest"]) if params.get("latest") not in (None, "") else None
    except (TypeError, ValueError):
        return "invalid_arguments"
    if limit < 1:
        return "invalid_limit"
    inclusive = _flag(params.get("inclusive"))

    def within(ts: float) -> bool:
        after = ts >= oldest if inclusive else ts > oldest
        before = latest is None or (ts <= latest if inclusive else ts < latest)
        return after and before

    return limit, within
