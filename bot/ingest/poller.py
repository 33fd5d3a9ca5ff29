"""Poll a predictions URL on an interval and feed what it returns to the loop.

The URL answers JSON: a list of prediction objects, or ``{"predictions": [...]}`` (fields as in
:mod:`bot.ingest.records`). Invalid entries are logged with their index and field and skipped; valid ones are
decided. A feed usually serves its current predictions on every poll: those the previous answer already held (by
id) are not handed to the loop again, so a feed of 200 predictions polled every 30 s does not write 576,000
"duplicate" audit lines a day. The loop's own dedupe still covers the rest: the first poll after a restart, an id
that comes back after leaving the feed, the same prediction under a new id. Network and HTTP errors, answers that
are not JSON of that shape, answers over ``max_body_bytes`` and answers not complete within ``timeout_s`` are logged,
nothing of them is decided, and the next poll happens on schedule. One daemon thread; :meth:`Poller.stop` ends it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.config import masked_url
from bot.ingest.records import prediction_from_json
from npo.loop import DecideResult
from npo.types import InvalidRecord, Prediction

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10_000_000  # about 50,000 predictions: far beyond a feed, far below what would hurt the process


class _Refused(Exception):
    """The answer is too large or too slow: not read further."""


@dataclass
class PollResult:
    decided: list[DecideResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)  # ids the previous answer held: not decided again


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
        self.url = url
        self.decide = decide
        self.interval_s = interval_s
        self.clock = clock
        self._headers = headers
        self._timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: frozenset[str] = frozenset()  # ids of the last answer whose predictions were decided

    def poll_once(self) -> PollResult:
        """One GET; returns what was decided and what was skipped. Never raises for network or data errors."""
        result = PollResult()
        try:
            body: Any = json.loads(self._get())
        except (httpx.HTTPError, ValueError, _Refused) as exc:
            return self._failed(result, f"poll of {self.url} failed: {exc}")
        except RecursionError:
            return self._failed(result, f"poll of {self.url} failed: invalid JSON: nested too deeply")
        items = body.get("predictions") if isinstance(body, dict) else body
        if not isinstance(items, list):
            return self._failed(result, f"poll of {self.url}: the answer must be a list or {{'predictions': [...]}}")
        now = self.clock()
        valid: list[Prediction] = []
        for index, item in enumerate(items):
            try:
                valid.append(prediction_from_json(item, received_at=now))
            except InvalidRecord as exc:
                result.errors.append(f"[{index}].{exc.field}: {exc.message}")
                log.warning("poller skipped prediction [%d]: %s: %s", index, exc.field, exc.message)
        fresh = [p for p in valid if p.id not in self._previous]
        result.repeated = [p.id for p in valid if p.id in self._previous]
        if fresh:
            result.decided = self.decide(fresh)  # raises (a storage error): remembered nothing, the next poll retries
        self._previous = frozenset(p.id for p in valid)
        return result

    @staticmethod
    def _failed(result: PollResult, message: str) -> PollResult:
        message = masked_url(message)  # the URL's password, also where httpx's own error text names the URL
        result.errors.append(message)
        log.warning(message)
        return result

    def _get(self) -> bytes:
        """The answer's body; raises :class:`_Refused` past ``max_body_bytes`` or ``timeout_s`` in all (httpx's
        timeout bounds each read, so an answer that trickles in would otherwise hold the poll for ever)."""
        deadline = time.monotonic() + self._timeout_s
        with self._client.stream("GET", self.url) as response:
            response.raise_for_status()
            too_large = _Refused(f"the answer is larger than {self.max_body_bytes:,} bytes")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise too_large
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():  # decoded (gzip…): the limit is on what is kept
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise too_large
                if time.monotonic() > deadline:
                    raise _Refused(f"no complete answer within {self._timeout_s:g} s")
                chunks.append(chunk)
        return b"".join(chunks)

    def start(self) -> None:
        """Poll now and then every ``interval_s`` on a daemon thread (may be called again after :meth:`stop`)."""
        if self._client.is_closed:
            self._client = httpx.Client(headers=self._headers, timeout=self._timeout_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="npo-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("poll failed")
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """End the thread (a poll in progress finishes first) and close the HTTP client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._client.close()
