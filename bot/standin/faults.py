"""Fault injection: which of the next calls to a method fail, and how.

Faults are queued per method name (``"chat.postMessage"``, or ``"*"`` for every method, or the pseudo-methods
``"upload"`` for the raw file upload and ``"response_url"``). Each call takes at most one fault, from the
method's own queue first, then from ``"*"``. A fault with ``times=None`` stays until :meth:`FaultInjector.clear`.
A fault given a ``channel`` is taken only by a call naming that channel (its ``channel`` argument: Slack's per-channel
limit on ``chat.postMessage``); calls to other channels pass it by and take the next fault that applies to them.
Thread-safe. Outages (connection refused) are not faults: stop and restart the stand-in for those.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum

__all__ = ["ANY_METHOD", "Fault", "FaultInjector", "FaultKind"]

ANY_METHOD = "*"


class FaultKind(Enum):
    """What an injected fault does to one call."""

    RATE_LIMIT = "rate_limit"  # HTTP 429, Retry-After, {"ok": false, "error": "ratelimited"}
    SERVER_ERROR = "server_error"  # HTTP 5xx, {"ok": false, "error": "internal_error"}
    ERROR = "error"  # HTTP 200, {"ok": false, "error": <error>}
    DELAY = "delay"  # wait, then answer normally
    DISCONNECT = "disconnect"  # close the connection without an answer
    MALFORMED = "malformed"  # HTTP 200 with a body that is not JSON (a truncated answer, a proxy's error page)
    LOSE_ANSWER = "lose_answer"  # carry the call out, then close the connection without the answer


@dataclass
class Fault:
    """One queued fault. ``remaining`` is the number of calls left (None: until cleared)."""

    kind: FaultKind
    remaining: int | None = 1
    retry_after: int = 1
    status: int = 500
    error: str = ""
    seconds: float = 0.0
    channel: str | None = None


class FaultInjector:
    """Queues of faults per method, set at run time by tests (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[Fault]] = {}

    def _add(self, method: str, fault: Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._queues.setdefault(method, []).append(fault)

    def rate_limit(
        self, method: str, *, times: int | None = 1, retry_after: int = 1, channel: str | None = None
    ) -> None:
        """Answer the next ``times`` calls (to ``channel`` only, when given) with HTTP 429, ``Retry-After:
        retry_after`` (seconds), ``ratelimited``."""
        self._add(method, Fault(FaultKind.RATE_LIMIT, times, retry_after=retry_after, channel=channel))

    def server_error(self, method: str, *, times: int | None = 1, status: int = 500) -> None:
        """Answer the next ``times`` calls with HTTP ``status`` (500–599) and ``internal_error``."""
        if not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        self._add(method, Fault(FaultKind.SERVER_ERROR, times, status=status))

    def error(self, method: str, error: str, *, times: int | None = 1, channel: str | None = None) -> None:
        """Answer the next ``times`` calls (to ``channel`` only, when given) with HTTP 200 ``{"ok": false, "error":
        error}``; nothing is stored."""
        self._add(method, Fault(FaultKind.ERROR, times, error=error, channel=channel))

    def delay(self, method: str, seconds: float, *, times: int | None = None) -> None:
        """Hold the next ``times`` calls (default: all, until cleared) for ``seconds``, then answer normally."""
        self._add(method, Fault(FaultKind.DELAY, times, seconds=seconds))

    def disconnect(self, method: str, *, times: int | None = 1) -> None:
        """Close the connection of the next ``times`` calls without answering (the client sees a reset)."""
        self._add(method, Fault(FaultKind.DISCONNECT, times))

    def lose_answer(self, method: str, *, times: int | None = 1) -> None:
        """Carry out the next ``times`` calls (a post is stored), then close their connections without answering: the
        call took effect but the client sees a reset, as when an answer is lost on its way back."""
        self._add(method, Fault(FaultKind.LOSE_ANSWER, times))

    def malformed(self, method: str, *, times: int | None = 1) -> None:
        """Answer the next ``times`` calls with HTTP 200 and a truncated, unparseable JSON body; nothing is stored."""
        self._add(method, Fault(FaultKind.MALFORMED, times))

    def clear(self, method: str | None = None) -> None:
        """Remove queued faults for ``method``, or all of them."""
        with self._lock:
            if method is None:
                self._queues.clear()
            else:
                self._queues.pop(method, None)

    def pending(self, method: str | None = None) -> list[Fault]:
        """Copies of the faults still queued (for ``method`` only, if given). Read-only."""
        with self._lock:
            names = list(self._queues) if method is None else [method]
            return [Fault(**vars(f)) for name in names for f in self._queues.get(name, [])]

    def take(self, method: str, channel: str | None = None) -> Fault | None:
        """Consume and return the fault for one call to ``method`` (naming ``channel``, if any), or None when the
        call should succeed: the first queued fault for no channel or for that one."""
        with self._lock:
            for name in (method, ANY_METHOD):
                queue = self._queues.get(name, [])
                index = next((i for i, f in enumerate(queue) if f.channel in (None, channel)), None)
                if index is None:
                    continue
                fault = queue[index]
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        queue.pop(index)
                return Fault(**vars(fault))
            return None
