"""Block Kit builders stay within Slack's limits for any input (10 kB text, emoji, multi-byte)."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.slack.blocks import (
    Answer,
    Dashboard,
    OutcomeView,
    RecommendationView,
    digest_blocks,
    home_view,
    override_modal,
    recommendation_blocks,
)
from bot.slack.text import truncate
from npo.types import Decision, FeedbackKind, Prediction, Verdict

HUGE = "🔥ディスク" * 2000  # ~12 k characters, emoji and multi-byte
TEN_KB = "x" * 10_000


def _view(text: str, answers: int = 3, outcome: bool = False) -> RecommendationView:
    p = Prediction(
        id=("id-" + text)[:200],
        fault_type=text[:500],
        target=text[:500],
        action=text[:500],
        confidence=0.97,
        time_to_fault_s=7200,
        labels={"cluster": text[:3000], "note": text},
    )
    d = Decision(p.id, text[:500], Verdict.SURFACE, "all_rules_passed", text, 0.97, 0.1, 0.87, 0.7, 2, 0.0)
    people = tuple(Answer(f"U{i:04d}", FeedbackKind.OVERRIDE, 1.7e9, text) for i in range(answers))
    return RecommendationView(p, d, people, OutcomeView(True, 1.7e9, text) if outcome else None)


def _check_blocks(blocks: list[dict[str, Any]], max_blocks: int = 50) -> None:
    assert len(blocks) <= max_blocks
    parsed = Block.parse_all(blocks)
    assert None not in parsed
    for block in parsed:
        _no_none(block.to_dict())
    action_ids = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(action_ids) == len(set(action_ids))
    for b in blocks:
        assert len(b.get("block_id", "")) <= 255
        for e in b.get("elements", []) if b["type"] == "actions" else []:
            assert e.get("style") in (None, "primary", "danger")
            assert e["text"]["type"] == "plain_text" and len(e["text"]["text"]) <= 75
            assert len(e["value"]) <= 2000


def _no_none(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            assert v is not None
            _no_none(v)
    elif isinstance(value, list):
        for v in value:
            _no_none(v)


@pytest.mark.parametrize("text", ["disk", TEN_KB, HUGE, "<@U123> & <!channel>"])
@pytest.mark.parametrize(("answers", "outcome"), [(0, False), (3, False), (60, False), (2, True)])
def test_recommendation_message_is_valid(text: str, answers: int, outcome: bool) -> None:
    _check_blocks(recommendation_blocks(_view(text, answers, outcome)))


def test_buttons_have_like_override_neutral() -> None:
    blocks = recommendation_blocks(_view("disk"))
    labels = [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert any("Like" in t for t in labels) and any("Override" in t for t in labels)
    assert any("Neutral" in t for t in labels)


def test_user_text_cannot_mention_anyone() -> None:
    blocks = recommendation_blocks(_view("<!channel>"))
    text = str([b for b in blocks if b["type"] != "actions"])  # button values are data, never rendered
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


@pytest.mark.parametrize("text", ["disk", HUGE])
def test_digest_and_home_are_valid(text: str) -> None:
    views = [_view(text, 1) for _ in range(200)]
    _check_blocks(digest_blocks(views, why=text))
    dashboard = Dashboard(0.25, 10, {"like": 0.5, "override": 0.5}, {0.5: 0.4, 0.9: 0.6}, {"predictions": 3}, views)
    home = home_view(dashboard)
    _check_blocks(home["blocks"], max_blocks=100)


@pytest.mark.parametrize("text", ["disk", HUGE])
def test_override_modal_is_valid(text: str) -> None:
    modal = override_modal(_view(text).prediction, channel="C1", message_ts="1.2")
    View(**modal).validate_json()
    _check_blocks(modal["blocks"])


@pytest.mark.parametrize("limit", [1, 2, 5, 75, 3000])
def test_truncate_never_exceeds_and_keeps_characters_whole(limit: int) -> None:
    for text in (HUGE, "👩‍👩‍👧‍👦" * 100, "a&amp;" * 1000):
        cut = truncate(text, limit)
        assert len(cut) <= limit
        cut.encode("utf-8")
