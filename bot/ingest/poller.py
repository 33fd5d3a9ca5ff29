"""Poll a predictions URL on an interval and feed what it returns to the loop.

The URL answers JSON: a list of prediction objects, or ``{"predictions": [...]}`` (fields as in
:mod:`bot.ingest.records`). Invalid entries are skipped and logged with their index and field — the first
:data:`LOGGED_ERRORS` of an answer one by one, the rest counted in one line, so a feed whose every entry is refused
cannot flood the log at every poll (:attr:`PollResult.errors` names them all); valid ones are decided. An invalid
entry the previous answer also held (the same entry, refused for the same reason) is not logged again: a feed that
keeps serving one malformed entry logs it once, not at every poll (2,880 lines a day at 30 s); it is logged again
when it comes back after an answer without it. An entry in
which an object holds a key twice (``{"id": "a", "id": "b"}``, of which ``json.loads`` would keep the last value
silently) is such an invalid entry, named by the key (``[3].labels.k``), as the HTTP routes refuse it. A feed
usually serves its current predictions on every poll: those the previous answer already held (by id) are not handed
to the loop again, so a feed of 200 predictions polled every 30 s does not write 576,000 "duplicate" audit lines a
day. The loop's own dedupe still covers the rest: the first poll after a restart, an id that comes back after
leaving the feed, the same prediction under a new id. An entry whose id the previous answer held with another
body (the feed changed a prediction in place: another target, action, confidence…) is handed to the loop again,
which keeps the first one (an id names one prediction) and reports the conflict: it is logged once, naming the
id and the fields that differ, and not again while the feed keeps serving it so. Network and HTTP errors, answers
that are not JSON of that
shape (a key twice in an object outside the entries included: ``{"predictions": [...], "predictions": [...]}``),
answers over ``max_body_bytes`` (decoded: a gzip or deflate answer is inflated only up to it), compressed answers
cut short (their data ends before the end of stream) and answers not complete within ``timeout_s`` — from the
start of the request to the last byte, however the server spends it (connecting, interim ``1xx`` responses, headers
or body sent a little at a time) — are logged as failed polls,
nothing of them is decided, and the next poll happens on schedule; the first answer that can be used after one or
more failed polls logs, once, at INFO, that the poll recovered, with how many polls failed and how long ago the
first did (a storage error while deciding is not a failed poll of the feed).
One daemon thread; :meth:`Poller.stop` ends it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from bot.config import masked_url
from bot.ingest import keys_twice
from bot.ingest.keys_twice import KEY_TWICE
from bot.ingest.records import prediction_from_json
from bot.slack.text import duration
from npo.loop import DecideResult
from npo.types import InvalidRecord, Prediction

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10_000_000  # about 50,000 predictions: far beyond a feed, far below what would hurt the process
LOGGED_ERRORS = 20  # invalid predictions logged one by one per poll; the rest in one line (bounded log volume)
EMPTY_KEY = '""'  # how a field named by the empty key is shown, as records.py shows an unknown one
LOGGED_FIELD_CHARS = 200  # a field named in a log line is cut to this (a key of a megabyte is still one key)


class _MaskedUrls(logging.Filter):
    """Masks the credentials of the URLs in httpx's own log lines (``HTTP Request: GET <url> "HTTP/1.1 200 OK"``,
    at INFO, once per poll), as :func:`masked_url` masks them in the poller's."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = masked_url(record.getMessage()), None
        return True


def _mask_httpx_log() -> None:
    """Put :class:`_MaskedUrls` on httpx's logger, once."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskedUrls) for f in httpx_log.filters):
        httpx_log.addFilter(_MaskedUrls())


def _cut(text: str) -> str:
    """``text`` (a field named by the feed: a key it sent) cut to :data:`LOGGED_FIELD_CHARS` characters for a log
    line, its non-printable characters escaped (``\\n``, ``\\x1b``, ``\\u202e``): a key holding a line break, a
    terminal escape or a bidi override would otherwise write a line of its own into the log, or reorder it."""
    text = text if len(text) <= LOGGED_FIELD_CHARS else text[:LOGGED_FIELD_CHARS] + "…"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _opening(raw: bytes) -> str:
    """The first characters of an answer, for a log line: printable, at most 80, "empty" for nothing."""
    if not raw.strip():
        return "it is empty"
    text = raw[:120].decode("utf-8", "replace")
    shown = "".join(c if c.isprintable() else " " for c in text)
    return f"it starts {' '.join(shown.split())[:80]!r}"


def _refusal(item: Any, field_name: str, message: str) -> bytes:
    """What identifies a refused entry from one answer to the next: a digest of the entry and why it is refused
    (its index may change as other entries come and go)."""
    try:
        text = json.dumps(item, sort_keys=True, allow_nan=True)
    except (RecursionError, TypeError, ValueError):  # not expected of decoded JSON: identified by the reason alone
        text = ""
    return hashlib.blake2b(
        f"{field_name}\0{message}\0{text}".encode(errors="backslashreplace"), digest_size=16
    ).digest()


class _Refused(Exception):
    """The answer is too large or too slow: not read further."""


def _too_large(limit: int) -> str:
    return f"the answer is larger than {limit:,} bytes"


ACCEPT_ENCODING = "gzip, deflate"  # the content codings the poller decodes (:class:`_Inflater`)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _codings(headers: httpx.Headers) -> list[str]:
    """The answer's content codings that the poller decodes, in the order they are to be undone. Any other is passed
    through, as httpx does (a server that names its charset there); only gzip and deflate are asked for."""
    codings = [c.strip().lower() for value in headers.get_list("content-encoding") for c in value.split(",")]
    return [c for c in reversed(codings) if c in _WBITS]


class _Inflater:
    """Undoes one content coding (gzip or deflate) piece by piece, never producing more than ``limit`` bytes in all:
    a small answer that would inflate to gigabytes (a "gzip bomb") is refused without being inflated. A gzip answer
    may hold several members, each read in turn, and zero bytes padding them. ``deflate`` is zlib's format, or raw
    deflate from servers that send it so (as httpx accepts both)."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0
        self._inflater = zlib.decompressobj(_WBITS[coding])
        self._started = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            if self._inflater.eof and self.coding != "deflate":
                # A gzip answer may hold several members one after another (RFC 1952): the next one starts here,
                # past any zero bytes padding the last one (skipped by gzip -d and Python's gzip as well).
                data = data.lstrip(b"\0")
                if not data:
                    break
                self._inflater = zlib.decompressobj(_WBITS[self.coding])
            try:
                piece = self._inflater.decompress(data, self.limit + 1 - self.size)  # >= 1: 0 would be no limit
            except zlib.error as exc:
                if self.coding == "deflate" and not self._started:  # no zlib header: raw deflate
                    self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._started = True
                    continue
                raise _Refused(f"the answer is not valid {self.coding} ({exc})") from None
            self._started = True
            self.size += len(piece)
            if self.size > self.limit:
                raise _Refused(_too_large(self.limit))
            out += piece
            data = self._inflater.unconsumed_tail
            if not data and self._inflater.eof and self.coding != "deflate":
                data = self._inflater.unused_data  # what follows the member just ended
        return bytes(out)

    def end(self) -> bytes:
        """What is left, once the answer is complete; :class:`_Refused` when its compressed data stops before the
        end of the stream (the connection dropped, a proxy cut it): what it holds is only a part of the answer."""
        try:
            rest = self._inflater.flush()
        except zlib.error as exc:
            raise _Refused(f"the answer is not valid {self.coding} ({exc})") from None
        if self._started and not self._inflater.eof:  # an answer with no body at all is said to be empty
            raise _Refused(f"the {self.coding} answer is cut short (its compressed data ends before the end of stream)")
        return rest


def _inflate(inflaters: list[_Inflater], data: bytes, *, end: bool = False) -> bytes:
    """``data`` through each coding to undo, in order; ``end``: the answer is complete."""
    for inflater in inflaters:
        data = inflater.feed(data)
        if end:
            data += inflater.end()
    return data


def _shut_down(sock: socket.socket) -> None:
    """Shut ``sock`` down, waking a read blocked on it in another thread (closing it would not). The plain socket's
    method even for a TLS socket, whose own ``shutdown`` would tear its TLS state down under the reading thread; a
    socket closed meanwhile raises ``OSError`` (its descriptor is -1 by then: never another socket's)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """Ends a request that is not complete ``seconds`` after it started by shutting its connection down.

    httpx's timeouts bound each network operation, not the request: a server that keeps sending a little — interim
    ``102 Processing`` responses while it computes, header lines, the body byte by byte — each within the read
    timeout, would hold the poll, and the poller's thread, for as long as it goes on. The sockets come from httpx's
    ``trace`` extension as the request opens its connection; the client keeps no idle connection, so every request
    opens one (:meth:`Poller._new_client`)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpx's ``trace`` callback: note the socket of each connection (and of its TLS layer) as it is made."""
        if not event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        get_extra_info = getattr(info.get("return_value"), "get_extra_info", None)  # httpcore's network stream
        sock = get_extra_info("socket") if callable(get_extra_info) else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.append(sock)
                if self.expired:  # the deadline passed while it was connecting
                    _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._timer.cancel()


@dataclass
class PollResult:
    decided: list[DecideResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)  # ids the previous answer held: not decided again
    # entries sent under an id already taken with another body, "id: fields": the first one is kept (logged)
    conflicts: list[str] = field(default_factory=list)


class Poller:
    """GETs ``url`` every ``interval_s`` seconds and passes valid predictions to ``decide``."""

    def __init__(
        self,
        url: str,
        decide: Callable[[Sequence[Prediction]], list[DecideResult]],
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float],
        headers: dict[str, str] | None = None,
        timeout_s: float = 5.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.url = url  # logged only through masked_url, httpx's own lines too (_MaskedUrls)
        _mask_httpx_log()
        self.decide = decide
        self.interval_s = interval_s
        self.clock = clock
        self._headers = headers
        self._timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._client = self._new_client()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: dict[str, Prediction] = {}  # the last answer whose predictions were decided, by id
        self._refused: frozenset[bytes] = frozenset()  # the refused entries of the last usable answer (logged)
        self._failures = 0  # polls failed in a row (logged), since the last answer that could be used
        self._failing_since = 0.0  # time.monotonic() of the first of them

    def poll_once(self) -> PollResult:
        """One GET; returns what was decided and what was skipped. Never raises for network or data errors."""
        result = PollResult()
        raw = b""
        try:
            raw = self._get()
            body, twice = keys_twice.loads(raw)
        except json.JSONDecodeError as exc:  # a login page, a proxy's error page: say so, and how it starts
            return self._failed(result, f"poll of {self.url} failed: the answer is not JSON ({exc}): {_opening(raw)}")
        except (httpx.HTTPError, ValueError, _Refused) as exc:
            return self._failed(result, f"poll of {self.url} failed: {exc}")
        except RecursionError:
            return self._failed(result, f"poll of {self.url} failed: invalid JSON: nested too deeply")
        if isinstance(body, keys_twice.KeyTwice):  # {"predictions": [...], "predictions": [...]}: which one?
            key = body.key.encode("utf-8", "backslashreplace").decode() or EMPTY_KEY  # a key may hold a lone surrogate
            return self._failed(result, f"poll of {self.url} failed: {_cut(key)}: {KEY_TWICE}")
        items = body.get("predictions") if isinstance(body, dict) else body
        if not isinstance(items, list):
            return self._failed(result, f"poll of {self.url}: the answer must be a list or {{'predictions': [...]}}")
        if twice and isinstance(body, dict):  # outside the entries: {"predictions": [...], "meta": {"k": 1, "k": 2}}
            outside = keys_twice.key_twice({k: v for k, v in body.items() if k != "predictions"})
            if outside is not None:
                return self._failed(result, f"poll of {self.url} failed: {_cut(outside)}: {KEY_TWICE}")
        self._recovered()
        now = self.clock()
        valid: list[Prediction] = []
        refused: set[bytes] = set()
        new = 0  # refused entries the previous answer did not hold: those are logged
        for index, item in enumerate(items):
            try:
                if twice and isinstance(item, dict) and (where := keys_twice.key_twice(item)) is not None:
                    raise InvalidRecord(where or EMPTY_KEY, KEY_TWICE)  # json.loads would have kept the last value
                valid.append(prediction_from_json(item, received_at=now))
            except InvalidRecord as exc:
                result.errors.append(f"[{index}].{exc.field}: {exc.message}")
                refusal = _refusal(item, exc.field, exc.message)
                refused.add(refusal)
                if refusal in self._refused:  # the previous answer held it: logged (or counted) then, not again
                    continue
                new += 1
                if new <= LOGGED_ERRORS:
                    field_name, message = _cut(exc.field), exc.message[:300]
                    log.warning("poller skipped prediction [%d]: %s: %s", index, field_name, message)
        if new > LOGGED_ERRORS:
            log.warning(
                "poller skipped %d more predictions of this answer, not logged one by one (%s of %s invalid)",
                new - LOGGED_ERRORS,
                f"{len(result.errors):,}",
                f"{len(items):,}",
            )
        self._refused = frozenset(refused)
        previous = self._previous
        fresh = [p for p in valid if (seen := previous.get(p.id)) is None or p.differs_from(seen)]
        result.repeated = [p.id for p in valid if (seen := previous.get(p.id)) is not None and not p.differs_from(seen)]
        if fresh:
            result.decided = self.decide(fresh)  # raises (a storage error): remembered nothing, the next poll retries
        for decided in result.decided:
            if decided.conflict:
                pid, fields = decided.decision.prediction_id, ", ".join(decided.conflict)
                result.conflicts.append(f"{pid}: {fields}")
                # once: the next answer serving it so is not handed to the loop again (the previous answer held it)
                log.warning(
                    "poller kept prediction %s as first received: the feed sent it again with another %s (an id "
                    "names one prediction: give a changed prediction a new id)",
                    _cut(pid),
                    fields,
                )
        self._previous = {p.id: p for p in valid}
        return result

    def _failed(self, result: PollResult, message: str) -> PollResult:
        message = masked_url(message)  # the URL's password and query credentials, also in httpx's own error text
        result.errors.append(message)
        log.warning(message)
        if self._failures == 0:
            self._failing_since = time.monotonic()
        self._failures += 1
        return result

    def _recovered(self) -> None:
        """After failed polls, log once that the feed answers again (something usable: JSON of the right shape)."""
        if self._failures == 0:
            return
        failures, since = self._failures, time.monotonic() - self._failing_since
        self._failures = 0
        polls = "1 poll" if failures == 1 else f"{failures:,} polls"
        log.info(
            "poll of %s recovered after %s failed (the first %s ago)",
            masked_url(self.url),
            polls,
            duration(since),
        )

    def _new_client(self) -> httpx.Client:
        """The HTTP client; it keeps no idle connection, so that each poll opens one its :class:`_Watchdog` can
        end (a poll every 30 s gains nothing from keeping one, which servers close after a few seconds anyway)."""
        limits = httpx.Limits(max_keepalive_connections=0)
        headers = httpx.Headers({"Accept-Encoding": ACCEPT_ENCODING})
        headers.update(self._headers or {})  # an Accept-Encoding of the settings' headers wins
        return httpx.Client(headers=headers, timeout=self._timeout_s, limits=limits)

    def _get(self) -> bytes:
        """The answer's body; raises :class:`_Refused` past ``max_body_bytes`` or ``timeout_s`` in all, from the
        start of the request to its last byte (httpx's timeout bounds each read: an answer that trickles in, its
        headers or its body, would otherwise hold the poll for ever)."""
        watchdog = _Watchdog(self._timeout_s)
        late = _Refused(f"no complete answer within {self._timeout_s:g} s")
        try:
            with watchdog:
                body = self._read(watchdog, time.monotonic() + self._timeout_s)
        except httpx.HTTPError:
            if watchdog.expired:  # the connection was shut down at the deadline: say so, not "disconnected"
                raise late from None
            raise
        if watchdog.expired:  # an answer without a length ends when its connection does: cut, not complete
            raise late
        return body

    def _read(self, watchdog: _Watchdog, deadline: float) -> bytes:
        with self._client.stream("GET", self.url, extensions={"trace": watchdog.trace}) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _Refused(_too_large(self.max_body_bytes))
            # Decoded here, not by httpx, which inflates each piece whole before the size can be checked
            inflaters = [_Inflater(coding, self.max_body_bytes) for coding in _codings(response.headers)]
            chunks: list[bytes] = []
            size = 0
            for raw in response.iter_raw():
                chunk = _inflate(inflaters, raw)
                size += len(chunk)  # the limit is on what is kept
                if size > self.max_body_bytes:
                    raise _Refused(_too_large(self.max_body_bytes))
                if time.monotonic() > deadline:
                    raise _Refused(f"no complete answer within {self._timeout_s:g} s")
                chunks.append(chunk)
            chunks.append(_inflate(inflaters, b"", end=True))
            if size + len(chunks[-1]) > self.max_body_bytes:
                raise _Refused(_too_large(self.max_body_bytes))
        return b"".join(chunks)

    def start(self) -> None:
        """Poll now and then every ``interval_s`` on a daemon thread (may be called again after :meth:`stop`)."""
        if self._client.is_closed:
            self._client = self._new_client()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="npo-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # a storage error while deciding, a fault of the poller's own
                # The traceback as text, masked like every line naming the URL: an exception's text (or that of one
                # it was raised from) may name it, password and query credentials included; exc_info would not be.
                text = masked_url("".join(traceback.format_exception(exc)).rstrip())
                log.error("poll of %s failed; the next poll is on schedule\n%s", masked_url(self.url), text)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """End the thread and close the HTTP client. A poll in progress finishes first: its request ends within
        ``timeout_s``, and the decisions of its answer are stored (or not) before this returns, so the database can
        be closed next."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout_s + 10)
            self._thread = None
        self._client.close()
