"""Text helpers for Slack surfaces: escaping and truncation that never fails and never splits a character.

Slack counts characters, not bytes; Python strings are sequences of code points, so slicing never cuts a
multi-byte UTF-8 sequence. Truncation also avoids leaving half of a surrogate pair or a dangling zero-width
joiner at the cut, and never lets an escape sequence (``&amp;``) be cut in half.
"""

from __future__ import annotations

from datetime import UTC, datetime

ELLIPSIS = "…"
_ZWJ = "\u200d"
_VARIATION_SELECTORS = {"\ufe0e", "\ufe0f"}
# Bidi embeddings, overrides and isolates (LRE RLE PDF LRO RLO, LRI RLI FSI PDI): an unclosed one in a name
# reorders the rest of its line (the action, the id) as the reader sees it. Right-to-left letters need none of them.
_BIDI_CONTROLS = str.maketrans("", "", "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Control characters (C0 but line feed and tab, DEL, C1, the line and paragraph separators) shown as their escapes
# (``\x07``, ``\x1b``, ``\u2028``): never a bell, a terminal escape or a line break of their own in Slack text.
_SHOWN_CONTROLS = str.maketrans(
    {
        c: f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
        for c in [*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), "\u2028", "\u2029"]
        if c not in "\n\t"
    }
)
# The same for text that must stay on one line (a label in a context line): line feed and tab too.
_ONE_LINE_CONTROLS = str.maketrans({"\n": "\\n", "\t": "\\t"}) | _SHOWN_CONTROLS


def escape(text: str, *, one_line: bool = False) -> str:
    """Escape ``&``, ``<`` and ``>`` for mrkdwn (Slack's only required escapes), so user text cannot inject
    mentions, drop bidi embedding / override / isolate controls, so it cannot reorder the text around it, and show
    other control characters as their escapes (``\\x1b``); ``one_line``: line feeds and tabs too."""
    if not text.isprintable():  # the common case is printable: nothing to look up
        if not text.isascii():
            text = text.translate(_BIDI_CONTROLS)
        text = text.translate(_ONE_LINE_CONTROLS if one_line else _SHOWN_CONTROLS)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escaped(text: str, limit: int, *, one_line: bool = False) -> str:
    """``text`` escaped for mrkdwn (:func:`escape`), then shortened to ``limit`` characters with a visible ``…`` (an
    escape such as ``&amp;`` is never cut in half), so a name full of ``&``, ``<`` or ``>`` still takes at most
    ``limit``."""
    return truncate(escape(text, one_line=one_line), limit)


def truncate(text: str, limit: int, *, suffix: str = ELLIPSIS) -> str:
    """``text`` if it has at most ``limit`` characters, else a prefix plus ``suffix`` of exactly ≤ ``limit``.

    Never raises for any ``limit`` ≥ 1; strips a trailing zero-width joiner or variation selector left at the cut.
    """
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(suffix))
    head = text[:keep]
    while head and (head[-1] == _ZWJ or head[-1] in _VARIATION_SELECTORS or 0xD800 <= ord(head[-1]) <= 0xDBFF):
        head = head[:-1]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:] and len(head) - amp <= 5:
        head = head[:amp]  # do not cut an &amp; / &lt; / &gt; escape in half
    return (head + suffix)[:limit] if limit >= len(suffix) else head[:limit]


def plain(text: str, limit: int) -> dict[str, object]:
    """A ``plain_text`` object (emoji on), truncated to ``limit``; empty input becomes a single space-free dash."""
    return {"type": "plain_text", "text": truncate(text or "-", limit), "emoji": True}


def mrkdwn(text: str, limit: int = 3000) -> dict[str, str]:
    """A ``mrkdwn`` text object, truncated to ``limit`` (section text: 3000; field: 2000; context: 3000)."""
    return {"type": "mrkdwn", "text": truncate(text or "-", limit)}


def duration(seconds: float | None) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``6.0 h``, ``3.5 d``, ``2.1 y`` from a year (365 days) on, and
    ``over 1,000 y`` past that (a lead of 1e300 s is not a number of days anyone reads); ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    if seconds < _YEAR_S:
        return f"{seconds / 86_400:.1f} d"
    if seconds < 1000 * _YEAR_S:
        return f"{seconds / _YEAR_S:.1f} y"
    return "over 1,000 y"


_YEAR_S = 365 * 86_400


def slack_time(at: float) -> str:
    """``at`` (Unix seconds) as Slack shows a date in each reader's own time zone, with the UTC time as the text
    of clients (and logs, and notifications) that do not: ``<!date^…|2025-03-31 10:00 UTC>``. A time outside the
    calendar's years 1–9999 (an outcome's ``at`` has no lower bound) falls back to the Unix time itself."""
    try:
        utc = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError):
        utc = str(int(at))
    return f"<!date^{int(at)}^{{date_short_pretty}} {{time}}|{utc}>"


def outcome_source(source: str) -> str:
    """Who or what reported an outcome, as a message shows it: a person who clicked an outcome button
    (``slack:U0123``) as their mention, which Slack shows as their name; any other source (``alertmanager``,
    ``api``) as it is."""
    if source.startswith("slack:") and len(source) > 6:
        return f"<@{escape(source[6:])}>"
    return escape(source)
