"""The benchmark harness itself (``bench/``): what its figures count, the targets it checks, the options it
refuses. No speed is measured or asserted here."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from slack_sdk.signature import Clock, SignatureVerifier

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the bench package lives at the repository root, beside the installed ones

from bench.load_bench import SECRET, clicks, commands, home_opens, overrides, prediction_batches  # noqa: E402


class _At(Clock):
    """Slack's verifier reading the clock at ``now``."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_the_load_test_signs_each_slack_request_when_it_sends_it_as_slack_does() -> None:
    planned_at = time.time()
    recs = [("p-1", "C0LOAD", "1800000000.000001")]
    requests = [*clicks(recs, 1), *overrides(recs, 1), *commands(1), *home_opens(1)]
    sent_at = planned_at + 400  # a run longer than Slack's 300 s replay window: sent minutes after the plan
    for req in requests:
        headers = req.send_headers(sent_at)
        assert headers["X-Slack-Request-Timestamp"] == str(int(sent_at)), req.route
        assert SignatureVerifier(SECRET, clock=_At(sent_at)).is_valid_request(req.body, headers), req.route
    [batch] = prediction_batches("t-", 1)
    assert batch.send_headers(sent_at)["Authorization"].startswith("Bearer ")  # not from Slack: not signed
    assert "X-Slack-Signature" not in batch.send_headers(sent_at)
