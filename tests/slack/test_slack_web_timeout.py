"""``NPO_SLACK_TIMEOUT_S`` is the time a Web API call may take, in seconds, 0.1–60: the delivery worker's and the
listeners' clients wait exactly that long. Before, both took the whole seconds of it (at least 1): 2.9 s waited
2 s, so an answer Slack gave in 2.2 s counted as a timeout (the worker retried a post Slack had made), and 0.3 s
waited a whole second."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError
from slack_testing import INCIDENT, make_settings

from bot.app import build_bot
from bot.standin import StandIn


def test_a_call_answered_within_the_timeout_is_taken(tmp_path: Path, standin: StandIn) -> None:
    bot = build_bot(make_settings(tmp_path, standin, slack_timeout_s=2.9), seed=1, run_worker=False)
    try:
        standin.faults.delay("chat.postMessage", 2.2, times=2)
        assert bot.worker.client.chat_postMessage(channel=INCIDENT, text="worker")["ok"]

        async def listener_call() -> bool:
            return bool((await bot.async_client.chat_postMessage(channel=INCIDENT, text="listener"))["ok"])

        assert asyncio.run(listener_call())
    finally:
        bot.close()


def test_a_timeout_under_a_second_is_kept(tmp_path: Path, standin: StandIn) -> None:
    bot = build_bot(make_settings(tmp_path, standin, slack_timeout_s=0.3), seed=1, run_worker=False)
    try:
        # Answered after 0.6 s: a client that waits 0.3 s gives up, one that waits a whole second takes the answer.
        # (No wall-clock assertion: what is checked is what the client did.)
        standin.faults.delay("chat.postMessage", 0.6, times=1)
        with pytest.raises((TimeoutError, OSError, SlackApiError)):
            bot.worker.client.chat_postMessage(channel=INCIDENT, text="slow")
        assert bot.worker.client.timeout == 0.3
    finally:
        bot.close()
