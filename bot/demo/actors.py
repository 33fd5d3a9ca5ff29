"""The demo's moving parts outside the bot: the predictor feed and the simulated engineers.

:class:`Feeder` sends each prediction to the bot's ingest API over HTTP (bearer token, exactly as a predictor
would), and each outcome to ``/api/v1/outcomes`` ``outcome_delay_s`` later — for suppressed predictions too, which
is how the bandit hears about what it hid. :class:`Engineers` watch the incident channel in the stand-in and
answer what they see with signed clicks (Override through the reason modal), as the stream item says.
Both are threads that stop when asked; neither touches the database.
"""

from __future__ import annotations

import copy
import heapq
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx

from bot.demo.scenarios import ENGINEERS, StreamItem
from bot.slack.blocks import ACTION_LIKE, ACTION_NEUTRAL, ACTION_OVERRIDE, FEEDBACK_BLOCK_ID
from bot.standin import StandIn

log = logging.getLogger(__name__)

__all__ = ["Engineers", "Feeder", "Ledger"]

RECENT = 300  # messages the engineers look through (the newest)
_ACTIONS = {"like": ACTION_LIKE, "neutral": ACTION_NEUTRAL, "override": ACTION_OVERRIDE}
_REASONS = (
    ("false_positive", "the sensor reads fine on the node"),
    ("false_positive", "seen this pattern before, it clears by itself"),
    ("wrong_action", "a drain is too much for this"),
    ("already_handled", "ticket already open for this host"),
)


@dataclass
class Ledger:
    """What the feeder sent and what became of it (thread-safe): surfaced items await an engineer."""

    items: dict[str, StreamItem] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, item: StreamItem, verdict: str) -> None:
        with self.lock:
            self.items[item.id] = item
            self.verdicts[item.id] = verdict
            self.sent += 1

    def unanswered(self) -> int:
        """Surfaced items with an answer still to give (not skipped, not yet clicked)."""
        with self.lock:
            return sum(
                1
                for pid, verdict in self.verdicts.items()
                if verdict == "surface" and pid not in self.answered and self.items[pid].answer not in (None, "skip")
            )


class Feeder(threading.Thread):
    """Posts ``stream`` to the bot at ``rate_per_min``, then the outcomes; stops after ``limit`` predictions
    (None: never) or when :meth:`stop` is called. ``done`` is set once the stream or the limit is exhausted."""

    def __init__(
        self,
        stream: Iterable[StreamItem],
        ledger: Ledger,
        *,
        base_url: str,
        ingest_token: str,
        rate_per_min: float,
        outcome_delay_s: float,
        limit: int | None = None,
    ) -> None:
        super().__init__(name="npo-demo-feeder", daemon=True)
        self.stream: Iterator[StreamItem] = iter(stream)
        self.ledger = ledger
        self.interval_s = 60.0 / rate_per_min
        self.outcome_delay_s = outcome_delay_s
        self.limit = limit
        self.done = threading.Event()
        self._halt = threading.Event()
        self._outcomes: list[tuple[float, str, bool]] = []
        self._client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {ingest_token}"}, timeout=10.0
        )

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self._halt.is_set():
                self._send_due_outcomes()
                if not self.done.is_set() and time.monotonic() >= next_at:
                    next_at += self.interval_s
                    self._send_next()
                self._halt.wait(0.05)
        finally:
            self._client.close()

    def _send_next(self) -> None:
        if self.limit is not None and self.ledger.sent >= self.limit:
            self.done.set()
            return
        item = next(self.stream, None)
        if item is None:
            self.done.set()
            return
        try:
            response = self._client.post("/api/v1/predictions", json=dict(item.prediction))
        except httpx.HTTPError as exc:
            log.warning("prediction %s not sent: %s", item.id, exc)
            return
        if response.status_code != 200:
            with self.ledger.lock:
                self.ledger.rejected += 1
            log.warning("prediction %s refused (%d): %s", item.id, response.status_code, response.text[:200])
            return
        answer = response.json()
        if answer.get("duplicate"):
            with self.ledger.lock:
                self.ledger.duplicates += 1
            return
        self.ledger.record(item, str(answer.get("verdict")))
        if self.limit is not None and self.ledger.sent >= self.limit:
            self.done.set()  # the last one is sent: done now, not one interval later
        if item.real_fault is not None:
            heapq.heappush(self._outcomes, (time.monotonic() + self.outcome_delay_s, item.id, item.real_fault))

    def _send_due_outcomes(self) -> None:
        while self._outcomes and self._outcomes[0][0] <= time.monotonic() and not self._halt.is_set():
            _, pid, real = heapq.heappop(self._outcomes)
            body = {"prediction_id": pid, "real_fault": real, "source": "demo"}
            try:
                response = self._client.post("/api/v1/outcomes", json=body)
                if response.status_code != 200:
                    log.warning("outcome of %s refused (%d): %s", pid, response.status_code, response.text[:200])
            except httpx.HTTPError as exc:
                log.warning("outcome of %s not sent: %s", pid, exc)


ANSWER_DELAY_S = (1.0, 4.0)  # a simulated engineer answers this long after a recommendation appears


class Engineers(threading.Thread):
    """Simulated on-call engineers: each surfaced recommendation is answered by its item's engineer a short,
    random while (``delay_s`` range) after it appears in ``channel``, with signed clicks through the stand-in."""

    def __init__(
        self,
        standin: StandIn,
        ledger: Ledger,
        channel: str,
        *,
        delay_s: tuple[float, float] = ANSWER_DELAY_S,
        seed: int = 0,
    ) -> None:
        super().__init__(name="npo-demo-engineers", daemon=True)
        self.standin = standin
        self.ledger = ledger
        self.channel = channel
        self.delay_s = delay_s
        self.clicks = 0
        self.failures = 0
        self._random = random.Random(seed)
        self._due: dict[str, float] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            try:
                self._tick()
            except Exception:  # an engineer's mistake must not end the demo
                log.exception("simulated engineer failed")

    def _visible(self) -> dict[str, str]:
        """Prediction id → message ts of every recommendation in the channel that still has its buttons."""
        shown: dict[str, str] = {}
        store = self.standin.store
        with store.lock:  # read in place, newest first window only: a long demo has thousands of messages
            recent = [(m.ts, copy.deepcopy(m.blocks)) for m in store.history.get(self.channel, [])[-RECENT:]]
        for ts, blocks in recent:
            for block in blocks:
                if isinstance(block, dict) and block.get("block_id") == FEEDBACK_BLOCK_ID:
                    elements = block.get("elements") or []
                    if elements and isinstance(elements[0], dict) and elements[0].get("value"):
                        shown[str(elements[0]["value"])] = ts
        return shown

    def _tick(self) -> None:
        now = time.monotonic()
        with self.ledger.lock:
            waiting = {
                pid: self.ledger.items[pid]
                for pid, verdict in self.ledger.verdicts.items()
                if verdict == "surface" and pid not in self.ledger.answered
            }
        if not waiting:
            return
        for pid, ts in self._visible().items():
            item = waiting.get(pid)
            if item is None:
                continue
            if item.answer in (None, "skip"):
                with self.ledger.lock:
                    self.ledger.answered.add(pid)
                continue
            due = self._due.setdefault(pid, now + self._random.uniform(*self.delay_s))
            if due <= now and not self._halt.is_set():
                self._answer(item, ts)

    def _answer(self, item: StreamItem, ts: str) -> None:
        user = ENGINEERS[item.engineer % len(ENGINEERS)][0]
        answer = item.answer or "neutral"
        try:
            outcome = self.standin.live.click(user, self.channel, ts, _ACTIONS[answer], show_modal=False)
            if answer == "override":
                if outcome.view_id is None:
                    raise LookupError("the override modal did not open")
                reason, details = self._random.choice(_REASONS)
                result = self.standin.live.submit(
                    user, outcome.view_id, {"reason": {"reason": reason}, "details": {"details": details}}
                )
                if not result["closed"]:
                    raise LookupError(f"the override was not accepted: {result['errors']}")
            self.clicks += 1
        except (LookupError, httpx.HTTPError) as exc:
            self.failures += 1
            log.info("%s could not answer %s: %s", user, item.id, exc)
        finally:
            with self.ledger.lock:
                self.ledger.answered.add(item.id)
            self._due.pop(item.id, None)
