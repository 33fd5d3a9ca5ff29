"""A recommendation closed while its post still waits in the outbox (Slack down or slow): its alert resolved, or its
outcome recorded. It is posted all the same — nothing is lost, the channel keeps the record — but as it is when
posted: saying it closed (with its outcome and no buttons, or a line saying its alert resolved), not as if the fault
were still ahead. Digests likewise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_testing import INCIDENT, BotUnderTest, alertmanager_notification, make_settings, serving, wait_for

from bot.app import build_bot
from bot.slack.blocks import FEEDBACK_BLOCK_ID, OUTCOME_BLOCK_ID
from bot.standin import StandIn

AM = "/api/v1/alertmanager"


def _alert(status: str, n: int = 1) -> dict[str, Any]:
    """Alert ``n`` of a fault type firing on a node of its own cluster (no two share a blast radius)."""
    return {
        "status": status,
        "labels": {"alertname": "DiskWillFail", "instance": f"r{n}-n04:9100", "severity": "critical"}
        | {"cluster": f"r{n}"},
        "annotations": {"confidence": "0.97", "action": "investigate", "time_to_fault": "6h"},
        "startsAt": "2025-03-26T10:00:00Z",
        "endsAt": "2025-03-26T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph",
        "fingerprint": f"a1b2c3d4e5f6000{n}",
    }


def _pid(n: int = 1) -> str:
    return f"am:a1b2c3d4e5f6000{n}@20250326T100000Z"


def _slack_down(bot: BotUnderTest) -> None:
    """Every post fails (HTTP 503) until the faults are cleared: the outbox keeps them, retrying."""
    bot.standin.faults.server_error("chat.postMessage", times=None, status=503)


def _fire_while_slack_is_down(bot: BotUnderTest, *alerts: int) -> None:
    """Alerts ``alerts`` (default: alert 1) fire while every post fails: surfaced, tried, waiting in the outbox."""
    alerts = alerts or (1,)
    _slack_down(bot)
    results = bot.ingest(alertmanager_notification(*(_alert("firing", n) for n in alerts)), path=AM).json()["results"]
    assert [r["verdict"] for r in results] == ["surface"] * len(alerts), results
    wait_for(lambda: bot.standin.calls("chat.postMessage"))  # tried, refused: waiting in the outbox


def _block_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [str(b.get("block_id")) for b in blocks]


def _text(blocks: list[dict[str, Any]]) -> str:
    return str(blocks)


def test_a_recommendation_whose_alert_resolves_before_it_is_posted_is_posted_closed(bot: BotUnderTest) -> None:
    _fire_while_slack_is_down(bot)
    resolved = bot.ingest(alertmanager_notification(_alert("resolved")), path=AM).json()["outcomes"]
    assert resolved == [{"prediction_id": _pid(), "result": "no_outcome", "recorded": False, "closed": True}]
    bot.standin.faults.clear()
    channel, ts = bot.posted(_pid(), timeout=30)
    posted = bot.standin.message(channel, ts)
    ids = _block_ids(posted.blocks)
    assert "npo_closed" in ids and "resolved" in _text(posted.blocks)
    assert FEEDBACK_BLOCK_ID in ids  # an answer still counts: an alert that cleared may well have been noise
    assert OUTCOME_BLOCK_ID in ids  # whether it was a real fault can still be recorded
    assert "closed: alert resolved" in posted.text  # the notification says so too
    wait_for(lambda: not bot.bot.store.outbox("pending"), timeout=40)  # the queued update finds it posted
    assert len(bot.standin.messages(INCIDENT)) == 1
    assert "npo_closed" in _block_ids(bot.standin.message(channel, ts).blocks)


def test_a_recommendation_whose_outcome_is_recorded_before_it_is_posted_is_posted_with_it(bot: BotUnderTest) -> None:
    _fire_while_slack_is_down(bot)
    answer = bot.ingest({"prediction_id": _pid(), "real_fault": False}, "/api/v1/outcomes").json()
    assert answer[0]["recorded"] if isinstance(answer, list) else answer["recorded"], answer
    bot.standin.faults.clear()
    channel, ts = bot.posted(_pid(), timeout=30)
    posted = bot.standin.message(channel, ts)
    ids = _block_ids(posted.blocks)
    assert FEEDBACK_BLOCK_ID not in ids and OUTCOME_BLOCK_ID not in ids and "npo_resolved" in ids
    assert "closed: false alarm" in posted.text


def test_a_posted_recommendation_whose_alert_resolves_says_so(bot: BotUnderTest) -> None:
    """The message reflects the state whenever it changed: a recommendation closed after its post shows it too,
    and still takes answers."""
    results = bot.ingest(alertmanager_notification(_alert("firing")), path=AM).json()["results"]
    assert results[0]["verdict"] == "surface"
    channel, ts = bot.posted(_pid())
    assert FEEDBACK_BLOCK_ID in _block_ids(bot.standin.message(channel, ts).blocks)
    bot.ingest(alertmanager_notification(_alert("resolved")), path=AM)
    wait_for(lambda: [c for c in bot.standin.calls("chat.update") if c.status == 200])
    ids = _block_ids(bot.standin.message(channel, ts).blocks)
    assert FEEDBACK_BLOCK_ID in ids and "npo_closed" in ids and OUTCOME_BLOCK_ID in ids


@pytest.fixture
def storm_bot(tmp_path: Path, standin: StandIn) -> Iterator[BotUnderTest]:
    """A bot folding more than two pending recommendations for one channel into a digest."""
    built = build_bot(make_settings(tmp_path, standin, storm_threshold=2), seed=1)
    with serving(built, standin) as served:
        yield served


def test_a_digest_posted_after_some_of_its_recommendations_closed_says_so(storm_bot: BotUnderTest) -> None:
    bot = storm_bot
    _fire_while_slack_is_down(bot, 1, 2, 3)
    bot.ingest(alertmanager_notification(_alert("resolved", 1)), path=AM)
    bot.ingest({"prediction_id": _pid(2), "real_fault": True}, "/api/v1/outcomes")
    bot.standin.faults.clear()
    (digest,) = wait_for(lambda: bot.standin.messages(INCIDENT), timeout=30)
    lines = [line for b in digest.blocks if b["type"] == "section" for line in b["text"]["text"].split("\n")]
    line_of = {n: next(line for line in lines if _pid(n) in line) for n in (1, 2, 3)}
    assert "closed: *alert resolved*" in line_of[1]
    assert "closed: *confirmed fault*" in line_of[2]
    assert "closed" not in line_of[3]  # still open: listed as before
