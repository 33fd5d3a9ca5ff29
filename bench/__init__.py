"""NPO benchmarks: ``python -m bench`` runs every benchmark module and prints one table.

Module contract: a module ``bench.<name>`` has ``run()`` or ``run(quick: bool = False)`` returning a list of
``(name, value, unit)`` rows, and prints nothing. Two optional conventions let the runner show baselines and
targets:

* **groups**: a row named ``"<figure> | <variant>"`` belongs to ``<figure>``; the first row of a group whose
  variant starts with ``"baseline"`` (and has the same unit) is the plain baseline every other row of the group
  is compared with (``ratio = value / baseline``). Rows measured side by side in the same run belong in one
  group, because these machines are noisy (±30 % run to run): quote ratios, not absolute numbers across runs.
* **targets**: a module attribute ``TARGETS: Mapping[str, float]`` maps a row name to the minimum it must reach,
  and ``CEILINGS: Mapping[str, float]`` one to the maximum it may reach (a latency).

Register a new module by adding its name to :data:`bench.__main__.MODULES`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

Row = tuple[str, float, str]

SEPARATOR = " | "
BASELINE_PREFIX = "baseline"


def row_name(figure: str, variant: str) -> str:
    """The name of a row in ``figure``'s group (see the module docstring)."""
    return f"{figure}{SEPARATOR}{variant}"


def split_name(name: str) -> tuple[str | None, str]:
    """``(figure, variant)`` of a grouped row name, ``(None, name)`` for an ungrouped one."""
    figure, sep, variant = name.partition(SEPARATOR)
    return (figure, variant) if sep else (None, name)


def is_baseline(name: str) -> bool:
    """Whether a grouped row is a baseline row."""
    figure, variant = split_name(name)
    return figure is not None and variant.startswith(BASELINE_PREFIX)


def unwritable_output(path: Path) -> str | None:
    """Why a ``--json FILE`` cannot be written, or None: checked before anything runs, so a long run does not end
    in a traceback with its results unwritten."""
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} cannot be written"
    return None


INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports one


TERMINATED = 143  # the exit status of a run stopped by SIGTERM (128 + SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same clean-up runs (:func:`stop_on_sigterm`)."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def stop_on_sigterm() -> None:
    """Make SIGTERM (``kill``, a CI job's time limit, ``timeout``) stop the run as Ctrl-C does: servers stopped,
    temporary folders removed. Without it the run died at once and left its servers, which live in process groups
    of their own (:func:`start_server`), running. Only the main thread can set a handler; elsewhere nothing."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def interrupted(prog: str, exc: BaseException | None = None) -> int:
    """Say in one line that the run ``prog`` was stopped by Ctrl-C (or, when ``exc`` is :class:`Terminated`, by
    SIGTERM); the exit status to return (130, or 143)."""
    if isinstance(exc, Terminated):
        print(f"{prog}: terminated", file=sys.stderr, flush=True)
        return TERMINATED
    print(f"{prog}: interrupted", file=sys.stderr, flush=True)
    return INTERRUPTED


def ignore_sigint() -> None:
    """A client process's initializer: Ctrl-C reaches the whole process group, and the run that started the
    process stops it (a pool's ``terminate``) rather than have it print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def client_pool(processes: int) -> multiprocessing.pool.Pool:
    """A ``spawn`` pool of client processes that Ctrl-C does not interrupt (the run stops them): SIGINT is ignored
    while they start, so they start with it ignored (a new interpreter takes a while to reach the initializer, and a
    Ctrl-C meanwhile printed a traceback); the initializer ignores it in any the pool starts later."""
    if threading.current_thread() is not threading.main_thread():
        return multiprocessing.get_context("spawn").Pool(processes, ignore_sigint)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return multiprocessing.get_context("spawn").Pool(processes, ignore_sigint)
    finally:
        signal.signal(signal.SIGINT, previous)


def start_server(args: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start a server process of the run in a process group of its own: Ctrl-C does not reach it (it would print
    a traceback), the run stops it with :func:`stop_process`."""
    return subprocess.Popen(args, process_group=0, **popen)


def stop_process(child: subprocess.Popen[Any], timeout: float) -> None:
    """Stop ``child``: SIGTERM, then SIGKILL when it has not exited ``timeout`` s later, or when the wait is cut
    short (a second Ctrl-C): no server is left behind."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
