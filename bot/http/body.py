"""Reading request bodies with a size limit (gzip-decoded ones included) and an idle timeout, and JSON error answers
that name the field at fault."""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from bot.ingest import keys_twice
from bot.ingest.records import utf8_encodable


class BodyTooLarge(Exception):
    """The request body is larger than the configured limit."""


class BodyTimeout(Exception):
    """The client sent nothing of its body for the idle timeout (a stalled or lying client: a ``Content-Length``
    longer than what it sends, a chunked body never finished)."""


class ClientGone(Exception):
    """The client disconnected before its body arrived (its timeout): nothing to answer, nothing done."""


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    """A JSON error answer: ``{"error": message, "field": field}``."""
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def timed_out(timeout_s: float) -> JSONResponse:
    """408 for :class:`BodyTimeout`; the connection is closed after it (the rest of the body may still come)."""
    response = error(408, f"no part of the request body arrived for {timeout_s:g} s", "(body)")
    response.headers["Connection"] = "close"
    return response


async def read_body(request: Request, limit: int, idle_timeout_s: float) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (by ``Content-Length`` first, then while streaming), and
    giving up (:class:`BodyTimeout`) when ``idle_timeout_s`` pass without any of it arriving: the server has no
    timeout of its own once the headers are in, so a client that sends them and then nothing would hold its
    request open for good — and a graceful stop (SIGTERM), which waits for every request in flight, with it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    try:
        while True:
            with anyio.move_on_after(idle_timeout_s) as waited:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
            if waited.cancelled_caught:
                raise BodyTimeout
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    finally:
        await stream.aclose()
    return b"".join(chunks)


class BadGzip(ValueError):
    """A body sent with ``Content-Encoding: gzip`` that is not valid gzip, or is cut short."""


def gunzip(data: bytes, limit: int) -> bytes:
    """The decoded body of ``Content-Encoding: gzip`` (every member), refusing more than ``limit`` decoded bytes
    (:class:`BodyTooLarge`) as soon as they are reached: memory stays within the limit whatever the compression
    ratio, so a small body that would inflate to gigabytes (a "gzip bomb") is refused without being inflated."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer, not zlib's
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))  # ≥ 1: a max_length of 0 would mean no limit
        except zlib.error as exc:
            raise BadGzip(f"the body is not valid gzip ({exc})") from None
        if len(out) > limit:
            raise BodyTooLarge
        if not inflater.eof:
            raise BadGzip("the gzip body is cut short (no end of stream)")
        # a further gzip member (concatenated files), past any zero bytes padding this one (as gzip -d skips them)
        rest = inflater.unused_data.lstrip(b"\0")
    return bytes(out)


class BadJson(ValueError):
    """The body is not acceptable JSON; ``field`` names where (``(body)`` for the body as a whole)."""

    def __init__(self, message: str, field: str = "(body)") -> None:
        super().__init__(message)
        self.field = field


# A lone UTF-16 surrogate can only come from a \uD800–\uDFFF escape or from UTF-8-encoded surrogate bytes (which
# ``json.loads`` lets through); only bodies containing either are walked.
_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body; raises :class:`BadJson` (a ``ValueError``) with a short message.

    Refused besides invalid JSON: nesting deeper than the decoder's recursion limit (``RecursionError`` inside
    ``json``), strings holding a lone UTF-16 surrogate (``"\\ud800"``), which no UTF-8 column, log line or
    Slack message can carry, and an object holding a key twice (``{"id": "a", "id": "b"}``: decoders keep one of
    the two values, silently; the field named is where, e.g. ``[1].confidence``).
    """
    if not raw.strip():
        raise BadJson("the body is empty")
    try:  # UTF-8 only (RFC 8259; json.loads of bytes would also take UTF-16 and UTF-32), a byte-order mark allowed
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadJson(f"the body must be UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not)") from None
    if "\x00" in text:  # UTF-16 or UTF-32 text that happens to be valid UTF-8 (NUL between ASCII letters)
        raise BadJson("the body must be UTF-8 (it holds NUL characters: UTF-16 or UTF-32?)")
    try:
        value, twice = keys_twice.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadJson(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise BadJson("invalid JSON: nested too deeply") from None
    except ValueError:  # an integer of more than 4,300 digits (Python's limit on reading one)
        raise BadJson("invalid JSON: a number is too long") from None
    if twice:
        where = keys_twice.key_twice(value)
        raise BadJson(f"{keys_twice.KEY_TWICE}: send it once", "(body)" if where is None else where)
    if _SURROGATE_HINT.search(raw):
        where = _lone_surrogate(value)
        if where is not None:
            raise BadJson("a string holds a lone UTF-16 surrogate (not valid Unicode text)", where or "(body)")
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The path (``[0].labels.k``) of the first string — key or value — that is not encodable as UTF-8."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not utf8_encodable(item):
                return path
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            for k, v in item.items():
                child = f"{path}.{k}" if path else str(k)
                if not utf8_encodable(k):
                    return child.encode("utf-8", "backslashreplace").decode()
                stack.append((v, child))
    return None
