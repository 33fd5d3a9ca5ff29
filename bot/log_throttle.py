"""A bound on log lines an outsider can cause: at most ``limit`` lines of one kind per ``window_s`` seconds.

Anyone who can reach ``/slack/events`` can send requests the bot refuses, and each refusal is worth one log line (an
operator needs to tell a wrong signing secret from a clock that is off). Unbounded, a flood of such requests is a
flood of lines: disk filled, the real errors buried. Past the limit the lines are counted, not written, and the next
line let through says how many were left out, so nothing goes unaccounted for; the requests themselves are still
counted one by one in ``/metrics`` (``npo_http_request_duration_seconds`` by route and status class).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

REFUSED_LINES_PER_MINUTE = 20


class LogThrottle:
    """Lets through at most ``limit`` lines in each window of ``window_s`` seconds (a fixed window, started by the
    first line after the last window ended); :meth:`admit` says whether to write a line and how many were held back
    before it. Thread-safe."""

    def __init__(
        self,
        limit: int = REFUSED_LINES_PER_MINUTE,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"limit must be >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._written = 0
        self._held = 0

    def admit(self) -> tuple[bool, int]:
        """(whether to write this line, how many lines were held back since the last one written). The count is
        given once, with the first line written after them, and then starts again from zero."""
        with self._lock:
            now = self.clock()
            if self._window_start is None or now - self._window_start >= self.window_s:
                self._window_start, self._written = now, 0
            if self._written >= self.limit:
                self._held += 1
                return False, 0
            self._written += 1
            held, self._held = self._held, 0
            return True, held

    def note(self, held: int) -> str:
        """The words a written line ends with when ``held`` lines of its kind were left out before it ("" for
        none)."""
        if held == 0:
            return ""
        lines = "line" if held == 1 else "lines"
        return f"; {held} more such {lines} left out before it (at most {self.limit} per {self.window_s:g} s)"
