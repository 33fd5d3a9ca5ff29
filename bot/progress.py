"""A dependency-free progress bar for long command-line runs (writes to a text stream, only when it is a TTY)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar(i, total, label)`` redraws one line; nothing is printed when the stream is not a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, force: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = force or self.stream.isatty()
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        filled = int(self.width * done / total)
        elapsed = time.monotonic() - self.started
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} {elapsed:5.1f}s {label[:40]:<40}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
