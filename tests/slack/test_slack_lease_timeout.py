"""Several delivery workers on one file: a Slack call a worker starts inside its lease must end inside it, whatever
``NPO_SLACK_TIMEOUT_S`` is (0.1–60 s). A worker that started a call with ``LEASE_MARGIN_S`` (10 s) of its 60 s
lease left, under a longer timeout, saw a slow answer outlast the lease while another process's worker claimed the
message and posted it again.

The clocks are injected: worker A's pass has already spent ``offset`` seconds of its lease on earlier messages when
it starts the call, and worker B looks at the outbox just before A's call would time out (the stand-in holds A's
call meanwhile, so it is still in flight)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from slack_testing import INCIDENT, make_settings

from bot.app import build_bot
from bot.standin import StandIn


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.8])
def test_no_second_worker_claims_a_message_while_a_call_the_lease_allowed_is_in_flight(
    fraction: float, tmp_path: Path, standin: StandIn
) -> None:
    settings = make_settings(tmp_path, standin, slack_timeout_s=30.0)
    a, b = build_bot(settings, seed=1, run_worker=False), build_bot(settings, seed=2, run_worker=False)
    try:
        timeout = float(a.worker.client.timeout)
        lease = a.worker.config.lease_s
        offset = fraction * lease
        t0 = time.time()
        a.store.enqueue(INCIDENT, "message", {"text": "only once"}, t0)
        calls = iter(range(1_000_000))
        a.worker.clock = lambda: t0 if next(calls) == 0 else t0 + offset + (time.time() - t0)  # claimed at t0
        b.worker.clock = lambda: t0 + offset + timeout - 0.5 + (time.time() - t0)  # A's call not yet timed out
        standin.faults.delay("chat.postMessage", 1.5, times=1)  # A's call, answered within its timeout
        a_pass = threading.Thread(target=a.worker.run_once)
        a_pass.start()
        time.sleep(0.5)
        b.worker.run_once()
        a_pass.join(10)
        posted = [m.text for m in standin.messages(INCIDENT)]
        assert posted.count("only once") <= 1, (offset, timeout, lease, posted)
        if fraction == 0.0:
            assert posted == ["only once"]
    finally:
        a.close()
        b.close()
