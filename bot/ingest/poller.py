"""Poll a predictions URL on an interval and feed what it returns to the loop.

The URL answers JSON: a list of prediction objects, or ``{"predictions": [...]}`` (fields as in
:mod:`bot.ingest.records`). Invalid entries are logged with their index and field and skipped; valid ones are
decided. A feed usually serves its current predictions on every poll: those the previous answer already held (by
id) are not handed to the loop again, so a feed of 200 predictions polled every 30 s does not write 576,000
"duplicate" audit lines a day. The loop's own dedupe still covers the rest: the first poll after a restart, an id
that comes back after leaving the feed, the same prediction under a new id. Network and HTTP errors are logged and
the next poll happens on schedule. One daemon thread; :meth:`Poller.stop` ends it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.ingest.records import prediction_from_json
from npo.loop import DecideResult
from npo.types import InvalidRecord, Prediction

log = logging.getLogger(__name__)


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
    ) -> None:
        self.url = url
        self.decide = decide
        self.interval_s = interval_s
        self.clock = clock
        self._headers = headers
        self._timeout_s = timeout_s
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: frozenset[str] = frozenset()  # ids of the last answer whose predictions were decided

    def poll_once(self) -> PollResult:
        """One GET; returns what was decided and what was skipped. Never raises for network or data errors."""
        result = PollResult()
        try:
            response = self._client.get(self.url)
            response.raise_for_status()
            body: Any = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            result.errors.append(f"poll of {self.url} failed: {exc}")
            log.warning(result.errors[-1])
            return result
        items = body.get("predictions") if isinstance(body, dict) else body
        if not isinstance(items, list):
            result.errors.append("the answer must be a list or {'predictions': [...]}")
            return result
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
