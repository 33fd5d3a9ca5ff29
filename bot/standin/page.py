"""The stand-in's web page: channels and their messages as plain, escaped HTML (no JavaScript).

When the stand-in knows the bot's request URL and signing secret, buttons are small forms that POST to
``/ui/click`` and the stand-in sends a signed click to the bot; otherwise buttons are shown as text.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import quote

from bot.standin.blockkit import slack_unescape
from bot.standin.store import Message, Store

__all__ = ["render_page"]

_DATE = re.compile(r"<!date\^[^<>|\n]*\|([^<>\n]*)>")

_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:1em auto}"
    ".msg{border:1px solid #ccc;border-radius:4px;padding:.5em;margin:.5em 0}"
    ".meta{color:#666;font-size:.8em}.btn{display:inline-block;margin:.2em}"
    ".eph{background:#f6f6f6}pre{white-space:pre-wrap;margin:.2em 0}"
)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _shown(mrkdwn: str) -> str:
    """mrkdwn as Slack's client shows it: a date token ``<!date^…|fallback>`` as its fallback text, and Slack's
    ``&amp;``/``&lt;``/``&gt;`` undone."""
    return slack_unescape(_DATE.sub(lambda m: m.group(1), mrkdwn))


def _text(obj: Any) -> str:
    """A text object's text as Slack's client shows it: mrkdwn with Slack's ``&amp;``/``&lt;``/``&gt;`` undone,
    plain_text as sent."""
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return _shown(text) if obj.get("type") == "mrkdwn" else text


def _button(element: dict[str, Any], message: Message, user: str | None, clickable: bool) -> str:
    label = _e(_text(element.get("text")) or element.get("action_id", "?"))
    style = f" ({_e(element['style'])})" if element.get("style") else ""
    if not clickable or user is None or element.get("type") != "button":
        return f'<span class="btn">[{label}]{style}</span>'
    fields = {"channel": message.channel, "ts": message.ts, "action_id": element.get("action_id", ""), "user": user}
    hidden = "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items())
    return f'<form class="btn" method="post" action="/ui/click">{hidden}<button>{label}</button>{style}</form>'


def _blocks(message: Message, user: str | None, clickable: bool) -> str:
    parts: list[str] = []
    for block in message.blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in {"section", "header"}:
            texts = [_text(block.get("text"))] + [_text(f) for f in block.get("fields") or []]
            parts.append("".join(f"<pre>{_e(t)}</pre>" for t in texts if t))
            if isinstance(block.get("accessory"), dict):
                parts.append(_button(block["accessory"], message, user, clickable))
        elif kind == "context":
            parts.append(f'<div class="meta">{_e(" · ".join(_text(el) for el in block.get("elements") or []))}</div>')
        elif kind == "actions":
            buttons = [
                _button(el, message, user, clickable) for el in block.get("elements") or [] if isinstance(el, dict)
            ]
            parts.append("<div>" + "".join(buttons) + "</div>")
        elif kind == "divider":
            parts.append("<hr>")
        elif kind == "image":
            parts.append(f'<img src="{_e(block.get("image_url", ""))}" alt="{_e(block.get("alt_text", ""))}">')
    return "".join(parts)


def _message(message: Message, user: str | None, clickable: bool) -> str:
    cls = "msg eph" if message.ephemeral_to else "msg"
    meta = f"ts {message.ts} · from {message.user}"
    if message.edited_ts:
        meta += " · edited"
    if message.ephemeral_to:
        meta += f" · only visible to {message.ephemeral_to}"
    if message.thread_ts:
        meta += f" · in thread {message.thread_ts}"
    files = "".join(
        f'<div><a href="/files/{quote(str(f.get("id", "")))}">{_e(f.get("title") or f.get("name"))}</a></div>'
        for f in message.files
    )
    text = f"<pre>{_e(_shown(message.text))}</pre>" if message.text else ""  # message text is mrkdwn
    return (
        f'<div class="{cls}"><div class="meta">{_e(meta)}</div>{text}{_blocks(message, user, clickable)}{files}</div>'
    )


def render_page(store: Store, *, acting_user: str | None, clickable: bool, notice: str = "") -> str:
    """The whole page: a user picker (when clicks are possible), then every channel and its messages."""
    with store.lock:
        channels = sorted(set(store.history) | set(store.channel_names))
        users = sorted(store.users)
        sections: list[str] = []
        for channel in channels:
            name = store.channel_names.get(channel, channel)
            msgs = store.messages(channel, include_ephemeral=True)
            body = "".join(_message(m, acting_user, clickable) for m in msgs) or "<p><em>no messages</em></p>"
            sections.append(f"<section><h2>#{_e(name)} <small>{_e(channel)}</small></h2>{body}</section>")
    picker = ""
    if clickable and users:
        links = " ".join(
            f'<a href="/?as={quote(u)}">{"<b>" + _e(u) + "</b>" if u == acting_user else _e(u)}</a>' for u in users
        )
        picker = f"<p>Click as: {links}</p>"
    note = f"<p><strong>{_e(notice)}</strong></p>" if notice else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>NPO Slack stand-in</title>'
        f"<style>{_STYLE}</style></head><body><h1>NPO Slack stand-in</h1>{note}{picker}"
        + ("".join(sections) or "<p><em>no channels yet</em></p>")
        + "</body></html>"
    )
