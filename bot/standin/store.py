"""The stand-in's workspace state: channels, users, messages, views, files, trigger ids, response URLs and the
log of every call. One re-entrant lock guards everything; readers get copies.

This module stores and looks things up; it does not know HTTP, Slack's limits or error codes.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "TEAM_ID",
    "Call",
    "Message",
    "ResponseUrl",
    "Store",
    "StoredFile",
]

TEAM_ID = "T0STANDIN"
TEAM_DOMAIN = "npo-standin"
APP_ID = "A0STANDIN"
BOT_ID = "B0STANDIN"
BOT_USER_ID = "U0STANDINBOT"
VERIFICATION_TOKEN = "standin-verification-token"  # Slack's legacy "token" field in payloads

TRIGGER_TTL_S = 3.0
RESPONSE_URL_TTL_S = 30 * 60.0
RESPONSE_URL_MAX_USES = 5


@dataclass(frozen=True)
class Call:
    """One request the stand-in received: ``method`` is the Web API method (or ``upload`` / ``response_url``),
    ``body`` the parsed parameters, ``at`` the arrival wall-clock time in Unix seconds, ``monotonic`` the same
    instant on ``time.monotonic()`` (use it for spacing assertions), ``status``/``response`` what was answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    at: float
    monotonic: float
    status: int
    response: Any

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name, or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class Message:
    """A message in a channel, as Slack would show it in ``conversations.history``."""

    channel: str
    ts: str
    text: str
    blocks: list[Any]
    user: str = BOT_USER_ID
    bot_id: str | None = BOT_ID
    thread_ts: str | None = None
    edited_ts: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    ephemeral_to: str | None = None  # user id, for chat.postEphemeral and ephemeral response_url replies
    metadata: dict[str, Any] | None = None  # message metadata (chat.postMessage's ``metadata``)

    def to_payload(self, *, metadata: bool = False) -> dict[str, Any]:
        """The message as it appears in Slack payloads (``message`` in block_actions, history entries); with
        ``metadata``, its message metadata too, if any (``conversations.history`` with ``include_all_metadata``)."""
        out: dict[str, Any] = {"type": "message", "ts": self.ts, "user": self.user, "text": self.text}
        if self.bot_id is not None:
            out |= {"bot_id": self.bot_id, "app_id": APP_ID, "team": TEAM_ID}
        if self.blocks:
            out["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.edited_ts is not None:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.files:
            out["files"] = copy.deepcopy(self.files)
        if metadata and self.metadata is not None:
            out["metadata"] = copy.deepcopy(self.metadata)
        return out


@dataclass
class StoredFile:
    """A file announced by ``files.getUploadURLExternal``; ``data`` arrives with the raw upload."""

    id: str
    filename: str
    length: int
    alt_txt: str | None = None
    data: bytes | None = None
    title: str | None = None
    channels: list[str] = field(default_factory=list)
    completed: bool = False


@dataclass
class ResponseUrl:
    """A response_url the stand-in issued: where it points back to, and what was posted to it."""

    id: str
    issued_at: float
    user_id: str
    channel: str | None
    message_ts: str | None
    posts: list[dict[str, Any]] = field(default_factory=list)


class Store:
    """All mutable state of one stand-in workspace. Every public method takes the lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.channel_names: dict[str, str] = {}
        self.channels_configured = False
        self.members: dict[str, list[str]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.history: dict[str, list[Message]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.view_order: list[str] = []
        self.home_views: dict[str, dict[str, Any]] = {}
        self.files: dict[str, StoredFile] = {}
        self.triggers: dict[str, float] = {}
        self.exchanged_triggers: set[str] = set()
        self.response_urls: dict[str, ResponseUrl] = {}
        self.last_post: dict[str, float] = {}
        self._calls: list[Call] = []
        self._last_ts_us = 0
        self._counter = 0

    # ---- identifiers -------------------------------------------------------------------------------------
    def next_ts(self) -> str:
        """A message ts like ``1700000000.000100``: wall clock in microseconds, strictly increasing."""
        with self.lock:
            now_us = int(self.clock() * 1_000_000)
            self._last_ts_us = max(now_us, self._last_ts_us + 1)
            return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def next_id(self, prefix: str) -> str:
        """A fresh id such as ``F0000007`` (prefix + counter)."""
        with self.lock:
            self._counter += 1
            return f"{prefix}{self._counter:07d}"

    # ---- workspace configuration ---------------------------------------------------------------------------
    def add_channel(self, channel_id: str, name: str | None = None) -> None:
        with self.lock:
            self.channel_names[channel_id] = name or channel_id.lower()
            self.channels_configured = True
            self.history.setdefault(channel_id, [])

    def channel_known(self, channel_id: str) -> bool:
        """True if the channel exists; when no channel was configured, every channel exists."""
        with self.lock:
            return not self.channels_configured or channel_id in self.channel_names

    # ---- call log ------------------------------------------------------------------------------------------
    def record(self, call: Call) -> None:
        with self.lock:
            self._calls.append(call)

    def calls(self, method: str | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self._calls if method is None or c.method == method]

    # ---- messages ------------------------------------------------------------------------------------------
    def add_message(self, message: Message) -> None:
        with self.lock:
            self.history.setdefault(message.channel, []).append(message)

    def find_message(self, channel: str, ts: str) -> Message | None:
        with self.lock:
            return next((m for m in self.history.get(channel, []) if m.ts == ts), None)

    def remove_message(self, channel: str, ts: str) -> bool:
        with self.lock:
            msgs = self.history.get(channel, [])
            kept = [m for m in msgs if m.ts != ts]
            self.history[channel] = kept
            return len(kept) != len(msgs)

    def messages(self, channel: str, *, include_ephemeral: bool = False) -> list[Message]:
        """Copies of a channel's messages, oldest first."""
        with self.lock:
            return [
                copy.deepcopy(m) for m in self.history.get(channel, []) if include_ephemeral or m.ephemeral_to is None
            ]

    # ---- trigger ids ---------------------------------------------------------------------------------------
    def issue_trigger(self) -> str:
        """A fresh trigger_id, valid for 3 s from now."""
        with self.lock:
            self._counter += 1
            trigger = f"{self._counter}{secrets.randbelow(10**6):06d}.{TEAM_ID[1:]}.{secrets.token_hex(16)}"
            self.triggers[trigger] = self.clock()
            return trigger

    def trigger_error(self, trigger_id: Any) -> str | None:
        """None if the trigger id is usable now, else Slack's error code for it (a trigger id opens one view:
        ``exchanged_trigger_id`` once it has)."""
        with self.lock:
            issued = self.triggers.get(trigger_id) if isinstance(trigger_id, str) else None
            if issued is None:
                return "invalid_trigger_id"
            if trigger_id in self.exchanged_triggers:
                return "exchanged_trigger_id"
            if self.clock() - issued > TRIGGER_TTL_S:
                return "expired_trigger_id"
            return None

    def exchange_trigger(self, trigger_id: str) -> None:
        """Use up a trigger id (a view was opened with it)."""
        with self.lock:
            self.exchanged_triggers.add(trigger_id)

    # ---- response URLs -------------------------------------------------------------------------------------
    def issue_response_url(self, user_id: str, channel: str | None, message_ts: str | None) -> str:
        """A fresh response_url id (the server turns it into a loopback URL)."""
        with self.lock:
            rid = secrets.token_hex(12)
            self.response_urls[rid] = ResponseUrl(rid, self.clock(), user_id, channel, message_ts)
            return rid
