"""What the Slack listeners are handed: the use-cases, the responder directory, a runner for storage calls and a
background-task runner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from bot.service import NpoService
from bot.slack.responders import ResponderDirectory

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
StorageMode = Literal["inline", "writer"]


@dataclass
class SlackDeps:
    """Dependencies of every listener module's ``register(app, deps)``.

    ``storage_mode`` says where the listeners' SQLite *writes* run (reads go through :meth:`query`): ``"inline"``
    (default) on the event loop —
    a click's transaction takes ≈ 0.2 ms (p99 ≈ 1 ms), cheaper than a thread hand-off, and measured fastest
    (README, "Click latency") — unless another thread is writing (see :meth:`storage`); ``"writer"`` on one
    dedicated thread, which keeps the loop responsive if the
    disk stalls (a slow fsync or checkpoint) at the cost of ≈ 0.1 ms per call.
    """

    service: NpoService
    responders: ResponderDirectory
    incident_channel: str
    storage_mode: StorageMode = "inline"
    timezone: str = "UTC"  # days of ``/npo summary`` are counted in this zone (NPO_TIMEZONE)
    ops_channel: str = ""  # where retraining alerts go (NPO_OPS_CHANNEL)
    wake_approvals: Callable[[], None] = lambda: None  # an Approve was recorded: carry it out (ApprovalRunner.wake)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _writer: ThreadPoolExecutor | None = None
    _writer_busy: int = 0  # calls handed to the writer thread and not yet done (counted on the event loop)

    async def storage(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the synchronous storage call ``fn(*args, **kwargs)`` as ``storage_mode`` says; returns its result.

        ``"inline"`` runs on the event loop only when no other thread of the process is writing: a transaction in
        progress (an ingest batch commits its thousands of predictions in one) would hold the whole loop — every
        request, every click — until it commits. The call then runs on the writer thread, as do those after it
        while it waits, in order."""
        if self.storage_mode == "inline" and not self._writer_busy:
            store = self.service.store
            if store.try_hold_writes():
                try:
                    return fn(*args, **kwargs)
                finally:
                    store.release_writes()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npo-writer")
        self._writer_busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, lambda: fn(*args, **kwargs))
        finally:
            self._writer_busy -= 1

    async def query(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the read-only storage call ``fn(*args, **kwargs)`` on a worker thread; returns its result.

        Reads (dashboards, ``/npo summary``, ``why``, App Home) scan growing tables and can take tens of
        milliseconds: on the event loop they would stall every request, and on the writer thread every click
        behind them. SQLite releases the GIL while it reads, and a WAL reader never waits for the writer.
        """
        return await asyncio.to_thread(fn, *args, **kwargs)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[None]:
        """Run ``coro`` after the response (Web API calls that need not delay the ack); errors are logged. Returns
        its task (:meth:`drain` waits for it at shutdown)."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background Slack call failed: %s", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for background calls still running (at shutdown), then stop the writer thread."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
