"""Decoding JSON without losing a value to a key that appears twice in one object.

``json.loads`` keeps the last value of a repeated key (``{"id": "a", "id": "b"}`` decodes as ``{"id": "b"}``),
silently: one of the two values the sender gave is lost. :func:`loads` decodes the same values, each object that
held a key twice marked (:class:`KeyTwice`), and :func:`key_twice` names where one is. The HTTP routes
(:func:`bot.http.body.parse_json`) refuse such a body; the poller (:mod:`bot.ingest.poller`) refuses the entry that
holds one, or the whole answer when one is outside its entries.
"""

from __future__ import annotations

import functools
import json
from typing import Any

KEY_TWICE = "this key appears twice in one object (one of its values would be lost)"


class KeyTwice(dict[str, Any]):
    """A JSON object in which ``key`` appears more than once (holding the last value, as ``json`` keeps);
    ``order`` counts such objects in the order they end in the text (an inner one before the one holding it)."""

    key = ""
    order = 0


def _object(found: list[KeyTwice], pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a dict; one in which a key appears twice is marked (:class:`KeyTwice`) and listed
    in ``found``."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = KeyTwice(obj)
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            break
        seen.add(key)
    marked.order = len(found)
    found.append(marked)
    return marked


def loads(raw: bytes | str) -> tuple[Any, list[KeyTwice]]:
    """``json.loads(raw)`` — the same value, raising the same exceptions — and the objects in which a key appears
    twice (empty for most JSON), in the order they end in the text. An object that the decoder then dropped (the
    first value of a repeated key) is listed too: look for them in the value with :func:`key_twice`."""
    twice: list[KeyTwice] = []
    value = json.loads(raw, object_pairs_hook=functools.partial(_object, twice))
    return value, twice


def key_twice(value: Any) -> str | None:
    """The field (``[1].labels.k``, from ``value``; ``k`` for ``value``'s own key) of a key that appears twice in an
    object of ``value`` decoded by :func:`loads` — the first such object to end in the text — or None."""
    found: tuple[int, str] | None = None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, KeyTwice) and (found is None or item.order < found[0]):
            found = (item.order, f"{path}.{item.key}" if path else item.key)
        if isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in item.items())
    if found is None:
        return None
    return found[1].encode("utf-8", "backslashreplace").decode()  # a key may hold a lone surrogate
