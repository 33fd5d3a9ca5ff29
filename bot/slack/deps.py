"""What the Slack listeners are handed: the use-cases, the responder directory and a background-task runner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.service import NpoService
from bot.slack.responders import ResponderDirectory

log = logging.getLogger(__name__)


@dataclass
class SlackDeps:
    """Dependencies of every listener module's ``register(app, deps)``."""

    service: NpoService
    responders: ResponderDirectory
    incident_channel: str
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run ``coro`` after the response (Web API calls that need not delay the ack); errors are logged."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background Slack call failed: %s", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background calls still running (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
