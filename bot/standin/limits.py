"""Slack's Block Kit and message limits, checked the way Slack's API checks them.

Each check returns a list of problems in Slack's ``response_metadata.messages`` style
(``"[ERROR] … [json-pointer:/blocks/0/text/text]"``); an empty list means the payload is acceptable. The
caller turns a non-empty list into Slack's error code (``invalid_blocks`` for messages, ``invalid_arguments``
for views). This module checks only the limits listed below; it is not a full Block Kit schema.

Sources: Slack's Block Kit reference (text objects 1–3000 characters; context elements are text objects or images;
block and element types: only those Slack knows, as slack_sdk's models list them;
option text 75 and value 150, at most 100 options; placeholder 150; a modal with an input block needs ``submit``;
text inputs only in input blocks, buttons, overflow menus and images never there; ``emoji`` only on ``plain_text``)
and, for the aggregate ``msg_blocks_too_long``, which Slack does not document, the reports in bolt-js#2509: about
13,000 characters of text across a message's blocks — the stand-in refuses above ``MAX_BLOCKS_TEXT_CHARS`` =
12,000, a margin below the reported figure.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = [
    "MAX_ALT_TXT",
    "MAX_BLOCKS_TEXT_CHARS",
    "MAX_MESSAGE_BLOCKS",
    "MAX_TEXT_CHARS",
    "MAX_VIEW_BLOCKS",
    "MAX_VIEW_BYTES",
    "blocks_text_chars",
    "check_blocks",
    "check_view",
    "view_bytes",
]

MAX_MESSAGE_BLOCKS: Final = 50
MAX_VIEW_BLOCKS: Final = 100
# A view larger than 250 kB is refused (views.publish: view_too_large). Counted on the view as slack_sdk sends it,
# JSON with non-ASCII characters escaped: how Slack counts is not documented, and this is the larger count.
MAX_VIEW_BYTES: Final = 250_000
# A message's `text` (chat.postMessage, chat.update, and a shared file's `initial_comment`, which Slack posts as the
# message's text): Slack truncates "messages containing more than 40,000 characters" (chat.postMessage reference,
# changelog 2018-04); the stand-in refuses them with msg_too_long, so a text that outgrows it is seen in tests.
MAX_TEXT_CHARS: Final = 40_000
MAX_ALT_TXT: Final = 1000  # files.getUploadURLExternal ``alt_txt``; longer gives alt_txt_too_large
MAX_BLOCKS_TEXT_CHARS: Final = 12_000  # text across a message's blocks; more gives msg_blocks_too_long (see above)
MAX_SECTION_TEXT: Final = 3000
MAX_TEXT_OBJECT: Final = 3000  # any text object (a context element's, for one)
MAX_SECTION_FIELDS: Final = 10
MAX_FIELD_TEXT: Final = 2000
MAX_HEADER_TEXT: Final = 150
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_ACTIONS_ELEMENTS: Final = 25
MAX_BUTTON_TEXT: Final = 75
MAX_BUTTON_VALUE: Final = 2000
MAX_URL: Final = 3000
MAX_ID: Final = 255  # action_id, block_id, callback_id, external_id
MAX_VIEW_TITLE: Final = 24  # title, submit, close
MAX_PRIVATE_METADATA: Final = 3000
MAX_LABEL: Final = 2000
MAX_PLACEHOLDER: Final = 150
MAX_OPTIONS: Final = 100
MAX_OPTION_TEXT: Final = 75
MAX_OPTION_VALUE: Final = 150
BUTTON_STYLES: Final = frozenset({"primary", "danger"})
# The block and element types Slack knows (those slack_sdk's models parse); any other type is refused.
BLOCK_TYPES: Final = frozenset({
    "actions", "alert", "auth_provider", "call", "card", "carousel", "container", "context", "context_actions",
    "divider", "file", "header", "image", "input", "markdown", "plan", "rich_text", "section", "table", "task_card",
    "video",
})  # fmt: skip
ELEMENT_TYPES: Final = frozenset({
    "button", "channels_select", "checkboxes", "conversations_select", "datepicker", "datetimepicker",
    "email_text_input", "external_select", "feedback_buttons", "file_input", "icon_button", "image",
    "multi_channels_select", "multi_conversations_select", "multi_external_select", "multi_static_select",
    "multi_users_select", "number_input", "overflow", "plain_text_input", "radio_buttons", "rich_text_input",
    "static_select", "timepicker", "url_text_input", "users_select", "workflow_button",
})  # fmt: skip
TEXT_TYPES: Final = frozenset({"plain_text", "mrkdwn"})
# Elements a person types into: only an input block holds them. An actions block holds interactive elements
# (buttons, menus, pickers) and a section's accessory one of those or an image; Slack answers invalid_blocks for a
# plain_text_input in an actions block (python-slack-sdk#1257).
INPUT_ONLY_ELEMENTS: Final = frozenset(
    {"email_text_input", "file_input", "number_input", "plain_text_input", "url_text_input"}
)
# Elements an input block cannot hold: its element is one a person fills in or picks (the Block Kit reference's list
# for the input block; slack_sdk types it ``InputInteractiveElement``, which none of these is).
NOT_INPUT_ELEMENTS: Final = frozenset(
    {"button", "feedback_buttons", "icon_button", "image", "overflow", "workflow_button"}
)


def _err(message: str, pointer: str) -> str:
    return f"[ERROR] {message} [json-pointer:{pointer}]"


def _text_object(obj: Any, pointer: str, *, max_len: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [_err("must be a text object", pointer)]
    kind = obj.get("type")
    allowed = {"plain_text"} if plain_only else TEXT_TYPES
    if kind not in allowed:
        return [_err(f"must be one of {sorted(allowed)}", f"{pointer}/type")]
    if kind == "mrkdwn" and "emoji" in obj:  # the text object reference: emoji is only usable with plain_text
        return [_err("failed to match all allowed schemas", pointer)]
    text = obj.get("text")
    if not isinstance(text, str) or len(text) < 1:
        return [_err("must be more than 0 characters", f"{pointer}/text")]
    if len(text) > max_len:
        return [_err(f"must be less than {max_len + 1} characters", f"{pointer}/text")]
    return []


def _id(value: Any, pointer: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str) or not value:
        return [_err("must be a non-empty string", pointer)]
    if len(value) > MAX_ID:
        return [_err(f"must be less than {MAX_ID + 1} characters", pointer)]
    return []


def _option(option: Any, pointer: str, *, plain_only: bool) -> list[str]:
    if not isinstance(option, dict):
        return [_err("must be an option object", pointer)]
    problems = _text_object(option.get("text"), f"{pointer}/text", max_len=MAX_OPTION_TEXT, plain_only=plain_only)
    value = option.get("value")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_OPTION_VALUE:
        problems.append(_err(f"must be 1 to {MAX_OPTION_VALUE} characters", f"{pointer}/value"))
    if "description" in option:
        problems += _text_object(
            option["description"], f"{pointer}/description", max_len=MAX_OPTION_TEXT, plain_only=plain_only
        )
    return problems


def _options(el: dict[str, Any], pointer: str) -> list[str]:
    """Options of a select, radio buttons, checkboxes or overflow menu: ≤ 100, text ≤ 75, value ≤ 150."""
    options = el.get("options")
    if options is None:
        return []
    if not isinstance(options, list) or not 1 <= len(options) <= MAX_OPTIONS:
        return [_err(f"must provide 1 to {MAX_OPTIONS} items", f"{pointer}/options")]
    plain_only = el["type"] not in {"radio_buttons", "checkboxes"}  # those two also take mrkdwn option text
    problems: list[str] = []
    for i, option in enumerate(options):
        problems += _option(option, f"{pointer}/options/{i}", plain_only=plain_only)
    return problems


def _context_element(el: Any, pointer: str) -> list[str]:
    """A context block holds text objects (1–3000 characters) and images, nothing else."""
    if isinstance(el, dict) and el.get("type") == "image":
        return []
    return _text_object(el, pointer, max_len=MAX_TEXT_OBJECT)


def _element(el: Any, pointer: str, action_ids: set[str], *, in_input: bool = False) -> list[str]:
    """An element of an actions block or a section's accessory, or (``in_input``) an input block's element."""
    if not isinstance(el, dict) or not isinstance(el.get("type"), str):
        return [_err("must be an element object with a type", pointer)]
    if el["type"] not in ELEMENT_TYPES:
        return [_err(f"unsupported element type {el['type']!r}", f"{pointer}/type")]
    if el["type"] in (NOT_INPUT_ELEMENTS if in_input else INPUT_ONLY_ELEMENTS):
        where = "an input block" if in_input else "an actions block or an accessory"
        return [_err(f"{el['type']} is not allowed in {where}", f"{pointer}/type")]
    problems = _id(el.get("action_id"), f"{pointer}/action_id")
    if "placeholder" in el:
        problems += _text_object(el["placeholder"], f"{pointer}/placeholder", max_len=MAX_PLACEHOLDER, plain_only=True)
    problems += _options(el, pointer)
    action_id = el.get("action_id")
    if isinstance(action_id, str):
        if action_id in action_ids:
            problems.append(_err(f"action_id {action_id!r} already exists", f"{pointer}/action_id"))
        action_ids.add(action_id)
    if el["type"] == "button":
        problems += _text_object(el.get("text"), f"{pointer}/text", max_len=MAX_BUTTON_TEXT, plain_only=True)
        value = el.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE):
            problems.append(_err(f"must be less than {MAX_BUTTON_VALUE + 1} characters", f"{pointer}/value"))
        url = el.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > MAX_URL):
            problems.append(_err(f"must be less than {MAX_URL + 1} characters", f"{pointer}/url"))
        style = el.get("style")
        if style is not None and style not in BUTTON_STYLES:
            problems.append(_err(f"must be one of {sorted(BUTTON_STYLES)}", f"{pointer}/style"))
    return problems


def _block(block: Any, pointer: str, block_ids: set[str], action_ids: set[str]) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [_err("must be a block object with a type", pointer)]
    if block["type"] not in BLOCK_TYPES:
        return [_err(f"unsupported block type {block['type']!r}", f"{pointer}/type")]
    problems = _id(block.get("block_id"), f"{pointer}/block_id")
    block_id = block.get("block_id")
    if isinstance(block_id, str):
        if block_id in block_ids:
            problems.append(_err(f"block_id {block_id!r} already exists", f"{pointer}/block_id"))
        block_ids.add(block_id)
    kind = block["type"]
    if kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append(_err("must provide text or fields", pointer))
        if "text" in block:
            problems += _text_object(block["text"], f"{pointer}/text", max_len=MAX_SECTION_TEXT)
        fields = block.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                problems.append(_err(f"must provide no more than {MAX_SECTION_FIELDS} items", f"{pointer}/fields"))
            else:
                for i, field in enumerate(fields):
                    problems += _text_object(field, f"{pointer}/fields/{i}", max_len=MAX_FIELD_TEXT)
        if "accessory" in block:
            problems += _element(block["accessory"], f"{pointer}/accessory", action_ids)
    elif kind == "header":
        problems += _text_object(block.get("text"), f"{pointer}/text", max_len=MAX_HEADER_TEXT, plain_only=True)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            problems.append(_err(f"must provide 1 to {MAX_CONTEXT_ELEMENTS} items", f"{pointer}/elements"))
        else:
            for i, el in enumerate(elements):
                problems += _context_element(el, f"{pointer}/elements/{i}")
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
            problems.append(_err(f"must provide 1 to {MAX_ACTIONS_ELEMENTS} items", f"{pointer}/elements"))
        else:
            for i, el in enumerate(elements):
                problems += _element(el, f"{pointer}/elements/{i}", action_ids)
    elif kind == "input":
        problems += _text_object(block.get("label"), f"{pointer}/label", max_len=MAX_LABEL, plain_only=True)
        problems += _element(block.get("element"), f"{pointer}/element", action_ids, in_input=True)
    return problems


def check_blocks(
    blocks: Any, *, max_blocks: int, pointer: str = "/blocks", action_ids_unique_per_block: bool = False
) -> list[str]:
    """Check a ``blocks`` list against Slack's limits: count, ids (≤ 255, unique), text sizes, buttons.

    ``max_blocks`` is 50 for messages and 100 for modals and App Home. action_ids must be unique across the
    whole message (stricter than Slack, which asks for uniqueness within a block, so that a click identifies one
    button), or only within each block when ``action_ids_unique_per_block`` (views: state is keyed by block).
    Returns the problems found (empty if none).
    """
    if not isinstance(blocks, list):
        return [_err("must be an array", pointer)]
    if len(blocks) > max_blocks:
        return [_err(f"must provide no more than {max_blocks} items", pointer)]
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    problems: list[str] = []
    for i, block in enumerate(blocks):
        if action_ids_unique_per_block:
            action_ids = set()
        problems += _block(block, f"{pointer}/{i}", block_ids, action_ids)
    return problems


def blocks_text_chars(blocks: Any) -> int:
    """The characters of every text object's ``text`` anywhere in ``blocks`` (what ``msg_blocks_too_long`` counts,
    as far as it is known)."""
    if isinstance(blocks, list):
        return sum(blocks_text_chars(b) for b in blocks)
    if not isinstance(blocks, dict):
        return 0
    own = len(blocks["text"]) if blocks.get("type") in TEXT_TYPES and isinstance(blocks.get("text"), str) else 0
    return own + sum(blocks_text_chars(v) for v in blocks.values() if isinstance(v, (dict, list)))


def view_bytes(view: Any) -> int:
    """The size of ``view`` as JSON with non-ASCII characters escaped (what ``view_too_large`` is checked on)."""
    return len(json.dumps(view))


def check_view(view: Any) -> list[str]:
    """Check a modal or App Home view: type, title/submit/close (≤ 24, plain_text), blocks (≤ 100), ids, metadata.

    Returns the problems found (empty if none).
    """
    if not isinstance(view, dict):
        return [_err("must be a view object", "/view")]
    kind = view.get("type")
    if kind not in {"modal", "home"}:
        return [_err("must be one of ['home', 'modal']", "/view/type")]
    problems: list[str] = []
    if kind == "modal" and "title" not in view:
        problems.append(_err("is required for modals", "/view/title"))
    blocks = view.get("blocks")
    has_input = isinstance(blocks, list) and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
    if kind == "modal" and has_input and "submit" not in view:
        problems.append(_err("is required when the view has an input block", "/view/submit"))
    for key in ("title", "submit", "close"):
        if key in view:
            problems += _text_object(view[key], f"/view/{key}", max_len=MAX_VIEW_TITLE, plain_only=True)
    metadata = view.get("private_metadata")
    if metadata is not None and (not isinstance(metadata, str) or len(metadata) > MAX_PRIVATE_METADATA):
        problems.append(_err(f"must be less than {MAX_PRIVATE_METADATA + 1} characters", "/view/private_metadata"))
    problems += _id(view.get("callback_id"), "/view/callback_id")
    problems += _id(view.get("external_id"), "/view/external_id")
    problems += check_blocks(
        view.get("blocks"), max_blocks=MAX_VIEW_BLOCKS, pointer="/view/blocks", action_ids_unique_per_block=True
    )
    return problems
