"""A command's output on stdout when stdout may not take it: one behaviour for every ``npo-bot`` command.

* The reader went away (``| head``, ``| true``): exit :data:`SIGPIPE_EXIT` (141) and nothing on stderr, as cat
  and git do.
* Stdout cannot be written (``> /dev/full``, a full disk): one line on stderr, exit :data:`WRITE_FAILED_EXIT`.
* Stdout closed at start (``>&-``: Python has no ``sys.stdout``): one line on stderr, exit 1, rather than the
  result vanishing without a word.

The output is UTF-8 whatever the locale. After a failure stdout is pointed at the null device, so the
interpreter's flush at exit neither fails again nor prints "Exception ignored". :func:`print_result` and
:func:`write_result` are for a command whose output is its result; :func:`run_printing` for one that prints as it
goes while it runs (``npo-bot demo``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO, cast

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
INTERRUPTED_EXIT = 130  # 128 + SIGINT: what a shell reports for a command stopped with Ctrl-C
WRITE_FAILED_EXIT = 1


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun`` for a line a command prints, the noun in the plural unless ``n`` is 1: ``1 answer``,
    ``0 answers``, ``2 answers``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class Writer(Protocol):
    """Where :func:`write_result` lets a command write its output (a text stream's ``write``)."""

    def write(self, text: str, /) -> object: ...


class _StdoutFailed(Exception):
    """A write to stdout failed with ``error``: raised in place of the OSError itself, so that a command's own
    ``except OSError`` (for its database or its files) cannot take it for one of its own."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Guarded:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str, /) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _StdoutFailed(exc) from exc


def _utf8(stream: TextIO, newline: str | None = None) -> None:
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is None:
        return
    if newline is not None:
        reconfigure(encoding="utf-8", newline=newline)
    elif (stream.encoding or "").lower().replace("-", "") != "utf8":
        reconfigure(encoding="utf-8")


def _silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at the null device: what is still buffered goes nowhere at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):  # no file descriptor (a stream in memory): nothing is flushed at exit either
        pass
    finally:
        os.close(devnull)


def _failed(stream: TextIO, error: OSError, what: str) -> int:
    """The exit code for a write to ``stream`` (stdout) that failed; one line on stderr unless the reader went
    away. ``what`` is the line's start (``npo-bot db check: cannot write the result``)."""
    _silence(stream)
    if isinstance(error, BrokenPipeError):
        return SIGPIPE_EXIT
    print(f"{what} to stdout: {error.strerror or error}", file=sys.stderr)
    return WRITE_FAILED_EXIT


def write_result(write: Callable[[Writer], object], command: str, *, newline: str | None = None) -> int:
    """Let ``write`` write ``npo-bot <command>``'s result to stdout (UTF-8; ``newline`` as for ``open``, e.g.
    ``""`` for CSV); returns 0, :data:`SIGPIPE_EXIT` or :data:`WRITE_FAILED_EXIT` (see the module). A failed write
    stops ``write`` (the rest would go nowhere); anything else ``write`` raises is the caller's."""
    stdout = sys.stdout
    what = f"npo-bot {command}: cannot write the result"
    if stdout is None:  # started with stdout closed (``>&-``)
        print(f"npo-bot {command}: stdout is closed; nothing was printed", file=sys.stderr)
        return WRITE_FAILED_EXIT
    try:
        _utf8(stdout, newline)
    except OSError as exc:  # reconfiguring flushes what was written before
        return _failed(stdout, exc, what)
    try:
        write(_Guarded(stdout))
    except _StdoutFailed as exc:
        return _failed(stdout, exc.error, what)
    try:
        stdout.flush()
    except OSError as exc:
        return _failed(stdout, exc, what)
    return 0


def print_result(text: str, command: str) -> int:
    """Print ``text`` (and a line end) as ``npo-bot <command>``'s result: :func:`write_result`."""
    return write_result(lambda out: out.write(text + "\n"), command)


class _Dropping:
    """Stdout for a command that prints as it goes: after the first failed write, what it prints is dropped."""

    def __init__(self, stream: TextIO, command: str) -> None:
        self._stream = stream
        self._command = command
        self.code = 0  # the exit code of the first failure

    def _fail(self, error: OSError) -> None:
        self.code = _failed(self._stream, error, f"npo-bot {self._command}: cannot write")

    def write(self, text: str, /) -> int:
        if not self.code:
            try:
                self._stream.write(text)
            except OSError as exc:
                self._fail(exc)
        return len(text)

    def flush(self) -> None:
        if not self.code:
            try:
                self._stream.flush()
            except OSError as exc:
                self._fail(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_printing(run: Callable[[], int], command: str) -> int:
    """Run ``npo-bot <command>``, which prints as it goes (the demo: its address, later its summary), with stdout
    that may not take it. The command is not cut short: what it prints after a failed write is dropped (a demo
    whose reader took its address and left, ``| head -1``, keeps serving its page and still stops cleanly), then
    its exit code, if 0, becomes :data:`SIGPIPE_EXIT` or :data:`WRITE_FAILED_EXIT` (that one line on stderr at the
    failure). With stdout closed at start the command runs as it would, printing nothing."""
    stdout = sys.stdout
    if stdout is None:
        return run()
    _utf8(stdout)
    dropping = _Dropping(stdout, command)
    sys.stdout = cast(TextIO, dropping)
    try:
        code = run()
        dropping.flush()
    finally:
        sys.stdout = stdout
    return code or dropping.code
