"""Block Kit and mrkdwn to HTML, as Slack's client would show them, for the stand-in's live page.

Everything that comes from a message is escaped first; the only markup added is ours. Supported: ``section``
(text, fields, button accessory), ``header``, ``context``, ``actions`` (buttons), ``divider``, ``image`` and, in
modals, ``input`` blocks with ``static_select``, ``radio_buttons`` and ``plain_text_input`` elements. mrkdwn:
``*bold*``, ``_italic_``, ``~strike~``, ```code```, user mentions ``<@U…>``, channel links ``<#C…|name>``, links
``<url|label>``, date tokens ``<!date^ts^format|fallback>`` (shown in UTC) and the emoji codes NPO uses.

Interactive elements carry ``data-`` attributes (``data-action-id``, ``data-value``, ``data-block-id``) that the
page's script reads; rendering never performs an action.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

__all__ = ["EMOJI", "mrkdwn_html", "render_blocks", "render_modal", "slack_unescape"]

EMOJI = {
    "red_circle": "🔴",
    "large_orange_circle": "🟠",
    "large_blue_circle": "🔵",
    "thumbsup": "👍",
    "+1": "👍",
    "no_entry": "⛔",
    "neutral_face": "😐",
    "zzz": "💤",
    "white_check_mark": "✅",
    "information_source": "ℹ️",
    "warning": "⚠️",
    "chart_with_downwards_trend": "📉",
    "chart_with_upwards_trend": "📈",
    "rotating_light": "🚨",
    "bell": "🔔",
    "wrench": "🔧",
    "x": "❌",
    "hourglass": "⌛",
    "package": "📦",
    "mute": "🔇",
}

UserName = Callable[[str], str]

_TOKEN = re.compile(r"<([^<>\n]{1,500})>")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_CODE = re.compile(r"`([^`\n]+)`")
_EMOJI = re.compile(r":([a-z0-9_+\-]{1,40}):")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _plain_name(user_id: str) -> str:
    return user_id


def _date_token(body: str) -> str:
    """``!date^1700000000^{date_short_pretty} {time}|fallback`` → ``Nov 14 22:13 UTC`` (or the fallback)."""
    spec, _, fallback = body.partition("|")
    parts = spec.split("^")
    try:
        return _e(time.strftime("%b %d %H:%M:%S UTC", time.gmtime(int(parts[1]))))
    except (IndexError, ValueError, OverflowError, OSError):  # no stamp, or one beyond the platform's time_t
        return _e(fallback or spec)


def _token_html(body: str, user_name: UserName) -> str:
    if body.startswith("@"):
        user_id, _, label = body[1:].partition("|")
        return f'<span class="mention">@{_e(label or user_name(user_id))}</span>'
    if body.startswith("#"):
        channel, _, label = body[1:].partition("|")
        return f'<span class="mention">#{_e(label or channel)}</span>'
    if body.startswith("!date^"):
        return f'<span class="date">{_date_token(body)}</span>'
    if body.startswith("!"):
        return f'<span class="mention">@{_e(body[1:].partition("|")[0])}</span>'
    url, _, label = body.partition("|")
    if re.match(r"^(https?|mailto):", url):
        return f'<a href="{_e(url)}" rel="noreferrer" target="_blank">{_e(label or url)}</a>'
    return _e(f"<{body}>")


def _inline(text: str) -> str:
    """Formatting of already-escaped text without tokens (escaping leaves ``* _ ~ ` :`` alone)."""
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep_code, text)
    text = _BOLD.sub(r"<b>\1</b>", text)
    text = _ITALIC.sub(r"<i>\1</i>", text)
    text = _STRIKE.sub(r"<s>\1</s>", text)
    text = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    text = re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)
    return text.replace("\n", "<br>")


def slack_unescape(text: str) -> str:
    """Slack's own escaping in mrkdwn text (``&amp;``, ``&lt;``, ``&gt;``) undone, as its client shows it."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mrkdwn_html(text: str, user_name: UserName = _plain_name) -> str:
    """Slack mrkdwn → safe HTML (see the module docstring for what is understood)."""
    text = text.replace("\x00", "")  # NUL marks code spans while formatting (_inline); it shows as nothing anyway
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        out.append(_inline(_e(slack_unescape(text[position : match.start()]))))
        out.append(_token_html(slack_unescape(match.group(1)), user_name))
        position = match.end()
    out.append(_inline(_e(slack_unescape(text[position:]))))
    return "".join(out)


def _text_html(obj: Any, user_name: UserName) -> str:
    """A text object (``plain_text`` or ``mrkdwn``) → HTML."""
    if not isinstance(obj, Mapping):
        return ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return mrkdwn_html(text, user_name)
    if obj.get("emoji", True):
        return _inline_emoji(_e(text)).replace("\n", "<br>")
    return _e(text).replace("\n", "<br>")


def _inline_emoji(text: str) -> str:
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def _button(element: Mapping[str, Any], block_id: str, user_name: UserName, enabled: bool) -> str:
    style = element.get("style")
    cls = "btn" + (f" btn-{style}" if style in ("primary", "danger") else "")
    label = _text_html(element.get("text"), user_name) or _e(element.get("action_id", "?"))
    attrs = {
        "class": cls,
        "type": "button",
        "data-action-id": element.get("action_id", ""),
        "data-block-id": block_id,
        "data-value": element.get("value", ""),
    }
    html_attrs = " ".join(f'{k}="{_e(v)}"' for k, v in attrs.items())
    return f"<button {html_attrs}{'' if enabled else ' disabled'}>{label}</button>"


def _option_label(option: Any, user_name: UserName) -> str:
    return _text_html(option.get("text"), user_name) if isinstance(option, Mapping) else ""


def _input_element(block_id: str, element: Mapping[str, Any], state: Mapping[str, Any], user_name: UserName) -> str:
    kind = element.get("type")
    action_id = str(element.get("action_id", ""))
    common = f'data-block-id="{_e(block_id)}" data-action-id="{_e(action_id)}" data-kind="{_e(kind)}"'
    current = state.get(action_id) if isinstance(state.get(action_id), Mapping) else {}
    if kind == "static_select":
        selected = (current.get("selected_option") or {}).get("value") if current else None
        placeholder = _text_html(element.get("placeholder"), user_name) or "Choose…"
        options = [f'<option value="">{placeholder}</option>']
        for option in element.get("options") or []:
            if isinstance(option, Mapping):
                value = str(option.get("value", ""))
                chosen = " selected" if value == selected else ""
                options.append(f'<option value="{_e(value)}"{chosen}>{_option_label(option, user_name)}</option>')
        return f"<select {common}>{''.join(options)}</select>"
    if kind == "radio_buttons":
        items = []
        for option in element.get("options") or []:
            if isinstance(option, Mapping):
                value = str(option.get("value", ""))
                items.append(
                    f'<label><input type="radio" name="{_e(block_id)}" value="{_e(value)}" {common}> '
                    f"{_option_label(option, user_name)}</label>"
                )
        return '<div class="radios">' + "".join(items) + "</div>"
    if kind == "plain_text_input":
        value = _e((current or {}).get("value") or element.get("initial_value") or "")
        limit = f' maxlength="{int(element["max_length"])}"' if isinstance(element.get("max_length"), int) else ""
        placeholder = _e(_plain(element.get("placeholder")))
        if element.get("multiline"):
            return f'<textarea rows="3" {common}{limit} placeholder="{placeholder}">{value}</textarea>'
        return f'<input type="text" {common}{limit} value="{value}" placeholder="{placeholder}">'
    return f'<div class="meta">(unsupported input: {_e(kind)})</div>'


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _plain(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, Mapping) else ""


def render_blocks(
    blocks: Any,
    *,
    user_name: UserName = _plain_name,
    interactive: bool = True,
    state: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> str:
    """A list of blocks → HTML. ``state`` (``{block_id: {action_id: value}}``) pre-fills modal inputs and
    ``errors`` (``{block_id: message}``) shows validation errors under them, as Slack does."""
    parts: list[str] = []
    values = state or {}
    problems = errors or {}
    for index, block in enumerate(blocks if isinstance(blocks, list) else []):
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        block_id = str(block.get("block_id") or f"b{index}")
        attr = f'class="block block-{_e(kind)}" data-block-id="{_e(block_id)}"'
        if kind == "header":
            parts.append(f"<div {attr}><h3>{_text_html(block.get('text'), user_name)}</h3></div>")
        elif kind == "section":
            inner = f'<div class="text">{_text_html(block.get("text"), user_name)}</div>' if block.get("text") else ""
            fields = [f'<div class="field">{_text_html(f, user_name)}</div>' for f in block.get("fields") or []]
            if fields:
                inner += '<div class="fields">' + "".join(fields) + "</div>"
            accessory = block.get("accessory")
            if isinstance(accessory, Mapping) and accessory.get("type") == "button":
                inner += _button(accessory, block_id, user_name, interactive)
            parts.append(f"<div {attr}>{inner}</div>")
        elif kind == "context":
            items = []
            for element in block.get("elements") or []:
                if isinstance(element, Mapping) and element.get("type") == "image":
                    items.append(f'<img src="{_e(element.get("image_url", ""))}" alt="{_e(element.get("alt_text"))}">')
                else:
                    items.append(f"<span>{_text_html(element, user_name)}</span>")
            parts.append(f"<div {attr}>{' '.join(items)}</div>")
        elif kind == "actions":
            buttons = [
                _button(el, block_id, user_name, interactive)
                for el in block.get("elements") or []
                if isinstance(el, Mapping) and el.get("type") == "button"
            ]
            parts.append(f"<div {attr}>{''.join(buttons)}</div>")
        elif kind == "divider":
            parts.append(f"<hr {attr}>")
        elif kind == "image":
            alt = _e(block.get("alt_text", ""))
            parts.append(f'<div {attr}><img src="{_e(block.get("image_url", ""))}" alt="{alt}"></div>')
        elif kind == "input":
            element = _mapping(block.get("element"))
            optional = ' <span class="meta">(optional)</span>' if block.get("optional") else ""
            label = f"<label>{_text_html(block.get('label'), user_name)}{optional}</label>"
            block_state = _mapping(values.get(block_id))
            control = _input_element(block_id, element, block_state, user_name)
            error = f'<div class="error">{_e(problems[block_id])}</div>' if block_id in problems else ""
            parts.append(f"<div {attr}>{label}{control}{error}</div>")
    return "".join(parts)


def render_modal(
    view: Mapping[str, Any], *, user_name: UserName = _plain_name, errors: Mapping[str, str] | None = None
) -> str:
    """A modal view (title, blocks, Cancel / Submit buttons) → HTML for the page's dialog."""
    values = _mapping(_mapping(view.get("state")).get("values"))
    title = _text_html(view.get("title"), user_name)
    submit = _text_html(view.get("submit"), user_name) or "Submit"
    close = _text_html(view.get("close"), user_name) or "Cancel"
    body = render_blocks(view.get("blocks"), user_name=user_name, state=values, errors=errors)
    view_id = _e(view.get("id", ""))
    return (
        f'<div class="modal" data-view-id="{view_id}"><div class="modal-title">{title}</div>'
        f'<div class="modal-body">{body}</div><div class="modal-actions">'
        f'<button type="button" class="btn modal-close" data-view-id="{view_id}">{close}</button>'
        f'<button type="button" class="btn btn-primary modal-submit" data-view-id="{view_id}">{submit}</button>'
        "</div></div>"
    )
